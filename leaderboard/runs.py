"""Reading run directories for the leaderboard: one ``RunEntry`` per run, one ``TaskResult`` per task.

The run directory is the only input (DESIGN.md: the files are the API), so this module reads
``manifest.json`` and ``summary.json`` as any user's script would. What identifies a comparable
number is made explicit here: a ``VersionKey`` (task, dataset id, revision, fingerprint, and the
judge/metric that produced the primary number). Two results with different keys are never put in
one column or averaged; the site shows them apart with a warning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalkit.confine import confine
from evalkit.errors import EvalkitError
from evalkit.judges.base import recorded_metric_specs
from evalkit.run_files import Manifest, as_run_file
from evalkit.store import MANIFEST, SUMMARY

#: the fix printed for any run whose summary is missing or unreadable
REBUILD_HINT = (
    "rebuild it with `evalkit score --finalize-only {path}` "
    "(or finish the run with `evalkit run --resume {path}`)"
)


@dataclass(frozen=True, order=True)
class VersionKey:
    """What must be equal for two numbers of one task to be comparable."""

    task: str
    dataset_id: str
    revision: str
    fingerprint: str
    judge: str
    metric: str

    def slug(self) -> str:
        """Short stable id for HTML ids and JSON keys (the task name stays readable)."""
        import hashlib

        digest = hashlib.sha1(repr(self).encode()).hexdigest()[:8]
        readable = re.sub(r"[^A-Za-z0-9_-]+", "-", self.task).strip("-")[:40] or "task"
        return f"{readable}--{digest}"

    def label(self) -> str:
        fp = self.fingerprint[:12] if self.fingerprint else "(none)"
        return f"{self.dataset_id} @ {self.revision}, fingerprint {fp}, scored by {self.judge}/{self.metric}"


@dataclass
class TaskResult:
    """One task of one run: the primary metric with its CI, and how much of the task was scored."""

    task: str
    key: VersionKey
    dataset: dict[str, Any]
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_scored: int
    coverage: float | None
    n_model_errors: int
    n_judge_errors: int
    n_parse_failures: int
    n_request_errors: int
    #: which way the primary metric is good, as its judge declared it (None: not declared)
    direction: str | None = None
    #: the speech judges' headline metrics the task has (``SPEECH_COLUMNS`` label -> value, CI,
    #: declared direction): how the model sounds, beside what it got right
    speech: dict[str, dict[str, Any]] = field(default_factory=dict)


#: the speech judges' headline metrics the leaderboard shows as columns where a task has them:
#: (judge, metric, column label); the direction is the one each judge declares in the run
SPEECH_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("naturalness", "dnsmos_ovrl", "DNSMOS"),
    ("naturalness", "distillmos", "DistillMOS"),
    ("prosody", "monotony_index", "monotony"),
    ("prosody", "pitch_sd_st", "pitch SD st"),
    ("emotion", "unjustified_jumps", "unjustified jumps"),
    ("emotion", "ignored_user_changes", "ignored user changes"),
    ("voice", "timbre_drift", "voice switch"),
    ("asr", "wer", "WER (spoken vs text)"),
    ("listener", "listener_turn_mean", "listener 1-5"),
)


def speech_results(
    name: str, task_summary: dict[str, Any], judges_recorded: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """``SPEECH_COLUMNS`` present in the task's summary: label -> value, CI, direction."""
    out: dict[str, dict[str, Any]] = {}
    for judge, metric, label in SPEECH_COLUMNS:
        stats = ((task_summary.get("judges") or {}).get(judge) or {}).get("metrics") or {}
        value = stats.get(metric)
        if not isinstance(value, dict) or value.get("value") is None:
            continue
        declared = recorded_metric_specs(judges_recorded or {}, name, judge)
        out[label] = {
            "value": value.get("value"),
            "ci_low": value.get("ci_low"),
            "ci_high": value.get("ci_high"),
            "direction": next((d.direction for d in declared if d.name == metric), None),
            "metric": f"{judge}/{metric}",
        }
    return out


@dataclass
class RunEntry:
    """One run directory as the site needs it (``summary`` and ``manifest`` kept verbatim)."""

    path: Path
    run_id: str
    model: str
    started: datetime
    started_text: str
    status: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    results: list[TaskResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: what makes two runs one model's (``model_identity``): spec, card digest, generation settings
    identity: tuple[str, str, tuple[tuple[str, str], ...]] = ("", "", ())
    #: the name people know it by (``display_name``); ``model`` adds what tells two identities apart
    display: str = ""
    #: the nightly night this run belongs to: ``{"date", "name", "comparison"}`` (None: not nightly)
    night: dict[str, Any] | None = None

    @property
    def settings_text(self) -> str:
        """The identity's generation settings as one line (``temperature=0.7, max_tokens=32000``)."""
        return ", ".join(f"{k}={v}" for k, v in self.identity[2])


def model_name(manifest: Manifest) -> str:
    """The model's spec without ``@base_url`` (a served model moves between hosts and ports from
    night to night; it is still the same model)."""
    spec = manifest.model_spec
    return "(unknown model)" if spec == "?" else spec.split("@")[0]


#: generation-setting sources that belong to the model (a task's own defaults do not: two runs of
#: different task sets would otherwise be two models)
MODEL_SETTING_SOURCES = ("cli", "card")


def model_identity(manifest: Manifest) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(spec without URL, model card digest, the generation settings the command line or the card
    set): runs that differ in any of these are different rows, whatever they are called."""
    settings: dict[str, str] = {}
    for per_task in manifest.generation.values():
        for name, entry in per_task.items():
            if isinstance(entry, dict) and entry.get("source") in MODEL_SETTING_SOURCES:
                settings.setdefault(name, json.dumps(entry.get("value"), sort_keys=True))
    digest = str((manifest.model.card or {}).get("digest") or "")
    return model_name(manifest), digest, tuple(sorted(settings.items()))


def display_name(manifest: Manifest, nightly_name: str | None = None) -> str:
    """``evalkit run --name``, else the model card's name, else the nightly config's ``name:``,
    else the spec without its URL."""
    card = manifest.model.card or {}
    return manifest.name or card.get("name") or nightly_name or model_name(manifest)


def assign_model_labels(runs: list[RunEntry]) -> None:
    """``run.model`` (the key of every table, page and history line): the display name, with the
    settings, card digest or spec appended where one name covers several identities."""
    identities: dict[str, set[tuple[str, str, tuple[tuple[str, str], ...]]]] = {}
    for run in runs:
        identities.setdefault(run.display, set()).add(run.identity)
    for run in runs:
        if len(identities[run.display]) == 1:
            run.model = run.display
            continue
        others = identities[run.display] - {run.identity}
        spec, digest, _ = run.identity
        parts = [run.settings_text or "default settings"]
        if any(o[1] != digest for o in others):
            parts.append(f"card {digest[:8] or 'none'}")
        if any(o[0] != spec for o in others):
            parts.append(spec)
        run.model = f"{run.display} ({'; '.join(parts)})"


def parse_time(text: str | None) -> datetime | None:
    """``now_iso()`` writes ``2025-06-01T02:00:00+0000``; naive times are taken as UTC."""
    if not text:
        return None
    for parse in (lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z"), datetime.fromisoformat):
        try:
            stamp = parse(text)
        except ValueError:
            continue
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return None


def _read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalkitError(f"{path}: no {what}; {fix}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{path}: cannot read {what} ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise EvalkitError(f"{path}: {what} is not a JSON object; {fix}")
    return data


def primary_of(task_summary: dict[str, Any], task_manifest: dict[str, Any]) -> tuple[str, str] | None:
    """(judge, metric) of the task's headline number: what summary.json names as ``primary``, else
    the task's declared ``primary_metric`` under its first judge, else that judge's first metric."""
    judges = task_summary.get("judges") or {}
    primary = task_summary.get("primary") or {}
    order = list(task_manifest.get("judges") or judges)
    judge = primary.get("judge") or (order[0] if order else None)
    if judge is None or judge not in judges:
        return None
    metrics = judges[judge].get("metrics") or {}
    for metric in (primary.get("metric"), task_manifest.get("primary_metric")):
        if metric and metric in metrics:
            return judge, metric
    if metrics:
        return judge, next(iter(metrics))
    # nothing scored at all: keep the declared metric so the row still shows its errors
    return judge, primary.get("metric") or task_manifest.get("primary_metric") or "accuracy"


def task_result(
    name: str,
    task_summary: dict[str, Any],
    task_manifest: dict[str, Any],
    judges_recorded: dict[str, Any] | None = None,
) -> TaskResult | None:
    """The task's primary result; ``judges_recorded`` (manifest ``judges``) gives its direction."""
    chosen = primary_of(task_summary, task_manifest)
    if chosen is None:
        return None
    judge, metric = chosen
    declared = recorded_metric_specs(judges_recorded or {}, name, judge)
    stats = task_summary["judges"][judge]
    value = (stats.get("metrics") or {}).get(metric) or {}
    dataset = task_summary.get("dataset") or task_manifest.get("dataset") or {}
    key = VersionKey(
        task=name,
        dataset_id=str(dataset.get("id", name)),
        revision=str(dataset.get("revision", "")),
        fingerprint=str(dataset.get("fingerprint", "")),
        judge=judge,
        metric=metric,
    )
    return TaskResult(
        task=name,
        key=key,
        dataset=dataset,
        value=value.get("value"),
        ci_low=value.get("ci_low"),
        ci_high=value.get("ci_high"),
        n=int(stats.get("n", 0)),
        n_scored=int(stats.get("n_scored", 0)),
        coverage=stats.get("coverage"),
        n_model_errors=int(stats.get("n_model_errors", 0)),
        n_judge_errors=int(stats.get("n_judge_errors", 0)),
        n_parse_failures=int(stats.get("n_parse_failures", 0)),
        n_request_errors=int((task_summary.get("requests") or {}).get("n_errors", 0)),
        direction=next((s.direction for s in declared if s.name == metric), None),
        speech=speech_results(name, task_summary, judges_recorded),
    )


def load_run(path: Path) -> RunEntry:
    """Read one run directory; a one-line ``EvalkitError`` naming the path and the fix otherwise."""
    path = Path(path)
    if not path.is_dir() or not (path / MANIFEST).is_file():
        raise EvalkitError(
            f"{path}: not a run directory (no {MANIFEST}); pass the folders that `evalkit run` made"
        )
    for name in (MANIFEST, SUMMARY):  # a link to a file elsewhere would publish that file
        if (path / name).exists():
            fix = "replace the link by the file itself"
            confine(path / name, [path], f"{path / name}", fix=fix)
    manifest = _read_json(path / MANIFEST, MANIFEST, "the run directory is damaged; run it again")
    summary = _read_json(path / SUMMARY, SUMMARY, REBUILD_HINT.format(path=path))
    if not isinstance(summary.get("tasks"), dict):
        raise EvalkitError(f"{path / SUMMARY}: has no 'tasks'; {REBUILD_HINT.format(path=path)}")
    info = as_run_file(manifest, Manifest, path / MANIFEST, "the run directory is damaged; run it again")
    started_text = info.started or info.ended or ""
    started = parse_time(started_text)
    notes = []
    if started is None:
        started = datetime.fromtimestamp((path / MANIFEST).stat().st_mtime, UTC)
        started_text = started.strftime("%Y-%m-%dT%H:%M:%S%z")
        notes.append("manifest has no start time: ordered by the manifest file's modification time")
    entry = RunEntry(
        path=path,
        run_id=info.run_id or path.name,
        model=model_name(info),
        started=started,
        started_text=started_text,
        status=info.status,
        manifest=manifest,
        summary=summary,
        notes=notes,
        identity=model_identity(info),
        display=display_name(info),
    )
    described = {t.get("name"): t for t in manifest.get("tasks") or [] if isinstance(t, dict)}
    for name, task_summary in summary["tasks"].items():
        result = task_result(name, task_summary, described.get(name, {}), manifest.get("judges"))
        if result is None:
            entry.notes.append(f"task {name}: no judge results in summary.json")
        else:
            entry.results.append(result)
    return entry


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Run directories from the arguments: a run directory stands for itself, a folder of run
    directories (``runs/``) for every run in it. Anything else is left for ``load_run`` to reject
    with its one-line error. Duplicates (same folder twice) are dropped."""
    out: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        found = [path]
        if path.is_dir() and not (path / MANIFEST).exists():
            children = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST).is_file())
            found = children or [path]
        for item in found:
            resolved = item.resolve()
            if resolved not in seen:
                seen.add(resolved)
                out.append(item)
    return out
