"""The long-turn parts of ``report.html`` and of the leaderboard: the reasoning-versus-feel picture.

Each model (run) is placed once per correctness task (x: that task's primary metric with its CI,
``evalkit.feel.correctness_of``) against its conversational feel (y: the composite of
``evalkit.feel``, with its CI). Benchmarks are never averaged into one x: a model with MMAU and
MMSU results appears twice, once in each benchmark's colour. The tables beside the figure show
every part of the composite, so the number is never a black box; the per-turn decay tables come
from summary.json (``evalkit.turn_stats``) as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalkit.feel import CORRECTNESS_RULE, FEEL_RULE, picture_point
from evalkit.reports.charts import Chart, _figure_json
from evalkit.run_files import Summary

__all__ = ["CORRECTNESS_RULE", "FEEL_RULE", "feel_chart", "feel_figure"]


def _bars(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """plotly error bars of values with CIs (None where a CI is missing)."""
    ok = [s["value"] is not None and s["ci_low"] is not None and s["ci_high"] is not None for s in stats]
    return {
        "type": "data",
        "array": [s["ci_high"] - s["value"] if k else None for s, k in zip(stats, ok, strict=True)],
        "arrayminus": [s["value"] - s["ci_low"] if k else None for s, k in zip(stats, ok, strict=True)],
    }


def feel_figure(points: Sequence[dict[str, Any]]) -> str | None:
    """The picture as plotly JSON (script-safe): one trace per correctness task, one marker per
    model with both CIs; None when no model has both a feel value and a correctness number."""
    import plotly.graph_objects as go

    tasks = sorted({t for p in points for t in p["correctness"]})
    fig = go.Figure()
    for task in tasks:
        placed = [p for p in points if task in p["correctness"] and p["feel"].get("value") is not None]
        if not placed:
            continue
        xs = [p["correctness"][task] for p in placed]
        ys = [p["feel"] for p in placed]
        fig.add_trace(
            go.Scatter(
                x=[x["value"] for x in xs],
                y=[y["value"] for y in ys],
                mode="markers+text",
                name=f"{task} ({xs[0]['metric']})",
                text=[p["model"] for p in placed],
                textposition="top center",
                error_x=_bars(xs),
                error_y=_bars(ys),
                hovertemplate="%{text}: correctness %{x:.3f}, feel %{y:.3f}<extra>%{fullData.name}</extra>",
            )
        )
    if not fig.data:
        return None
    fig.update_layout(title="Reasoning vs. feel: correctness against conversational feel (95% CIs)")
    fig.update_xaxes(title="correctness (task primary metric, 0-1)", range=[0, 1.05])
    fig.update_yaxes(title="conversational feel (composite, 0-1)", range=[0, 1.05])
    return _figure_json(fig, height=480)


def feel_chart(summary: Summary, label: str) -> Chart | None:
    """The report's picture of its one model; a note instead of a figure when the run lacks the
    correctness half (or every part of the feel did not apply); None without a feel task."""
    point = picture_point(label, summary)
    if point is None:
        return None
    title = "Reasoning vs. feel"
    if point["feel"].get("value") is None:
        note = point["feel"].get("not_applicable") or "no conversation had every part of the feel composite"
        return Chart("chart-feel", "feel", title, note=f"Conversational feel not applicable: {note}.")
    figure = feel_figure([point])
    if figure is None:
        return Chart(
            "chart-feel",
            "feel",
            title,
            note="No correctness benchmark in this run (MMAU, MMSU, Spoken-MQA, Audio MultiChallenge "
            "or a demo task with a 0-1 primary): the feel is shown in the table alone; the "
            "leaderboard places models of runs that have both.",
        )
    return Chart("chart-feel", "feel", title, figure_json=figure)
