"""Render ``report.html`` for a run directory: summary table with 95% CIs, per-group breakdowns,
every sample with its turns (input audio, transcript, answer, reasoning collapsed, spoken output,
judge verdicts) and every error.

Self-contained: audio is embedded as data URIs while the total stays under ``EMBED_LIMIT_BYTES``
(beyond that, files are linked relative to the report so the run folder still works when moved).
All model text goes through jinja2's autoescape.
"""

from __future__ import annotations

import base64
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.records import ResponseRecord, ScoreRecord
from evalkit.store import RunStore, atomic_write_text

EMBED_LIMIT_BYTES = 64 * 2**20


class AudioLinker:
    """Turns audio paths into ``src`` values: data URIs until the budget is spent, then links."""

    def __init__(self, run_root: Path, budget: int = EMBED_LIMIT_BYTES):
        self.run_root = run_root
        self.budget = budget

    def src(self, path: str | None) -> str | None:
        if not path:
            return None
        file = Path(path)
        if not file.is_absolute():
            file = self.run_root / file
        if not file.is_file():
            return None
        size = file.stat().st_size
        if size <= self.budget:
            self.budget -= size
            return "data:audio/wav;base64," + base64.b64encode(file.read_bytes()).decode("ascii")
        return os.path.relpath(file, self.run_root)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _samples(
    responses: list[ResponseRecord], scores: list[ScoreRecord], linker: AudioLinker
) -> list[dict[str, Any]]:
    by_sample: dict[tuple[str, str], dict[str, Any]] = {}

    def row_of(rec: ResponseRecord | ScoreRecord) -> dict[str, Any]:
        return by_sample.setdefault(
            (rec.task, rec.sample_id),
            {
                "task": rec.task,
                "id": rec.sample_id,
                "index": rec.sample_index,
                "turns": [],
                "scores": [],
                "meta": {},
            },
        )

    for rec in responses:
        out = rec.output
        row_of(rec)["turns"].append(
            {
                "turn": rec.turn,
                "input_text": rec.input.text,
                "input_transcript": rec.input.transcript,
                "input_audio": linker.src(rec.input.audio_path),
                "text": out.text,
                "reasoning": out.reasoning,
                "audio": linker.src(out.audio.path) if out.audio is not None else None,
                "trace": out.trace,
                "error": out.error,
                "cached": rec.cached,
                "latency": out.timing.total,
            }
        )
    for rec in scores:
        row = row_of(rec)
        row["meta"] = rec.meta
        row["scores"].append(rec.score)
    rows = sorted(by_sample.values(), key=lambda r: (r["task"], r["index"]))
    for row in rows:
        row["status"] = _status(row)
    return rows


def _status(row: dict[str, Any]) -> str:
    """One word for filtering: error > parse-failure > incorrect > correct."""
    if any(t["error"] for t in row["turns"]) or any(s.error for s in row["scores"]):
        return "error"
    if any(s.parse_failed for s in row["scores"]):
        return "parse-failure"
    if any(s.passed is False for s in row["scores"]):
        return "incorrect"
    return "correct"


def render(store: RunStore) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("evalkit.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    manifest = store.read_manifest()
    summary = store.read_summary()
    responses = store.responses()
    scores = store.scores()
    errors = [r for r in responses if r.output.error is not None]
    judge_errors = [r for r in scores if r.score.error is not None and r.score.error.kind != "model_error"]
    counts: dict[str, int] = defaultdict(int)
    samples = _samples(responses, scores, AudioLinker(store.root))
    for row in samples:
        counts[row["status"]] += 1
    return env.get_template("report.html.j2").render(
        manifest=manifest,
        summary=summary,
        samples=samples,
        errors=errors,
        judge_errors=judge_errors,
        status_counts=dict(counts),
    )


def write_report(store: RunStore) -> Path:
    path = store.root / "report.html"
    atomic_write_text(path, render(store))
    return path
