"""The report's scoreboard: one row per task with what a reader checks first (the primary metric
with its 95% CI and how it was computed, coverage, errors, empty and truncated answers), all read
from summary.json so the page and the file never disagree."""

from __future__ import annotations

from typing import Any

from evalkit.run_files import Manifest, Summary

#: how ``ci_method`` values read on the page
CI_METHODS = {"wilson": "Wilson", "bootstrap": "bootstrap", "clopper-pearson": "Clopper-Pearson"}


def display_name(manifest: Manifest) -> str:
    """The model's name for people: ``--name``, else the model card's name, else the spec
    without its ``@base_url`` (the leaderboard's rule, ``evalkit.leaderboard.runs.display_name``)."""
    card = manifest.model.card or {}
    spec = manifest.model_spec
    return manifest.name or card.get("name") or ("(unknown model)" if spec == "?" else spec.split("@")[0])


def scoreboard(summary: Summary, manifest: Manifest) -> list[dict[str, Any]]:
    """Per task: primary judge/metric, value, CI and its method, direction, n scored / n, coverage,
    model + judge errors, parse failures, empty and truncated answers."""
    rows = []
    for name, task in summary.tasks.items():
        primary = task.primary
        judge = task.judges.get(primary.judge) if primary is not None and primary.judge else None
        declared = (judge.metrics_declared if judge else {}).get(primary.metric if primary else "", {})
        rows.append(
            {
                "task": name,
                "judge": primary.judge if primary else None,
                "metric": primary.metric if primary else None,
                "value": primary.value if primary else None,
                "ci_low": primary.ci_low if primary else None,
                "ci_high": primary.ci_high if primary else None,
                "ci_method": CI_METHODS.get(primary.ci_method or "", primary.ci_method) if primary else None,
                "direction": declared.get("direction"),
                "n": task.n_samples,
                "n_scored": judge.n_scored if judge else 0,
                "coverage": judge.coverage if judge else None,
                "errors": (judge.n_model_errors + judge.n_judge_errors) if judge else task.requests.n_errors,
                "parse_failures": judge.n_parse_failures if judge else 0,
                "empty": task.n_empty,
                "truncated": task.n_truncated,
            }
        )
    return rows
