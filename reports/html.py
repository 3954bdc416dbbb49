"""Render ``report.html`` for a run directory: a page people read to judge a run.

What it shows, top to bottom: the scoreboard (``reports.scoreboard``: each task's primary metric
with its CI, coverage, errors, empty/truncated answers, above the fold at 1400x900), the run facts
collapsed (model and card, dataset versions, package versions, seed, hardware, duration,
throughput, token cost), per-task metric tables with 95% CIs and per-group breakdowns, charts
(score by category, reasoning length vs. score, per-turn trajectories per group with CIs), the
errors, and a sample browser (filter by task and status, search, sort by score, ``#sample-TASK-ID``
permalinks, the shown samples downloaded as JSONL) with, per sample, the turn strip and trajectory
thumbnail (``reports.turns``), "play the conversation in order", audio players for every input
and output turn, reasoning collapsed, judge explanations. Turns are numbered from 1 on the page.

Self-contained and offline: plotly.js is inlined once (figures are JSON handed to
``Plotly.newPlot``), filtering is a few lines of inline JS, and the model's audio is embedded as
data URIs while the total stays under ``EMBED_LIMIT_BYTES`` (beyond that, files are linked relative
to the report so the run folder still works when moved). Input clips are the dataset's own files:
they are linked where they lie (relative to the run directory), never copied into the page, so a
report's size and memory do not grow with the inputs' bytes (issue 18); a run folder moved away
from its data keeps everything but those players. Only audio inside the run directory or the
task's recorded data folders is shown, and embedded audio is decoded and re-encoded as Ogg Vorbis
(``AudioLinker``): a record naming ``/etc/passwd`` shows a note, never the file's bytes. All
model text goes through jinja2's autoescape, and JSON inside ``<script>`` is escaped so
``</script>`` in model text cannot end it.
Large runs: the sample browser holds the first ``max_samples`` samples (``EVALKIT_REPORT_MAX_SAMPLES``)
and says so; tables and charts always cover the whole run.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evalkit.audio import AudioError, is_audio_header, reencoded_ogg
from evalkit.confine import PathEscapeError, confined, resolved_roots
from evalkit.errors import EvalkitError
from evalkit.feel import CORRECTNESS_RULE, FEEL_RULE
from evalkit.records import ResponseRecord, ScoreRecord
from evalkit.reports.charts import ChartData, script_safe_json
from evalkit.reports.formatting import fmt_value
from evalkit.reports.scoreboard import display_name, scoreboard
from evalkit.reports.turns import with_turn_views
from evalkit.run_files import Manifest, Summary
from evalkit.store import RunStore, atomic_write_text

EMBED_LIMIT_BYTES = 64 * 2**20
#: samples shown in the browser unless ``EVALKIT_REPORT_MAX_SAMPLES`` or ``max_samples`` says otherwise
DEFAULT_MAX_SAMPLES = 1000
STATUSES = ("correct", "incorrect", "parse-failure", "error")


class AudioLinker:
    """Turns audio paths named by ``responses.jsonl`` into ``src`` values, or says why not.

    A path is shown only when it lies inside the run directory or a folder the manifest recorded
    for the record's task (``path_roots``: its data folder and ``--allow-path``), symlinks
    resolved (``evalkit.confine``), and the file is audio. Shown audio is decoded and re-encoded
    as Ogg Vorbis into a data URI while the budget lasts (never the file's raw bytes), then linked
    relative to the run directory (where report.html lives; header checked), so audio plays from
    file:// and still plays after the run folder is copied elsewhere."""

    def __init__(
        self,
        run_root: Path,
        budget: int = EMBED_LIMIT_BYTES,
        roots_by_task: dict[str, tuple[Path, ...]] | None = None,
    ):
        self.run_root = run_root
        self.budget = budget
        self.roots_by_task = roots_by_task or {}
        self._resolved: dict[str, tuple[Path, ...]] = {}
        self._real_root: Path | None = None
        self._folder_links: dict[str, str] = {}

    @classmethod
    def for_run(cls, run_root: Path, manifest: Manifest, budget: int = EMBED_LIMIT_BYTES) -> AudioLinker:
        """The linker of a run: each task's recorded ``path_roots`` (a run written before they
        were recorded shows only audio inside its own directory)."""
        roots = {t.name: tuple(Path(r) for r in t.path_roots) for t in manifest.tasks}
        return cls(run_root, budget, roots)

    def src(self, path: str | None, task: str | None = None) -> tuple[str | None, str | None]:
        """``(src, None)`` for audio shown, ``(None, why)`` for a path not shown, ``(None, None)``
        when there is no path."""
        file, why = self._shown_file(path, task)
        if file is None:
            return None, why
        if os.path.getsize(file) <= self.budget:
            try:
                ogg = reencoded_ogg(Path(file))
            except AudioError:
                return None, f"{path} (does not decode as audio)"
            if len(ogg) <= self.budget:
                self.budget -= len(ogg)
                return "data:audio/ogg;base64," + base64.b64encode(ogg).decode("ascii"), None
        return self._linked(file, path or "")

    def link(self, path: str | None, task: str | None = None) -> tuple[str | None, str | None]:
        """``src``, never embedding: input clips are the dataset's own files, linked where they
        are (relative to the run directory) rather than copied into every report of every run
        (a 1000-item run's clips were 82 MiB of each report.html and ~300 MiB of its RSS)."""
        file, why = self._shown_file(path, task)
        if file is None:
            return None, why
        return self._linked(file, path or "")

    def _shown_file(self, path: str | None, task: str | None) -> tuple[str | None, str | None]:
        """The confined, existing file a record's path names, as text (a page links thousands of
        clips: no ``Path`` each), or why it is not shown."""
        if not path:
            return None, None
        roots = self._resolved.get(task or "")
        if roots is None:  # resolved once per task: the page shows up to thousands of clips
            roots = self._resolved[task or ""] = resolved_roots(
                (self.run_root, *self.roots_by_task.get(task or "", ()))
            )
        try:
            file = confined(path, roots, "audio", base=self.run_root)
        except PathEscapeError:
            return None, f"{path} (outside the run directory and the task's data folders)"
        if not os.path.isfile(file):
            return None, f"{path} (file missing)"
        return file, None

    def _linked(self, file: str, path: str) -> tuple[str | None, str | None]:
        """A relative link to an audio file (its header checked), or why not."""
        if not is_audio_header(file):
            return None, f"{path} (not an audio file)"
        folder, name = os.path.split(file)
        return self._folder_link(folder) + quote(name), None

    def _folder_link(self, folder: str) -> str:
        """The quoted link prefix of a folder, relative to the run directory, made once per folder
        (a page links up to thousands of clips, most of them in a few folders)."""
        link = self._folder_links.get(folder)
        if link is None:
            if self._real_root is None:
                self._real_root = self.run_root.resolve()
            relative = Path(os.path.relpath(folder, self._real_root)).as_posix()
            link = self._folder_links[folder] = "" if relative == "." else quote(relative) + "/"
        return link


def max_samples_setting(explicit: int | None = None) -> int:
    """The sample browser's cap: the argument, else ``EVALKIT_REPORT_MAX_SAMPLES``, else the default."""
    if explicit is not None:
        return explicit
    raw = os.environ.get("EVALKIT_REPORT_MAX_SAMPLES")
    if raw is None:
        return DEFAULT_MAX_SAMPLES
    try:
        value = int(raw)
    except ValueError:
        raise EvalkitError(f"EVALKIT_REPORT_MAX_SAMPLES={raw!r} is not a whole number") from None
    if value < 0:
        raise EvalkitError(f"EVALKIT_REPORT_MAX_SAMPLES={raw!r} must be 0 or more")
    return value


# -- formatting filters ------------------------------------------------------------------------------
def _fmt_int(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _fmt_seconds(value: Any) -> str:
    if value is None:
        return "–"
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02.0f} s"


# -- the run header ----------------------------------------------------------------------------------
def _token_totals(summary: Summary) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for task in summary.tasks.values():
        totals.update(task.requests.tokens)
    return dict(totals)


def _request_totals(summary: Summary) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for task in summary.tasks.values():
        requests = task.requests
        totals.update(n_requests=requests.n_requests, n_errors=requests.n_errors, n_cached=requests.n_cached)
        # answers worth a second look: nothing after the reasoning, or cut by the token limit
        totals.update(n_empty=task.n_empty, n_truncated=task.n_truncated)
    return dict(totals)


def run_header(manifest: Manifest, summary: Summary) -> dict[str, Any]:
    """The facts a reader needs to trust and reproduce the numbers, gathered from manifest.json
    (model, card, datasets, versions, seed, hardware, timing) and summary.json (token cost)."""
    model = manifest.model
    session = manifest.last_session
    seconds = session.get("seconds")
    tokens = _token_totals(summary)
    requests = _request_totals(summary)
    generated = (tokens.get("completion_tokens") or 0) if seconds else 0
    return {
        "model": model.model_dump(exclude_unset=True),  # as recorded: absent facts show as "–"
        "card": model.card,
        "datasets": [{"task": t.name, **t.dataset.model_dump(exclude_unset=True)} for t in manifest.tasks],
        "versions": manifest.versions,
        "seed": manifest.seed,
        "hardware": manifest.hardware,
        "session": session,
        "seconds": seconds,
        "samples_per_s": session.get("samples_per_s"),
        "requests_per_s": session.get("requests") / seconds if seconds and session.get("requests") else None,
        "completion_tokens_per_s": generated / seconds if seconds and generated else None,
        "tokens": tokens,
        "requests": requests,
    }


# -- the sample browser ------------------------------------------------------------------------------
def _turn_view(rec: ResponseRecord, linker: AudioLinker) -> dict[str, Any]:
    out = rec.output
    input_audio, input_not_shown = linker.link(rec.input.audio_path, rec.task)
    output_path = out.audio.path if out.audio is not None else None
    audio, audio_not_shown = linker.src(output_path, rec.task)
    return {
        "turn": rec.turn,
        "input_text": rec.input.text,
        "input_transcript": rec.input.transcript,
        "input_audio": input_audio,
        # a recorded path that is not shown (gone, outside the run's folders, not audio) is said
        "input_audio_missing": input_not_shown,
        "text": out.text,
        "reasoning": out.reasoning,
        "reasoning_tokens": out.usage.reasoning_tokens,
        "audio": audio,
        "audio_missing": audio_not_shown,
        "trace": out.trace,
        "error": out.error,
        "finish_reason": out.finish_reason,
        "truncated": out.truncated,
        "empty": out.empty,
        "cached": rec.cached,
        "latency": out.timing.total,
        "first_token": out.timing.first_token,
    }


def _status(row: dict[str, Any]) -> str:
    """One word for filtering: error > parse-failure > incorrect > correct."""
    if any(t["error"] for t in row["turns"]) or any(s.error for s in row["scores"]):
        return "error"
    if any(s.parse_failed for s in row["scores"]):
        return "parse-failure"
    if any(s.passed is False for s in row["scores"]):
        return "incorrect"
    return "correct"


def sample_rows(responses: Iterable[ResponseRecord], scores: Iterable[ScoreRecord]) -> list[dict[str, Any]]:
    """Every sample of the run with its response records and scores, in run order, with a status."""
    by_sample: dict[tuple[str, str], dict[str, Any]] = {}

    def row_of(rec: ResponseRecord | ScoreRecord) -> dict[str, Any]:
        key = (rec.task, rec.sample_id)
        if key not in by_sample:
            by_sample[key] = {
                "task": rec.task,
                "id": rec.sample_id,
                "index": rec.sample_index,
                "records": [],
                "scores": [],
                "meta": {},
            }
        return by_sample[key]

    for rec in responses:
        row_of(rec)["records"].append(rec)
    for rec in scores:
        row = row_of(rec)
        row["meta"] = rec.meta
        row["scores"].append(rec.score)
    rows = sorted(by_sample.values(), key=lambda r: (r["task"], r["index"]))
    for row in rows:
        row["status"] = _status({"turns": [{"error": r.output.error} for r in row["records"]], **row})
    return rows


#: status flags of a sample, folded in record by record (the order of ``_status``'s checks)
_ERROR, _PARSE, _WRONG = 1, 2, 4


def _status_of(flags: int) -> str:
    if flags & _ERROR:
        return "error"
    if flags & _PARSE:
        return "parse-failure"
    if flags & _WRONG:
        return "incorrect"
    return "correct"


@dataclass
class ReportScan:
    """What one streamed pass over a run's records leaves for the page: per sample only its task,
    index and status flags (to count statuses), the failed records the errors section lists, the
    charts' compact numbers, and the full records of the samples the browser shows: the first
    ``cap`` in ``sample_rows`` order (task, index), kept while streaming (a sample that can no
    longer be among them is dropped), so the page needs no second pass over the files. Feed every
    response before any score (``ChartData``)."""

    charts: ChartData
    cap: int
    #: sample key -> its index * 8 | its status flags (one int a sample: a 10k-sample report's
    #: statuses are not 10k lists)
    samples: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: list[ResponseRecord] = field(default_factory=list)
    judge_errors: list[ScoreRecord] = field(default_factory=list)
    #: sample key -> (its responses, its scores), for the samples among the first ``cap``
    kept: dict[tuple[str, str], tuple[list[ResponseRecord], list[ScoreRecord]]] = field(default_factory=dict)
    _ranked: list[tuple[str, int, tuple[str, str]]] = field(default_factory=list)

    def _flag(self, rec: ResponseRecord | ScoreRecord, flags: int) -> None:
        """Count the record's sample, with ``flags`` (``_ERROR``, ``_PARSE``, ``_WRONG``) added."""
        key = (rec.task, rec.sample_id)
        self.samples[key] = self.samples.get(key, rec.sample_index << 3) | flags

    def _kept(self, rec: ResponseRecord | ScoreRecord) -> tuple[list, list] | None:
        """The record lists of the record's sample if it is (still) among the first ``cap``."""
        key = (rec.task, rec.sample_id)
        if key in self.kept:
            return self.kept[key]
        rank = (rec.task, rec.sample_index, key)
        if len(self._ranked) >= self.cap and (not self._ranked or rank >= self._ranked[-1]):
            return None  # the cap is full of samples that come before it: never shown
        bisect.insort(self._ranked, rank)
        self.kept[key] = ([], [])
        if len(self._ranked) > self.cap:
            del self.kept[self._ranked.pop()[2]]
        return self.kept.get(key)

    def add_response(self, rec: ResponseRecord) -> None:
        self._flag(rec, _ERROR if rec.output.error is not None else 0)
        if rec.output.error is not None:
            self.errors.append(rec)
        self.charts.add_response(rec)
        kept = self._kept(rec)
        if kept is not None:
            kept[0].append(rec)

    def add_score(self, rec: ScoreRecord) -> None:
        s = rec.score
        if s.error is not None and s.error.kind != "model_error":
            self.judge_errors.append(rec)
        error = _ERROR if s.error is not None else 0
        self._flag(rec, error | (_PARSE if s.parse_failed else 0) | (_WRONG if s.passed is False else 0))
        self.charts.add_score(rec)
        kept = self._kept(rec)
        if kept is not None:
            kept[1].append(rec)

    def rows(self) -> list[tuple[tuple[str, str], str, str]]:
        """(key, task, status) per sample in ``sample_rows`` order (task, index; stable)."""
        ordered = sorted(self.samples.items(), key=lambda kv: (kv[0][0], kv[1] >> 3))
        return [(key, key[0], _status_of(code & 7)) for key, code in ordered]

    def shown_rows(self) -> list[dict[str, Any]]:
        """``sample_rows`` of the samples the browser shows."""
        return sample_rows(
            (r for responses, _ in self.kept.values() for r in responses),
            (r for _, scores in self.kept.values() for r in scores),
        )


def scan_run(store: RunStore, summary: Summary, cap: int) -> ReportScan:
    """The report's one pass over a finished run's files."""
    scan = ReportScan(ChartData(summary), cap)
    for rec in store.iter_responses():
        scan.add_response(rec)
    for score in store.iter_scores():
        scan.add_score(score)
    return scan


def _with_audio(rows: list[dict[str, Any]], linker: AudioLinker) -> list[dict[str, Any]]:
    """Attach display turns (audio resolved) only to the samples that are shown, so the embedding
    budget is spent on what the page holds."""
    out = []
    for row in rows:
        turns = [_turn_view(r, linker) for r in row["records"]]
        playable = any(t["input_audio"] or t["audio"] for t in turns)  # the play-in-order button
        out.append({**row, "turns": turns, "playable": playable})
    return out


# -- rendering ---------------------------------------------------------------------------------------
#: how the metric tables mark a declared direction (summary.json ``metrics_declared``)
DIRECTION_MARKS = {"higher": "↑", "lower": "↓", "descriptive": "·"}
DIRECTION_TITLES = {"higher": "higher is better", "lower": "lower is better", "descriptive": "descriptive"}


def _environment(cache_folder: Path):
    """The templates' environment; compiled templates are kept in evalkit's cache folder (jinja2's
    bytecode cache, checked against each template's source): compiling the report template cost
    every run ~0.3 s of CPU at its end (issue 18)."""
    from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, select_autoescape

    compiled = cache_folder / "templates"
    try:
        compiled.mkdir(parents=True, exist_ok=True)
        bytecode = FileSystemBytecodeCache(str(compiled))
    except OSError:  # a read-only home: compile each time, as before
        bytecode = None
    env = Environment(
        loader=PackageLoader("evalkit.reports", "templates"),
        bytecode_cache=bytecode,
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt_value, fmt_int=_fmt_int, fmt_seconds=_fmt_seconds)
    env.globals.update(DIRECTION_MARKS=DIRECTION_MARKS, DIRECTION_TITLES=DIRECTION_TITLES)
    return env


@lru_cache(maxsize=4)
def _report_template(cache_folder: Path):
    """report.html.j2, loaded once per process and cache folder (``_environment``)."""
    return _environment(cache_folder).get_template("report.html.j2")


def report_template():
    """The report page's template: ``warmup`` loads it while a run's requests are in flight."""
    from evalkit.paths import cache_dir

    return _report_template(cache_dir())


def render(store: RunStore, max_samples: int | None = None, embed_limit: int = EMBED_LIMIT_BYTES) -> str:
    """The report page. ``embed_limit`` is the audio bytes embedded as data URIs (then links)."""
    summary = store.summary()
    return render_scan(
        store,
        store.manifest(),
        summary,
        scan_run(store, summary, max_samples_setting(max_samples)),
        embed_limit,
    )


def render_scan(
    store: RunStore,
    manifest: Manifest,
    summary: Summary,
    scan: ReportScan,
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> str:
    """The page from a finished scan (``scan_run``, or finalize's pass that writes the files)."""
    from markupsafe import Markup

    from evalkit.reports.charts import build_charts_from, plotly_js

    rows = scan.rows()
    shown = _with_audio(scan.shown_rows(), AudioLinker.for_run(store.root, manifest, embed_limit))
    shown = [with_turn_views(row, scan.charts.primary.get(row["task"])) for row in shown]
    charts = build_charts_from(summary, scan.charts) + long_turn_charts(summary, manifest)
    has_figures = any(c.figure_json for c in charts)
    exported = {f"sample-{r['task']}-{r['id']}": r["export"] for r in shown}
    return report_template().render(
        manifest=manifest,
        summary=summary,
        header=run_header(manifest, summary),
        charts=charts,
        plotly_js=Markup(plotly_js().replace("</script", "<\\/script")) if has_figures else None,
        samples=shown,
        n_samples=len(rows),
        tasks=sorted({task for _, task, _ in rows}),
        statuses=STATUSES,
        status_counts=Counter(status for _, _, status in rows),
        shown_counts=Counter(r["status"] for r in shown),
        errors=scan.errors,
        judge_errors=scan.judge_errors,
        feel_rule=FEEL_RULE,
        correctness_rule=CORRECTNESS_RULE,
        # the scoreboard first, the run's name as people say it, the browser's export data
        scoreboard=scoreboard(summary, manifest),
        display_name=display_name(manifest),
        samples_json=Markup(script_safe_json(json.dumps(exported, default=str))),
    )


def long_turn_charts(summary: Summary, manifest: Manifest) -> list[Any]:
    """The reasoning-versus-feel picture of the run's model (``reports.long_turn``), if it has a feel."""
    from evalkit.reports.long_turn import feel_chart

    chart = feel_chart(summary, manifest.model_spec)
    return [chart] if chart is not None else []


def write_report(store: RunStore, max_samples: int | None = None, scan: ReportScan | None = None) -> Path:
    """report.html of the finished run (``scan``: finalize's, made while it wrote the files)."""
    path = store.root / "report.html"
    if scan is None:
        page = render(store, max_samples)
    else:
        page = render_scan(store, store.manifest(), store.summary(), scan)
    atomic_write_text(path, page)
    return path
