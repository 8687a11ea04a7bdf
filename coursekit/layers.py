"""Small layers the lectures and the benchmark share."""
from torch import nn


class Standardize(nn.Module):
    """``(X - mean) / std`` with two fixed numbers: a layer without parameters.

    Put it first in a model so the model standardizes its own inputs, wherever its data comes from (coursekit's
    loader, d2l's, a single image). Take ``mean`` and ``std`` from the *training* pixels only, e.g. for
    Fashion-MNIST scaled to [0, 1]::

        pixels = data.train.images.float() / 255
        net = nn.Sequential(Standardize(pixels.mean().item(), pixels.std().item()), nn.Flatten(), ...)
    """

    def __init__(self, mean: float, std: float):
        super().__init__()
        if not std > 0:
            raise ValueError(f"Standardize needs a positive standard deviation, got std={std!r}")
        self.mean, self.std = float(mean), float(std)

    def forward(self, X):
        return (X - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean:.4g}, std={self.std:.4g}"
