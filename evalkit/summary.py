"""Scores -> summary.json: per task and judge, each metric with a seeded 95% bootstrap CI, broken
down by the task's group keys and by answered-turn index, with parse-failure and error counts.

Metrics are averaged over the samples a judge could score; samples whose model call or judge
failed are *not* folded in as zeros but counted (``n_model_errors``, ``n_judge_errors``) and shown
beside the metric, together with ``coverage`` = scored / total. Parse failures are scored as wrong
(the model answered, unreadably) and counted too.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from evalkit.records import ResponseRecord, ScoreRecord
from evalkit.stats import metric_summary


def _seed_for(seed: int, *names: str) -> int:
    """A distinct, stable bootstrap seed per (run seed, task, judge, metric, group)."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**32)


def _metrics_of(records: list[ScoreRecord], seed: int, *scope: str) -> dict[str, Any]:
    values: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        for metric, value in rec.score.metrics.items():
            if value is not None:
                values[metric].append(float(value))
    return {m: metric_summary(v, _seed_for(seed, *scope, m)) for m, v in sorted(values.items())}


def summarise_judge(
    records: list[ScoreRecord], group_by: list[str], seed: int, scope: tuple[str, ...]
) -> dict[str, Any]:
    scored = [r for r in records if r.score.error is None]
    errors = Counter(r.score.error.kind for r in records if r.score.error is not None)
    groups: dict[str, dict[str, Any]] = {}
    for key in group_by:
        buckets: dict[str, list[ScoreRecord]] = defaultdict(list)
        for rec in scored:
            buckets[str(rec.meta.get(key, "(none)"))].append(rec)
        groups[key] = {
            value: _metrics_of(recs, seed, *scope, key, value) for value, recs in sorted(buckets.items())
        }
    by_turn: dict[int, list[float]] = defaultdict(list)
    for rec in scored:
        for row in rec.score.details.get("turns", []):
            by_turn[int(row["turn"])].append(float(row["correct"]))
    return {
        "n": len(records),
        "n_scored": len(scored),
        "coverage": len(scored) / len(records) if records else None,
        "n_parse_failures": sum(r.score.parse_failed for r in scored),
        "n_model_errors": errors.pop("model_error", 0),
        "n_judge_errors": sum(errors.values()),
        "metrics": _metrics_of(scored, seed, *scope),
        "groups": groups,
        "by_turn": {
            str(turn): metric_summary(vals, _seed_for(seed, *scope, "turn", str(turn)))
            for turn, vals in sorted(by_turn.items())
        }
        if len(by_turn) > 1
        else {},
    }


def summarise_responses(responses: Iterable[ResponseRecord]) -> dict[str, Any]:
    """Request-level counts: errors by kind, cache hits, token usage and latency."""
    recs = list(responses)
    ok = [r for r in recs if r.output.error is None]
    totals = [r.output.timing.total for r in ok if r.output.timing.total is not None and not r.cached]
    ttft = [
        r.output.timing.first_token for r in ok if r.output.timing.first_token is not None and not r.cached
    ]

    def tokens(field: str) -> int:
        return sum(getattr(r.output.usage, field) or 0 for r in ok)

    return {
        "n_requests": len(recs),
        "n_errors": len(recs) - len(ok),
        "errors_by_kind": dict(Counter(r.output.error.kind for r in recs if r.output.error is not None)),
        "n_cached": sum(r.cached for r in recs),
        "tokens": {f: tokens(f) for f in ("prompt_tokens", "completion_tokens", "reasoning_tokens")},
        "latency_s": {
            "mean": float(np.mean(totals)) if totals else None,
            "p50": float(np.median(totals)) if totals else None,
            "p95": float(np.quantile(totals, 0.95)) if totals else None,
        },
        "first_token_s": {"mean": float(np.mean(ttft)) if ttft else None},
    }


def summarise_run(
    tasks: list[dict[str, Any]], scores: list[ScoreRecord], responses: list[ResponseRecord], seed: int
) -> dict[str, Any]:
    """The whole summary.json. ``tasks`` are the task descriptions stored in the manifest."""
    out: dict[str, Any] = {"seed": seed, "tasks": {}}
    for task in tasks:
        name = task["name"]
        task_scores = [r for r in scores if r.task == name]
        judges: dict[str, Any] = {}
        for judge in task["judges"]:
            recs = [r for r in task_scores if r.score.judge == judge]
            judges[judge] = summarise_judge(recs, task.get("group_by", []), seed, (name, judge))
        primary_judge = task["judges"][0] if task["judges"] else None
        primary_metric = task.get("primary_metric", "accuracy")
        primary = None
        if primary_judge is not None:
            primary = {
                "judge": primary_judge,
                "metric": primary_metric,
                **judges[primary_judge]["metrics"].get(primary_metric, {"value": None}),
            }
        out["tasks"][name] = {
            "dataset": task.get("dataset", {}),
            "n_samples": len({r.sample_id for r in task_scores}),
            "primary": primary,
            "judges": judges,
            "requests": summarise_responses(r for r in responses if r.task == name),
        }
    return out
