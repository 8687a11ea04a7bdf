"""Small seeded 2-D classification data sets for seeing what an MLP can do that a linear model cannot.

Each function returns ``(X, y)``: ``X`` float32 of shape ``[n, 2]`` (the points), ``y`` int64 of
shape ``[n]`` (class labels 0, 1, ...). The same ``seed`` always gives the same points; classes are
balanced (sizes differ by at most one) and the rows come in shuffled order.

* ``xor``       four blobs at the corners (+-1, +-1); label 1 where the two coordinates differ in sign.
                No straight line separates the classes.
* ``circles``   a small circle inside a big one: the boundary is round.
* ``spiral``    interleaved spiral arms, one per class: needs a flexible boundary.
* ``gaussians`` one Gaussian blob per class, centres spread on a circle: nearly linearly separable,
                the easy case for comparison.

Regression (targets float32 values, not classes; listed in ``REGRESSION_DATASETS``, not ``DATASETS``):

* ``plane``     a linear target over the square [-1, 1]^2.
* ``bumps``     five signed Gaussian bumps over the square: needs a nonlinear model.
"""
from __future__ import annotations

import math

import torch

__all__ = ["xor", "circles", "spiral", "gaussians", "DATASETS", "make_dataset"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_noise(noise, name: str = "noise") -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {noise!r}")
    return float(noise)


def _generator(seed) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    return torch.Generator().manual_seed(seed)


def _balanced_labels(n: int, classes: int) -> torch.Tensor:
    """Labels 0..classes-1 with counts differing by at most one, in sorted order."""
    return torch.arange(n, dtype=torch.int64) * classes // n


def _finish(X: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(y), generator=gen)
    return X[order].to(torch.float32).contiguous(), y[order].contiguous()


def _check_n_classes(n, classes) -> tuple[int, int]:
    classes = _check_int("classes", classes, 2)
    n = _check_int("n", n, 1)
    if n < classes:
        raise ValueError(f"n must be at least the number of classes ({classes}) so every class "
                         f"gets a point, got n={n}")
    return n, classes


def xor(n: int = 200, noise: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around the four corners (+-1, +-1) with Gaussian spread ``noise``.

    Label 1 when the corner's two coordinates have different signs (x1 * x2 < 0), else 0: the XOR
    of "x1 > 0" and "x2 > 0". Two classes, balanced.
    """
    n, _ = _check_n_classes(n, 2)
    noise = _check_noise(noise)
    gen = _generator(seed)
    y = _balanced_labels(n, 2)
    # Each class owns two opposite corners; pick one of them per point.
    pick = torch.randint(0, 2, (n,), generator=gen)
    sign1 = torch.where(pick == 0, 1.0, -1.0).double()
    sign2 = torch.where(y == 0, sign1, -sign1)  # class 0: same signs, class 1: opposite signs
    corners = torch.stack([sign1, sign2], dim=1)
    X = corners + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return _finish(X, y, gen)


def circles(n: int = 200, noise: float = 0.08, factor: float = 0.5, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two concentric circles: class 0 on radius 1, class 1 on radius ``factor`` (0 < factor < 1)."""
    n, _ = _check_n_classes(n, 2)
    noise = _check_noise(noise)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
        raise ValueError(f"factor (inner radius / outer radius) must be in (0, 1), got {factor!r}")
    gen = _generator(seed)
    y = _balanced_labels(n, 2)
    angle = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    radius = torch.where(y == 0, 1.0, float(factor)).double()
    X = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    X = X + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return _finish(X, y, gen)


def spiral(n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0, winding: float = 4.0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``classes`` spiral arms winding out from the origin (the CS231n spiral), radius up to 1.

    ``noise`` jitters the angle (in radians) of each point; each arm turns by ``winding`` radians from the
    centre to its end (4, the default, is about two thirds of a turn; the TensorFlow Playground's spiral
    turns about 1.75 times, ``winding=11``).
    """
    n, classes = _check_n_classes(n, classes)
    noise = _check_noise(noise)
    winding = _check_noise(winding, "winding")
    gen = _generator(seed)
    y = _balanced_labels(n, classes)
    # Position along the arm, 0 (centre) to 1 (outer end), spread evenly within each class.
    t = torch.empty(n, dtype=torch.float64)
    for c in range(classes):
        members = (y == c).nonzero().squeeze(1)
        t[members] = torch.linspace(0.0, 1.0, len(members), dtype=torch.float64)
    angle = y.double() * (2 * math.pi / classes) + winding * t + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    X = t[:, None] * torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)
    return _finish(X, y, gen)


def gaussians(n: int = 200, classes: int = 2, spread: float = 0.6, seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One round Gaussian blob per class (standard deviation ``spread``), centres evenly spaced on a
    circle of radius 1.5 around the origin."""
    n, classes = _check_n_classes(n, classes)
    spread = _check_noise(spread, "spread")
    gen = _generator(seed)
    y = _balanced_labels(n, classes)
    centre_angle = y.double() * (2 * math.pi / classes)
    centres = 1.5 * torch.stack([torch.cos(centre_angle), torch.sin(centre_angle)], dim=1)
    X = centres + spread * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return _finish(X, y, gen)


#: name -> generator function, for menus and loops.
DATASETS = {"xor": xor, "circles": circles, "spiral": spiral, "gaussians": gaussians}


def make_dataset(name: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Call one of the generators by name, e.g. ``make_dataset("spiral", n=300, classes=3)``."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name](**kwargs)


# ----------------------------------------------------------------------------------------------
# Regression: a real-valued target over the plane (TensorFlow Playground's two regression sets).

def _uniform_square(n: int, gen: torch.Generator) -> torch.Tensor:
    return 2 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1


def plane(n: int = 200, noise: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points uniform in the square [-1, 1]^2; target ``(x1 + x2) / 2`` plus Gaussian ``noise`` (float32).

    A linear model fits it exactly when ``noise`` is 0: the easy regression case.
    """
    n = _check_int("n", n, 1)
    noise = _check_noise(noise)
    gen = _generator(seed)
    X = _uniform_square(n, gen)
    y = (X[:, 0] + X[:, 1]) / 2 + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return X.to(torch.float32), y.to(torch.float32)


# Bump centres (in the unit square) and signs: a fixed landscape, so the task is the same for every seed.
_BUMPS = ((-0.5, -0.5, 1.0), (0.5, 0.5, 1.0), (-0.5, 0.5, -1.0), (0.5, -0.5, -1.0), (0.0, 0.0, 0.5))


def bumps(n: int = 200, noise: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points uniform in [-1, 1]^2; target: a sum of five signed Gaussian bumps (width 0.25), clipped to
    [-1, 1], plus Gaussian ``noise`` (float32). Needs a nonlinear model."""
    n = _check_int("n", n, 1)
    noise = _check_noise(noise)
    gen = _generator(seed)
    X = _uniform_square(n, gen)
    y = torch.zeros(n, dtype=torch.float64)
    for cx, cy, sign in _BUMPS:
        y += sign * torch.exp(-((X[:, 0] - cx) ** 2 + (X[:, 1] - cy) ** 2) / (2 * 0.25 ** 2))
    y = y.clamp(-1, 1) + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return X.to(torch.float32), y.to(torch.float32)


#: name -> regression generator (kept apart from DATASETS, whose labels are classes).
REGRESSION_DATASETS = {"plane": plane, "bumps": bumps}
__all__ += ["plane", "bumps", "REGRESSION_DATASETS"]
