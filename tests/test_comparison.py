"""coursekit.comparison: paired per-seed differences with a t-interval (the lectures' comparison rule)."""
import pytest
from scipy import stats

from coursekit.comparison import paired_comparison


def test_paired_differences_resolve_what_the_ranges_cannot():
    # seed 0 is the worst seed for both configurations: the ranges overlap, the paired differences do not
    a, b = [0.70, 0.75, 0.77], [0.68, 0.73, 0.74]
    c = paired_comparison(a, b)
    assert c.differences == pytest.approx((0.02, 0.02, 0.03))
    assert c.resolved and c.low > 0 and "resolved, A is higher" in c.verdict("A", "B")
    assert max(a) - min(a) > abs(c.mean)  # the range rule would have called it nothing


def test_interval_matches_scipys_paired_t_test():
    a, b = [0.741, 0.700, 0.768], [0.761, 0.743, 0.773]
    c = paired_comparison(a, b)
    p = stats.ttest_rel(a, b).pvalue
    assert (p < 0.05) == c.resolved  # the 95% interval excludes 0 exactly when the two-sided p < 0.05
    assert not c.resolved and c.verdict("relu", "tanh").endswith("not resolved with 3 seeds")
    interval = stats.t.interval(0.95, 2, loc=c.mean, scale=stats.sem([x - y for x, y in zip(a, b)]))
    assert (c.low, c.high) == pytest.approx(interval)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one result per seed"):
        paired_comparison([1, 2], [1])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_comparison([1], [1])
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison([1, 2], [1, 2], confidence=95)
