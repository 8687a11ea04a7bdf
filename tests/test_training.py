"""coursekit.training: per-example bookkeeping, seeding, device, and what it shows in and out of a kernel."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from coursekit.training import History, evaluate_accuracy, train
from conftest import REPO, run_in_kernel


class FixedClassifier(nn.Module):
    """Predicts class 0 for inputs whose first feature is positive, else class 1; one dummy parameter."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, X):
        positive = (X[:, 0] > 0).float()
        return torch.stack([positive, 1 - positive], dim=1) + 0 * self.unused


def test_accuracy_counts_examples_not_batches():
    # Batch of 3, all right; batch of 1, wrong: 3/4 per example, while a mean of batch means gives 1/2.
    batches = [(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([0, 0, 0])),
               (torch.tensor([[-1.0]]), torch.tensor([0]))]
    model = FixedClassifier()
    assert evaluate_accuracy(model, batches) == pytest.approx(0.75)
    history = train(model, (batches, batches), num_epochs=2, lr=0.0, progress=False, device="cpu")
    assert history.train_acc == [pytest.approx(0.75)] * 2 and history.test_acc == [pytest.approx(0.75)] * 2
    # The loss is averaged over examples too: cross-entropy of logits (1, 0) vs (0, 1), weighted 3:1.
    ce = nn.functional.cross_entropy
    expected = (3 * ce(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) +
                ce(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))) / 4
    assert history.train_loss[0] == pytest.approx(expected.item(), rel=1e-6)


def test_same_seed_same_history_on_real_data(real_data_dir):
    from coursekit.data import FashionMNIST

    data = FashionMNIST(batch_size=128, num_train=4096, num_val=1024, val_size=None)  # test held out, d2l-style

    def run(seed):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        return train(model, data, num_epochs=2, lr=0.1, seed=seed, progress=False, device="cpu")

    first, again, other = run(1), run(1), run(2)
    assert first.as_dict() == again.as_dict()
    assert first.train_loss != other.train_loss  # the seed drives the shuffling
    assert len(first) == 2 and first.test_acc[-1] > 0.6 and first.train_loss[1] < first.train_loss[0]


def test_validation_split_is_what_train_reports(real_data_dir):
    """With val_size, train() evaluates the validation split every epoch and never the test set."""
    from coursekit.data import FashionMNIST

    data = FashionMNIST(batch_size=256, val_size=10000, num_train=4096, num_val=2048)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    history = train(model, data, num_epochs=2, lr=0.1, progress=False, device="cpu")
    assert history.held_out == "validation" and len(history.val_acc) == 2
    assert history.val_acc[-1] == evaluate_accuracy(model, data.val_dataloader()) > 0.6
    # The test set is a different set of images: its accuracy is a different number, computed only on request.
    assert evaluate_accuracy(model, data.test_dataloader()) != history.val_acc[-1]
    with pytest.raises(AttributeError, match="test_dataloader"):
        history.test_acc
    assert history.as_dict()["held_out"] == "validation"


def test_model_moves_to_the_chosen_device():
    batches = [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]
    model = nn.Linear(3, 2)
    train(model, (batches, batches), num_epochs=1, device="cpu", progress=False)
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checked on the lent GPU machine)")
def test_uses_the_gpu_when_there_is_one():
    batches = [(torch.randn(8, 3), torch.randint(0, 2, (8,)))]
    model = nn.Linear(3, 2)
    train(model, (batches, batches), num_epochs=1, progress=False)
    assert next(model.parameters()).device.type == "cuda"


def test_plain_process_prints_one_line_per_epoch_and_no_figures(real_data_dir):
    code = (
        "import torch; from torch import nn; import coursekit\n"
        "data = coursekit.FashionMNIST(batch_size=256, num_train=2048, num_val=512, val_size=None)\n"
        "torch.manual_seed(0)\n"
        "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
        "coursekit.train(net, data, num_epochs=3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "test acc" in lines[-1] and "<Figure" not in result.stdout + result.stderr


def test_plain_process_names_the_validation_split(real_data_dir):
    code = (
        "import torch; from torch import nn; import coursekit\n"
        "data = coursekit.FashionMNIST(batch_size=256, num_train=1024, num_val=512, val_size=5000)\n"
        "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
        "coursekit.train(net, data, num_epochs=1)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "val acc" in result.stdout and "test acc" not in result.stdout


def test_kernel_shows_one_live_figure_updated_in_place(real_data_dir):
    cells = run_in_kernel(
        "import torch; from torch import nn; import coursekit\n"
        "data = coursekit.FashionMNIST(batch_size=256, num_train=2048, num_val=512, val_size=None)\n"
        "torch.manual_seed(0)\n"
        "net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
        "history = coursekit.train(net, data, num_epochs=3)\n"
        "print(len(history.test_acc))"
    )
    outputs = cells[0].outputs
    figures = [o for o in outputs if o.output_type == "display_data"]
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert len(figures) == 1 and "image/png" in figures[0].data  # one figure, the updates went into it
    assert streams.strip() == "3" and "<Figure" not in streams and "epoch" not in streams


def test_live_plot_puts_loss_and_accuracy_on_separate_labelled_axes():
    pytest.importorskip("IPython")
    from unittest import mock

    from coursekit.training import LivePlot

    with mock.patch("IPython.display.display") as display:
        plot = LivePlot(num_epochs=3)
    history = History(train_loss=[2.0, 1.0], train_acc=[0.5, 0.7], val_acc=[0.4, 0.6], held_out="validation")
    plot.update(history, final=True)
    loss_ax, acc_ax = plot.axes
    assert loss_ax.get_ylabel() == "cross-entropy loss" and acc_ax.get_ylabel() == "accuracy"
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train"]
    assert [line.get_label() for line in acc_ax.get_lines()] == ["train", "validation"]
    assert list(acc_ax.get_lines()[1].get_ydata()) == [0.4, 0.6]
    assert display.called


def test_differs_only_beyond_the_seed_spread():
    from coursekit.training import differs, seed_spread

    assert seed_spread([0.80, 0.83, 0.81]) == pytest.approx(0.03)
    assert differs([0.80, 0.81, 0.82], [0.70, 0.71, 0.72])        # gap 0.10 > spread 0.02
    assert not differs([0.80, 0.83, 0.81], [0.79, 0.82, 0.80])    # gap 0.01 < spread 0.03
    assert not differs([0.80, 0.90], [0.84, 0.85])                 # the noisy side's spread counts
    with pytest.raises(ValueError, match="at least 2 seeds"):
        differs([0.9], [0.1, 0.2])
