"""Audio MultiChallenge (AMC; arXiv 2512.14865, hub ``ScaleAI/audiomc``): 452 spoken conversations
of 2-8 user turns, graded against 1,712 rubrics on four axes (Inference Memory, Instruction
Retention, Self Coherence, Voice Editing). Scores: APR (share of conversations whose rubrics are
all met) and ARS (share of rubrics met, averaged over conversations), overall and per axis.

Row schema accepted (one conversation per row; JSON/JSONL/parquet, or the hub). The hub's exact
schema could not be checked offline, so this is the layout evalkit defines and reads::

    {
      "conversation_id": "amc-0001",            # or "id"
      "axis": "Inference Memory",
      "turns": [                                 # chronological; a JSON string is accepted too
        {"role": "user", "audio": {"bytes": ..., "path": ...} | "clips/0001_1.wav",
         "transcript": "what the user said"},
        {"role": "assistant", "text": "reference reply"},   # "transcript" accepted for "text"
        ...,
        {"role": "user", "audio": ..., "transcript": ...}  # the turn the model answers
      ],
      "rubrics": ["criterion", ...]              # or [{"criterion": ...}] ("rubric"/"text" too),
    }                                            # or a JSON string of either

Relative audio paths resolve against the data folder. A row ending with an assistant turn keeps
that reply as ``reference["reference_reply"]`` (for reports) and drops it from the conversation:
the final reply is the model's to produce. Audio is kept as it is (AMC's is 48 kHz); resampling is
the adapter's business.

Protocols (option ``protocol``):

- ``fixed-context`` (default, official): the model hears the prior user turns as audio, reads the
  dataset's reference assistant replies as assistant text turns, and produces only the final
  assistant turn. No system prompt. Every model sees the same context, so scores are comparable.
- ``closed-loop``: the model answers every user turn and its own earlier replies are fed back
  (evalkit's base behaviour); the rubrics grade the final reply, and the judge reads the model's
  own earlier replies as the context.

Other options: ``data``, ``revision``, ``split``, ``mode`` (see ``BenchmarkTask``), ``judge_model``
(a model spec, default ``openai:o4-mini`` as the authors use; its key comes from
``OPENAI_API_KEY`` like any ``openai:`` model) and ``judge_retries`` (re-asks after an unreadable
judge reply, default 3).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge
from evalkit.judges.rubric import DEFAULT_JUDGE_MODEL, AMCRubricJudge
from evalkit.records import (
    AudioPart,
    ChatRequest,
    GenerationParams,
    Message,
    ModelOutput,
    Sample,
    TextPart,
    Turn,
)
from evalkit.registry import register_task
from evalkit.tasks.benchmark import BenchmarkTask
from evalkit.tasks.prompts import template_digest
from evalkit.tasks.sources import audio_ref

PROTOCOLS = ("fixed-context", "closed-loop")
AXES = ("Inference Memory", "Instruction Retention", "Self Coherence", "Voice Editing")
_RUBRIC_KEYS = ("criterion", "rubric", "text")


def _maybe_json(value: Any, what: str) -> Any:
    """CSV/parquet exports sometimes hold nested fields as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise EvalkitError(f"{what}: expected a list or its JSON text, got unparseable text") from None
    return value


def parse_rubrics(value: Any, what: str) -> list[str]:
    """A row's rubrics as a list of criterion strings."""
    value = _maybe_json(value, what)
    if not isinstance(value, list) or not value:
        raise EvalkitError(f"{what}: 'rubrics' must be a non-empty list")
    rubrics = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            item = next((item[k] for k in _RUBRIC_KEYS if isinstance(item.get(k), str)), None)
        if not isinstance(item, str) or not item.strip():
            raise EvalkitError(f"{what}: rubric {i} is neither text nor an object with 'criterion'")
        rubrics.append(item.strip())
    return rubrics


@register_task("audio-multichallenge")
class AudioMultiChallenge(BenchmarkTask):
    """Audio MultiChallenge: multi-turn spoken dialogue graded by rubrics (APR, ARS) per axis."""

    name = "audio-multichallenge"
    hub_id = "ScaleAI/audiomc"
    default_split = "test"
    modes: ClassVar[dict[str, tuple[str, ...]]] = {"official": ("amc-rubric",)}
    spec_options = BenchmarkTask.spec_options | {"protocol", "judge_model", "judge_retries"}
    template = None  # no prompt around the audio: the conversation is the prompt
    judge_template = "amc_judge.j2"
    group_by = ("axis",)
    primary_metric = "apr"
    requires = ("audio_in", "multi_turn")
    system_prompt = None
    # Replies are free-form spoken-style answers, often multi-part; 512 tokens would cut some off.
    params = GenerationParams(max_tokens=2048)

    def __init__(
        self,
        data: str | None = None,
        revision: str | None = None,
        split: str | None = None,
        mode: str = "official",
        protocol: str = "fixed-context",
        judge_model: str = DEFAULT_JUDGE_MODEL,
        judge_retries: int | str = 3,
    ):
        super().__init__(data=data, revision=revision, split=split, mode=mode)
        if protocol not in PROTOCOLS:
            raise EvalkitError(
                f"task {self.name!r}: unknown protocol {protocol!r}; choose {' or '.join(PROTOCOLS)}"
            )
        try:
            retries = int(judge_retries)
        except ValueError:
            raise EvalkitError(
                f"task {self.name!r}: judge_retries must be an integer, got {judge_retries!r}"
            ) from None
        if retries < 0:
            raise EvalkitError(f"task {self.name!r}: judge_retries must be >= 0, got {retries}")
        if not judge_model:
            raise EvalkitError(
                f"task {self.name!r}: judge_model is empty; give a model spec like {DEFAULT_JUDGE_MODEL}"
            )
        self.protocol = protocol
        self.judge_model = judge_model
        self.judge_retries = retries

    # -- rows -> samples ----------------------------------------------------------------------------
    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        sample_id = str(row.get("conversation_id") or row.get("id") or f"amc-{index}")
        what = f"{self.name} row {index} ({sample_id})"
        turns = _maybe_json(row.get("turns"), f"{what}: 'turns'")
        if not isinstance(turns, list) or not turns:
            raise EvalkitError(f"{what}: 'turns' must be a non-empty list of user/assistant turns")
        conversation: list[Turn] = []
        for i, raw in enumerate(turns):
            if not isinstance(raw, dict) or raw.get("role") not in ("user", "assistant"):
                raise EvalkitError(f"{what}: turn {i} needs role 'user' or 'assistant'")
            if raw["role"] == "user":
                audio = audio_ref(raw.get("audio"), self.source.base, f"{what} turn {i}")
                conversation.append(Turn(role="user", audio=audio, transcript=raw.get("transcript")))
            else:
                text = raw.get("text") or raw.get("transcript")
                if not text:
                    raise EvalkitError(f"{what}: assistant turn {i} has no reference text")
                conversation.append(Turn(role="assistant", text=text))
        reference: dict[str, Any] = {"rubrics": parse_rubrics(row.get("rubrics"), what)}
        if conversation[-1].role == "assistant":
            reference["reference_reply"] = conversation.pop().text
        if not conversation or conversation[-1].role != "user":
            raise EvalkitError(f"{what}: the conversation must end with a user turn")
        axis = row.get("axis")
        if not axis:
            raise EvalkitError(f"{what}: no 'axis'")
        meta = {"axis": str(axis), "n_user_turns": sum(t.role == "user" for t in conversation)}
        return Sample(id=sample_id, task=self.name, conversation=conversation, reference=reference, meta=meta)

    # -- protocol -----------------------------------------------------------------------------------
    def answer_turns(self, sample: Sample) -> list[int]:
        if self.protocol == "closed-loop":
            return super().answer_turns(sample)
        return [max(i for i, t in enumerate(sample.conversation) if t.role == "user")]

    def build_request(self, sample: Sample, turn_index: int, history: list[ModelOutput]) -> ChatRequest:
        """Fixed context: every turn up to ``turn_index`` as recorded (user audio, reference
        assistant text), no system prompt. Closed loop: the base behaviour."""
        if self.protocol == "closed-loop":
            return super().build_request(sample, turn_index, history)
        messages: list[Message] = []
        for turn in sample.conversation[: turn_index + 1]:
            if turn.role == "user":
                assert turn.audio is not None  # to_sample guarantees it
                messages.append(Message(role="user", content=[AudioPart(audio=turn.audio)]))
            elif turn.role == "assistant":
                messages.append(Message(role="assistant", content=[TextPart(text=turn.text or "")]))
        return ChatRequest(messages=messages, params=self.params)

    # -- judging and provenance ---------------------------------------------------------------------
    def make_judges(self) -> dict[str, Judge]:
        context = "model" if self.protocol == "closed-loop" else "reference"
        judge = AMCRubricJudge(model_spec=self.judge_model, retries=self.judge_retries, context=context)
        return {name: judge for name in self.judges}

    def dataset_info(self) -> dict[str, Any]:
        return {
            **super().dataset_info(),
            "protocol": self.protocol,
            "judge_model": self.judge_model,
            "judge_retries": self.judge_retries,
            "judge_template": self.judge_template,
            "judge_template_sha256": template_digest(self.judge_template),
        }
