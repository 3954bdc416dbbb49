"""The charts of ``report.html``, computed from what a run wrote (summary.json, scores.jsonl,
responses.jsonl) and drawn with plotly.

Two layers, so that the numbers can be tested without a browser and plotly is imported only when a
report is actually rendered: ``*_series`` / ``quantile_bins`` turn run records into plain data, and
``build_charts`` turns that data into plotly figures serialised as JSON (the page loads plotly.js
once and calls ``Plotly.newPlot`` per figure). A chart whose data is missing is never faked: it is
replaced by a ``Chart`` with only a note saying why it is absent.
"""

from __future__ import annotations

import re
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from evalkit.records import ResponseRecord, ScoreRecord
from evalkit.run_files import Manifest, Summary, TaskSummary
from evalkit.stats import metric_summary

#: quantile bins of the reasoning-length curve (fewer when there are fewer distinct lengths)
REASONING_BINS = 5
#: per-turn prosody features worth a trajectory (units differ, so each gets its own panel)
PROSODY_FEATURES = (
    ("f0_median_hz", "median F0 (Hz)"),
    ("pitch_sd_st", "pitch SD (st)"),
    ("energy_sd_db", "energy SD (dB)"),
    ("syllable_rate_sps", "syllables / s"),
)
_AROUSAL_FIELDS = (("arousal", "model arousal"), ("user_arousal", "user arousal"))
#: (details key, row field) pairs of per-turn judge rows the trajectory charts read
_TURN_FIELDS = (
    *(("turn_features", feature) for feature, _ in PROSODY_FEATURES),
    *(("per_turn", field_name) for field_name, _ in _AROUSAL_FIELDS),
)
_TOKENISH = re.compile(r"\w+|[^\w\s]")


@dataclass
class Chart:
    """One chart slot of the report: a figure (script-safe JSON) or, when the run has no data for
    it, only ``note`` explaining the absence."""

    id: str
    section: str
    title: str
    figure_json: str | None = None
    note: str | None = None


@dataclass
class Series:
    """Points with optional 95% CIs and counts: one bar group or one line of a chart."""

    name: str
    x: list[Any]
    y: list[float | None]
    ci_low: list[float | None] = field(default_factory=list)
    ci_high: list[float | None] = field(default_factory=list)
    n: list[int] = field(default_factory=list)


@dataclass
class Bin:
    """One quantile bin of reasoning length: its range, mean length, mean metric and count."""

    low: float
    high: float
    mean_length: float
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


# -- data -------------------------------------------------------------------------------------------
def _primary(task: TaskSummary) -> tuple[str, str] | None:
    primary = task.primary
    if primary is None or not primary.judge:
        return None
    return primary.judge, primary.metric or "accuracy"


def category_series(summary: Summary) -> list[tuple[str, str, Series]]:
    """(task, group key, series of the primary metric per group value) for every breakdown the
    summary holds, values and CIs exactly as summary.json has them."""
    out = []
    for task_name, task in summary.tasks.items():
        primary = _primary(task)
        if primary is None or primary[0] not in task.judges:
            continue
        judge, metric = primary
        for key, groups in task.judges[judge].groups.items():
            rows = [(value, metrics[metric]) for value, metrics in groups.items() if metric in metrics]
            if not rows:
                continue
            out.append(
                (
                    task_name,
                    key,
                    Series(
                        name=f"{task_name} · {metric}",
                        x=[value for value, _ in rows],
                        y=[m.value for _, m in rows],
                        ci_low=[m.ci_low for _, m in rows],
                        ci_high=[m.ci_high for _, m in rows],
                        n=[m.n for _, m in rows],
                    ),
                )
            )
    return out


def reasoning_length(output_usage_tokens: int | None, reasoning: str | None) -> int:
    """Reasoning tokens as the server counted them; without that, a token-like count of the
    reasoning text (words and punctuation marks), so models that do not report usage still plot."""
    if output_usage_tokens is not None:
        return int(output_usage_tokens)
    return len(_TOKENISH.findall(reasoning or ""))


class ChartData:
    """The compact numbers behind the record-based charts, gathered in one streamed pass: per
    sample a reasoning length (tasks with a primary judge only), per task the (length, metric)
    points, per (task, judge) the per-turn rows of prosody and emotion judges. Records are not
    kept, so a report of a 10k-sample run does not hold its 10k records for the charts.

    Feed every response (``add_response``) before any score (``add_score``): a score's point
    needs its sample's summed reasoning length."""

    def __init__(self, summary: Summary):
        self.primary: dict[str, tuple[str, str]] = {}
        for task_name, task in summary.tasks.items():
            primary = _primary(task)
            if primary is not None:
                self.primary[task_name] = primary
        #: reasoning length per sample that has one (most runs' samples have none: kept small)
        self.lengths: dict[tuple[str, str], int] = defaultdict(int)
        #: per task the (length, metric) points as two arrays: 12 bytes a sample, not ~90 as tuples
        self.points: dict[str, tuple[array, array]] = {}
        #: task -> the group key its per-turn lines are split by (the task's first ``group_by``):
        #: variants of a scenario are drawn apart, never pooled into one line
        self.group_key: dict[str, str] = {}
        for task_name, task in summary.tasks.items():
            key = next((k for judge in task.judges.values() for k in judge.groups), None)
            if key is not None:
                self.group_key[task_name] = key
        #: (detail, field) -> (task, judge) -> [(0-based turn, value, group value)], in record order
        self.turn_rows: dict[tuple[str, str], dict[tuple[str, str], list[tuple[int, float, str | None]]]] = {
            spec: defaultdict(list) for spec in _TURN_FIELDS
        }

    @classmethod
    def for_manifest(cls, manifest: Manifest) -> ChartData:
        """Before summary.json exists (finalize's one pass): each task's primary (judge, metric)
        by the rule the summary applies (``evalkit.summary.primary_of``), in the same order."""
        from evalkit.summary import primary_of

        data = cls(Summary())
        for task in manifest.tasks:
            primary = primary_of(task.model_dump(by_alias=True, exclude_unset=True))
            if primary is not None:
                data.primary[task.name] = primary
            if task.group_by:
                data.group_key[task.name] = task.group_by[0]
        return data

    def add_response(self, rec: ResponseRecord) -> None:
        if rec.output.error is None and rec.task in self.primary:
            length = reasoning_length(rec.output.usage.reasoning_tokens, rec.output.reasoning)
            if length:
                self.lengths[(rec.task, rec.sample_id)] += length

    def add_score(self, rec: ScoreRecord) -> None:
        if rec.score.error is not None:
            return
        primary = self.primary.get(rec.task)
        if primary is not None and rec.score.judge == primary[0]:
            value = rec.score.metrics.get(primary[1])
            if value is not None:
                lengths, values = self.points.setdefault(rec.task, (array("q"), array("d")))
                lengths.append(self.lengths.get((rec.task, rec.sample_id), 0))
                values.append(float(value))
        key = self.group_key.get(rec.task)
        group = None if key is None else str(rec.meta.get(key, "(none)"))
        for (detail, field_name), by_scope in self.turn_rows.items():
            for row in rec.score.details.get(detail) or []:
                value = row.get(field_name) if isinstance(row, dict) else None
                if isinstance(value, int | float) and "turn" in row:
                    by_scope[(rec.task, rec.score.judge)].append((int(row["turn"]), float(value), group))

    def reasoning_points(self) -> dict[str, list[tuple[int, float]]]:
        """Per task (summary order): (reasoning length, primary metric) of every scored sample."""
        return {t: list(zip(*self.points[t], strict=True)) for t in self.primary if t in self.points}

    def prosody_series(self) -> dict[tuple[str, str], list[tuple[str, list[Series]]]]:
        """(task, judge) -> [(panel label, one line per group)]."""
        out: dict[tuple[str, str], list[tuple[str, list[Series]]]] = defaultdict(list)
        for feature, label in PROSODY_FEATURES:
            for scope, rows in self.turn_rows[("turn_features", feature)].items():
                out[scope].append((label, _mean_by_turn(rows, label)))
        return dict(out)

    def arousal_series(self) -> dict[tuple[str, str], list[Series]]:
        """(task, judge) -> model and user arousal lines, one per group."""
        out: dict[tuple[str, str], list[Series]] = defaultdict(list)
        for field_name, label in _AROUSAL_FIELDS:
            for scope, rows in self.turn_rows[("per_turn", field_name)].items():
                out[scope].extend(_mean_by_turn(rows, label))
        return dict(out)

    @classmethod
    def of(
        cls, summary: Summary, responses: Iterable[ResponseRecord], scores: Iterable[ScoreRecord]
    ) -> ChartData:
        """Fed from any iterables (each read once)."""
        data = cls(summary)
        for response in responses:
            data.add_response(response)
        for score in scores:
            data.add_score(score)
        return data


def reasoning_points(
    summary: Summary, responses: Iterable[ResponseRecord], scores: Iterable[ScoreRecord]
) -> dict[str, list[tuple[int, float]]]:
    """Per task: (reasoning length summed over the sample's turns, primary metric of the sample) for
    every sample the primary judge scored. Samples whose model call or judge failed have no metric
    and are left out, as in summary.json."""
    return ChartData.of(summary, responses, scores).reasoning_points()


def quantile_bins(points: list[tuple[int, float]], n_bins: int = REASONING_BINS, seed: int = 0) -> list[Bin]:
    """Split samples into (at most) ``n_bins`` bins of about equal count by reasoning length and
    average the metric per bin, with a seeded bootstrap CI. Equal lengths never straddle two bins,
    so with few distinct lengths there are fewer bins."""
    if not points:
        return []
    import numpy as np  # only a run with reasoning lengths draws this curve

    lengths = np.array([p[0] for p in points], dtype=float)
    values = np.array([p[1] for p in points], dtype=float)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_bins + 1)))
    if len(edges) == 1:
        index = np.zeros(len(lengths), dtype=int)
    else:
        # right-closed bins (edges[i], edges[i+1]], the first one also holding the minimum
        index = np.clip(np.searchsorted(edges, lengths, side="left") - 1, 0, len(edges) - 2)
    bins = []
    for b in range(int(index.max()) + 1):
        mask = index == b
        if not mask.any():
            continue
        summary = metric_summary(values[mask].tolist(), seed + b)
        bins.append(
            Bin(
                low=float(lengths[mask].min()),
                high=float(lengths[mask].max()),
                mean_length=float(lengths[mask].mean()),
                value=float(summary["value"]),
                ci_low=summary["ci_low"],
                ci_high=summary["ci_high"],
                n=int(mask.sum()),
            )
        )
    return bins


def turn_accuracy_series(summary: Summary) -> list[Series]:
    """Accuracy per answered turn (summary.json's ``by_turn``) of every judge that has one."""
    out = []
    for task_name, task in summary.tasks.items():
        for judge_name, judge in task.judges.items():
            by_turn = judge.by_turn
            if not by_turn:
                continue
            turns = sorted(by_turn, key=int)
            out.append(
                Series(
                    name=f"{task_name} · {judge_name}",
                    x=[int(t) + 1 for t in turns],  # 1-based on the page
                    y=[by_turn[t].value for t in turns],
                    ci_low=[by_turn[t].ci_low for t in turns],
                    ci_high=[by_turn[t].ci_high for t in turns],
                    n=[by_turn[t].n for t in turns],
                )
            )
    return out


def _mean_by_turn(rows: list[tuple[int, float, str | None]], name: str) -> list[Series]:
    """One line per group: the mean over conversations at each turn (1-based on x) with its 95% CI
    (``metric_summary``: Wilson for 0/1 values, bootstrap otherwise, seeded by turn)."""
    by_group: dict[str | None, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for turn, value, group in rows:
        by_group[group][turn].append(value)
    out = []
    for group in sorted(by_group, key=lambda g: (g is not None, g or "")):
        by_turn = by_group[group]
        turns = sorted(by_turn)
        stats = [metric_summary(by_turn[t], seed=t) for t in turns]
        out.append(
            Series(
                name=name if group is None else f"{name} · {group}",
                x=[t + 1 for t in turns],
                y=[float(s["value"]) for s in stats],
                ci_low=[s["ci_low"] for s in stats],
                ci_high=[s["ci_high"] for s in stats],
                n=[len(by_turn[t]) for t in turns],
            )
        )
    return out


def prosody_series(scores: Iterable[ScoreRecord]) -> dict[tuple[str, str], list[tuple[str, list[Series]]]]:
    """(task, judge) -> [(panel label, mean per model turn)] from prosody judges' per-turn rows
    (``details["turn_features"]``), recognised by that shape rather than by judge name."""
    return ChartData.of(Summary(), [], scores).prosody_series()


def arousal_series(scores: Iterable[ScoreRecord]) -> dict[tuple[str, str], list[Series]]:
    """(task, judge) -> model and user arousal per turn from emotion judges' ``details["per_turn"]``."""
    return ChartData.of(Summary(), [], scores).arousal_series()


# -- figures --------------------------------------------------------------------------------------------
def script_safe_json(text: str) -> str:
    """JSON that can sit inside ``<script>``: ``</script>``, ``<!--`` and ``&`` in model text (or in
    a category name) cannot end the element, and U+2028/2029 cannot break old parsers."""
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _error_bars(series: Series) -> dict[str, Any] | None:
    if not series.ci_low:
        return None
    plus = [None if h is None or v is None else h - v for v, h in zip(series.y, series.ci_high, strict=True)]
    minus = [
        None if lo is None or v is None else v - lo for v, lo in zip(series.y, series.ci_low, strict=True)
    ]
    return {"type": "data", "array": plus, "arrayminus": minus, "visible": True}


def _figure_json(fig: Any, height: int = 360) -> str:
    import plotly.io as pio

    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=height)
    return script_safe_json(pio.to_json(fig, validate=False, pretty=False))


def _category_figure(task: str, key: str, series: Series) -> str:
    import plotly.graph_objects as go

    bar = go.Bar(
        x=[str(x) for x in series.x],
        y=series.y,
        error_y=_error_bars(series),
        text=[f"n={n}" for n in series.n],
        textposition="outside",
        name=series.name,
        hovertemplate="%{x}: %{y:.3f} (%{text})<extra></extra>",
    )
    fig = go.Figure(bar)
    fig.update_layout(title=f"{task}: {series.name.split(' · ')[-1]} by {key}", showlegend=False)
    fig.update_yaxes(title=series.name.split(" · ")[-1], rangemode="tozero")
    fig.update_xaxes(title=key, type="category")
    return _figure_json(fig)


def _reasoning_figure(curves: dict[str, list[Bin]], metric_names: dict[str, str]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for task, bins in curves.items():
        series = Series(
            name=task,
            x=[b.mean_length for b in bins],
            y=[b.value for b in bins],
            ci_low=[b.ci_low for b in bins],
            ci_high=[b.ci_high for b in bins],
            n=[b.n for b in bins],
        )
        fig.add_trace(
            go.Scatter(
                x=series.x,
                y=series.y,
                mode="lines+markers+text",
                name=f"{task} ({metric_names[task]})",
                error_y=_error_bars(series),
                text=[f"n={b.n}" for b in bins],
                textposition="top center",
                customdata=[[b.low, b.high] for b in bins],
                hovertemplate="reasoning %{customdata[0]:.0f}–%{customdata[1]:.0f} tokens: "
                "%{y:.3f} (%{text})<extra></extra>",
            )
        )
    fig.update_layout(title="Reasoning length vs. score (quantile bins)")
    fig.update_xaxes(title="reasoning tokens per sample (bin mean)")
    fig.update_yaxes(title="score", rangemode="tozero")
    return _figure_json(fig)


def _turn_trace(s: Series, **extra: Any) -> Any:
    """One per-turn line (turn on x, value on y, n in the hover), shared by the turn charts."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=s.x,
        y=s.y,
        mode="lines+markers",
        name=s.name,
        text=[f"n={n}" for n in s.n],
        hovertemplate="turn %{x}: %{y:.3f} (%{text})<extra></extra>",
        **extra,
    )


def _turn_accuracy_figure(series: list[Series]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for s in series:
        fig.add_trace(_turn_trace(s, error_y=_error_bars(s)))
    fig.update_layout(title="Accuracy by answered turn")
    fig.update_xaxes(title="answered turn", dtick=1)
    fig.update_yaxes(title="accuracy", rangemode="tozero")
    return _figure_json(fig)


def _panels_figure(title: str, panels: list[tuple[str, list[Series]]]) -> str:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, subplot_titles=[p[0] for p in panels])
    for row, (_, series) in enumerate(panels, start=1):
        for s in series:
            fig.add_trace(_turn_trace(s, error_y=_error_bars(s)), row=row, col=1)
    fig.update_xaxes(title="model turn (from 1)", dtick=1, row=len(panels), col=1)
    fig.update_layout(title=title)
    return _figure_json(fig, height=max(360, 220 * len(panels)))


def _category_charts(summary: Summary) -> list[Chart]:
    found = category_series(summary)
    if not found:
        return [
            Chart(
                "chart-category",
                "category",
                "Score by category",
                note="No per-group breakdown in summary.json (the tasks define no group keys).",
            )
        ]
    return [
        Chart(
            f"chart-category-{i}",
            "category",
            f"{task} by {key}",
            figure_json=_category_figure(task, key, series),
        )
        for i, (task, key, series) in enumerate(found)
    ]


def _reasoning_chart(summary: Summary, data: ChartData) -> Chart:
    title = "Reasoning length vs. score"
    points = data.reasoning_points()
    with_reasoning = {t: p for t, p in points.items() if any(length > 0 for length, _ in p)}
    if not with_reasoning:
        return Chart("chart-reasoning", "reasoning", title, note="No reasoning was recorded in this run.")
    seed = summary.seed
    curves = {t: quantile_bins(p, seed=seed) for t, p in with_reasoning.items()}
    curves = {t: bins for t, bins in curves.items() if len(bins) >= 2}
    if not curves:
        return Chart(
            "chart-reasoning",
            "reasoning",
            title,
            note="Every sample reasoned for the same length; there is no curve to draw.",
        )
    metrics = {t: (_primary(summary.tasks[t]) or ("", "score"))[1] for t in curves}
    skipped = sorted(set(points) - set(curves))
    note = f"Tasks without varying reasoning length: {', '.join(skipped)}." if skipped else None
    return Chart(
        "chart-reasoning", "reasoning", title, figure_json=_reasoning_figure(curves, metrics), note=note
    )


def _turn_charts(summary: Summary, data: ChartData) -> list[Chart]:
    charts = []
    accuracy = turn_accuracy_series(summary)
    if accuracy:
        charts.append(
            Chart(
                "chart-turn-accuracy",
                "turns",
                "Accuracy by turn",
                figure_json=_turn_accuracy_figure(accuracy),
            )
        )
    for i, ((task, judge), panels) in enumerate(sorted(data.prosody_series().items())):
        title = f"{task} · {judge}: prosody per turn"
        figure = _panels_figure(title, panels)
        charts.append(Chart(f"chart-prosody-{i}", "turns", title, figure_json=figure))
    for i, ((task, judge), series) in enumerate(sorted(data.arousal_series().items())):
        title = f"{task} · {judge}: arousal per turn"
        charts.append(
            Chart(
                f"chart-arousal-{i}", "turns", title, figure_json=_panels_figure(title, [("arousal", series)])
            )
        )
    if not charts:
        charts.append(
            Chart(
                "chart-turns",
                "turns",
                "Per-turn trajectories",
                note="No per-turn data: no multi-turn accuracy breakdown and no prosody or emotion judge.",
            )
        )
    return charts


def build_charts(
    summary: Summary, responses: Iterable[ResponseRecord], scores: Iterable[ScoreRecord]
) -> list[Chart]:
    """Every chart of the report in display order: score by category, reasoning length vs. score,
    per-turn trajectories."""
    return build_charts_from(summary, ChartData.of(summary, responses, scores))


def build_charts_from(summary: Summary, data: ChartData) -> list[Chart]:
    """``build_charts`` from numbers already gathered (the report streams records into ``data``)."""
    return [
        *_category_charts(summary),
        _reasoning_chart(summary, data),
        *_turn_charts(summary, data),
    ]


def plotly_js() -> str:
    """plotly.js itself, to be inlined once per report (works offline, from file://)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
