"""Comparing two configurations trained with the same seeds: paired per-seed differences and their interval.

When two configurations are trained with the same seeds, whatever a seed does to both (data order, a lucky or
unlucky validation draw of the mini-batches) cancels in the per-seed difference ``a[s] - b[s]``. The lectures
therefore compare the *paired differences*, not the two ranges: the difference is **resolved** when the
Student-t confidence interval of the mean paired difference excludes 0, and otherwise it is **not resolved with
n seeds**, which is not the same as "no difference" (more seeds or a larger budget may resolve it).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from scipy import stats

__all__ = ["PairedComparison", "paired_comparison"]


class PairedComparison(NamedTuple):
    differences: tuple[float, ...]  # a[s] - b[s], one per seed
    mean: float                     # mean paired difference
    low: float                      # confidence interval of the mean difference
    high: float
    confidence: float

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0: the sign of the difference is resolved by these seeds."""
        return self.low > 0 or self.high < 0

    def verdict(self, name_a: str = "a", name_b: str = "b") -> str:
        """One line for a lecture: the mean difference, its interval, and resolved / not resolved with n seeds."""
        n = len(self.differences)
        interval = f"{self.confidence:.0%} interval {self.low:+.3f} .. {self.high:+.3f}"
        if not self.resolved:
            return f"{name_a} - {name_b}: {self.mean:+.3f} ({interval}): not resolved with {n} seeds"
        better = name_a if self.mean > 0 else name_b
        return f"{name_a} - {name_b}: {self.mean:+.3f} ({interval}): resolved, {better} is higher"


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedComparison:
    """Paired comparison of ``a`` and ``b``, one result per seed each, seed ``s`` at index ``s`` in both.

    The interval is ``mean ± t(confidence, n - 1) · sd / sqrt(n)`` of the per-seed differences (a paired t-interval).
    Needs at least 2 seeds; with identical differences (sd 0) the interval is the point itself.
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"paired_comparison needs one result per seed on both sides, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"paired_comparison needs at least 2 seeds to know the noise, got {len(a)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    diffs = tuple(x - y for x, y in zip(a, b))
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return PairedComparison(diffs, mean, mean - half, mean + half, confidence)
