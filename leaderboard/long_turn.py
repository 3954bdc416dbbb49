"""The leaderboard's long-turn suite table and the reasoning-versus-feel picture.

Rules (printed on the site, ``LONG_TURN_RULE``):

- A model's feel comes from its latest run (manifest start time) with a feel task
  (``evalkit.feel``: a task whose summary.json has a ``feel`` block, e.g. ``long-turn`` or
  ``demo-speech``). Feel numbers are compared only within one version of that task (task, dataset
  id, revision, fingerprint); the version with the most models is the reference, the others are
  listed apart and never plotted with it.
- Correctness is each benchmark's reference-version result of the model (the tables above:
  ``evalkit.leaderboard.tables.version_groups``), for benchmarks whose primary metric is a
  higher-is-better 0-1 score; benchmarks are not averaged, a model is placed once per benchmark.
- The suite's columns: the feel composite and each part (normalised, with CIs), and per per-turn
  metric the decay slope with its CI and verdict (``evalkit.turn_stats``) from the same run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from evalkit.feel import CORRECTNESS_RULE, FEEL_RULE
from evalkit.leaderboard.runs import RunEntry
from evalkit.leaderboard.tables import _is_unit_scale, slugify
from evalkit.run_files import Summary

LONG_TURN_RULE = (
    "Feel: the latest run of each model with a feel task, compared within one version of that task "
    "(the version with the most models; others listed apart). Correctness: the model's result on each "
    "benchmark's reference version whose primary is a higher-is-better 0-1 score, one point per "
    "benchmark, never averaged. " + FEEL_RULE + " " + CORRECTNESS_RULE
)


def _feel_task(summary: Summary) -> str | None:
    return next((name for name, task in summary.tasks.items() if task.feel is not None), None)


def _row(run: RunEntry, summary: Summary, task: str) -> dict[str, Any]:
    """One model's suite row: feel, its parts, and the decay of every per-turn metric."""
    task_summary = summary.tasks[task]
    feel = task_summary.feel
    assert feel is not None
    decay = {
        f"{judge_name}/{metric}": {
            "value": d.slope.value,
            "ci_low": d.slope.ci_low,
            "ci_high": d.slope.ci_high,
            "unit": d.unit,
            "verdict": d.verdict,
            "direction": d.direction,
        }
        for judge_name, judge in task_summary.judges.items()
        for metric, d in judge.decay.items()
    }
    return {
        "model": run.model,
        "model_slug": slugify(run.model),
        "run_id": run.run_id,
        "started": run.started_text,
        "feel": feel.model_dump(mode="json"),
        "parts": {p["part"]: p for p in feel.parts},
        "decay": decay,
    }


def _correctness(benchmarks: dict[str, list[dict[str, Any]]], feel_tasks: set[str]) -> dict[str, dict]:
    """model -> task -> its reference-version primary (value, CI, metric)."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for task, groups in benchmarks.items():
        reference = groups[0]
        if task in feel_tasks or not _is_unit_scale(reference) or reference.get("direction") != "higher":
            continue
        metric = f"{reference['key'].judge}/{reference['key'].metric}"
        for row in reference["rows"]:
            if row["value"] is not None:
                out[row["model"]][task] = {
                    "metric": metric,
                    **{k: row[k] for k in ("value", "ci_low", "ci_high", "n_scored")},
                }
    return out


def long_turn_data(runs: list[RunEntry], benchmarks: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The suite table (reference version of the feel task), the versions left apart, and the
    picture's points (``reports.long_turn.feel_figure``); empty rows when no run has a feel."""
    groups: dict[tuple[str, ...], dict[str, tuple[RunEntry, Summary, str]]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: (r.started, r.run_id)):
        summary = Summary.model_validate(run.summary)
        task = _feel_task(summary)
        if task is None:
            continue
        dataset = summary.tasks[task].dataset
        key = (task, str(dataset.id), str(dataset.revision), str(dataset.fingerprint))
        groups[key][run.model] = (run, summary, task)  # later runs replace earlier ones
    if not groups:
        return {"rule": LONG_TURN_RULE, "rows": [], "points": [], "other_versions": [], "decay_columns": []}
    ranked = sorted(groups, key=lambda k: (len(groups[k]), k), reverse=True)
    reference = groups[ranked[0]]
    rows = [_row(run, summary, task) for run, summary, task in reference.values()]
    rows.sort(key=lambda r: (r["feel"]["value"] is None, -(r["feel"]["value"] or 0.0), r["model"]))
    correctness = _correctness(benchmarks, {k[0] for k in groups})
    points = [
        {"model": r["model"], "feel": r["feel"], "correctness": correctness.get(r["model"], {})} for r in rows
    ]
    return {
        "rule": LONG_TURN_RULE,
        "version": {"task": ranked[0][0], "dataset_id": ranked[0][1], "revision": ranked[0][2]},
        "rows": rows,
        "parts": [p["part"] for p in rows[0]["feel"]["parts"]] if rows else [],
        "decay_columns": sorted({c for r in rows for c in r["decay"]}),
        "points": points,
        "other_versions": [
            {"task": k[0], "dataset_id": k[1], "revision": k[2], "models": sorted(groups[k])}
            for k in ranked[1:]
        ],
    }
