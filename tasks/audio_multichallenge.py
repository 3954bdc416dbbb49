"""Audio MultiChallenge (AMC; arXiv 2512.14865, hub ``ScaleAI/audiomc``, MIT): 452 spoken
conversations by 47 speakers, up to 8 user turns each, graded against 1,712 rubric items on four axes
(``INFERENCE_MEMORY``, ``INSTRUCTION_RETENTION``, ``SELF_COHERENCE``, ``VOICE_EDITING``). Scores:
APR (share of conversations whose rubric items are all met) and ARS (share of items met, averaged
over conversations), overall and per axis.

Row schema: the hub's, one conversation per row, split ``test`` (the only split), "wide" columns::

    id                              str   e.g. "3tc3nw47nhr9deko"
    axis                            str   INFERENCE_MEMORY | INSTRUCTION_RETENTION | SELF_COHERENCE
                                          | VOICE_EDITING (kept as written: the per-axis group key)
    user_turn_{k}_audio             Audio (48 kHz) for k = 1..8; null after the last user turn
    user_turn_{k}_transcript        str   what the user said in turn k (for the judge; never sent)
    assistant_turn_{k}_transcript   str   the recorded assistant reply to user turn k (k = 1..7)
    rubric                          str   JSON text of a list of rubric items (a list is accepted too)

Sources: the dataset card's field table and ``dataset_info`` (huggingface.co/datasets/ScaleAI/audiomc,
README commits 0b5dac8 / d185cc3: ``user_turn_{1-8}_audio`` at ``sampling_rate: 48000``,
``assistant_turn_{1-7}_transcript``, ``rubric: string``, split ``test``), and public evaluation code
for it (an "AudioMC evaluation guide" with ``prepare_data.py`` / ``utils.py``, which reads the same
columns, finds the last user turn as the last non-empty ``user_turn_k_transcript`` and parses
``rubric`` as a JSON list). The last user turn is the highest k whose transcript or audio is
present; every user turn up to it needs both (audio for the model, transcript for the judge). An
``assistant_turn_{last}_transcript``, if a copy has one, is kept as ``reference["reference_reply"]``
(for reports) and never shown: the final reply is the model's to produce. Local copies (``data=``: a
parquet download of the hub, or JSON/JSONL in the same columns) resolve relative audio paths
against the data folder. Audio is passed on at its own rate; resampling is the adapter's business.

Protocols (option ``protocol``):

- ``fixed-context`` (default, official): the model hears the prior user turns as audio, reads the
  dataset's assistant replies as assistant text turns, and produces only the final assistant turn.
  No system prompt. Every model sees the same context, so scores are comparable.
- ``closed-loop``: the model answers every user turn and its own earlier replies are fed back
  (evalkit's base behaviour); the rubrics grade the final reply, and the judge reads the model's
  own earlier replies as the context.

Grading (``evalkit.judges.rubric``): one judge call per rubric item with the dataset card's prompt
(``templates/amc_judge.j2``, sent as a user message; the card's code names it a system prompt), the
conversation as ``User:`` / ``Assistant:`` text with the model's reply last. Modes: ``official``
(``amc-rubric``: an item whose judge reply stays unreadable after the re-asks is not met, as the
evaluation guide scores it) and ``exclude-unreadable`` (``amc-rubric-exclude``: such an item is left
out of its conversation's APR/ARS); both count those items (``n_judge_unreadable``).
Other options: ``data``, ``revision``, ``split``, ``mode`` (see ``BenchmarkTask``),
``judge_model`` (a model spec, default ``openai:o4-mini`` as the card names; its key comes from
``OPENAI_API_KEY`` like any ``openai:`` model), ``judge_revision`` (pins the judge model, as
``--model-revision`` pins the model under test: its cached verdicts then serve later runs; without
it they serve only this run and its resume) and ``judge_retries`` (re-asks after an unreadable
judge reply, default 3).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge
from evalkit.judges.rubric import DEFAULT_JUDGE_MODEL
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
from evalkit.registry import judges as judge_registry
from evalkit.registry import register_task
from evalkit.tasks.benchmark import BenchmarkOptions, BenchmarkTask
from evalkit.tasks.prompts import template_digest
from evalkit.tasks.sources import audio_ref

PROTOCOLS = ("fixed-context", "closed-loop")
#: the hub's axis values
AXES = ("INFERENCE_MEMORY", "INSTRUCTION_RETENTION", "SELF_COHERENCE", "VOICE_EDITING")
#: user turns per conversation at most (columns user_turn_1_* .. user_turn_8_*)
MAX_TURNS = 8


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_rubrics(value: Any, what: str) -> list[str]:
    """The ``rubric`` cell as a list of items: a list of strings, or its JSON text (the hub's form)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise EvalkitError(f"{what}: 'rubric' is not a JSON list of rubric items") from None
    if hasattr(value, "tolist"):  # a numpy array from a parquet list column
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise EvalkitError(f"{what}: 'rubric' must be a non-empty list of rubric items")
    rubrics = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise EvalkitError(f"{what}: rubric item {i} is not a non-empty string")
        rubrics.append(item.strip())
    return rubrics


class AMCOptions(BenchmarkOptions):
    """The benchmark options plus the protocol and the rubric judge's model, re-asks and pin."""

    protocol: str = "fixed-context"
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_retries: int = 3
    judge_revision: str | None = None


@register_task("audio-multichallenge")
class AudioMultiChallenge(BenchmarkTask):
    """Audio MultiChallenge: multi-turn spoken dialogue graded by rubrics (APR, ARS) per axis."""

    name = "audio-multichallenge"
    hub_id = "ScaleAI/audiomc"
    default_split = "test"
    modes: ClassVar[dict[str, tuple[str, ...]]] = {
        "official": ("amc-rubric",),
        "exclude-unreadable": ("amc-rubric-exclude",),
    }
    spec_options = AMCOptions
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
        judge_revision: str | None = None,
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
        self.judge_revision = judge_revision or None

    # -- rows -> samples ----------------------------------------------------------------------------
    def to_sample(self, row: dict[str, Any], index: int) -> Sample:
        sample_id = str(row.get("id") or f"amc-{index}")
        what = f"{self.name} row {index} ({sample_id})"
        present = [
            k
            for k in range(1, MAX_TURNS + 1)
            if _text(row.get(f"user_turn_{k}_transcript")) or row.get(f"user_turn_{k}_audio")
        ]
        if not present:
            raise EvalkitError(f"{what}: no user turn (no user_turn_k_transcript / user_turn_k_audio)")
        last = present[-1]
        conversation: list[Turn] = []
        for k in range(1, last + 1):
            transcript = _text(row.get(f"user_turn_{k}_transcript"))
            if not transcript:
                raise EvalkitError(f"{what}: user_turn_{k}_transcript is empty (the judge reads it)")
            audio = audio_ref(
                row.get(f"user_turn_{k}_audio"), self.source.base, f"{what} user_turn_{k}_audio"
            )
            conversation.append(Turn(role="user", audio=audio, transcript=transcript))
            if k < last:
                # sent as recorded, empty or not, as the official fixed-context messages are
                reply = _text(row.get(f"assistant_turn_{k}_transcript"))
                conversation.append(Turn(role="assistant", text=reply))
        reference: dict[str, Any] = {"rubrics": parse_rubrics(row.get("rubric"), what)}
        final = _text(row.get(f"assistant_turn_{last}_transcript"))
        if final:
            reference["reference_reply"] = final
        axis = _text(row.get("axis"))
        if not axis:
            raise EvalkitError(f"{what}: no 'axis'")
        meta = {"axis": axis, "n_user_turns": last}
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
        return {
            name: judge_registry.get(name)(
                model_spec=self.judge_model,
                retries=self.judge_retries,
                context=context,
                revision=self.judge_revision,
            )
            for name in self.judges
        }

    def dataset_info(self) -> dict[str, Any]:
        return {
            **super().dataset_info(),
            "protocol": self.protocol,
            "judge_model": self.judge_model,
            "judge_retries": self.judge_retries,
            "judge_revision": self.judge_revision,
            "judge_template": self.judge_template,
            "judge_template_sha256": template_digest(self.judge_template),
        }
