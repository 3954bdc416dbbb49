"""Ratings from pairwise preferences, for people and automatic judges alike.

Every preference is a ``Comparison``: an item, two models, and ``share``, how much of the
comparison model ``a`` won (1 a won, 0 b won, 0.5 a tie; an arena verdict averaged over both
presentation orders can also be 0.25 or 0.75). One code path rates human votes and arena verdicts.

- Bradley-Terry (``choix.ilsr_pairwise_dense``, the maximum-likelihood fit on the matrix of
  (fractional) wins; a tie is half a win each way): a strength per model, centred at 0, shown as an
  Elo-like rating ``1000 + 400 * strength / ln 10``.
- CIs: a percentile bootstrap over ITEMS (all comparisons of a drawn item come along), seeded, so
  votes on one item by several raters are not counted as independent evidence.
- Win rate: a model's mean share over its comparisons, with the same bootstrap.
- Krippendorff's alpha (``krippendorff``, ordinal: a wins < tie < b wins) over raters x (item, pair),
  each unit entered in both orientations so the result does not depend on which model is "a".
- Agreement of an automatic judge with people, per (item, pair): pairwise accuracy (where both
  prefer a side, how often the same side) and Kendall's tau-b of the two shares (each unit in both
  orientations, as for alpha), with bootstrap CIs over the units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.stats import DEFAULT_RESAMPLES

#: Bradley-Terry strengths are log-odds; the rating scale most readers know is Elo's
ELO_SCALE = 400 / math.log(10)
ELO_BASE = 1000.0
#: a little regularisation keeps the fit finite when a model wins (or loses) every comparison
BT_ALPHA = 0.01


@dataclass(frozen=True)
class Comparison:
    """``a`` vs ``b`` on ``item``: ``share`` of it won by ``a`` (rater: who voted, or the judge)."""

    item: str
    a: str
    b: str
    share: float
    rater: str = ""


def _item_matrices(models: list[str], comparisons: Sequence[Comparison]) -> tuple[list[str], np.ndarray]:
    """Per item, the matrix ``wins[i, j]`` (fractional wins of model i over model j)."""
    index = {m: k for k, m in enumerate(models)}
    items = sorted({c.item for c in comparisons})
    where = {item: k for k, item in enumerate(items)}
    mats = np.zeros((len(items), len(models), len(models)))
    for c in comparisons:
        i, j, k = index[c.a], index[c.b], where[c.item]
        mats[k, i, j] += c.share
        mats[k, j, i] += 1.0 - c.share
    return items, mats


def bt_strengths(wins: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry log-strengths of the (fractional) win matrix, centred at 0 (``start``: a
    nearby solution to begin from, e.g. the point estimate for a bootstrap draw)."""
    import choix

    params = choix.ilsr_pairwise_dense(wins, alpha=BT_ALPHA, initial_params=start, max_iter=1000, tol=1e-6)
    return params - params.mean()


def _win_rates(wins: np.ndarray) -> np.ndarray:
    played = wins.sum(axis=1) + wins.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(played > 0, wins.sum(axis=1) / played, np.nan)


def _interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - level) / 2
    return np.nanquantile(draws, alpha, axis=0), np.nanquantile(draws, 1 - alpha, axis=0)


def rate(
    models: list[str],
    comparisons: Sequence[Comparison],
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
) -> dict[str, Any]:
    """Bradley-Terry strengths and Elo-like ratings with item-bootstrap CIs, win rates with CIs,
    the pairwise win-share matrix and the counts, for ``models`` (best first in ``ranking``)."""
    items, mats = _item_matrices(models, comparisons)
    if not items:
        return {"n_comparisons": 0, "n_items": 0, "models": {}, "ranking": [], "pairwise": {}}
    wins = mats.sum(axis=0)
    strengths = bt_strengths(wins)
    rates = _win_rates(wins)
    rng = np.random.default_rng(seed)
    boot_s = np.empty((resamples, len(models)))
    boot_w = np.empty((resamples, len(models)))
    for r in range(resamples):
        weights = np.bincount(rng.integers(0, len(items), len(items)), minlength=len(items))
        drawn = np.tensordot(weights, mats, axes=1)
        boot_s[r] = bt_strengths(drawn, start=strengths)
        boot_w[r] = _win_rates(drawn)
    s_lo, s_hi = _interval(boot_s, level)
    w_lo, w_hi = _interval(boot_w, level)
    played = wins + wins.T
    out_models = {
        m: {
            "strength": float(strengths[k]),
            "strength_ci": [float(s_lo[k]), float(s_hi[k])],
            "rating": ELO_BASE + ELO_SCALE * float(strengths[k]),
            "rating_ci": [ELO_BASE + ELO_SCALE * float(s_lo[k]), ELO_BASE + ELO_SCALE * float(s_hi[k])],
            "win_rate": None if math.isnan(rates[k]) else float(rates[k]),
            "win_rate_ci": [_num(w_lo[k]), _num(w_hi[k])],
            "n_comparisons": int(round(played[k].sum())),
        }
        for k, m in enumerate(models)
    }
    pairwise = {
        a: {b: float(wins[i, j] / played[i, j]) for j, b in enumerate(models) if i != j and played[i, j] > 0}
        for i, a in enumerate(models)
    }
    return {
        "n_comparisons": len(comparisons),
        "n_items": len(items),
        "level": level,
        "resamples": resamples,
        "models": out_models,
        "ranking": sorted(models, key=lambda m: -out_models[m]["strength"]),
        "pairwise": pairwise,
    }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _unit(c: Comparison) -> tuple[tuple[str, str, str], float]:
    """The (item, pair in sorted order) a comparison is about, and the share of the pair's first."""
    first, second = sorted((c.a, c.b))
    return (c.item, first, second), (c.share if c.a == first else 1.0 - c.share)


def krippendorff_alpha(comparisons: Sequence[Comparison]) -> float | None:
    """Ordinal Krippendorff's alpha of raters' verdicts per (item, pair), each unit counted in both
    orientations of its pair: None when no unit has two raters."""
    import krippendorff

    raters = sorted({c.rater for c in comparisons})
    units = sorted({_unit(c)[0] for c in comparisons})
    if len(raters) < 2 or not units:
        return None
    col = {u: k for k, u in enumerate(units)}
    row = {r: k for k, r in enumerate(raters)}
    # each unit twice, in both orientations: which model of a pair is "first" is arbitrary (here,
    # by name), and alpha's chance agreement would otherwise depend on it
    data = np.full((len(raters), 2 * len(units)), np.nan)
    for c in comparisons:
        unit, share = _unit(c)
        data[row[c.rater], 2 * col[unit]] = share
        data[row[c.rater], 2 * col[unit] + 1] = 1.0 - share
    if not np.any(np.sum(~np.isnan(data), axis=0) >= 2) or len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))


def mean_shares(comparisons: Sequence[Comparison]) -> dict[tuple[str, str, str], float]:
    """Per (item, sorted pair), the mean share of the pair's first model (over raters or passes)."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for c in comparisons:
        unit, share = _unit(c)
        sums.setdefault(unit, []).append(share)
    return {u: float(np.mean(v)) for u, v in sums.items()}


def _accuracy(human: np.ndarray, judge: np.ndarray) -> float | None:
    decided = (human != 0.5) & (judge != 0.5)
    if not decided.any():
        return None
    return float(np.mean((human[decided] > 0.5) == (judge[decided] > 0.5)))


def _tau(human: np.ndarray, judge: np.ndarray) -> float | None:
    from scipy.stats import kendalltau

    # both orientations of every unit: which model of a pair is "first" is arbitrary (by name)
    human, judge = np.concatenate([human, 1 - human]), np.concatenate([judge, 1 - judge])
    if np.all(human == human[0]) or np.all(judge == judge[0]):
        return None
    value = kendalltau(human, judge).statistic
    return None if math.isnan(value) else float(value)


def agreement(
    judge: Sequence[Comparison],
    human: Sequence[Comparison],
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
) -> dict[str, Any]:
    """How well ``judge`` agrees with people on the (item, pair) units both judged: pairwise
    accuracy and Kendall's tau-b of the shares, each with a bootstrap CI over those units."""
    h, j = mean_shares(human), mean_shares(judge)
    units = sorted(set(h) & set(j))
    hs = np.array([h[u] for u in units])
    js = np.array([j[u] for u in units])
    out: dict[str, Any] = {"n_units": len(units), "n_decided": int(np.sum((hs != 0.5) & (js != 0.5)))}
    rng = np.random.default_rng(seed)
    for name, fn in (("pairwise_accuracy", _accuracy), ("kendall_tau", _tau)):
        value = fn(hs, js) if units else None
        draws = []
        if value is not None:
            for _ in range(resamples):
                idx = rng.integers(0, len(units), len(units))
                d = fn(hs[idx], js[idx])
                if d is not None:
                    draws.append(d)
        low, high = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2]) if draws else (None, None)
        out[name] = value
        out[f"{name}_ci"] = [None if low is None else float(low), None if high is None else float(high)]
    return out
