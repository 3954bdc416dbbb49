"""From run entries to what the site shows: per-benchmark tables (one per dataset version), the
overall table, and each model's history. Pure data, no files, so the rules are easy to test.

The rules, also printed on the site (``OVERALL_RULE``, ``VERSION_RULE``):

- A benchmark's numbers are grouped by ``VersionKey`` (task, dataset id, revision, fingerprint,
  primary judge/metric). Within a group a model shows its latest run (by manifest start time);
  every run still appears in the model's history.
- The task's *reference version* is the group with the most models (ties: the one with the newest
  run). Other groups are shown as separate tables with a warning; they never enter the overall.
- A table shows, beside the primary metric, the speech judges' headline metrics its runs have
  (``SPEECH_COLUMNS``: naturalness MOS, monotony, pitch SD, unjustified jumps, ignored user
  changes, voice switches, spoken-vs-text WER, the listener's score), each with its CI and the
  direction its judge declares; rank and order follow the primary metric.
- Within a table the best row comes first by the direction the metric's judge declares
  (``MetricSpec.direction``: a lower-is-better metric such as WER sorts ascending).
- Overall = unweighted mean of the primary metric over the benchmarks (reference versions only)
  whose primary metric is a higher-is-better 0-1 score, shown only for models that have a number
  on every one of them. Metrics on other scales (e.g. DNSMOS 1-5) or lower-is-better ones (WER)
  are left out and named in the note; averaging them with accuracies would mean nothing. No CI
  is given for the overall (the runs' bootstrap samples are not joint).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from evalkit.leaderboard.runs import SPEECH_COLUMNS, RunEntry, TaskResult, VersionKey

OVERALL_RULE = (
    "Overall = unweighted mean of each benchmark's primary metric, over the benchmarks whose primary "
    "metric is a higher-is-better 0-1 score, using each benchmark's reference dataset version only. "
    "It is shown only for models with a result on every one of those benchmarks (others show which "
    "are missing). "
    "No confidence interval is given for it."
)
VERSION_RULE = (
    "Numbers are only compared within one dataset version (dataset id, revision, content fingerprint "
    "and scoring judge/metric). A benchmark's reference version is the one with the most models; runs "
    "on any other version are shown in separate tables and never averaged with it."
)


def slugify(text: str) -> str:
    """A file-name-safe, collision-free name: readable part + short hash of the exact text."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:50] or "x"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass
class Row:
    """One model's latest result in one version group."""

    model: str
    run: RunEntry
    result: TaskResult
    n_runs: int


def _row_dict(row: Row) -> dict[str, Any]:
    res = row.result
    return {
        "model": row.model,
        "model_slug": slugify(row.model),
        "run_id": row.run.run_id,
        "started": row.run.started_text,
        "status": row.run.status,
        "value": res.value,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "n": res.n,
        "n_scored": res.n_scored,
        "coverage": res.coverage,
        "n_model_errors": res.n_model_errors,
        "n_judge_errors": res.n_judge_errors,
        "n_parse_failures": res.n_parse_failures,
        "n_request_errors": res.n_request_errors,
        "n_runs": row.n_runs,
        # what the row is: the name people use, and the settings that make it this row
        "display": row.run.display,
        "settings": row.run.settings_text,
        "card_digest": row.run.identity[1] or None,
        "speech": res.speech,
    }


def speech_columns(rows: list[Row]) -> list[dict[str, Any]]:
    """The ``SPEECH_COLUMNS`` some row of a table has, in their order, with the declared
    direction (for the arrow and the sort) and the judge/metric they come from."""
    present: dict[str, dict[str, Any]] = {}
    for row in rows:
        for label, cell in row.result.speech.items():
            present.setdefault(
                label, {"label": label, "direction": cell["direction"], "metric": cell["metric"]}
            )
    return [present[label] for _, _, label in SPEECH_COLUMNS if label in present]


def ranked(rows: list[dict[str, Any]], key: str = "value") -> list[dict[str, Any]]:
    """``rank`` on rows already sorted best first: 1, 2, 2, 4 for ties; no rank without a value."""
    previous, rank = object(), 0
    for i, row in enumerate(rows, start=1):
        value = row[key]
        if value is None:
            row["rank"] = None
            continue
        if value != previous:
            rank, previous = i, value
        row["rank"] = rank
    return rows


def best_first(value: float | None, direction: str | None, model: str) -> tuple[bool, float, str]:
    """Sort key of a table row: the best value first as the metric's judge declares it (a
    lower-is-better metric such as WER ascending, every other one descending), missing values
    last, ties by model name."""
    signed = (value or 0.0) if direction == "lower" else -(value or 0.0)
    return (value is None, signed, model)


def version_groups(runs: list[RunEntry]) -> dict[str, list[dict[str, Any]]]:
    """task -> its version groups, reference version first, each with its latest-per-model rows."""
    by_key: dict[VersionKey, dict[str, list[tuple[RunEntry, TaskResult]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run in runs:
        for res in run.results:
            by_key[res.key][run.model].append((run, res))
    tasks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, models in by_key.items():
        rows = []
        for model, items in models.items():
            run, res = max(items, key=lambda item: (item[0].started, item[0].run_id))
            rows.append(Row(model, run, res, len(items)))
        direction = next((r.result.direction for r in rows if r.result.direction), None)
        rows.sort(key=lambda r: best_first(r.result.value, direction, r.model))
        newest = max(r.run.started for r in rows)
        tasks[key.task].append(
            {
                "key": key,
                "slug": key.slug(),
                "label": key.label(),
                "direction": direction,
                "dataset": rows[0].result.dataset,
                "rows": ranked([_row_dict(r) for r in rows]),
                "speech_columns": speech_columns(rows),
                "_rank": (len(rows), newest),
            }
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for task in sorted(tasks):
        groups = sorted(tasks[task], key=lambda g: g["_rank"], reverse=True)
        for i, group in enumerate(groups):
            group.pop("_rank")
            group["reference"] = i == 0
            group["warning"] = (
                None
                if i == 0
                else (
                    f"Different dataset version from the reference table of {task} "
                    f"({groups[0]['label']}); these numbers are not comparable with it and are not "
                    "in the overall."
                )
            )
        out[task] = groups
    return out


def _is_unit_scale(group: dict[str, Any]) -> bool:
    """A 0-1 higher-is-better score (an error rate in 0-1 averaged with accuracies would mean nothing)."""
    values = [r["value"] for r in group["rows"] if r["value"] is not None]
    return (
        group.get("direction") in (None, "higher") and bool(values) and all(0.0 <= v <= 1.0 for v in values)
    )


def overall(benchmarks: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The overall table by ``OVERALL_RULE``."""
    included = {t: groups[0] for t, groups in benchmarks.items() if _is_unit_scale(groups[0])}
    excluded = sorted(t for t in benchmarks if t not in included)
    models = sorted({r["model"] for groups in benchmarks.values() for g in groups for r in g["rows"]})
    rows = []
    for model in models:
        per_task: dict[str, dict[str, Any]] = {}
        for task, group in included.items():
            for row in group["rows"]:
                if row["model"] == model and row["value"] is not None:
                    per_task[task] = row
        missing = sorted(t for t in included if t not in per_task)
        coverages = [r["coverage"] for r in per_task.values() if r["coverage"] is not None]
        rows.append(
            {
                "model": model,
                "model_slug": slugify(model),
                "value": None
                if missing or not included
                else sum(r["value"] for r in per_task.values()) / len(included),
                "per_task": {t: r["value"] for t, r in per_task.items()},
                "settings": next((r["settings"] for r in per_task.values()), ""),
                "missing": missing,
                "min_coverage": min(coverages) if coverages else None,
                "errors": sum(r["n_model_errors"] + r["n_judge_errors"] for r in per_task.values()),
            }
        )
    rows.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0.0), r["model"]))
    return {
        "rule": OVERALL_RULE,
        "tasks": sorted(included),
        "excluded_tasks": excluded,
        "rows": ranked(rows),
    }


def night_of(run: RunEntry) -> str:
    """The night a run belongs to (its nightly date; else the UTC date it started): the history's
    x axis, so two nights plot one day apart whatever hour each run started."""
    return str((run.night or {}).get("date") or run.started.astimezone(UTC).date().isoformat())


def history(runs: list[RunEntry]) -> dict[str, list[dict[str, Any]]]:
    """model -> one series per version group: every run's primary value in start-time order, with
    its night and the site path of that night's comparison (None: none)."""
    series: dict[str, dict[VersionKey, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.started, r.run_id)):
        for res in run.results:
            series[run.model][res.key].append(
                {
                    "run_id": run.run_id,
                    "started": run.started.isoformat(),
                    "night": night_of(run),
                    "comparison": (run.night or {}).get("comparison"),
                    "value": res.value,
                    "ci_low": res.ci_low,
                    "ci_high": res.ci_high,
                    "coverage": res.coverage,
                }
            )
    return {
        model: [
            {"task": key.task, "version": key.slug(), "label": key.label(), "points": points}
            for key, points in sorted(by_key.items())
        ]
        for model, by_key in sorted(series.items())
    }


def leaderboard_data(runs: list[RunEntry]) -> dict[str, Any]:
    """Everything the pages show, JSON-ready (``VersionKey`` objects turned into dicts)."""
    from evalkit.leaderboard.long_turn import long_turn_data

    benchmarks = version_groups(runs)
    data_benchmarks = {
        task: [{**{k: v for k, v in g.items() if k != "key"}, "key": vars(g["key"])} for g in groups]
        for task, groups in benchmarks.items()
    }
    return {
        "version_rule": VERSION_RULE,
        "benchmarks": data_benchmarks,
        "overall": overall(benchmarks),
        "history": history(runs),
        "models": sorted({r.model for r in runs}),
        # the long-turn suite and the reasoning-versus-feel picture (``evalkit.leaderboard.long_turn``)
        "long_turn": long_turn_data(runs, benchmarks),
    }
