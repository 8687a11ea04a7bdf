"""coursekit.data on the real Fashion-MNIST: search order, verification, errors, downloads, DataModule."""
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch

from coursekit import data as ckdata
from coursekit.data import FILES, DatasetError, FashionMNIST, load_fashion_mnist

GZ_NAMES = [spec.name + ".gz" for spec in FILES.values()]


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """Each test decodes from disk: the in-memory cache would hide what a test changes on disk."""
    monkeypatch.setattr(ckdata, "_CACHE", {})


def copy_real_files(real_data_dir: Path, target: Path, names=GZ_NAMES) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(real_data_dir / name, target / name)
    return target


def test_real_data_shapes_labels_and_statistics(real_data_dir):
    arrays = load_fashion_mnist()
    assert arrays.train_images.shape == (60000, 28, 28) and arrays.train_images.dtype == torch.uint8
    assert arrays.test_images.shape == (10000, 28, 28) and arrays.test_images.dtype == torch.uint8
    assert arrays.train_labels.dtype == torch.int64 and arrays.test_labels.shape == (10000,)
    assert arrays.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert arrays.test_labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(arrays.train_labels).tolist() == [6000] * 10
    assert torch.bincount(arrays.test_labels).tolist() == [1000] * 10
    assert abs(arrays.train_images.float().div(255).mean().item() - 0.2860) < 1e-3
    assert abs(arrays.test_images.float().div(255).std().item() - 0.3524) < 1e-3


def test_second_load_is_served_from_memory(real_data_dir):
    assert load_fashion_mnist() is load_fashion_mnist()


def test_search_order_root_then_env_then_system(tmp_path, monkeypatch, real_data_dir):
    root = copy_real_files(real_data_dir, tmp_path / "root")
    env = copy_real_files(real_data_dir, tmp_path / "env")
    monkeypatch.setenv("COURSEKIT_DATA", str(env))
    monkeypatch.setattr(ckdata, "REPO_CACHE_DIR", tmp_path / "no-cache")
    assert load_fashion_mnist(root).source == root.resolve()
    assert ckdata.find_data_dir() == env
    assert load_fashion_mnist().source == env.resolve()
    monkeypatch.delenv("COURSEKIT_DATA")
    monkeypatch.setattr(ckdata, "REPO_CACHE_DIR", root)
    assert ckdata.find_data_dir() == root  # the repository's cache comes before Debian's folder


def test_uncompressed_and_recompressed_copies_pass(tmp_path, real_data_dir):
    """Verification is by the md5 of the content, so a copy gzipped differently still loads."""
    folder = tmp_path / "copies"
    folder.mkdir()
    for spec in FILES.values():
        payload = gzip.decompress((real_data_dir / (spec.name + ".gz")).read_bytes())
        if "labels" in spec.name:
            (folder / spec.name).write_bytes(payload)  # not compressed at all
        else:
            (folder / (spec.name + ".gz")).write_bytes(gzip.compress(payload, compresslevel=1, mtime=0))
    arrays = load_fashion_mnist(folder, download=False)
    assert torch.equal(arrays.test_labels, load_fashion_mnist(real_data_dir).test_labels)


def test_corrupt_file_names_the_file_and_the_fix(tmp_path, real_data_dir):
    folder = copy_real_files(real_data_dir, tmp_path / "bad")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(target.read_bytes()))
    payload[100] ^= 0xFF  # one flipped label
    target.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DatasetError) as caught:
        load_fashion_mnist(folder, download=False)
    message = str(caught.value)
    assert str(target) in message and "md5" in message
    assert "apt-get install dataset-fashion-mnist" in message and "COURSEKIT_DATA" in message


def test_truncated_file_names_the_file(tmp_path, real_data_dir):
    folder = copy_real_files(real_data_dir, tmp_path / "short")
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:100_000])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*truncated or corrupt"):
        load_fashion_mnist(folder, download=False)


def test_missing_files_without_download_are_listed(tmp_path, real_data_dir):
    folder = copy_real_files(real_data_dir, tmp_path / "partial", names=GZ_NAMES[:2])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(folder, download=False)


class _Mirror(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; in 'cut' mode it promises the whole file but sends only half of it."""
    cut = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.cut else body)


@pytest.fixture
def local_mirror(tmp_path, real_data_dir, monkeypatch):
    """A mirror on loopback serving the real files, standing in for the internet."""
    served = copy_real_files(real_data_dir, tmp_path / "served")
    servers = []

    def start(cut=False, folder=served):
        handler = type("Handler", (_Mirror,), {"cut": cut})
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(folder), **k))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setattr(ckdata, "MIRRORS", [f"http://127.0.0.1:{server.server_port}/"])
        return served

    yield start
    for server in servers:
        server.shutdown()


def test_download_fetches_and_verifies(tmp_path, local_mirror):
    local_mirror()
    target = tmp_path / "download-here"
    arrays = load_fashion_mnist(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ_NAMES)
    assert arrays.train_labels[:3].tolist() == [9, 0, 0]


def test_interrupted_download_leaves_nothing_behind(tmp_path, local_mirror):
    local_mirror(cut=True)
    target = tmp_path / "download-here"
    with pytest.raises(DatasetError, match="(?s)Could not download.*nothing was saved.*interrupted"):
        load_fashion_mnist(target)
    assert list(target.iterdir()) == []


def test_corrupt_download_is_rejected_and_removed(tmp_path, local_mirror):
    served = local_mirror()
    (served / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 60008))
    target = tmp_path / "download-here"
    with pytest.raises(DatasetError, match="(?s)train-labels-idx1-ubyte.*md5"):
        load_fashion_mnist(target)
    assert "train-labels-idx1-ubyte.gz" not in [p.name for p in target.iterdir()]
    assert not [p for p in target.iterdir() if p.suffix == ".part"]


def test_unreachable_mirror_explains_the_offline_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(ckdata, "MIRRORS", ["http://127.0.0.1:9/"])  # discard port: nothing listens
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_datamodule_batches_cover_every_example_once(real_data_dir):
    data = FashionMNIST(batch_size=256, val_size=None)  # d2l's convention: all 60,000 training images train
    loader = data.train_dataloader()
    assert len(loader) == 235  # ceil(60000 / 256)
    counts = torch.zeros(10, dtype=torch.long)
    sizes = []
    for X, y in loader:
        assert X.dtype == torch.float32 and X.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        assert 0.0 <= X.min() and X.max() <= 1.0
        counts += torch.bincount(y, minlength=10)
        sizes.append(len(y))
    assert counts.tolist() == [6000] * 10 and sizes[-1] == 60000 - 234 * 256


def test_shuffle_is_seeded_and_validation_is_in_order(real_data_dir):
    data = FashionMNIST(batch_size=64, val_size=None)
    torch.manual_seed(1)
    first = next(iter(data.train_dataloader()))[1]
    torch.manual_seed(1)
    again = next(iter(data.train_dataloader()))[1]
    assert torch.equal(first, again)
    assert not torch.equal(first, next(iter(data.train_dataloader()))[1])
    X, y = next(iter(data.val_dataloader()))
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_datamodule_matches_d2l_interface(real_data_dir):
    data = FashionMNIST(batch_size=32, resize=(32, 32), num_train=100, num_val=50, val_size=None)
    assert data.batch_size == 32 and len(data.train) == 100 and len(data.val) == 50
    X, y = data.train[3]
    assert X.shape == (1, 32, 32) and int(y) == 3
    assert data.text_labels([0, 9]) == ["t-shirt", "ankle boot"]
    assert len(data.val_dataloader()) == 2


def test_d2l_trainer_accepts_the_datamodule(real_data_dir):
    from d2l import torch as d2l

    torch.manual_seed(0)
    model = d2l.SoftmaxRegression(num_outputs=10, lr=0.1)  # the book's own model
    model.board.display = False  # no figures here: this test is about the data interface
    data = FashionMNIST(batch_size=256, num_train=5120, num_val=1024)
    d2l.Trainer(max_epochs=1).fit(model, data)
    from coursekit.training import evaluate_accuracy
    assert evaluate_accuracy(model, data.val_dataloader()) > 0.6


def test_validation_split_is_carved_from_the_training_images(real_data_dir):
    data = FashionMNIST(batch_size=500, val_size=10000, split_seed=0)
    arrays = ckdata.load_fashion_mnist()
    assert (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert data.held_out == "validation"
    # Train and validation together are the 60,000 training images, each exactly once (compared as whole rows).
    def keys(images):
        return set(map(bytes, images.reshape(len(images), -1).numpy()))
    train_keys, val_keys = keys(data.train.images), keys(data.val.images)
    assert len(train_keys & val_keys) <= 1  # the training set holds a handful of byte-identical duplicates
    assert train_keys | val_keys == keys(arrays.train_images)
    assert torch.equal(data.test.images, arrays.test_images) and torch.equal(data.test.labels, arrays.test_labels)
    # The split is random (every class present, roughly balanced), and seeded by split_seed alone.
    assert torch.bincount(data.val.labels, minlength=10).min() > 900
    torch.manual_seed(123)
    again = FashionMNIST(batch_size=500, val_size=10000, split_seed=0)
    assert torch.equal(again.val.labels, data.val.labels) and torch.equal(again.val.images, data.val.images)
    other = FashionMNIST(batch_size=500, val_size=10000, split_seed=1)
    assert not torch.equal(other.val.labels, data.val.labels)
    # Loaders: validation in order, the test loader over the untouched test set.
    X, y = next(iter(data.val_dataloader()))
    assert torch.equal(y, data.val.labels[:500])
    test_labels = torch.cat([y for _, y in data.test_dataloader()])
    assert torch.equal(test_labels, arrays.test_labels)


def test_validation_split_with_limits_and_bad_sizes(real_data_dir):
    data = FashionMNIST(batch_size=64, val_size=5000, num_train=1000, num_val=300)
    assert (len(data.train), len(data.val), len(data.test)) == (1000, 300, 10000)
    for bad in (0, 60000, -5, 2.5, "10000", True):
        with pytest.raises(ValueError, match="val_size"):
            FashionMNIST(val_size=bad)


def test_without_validation_split_the_test_set_is_held_out(real_data_dir):
    data = FashionMNIST(batch_size=64, num_train=100, num_val=50, val_size=None)
    assert data.held_out == "test" and data.test is None
    with pytest.raises(ValueError, match="val_size"):
        data.test_dataloader()


def test_by_default_validation_is_a_split_of_the_training_images(real_data_dir):
    """The default never evaluates on the test set: val_dataloader is 10,000 training images (split_seed 0)."""
    data = FashionMNIST(batch_size=256)
    explicit = FashionMNIST(batch_size=256, val_size=10000, split_seed=0)
    assert data.held_out == "validation" and (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert torch.equal(data.val.labels, explicit.val.labels) and torch.equal(data.val.images, explicit.val.images)
    test_labels = ckdata.load_fashion_mnist().test_labels
    assert not torch.equal(next(iter(data.val_dataloader()))[1], test_labels[:256])


def test_without_test_set_the_test_loader_refuses(real_data_dir):
    """with_test=False (a lab whose test set is the grader's): validation only, and a clear refusal."""
    data = FashionMNIST(batch_size=256, num_train=1000, with_test=False)
    assert data.test is None and data.held_out == "validation" and len(data.val) == 10000
    with pytest.raises(ValueError, match="holds no test set .with_test=False."):
        data.test_dataloader()
    with pytest.raises(ValueError, match="with_test=False needs a validation split"):
        FashionMNIST(val_size=None, with_test=False)
