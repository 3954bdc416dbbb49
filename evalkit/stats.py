"""Seeded bootstrap confidence intervals: the same run and seed always print the same interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


def bootstrap_ci(
    values: Sequence[float], seed: int, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; ``(None, None)`` for fewer than two values."""
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


def metric_summary(values: Sequence[float], seed: int) -> dict[str, float | int | None]:
    """Mean, 95% bootstrap CI and count of one metric."""
    low, high = bootstrap_ci(values, seed)
    return {
        "value": float(np.mean(values)) if len(values) else None,
        "ci_low": low,
        "ci_high": high,
        "n": len(values),
    }
