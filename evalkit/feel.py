"""Reasoning versus feel: correctness (benchmark primaries) against conversational feel (a
composite of the speech judges), the picture of the "verifiable reward trap".

**Conversational feel** of a task (summary.json ``tasks.<task>.feel``) is the mean of up to four
parts, each a judge metric normalised to 0-1 (1 = best) by its declaration (``MetricSpec``):

==========================  ============================================================  ========
part                        metric (the first the task has, in this order)                 scale
==========================  ============================================================  ========
prosodic naturalness        listener/listener_naturalness, naturalness/distillmos,         1-5
                            naturalness/dnsmos_ovrl
emotional continuity        emotion/unjustified_jumps, listener/listener_emotion_user,     count,
                            emotion-llm/emotion_llm_score                                  1-5
voice consistency           voice/timbre_drift, voice/voice_similarity_min                 0-1
immersion                   listener/listener_immersion                                    1-5
==========================  ============================================================  ========

Normalisation (``normalised``): a metric with a finite declared range ``[lo, hi]`` maps to
``(v - lo) / (hi - lo)`` (flipped, ``1 - u``, when lower is better); a lower-is-better count
(range ``[0, inf)``, e.g. unjustified affect jumps per conversation) maps to ``1 / (1 + v)``.
Per conversation the feel is the mean of the normalised parts the task has (a conversation enters
only with every one of them valued), and summary.json gives its mean over conversations with a
seeded bootstrap CI, and each part beside it (raw metric, normalised mean and CI). A part whose
judge is not in the task is absent and said so; one whose judge did not apply (a text-only model:
``not_applicable``) is named with the reason, never counted as zero.

**Correctness** of a run: every other task's primary metric that is a higher-is-better 0-1 score
(MMAU, MMSU, Spoken-MQA accuracy, Audio MultiChallenge APR, the demo tasks), each with its CI. The
picture places a model once per such task (x: that task's primary, y: feel), never averaging
benchmarks into one number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalkit.judges.base import MetricSpec
from evalkit.run_files import Summary
from evalkit.stats import metric_summary


@dataclass(frozen=True)
class FeelPart:
    """One part of the composite and the (judge, metric) pairs that can stand for it, preferred first."""

    name: str
    candidates: tuple[tuple[str, str], ...]


FEEL_PARTS = (
    FeelPart(
        "prosodic naturalness",
        (("listener", "listener_naturalness"), ("naturalness", "distillmos"), ("naturalness", "dnsmos_ovrl")),
    ),
    FeelPart(
        "emotional continuity",
        (
            ("emotion", "unjustified_jumps"),
            ("listener", "listener_emotion_user"),
            ("emotion-llm", "emotion_llm_score"),
        ),
    ),
    FeelPart("voice consistency", (("voice", "timbre_drift"), ("voice", "voice_similarity_min"))),
    FeelPart("immersion", (("listener", "listener_immersion"),)),
)
FEEL_RULE = (
    "Conversational feel = mean of the normalised parts (0-1, 1 best): prosodic naturalness, emotional "
    "continuity, voice consistency, immersion, each the first of its metrics the task has; a finite "
    "range [lo, hi] maps to (v - lo) / (hi - lo) (1 - that when lower is better), a lower-is-better "
    "count to 1 / (1 + v). Per conversation, then mean over conversations with a 95% bootstrap CI."
)
CORRECTNESS_RULE = (
    "Correctness = each other task's primary metric when it is a higher-is-better 0-1 score (MMAU, "
    "MMSU, Spoken-MQA, Audio MultiChallenge, demo tasks), with its 95% CI; benchmarks are never averaged."
)


def feel_metrics(judge: str) -> set[str]:
    """The metrics of ``judge`` that can be a part (the summary keeps their per-sample values)."""
    return {m for part in FEEL_PARTS for j, m in part.candidates if j == judge}


def normalised(value: float, spec: MetricSpec) -> float | None:
    """``value`` on 0-1 with 1 best by ``spec`` (module docstring); None when it has no such scale."""
    lo, hi = spec.range
    if spec.direction not in ("higher", "lower"):
        return None
    if lo is not None and hi is not None and hi > lo:
        unit = min(1.0, max(0.0, (value - lo) / (hi - lo)))
        return unit if spec.direction == "higher" else 1.0 - unit
    if spec.direction == "lower" and lo == 0.0 and hi is None:
        return 1.0 / (1.0 + max(0.0, value))
    return None


def scale_text(spec: MetricSpec) -> str:
    """How a part was normalised, for the report."""
    lo, hi = spec.range
    if lo is not None and hi is not None:
        return f"({spec.name} - {lo:g}) / {hi - lo:g}" + (" flipped" if spec.direction == "lower" else "")
    return f"1 / (1 + {spec.name})"


def feel_summary(
    task_judges: Mapping[str, Any],
    values: Mapping[tuple[str, str], Mapping[str, float]],
    specs: Mapping[str, Mapping[str, MetricSpec]],
    seed: int,
) -> dict[str, Any] | None:
    """The ``feel`` block of one task: ``task_judges`` its judges' summary blocks (for the raw
    stats and ``not_applicable``), ``values`` (judge, metric) -> sample id -> value, ``specs``
    judge -> metric -> declaration. None when the task has no judge of any part."""
    from evalkit.summary import _seed_for

    parts: list[dict[str, Any]] = []
    columns: list[dict[str, float]] = []
    for part in FEEL_PARTS:
        present = [(j, m) for j, m in part.candidates if j in task_judges and m in specs.get(j, {})]
        if not present:
            parts.append({"part": part.name, "absent": "no judge of this part in the task"})
            continue
        chosen = next(((j, m) for j, m in present if values.get((j, m))), None)
        if chosen is None:
            judge, metric = present[0]
            reason = task_judges[judge].get("not_applicable", {}).get(metric, "no conversation had a value")
            parts.append({"part": part.name, "judge": judge, "metric": metric, "not_applicable": reason})
            continue
        judge, metric = chosen
        spec = specs[judge][metric]
        column = {s: n for s, v in values[chosen].items() if (n := normalised(v, spec)) is not None}
        columns.append(column)
        parts.append(
            {
                "part": part.name,
                "judge": judge,
                "metric": metric,
                "raw": task_judges[judge]["metrics"].get(metric),
                "scale": scale_text(spec),
                "normalised": metric_summary(list(column.values()), _seed_for(seed, "feel", part.name)),
            }
        )
    if all("absent" in p for p in parts):
        return None
    shared = set.intersection(*(set(c) for c in columns)) if columns else set()
    import numpy as np  # only a run with a feel needs it

    per_conversation = [float(np.mean([c[s] for c in columns])) for s in sorted(shared)]
    out: dict[str, Any] = {**metric_summary(per_conversation, _seed_for(seed, "feel")), "parts": parts}
    if not columns:
        out["not_applicable"] = "; ".join(
            f"{p['part']}: {p['not_applicable']}" for p in parts if "not_applicable" in p
        )
    return out


# -- the picture --------------------------------------------------------------------------------------
def correctness_of(summary: Summary) -> dict[str, dict[str, Any]]:
    """task -> its primary metric with CI, for every task that is not a feel task and whose primary
    metric its judge declares (summary.json ``metrics_declared``) a higher-is-better 0-1 score."""
    out: dict[str, dict[str, Any]] = {}
    for name, task in summary.tasks.items():
        primary = task.primary
        if primary is None or primary.judge is None or primary.value is None or task.feel is not None:
            continue
        judge = task.judges.get(primary.judge)
        spec = (judge.metrics_declared if judge is not None else {}).get(primary.metric) or {}
        if spec.get("direction") == "higher" and list(spec.get("range") or ()) == [0.0, 1.0]:
            out[name] = {
                "metric": f"{primary.judge}/{primary.metric}",
                "value": primary.value,
                "ci_low": primary.ci_low,
                "ci_high": primary.ci_high,
                "n": primary.n,
            }
    return out


def picture_point(label: str, summary: Summary) -> dict[str, Any] | None:
    """One model (run) in the picture: its feel (the first task that has one, JSON-ready) and its
    correctness per task (``correctness_of``); None when no task of the run has a feel block."""
    feel_task = next((name for name, t in summary.tasks.items() if t.feel is not None), None)
    if feel_task is None:
        return None
    feel = summary.tasks[feel_task].feel
    assert feel is not None
    return {
        "model": label,
        "feel_task": feel_task,
        "feel": feel.model_dump(mode="json"),
        "correctness": correctness_of(summary),
    }
