"""Long-turn statistics of per-turn metrics: turn buckets and a decay statistic with seeded CIs.

What goes in: per conversation, the per-turn numbers a judge wrote (``Score.details["turn_metrics"]``
rows ``{"turn": k, metric: value}``, ``k`` the 0-based answered-turn index, as every judge writes
it). Turns are counted from 1 here (turn number = ``k + 1``).

- **Buckets** (``BUCKETS``: turns 1-5, 6-10, 11-20, 21+): per conversation the mean of the metric
  over its turns in the bucket, then the mean over conversations with a seeded bootstrap CI over
  conversations (``n`` = conversations that reached the bucket).
- **Decay slope**: per conversation the least-squares slope of the metric over its turn numbers
  (metric units per turn; conversations with at least ``MIN_DECAY_TURNS`` valued turns), then the
  mean over conversations. Its CI is a two-stage (nested) bootstrap: conversations are resampled
  with replacement, and each picked conversation's slope is redrawn from a residual bootstrap of
  its own turns (fixed turn numbers, residuals rescaled by ``sqrt(T / (T - 2))``). Why two stages:
  resampling conversations alone gives the range of two values as the "95% CI" of a two-
  conversation run (a steady pair then looks significant half the time) and no interval at all for
  one conversation; the inner stage carries the within-conversation noise, so one long
  conversation still gets an honest interval and many conversations converge to the usual
  conversation-level bootstrap.
- **Bucket change**: per conversation the mean over the last bucket it reached minus the mean over
  its first (turns 1-5), conversations that span at least two buckets, with the same two-stage CI
  (the inner stage resamples the turns within each of the two buckets).

A decay is the slope's CI excluding 0 on the bad side of the metric's declared direction (a
higher-is-better metric that falls over the turns, a lower-is-better one that rises):
``verdict`` ``"decays"``; the good side is ``"improves"``; a descriptive metric (or one of unknown
direction) with a CI excluding 0 is ``"trend"``; otherwise ``"steady"``. Same data and seed, same
numbers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalkit.stats import DEFAULT_RESAMPLES, metric_summary

if TYPE_CHECKING:  # numpy is imported where a track is made: a run without per-turn metrics never does
    import numpy as np

#: (first turn, last turn or None, label): turn numbers count from 1
BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (1, 5, "1-5"),
    (6, 10, "6-10"),
    (11, 20, "11-20"),
    (21, None, "21+"),
)
#: a conversation enters the slope with at least this many valued turns (two points have no residual)
MIN_DECAY_TURNS = 3
#: the bound on bootstrap draws held at once (rows x picks), as ``evalkit.stats`` bounds its memory
_CHUNK_DRAWS = 2_000_000


def bucket_of(turn_number: int) -> str:
    """The label of the bucket holding 1-based ``turn_number``."""
    for first, last, label in BUCKETS:
        if turn_number >= first and (last is None or turn_number <= last):
            return label
    raise ValueError(f"turn numbers count from 1, got {turn_number}")


@dataclass(frozen=True)
class Track:
    """One conversation's values of one metric: 1-based turn numbers and values, in turn order."""

    turns: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[tuple[int, float]]) -> Track:
        """From ``(0-based turn index, value)`` pairs (the judges' ``turn_metrics`` convention)."""
        import numpy as np

        ordered = sorted(rows)
        return cls(
            np.array([t + 1 for t, _ in ordered], dtype=float), np.array([v for _, v in ordered], dtype=float)
        )

    def buckets(self) -> dict[str, np.ndarray]:
        """bucket label -> this conversation's values in it (reached buckets only, in order)."""
        labels = [bucket_of(int(t)) for t in self.turns]
        return {
            label: self.values[[i for i, b in enumerate(labels) if b == label]]
            for label in dict.fromkeys(labels)
        }


def _seed(seed: int, *names: str) -> int:
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**32)


# -- the per-conversation statistics and their inner bootstrap pools ---------------------------------
def slope(track: Track) -> float | None:
    """Least-squares slope of the values over the turn numbers (units per turn); None with fewer
    than ``MIN_DECAY_TURNS`` values."""
    if track.values.size < MIN_DECAY_TURNS:
        return None
    x = track.turns - track.turns.mean()
    sxx = float(x @ x)
    return float(x @ (track.values - track.values.mean()) / sxx) if sxx > 0 else None


def slope_pool(track: Track, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """``resamples`` residual-bootstrap slopes of one conversation (turn numbers fixed)."""
    x = track.turns - track.turns.mean()
    sxx = float(x @ x)
    b = float(x @ (track.values - track.values.mean()) / sxx)
    fitted = track.values.mean() + b * x
    n = track.values.size
    residuals = (track.values - fitted) * math.sqrt(n / (n - 2))
    idx = rng.integers(0, n, size=(resamples, n))
    return b + residuals[idx] @ x / sxx


def bucket_change(track: Track) -> tuple[float, str] | None:
    """(mean over the last bucket reached - mean over turns 1-5, that last bucket's label); None
    for a conversation within one bucket or without turns 1-5."""
    buckets = track.buckets()
    first = BUCKETS[0][2]
    if first not in buckets or len(buckets) < 2:
        return None
    last = list(buckets)[-1]
    return float(buckets[last].mean() - buckets[first].mean()), last


def bucket_change_pool(track: Track, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """``resamples`` bootstrap bucket changes of one conversation (turns resampled within each bucket)."""
    buckets = track.buckets()
    first, last = buckets[BUCKETS[0][2]], buckets[list(buckets)[-1]]

    def means(values: np.ndarray) -> np.ndarray:
        return values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)

    return means(last) - means(first)


def pool_size(n_conversations: int) -> int:
    """Inner bootstrap draws kept per conversation: ``DEFAULT_RESAMPLES`` for the usual suites,
    fewer (never under 100) when the conversations are many, so the pools stay ~16 MB."""
    return max(100, min(DEFAULT_RESAMPLES, _CHUNK_DRAWS // max(1, n_conversations)))


def two_stage_ci(
    pools: np.ndarray, seed: int, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES
) -> tuple[float | None, float | None]:
    """Percentile CI of the mean over conversations of a statistic whose per-conversation bootstrap
    draws are the rows of ``pools`` (conversations x draws): conversations resampled with
    replacement, each pick drawing its value from its own row. None, None without conversations."""
    import numpy as np

    n, draws = pools.shape
    if n == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, _CHUNK_DRAWS // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        picks = rng.integers(0, n, size=(stop - start, n))
        inner = rng.integers(0, draws, size=(stop - start, n))
        means[start:stop] = pools[picks, inner].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


# -- what summary.json holds -----------------------------------------------------------------------
def bucket_summaries(tracks: Sequence[Track], seed: int, *scope: str) -> dict[str, dict[str, Any]]:
    """bucket label -> mean over conversations of each conversation's bucket mean, with its CI."""
    per_bucket: dict[str, list[float]] = {}
    for track in tracks:
        for label, values in track.buckets().items():
            per_bucket.setdefault(label, []).append(float(values.mean()))
    return {
        label: metric_summary(per_bucket[label], _seed(seed, *scope, "bucket", label))
        for _, _, label in BUCKETS
        if label in per_bucket
    }


def verdict(ci_low: float | None, ci_high: float | None, direction: str | None) -> str:
    """``decays`` / ``improves`` / ``trend`` / ``steady`` by the slope's CI and the metric's direction."""
    if ci_low is None or ci_high is None or ci_low <= 0 <= ci_high:
        return "steady"
    rising = ci_low > 0
    if direction == "higher":
        return "improves" if rising else "decays"
    if direction == "lower":
        return "decays" if rising else "improves"
    return "trend"


def _mean_with_ci(
    point: list[float], pools: list[np.ndarray], seed: int, level: float = 0.95
) -> dict[str, Any]:
    import numpy as np

    low, high = two_stage_ci(np.array(pools) if pools else np.empty((0, 1)), seed, level)
    return {
        "value": float(np.mean(point)) if point else None,
        "ci_low": low,
        "ci_high": high,
        "n": len(point),
    }


def slope_summary(tracks: Sequence[Track], seed: int, *scope: str, level: float = 0.95) -> dict[str, Any]:
    """Mean per-conversation slope with its two-stage CI (conversations with a slope only)."""
    import numpy as np

    rng = np.random.default_rng(_seed(seed, *scope, "slope-pools"))
    slopes = [(s, t) for t in tracks if (s := slope(t)) is not None]
    draws = pool_size(len(slopes))
    return _mean_with_ci(
        [s for s, _ in slopes],
        [slope_pool(t, rng, draws) for _, t in slopes],
        _seed(seed, *scope, "slope"),
        level,
    )


def decay_summary(
    tracks: Sequence[Track], direction: str | None, unit: str, seed: int, *scope: str
) -> dict[str, Any]:
    """The decay block of one metric (module docstring): slope and bucket change with CIs, the
    verdict, and what they are measured in."""
    import numpy as np

    rng = np.random.default_rng(_seed(seed, *scope, "pools"))
    changes = [(c, t) for t in tracks if (c := bucket_change(t)) is not None]
    slope_stats = slope_summary(tracks, seed, *scope)
    change_stats = _mean_with_ci(
        [c for (c, _), _ in changes],
        [bucket_change_pool(t, rng, pool_size(len(changes))) for _, t in changes],
        _seed(seed, *scope, "change"),
    )
    last = sorted({label for (_, label), _ in changes}, key=[b[2] for b in BUCKETS].index)
    return {
        "direction": direction,
        "unit": f"{unit}/turn" if unit else "/turn",
        "slope": slope_stats,
        "bucket_change": {**change_stats, "first": BUCKETS[0][2], "last": last},
        "verdict": verdict(slope_stats["ci_low"], slope_stats["ci_high"], direction),
        "n_conversations": len(tracks),
        "max_turns": int(max((t.turns.max() for t in tracks), default=0)),
    }


def shared_slopes(base: Mapping[str, Track], cand: Mapping[str, Track]) -> list[str]:
    """The conversations (sample ids, base order) with a slope in both runs."""
    return [k for k in base if k in cand and slope(base[k]) is not None and slope(cand[k]) is not None]


def paired_slope_difference(
    base: Mapping[str, Track], cand: Mapping[str, Track], seed: int, level: float = 0.95
) -> dict[str, Any]:
    """Mean over shared conversations of cand slope - base slope (``shared_slopes``), with its
    two-stage CI (each side's slope redrawn from its own residual bootstrap)."""
    import numpy as np

    rng = np.random.default_rng(_seed(seed, "pools"))
    pairs = [(base[k], cand[k]) for k in shared_slopes(base, cand)]
    point = [slope(c) - slope(b) for b, c in pairs]  # type: ignore[operator]
    draws = pool_size(len(pairs))
    pools = [slope_pool(c, rng, draws) - slope_pool(b, rng, draws) for b, c in pairs]
    return _mean_with_ci(point, pools, _seed(seed, "diff"), level)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def tracks_of(turn_rows: Sequence[dict[str, Any]]) -> dict[str, Track]:
    """metric -> this conversation's ``Track`` from a score's ``details["turn_metrics"]`` rows."""
    by_metric: dict[str, list[tuple[int, float]]] = {}
    for row in turn_rows:
        for metric, value in row.items():
            if metric != "turn" and _finite(value):
                by_metric.setdefault(metric, []).append((int(row["turn"]), float(value)))
    return {metric: Track.of(rows) for metric, rows in by_metric.items()}
