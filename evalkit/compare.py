"""Two runs -> per-metric regressions: ``evalkit compare BASE_RUN CAND_RUN``.

What is compared: for every task both runs evaluated, every judge, every metric the judge wrote in
``scores.jsonl`` (``Score.metrics``), the *paired* difference candidate - baseline over the items
both runs scored. Pairing matters: two runs of one benchmark share its items, and most of the
variance between two models is item difficulty, which pairing removes; an unpaired test on the two
means would need several times more items to see the same drop.

Items, per (task, judge, metric), fall into exactly one bucket:

- ``shared``: scored in both runs with a value: the only items that enter the statistics;
- ``errored``: in both runs, but the model call or the judge failed in at least one of them (no
  value to pair; counted per side, never scored as zero, see DESIGN.md "failures are data");
- ``not applicable``: in both runs, no error, but the metric is ``None`` in one of them (e.g. a
  voice metric on a one-turn reply);
- ``only base`` / ``only cand``: the other run never attempted the item (different ``--limit``,
  a shard, an interrupted run).

Statistics, on the shared pairs ``d_i = cand_i - base_i``:

- point difference ``mean(d)`` (= difference of the two means over the shared items);
- a paired percentile bootstrap CI of ``mean(d)`` at level ``1 - alpha`` (items resampled
  together, seeded per (seed, task, judge, metric): the same two runs always print the same CI);
- for binary metrics (every shared value in {0, 1} in both runs): the exact McNemar test, a
  two-sided binomial test of the discordant pairs (base right / cand wrong vs the reverse) against
  p = 0.5 (``scipy.stats.binomtest``). Exact, not the chi-square approximation: nightly suites and
  demo tasks have few discordant pairs, where the approximation is badly off.

The verdict rule (``verdict``): let ``delta`` be the point difference signed so that positive is
an improvement (``-mean(d)`` for lower-is-better metrics such as WER). A metric is

- **worse** when the change is significant AND ``delta <= -min_effect``;
- **better** when the change is significant AND ``delta >= +min_effect``;
- **no significant change** otherwise;

where *significant* means McNemar ``p < alpha`` for binary metrics and "the (1 - alpha) bootstrap
CI excludes 0" for continuous ones. Both halves are needed: significance alone flags a 0.1-point
drop on 100k items that nobody cares about, and an effect threshold alone flags the noise of a
40-item suite. (The stricter "CI entirely below -min_effect" rule was considered and rejected: it
asks for a confident *lower bound* on the size of the drop, which a nightly suite of a few hundred
items almost never has, so real 5-point drops would pass unnoticed.) ``min_effect`` is absolute, in
the metric's own units (0.02 = two points of accuracy).

Direction is never guessed: every judge declares its metrics (``Judge.metrics``, ``MetricSpec``)
as higher-is-better, lower-is-better, or descriptive (prosody features, where neither way is
"better"), and the run manifest records the declarations (``manifest["judges"]``); a run from
before that record is read through the judge's registered class. A descriptive metric or one of
unknown direction (an undeclared plug-in metric) can only be "changed", never better or worse, and
unknown ones are listed in the report with the fix (``--direction METRIC=higher|lower``).
Runs of different datasets are refused (``check_same_datasets``), and so are runs whose shared
judge has a different scorer version or different effective options (``check_same_judges``).

Long-turn decay (``compare_decay``): every per-turn metric a judge wrote (``details["turn_metrics"]``)
with a slope in both runs gets a row ``JUDGE/METRIC:decay``: each run's mean least-squares slope
over turns on the shared conversations, and the paired slope difference cand - base with a
two-stage bootstrap CI (``evalkit.turn_stats``). It is **worse** (a regression, exit 1) when the
candidate's own slope CI excludes 0 on the bad side of the per-turn metric's declared direction
(``Judge.turn_metric_specs``) and the difference's CI does too: the candidate decays, and more
than the baseline beyond the CIs. No ``min_effect`` applies (a slope is per turn).

Gates (``check_gates``), per (task, judge), before any statistic is trusted: a candidate that
answered too little cannot be "no significant change", since the items it lost are not in the
pairs. Each failed gate makes the comparison exit 1 and prints one line naming the task, the
counts and the flag:

- coverage: items the candidate scored / items either run attempted < ``min_coverage`` (0.98);
  a task of the base missing from the candidate has coverage 0;
- errors: the candidate's model-error (or judge-error) rate over the items it attempted exceeds the
  base's by more than ``max_error_increase`` (0.02);
- shared: items scored in both runs / items the base scored < ``min_shared`` (0.95).

Power: every metric also gets its *minimum detectable effect* (``min_detectable_effect``), the
smallest change the test could detect at this n and alpha with 80% power, from the observed
paired differences (for 0/1 metrics never below the exact McNemar floor: ``k / n``, the fewest
one-sided discordant pairs that can reach ``p < alpha``). A "no significant change" whose MDE is
larger than ``min_effect`` is marked *underpowered*: a drop of ``min_effect`` would have passed.

The two manifests' settings that differ (model, generation, judges, retries, versions; not the
run's own bookkeeping such as ids and times) are listed with every comparison (``config_diff``).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.judges.base import Direction, judge_difference, recorded_metric_specs, recorded_turn_metric_specs
from evalkit.records import ScoreRecord
from evalkit.run_files import Manifest
from evalkit.stats import DEFAULT_RESAMPLES, bootstrap_ci, is_binary
from evalkit.store import RunStore
from evalkit.turn_stats import Track, paired_slope_difference, shared_slopes, slope_summary, tracks_of
from evalkit.turn_stats import verdict as turn_verdict

Verdict = Literal["better", "worse", "no significant change", "changed"]

#: dataset fields that must agree for two runs of a task to be comparable
DATASET_KEYS = ("id", "revision", "version", "split", "mode", "fingerprint")
#: floating-point slack when testing ``delta <= -min_effect`` (a drop of exactly 2 points is 2 points)
_EPS = 1e-12


@dataclass(frozen=True)
class CompareOptions:
    """Knobs of the comparison; the defaults are the CLI's."""

    min_effect: float = 0.02
    alpha: float = 0.05
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    directions: Mapping[str, Direction] = field(default_factory=dict)
    #: gates (module docstring): the candidate's coverage, error-rate increase and shared share
    min_coverage: float = 0.98
    max_error_increase: float = 0.02
    min_shared: float = 0.95
    #: power of the minimum detectable effect
    power: float = 0.8

    def direction(self, judge: str, metric: str, declared: Mapping[str, Direction]) -> Direction | None:
        """The direction of a metric: a user override (``--direction``) first, then the judge's
        declaration (``declared``: metric -> direction); None = unknown."""
        for key in (f"{judge}/{metric}", metric):
            if key in self.directions:
                return self.directions[key]
        return declared.get(metric)


#: what ``--direction METRIC=...`` accepts; ``none`` is the older spelling of ``descriptive``
_DIRECTION_WORDS: dict[str, Direction] = {"higher": "higher", "lower": "lower", "descriptive": "descriptive"}
_DIRECTION_WORDS["none"] = "descriptive"


def parse_directions(items: Iterable[str]) -> dict[str, Direction]:
    """``["wer=lower", "myjudge/score=higher"]`` -> mapping; a malformed item is a user error."""
    out: dict[str, Direction] = {}
    for item in items:
        name, sep, value = item.partition("=")
        word = _DIRECTION_WORDS.get(value.strip().lower())
        if not sep or not name.strip() or word is None:
            raise EvalkitError(
                f"--direction {item!r}: write METRIC=higher|lower|descriptive (or JUDGE/METRIC=...)"
            )
        out[name.strip()] = word
    return out


# -- loading --------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """What compare needs of a run directory: its manifest and latest score per (task, sample, judge)."""

    store: RunStore
    manifest: dict[str, Any]  # as written: ``config_diff`` compares every setting in it
    scores: dict[tuple[str, str], dict[str, ScoreRecord]]  # (task, judge) -> sample id -> record
    info: Manifest  # the same, typed: what compare reads of it

    @property
    def label(self) -> str:
        return str(self.store.root)

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["name"]: t for t in self.manifest.get("tasks", [])}


def load_run(path: Path) -> LoadedRun:
    """Open a run directory (a missing folder or manifest is an ``EvalkitError``)."""
    store = RunStore.open_existing(Path(path))
    info = store.manifest()
    scores: dict[tuple[str, str], dict[str, ScoreRecord]] = {}
    for rec in store.iter_latest_scores():
        scores.setdefault((rec.task, rec.score.judge), {})[rec.sample_id] = rec
    return LoadedRun(store=store, manifest=store.read_manifest(), scores=scores, info=info)


def check_same_datasets(base: LoadedRun, cand: LoadedRun) -> list[str]:
    """The tasks both runs share, in the baseline's order; refuses (``EvalkitError``) when a shared
    task was evaluated on a different dataset id / revision / version / split / scoring mode /
    content fingerprint, or when the runs share no task: such numbers are not comparable."""
    base_tasks, cand_tasks = base.tasks(), cand.tasks()
    shared = [name for name in base_tasks if name in cand_tasks]
    if not shared:
        raise EvalkitError(
            f"runs {base.label} and {cand.label} share no task "
            f"({', '.join(base_tasks) or 'none'} vs {', '.join(cand_tasks) or 'none'}); "
            "compare two runs of the same tasks"
        )
    for name in shared:
        old, new = base_tasks[name].get("dataset", {}), cand_tasks[name].get("dataset", {})
        for key in DATASET_KEYS:
            if old.get(key) != new.get(key):
                raise EvalkitError(
                    f"cannot compare {base.label} with {cand.label}: task {name!r} has a different dataset "
                    f"{key} ({_short(old.get(key))} vs {_short(new.get(key))}); re-run the baseline on the "
                    "candidate's dataset version (or compare runs of the same version)"
                )
    return shared


def judge_record(run: LoadedRun, task: str, judge: str) -> Mapping[str, Any] | None:
    """What the run's manifest recorded of ``task``'s judge (``Judge.describe``); None for a run
    written before judges were recorded."""
    return run.manifest.get("judges", {}).get(task, {}).get(judge)


def check_same_judges(base: LoadedRun, cand: LoadedRun, tasks: Iterable[str]) -> None:
    """Refuses (``EvalkitError``) when a judge both runs used on a shared task has a different
    scorer version or different effective options (judge model, ASR model, threshold...): its
    scores measure different things. A run that did not record its judges is not refused."""
    for task in tasks:
        for judge in _judges_of(base, task):
            old, new = judge_record(base, task, judge), judge_record(cand, task, judge)
            difference = None if old is None or new is None else judge_difference(old, new)
            if difference is not None:
                raise EvalkitError(
                    f"cannot compare {base.label} with {cand.label}: task {task!r} judge {judge!r} has a "
                    f"different {difference}; re-run the baseline with the candidate's judge settings"
                )


def declared_directions(base: LoadedRun, cand: LoadedRun, task: str, judge: str) -> dict[str, Direction]:
    """metric -> direction as the judge declared it: the candidate's recorded declarations, else
    the baseline's (``recorded_metric_specs``: for runs from before the record, the registered
    judge class's; a plug-in judge not installed here has none: its directions are unknown)."""
    run = cand if judge_record(cand, task, judge) is not None else base
    specs = recorded_metric_specs(run.manifest.get("judges", {}), task, judge)
    return {spec.name: spec.direction for spec in specs}


def _short(value: Any) -> str:
    text = "missing" if value is None else str(value)
    return text[:12] + "..." if len(text) > 15 else text


# -- statistics -------------------------------------------------------------------------------------
@dataclass
class ItemCounts:
    """How the items of one (task, judge, metric) split into buckets (see the module docstring)."""

    shared: int = 0
    errored_base: int = 0
    errored_cand: int = 0
    errored: int = 0
    not_applicable: int = 0
    only_base: int = 0
    only_cand: int = 0


@dataclass
class MetricComparison:
    task: str
    judge: str
    metric: str
    direction: Direction | None
    counts: ItemCounts
    binary: bool = False
    base_mean: float | None = None
    cand_mean: float | None = None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    discordant: tuple[int, int] | None = None  # (base right & cand wrong, base wrong & cand right)
    significant: bool = False
    verdict: Verdict = "no significant change"
    note: str = ""
    #: smallest change detectable at this n and alpha (module docstring); None: none is
    mde: float | None = None
    #: "no significant change" although a change of min_effect could not have been detected
    underpowered: bool = False


def _value(rec: ScoreRecord | None, metric: str) -> float | None:
    if rec is None or rec.score.error is not None:
        return None
    value = rec.score.metrics.get(metric)
    return None if value is None else float(value)


def pair_items(
    base: Mapping[str, ScoreRecord], cand: Mapping[str, ScoreRecord], metric: str
) -> tuple[np.ndarray, np.ndarray, ItemCounts]:
    """The paired values of the shared items (in the baseline's item order) and the bucket counts."""
    counts = ItemCounts(
        only_base=sum(1 for s in base if s not in cand), only_cand=sum(1 for s in cand if s not in base)
    )
    b_vals: list[float] = []
    c_vals: list[float] = []
    for sample_id, b_rec in base.items():
        c_rec = cand.get(sample_id)
        if c_rec is None:
            continue
        b_err, c_err = b_rec.score.error is not None, c_rec.score.error is not None
        if b_err or c_err:
            counts.errored += 1
            counts.errored_base += b_err
            counts.errored_cand += c_err
            continue
        b, c = _value(b_rec, metric), _value(c_rec, metric)
        if b is None or c is None:
            counts.not_applicable += 1
            continue
        b_vals.append(b)
        c_vals.append(c)
    counts.shared = len(b_vals)
    return np.asarray(b_vals, dtype=float), np.asarray(c_vals, dtype=float), counts


def mcnemar_exact(base: np.ndarray, cand: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Two-sided exact McNemar p-value on 0/1 pairs and the discordant counts (lost, gained)."""
    from scipy.stats import binomtest

    lost = int(np.sum((base == 1) & (cand == 0)))
    gained = int(np.sum((base == 0) & (cand == 1)))
    if lost + gained == 0:
        return 1.0, (lost, gained)
    return float(binomtest(lost, lost + gained, 0.5).pvalue), (lost, gained)


def _seed_for(seed: int, *names: str) -> int:
    """A distinct, stable bootstrap seed per (seed, task, judge, metric)."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**32)


def verdict(
    diff: float, significant: bool, direction: Direction | None, min_effect: float
) -> tuple[Verdict, str]:
    """The rule of the module docstring, with a note saying why when it matters."""
    big = abs(diff) + _EPS >= min_effect
    if direction not in ("higher", "lower"):
        if significant and big:
            known = direction == "descriptive"
            why = "descriptive metric" if known else "direction unknown: pass --direction"
            return "changed", why
        return "no significant change", ""
    delta = diff if direction == "higher" else -diff
    if significant and big:
        return ("better" if delta > 0 else "worse"), ""
    if significant:
        return "no significant change", f"significant but |change| < min effect {min_effect:g}"
    return "no significant change", ""


def compare_metric(
    task: str,
    judge: str,
    metric: str,
    base: Mapping[str, ScoreRecord],
    cand: Mapping[str, ScoreRecord],
    options: CompareOptions,
    declared: Mapping[str, Direction] | None = None,
) -> MetricComparison:
    """Pair, test and judge one metric (``declared``: the judge's metric -> direction)."""
    b, c, counts = pair_items(base, cand, metric)
    result = MetricComparison(task, judge, metric, options.direction(judge, metric, declared or {}), counts)
    if counts.shared == 0:
        result.note = "no shared scored items"
        return result
    diffs = c - b
    result.base_mean, result.cand_mean = float(b.mean()), float(c.mean())
    result.diff = float(diffs.mean())
    level = 1 - options.alpha
    seed = _seed_for(options.seed, task, judge, metric)
    result.ci_low, result.ci_high = bootstrap_ci(diffs, seed, level=level, resamples=options.resamples)
    result.binary = is_binary(b.tolist()) and is_binary(c.tolist())
    if result.binary:
        result.p_value, result.discordant = mcnemar_exact(b, c)
        result.significant = result.p_value < options.alpha
    elif result.ci_low is not None and result.ci_high is not None:
        result.significant = result.ci_low > 0 or result.ci_high < 0
    if counts.shared < 2 and not result.binary:
        result.note = "one shared item: no interval"
    result.verdict, note = verdict(result.diff, result.significant, result.direction, options.min_effect)
    result.mde = min_detectable_effect(diffs, result.binary, options.alpha, options.power)
    result.underpowered = result.verdict == "no significant change" and (
        result.mde is None or result.mde > options.min_effect + _EPS
    )
    if result.underpowered:
        note = "; ".join(
            n for n in (note, f"underpowered: a change of {options.min_effect:g} is not detectable") if n
        )
    result.note = "; ".join(n for n in (result.note, note) if n)
    return result


# -- long-turn decay ----------------------------------------------------------------------------------
#: suffix of a decay comparison's metric name: ``prosody/pitch_sd_st:decay``
DECAY_SUFFIX = ":decay"


def declared_turn_directions(base: LoadedRun, cand: LoadedRun, task: str, judge: str) -> dict[str, Direction]:
    """per-turn metric -> direction (``recorded_turn_metric_specs``: the candidate's record first)."""
    run = cand if judge_record(cand, task, judge) is not None else base
    specs = recorded_turn_metric_specs(run.manifest.get("judges", {}), task, judge)
    return {name: spec.direction for name, spec in specs.items()}


def turn_tracks(records: Mapping[str, ScoreRecord]) -> dict[str, dict[str, Track]]:
    """per-turn metric -> sample id -> that conversation's ``Track`` (scored records only)."""
    out: dict[str, dict[str, Track]] = {}
    for sample_id, rec in records.items():
        if rec.score.error is None:
            for metric, track in tracks_of(rec.score.details.get("turn_metrics", [])).items():
                out.setdefault(metric, {})[sample_id] = track
    return out


def decay_verdict(
    base: Mapping[str, Any], cand: Mapping[str, Any], diff: Mapping[str, Any], direction: Direction | None
) -> tuple[Verdict, bool]:
    """A decay regression ("worse"): the candidate's slope CI excludes 0 on the metric's bad side
    (it decays) AND the paired slope difference's CI excludes 0 on that side (it decays more than
    the baseline, beyond the CIs). "better": the baseline decays and the difference's CI is on the
    good side. A descriptive metric's difference can only be "changed". Also: significant?"""
    low, high = diff["ci_low"], diff["ci_high"]
    significant = low is not None and high is not None and (low > 0 or high < 0)
    if not significant:
        return "no significant change", False
    if direction not in ("higher", "lower"):
        return "changed", True
    bad = (high < 0) if direction == "higher" else (low > 0)
    if bad and turn_verdict(cand["ci_low"], cand["ci_high"], direction) == "decays":
        return "worse", True
    if not bad and turn_verdict(base["ci_low"], base["ci_high"], direction) == "decays":
        return "better", True
    return "no significant change", True


def _slope_text(stats: Mapping[str, Any], direction: Direction | None) -> str:
    """``-0.0123 [-0.0200, -0.0050] (decays)``: a run's mean slope, its CI and its verdict."""
    low, high = stats["ci_low"], stats["ci_high"]
    return f"{fmt(stats['value'], 4)} [{fmt(low, 4)}, {fmt(high, 4)}] ({turn_verdict(low, high, direction)})"


def compare_decay(
    task: str,
    judge: str,
    base: Mapping[str, ScoreRecord],
    cand: Mapping[str, ScoreRecord],
    options: CompareOptions,
    declared: Mapping[str, Direction],
) -> list[MetricComparison]:
    """One comparison per per-turn metric with slopes in both runs (``evalkit.turn_stats``): base
    and cand mean slopes over the shared conversations, the paired difference with its two-stage
    CI, and ``decay_verdict``; the note carries each run's slope CI. No ``min_effect``: the
    slope is per turn, in the metric's units, and the rule above is its own threshold."""
    b_tracks, c_tracks = turn_tracks(base), turn_tracks(cand)
    level = 1 - options.alpha
    out = []
    for metric in dict.fromkeys([*b_tracks, *c_tracks]):
        b, c = b_tracks.get(metric, {}), c_tracks.get(metric, {})
        shared = shared_slopes(b, c)
        if not shared:
            continue
        seed = _seed_for(options.seed, task, judge, metric, "decay")
        b_stats = slope_summary([b[k] for k in shared], seed, "base", level=level)
        c_stats = slope_summary([c[k] for k in shared], seed, "cand", level=level)
        diff = paired_slope_difference(b, c, seed, level)
        direction = options.direction(judge, metric, declared)
        result = MetricComparison(
            task,
            judge,
            metric + DECAY_SUFFIX,
            direction,
            ItemCounts(
                shared=len(shared),
                only_base=sum(1 for k in b if k not in c),
                only_cand=sum(1 for k in c if k not in b),
            ),
            base_mean=b_stats["value"],
            cand_mean=c_stats["value"],
            diff=diff["value"],
            ci_low=diff["ci_low"],
            ci_high=diff["ci_high"],
        )
        result.verdict, result.significant = decay_verdict(b_stats, c_stats, diff, direction)
        cand_text, base_text = _slope_text(c_stats, direction), _slope_text(b_stats, direction)
        result.note = f"slope per turn: cand {cand_text}, base {base_text}"
        out.append(result)
    return out


def mcnemar_floor(n: int, alpha: float) -> float:
    """The smallest |mean difference| the exact two-sided McNemar test can call significant on
    ``n`` pairs: ``k`` discordant pairs all one way give ``p = 2 * 0.5**k``, so ``k`` is the least
    integer with that below alpha."""
    k = math.floor(math.log2(2 / alpha)) + 1
    return k / n


def min_detectable_effect(diffs: np.ndarray, binary: bool, alpha: float, power: float = 0.8) -> float | None:
    """Minimum detectable effect of the paired test at this n and alpha: ``(z_{1-alpha/2} +
    z_power) * sd(d) / sqrt(n)`` from the observed differences; for 0/1 metrics at least
    ``mcnemar_floor`` (with no discordant pair the sd is 0, yet a handful of items can never show
    a change). None when no change is detectable (under two pairs of a continuous metric)."""
    from scipy.stats import norm

    n = int(diffs.size)
    if n == 0 or (n < 2 and not binary):
        return None
    sd = float(diffs.std(ddof=1)) if n > 1 else 0.0
    approx = (float(norm.ppf(1 - alpha / 2)) + float(norm.ppf(power))) * sd / math.sqrt(n)
    return max(approx, mcnemar_floor(n, alpha)) if binary else approx


# -- gates --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateFailure:
    """One failed gate: which task (and judge), which flag, and the line that says so."""

    task: str
    judge: str | None
    flag: str
    message: str


@dataclass(frozen=True)
class SideCounts:
    """One run's items of one (task, judge): attempted, scored, and the two kinds of errors."""

    attempted: int
    scored: int
    model_errors: int
    judge_errors: int

    @classmethod
    def of(cls, records: Mapping[str, ScoreRecord]) -> SideCounts:
        kinds = [r.score.error.kind for r in records.values() if r.score.error is not None]
        model = sum(1 for k in kinds if k == "model_error")
        return cls(len(records), len(records) - len(kinds), model, len(kinds) - model)

    def rate(self, errors: int) -> float:
        return errors / self.attempted if self.attempted else 0.0


def check_gates(
    task: str,
    judge: str,
    base: Mapping[str, ScoreRecord],
    cand: Mapping[str, ScoreRecord],
    options: CompareOptions,
) -> list[GateFailure]:
    """The coverage, error-increase and shared-items gates of one (task, judge) (module docstring)."""
    b, c = SideCounts.of(base), SideCounts.of(cand)
    where = f"task {task!r} judge {judge!r}"
    failures: list[GateFailure] = []
    total = len(set(base) | set(cand))
    coverage = c.scored / total if total else 1.0
    if coverage + _EPS < options.min_coverage:
        failures.append(
            GateFailure(
                task,
                judge,
                "--min-coverage",
                f"gate failed: {where}: the candidate scored {c.scored} of {total} items "
                f"(coverage {coverage:.3f}) < --min-coverage {options.min_coverage:g}",
            )
        )
    for label, flag_errors in (("model-error", "model_errors"), ("judge-error", "judge_errors")):
        cand_errors, base_errors = getattr(c, flag_errors), getattr(b, flag_errors)
        increase = c.rate(cand_errors) - b.rate(base_errors)
        if increase > options.max_error_increase + _EPS:
            failures.append(
                GateFailure(
                    task,
                    judge,
                    "--max-error-increase",
                    f"gate failed: {where}: candidate {label} rate {cand_errors}/{c.attempted} = "
                    f"{c.rate(cand_errors):.3f} vs base {base_errors}/{b.attempted} = "
                    f"{b.rate(base_errors):.3f}, up {increase:.3f} > --max-error-increase "
                    f"{options.max_error_increase:g}",
                )
            )
    shared = sum(
        1
        for sid, rec in base.items()
        if rec.score.error is None and sid in cand and cand[sid].score.error is None
    )
    if b.scored and shared / b.scored + _EPS < options.min_shared:
        failures.append(
            GateFailure(
                task,
                judge,
                "--min-shared",
                f"gate failed: {where}: {shared} items scored in both runs = {shared / b.scored:.3f} "
                f"of the base's {b.scored} scored items < --min-shared {options.min_shared:g}",
            )
        )
    return failures


def missing_task_gate(task: str, base: LoadedRun, options: CompareOptions) -> GateFailure:
    """A task the base ran and the candidate did not: coverage 0 of the base's items."""
    n = max((len(recs) for (t, _), recs in base.scores.items() if t == task), default=0)
    return GateFailure(
        task,
        None,
        "--min-coverage",
        f"gate failed: task {task!r}: not in the candidate run (scored 0 of {n} items, coverage 0) "
        f"< --min-coverage {options.min_coverage:g}",
    )


# -- what differs between the two runs' settings ----------------------------------------------------
#: manifest keys that are a run's bookkeeping, not its settings: never a "config difference"
_BOOKKEEPING = frozenset(
    {
        "run_id",
        "command",
        "started",
        "ended",
        "status",
        "resumed",
        "last_session",
        "hardware",
        "cache",
        "answer_sources",
        "judge_batching",
        "merged",
    }
)
#: settings that only place or pace a run (its numbers do not depend on them)
_PLACEMENT = frozenset({"config.out_dir", "config.cache_path", "config.concurrency", "config.judge_workers"})
MAX_DIFF_LINES = 40


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted keys of nested mappings; tasks are keyed by name, other lists kept whole."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif prefix == "tasks" and isinstance(value, list):
        for task in value:
            if isinstance(task, Mapping):
                _flatten(task, f"tasks[{task.get('name')}]", out)
    else:
        out[prefix] = value


def config_diff(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, base value, cand value)`` for every setting the two manifests disagree on (model,
    generation, judges, retries, package versions...), bookkeeping and placement left out."""
    flat_b: dict[str, Any] = {}
    flat_c: dict[str, Any] = {}
    _flatten({k: v for k, v in base.items() if k not in _BOOKKEEPING}, "", flat_b)
    _flatten({k: v for k, v in cand.items() if k not in _BOOKKEEPING}, "", flat_c)
    keys = dict.fromkeys([*flat_b, *flat_c])
    return [
        (k, flat_b.get(k), flat_c.get(k))
        for k in keys
        if k not in _PLACEMENT and flat_b.get(k) != flat_c.get(k)
    ]


def _diff_value(value: Any) -> str:
    text = "(absent)" if value is None else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def diff_lines(diffs: list[tuple[str, Any, Any]]) -> list[str]:
    """The differences as ``key: base → cand`` lines, at most ``MAX_DIFF_LINES``."""
    lines = [f"{k}: {_diff_value(b)} → {_diff_value(c)}" for k, b, c in diffs[:MAX_DIFF_LINES]]
    if len(diffs) > MAX_DIFF_LINES:
        lines.append(f"... and {len(diffs) - MAX_DIFF_LINES} more")
    return lines


# -- flipped items ----------------------------------------------------------------------------------
#: flipped items listed per metric and direction (lost, gained); the rest are counted
MAX_FLIPS = 25
#: characters of each answer shown beside the other (markdown cells are shorter)
ANSWER_CHARS = 1200


@dataclass
class Flip:
    """One shared item of a 0/1 metric that changed: ``lost`` (right in base, wrong in cand) or
    ``gained``; the two answers (every turn's text, joined) are filled in by ``attach_answers``."""

    task: str
    judge: str
    metric: str
    sample_id: str
    kind: Literal["lost", "gained"]
    base_answer: str = ""
    cand_answer: str = ""


def flipped_items(
    task: str, judge: str, metric: str, base: Mapping[str, ScoreRecord], cand: Mapping[str, ScoreRecord]
) -> list[Flip]:
    """The lost and gained items of a 0/1 metric (base item order; ``pair_items``' shared items)."""
    flips = []
    for sample_id, b_rec in base.items():
        b, c = _value(b_rec, metric), _value(cand.get(sample_id), metric)
        if b is not None and c is not None and b != c and {b, c} == {0.0, 1.0}:
            flips.append(Flip(task, judge, metric, sample_id, "lost" if b == 1.0 else "gained"))
    return flips


def _answers(run: LoadedRun, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(task, sample id) -> the model's answers of every turn (errors said as such), one pass."""
    turns: dict[tuple[str, str], dict[int, str]] = {}
    for rec in run.store.iter_latest_responses():
        key = (rec.task, rec.sample_id)
        if key in wanted:
            text = f"[error: {rec.output.error.message}]" if rec.output.error else (rec.output.text or "")
            turns.setdefault(key, {})[rec.turn] = text
    return {key: " / ".join(by_turn[t] for t in sorted(by_turn)) for key, by_turn in turns.items()}


def attach_answers(flips: list[Flip], base: LoadedRun, cand: LoadedRun) -> None:
    """Fill in both runs' answers of the flips (only these samples' responses are kept)."""
    wanted = {(f.task, f.sample_id) for f in flips}
    if not wanted:
        return
    base_answers, cand_answers = _answers(base, wanted), _answers(cand, wanted)
    for f in flips:
        f.base_answer = base_answers.get((f.task, f.sample_id), "(no response recorded)")
        f.cand_answer = cand_answers.get((f.task, f.sample_id), "(no response recorded)")


def report_link(run_dir: str, task: str, sample_id: str, links_from: Path | None) -> str:
    """The sample's permalink in a run's report.html (``#sample-TASK-ID``), relative to the folder
    the comparison is written to (``links_from``; the working directory when None)."""
    import os
    from urllib.parse import quote

    report = Path(run_dir) / "report.html"
    relative = os.path.relpath(report.resolve(), (links_from or Path.cwd()).resolve())
    return quote(Path(relative).as_posix()) + "#" + quote(f"sample-{task}-{sample_id}", safe="")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the whole comparison ---------------------------------------------------------------------------
@dataclass
class Comparison:
    base: str
    cand: str
    base_model: str
    cand_model: str
    options: CompareOptions
    metrics: list[MetricComparison]
    tasks_only_base: list[str]
    tasks_only_cand: list[str]
    judges_not_compared: list[str]
    run_notes: list[str]
    gate_failures: list[GateFailure] = field(default_factory=list)
    config_differences: list[tuple[str, Any, Any]] = field(default_factory=list)
    #: the shared items of 0/1 metrics that changed, both answers attached (``flipped_items``)
    flips: list[Flip] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "worse"]

    @property
    def improvements(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.verdict == "better"]

    @property
    def unknown_directions(self) -> list[str]:
        return sorted({f"{m.judge}/{m.metric}" for m in self.metrics if m.direction is None})

    @property
    def underpowered(self) -> list[MetricComparison]:
        return [m for m in self.metrics if m.underpowered]

    @property
    def exit_code(self) -> int:
        """1 when any metric regressed significantly or any gate failed, else 0 (bad input never
        gets this far: 2)."""
        return 1 if self.regressions or self.gate_failures else 0

    def verdicts(self) -> dict[str, dict[str, str]]:
        """task -> ``judge/metric`` -> verdict: the compact form the nightly history keeps."""
        out: dict[str, dict[str, str]] = {}
        for m in self.metrics:
            out.setdefault(m.task, {})[f"{m.judge}/{m.metric}"] = m.verdict
        return out


def _metric_names(records: Iterable[ScoreRecord]) -> list[str]:
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec.score.metrics))
    return list(names)


def _judges_of(run: LoadedRun, task: str) -> list[str]:
    recorded = run.info.task(task)
    listed = list(recorded.judges) if recorded is not None else []
    seen = [j for (t, j) in run.scores if t == task and j not in listed]
    return listed + seen


def _status_notes(run: LoadedRun, role: str) -> list[str]:
    status = run.info.status
    if status not in ("unknown", "completed"):  # "unknown": the manifest does not say
        other = "cand" if role == "base" else "base"
        return [f"{role} run status is {status!r}: its missing items count as only-{other}"]
    return []


def compare_runs(base_dir: Path, cand_dir: Path, options: CompareOptions | None = None) -> Comparison:
    """Compare two run directories (``EvalkitError`` for missing runs or different datasets)."""
    options = options or CompareOptions()
    base, cand = load_run(base_dir), load_run(cand_dir)
    tasks = check_same_datasets(base, cand)
    check_same_judges(base, cand, tasks)
    metrics: list[MetricComparison] = []
    not_compared: list[str] = []
    gates: list[GateFailure] = []
    flips: list[Flip] = []
    for task in tasks:
        cand_judges = _judges_of(cand, task)
        for judge in _judges_of(base, task):
            if judge not in cand_judges:
                not_compared.append(f"{task}: {judge} (base only)")
                continue
            b_recs, c_recs = base.scores.get((task, judge), {}), cand.scores.get((task, judge), {})
            gates.extend(check_gates(task, judge, b_recs, c_recs, options))
            names = _metric_names([*b_recs.values(), *c_recs.values()])
            declared = declared_directions(base, cand, task, judge)
            compared = [compare_metric(task, judge, m, b_recs, c_recs, options, declared) for m in names]
            metrics.extend(compared)
            flips.extend(
                f
                for m in compared
                if m.binary and m.discordant and sum(m.discordant)
                for f in flipped_items(task, judge, m.metric, b_recs, c_recs)
            )
            turn_declared = declared_turn_directions(base, cand, task, judge)
            metrics.extend(compare_decay(task, judge, b_recs, c_recs, options, turn_declared))
        base_judges = _judges_of(base, task)
        not_compared.extend(f"{task}: {j} (cand only)" for j in cand_judges if j not in base_judges)
    return Comparison(
        base=base.label,
        cand=cand.label,
        base_model=base.info.model.spec or "?",
        cand_model=cand.info.model.spec or "?",
        options=options,
        metrics=metrics,
        tasks_only_base=[t for t in base.tasks() if t not in tasks],
        tasks_only_cand=[t for t in cand.tasks() if t not in base.tasks()],
        judges_not_compared=not_compared,
        run_notes=_status_notes(base, "base") + _status_notes(cand, "cand"),
        gate_failures=gates + [missing_task_gate(t, base, options) for t in base.tasks() if t not in tasks],
        config_differences=config_diff(base.manifest, cand.manifest),
        flips=_shown_flips(flips, base, cand),
    )


def _shown_flips(flips: list[Flip], base: LoadedRun, cand: LoadedRun) -> list[Flip]:
    """The first ``MAX_FLIPS`` of each (task, judge, metric, kind), answers attached (the counts
    of all of them are the metric's discordant pairs)."""
    kept: list[Flip] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for f in flips:
        key = (f.task, f.judge, f.metric, f.kind)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= MAX_FLIPS:
            kept.append(f)
    attach_answers(kept, base, cand)
    return kept


# -- rendering --------------------------------------------------------------------------------------
VERDICT_MARK = {"better": "better", "worse": "WORSE", "no significant change": "no significant change"}
_MD_ESCAPES = {
    "\\": "\\\\",
    "|": "\\|",
    "`": "\\`",
    "*": "\\*",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "\n": " ",
    "\r": " ",
}


def md_escape(text: object) -> str:
    """Text safe inside a GitHub-flavoured markdown table cell: no cell breaks (``|``), no raw HTML,
    no links or emphasis from names that users (and plug-ins) choose."""
    escaped = "".join(_MD_ESCAPES.get(ch, ch) for ch in str(text))
    return escaped.replace("](", "\\](")  # "[x](url)" is the only bracket form that links unaided


def fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def direction_label(direction: Direction | None) -> str:
    return {"higher": "↑", "lower": "↓", "descriptive": "·"}.get(direction or "", "?")


def counts_label(c: ItemCounts) -> tuple[str, str, str, str]:
    errored = f"{c.errored} ({c.errored_base}/{c.errored_cand})" if c.errored else "0"
    return str(c.shared), str(c.only_base), str(c.only_cand), errored


def rule_text(options: CompareOptions) -> str:
    """The verdict rule in one sentence, printed with every comparison."""
    return (
        f"worse/better = significant (exact McNemar p under {options.alpha:g} for 0/1 metrics; "
        f"{1 - options.alpha:.0%} paired bootstrap CI excludes 0 otherwise) and the point difference, "
        f"signed by the metric's direction, at least {options.min_effect:g} against/for the candidate"
    )


def gate_text(options: CompareOptions) -> str:
    """The gates in one sentence, printed with every comparison."""
    return (
        f"candidate coverage at least {options.min_coverage:g} (--min-coverage), model/judge-error "
        f"rate at most {options.max_error_increase:g} above the base's (--max-error-increase), items "
        f"scored in both at least {options.min_shared:g} of the base's (--min-shared); MDE = smallest "
        f"change detectable at alpha {options.alpha:g} with {options.power:.0%} power"
    )


def _md_header(cmp: Comparison) -> list[str]:
    lines = [
        "# evalkit compare",
        "",
        f"- base: {md_escape(cmp.base)} ({md_escape(cmp.base_model)})",
        f"- cand: {md_escape(cmp.cand)} ({md_escape(cmp.cand_model)})",
        f"- result: **{len(cmp.regressions)} worse, {len(cmp.improvements)} better, "
        f"{len(cmp.gate_failures)} gates failed**, {len(cmp.metrics)} metrics compared"
        + (f", {len(cmp.underpowered)} underpowered" if cmp.underpowered else ""),
        f"- rule: {md_escape(rule_text(cmp.options))}",
        f"- gates: {md_escape(gate_text(cmp.options))}",
    ]
    lines.append(f"- power: {md_escape(power_text(cmp))}")
    lines.extend(f"- **{md_escape(g.message)}**" for g in cmp.gate_failures)
    lines.extend(f"- note: {md_escape(n)}" for n in cmp.run_notes)
    if cmp.config_differences:
        lines.append("- settings that differ (base → cand):")
        lines.extend(f"  - {md_escape(line)}" for line in diff_lines(cmp.config_differences))
    else:
        lines.append("- settings that differ: none")
    if cmp.tasks_only_base or cmp.tasks_only_cand:
        only = [
            *(f"{t} (base only)" for t in cmp.tasks_only_base),
            *(f"{t} (cand only)" for t in cmp.tasks_only_cand),
        ]
        lines.append(f"- tasks not compared: {md_escape(', '.join(only))}")
    if cmp.judges_not_compared:
        lines.append(f"- judges not compared: {md_escape(', '.join(cmp.judges_not_compared))}")
    if cmp.unknown_directions:
        lines.append(
            "- direction unknown (never judged better/worse): "
            f"{md_escape(', '.join(cmp.unknown_directions))}; declare it with --direction METRIC=higher|lower"
        )
    return lines


TABLE_HEAD = (
    "judge / metric",
    "dir",
    "base",
    "cand",
    "diff [CI]",
    "p (McNemar)",
    "MDE",
    "shared",
    "only base",
    "only cand",
    "errored (base/cand)",
    "verdict",
    "note",
)


def table_row(m: MetricComparison) -> list[str]:
    """One metric's cells as plain text (escaped by each renderer)."""
    ci = "" if m.ci_low is None else f" [{fmt(m.ci_low, signed=True)}, {fmt(m.ci_high, signed=True)}]"
    return [
        f"{m.judge} / {m.metric}",
        direction_label(m.direction),
        fmt(m.base_mean),
        fmt(m.cand_mean),
        fmt(m.diff, signed=True) + ci,
        fmt_p(m.p_value) if m.binary else "–",
        fmt(m.mde),
        *counts_label(m.counts),
        VERDICT_MARK.get(m.verdict, m.verdict) + (" (underpowered)" if m.underpowered else ""),
        m.note,
    ]


def power_text(cmp: Comparison) -> str:
    """The power note, printed with every comparison: which "no significant change" verdicts
    could not have seen a change of ``min_effect`` (their MDE is larger)."""
    effect = f"{cmp.options.min_effect:g}"
    if not cmp.underpowered:
        return f"no metric underpowered: each could detect a change of {effect} (MDE column)"
    names = ", ".join(f"{m.task}: {m.judge}/{m.metric} (MDE {fmt(m.mde)})" for m in cmp.underpowered)
    return (
        f"{len(cmp.underpowered)} of {len(cmp.metrics)} metrics underpowered, a change of {effect} would "
        f"not have been detected at this n: {names}; read their 'no significant change' as 'not measured'"
    )


def flip_groups(cmp: Comparison) -> list[tuple[MetricComparison, list[Flip]]]:
    """Per 0/1 metric with flips: its comparison (the discordant counts) and the flips shown."""
    out = []
    for m in cmp.metrics:
        shown = [f for f in cmp.flips if (f.task, f.judge, f.metric) == (m.task, m.judge, m.metric)]
        if shown:
            out.append((m, shown))
    return out


def flip_heading(m: MetricComparison, shown: list[Flip]) -> str:
    lost, gained = m.discordant or (0, 0)
    more = lost + gained - len(shown)
    tail = f"; the first {MAX_FLIPS} of each are listed ({more} more)" if more > 0 else ""
    return f"{m.task}: {m.judge} / {m.metric}: {lost} lost, {gained} gained{tail}"


def _md_flips(cmp: Comparison, links_from: Path | None) -> list[str]:
    groups = flip_groups(cmp)
    if not groups:
        return []
    lines = ["", "## Flipped items", "", "lost: right in base, wrong in cand; gained: the reverse."]
    for m, shown in groups:
        lines += ["", f"### {md_escape(flip_heading(m, shown))}", ""]
        lines += ["| item | change | base answer | cand answer | reports |", "|---|---|---|---|---|"]
        for f in shown:
            base_link = report_link(cmp.base, f.task, f.sample_id, links_from)
            cand_link = report_link(cmp.cand, f.task, f.sample_id, links_from)
            cells = [
                md_escape(f.sample_id),
                f.kind,
                md_escape(_clip(f.base_answer, 300)),
                md_escape(_clip(f.cand_answer, 300)),
                f"[base]({base_link}) · [cand]({cand_link})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(cmp: Comparison, links_from: Path | None = None) -> str:
    """The comparison as GitHub-flavoured markdown: a header (settings that differ, the power
    note), one table per task, then the flipped items with links into both reports, relative to
    ``links_from`` (the folder the markdown is written to; the working directory when None)."""
    lines = _md_header(cmp)
    tasks = list(dict.fromkeys(m.task for m in cmp.metrics))
    for task in tasks:
        lines += ["", f"## {md_escape(task)}", "", "| " + " | ".join(TABLE_HEAD) + " |"]
        lines.append("|" + "---|" * len(TABLE_HEAD))
        for m in (m for m in cmp.metrics if m.task == task):
            lines.append("| " + " | ".join(md_escape(cell) for cell in table_row(m)) + " |")
    lines += _md_flips(cmp, links_from)
    return "\n".join(lines) + "\n"


HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>evalkit compare: {{ cmp.base_model }} vs {{ cmp.cand_model }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td:first-child, th:first-child, td:last-child { text-align: left; }
tr.worse { background: #fdd; } tr.better { background: #dfd; } tr.changed { background: #ffd; }
code { background: #f4f4f4; }
td.answer { text-align: left; white-space: pre-wrap; max-width: 36em; vertical-align: top; }
tr.lost { background: #fdd; } tr.gained { background: #dfd; }
</style></head><body>
<h1>evalkit compare</h1>
<ul>
<li>base: <code>{{ cmp.base }}</code> ({{ cmp.base_model }})</li>
<li>cand: <code>{{ cmp.cand }}</code> ({{ cmp.cand_model }})</li>
<li>result: <strong>{{ cmp.regressions|length }} worse, {{ cmp.improvements|length }} better,
{{ cmp.gate_failures|length }} gates failed</strong>, {{ cmp.metrics|length }} metrics compared
{%- if cmp.underpowered %}, {{ cmp.underpowered|length }} underpowered{% endif %}</li>
<li>rule: {{ rule }}</li>
<li>gates: {{ gates }}</li>
<li id="power">power: {{ power }}</li>
{% for g in cmp.gate_failures %}<li class="worse"><strong>{{ g.message }}</strong></li>{% endfor %}
{% for note in cmp.run_notes %}<li>note: {{ note }}</li>{% endfor %}
<li>settings that differ (base → cand):{% if not diffs %} none{% endif %}
{% if diffs %}<ul>{% for d in diffs %}<li><code>{{ d }}</code></li>{% endfor %}</ul>{% endif %}</li>
{% if not_compared %}<li>not compared: {{ not_compared|join(", ") }}</li>{% endif %}
{% if cmp.unknown_directions %}<li>direction unknown (never judged better/worse):
{{ cmp.unknown_directions|join(", ") }}; declare it with --direction METRIC=higher|lower</li>{% endif %}
</ul>
{% for task, rows in tasks %}
<h2>{{ task }}</h2>
<table>
<thead><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for verdict, cells in rows %}<tr class="{{ verdict }}">
{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% endfor %}
{% if flips %}
<h2 id="flipped">Flipped items</h2>
<p>lost: right in base, wrong in cand; gained: the reverse.</p>
{% for heading, rows in flips %}
<h3>{{ heading }}</h3>
<table class="flips">
<thead><tr><th>item</th><th>change</th><th>base answer</th><th>cand answer</th><th>reports</th></tr></thead>
<tbody>
{% for f, base_link, cand_link in rows %}<tr class="flip {{ f.kind }}" data-sample="{{ f.sample_id }}">
<td>{{ f.sample_id }}</td><td>{{ f.kind }}</td>
<td class="answer base-answer">{{ clip(f.base_answer) }}</td>
<td class="answer cand-answer">{{ clip(f.cand_answer) }}</td>
<td><a class="base-link" href="{{ base_link }}">base</a> ·
<a class="cand-link" href="{{ cand_link }}">cand</a></td></tr>
{% endfor %}</tbody>
</table>
{% endfor %}
{% endif %}
</body></html>
"""


def to_html(cmp: Comparison, links_from: Path | None = None) -> str:
    """The comparison as one self-contained HTML page; every name is escaped (jinja2 autoescape);
    flipped items link into both runs' reports relative to ``links_from`` (see ``to_markdown``)."""
    from jinja2 import Environment

    env = Environment(autoescape=True, keep_trailing_newline=True)
    tasks = []
    for task in dict.fromkeys(m.task for m in cmp.metrics):
        rows = [(m.verdict.split()[0], table_row(m)) for m in cmp.metrics if m.task == task]
        tasks.append((task, rows))
    not_compared = [
        *(f"task {t} (base only)" for t in cmp.tasks_only_base),
        *(f"task {t} (cand only)" for t in cmp.tasks_only_cand),
        *cmp.judges_not_compared,
    ]
    return env.from_string(HTML_TEMPLATE).render(
        cmp=cmp,
        rule=rule_text(cmp.options),
        gates=gate_text(cmp.options),
        diffs=diff_lines(cmp.config_differences),
        tasks=tasks,
        head=TABLE_HEAD,
        not_compared=not_compared,
        power=power_text(cmp),
        clip=lambda text: _clip(text, ANSWER_CHARS),
        flips=[
            (
                flip_heading(m, shown),
                [
                    (
                        f,
                        report_link(cmp.base, f.task, f.sample_id, links_from),
                        report_link(cmp.cand, f.task, f.sample_id, links_from),
                    )
                    for f in shown
                ],
            )
            for m, shown in flip_groups(cmp)
        ],
    )
