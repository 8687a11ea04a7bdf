"""Seeded 2-D toy data sets: shapes, dtypes, determinism, balance, geometry and input checks."""
import pytest
import torch

from coursekit import toydata
from coursekit.toydata import DATASETS, circles, gaussians, make_dataset, spiral, xor

GENERATORS = [xor, circles, spiral, gaussians]


@pytest.mark.parametrize("make", GENERATORS)
def test_shapes_and_dtypes(make):
    X, y = make(n=101, seed=3)
    assert X.shape == (101, 2) and X.dtype == torch.float32
    assert y.shape == (101,) and y.dtype == torch.int64
    assert torch.isfinite(X).all()


@pytest.mark.parametrize("make", GENERATORS)
def test_same_seed_same_data_different_seed_different_data(make):
    X1, y1 = make(seed=7)
    X2, y2 = make(seed=7)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    X3, _ = make(seed=8)
    assert not torch.allclose(X1, X3)


@pytest.mark.parametrize("make", GENERATORS)
def test_not_affected_by_global_rng(make):
    torch.manual_seed(0)
    X1, _ = make(seed=1)
    torch.manual_seed(12345)
    torch.rand(10)
    X2, _ = make(seed=1)
    assert torch.equal(X1, X2)


@pytest.mark.parametrize("make,classes", [(xor, 2), (circles, 2), (spiral, 3), (gaussians, 2)])
def test_classes_balanced_and_shuffled(make, classes):
    _, y = make(n=301, seed=0)
    counts = torch.bincount(y)
    assert len(counts) == classes
    assert counts.max() - counts.min() <= 1
    assert not torch.equal(y, y.sort().values)  # rows are shuffled, not grouped by class


def test_spiral_and_gaussians_take_a_class_count():
    _, y = spiral(n=500, classes=5, seed=0)
    assert torch.bincount(y).tolist() == [100] * 5
    _, y = gaussians(n=40, classes=4, seed=0)
    assert torch.bincount(y).tolist() == [10] * 4


def test_xor_labels_follow_the_sign_rule_without_noise():
    X, y = xor(n=400, noise=0.0, seed=0)
    assert set(map(tuple, X.abs().tolist())) == {(1.0, 1.0)}
    assert torch.equal(y, (X[:, 0] * X[:, 1] < 0).long())
    # With noise, the sign rule still labels almost all points (noise 0.3 << distance 1 to the axes).
    X, y = xor(n=2000, noise=0.3, seed=0)
    assert ((X[:, 0] * X[:, 1] < 0).long() == y).float().mean() > 0.98


def test_circles_radii():
    X, y = circles(n=400, noise=0.0, factor=0.4, seed=0)
    r = X.norm(dim=1)
    torch.testing.assert_close(r[y == 0], torch.ones_like(r[y == 0]))
    torch.testing.assert_close(r[y == 1], torch.full_like(r[y == 1], 0.4))


def test_spiral_stays_in_unit_disc_and_gaussians_centred_per_class():
    X, _ = spiral(n=300, seed=0)
    assert X.norm(dim=1).max() <= 1.0 + 1e-6
    X, y = gaussians(n=4000, classes=2, spread=0.5, seed=0)
    torch.testing.assert_close(X[y == 0].mean(0), torch.tensor([1.5, 0.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(X[y == 1].mean(0), torch.tensor([-1.5, 0.0]), atol=0.05, rtol=0)


@pytest.mark.parametrize("make", GENERATORS)
def test_bad_n_is_rejected_clearly(make):
    with pytest.raises(ValueError, match="n must be"):
        make(n=0)
    with pytest.raises(TypeError, match="n must be an int"):
        make(n=10.5)
    with pytest.raises(ValueError, match="noise|spread"):
        make(**{("spread" if make is gaussians else "noise"): -1.0})
    with pytest.raises(TypeError, match="seed must be an int"):
        make(seed="0")


def test_bad_classes_are_rejected_clearly():
    with pytest.raises(ValueError, match="classes must be >= 2"):
        spiral(classes=1)
    with pytest.raises(ValueError, match="at least the number of classes"):
        gaussians(n=3, classes=4)
    with pytest.raises(TypeError, match="classes must be an int"):
        spiral(classes=2.0)
    with pytest.raises(ValueError, match="factor"):
        circles(factor=1.5)


def test_make_dataset_by_name():
    assert set(DATASETS) == {"xor", "circles", "spiral", "gaussians"}
    X, y = make_dataset("spiral", n=90, classes=3, seed=2)
    X2, y2 = toydata.spiral(n=90, classes=3, seed=2)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    with pytest.raises(ValueError, match="valid names: xor, circles, spiral, gaussians"):
        make_dataset("moons")
