"""``listener``: an audio-native judge. A judge model HEARS the conversation, the user's and the
model's audio of every turn, and rates how the model spoke, not what it wrote.

Why: every other speech judge either measures signal features (prosody, emotion, voice) or reads
text (``emotion-llm`` reads the transcript plus a prosody summary). Neither hears what a listener
hears: a reply read like an answering machine, a cheerful tone after bad news, a voice that stopped
sounding like a conversation partner. An audio-capable chat model (any model spec whose server
accepts ``input_audio`` parts: gpt-4o-audio, Qwen2.5-Omni or Step-Audio behind vLLM, ...) can.

The request is one user message: the rubric, then per turn ``User turn k:`` with the user's audio
(its transcript when the turn has no audio) and ``Assistant turn k:`` with the model's audio (the
model's text is NOT sent: the judge must listen), then the reply schema. The judge answers one JSON
object: per assistant turn and for the whole conversation, each rubric dimension as
``{"score": 1-5, "justification": "..."}``:

- ``prosodic_naturalness``: intonation, rhythm and stress as a person would speak (5) vs flat,
  robotic or erratic (1);
- ``emotion_content``: the tone fits what is being said;
- ``emotion_user``: the tone fits how the user sounds (responds to an excited, sad, calm user);
- ``immersion``: it sounds like one consistent partner in a live conversation.

Order-bias control: a conversation is heard in its own order (reversing turns would change what
"responding to the user" means), so what is varied is the order of the rubric dimensions. The
judge is asked twice, once with the dimensions in the order above and once reversed (both in the
instructions and in the reply schema), and each score is the mean of the two answers.
``listener_order_gap`` is the mean absolute difference of the two answers' conversation scores: a
judge swayed by presentation order shows it there (0: no sway). ``passes: 1`` asks once.

Both requests go through the run's model service as role ``judge`` (``judges.model_judge``): cached
(across runs when the judge is pinned with ``revision``), bounded, retried and recorded. A reply
that does not parse is re-asked by the shared loop (``ask_until_parsed``); still unreadable after
``retries`` re-asks, or a failed call, the conversation is a judge error, never a score.

What it cannot do: scores are one model's opinion, as good as its hearing (a text-only model given
audio it cannot hear is refused by its server, which is a judge error); absolute 1-5 ratings are
not calibrated across judge models, so compare runs judged by the same pinned judge model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from evalkit.judges.base import MetricSpec, build_options
from evalkit.judges.model_judge import (
    DEFAULT_JUDGE_MAX_TOKENS,
    ModelJudge,
    ModelJudgeOptions,
    Parsed,
    score_and_justification,
)
from evalkit.judges.rubric import load_json_object
from evalkit.records import AudioPart, ContentPart, ModelOutput, Sample, Score, TextPart
from evalkit.registry import register_judge

#: the judge model spec when none is given (like EVALKIT_EMOTION_JUDGE for emotion-llm)
LISTENER_JUDGE_ENV = "EVALKIT_LISTENER_JUDGE"

#: rubric dimension -> what a 5 and a 1 sound like (the order of the first pass)
DIMENSIONS: dict[str, str] = {
    "prosodic_naturalness": (
        "intonation, rhythm, stress and pacing sound like a person speaking (5), "
        "not flat, monotone, robotic or erratic (1)"
    ),
    "emotion_content": "the tone of voice fits what the assistant is saying (5), or contradicts it (1)",
    "emotion_user": (
        "the tone of voice responds to how the USER sounds, e.g. warmer to a sad user, livelier "
        "to an excited one (5), or ignores it (1)"
    ),
    "immersion": (
        "it sounds like one consistent conversation partner in a live conversation (5), "
        "not like an answering machine or a different speaker each turn (1)"
    ),
}
#: the metric each dimension's conversation score is written as
METRIC_OF = {
    "prosodic_naturalness": "listener_naturalness",
    "emotion_content": "listener_emotion_content",
    "emotion_user": "listener_emotion_user",
    "immersion": "listener_immersion",
}

PROMPT_HEAD = """You are an expert listener judging HOW a spoken voice assistant sounds in a conversation.
You will hear the conversation turn by turn: the user's audio, then the assistant's spoken reply.
Judge only from what you hear: the delivery, not the facts. Rate each assistant turn, and the
conversation as a whole, from 1 (worst) to 5 (best) on these dimensions, in this order:
{rubric}

The conversation ({n_turns} assistant turns):"""

PROMPT_TAIL = """Answer with exactly one JSON object and nothing else:
{{"turns": [{{"turn": 1, {schema}}}, ... one entry per assistant turn, turn 1 to {n_turns}],
 "conversation": {{{schema}}}}}
where each dimension is {{"score": <integer 1-5>, "justification": "<one sentence on what you heard>"}}."""

REASK = (
    "Your reply could not be read: {error}. Return just the json object described above, with "
    "an entry per assistant turn and one for the conversation, each dimension an object with an "
    'integer "score" from 1 to 5 and a string "justification". Do not include any other text.'
)


class ListenerParseError(ValueError):
    """The judge's reply is not the per-turn and per-conversation rating object asked for."""


@dataclass(frozen=True)
class Rating:
    score: int
    justification: str


@dataclass(frozen=True)
class ListenerVerdict:
    """One pass's ratings: per assistant turn (in order) and for the conversation."""

    turns: list[dict[str, Rating]]
    conversation: dict[str, Rating]


def _rating(value: Any, where: str) -> Rating:
    if not isinstance(value, dict):
        raise ListenerParseError(f"{where} must be an object with 'score' and 'justification', got {value!r}")
    score, justification = score_and_justification(value, ListenerParseError, where)
    return Rating(score=score, justification=justification)


def _ratings(entry: Any, where: str) -> dict[str, Rating]:
    if not isinstance(entry, dict):
        raise ListenerParseError(f"{where} must be an object, got {type(entry).__name__}")
    return {dim: _rating(entry.get(dim), f"{where} {dim!r}") for dim in DIMENSIONS}


def parse_listener_verdict(text: str | None, n_turns: int) -> ListenerVerdict:
    """Strict: one JSON object (bare or fenced) with ``turns``, one entry per assistant turn
    numbered 1..n in order, and ``conversation``, each holding every dimension as an integer 1-5
    score with a string justification. Raises ``ListenerParseError`` naming the first problem."""
    data = load_json_object(text, ListenerParseError)
    turns = data.get("turns")
    if not isinstance(turns, list) or len(turns) != n_turns:
        got = len(turns) if isinstance(turns, list) else repr(turns)
        raise ListenerParseError(f"'turns' must list {n_turns} assistant turns, got {got}")
    for k, entry in enumerate(turns, start=1):
        if not isinstance(entry, dict) or entry.get("turn") != k:
            raise ListenerParseError(f"'turns' entry {k} must have \"turn\": {k}")
    return ListenerVerdict(
        turns=[_ratings(entry, f"turn {k}") for k, entry in enumerate(turns, start=1)],
        conversation=_ratings(data.get("conversation"), "'conversation'"),
    )


class ListenerOptions(ModelJudgeOptions):
    """The listener's settings: how many rubric orders each conversation is heard with (2: the
    order of ``DIMENSIONS`` and its reverse, averaged; 1: that order alone)."""

    passes: int = Field(default=2, ge=1, le=2)


@register_judge("listener")
class ListenerJudge(ModelJudge):
    """An audio-capable judge model (EVALKIT_LISTENER_JUDGE) hears the user's and the model's audio
    and rates prosodic naturalness, emotional fit (to the content, to the user) and immersion 1-5,
    per turn and per conversation, averaged over two rubric orders."""

    model_env = LISTENER_JUDGE_ENV
    model_hint = "an audio-capable judge model: e.g. openai:gpt-4o-audio-preview or openai:MODEL@URL"
    name = "listener"
    needs_speech = True
    scorer_version = "1"
    metrics = (
        *(
            MetricSpec(
                name=METRIC_OF[dim],
                direction="higher",
                range=(1.0, 5.0),
                description=f"judge model listening, conversation score 1-5: {text}",
            )
            for dim, text in DIMENSIONS.items()
        ),
        MetricSpec(
            name="listener_turn_mean",
            direction="higher",
            range=(1.0, 5.0),
            description="mean of the judge model's per-turn scores over turns and dimensions",
        ),
        MetricSpec(
            name="listener_order_gap",
            direction="descriptive",
            range=(0.0, 4.0),
            description="mean |difference| of the conversation scores given under the two rubric orders",
        ),
    )
    Options = ListenerOptions

    def __init__(
        self,
        model_spec: str | None = None,
        retries: int = 2,
        max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
        revision: str | None = None,
        passes: int = 2,
    ):
        super().__init__(
            self.model_from_env(model_spec), retries=retries, max_tokens=max_tokens, revision=revision
        )
        self.passes = build_options(
            ListenerOptions,
            self.name,
            judge_model=self.model_spec,
            retries=retries,
            max_tokens=max_tokens,
            passes=passes,
        ).passes

    # -- the request --------------------------------------------------------------------------------
    def orders(self) -> list[list[str]]:
        """The rubric dimension order of each pass: as declared, then reversed."""
        forward = list(DIMENSIONS)
        return [forward, forward[::-1]][: self.passes]

    @staticmethod
    def user_turns(sample: Sample, n_outputs: int) -> list[list[ContentPart]]:
        """What the judge gets of each answered user turn: its audio, else its transcript/text."""
        users = [t for t in sample.conversation if t.role == "user"][:n_outputs]
        if len(users) < n_outputs:
            raise ValueError(f"sample {sample.id!r}: {n_outputs} replies but {len(users)} user turns")
        parts: list[list[ContentPart]] = []
        for k, turn in enumerate(users):
            if turn.audio is not None:
                parts.append([AudioPart(audio=turn.audio)])
                continue
            said = turn.transcript or turn.text
            if not said:
                raise ValueError(f"sample {sample.id!r} user turn {k}: neither audio nor text")
            parts.append([TextPart(text=f"(no audio; the user said: {said.strip()})")])
        return parts

    def request(self, sample: Sample, outputs: list[ModelOutput], order: list[str]) -> list[ContentPart]:
        """One pass's message: rubric in ``order``, the turns with their audio, the reply schema."""
        for k, output in enumerate(outputs):
            if output.audio is None:
                raise ValueError(f"sample {sample.id!r} turn {k}: the model output has no audio to hear")
        rubric = "\n".join(f"- {dim}: {DIMENSIONS[dim]}" for dim in order)
        schema = ", ".join(f'"{dim}": {{"score": ..., "justification": ...}}' for dim in order)
        n = len(outputs)
        parts: list[ContentPart] = [TextPart(text=PROMPT_HEAD.format(rubric=rubric, n_turns=n))]
        for k, (user, output) in enumerate(zip(self.user_turns(sample, n), outputs, strict=True), start=1):
            parts += [TextPart(text=f"User turn {k}:"), *user]
            parts += [TextPart(text=f"Assistant turn {k}:"), AudioPart(audio=output.audio)]  # type: ignore[arg-type]
        parts.append(TextPart(text=PROMPT_TAIL.format(schema=schema, n_turns=n)))
        return parts

    # -- scoring ------------------------------------------------------------------------------------
    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        if not outputs:
            return self._error(f"sample {sample.id!r}: no model outputs to judge", attempts=0)
        try:
            requests = [self.request(sample, outputs, order) for order in self.orders()]
        except ValueError as exc:
            return self._error(str(exc), attempts=0)
        n = len(outputs)

        def parse(text: str | None) -> ListenerVerdict:
            return parse_listener_verdict(text, n)

        results, attempts, failed = await self.ask_each_until_parsed(
            sample, requests, parse, ListenerParseError, REASK, "pass"
        )
        return failed or self._score(results, attempts)

    def _score(self, results: list[Parsed[ListenerVerdict]], attempts: int) -> Score:
        verdicts = [r.value for r in results if r.value is not None]
        conv = {dim: sum(v.conversation[dim].score for v in verdicts) / len(verdicts) for dim in DIMENSIONS}
        per_turn = [
            {dim: sum(v.turns[k][dim].score for v in verdicts) / len(verdicts) for dim in DIMENSIONS}
            for k in range(len(verdicts[0].turns))
        ]
        gap = (
            sum(
                abs(verdicts[0].conversation[d].score - verdicts[1].conversation[d].score) for d in DIMENSIONS
            )
            / len(DIMENSIONS)
            if len(verdicts) == 2
            else 0.0
        )
        metrics: dict[str, float | None] = {METRIC_OF[dim]: conv[dim] for dim in DIMENSIONS}
        metrics["listener_turn_mean"] = sum(sum(row.values()) for row in per_turn) / (
            len(per_turn) * len(DIMENSIONS)
        )
        metrics["listener_order_gap"] = gap
        details: dict[str, Any] = {
            "turn_metrics": [
                {"turn": k, **{METRIC_OF[dim]: row[dim] for dim in DIMENSIONS}}
                for k, row in enumerate(per_turn)
            ],
            "passes": [
                {
                    "order": order,
                    "conversation": {d: _shown(v.conversation[d]) for d in DIMENSIONS},
                    "turns": [{d: _shown(t[d]) for d in DIMENSIONS} for t in v.turns],
                    "attempts": r.attempts,
                    "cached": all(r.cached),
                }
                for order, v, r in zip(self.orders(), verdicts, results, strict=True)
            ],
            "judge_model": self.model_spec,
            "judge_attempts": attempts,
            "judge_calls": sum(len(r.cached) for r in results),
            "judge_cached": all(all(r.cached) for r in results),
        }
        problems = [f"pass {i}: {p}" for i, r in enumerate(results, start=1) for p in r.problems]
        if problems:
            details["judge_parse_errors"] = problems
        summary = ", ".join(f"{dim} {conv[dim]:.1f}" for dim in DIMENSIONS)
        return Score(
            judge=self.name,
            metrics=metrics,
            explanation=f"heard {len(per_turn)} turns: {summary} (order gap {gap:.2f})",
            details=details,
        )


def _shown(rating: Rating) -> dict[str, Any]:
    return {"score": rating.score, "justification": rating.justification}
