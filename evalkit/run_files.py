"""The typed, versioned files of a run directory: ``Manifest`` (manifest.json), ``Summary``
(summary.json), the JSONL line parser with the forward-compatibility rule, and ``samples.jsonl``
lines (``sample_record``).

Versions. Every file and line carries ``schema_version`` (``evalkit.records.SCHEMA_VERSION``, the
version of the evalkit that wrote it); one without it is version 0, written before versions
existed, and reads exactly as before (every field added since has a default).

Forward compatibility (a newer writer never breaks an older reader):

- a version may only *add* fields, each with a default; renaming a field or changing its type is
  not allowed within the format (it would need readers that know both);
- manifest.json and summary.json are read with ``extra="allow"`` at every level: a field this
  version does not know is kept as it is (and written back unchanged by ``update_manifest``);
- JSONL lines are records (``extra="forbid"``, so a typo in hand-written data fails loudly); a line
  whose ``schema_version`` is newer than this reader's is read again ignoring the fields it does
  not know (``parse_line``). A line of this version or older with an unknown field is an error.
- a file of a newer version that still fails to read (a field it changed) is a one-line error
  saying which evalkit wrote it and to upgrade.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalkit.errors import EvalkitError
from evalkit.records import SCHEMA_VERSION, AudioRef, Sample, SampleRecord, Turn

R = TypeVar("R", bound=BaseModel)
F = TypeVar("F", bound="RunFile")


class Open(BaseModel):
    """A part of manifest.json / summary.json: typed where evalkit reads it, open to the rest."""

    # built when first used: a run reads its summary models only when something opens summary.json
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


# -- manifest.json ---------------------------------------------------------------------------------
class DatasetInfo(Open):
    """What a task's data was: id, pinned revision, content fingerprint, item count."""

    id: str | None = None
    revision: str | None = None
    fingerprint: str | None = None
    count: int | None = None


class TaskInfo(Open):
    """One task as the manifest records it (``Task.describe``)."""

    name: str
    class_: str = Field("", alias="class")
    judges: list[str] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=list)
    primary_metric: str = "accuracy"
    dataset: DatasetInfo = Field(default_factory=DatasetInfo)
    #: folders the task's samples may name files in (the report embeds audio only from these)
    path_roots: list[str] = Field(default_factory=list)


class ModelInfo(Open):
    """The model under test (``ModelAdapter.describe``)."""

    spec: str | None = None
    adapter: str | None = None
    card: dict[str, Any] | None = None


class Manifest(Open):
    """manifest.json: what was run, with which settings, on what, and how it went."""

    schema_version: int = 0
    run_id: str | None = None
    #: ``evalkit run --name``: the display name of the run's model (leaderboard, compare); None: the spec
    name: str | None = None
    command: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    model: ModelInfo = Field(default_factory=ModelInfo)
    tasks: list[TaskInfo] = Field(default_factory=list)
    versions: dict[str, Any] = Field(default_factory=dict)
    git_revision: str | None = None
    hardware: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    started: str | None = None
    ended: str | None = None
    status: str = "unknown"
    resumed: list[str] = Field(default_factory=list)
    last_session: dict[str, Any] = Field(default_factory=dict)
    #: per task, each effective generation setting and its source (``evalkit.generation``)
    generation: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    #: per task, each judge's ``Judge.describe()``: scorer version, effective options, declared
    #: metrics (``evalkit.judges.base.judges_manifest``; compare refuses when they differ)
    judges: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    #: ``evalkit score`` sessions that re-judged this run: when, which judges
    rescored: list[dict[str, Any]] = Field(default_factory=list)

    def task(self, name: str) -> TaskInfo | None:
        return next((t for t in self.tasks if t.name == name), None)

    @property
    def model_spec(self) -> str:
        """The model's spec as the run named it ('?' when the manifest lacks it)."""
        return self.model.spec or str(self.config.get("model") or "?")


# -- summary.json ----------------------------------------------------------------------------------
class MetricStats(Open):
    """A mean with its 95% CI over ``n`` values (``evalkit.stats.mean_ci``: Wilson for 0/1 values,
    else the seeded bootstrap; ``ci_method`` says which, absent in runs written before it)."""

    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    ci_method: str | None = None


class PrimaryMetric(MetricStats):
    """The task's headline number: its first judge's primary metric."""

    judge: str | None = None
    metric: str = "accuracy"


class BucketChange(MetricStats):
    """Last bucket reached minus turns 1-5, per conversation, mean and CI (``evalkit.turn_stats``)."""

    first: str = "1-5"
    #: the last buckets the conversations reached
    last: list[str] = Field(default_factory=list)


class DecayStats(Open):
    """The long-turn decay of one per-turn metric (``evalkit.turn_stats``): slope over 1-based turn
    numbers (``unit``: the metric's unit per turn) and bucket change, each with its two-stage
    bootstrap CI over conversations; ``verdict`` decays / improves / trend / steady."""

    direction: str | None = None
    unit: str = ""
    slope: MetricStats = Field(default_factory=MetricStats)
    bucket_change: BucketChange = Field(default_factory=BucketChange)
    verdict: str = "steady"
    n_conversations: int = 0
    max_turns: int = 0


class JudgeSummary(Open):
    """One judge on one task: metrics over the scored samples, with the counts beside them."""

    n: int = 0
    n_scored: int = 0
    coverage: float | None = None
    n_parse_failures: int = 0
    n_judge_unreadable: int = 0
    n_model_errors: int = 0
    n_judge_errors: int = 0
    metrics: dict[str, MetricStats] = Field(default_factory=dict)
    #: group key -> group value -> metric -> stats
    groups: dict[str, dict[str, dict[str, MetricStats]]] = Field(default_factory=dict)
    #: answered-turn index (as text) -> accuracy at that turn
    by_turn: dict[str, MetricStats] = Field(default_factory=dict)
    #: speech judges: metric -> answered-turn index (as text) -> stats over conversations
    by_turn_metrics: dict[str, dict[str, MetricStats]] = Field(default_factory=dict)
    #: speech judges: sample id -> its events ``{"turn", "kind", "cue"?}`` (jump, drift, voice switch)
    events: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    #: speech judges: event kind -> turn (as text) -> conversations with that event there
    event_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    #: metric -> its declaration (``MetricSpec`` less the name: direction, unit, range, description)
    metrics_declared: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: per-turn metric -> bucket of 1-based turns ("1-5", "6-10", "11-20", "21+") -> stats over
    #: conversations (each conversation's mean in the bucket)
    turn_buckets: dict[str, dict[str, MetricStats]] = Field(default_factory=dict)
    #: per-turn metric -> its long-turn decay (conversations with at least 3 valued turns)
    decay: dict[str, DecayStats] = Field(default_factory=dict)
    #: per-turn metric -> its declaration (the judge's ``turn_metric_specs``, else its metric's)
    turn_metrics_declared: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: samples the judge did not apply to (``Judge.not_applicable``: e.g. a text-only reply)
    n_not_applicable: int = 0
    #: declared metric with no value in this run -> why (never a zero)
    not_applicable: dict[str, str] = Field(default_factory=dict)


class FeelSummary(MetricStats):
    """Conversational feel (``evalkit.feel``): mean over conversations of the normalised parts'
    mean, with its CI; ``parts`` each part's judge, metric, raw stats and normalised stats (or why
    it is absent or not applicable); ``not_applicable`` when no part applied."""

    parts: list[dict[str, Any]] = Field(default_factory=list)
    not_applicable: str | None = None


class RequestSummary(Open):
    """A task's requests: counts, errors by kind, tokens, latency."""

    n_requests: int = 0
    n_errors: int = 0
    errors_by_kind: dict[str, int] = Field(default_factory=dict)
    n_cached: int = 0
    n_empty: int = 0
    n_truncated: int = 0
    truncated_share: float | None = None
    tokens: dict[str, int] = Field(default_factory=dict)


class TaskSummary(Open):
    dataset: DatasetInfo = Field(default_factory=DatasetInfo)
    n_samples: int = 0
    n_empty: int = 0
    n_truncated: int = 0
    primary: PrimaryMetric | None = None
    judges: dict[str, JudgeSummary] = Field(default_factory=dict)
    requests: RequestSummary = Field(default_factory=RequestSummary)
    #: conversational feel: the composite of the speech judges, each part shown (``evalkit.feel``)
    feel: FeelSummary | None = None


class Summary(Open):
    """summary.json: per task and judge, every metric with its CI and counts."""

    schema_version: int = 0
    seed: int = 0
    tasks: dict[str, TaskSummary] = Field(default_factory=dict)
    #: set on a shard's own summary (its numbers cover that shard only)
    shard: dict[str, Any] | None = None


RunFile = Manifest | Summary


def load_run_file(path: Path, model: type[F], fix: str) -> F:
    """``path`` read as ``model``: unreadable JSON is a one-line error ending in ``fix``; a file of
    a newer version that this one cannot read says to upgrade."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalkitError(f"{path}: cannot read {path.name} ({exc}); {fix}") from None
    return as_run_file(data, model, path, fix)


def as_run_file(data: Any, model: type[F], path: Path, fix: str) -> F:
    """JSON already read from ``path`` as ``model`` (same errors as ``load_run_file``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EvalkitError(f"{path}: field {where}: {first['msg']}; {_newer_hint(data, fix)}") from None


def _newer_hint(data: Any, fix: str) -> str:
    version = data.get("schema_version", 0) if isinstance(data, dict) else 0
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return f"written by a newer evalkit (schema {version} > {SCHEMA_VERSION}): upgrade evalkit to read it"
    return fix


# -- JSONL lines -----------------------------------------------------------------------------------
def parse_line(raw: bytes, record_type: type[R]) -> R:
    """One JSONL line as ``record_type``. Strict first (the fast path, every line this version or
    an older one wrote); only when that fails and the line says it is newer is it read again
    ignoring the fields this version does not know. Raises ``ValueError`` otherwise."""
    try:
        return record_type.model_validate_json(raw)
    except ValidationError:
        if line_version(raw) <= SCHEMA_VERSION:
            raise
    return record_type.model_validate_json(raw, extra="ignore")  # every nested record too


def line_version(raw: bytes | str) -> int:
    """The ``schema_version`` a line says it has (0 when absent or unreadable)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return 0
    version = data.get("schema_version", 0) if isinstance(data, dict) else 0
    return version if isinstance(version, int) else 0


# -- samples.jsonl ---------------------------------------------------------------------------------
INPUT_AUDIO_DIR = Path("audio") / "inputs"


def sample_record(
    run_root: Path,
    task: str,
    index: int,
    sample: Sample,
    slug: Callable[[str], str],
    read_audio: bool = True,
) -> SampleRecord:
    """The samples.jsonl line of a sample as run. ``sample`` has its audio paths already confined
    (``Task.confine_sample``: absolute, inside the data root); audio that came as bytes is written
    into the run (``audio/inputs/TASK/SAMPLE_tN.EXT``, path relative to the run) so the line stays
    small. Each file that could be read gets its sha256; one that cannot (missing, unreadable) has
    none, and its turn records the error in responses.jsonl as before."""
    turns: list[Turn] = []
    digests: dict[int, str] = {}
    stored = False
    for i, turn in enumerate(sample.conversation):
        audio = turn.audio
        if audio is not None and audio.data is not None:
            audio = _store_input_audio(run_root, task, sample.id, i, audio, slug)
            turn, stored = turn.model_copy(update={"audio": audio}), True
        if read_audio and audio is not None and audio.path is not None:
            digest = file_digest(os.path.join(run_root, audio.path))  # an absolute path stays itself
            if digest is not None:
                digests[i] = digest
        turns.append(turn)
    return SampleRecord(
        task=task,
        sample_index=index,
        sample=sample.model_copy(update={"conversation": turns}) if stored else sample,
        audio_sha256=digests,
    )


def _store_input_audio(
    run_root: Path, task: str, sample_id: str, turn: int, audio: AudioRef, slug: Callable[[str], str]
) -> AudioRef:
    ext = (audio.mime.rpartition("/")[2] or "bin").replace("x-", "")
    rel = INPUT_AUDIO_DIR / slug(task) / f"{slug(sample_id)}_t{turn}.{ext}"
    path = run_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio.data or b"")
    return audio.model_copy(update={"path": str(rel), "data": None})


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read (the run records that error).
    Remembered per run (``evalkit.clips``): the fingerprint and the requests hashed it already."""
    from evalkit.clips import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None
