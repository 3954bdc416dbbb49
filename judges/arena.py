"""``arena``: a pairwise judge. A judge model compares two runs' replies to the same conversation,
side A against side B, on the criteria of a listening study (naturalness, emotional fit,
immersion, overall), with ties allowed.

Why pairwise: absolute 1-5 ratings (``listener``) drift between judge models and prompts, while
"which of the two is better" is what people answer reliably in a listening study; asking a model
the same question makes its verdicts comparable with theirs (``evalkit study analyze`` measures
how well they agree) and rankable by Bradley-Terry like theirs.

Position bias control: every pair is asked twice, once in each order (the runs' sides swapped);
each criterion's verdict is the share of the comparison won by the first run, averaged over the
two orders (A, then B-after-swap: 1 + 1 -> 1; a disagreement between the orders -> 0.5, a tie
beside a win -> 0.75). ``arena_order_agreement`` is the share of criteria on which both orders gave
the same verdict: a judge swayed by position shows it there.

``mode=audio`` (default) sends the user's and both sides' audio, like ``listener`` (the replies'
text is not sent: the judge must listen); ``mode=text`` sends the transcripts and the replies'
text, for a text-only judge model. Requests go through the model service as role ``judge``
(cached, bounded, retried, recorded), re-asked by the shared ``ask_until_parsed`` loop.

It compares two runs, so it is not run inside ``evalkit run`` (a single run's ``ascore`` is a
judge error saying so): ``evalkit study arena RUN_A RUN_B ... --judge SPEC`` runs it
(``evalkit.study.arena``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from evalkit.judges.base import MetricSpec, build_options, share
from evalkit.judges.listener import ListenerJudge
from evalkit.judges.model_judge import DEFAULT_JUDGE_MAX_TOKENS, ModelJudge, ModelJudgeOptions, Parsed
from evalkit.judges.rubric import load_json_object
from evalkit.records import AudioPart, ContentPart, ModelOutput, Sample, Score, TextPart
from evalkit.registry import register_judge

ARENA_JUDGE_ENV = "EVALKIT_ARENA_JUDGE"

#: criterion -> what the judge is asked (the study page's criteria, in its order)
CRITERIA: dict[str, str] = {
    "naturalness": "which assistant sounds more like a person speaking naturally (intonation, rhythm)",
    "emotional_fit": "whose tone of voice fits what is said and how the user sounds",
    "immersion": "which feels more like a live conversation with one consistent partner",
    "overall": "which assistant the user would rather talk to",
}
METRIC_OF = {c: f"arena_{c}" for c in CRITERIA}
VERDICTS = {"a": 1.0, "tie": 0.5, "b": 0.0}

PROMPT_HEAD = """You are comparing two voice assistants, A and B, in the same conversation with the same user.
{how}
For each criterion say which side is better: "A", "B", or "tie" only when you truly cannot tell them apart.
Criteria:
{criteria}

The conversation ({n_turns} turns):"""

HOW = {
    "audio": (
        "You will HEAR each user turn, then assistant A's and assistant B's spoken replies. "
        "Judge only from what you hear."
    ),
    "text": "You will read each user turn, then assistant A's and assistant B's replies.",
}

PROMPT_TAIL = """Answer with exactly one JSON object and nothing else:
{{{schema}, "justification": "<one or two sentences>"}}
where each criterion is "A", "B" or "tie"."""

REASK = (
    "Your reply could not be read: {error}. Return just the json object described above: every "
    'criterion "A", "B" or "tie", and a string "justification". Do not include any other text.'
)


class ArenaParseError(ValueError):
    """The judge's reply is not the per-criterion A/B/tie object asked for."""


def parse_arena_verdict(text: str | None) -> dict[str, str]:
    """Strict: one JSON object with every criterion ``"A"``, ``"B"`` or ``"tie"`` (any case) and
    a string ``justification``; returns criterion -> ``a`` | ``b`` | ``tie``."""
    data = load_json_object(text, ArenaParseError)
    out = {}
    for criterion in CRITERIA:
        value = data.get(criterion)
        if not isinstance(value, str) or value.strip().lower() not in VERDICTS:
            raise ArenaParseError(f'{criterion!r} must be "A", "B" or "tie", got {value!r}')
        out[criterion] = value.strip().lower()
    if not isinstance(data.get("justification"), str):
        raise ArenaParseError(f"'justification' must be a string, got {data.get('justification')!r}")
    out["justification"] = data["justification"]
    return out


class ArenaOptions(ModelJudgeOptions):
    """The arena's settings: what the judge gets (``audio`` or ``text``) and how many orders each
    pair is asked in (2: both, averaged; 1: the runs' order only)."""

    mode: Literal["audio", "text"] = "audio"
    orders: int = Field(default=2, ge=1, le=2)


@register_judge("arena")
class ArenaJudge(ModelJudge):
    """A judge model (EVALKIT_ARENA_JUDGE) compares two runs' replies to one conversation, A vs B
    on naturalness, emotional fit, immersion and overall (ties allowed), in both orders; run by
    `evalkit study arena`."""

    model_env = ARENA_JUDGE_ENV
    model_hint = "a judge model: an audio-capable one for mode=audio, e.g. openai:gpt-4o-audio-preview"
    name = "arena"
    scorer_version = "1"
    metrics = (
        *(
            MetricSpec(
                name=METRIC_OF[c],
                direction="descriptive",
                range=(0.0, 1.0),
                description=f"share of the comparison won by the first run (both orders averaged): {text}",
            )
            for c, text in CRITERIA.items()
        ),
        share("arena_order_agreement", "share of criteria on which both presentation orders agreed"),
    )
    Options = ArenaOptions

    def __init__(
        self,
        model_spec: str | None = None,
        retries: int = 2,
        max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
        revision: str | None = None,
        mode: str = "audio",
        orders: int = 2,
    ):
        super().__init__(
            self.model_from_env(model_spec), retries=retries, max_tokens=max_tokens, revision=revision
        )
        options = build_options(
            ArenaOptions,
            self.name,
            judge_model=self.model_spec,
            retries=retries,
            max_tokens=max_tokens,
            mode=mode,
            orders=orders,
        )
        self.mode, self.orders = options.mode, options.orders

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        return self._error(
            "the arena judge compares two runs' replies; run `evalkit study arena RUN_A RUN_B --judge SPEC`",
            attempts=0,
        )

    # -- the request --------------------------------------------------------------------------------
    def _reply(self, sample: Sample, k: int, output: ModelOutput) -> ContentPart:
        if self.mode == "audio":
            if output.audio is None:
                raise ValueError(
                    f"sample {sample.id!r} turn {k}: a reply has no audio to hear (use mode=text)"
                )
            return AudioPart(audio=output.audio)
        return TextPart(text=(output.text or "").strip() or "(empty reply)")

    def _users(self, sample: Sample, n: int) -> list[list[ContentPart]]:
        if self.mode == "audio":
            return ListenerJudge.user_turns(sample, n)
        users = [t for t in sample.conversation if t.role == "user"][:n]
        if len(users) < n:
            raise ValueError(f"sample {sample.id!r}: {n} replies but {len(users)} user turns")
        out: list[list[ContentPart]] = []
        for k, turn in enumerate(users):
            said = turn.transcript or turn.text
            if not said:
                raise ValueError(
                    f"sample {sample.id!r} user turn {k}: no text or transcript for a text judge"
                )
            out.append([TextPart(text=said.strip())])
        return out

    def request(
        self, sample: Sample, first: list[ModelOutput], second: list[ModelOutput]
    ) -> list[ContentPart]:
        """One order's message: criteria, per turn the user, side A (``first``) and side B."""
        if len(first) != len(second) or not first:
            raise ValueError(
                f"sample {sample.id!r}: the two sides have {len(first)} and {len(second)} replies"
            )
        n = len(first)
        criteria = "\n".join(f"- {c}: {text}" for c, text in CRITERIA.items())
        parts: list[ContentPart] = [
            TextPart(text=PROMPT_HEAD.format(how=HOW[self.mode], criteria=criteria, n_turns=n))
        ]
        users = self._users(sample, n)
        for k in range(n):
            parts += [TextPart(text=f"User turn {k + 1}:"), *users[k]]
            parts += [TextPart(text=f"Assistant A, turn {k + 1}:"), self._reply(sample, k, first[k])]
            parts += [TextPart(text=f"Assistant B, turn {k + 1}:"), self._reply(sample, k, second[k])]
        schema = ", ".join(f'"{c}": "A" | "B" | "tie"' for c in CRITERIA)
        parts.append(TextPart(text=PROMPT_TAIL.format(schema=schema)))
        return parts

    # -- comparing ----------------------------------------------------------------------------------
    async def acompare(
        self, sample: Sample, outputs_a: list[ModelOutput], outputs_b: list[ModelOutput]
    ) -> Score:
        """Run a (``outputs_a``) against run b on ``sample``: per criterion, the share run a won."""
        try:
            orders = [(outputs_a, outputs_b), (outputs_b, outputs_a)][: self.orders]
            requests = [self.request(sample, first, second) for first, second in orders]
        except ValueError as exc:
            return self._error(str(exc), attempts=0)
        results, attempts, failed = await self.ask_each_until_parsed(
            sample, requests, parse_arena_verdict, ArenaParseError, REASK, "order"
        )
        return failed or self._score(results, attempts)

    def _score(self, results: list[Parsed[dict[str, str]]], attempts: int) -> Score:
        verdicts = [r.value for r in results if r.value is not None]
        # share won by run a in each order: order 2 shows run a as side B
        shares = [
            {c: VERDICTS[v[c]] if k == 0 else 1.0 - VERDICTS[v[c]] for c in CRITERIA}
            for k, v in enumerate(verdicts)
        ]
        metrics: dict[str, float | None] = {
            METRIC_OF[c]: sum(s[c] for s in shares) / len(shares) for c in CRITERIA
        }
        metrics["arena_order_agreement"] = (
            sum(shares[0][c] == shares[1][c] for c in CRITERIA) / len(CRITERIA) if len(shares) == 2 else 1.0
        )
        details: dict[str, Any] = {
            "orders": [
                {
                    "verdict": {c: v[c] for c in CRITERIA},
                    "justification": v["justification"],
                    "attempts": r.attempts,
                }
                for v, r in zip(verdicts, results, strict=True)
            ],
            "judge_model": self.model_spec,
            "judge_attempts": attempts,
            "judge_cached": all(all(r.cached) for r in results),
        }
        problems = [f"order {i}: {p}" for i, r in enumerate(results, start=1) for p in r.problems]
        if problems:
            details["judge_parse_errors"] = problems
        summary = ", ".join(f"{c} {metrics[METRIC_OF[c]]:.2f}" for c in CRITERIA)
        return Score(
            judge=self.name, metrics=metrics, explanation=f"first run's share: {summary}", details=details
        )
