"""``evalkit nightly CONFIG.yaml``: run a suite, compare each model's run with its baseline, keep
a history.

One night, for every model of the config: ``evaluate`` the config's tasks (one run directory per
model, all tasks in it), compare that run with the model's stored baseline run
(``evalkit.compare``), write the comparison (markdown + HTML) into the night's folder, and append
one record to the history. The exit code is compare's: 1 when any model regressed on any metric
or failed a gate (coverage, error rates, shared items: ``evalkit.compare``).

The state folder (``out:`` in the config, relative to the config file) holds::

    runs/<run_id>/           every night's run directories
    baselines.json           (model, task set) -> baseline run directory (relative to out/)
    history.jsonl            append-only, one record per night per model
    nights/<date>/<model>.md, .html    the night's comparisons

Baselines change only with ``--update-baseline`` (never as a side effect of a good night: a slow
drift of small, individually insignificant drops would otherwise walk the baseline down). A model
with no baseline stops the night before any request unless that flag is given, so a fresh setup
cannot report "no regression" forever by comparing with nothing. With the flag and an existing
baseline, the night is still compared with the *old* baseline and exits with that verdict; the new
run becomes the baseline for the next night.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalkit.errors import EvalkitError
from evalkit.manifest import git_revision, now_iso
from evalkit.run_files import Summary

BASELINES = "baselines.json"
HISTORY = "history.jsonl"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- the config --------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    """One model of the suite. ``name`` labels it in baselines, history and file names (default:
    the spec without its ``@URL``, so moving a server does not orphan the baseline)."""

    spec: str
    name: str | None = None
    base_url: str | list[str] | None = None
    api_key_env: str = "OPENAI_API_KEY"
    #: pins the model's identity for the response cache (``evalkit run --model-revision``)
    model_revision: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.spec.split("@")[0]


class RunOptions(_Strict):
    """Options of ``evalkit run`` that a nightly suite sets. The response cache is off by default:
    a nightly that answers from yesterday's cache would never see the server change."""

    limit: int | None = Field(default=None, ge=1)
    seed: int = 0
    concurrency: int = Field(default=8, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    retries: int = Field(default=5, ge=1)
    cache: bool = False
    judge_workers: int = Field(default=2, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    request_budget: float | None = Field(default=None, gt=0)


class CompareSettings(_Strict):
    """``evalkit compare``'s options (same defaults)."""

    min_effect: float = Field(default=0.02, ge=0)
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    resamples: int = Field(default=2000, ge=100)
    seed: int = 0
    directions: dict[str, Literal["higher", "lower", "none"]] = Field(default_factory=dict)
    min_coverage: float = Field(default=0.98, ge=0, le=1)
    max_error_increase: float = Field(default=0.02, ge=0)
    min_shared: float = Field(default=0.95, ge=0, le=1)


class NightlyConfig(_Strict):
    out: str = "nightly"
    models: list[ModelEntry] = Field(min_length=1)
    tasks: str | list[str]
    run: RunOptions = Field(default_factory=RunOptions)
    compare: CompareSettings = Field(default_factory=CompareSettings)
    site: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _plain_specs(cls, value: Any) -> Any:
        """A model may be written as just its spec string."""
        if isinstance(value, list):
            return [{"spec": v} if isinstance(v, str) else v for v in value]
        return value

    @property
    def task_list(self) -> str:
        return self.tasks if isinstance(self.tasks, str) else ",".join(self.tasks)


def _one_line(path: Path, exc: ValidationError) -> str:
    """The first problem of a config as one line naming the file and the key."""
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key {key!r}; remove it or fix its spelling (see examples/nightly.yaml)"
    if err["type"] == "missing":
        return f"{path}: missing key {key!r}"
    return f"{path}: {key}: {err['msg']}"


def load_config(path: Path) -> NightlyConfig:
    """Read and strictly validate a nightly config (every problem: one ``EvalkitError`` line)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalkitError(f"{path}: cannot read the nightly config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise EvalkitError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise EvalkitError(f"{path}: a nightly config is a mapping (out, models, tasks, run, compare, site)")
    try:
        config = NightlyConfig.model_validate(raw)
    except ValidationError as exc:
        raise EvalkitError(_one_line(path, exc)) from None
    labels = [m.label for m in config.models]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate is not None:
        raise EvalkitError(f"{path}: two models are named {duplicate!r}; give each a distinct `name:`")
    return config


# -- state: baselines and history ------------------------------------------------------------------
def baseline_key(model: str, tasks: str) -> str:
    return f"{model} | {tasks}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "model"


class NightlyState:
    """The ``out:`` folder: baselines (rewritten atomically) and the append-only history."""

    def __init__(self, root: Path):
        self.root = root
        self.runs = root / "runs"

    def baselines(self) -> dict[str, dict[str, Any]]:
        path = self.root / BASELINES
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{path}: damaged ({exc}); restore it or set baselines again") from None

    def baseline_dir(self, key: str) -> Path | None:
        entry = self.baselines().get(key)
        return None if entry is None else self.root / entry["run_dir"]

    def set_baseline(self, key: str, run_dir: Path, date: str) -> None:
        from evalkit.store import atomic_write_text

        baselines = self.baselines()
        baselines[key] = {"run_dir": os.path.relpath(run_dir, self.root), "set_on": date, "set_at": now_iso()}
        atomic_write_text(self.root / BASELINES, json.dumps(baselines, indent=2, sort_keys=True) + "\n")

    def append_history(self, record: dict[str, Any]) -> None:
        with open(self.root / HISTORY, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def night_folder(self, date: str) -> Path:
        """``nights/<date>``, or ``<date>-2``... when the suite ran before on the same date."""
        base = self.root / "nights" / date
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{date}-{n}")
        folder.mkdir(parents=True)
        return folder


# -- one night ----------------------------------------------------------------------------------------
@dataclass
class ModelNight:
    """What happened to one model tonight."""

    model: str
    run_dir: Path
    baseline_dir: Path | None
    exit_code: int
    markdown: Path | None
    html: Path | None
    record: dict[str, Any]


@dataclass
class NightResult:
    folder: Path
    models: list[ModelNight]
    site: Path | None

    @property
    def exit_code(self) -> int:
        return max((m.exit_code for m in self.models), default=0)


def summary_metrics(summary: Summary) -> dict[str, dict[str, float | None]]:
    """task -> ``judge/metric`` -> value: the numbers a history plot needs."""
    return {
        task: {
            f"{judge}/{metric}": m.value for judge, j in t.judges.items() for metric, m in j.metrics.items()
        }
        for task, t in summary.tasks.items()
    }


def _run_model(entry: ModelEntry, config: NightlyConfig, state: NightlyState, show_progress: bool) -> Path:
    from evalkit.cli import model_options
    from evalkit.runner import RunConfig, evaluate

    run = config.run
    run_config = RunConfig(
        model=entry.spec,
        tasks=config.task_list,
        limit=run.limit,
        concurrency=run.concurrency,
        seed=run.seed,
        out_dir=str(state.runs),
        max_tokens=run.max_tokens,
        use_cache=run.cache,
        max_attempts=run.retries,
        judge_workers=run.judge_workers,
        model_options=model_options(entry.api_key_env, entry.base_url, run.timeout),
        timeout=run.timeout,
        request_budget=run.request_budget,
        model_revision=entry.model_revision,
    )
    store = evaluate(run_config, argv=["evalkit", "nightly", entry.label], show_progress=show_progress)
    return store.root


def _compare_options(settings: CompareSettings):
    from evalkit.compare import CompareOptions, parse_directions

    return CompareOptions(
        min_effect=settings.min_effect,
        alpha=settings.alpha,
        resamples=settings.resamples,
        seed=settings.seed,
        directions=parse_directions(f"{k}={v}" for k, v in settings.directions.items()),
        min_coverage=settings.min_coverage,
        max_error_increase=settings.max_error_increase,
        min_shared=settings.min_shared,
    )


def night_for_model(
    entry: ModelEntry,
    config: NightlyConfig,
    state: NightlyState,
    folder: Path,
    date: str,
    update_baseline: bool,
    show_progress: bool,
) -> ModelNight:
    """Run, compare with the baseline (if there is one), write the comparison, append history."""
    from evalkit.compare import compare_runs, to_html, to_markdown
    from evalkit.store import RunStore

    key = baseline_key(entry.label, config.task_list)
    baseline = state.baseline_dir(key)
    run_dir = _run_model(entry, config, state, show_progress)
    comparison = None
    md_path = html_path = None
    if baseline is not None:
        comparison = compare_runs(baseline, run_dir, _compare_options(config.compare))
        md_path, html_path = folder / f"{_slug(entry.label)}.md", folder / f"{_slug(entry.label)}.html"
        md_path.write_text(to_markdown(comparison, links_from=folder), encoding="utf-8")
        html_path.write_text(to_html(comparison, links_from=folder), encoding="utf-8")
    if update_baseline:
        state.set_baseline(key, run_dir, date)
    store = RunStore.open_existing(run_dir)
    manifest = store.manifest()
    record = {
        "date": date,
        "time": now_iso(),
        "model": entry.label,
        "spec": entry.spec,
        "tasks": config.task_list,
        "run_dir": os.path.relpath(run_dir, state.root),
        "run_status": manifest.status,
        "baseline_run_dir": None if baseline is None else os.path.relpath(baseline, state.root),
        "baseline_updated": update_baseline,
        "summary": summary_metrics(store.summary()),
        "verdicts": comparison.verdicts() if comparison is not None else None,
        "regressions": [f"{m.task}: {m.judge}/{m.metric}" for m in comparison.regressions]
        if comparison
        else [],
        "gate_failures": [g.message for g in comparison.gate_failures] if comparison else [],
        "exit_code": comparison.exit_code if comparison is not None else 0,
        "comparison": None if md_path is None else os.path.relpath(md_path, state.root),
        "git_revision": manifest.git_revision or git_revision(),
    }
    state.append_history(record)
    return ModelNight(entry.label, run_dir, baseline, record["exit_code"], md_path, html_path, record)


def _check_baselines(config: NightlyConfig, state: NightlyState, config_path: Path, update: bool) -> None:
    """Refuse before any request when a model has nothing to be compared with."""
    if update:
        return
    for entry in config.models:
        key = baseline_key(entry.label, config.task_list)
        path = state.baseline_dir(key)
        if path is None:
            raise EvalkitError(
                f"{config_path}: no baseline for model {entry.label!r} on tasks {config.task_list!r} in "
                f"{state.root / BASELINES}; run `evalkit nightly {config_path} --update-baseline` once"
            )
        if not (path / "manifest.json").is_file():
            raise EvalkitError(
                f"{state.root / BASELINES}: baseline of {entry.label!r} points at {path}, which is no run "
                "directory; restore it or run with --update-baseline"
            )


def history_run_dirs(state: NightlyState) -> list[Path]:
    """Every night's run still on disk, oldest first and each once: the site's history plots need
    all nights, not only tonight's (tonight's runs are in the history by the time it is read)."""
    seen: dict[Path, None] = {}
    for record in state.history():
        path = (state.root / record["run_dir"]).resolve()
        if (path / "manifest.json").is_file():
            seen.setdefault(path, None)
    return list(seen)


def nights_of(state: NightlyState) -> dict[Path, dict[str, Any]]:
    """Resolved run folder -> its night as the site shows it: the date, the model's ``name:``
    and that night's comparison page (None: no baseline that night)."""
    nights: dict[Path, dict[str, Any]] = {}
    for record in state.history():
        compared = record.get("comparison")
        nights[(state.root / record["run_dir"]).resolve()] = {
            "date": record["date"],
            "name": record["model"],
            "comparison": None if compared is None else (state.root / compared).with_suffix(".html"),
        }
    return nights


def build_site_for(
    run_dirs: list[Path], site: Path, nights: dict[Path, dict[str, Any]] | None = None
) -> Path:
    """Rebuild the leaderboard site from the nights' runs (imported here: the site builder pulls
    in templates and plotly that a night without ``site:`` never needs)."""
    from evalkit.leaderboard.site import build_site

    return build_site(run_dirs, site, nights=nights)


def run_nightly(
    config_path: Path, update_baseline: bool = False, date: str | None = None, show_progress: bool = False
) -> NightResult:
    """One night of the suite in ``config_path``; paths in the config are relative to its folder."""
    config_path = Path(config_path)
    config = load_config(config_path)
    date = date or time.strftime("%Y-%m-%d")
    if not _DATE.match(date):
        raise EvalkitError(f"--date {date!r}: write YYYY-MM-DD")
    state = NightlyState((config_path.parent / config.out).resolve())
    state.root.mkdir(parents=True, exist_ok=True)
    _check_baselines(config, state, config_path, update_baseline)
    _compare_options(config.compare)  # a bad direction fails now, not after the runs
    folder = state.night_folder(date)
    nights = [
        night_for_model(entry, config, state, folder, date, update_baseline, show_progress)
        for entry in config.models
    ]
    site = None
    if config.site is not None:
        site = build_site_for(
            history_run_dirs(state), (config_path.parent / config.site).resolve(), nights_of(state)
        )
    return NightResult(folder=folder, models=nights, site=site)
