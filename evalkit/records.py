"""The typed records that flow through a run (see DESIGN.md, "The data that flows").

Every record is a pydantic model so that it validates on the way in and round-trips through JSON
unchanged: the files a run writes (responses.jsonl, scores.jsonl) *are* these records, one per line,
and users' scripts read them back with ``Record.model_validate_json``.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

Role = Literal["system", "user", "assistant"]


def _bytes_from_json(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return base64.b64decode(value)
    raise TypeError(f"expected base64 text or bytes, got {type(value).__name__}")


Base64Bytes = Annotated[
    bytes,
    PlainValidator(_bytes_from_json),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"),
]


#: the run directory's format version, written as ``schema_version`` in manifest.json, summary.json
#: and every JSONL line; a file or line without it is version 0 (written before versions existed).
#: Rule: a version may only add fields (with defaults) to what the one before wrote; readers of an
#: older version ignore the fields they do not know on a line or file that says it is newer.
SCHEMA_VERSION = 1


class Record(BaseModel):
    """Base of all records: forbid unknown fields so typos in hand-written data fail loudly, except
    on a line a newer evalkit wrote (``run_files.parse_line`` validates it with ``extra="ignore"``,
    which reaches every nesting level): there a field this version does not know is one the newer
    version added, and is dropped. No Python validator runs per record: a line of ~11 nested
    records is validated in pydantic-core alone."""

    # a record's validator is built when first used, not at import: models met only inside
    # another (AudioRef, ErrorInfo) never need their own, and every process that imports the
    # records (the CLI's commands, judge workers) started ~25 ms later (issue 18)
    model_config = ConfigDict(extra="forbid", defer_build=True)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes):
        return cls.model_validate_json(text)


class AudioRef(Record):
    """Audio by reference: a file path, or encoded file bytes (WAV/FLAC/OGG/...) held in memory.

    Decoding is lazy (``evalkit.audio.load``) because a run touches thousands of clips and most of
    them are only hashed (for the cache) or linked (in the report), never decoded by the harness.
    ``sample_rate`` is informative for paths and required to interpret raw PCM elsewhere.
    """

    path: str | None = None
    data: Base64Bytes | None = None
    sample_rate: int | None = None
    mime: str = "audio/wav"

    def model_post_init(self, _context: Any) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("AudioRef needs exactly one of 'path' or 'data'")

    def read_bytes(self) -> bytes:
        """The encoded file bytes, reading the file if needed (raises FileNotFoundError)."""
        if self.data is not None:
            return self.data
        return Path(self.path).read_bytes()  # type: ignore[arg-type]

    def digest(self) -> str:
        """sha256 of the encoded content: requests are cached by what the audio *is*, not where.
        Computed once per run (``evalkit.clips``): a file by path, size and mtime, in-memory bytes
        once per object, though every turn of a conversation asks again for every clip so far."""
        from evalkit.clips import OBJECT_DIGESTS, file_sha256

        if self.data is None:
            return file_sha256(self.path)  # type: ignore[arg-type]
        data = self.data
        return OBJECT_DIGESTS.get(self, ("sha256", id(data)), lambda: hashlib.sha256(data).hexdigest())


class Turn(Record):
    """One turn of a conversation; a single-turn benchmark is a one-turn conversation.

    ``text`` and ``audio`` are what the model is given; ``transcript`` is what the audio says,
    kept for judges and reports and never sent (sending it would leak the spoken question).
    """

    role: Role
    text: str | None = None
    audio: AudioRef | None = None
    transcript: str | None = None


class Sample(Record):
    """One benchmark item. ``reference`` holds whatever the task's judges need (answer, choices,
    per-turn answers ...); ``meta`` holds grouping keys (category, difficulty ...)."""

    id: str
    task: str
    conversation: list[Turn]
    reference: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


class TextPart(Record):
    type: Literal["text"] = "text"
    text: str


class AudioPart(Record):
    type: Literal["audio"] = "audio"
    audio: AudioRef


ContentPart = Annotated[TextPart | AudioPart, Field(discriminator="type")]


class Message(Record):
    role: Role
    content: list[ContentPart]

    def text(self) -> str:
        """All text parts joined: what a text-only model sees of this message."""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class GenerationParams(Record):
    """Sampling parameters. ``extra`` is passed to the server verbatim (e.g. vLLM's
    ``skip_special_tokens``); it is part of the cache key like everything else here."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class ChatRequest(Record):
    messages: list[Message]
    params: GenerationParams = Field(default_factory=GenerationParams)

    def cache_payload(self) -> dict[str, Any]:
        """The request as plain data with audio replaced by its content digest: two requests that
        carry the same sound from different paths share a cache entry."""

        def part(p: TextPart | AudioPart) -> dict[str, Any]:
            if isinstance(p, TextPart):
                return {"type": "text", "text": p.text}
            return {"type": "audio", "sha256": p.audio.digest()}

        return {
            "messages": [{"role": m.role, "content": [part(p) for p in m.content]} for m in self.messages],
            "params": self.params.model_dump(mode="json"),
        }


class Usage(Record):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None


class Timing(Record):
    """Seconds. ``first_token`` is time to first streamed token (None when not streamed)."""

    first_token: float | None = None
    total: float | None = None


class ErrorInfo(Record):
    """A failure, recorded as data. ``kind`` is a stable short tag for counting
    (``input_audio``, ``http_4xx``, ``timeout``, ``judge`` ...); ``message`` is for people."""

    kind: str
    message: str
    attempts: int = 1


class ModelOutput(Record):
    """What a model produced for one turn. ``text`` is the answer with reasoning removed;
    ``reasoning`` keeps the thinking separately; ``trace`` holds adapter details worth showing
    (e.g. the cascade's ASR transcript). Exactly one of ``text``/``error`` is meaningful: a failure
    is never an empty string. An empty ``text`` on a successful call *is* the answer (the model said
    nothing after its reasoning, or was cut off): judges score it by the task's rule.

    ``finish_reason`` is why generation stopped, as the server or library says it (``stop``,
    ``length`` ...; None when the adapter cannot know); ``length`` (the token budget ran out) sets
    ``truncated``, which summary.json counts (``n_truncated``) and the report marks."""

    text: str | None = None
    reasoning: str | None = None
    audio: AudioRef | None = None
    usage: Usage = Field(default_factory=Usage)
    timing: Timing = Field(default_factory=Timing)
    model: str | None = None
    finish_reason: str | None = None
    truncated: bool = False
    trace: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None

    @model_validator(mode="after")
    def _length_means_truncated(self) -> ModelOutput:
        """One rule for every adapter: a reply stopped by the token limit is truncated."""
        if self.finish_reason == "length":
            self.truncated = True
        return self

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def empty(self) -> bool:
        """A successful call whose answer (reasoning removed) is blank and that spoke no audio:
        scored by the judges like any answer, and counted apart (``n_empty``)."""
        return self.error is None and self.audio is None and not (self.text or "").strip()


class Score(Record):
    """One judge's verdict on one sample. ``metrics`` are named numbers (None = not applicable);
    ``parse_failed`` marks answers the judge could not read (counted, scored as wrong);
    ``error`` marks a judge that could not judge (counted, never scored as zero)."""

    judge: str
    metrics: dict[str, float | None] = Field(default_factory=dict)
    passed: bool | None = None
    extracted: str | None = None
    parse_failed: bool = False
    explanation: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None


class TurnInput(Record):
    """What the user said in the turn being answered, as the report and users' scripts need it:
    the text sent, the transcript of the audio (not sent), and where the audio file is."""

    text: str | None = None
    transcript: str | None = None
    audio_path: str | None = None


class RunLine(Record):
    """Base of every JSONL line of a run directory: ``schema_version`` first on the line, the
    version of the evalkit that wrote it (a line without it reads as version 0)."""

    schema_version: int = SCHEMA_VERSION


class ResponseRecord(RunLine):
    """A line of responses.jsonl: one generated turn of one sample."""

    task: str
    sample_id: str
    sample_index: int
    turn: int
    request_hash: str
    cached: bool = False
    #: the run whose response-cache entry served this answer (None: asked in this run)
    cached_from: str | None = None
    input: TurnInput = Field(default_factory=TurnInput)
    output: ModelOutput


class ScoreRecord(RunLine):
    """A line of scores.jsonl: one judge on one sample."""

    task: str
    sample_id: str
    sample_index: int
    meta: dict[str, Any] = Field(default_factory=dict)
    score: Score


class SampleRecord(RunLine):
    """A line of samples.jsonl: one sample as it was run, written once when it starts, so that a
    finished run can be judged again (``evalkit score``) without its dataset. Audio paths point
    inside the run directory (relative, ``audio/inputs/...``: audio that came as bytes) or inside
    the task's confined data root (absolute); ``audio_sha256`` (turn index -> digest of the file's
    bytes) says what each file held when the run read it."""

    task: str
    sample_index: int
    sample: Sample
    audio_sha256: dict[int, str] = Field(default_factory=dict)


class CallRecord(RunLine):
    """A line of ``calls/<role>.jsonl``: one call to a model in a role other than the model under
    test (``judge``, ``user``, ``tts``; that model's calls are responses.jsonl). ``caller`` is
    what asked (a judge's name), ``output`` the answer or the error (``output.error``)."""

    role: str
    model: str
    task: str | None = None
    sample_id: str | None = None
    caller: str | None = None
    request_hash: str
    cached: bool = False
    #: the run whose response-cache entry served this answer (None: asked in this run)
    cached_from: str | None = None
    output: ModelOutput
