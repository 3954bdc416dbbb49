"""Confidence intervals of a metric's mean: Wilson score intervals for 0/1 metrics, seeded
percentile bootstrap for everything else (the same run and seed always print the same interval).

Why two: the percentile bootstrap of a 0/1 metric collapses to a point at 0 or 1 (0 correct out of
4 gives ``0.000 [0.000, 0.000]``, claiming certainty from four items), and is too narrow near the
ends for small n. The Wilson score interval (``wilson_ci``, the closed form, equal to
``scipy.stats.binomtest(...).proportion_ci(method="wilson")``) keeps its coverage there: 0/4 is
[0.000, 0.490]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

DEFAULT_RESAMPLES = 2000


def bootstrap_ci(
    values: Sequence[float], seed: int, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; ``(None, None)`` for fewer than two values."""
    import numpy as np  # only a bootstrap needs it: a run of 0/1 metrics never imports numpy

    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // data.size)  # bound memory for large item counts
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def is_binary(values: Sequence[float]) -> bool:
    """Every value is 0 or 1 (a share: accuracy, pass rate, a switch flag)."""
    return len(values) > 0 and all(v in (0.0, 1.0) for v in values)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion; ``(None, None)`` without trials. The closed form
    (the normal quantile from the standard library), equal to ``scipy.stats.binomtest(...)
    .proportion_ci(method="wilson")``: importing scipy.stats cost every run's end ~1 s (issue 18)."""
    if n == 0:
        return None, None
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p, z2 = successes / n, z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def mean_ci(
    values: Sequence[float], seed: int, level: float = 0.95
) -> tuple[float | None, float | None, str]:
    """``(low, high, method)``: the Wilson interval for 0/1 values (from two values on, like the
    bootstrap), else the seeded percentile bootstrap."""
    if len(values) >= 2 and is_binary(values):
        return (*wilson_ci(int(sum(values)), len(values), level), "wilson")
    return (*bootstrap_ci(values, seed, level), "bootstrap")


def mean(values: Sequence[float]) -> float | None:
    """The mean (None without values): of 0/1 values their count over n, exactly what numpy
    gives, without importing it; of anything else numpy's (pairwise summation)."""
    if not len(values):
        return None
    if is_binary(values):
        return sum(values) / len(values)
    import numpy as np

    return float(np.mean(values))


def quantile(values: Sequence[float], q: float) -> float | None:
    """numpy's default (linear) quantile, None without values; in pure Python for the few
    summary numbers (latency) that need one."""
    if not len(values):
        return None
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def metric_summary(values: Sequence[float], seed: int) -> dict[str, float | int | str | None]:
    """Mean, 95% CI (``mean_ci``: Wilson for 0/1 metrics, else bootstrap) and count of one metric."""
    low, high, method = mean_ci(values, seed)
    if low is None:
        method = None  # no interval from fewer than two values
    return {
        "value": mean(values),
        "ci_low": low,
        "ci_high": high,
        "n": len(values),
        "ci_method": method,
    }
