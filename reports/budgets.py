"""A reasoning-budget sweep side by side: accuracy against reasoning tokens, one point per budget.

``evalkit run --reasoning-budget 1024,4096,32000 ...`` makes one ordinary run per budget (its
``max_tokens`` is the budget, recorded in the manifest with source ``cli``); ``evalkit report
--compare-budgets RUN...`` reads those runs back and draws, per task, the primary metric against
the mean reasoning length per sample (the same length the report's test-time-compute chart bins:
``usage.reasoning_tokens`` when the server reports it, else the reasoning text's token-ish
count), labelled with the budget and the share of replies the budget cut short. The runs must be
one sweep: the same model spec and tasks, each with its own budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.reports.charts import ChartData, _figure_json, plotly_js
from evalkit.run_files import Manifest, PrimaryMetric
from evalkit.store import RunStore


@dataclass
class BudgetPoint:
    """One task of one run of the sweep."""

    budget: int
    run_id: str
    mean_reasoning: float
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_truncated: int
    truncated_share: float | None


def _budget_of(manifest: Manifest, task: str, where: Path) -> int:
    """The run's token budget for ``task``: the effective max_tokens the manifest recorded."""
    entry = manifest.generation.get(task, {}).get("max_tokens")
    budget = entry["value"] if entry else manifest.config.get("max_tokens")
    if budget is None:
        raise EvalkitError(f"{where / 'manifest.json'}: no max_tokens recorded; was it made by evalkit run?")
    return int(budget)


def _points_of(store: RunStore) -> dict[str, BudgetPoint]:
    manifest, summary = store.manifest(), store.summary()
    data = ChartData.of(summary, store.iter_responses(), store.iter_scores())
    points: dict[str, BudgetPoint] = {}
    for task, samples in data.reasoning_points().items():
        task_summary = summary.tasks[task]
        primary = task_summary.primary or PrimaryMetric()
        lengths = [length for length, _ in samples]
        points[task] = BudgetPoint(
            budget=_budget_of(manifest, task, store.root),
            run_id=store.run_id,
            mean_reasoning=sum(lengths) / len(lengths) if lengths else 0.0,
            metric=primary.metric,
            value=primary.value,
            ci_low=primary.ci_low,
            ci_high=primary.ci_high,
            n_truncated=task_summary.n_truncated,
            truncated_share=task_summary.requests.truncated_share,
        )
    return points


def budget_sweep(run_dirs: list[Path]) -> dict[str, list[BudgetPoint]]:
    """Per task, the sweep's points ordered by budget. Runs of different models or tasks, or two
    runs with one budget, are not one sweep: a one-line error names the run."""
    if len(run_dirs) < 2:
        raise EvalkitError("--compare-budgets needs two or more run directories of one sweep")
    stores = [RunStore.open_existing(d) for d in run_dirs]
    first = stores[0].manifest()
    sweep: dict[str, list[BudgetPoint]] = {}
    for store in stores:
        manifest = store.manifest()
        for key in ("model", "tasks"):
            mine = manifest.config.get(key) if key == "tasks" else manifest.model.spec
            theirs = first.config.get(key) if key == "tasks" else first.model.spec
            if mine != theirs:
                raise EvalkitError(
                    f"{store.root}: {key} {mine!r} differs from {stores[0].root}'s {theirs!r}; "
                    "a budget sweep compares one model on the same tasks"
                )
        for task, point in _points_of(store).items():
            sweep.setdefault(task, []).append(point)
    for task, points in sweep.items():
        budgets = [p.budget for p in points]
        if len(set(budgets)) != len(budgets):
            raise EvalkitError(
                f"task {task!r}: two runs share a budget ({sorted(budgets)}); give one run per budget"
            )
        points.sort(key=lambda p: p.budget)
    return sweep


def budget_table(sweep: dict[str, list[BudgetPoint]]) -> str:
    """The sweep as plain text lines (what the command prints)."""
    lines = ["task\tbudget\tmetric\tvalue\tmean reasoning tokens\ttruncated"]
    for task, points in sweep.items():
        for p in points:
            value = "–" if p.value is None else f"{p.value:.3f}"
            share = "" if p.truncated_share is None else f" ({p.truncated_share:.0%})"
            lines.append(
                f"{task}\t{p.budget}\t{p.metric}\t{value}\t{p.mean_reasoning:.0f}\t{p.n_truncated}{share}"
            )
    return "\n".join(lines)


def budget_figure(sweep: dict[str, list[BudgetPoint]]) -> str:
    """Plotly JSON: per task one line through its budgets, x = mean reasoning tokens, y = metric."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for task, points in sweep.items():
        fig.add_trace(
            go.Scatter(
                name=task,
                x=[p.mean_reasoning for p in points],
                y=[p.value for p in points],
                mode="lines+markers+text",
                text=[f"{p.budget}" for p in points],
                textposition="top center",
                error_y={
                    "type": "data",
                    "array": [
                        None if p.ci_high is None or p.value is None else p.ci_high - p.value for p in points
                    ],
                    "arrayminus": [
                        None if p.ci_low is None or p.value is None else p.value - p.ci_low for p in points
                    ],
                },
                customdata=[[p.budget, p.n_truncated] for p in points],
                hovertemplate="budget %{customdata[0]}: %{y:.3f} at %{x:.0f} reasoning tokens, "
                "%{customdata[1]} truncated<extra>" + task + "</extra>",
            )
        )
    fig.update_layout(title="Score against reasoning tokens, one point per budget")
    fig.update_xaxes(title="mean reasoning tokens per sample")
    fig.update_yaxes(title="primary metric")
    return _figure_json(fig, height=420)


def write_budget_report(run_dirs: list[Path], out: Path) -> tuple[Path, dict[str, list[BudgetPoint]]]:
    """A self-contained page with the sweep's chart and table (plotly inlined: works offline)."""
    import html

    sweep = budget_sweep(run_dirs)
    script = plotly_js().replace("</script", "<\\/script")
    rows = "".join(
        f"<tr><td>{html.escape(task)}</td><td>{p.budget}</td><td>{html.escape(p.run_id)}</td>"
        f"<td>{'–' if p.value is None else f'{p.value:.3f}'}</td><td>{p.mean_reasoning:.0f}</td>"
        f"<td>{p.n_truncated}</td></tr>"
        for task, points in sweep.items()
        for p in points
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>reasoning budgets</title>"
        f"<script>{script}</script></head><body>"
        "<h1>Reasoning-budget sweep</h1><div id='budgets'></div>"
        "<table><tr><th>task</th><th>budget</th><th>run</th><th>primary</th>"
        f"<th>mean reasoning tokens</th><th>truncated</th></tr>{rows}</table>"
        f"<script>var f={budget_figure(sweep)};Plotly.newPlot('budgets',f.data,f.layout);</script>"
        "</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out, sweep
