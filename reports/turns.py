"""What the report shows of one sample beyond its text: the turn strip, the per-conversation
trajectory thumbnail, the sample's score (for sorting) and its export record (the JSONL download).

The turn strip puts, at each model turn, the numbers the judges already wrote in scores.jsonl,
read by shape rather than by judge name (as ``reports.charts`` does): correctness from
``details["turns"]`` rows (``{"turn", "correct"}``), speech features from ``details["turn_features"]``
(prosody), ``details["per_turn"]`` (emotion: arousal) and ``details["turn_metrics"]`` (voice
similarity and any other per-turn metric), and the turns where a judge saw an event (jump, drift,
voice switch) from ``details["events"]``. Turns are numbered from 1 on the page; the records keep
their 0-based index.

Each spoken turn with a pitch track (the prosody judge's ``contour_st``) gets a pitch contour
thumbnail in the strip (``contour_svg``, ~0.5 kB). The trajectory is a small inline SVG (a few
hundred bytes; no plotly per sample): each strip number is one line scaled to its own range over
the conversation, correctness as dots, events as vertical marks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from evalkit.records import ResponseRecord, Score

#: strip columns: (details key, row field, column label); the first present value of a turn wins
STRIP_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("turn_features", "f0_median_hz", "F0 Hz"),
    ("turn_features", "pitch_sd_st", "pitch SD st"),
    ("turn_features", "syllable_rate_sps", "syll/s"),
    ("turn_features", "pause_count", "pauses"),
    ("per_turn", "arousal", "arousal"),
    ("turn_metrics", "voice_similarity", "voice sim."),
)
#: colours of the trajectory lines, one per strip column (colour-blind safe palette)
LINE_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9")
SVG_WIDTH, SVG_HEIGHT, SVG_PAD = 260, 70, 8


def _rows(details: Mapping[str, Any], key: str) -> Iterable[dict[str, Any]]:
    """The per-turn rows a judge wrote under ``key`` (anything else is ignored)."""
    rows = details.get(key)
    if not isinstance(rows, list):
        return ()
    return (r for r in rows if isinstance(r, dict) and isinstance(r.get("turn"), int))


def turn_strip(records: list[ResponseRecord], scores: list[Score]) -> list[dict[str, Any]]:
    """One cell per model turn (0-based ``turn`` kept, 1-based ``number`` shown): correctness,
    the ``STRIP_FIELDS`` values and the events at that turn."""
    turns = sorted({r.turn for r in records})
    cells = {t: {"turn": t, "number": t + 1, "correct": None, "values": {}, "events": []} for t in turns}

    def cell(turn: int) -> dict[str, Any]:
        return cells.setdefault(
            turn, {"turn": turn, "number": turn + 1, "correct": None, "values": {}, "events": []}
        )

    for score in scores:
        for row in _rows(score.details, "turn_features") if score.error is None else ():
            if isinstance(row.get("contour_st"), list) and "contour" not in cell(row["turn"]):
                cell(row["turn"])["contour"] = contour_svg(row["contour_st"])

    for score in scores:
        if score.error is not None:
            continue
        for row in _rows(score.details, "turns"):
            if isinstance(row.get("correct"), bool):
                cell(row["turn"])["correct"] = row["correct"]
        for key, field_name, label in STRIP_FIELDS:
            for row in _rows(score.details, key):
                value = row.get(field_name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    cell(row["turn"])["values"].setdefault(label, value)
        for row in _rows(score.details, "events"):
            kind = str(row.get("kind", "event"))
            cue = row.get("cue")
            cell(row["turn"])["events"].append(f"{kind} ({cue})" if cue else kind)
    return [cells[t] for t in sorted(cells)]


def strip_columns(strip: list[dict[str, Any]]) -> list[str]:
    """The ``STRIP_FIELDS`` labels with a value at some turn, in declaration order."""
    present = {label for c in strip for label in c["values"]}
    return [label for _, _, label in STRIP_FIELDS if label in present]


def _x(index: int, count: int) -> float:
    span = SVG_WIDTH - 2 * SVG_PAD
    return SVG_PAD + (span * index / (count - 1) if count > 1 else span / 2)


def _y(fraction: float) -> float:
    return SVG_HEIGHT - SVG_PAD - fraction * (SVG_HEIGHT - 2 * SVG_PAD)


def trajectory_svg(strip: list[dict[str, Any]]) -> str | None:
    """The conversation's trajectory thumbnail as SVG markup (only numbers and fixed labels go
    in, so it needs no escaping beyond what the labels hold), or None for fewer than two turns."""
    if len(strip) < 2:
        return None
    n = len(strip)
    parts = [
        f'<svg class="trajectory" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} '
        f'{SVG_HEIGHT}" role="img" aria-label="per-turn trajectory">'
    ]
    for i, c in enumerate(strip):
        if c["events"]:
            x = _x(i, n)
            title = f"turn {c['number']}: {', '.join(c['events'])}"
            parts.append(
                f'<line class="event" x1="{x:.1f}" x2="{x:.1f}" y1="2" y2="{SVG_HEIGHT - 2}" '
                f'stroke="#cf222e" stroke-dasharray="3 2"><title>{_escape(title)}</title></line>'
            )
    for colour, label in zip(LINE_COLOURS, strip_columns(strip), strict=False):
        points = [(i, c["values"][label]) for i, c in enumerate(strip) if label in c["values"]]
        values = [v for _, v in points]
        low, high = min(values), max(values)
        scale = (high - low) or 1.0
        coords = " ".join(
            f"{_x(i, n):.1f},{_y((v - low) / scale if high > low else 0.5):.1f}" for i, v in points
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}">'
            f"<title>{_escape(label)}: {low:.3g} to {high:.3g}</title></polyline>"
        )
    for i, c in enumerate(strip):
        if c["correct"] is not None:
            fill = "#1a7f37" if c["correct"] else "#cf222e"
            parts.append(
                f'<circle cx="{_x(i, n):.1f}" cy="{SVG_HEIGHT - 3}" r="3" fill="{fill}">'
                f"<title>turn {c['number']}: {'correct' if c['correct'] else 'wrong'}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


CONTOUR_WIDTH, CONTOUR_HEIGHT = 64, 20


def contour_svg(points: list[Any]) -> str | None:
    """A spoken turn's pitch contour thumbnail (the prosody judge's ``contour_st``: F0 in semitones
    per bin, None where unvoiced) as a tiny SVG polyline, broken at unvoiced bins, on the turn's
    own range with the range in its title; None without two voiced bins. Only numbers go in."""
    values = [v if isinstance(v, int | float) and not isinstance(v, bool) else None for v in points]
    voiced = [v for v in values if v is not None]
    if len(voiced) < 2 or len(values) < 2:
        return None
    low, high = min(voiced), max(voiced)
    scale = (high - low) or 1.0
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            runs.append([])
            continue
        x = 1 + (CONTOUR_WIDTH - 2) * i / (len(values) - 1)
        y = CONTOUR_HEIGHT - 2 - (CONTOUR_HEIGHT - 4) * ((v - low) / scale if high > low else 0.5)
        runs[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline fill="none" stroke="#0072b2" stroke-width="1.2" points="{" ".join(r)}"/>'
        for r in runs
        if len(r) >= 2
    )
    return (
        f'<svg class="contour" width="{CONTOUR_WIDTH}" height="{CONTOUR_HEIGHT}" '
        f'viewBox="0 0 {CONTOUR_WIDTH} {CONTOUR_HEIGHT}" role="img" aria-label="pitch contour">'
        f"<title>pitch contour, {high - low:.1f} st range</title>{lines}</svg>"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def sample_score(scores: list[Score], primary: tuple[str, str] | None) -> float | None:
    """The sample's value of its task's primary metric (what "sort by score" orders by)."""
    if primary is None:
        return None
    judge, metric = primary
    for score in scores:
        if score.judge == judge and score.error is None:
            value = score.metrics.get(metric)
            return None if value is None else float(value)
    return None


def export_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the "download as JSONL" file: the sample's ids, status and score, each turn's
    input and answer text, and each judge's verdict and metrics (no audio bytes)."""
    return {
        "task": row["task"],
        "id": row["id"],
        "status": row["status"],
        "score": row.get("score"),
        "meta": row["meta"],
        "turns": [
            {
                "turn": rec.turn + 1,
                "input": rec.input.text or rec.input.transcript,
                "answer": rec.output.text,
                "error": rec.output.error.message if rec.output.error else None,
            }
            for rec in row["records"]
        ],
        "scores": [
            {
                "judge": s.judge,
                "passed": s.passed,
                "extracted": s.extracted,
                "parse_failed": s.parse_failed,
                "metrics": s.metrics,
                "error": s.error.message if s.error else None,
            }
            for s in row["scores"]
        ],
    }


def with_turn_views(row: dict[str, Any], primary: tuple[str, str] | None) -> dict[str, Any]:
    """The sample row of the browser with its strip, strip columns, trajectory, score and export
    record added (``row``: a ``sample_rows`` row)."""
    strip = turn_strip(row["records"], row["scores"])
    out = {
        **row,
        "strip": strip,
        "strip_columns": strip_columns(strip),
        # which optional strip rows the page draws, decided here once rather than by a template
        # filter per row and sample (a 1000-sample page rendered them 4000 times)
        "strip_rows": {
            "correct": any(c["correct"] is not None for c in strip),
            "contour": any(c.get("contour") for c in strip),
            "events": any(c["events"] for c in strip),
        },
        "score": sample_score(row["scores"], primary),
    }
    out["trajectory"] = trajectory_svg(strip)
    out["export"] = export_record(out)
    return out
