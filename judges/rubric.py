"""Rubric judges, graded the way Audio MultiChallenge (and HealthBench before it) grades: a judge
model reads the conversation as text, the graded reply last, and ONE rubric item, and answers with a
JSON object ``{"explanation": string, "criteria_met": true/false}``. A conversation's items are
graded by separate calls, run concurrently (``asyncio.gather``). APR is 1 when every item is met
and 0 otherwise; ARS is the share of items met.

The prompt (``tasks/templates/amc_judge.j2``) is the official one from the dataset card
(huggingface.co/datasets/ScaleAI/audiomc, MIT), verbatim. The conversation is laid out as the card's
``build_grading_conversation_history`` does: ``User: <transcript>`` and ``Assistant: <text>`` blocks
separated by blank lines, empty ones left out, and ``Assistant: <the graded reply>`` last.

Why a strict parser with re-asks: a rubric score is only as good as the mapping from the judge's
words to verdicts. A reply must be exactly one JSON object (optionally in a Markdown code fence)
with a JSON boolean ``criteria_met`` and a string ``explanation``; anything else is re-asked (the
parse error appended to the conversation, nothing random varied) up to ``retries`` times.

An item whose judge reply is *still* unreadable after the re-asks: ``amc-rubric`` (the ``official``
mode) counts it as **not met**, as the public AudioMC evaluation guide does with a reply it cannot
parse, so APR/ARS are the published numbers; ``amc-rubric-exclude`` (mode ``exclude-unreadable``)
leaves the item out of its conversation's APR/ARS instead (a conversation left with no readable item
is a judge error). Either way the item is counted apart: ``details["n_judge_unreadable"]`` per
conversation and ``n_judge_unreadable`` per judge in summary.json, beside the parse problems
(``details["judge_parse_errors"]``). A judge *call* that fails (transport, server) makes the
conversation a judge error in both modes: that is no verdict at all, never a zero.

The grader prompt is sent as one *user* message, as the evaluation guide and HealthBench send it.
The dataset card presents the same text as the judge's "system prompt"; evalkit keeps it a user
turn on purpose, since the text itself ends with the conversation and the rubric item to grade
(it is the whole request, not an instruction ahead of one).

The judge model is a role of the run's model service (``judges.model_judge.ModelJudge``,
``evalkit.service``): resolved once per run, its calls cached (across runs when the judge is
pinned by ``revision``, else within the run and its resume), bounded per endpoint together with
every other caller of that server, retried under the run's deadlines and written to
``calls/judge.jsonl``. Re-asks are the shared loop (``judges.model_judge.ask_until_parsed``).
Judge requests are sent at temperature 0 (the ``openai:`` adapter drops it for o-series models,
which accept only their default).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from evalkit.judges.base import share
from evalkit.judges.model_judge import DEFAULT_JUDGE_MAX_TOKENS, ModelJudge, ModelJudgeOptions, Parsed
from evalkit.records import ModelOutput, Sample, Score
from evalkit.registry import register_judge
from evalkit.tasks.prompts import render_prompt

#: the judge the Audio MultiChallenge authors use (dataset card: "Model: openai/o4-mini")
DEFAULT_JUDGE_MODEL = "openai:o4-mini"
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)

#: the follow-up after an unreadable reply (fixed text: a re-ask varies nothing at random)
REASK = (
    "Your reply could not be read: {error}. Return just the json object, with the fields "
    '"explanation" (a string) and "criteria_met" (true or false), in markdown format. '
    "Do not include any other text in the response."
)


class RubricParseError(ValueError):
    """The judge's reply is not the ``{explanation, criteria_met}`` object the prompt asked for."""


@dataclass(frozen=True)
class RubricVerdict:
    criteria_met: bool
    explanation: str


def _strip_fences(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text.strip()


def load_json_object(text: str | None, error: type[ValueError]) -> dict[str, Any]:
    """The one JSON object a judge model was asked for, bare or in a Markdown code fence; any other
    shape raises ``error`` with what is wrong (shared by every judge that asks a model for JSON)."""
    if not text or not text.strip():
        raise error("the reply is empty")
    try:
        data = json.loads(_strip_fences(text))
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise error(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_rubric_verdict(text: str | None) -> RubricVerdict:
    """The judge's reply to one rubric item. Accepts exactly one JSON object, bare or in a Markdown
    code fence (```json or ```), with ``criteria_met`` a JSON boolean (not "yes", not 1) and
    ``explanation`` a string; other keys are ignored. Raises ``RubricParseError`` naming the problem."""
    data = load_json_object(text, RubricParseError)
    met = data.get("criteria_met")
    if not isinstance(met, bool):
        raise RubricParseError(f"'criteria_met' must be true or false, got {met!r}")
    explanation = data.get("explanation")
    if not isinstance(explanation, str):
        raise RubricParseError(f"'explanation' must be a string, got {explanation!r}")
    return RubricVerdict(criteria_met=met, explanation=explanation)


class RubricOptions(ModelJudgeOptions):
    """A rubric judge's settings: which assistant texts the history shows, and the prompt."""

    context: Literal["reference", "model"]
    template: str


class RubricJudge(ModelJudge):
    """Rubric grading by a judge model, one call per rubric item (reusable: a task picks the
    template, model and retries).

    ``sample.reference["rubrics"]`` is the list of items (strings). The template gets
    ``conversation_history`` (see ``conversation_history``) and ``rubric_item``. ``context`` says
    which assistant texts the history shows before the graded reply: ``reference`` (the dataset's,
    as a fixed-context run sends them) or ``model`` (the model's own earlier replies, as a
    closed-loop run sends them). ``revision`` pins the judge model (``ModelJudge``).
    """

    name = "rubric"
    template = "amc_judge.j2"
    metrics = (
        share("apr", "average pass rate: 1 when every rubric item is met, else 0"),
        share("ars", "average rubric score: share of the rubric items met"),
    )
    Options = RubricOptions
    #: an item whose judge reply stays unreadable: True counts it as not met (the evaluation
    #: guide's rule), False leaves it out of the conversation's APR/ARS
    unreadable_not_met: bool = True

    def __init__(
        self,
        model_spec: str = DEFAULT_JUDGE_MODEL,
        retries: int = 3,
        context: Literal["reference", "model"] = "reference",
        template: str | None = None,
        max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
        revision: str | None = None,
    ):
        if context not in ("reference", "model"):
            raise ValueError(f"context must be 'reference' or 'model', got {context!r}")
        super().__init__(model_spec, retries=retries, max_tokens=max_tokens, revision=revision)
        self.context = context
        if template is not None:
            self.template = template

    # -- prompt -----------------------------------------------------------------------------------
    def transcript(self, sample: Sample, outputs: list[ModelOutput]) -> list[dict[str, str]]:
        """The conversation before the graded reply as the judge reads it: what each user turn says
        (its transcript, else its text) and each assistant turn's text."""
        turns: list[dict[str, str]] = []
        user_seen = 0
        for i, turn in enumerate(sample.conversation):
            if turn.role == "system":
                continue
            if turn.role == "user":
                said = turn.transcript or turn.text
                if not said:
                    raise ValueError(f"sample {sample.id!r} turn {i}: user turn without transcript or text")
                turns.append({"role": "user", "text": said})
                user_seen += 1
                if self.context == "model" and user_seen < len(outputs):
                    turns.append({"role": "assistant", "text": outputs[user_seen - 1].text or ""})
            elif self.context == "reference":
                turns.append({"role": "assistant", "text": turn.text or ""})
        return turns

    def conversation_history(self, sample: Sample, outputs: list[ModelOutput]) -> str:
        """The card's ``build_grading_conversation_history``: ``User: ...`` / ``Assistant: ...``
        blocks joined by blank lines, empty texts left out, the graded reply last (always shown)."""
        parts = [
            f"{'User' if t['role'] == 'user' else 'Assistant'}: {t['text'].strip()}"
            for t in self.transcript(sample, outputs)
            if t["text"].strip()
        ]
        parts.append(f"Assistant: {(outputs[-1].text or '').strip()}")
        return "\n\n".join(parts)

    def render(self, sample: Sample, outputs: list[ModelOutput], rubric_item: str) -> str:
        """The judge prompt for one rubric item."""
        return render_prompt(
            self.template,
            conversation_history=self.conversation_history(sample, outputs),
            rubric_item=rubric_item,
        )

    # -- calls --------------------------------------------------------------------------------------
    async def _grade_item(self, sample: Sample, prompt: str) -> Parsed[RubricVerdict]:
        """One rubric item: ask, and re-ask after an unreadable reply up to ``retries`` times."""
        return await self.ask_until_parsed(sample, prompt, parse_rubric_verdict, RubricParseError, REASK)

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        rubrics = [str(r) for r in sample.reference.get("rubrics") or []]
        if not rubrics:
            return self._error(f"sample {sample.id!r} has no rubrics", attempts=0)
        try:
            prompts = [self.render(sample, outputs, item) for item in rubrics]
        except ValueError as exc:
            return self._error(str(exc), attempts=0)
        # every item at once: the service's endpoint bound, not this judge, limits what is in flight
        results = await asyncio.gather(*(self._grade_item(sample, p) for p in prompts))
        for i, result in enumerate(results, start=1):
            if result.error is not None:
                message = f"rubric {i} of {len(rubrics)}: {self.call_error(result.error)}"
                return self._error(message, attempts=result.attempts)
        if not self.unreadable_not_met and all(r.unreadable for r in results):
            return self._error(
                f"all {len(rubrics)} rubric judge replies unreadable after the re-asks: "
                f"{results[-1].problems[-1]}",
                attempts=max(r.attempts for r in results),
            )
        return self._score(rubrics, results)

    # -- results ------------------------------------------------------------------------------------
    def _item_met(self, result: Parsed[RubricVerdict]) -> bool | None:
        """One item's verdict: met or not, or None when it is left out (unreadable, excluded)."""
        if result.value is not None:
            return result.value.criteria_met
        return False if self.unreadable_not_met else None

    def _score(self, rubrics: list[str], results: list[Parsed[RubricVerdict]]) -> Score:
        verdicts = [self._item_met(r) for r in results]
        counted = [v for v in verdicts if v is not None]
        met = sum(counted)
        all_met = met == len(counted)
        n_unreadable = sum(r.unreadable for r in results)
        details: dict[str, Any] = {
            "rubrics": [
                {
                    "rubric": rubric,
                    "criteria_met": verdict,
                    "explanation": r.value.explanation if r.value is not None else None,
                    "attempts": r.attempts,
                    "unreadable": r.unreadable,
                }
                for rubric, r, verdict in zip(rubrics, results, verdicts, strict=True)
            ],
            "n_judge_unreadable": n_unreadable,
            "judge_model": self.model_spec,
            "judge_calls": sum(len(r.cached) for r in results),
            "judge_attempts": max(r.attempts for r in results),
            "judge_cached": all(all(r.cached) for r in results),
        }
        problems = [f"rubric {i}: {p}" for i, r in enumerate(results, start=1) for p in r.problems]
        if problems:
            details["judge_parse_errors"] = problems
        explanation = f"{met}/{len(counted)} rubrics met"
        if n_unreadable:
            treated = "counted as not met" if self.unreadable_not_met else "left out"
            explanation += f" ({n_unreadable} judge replies unreadable after the re-asks: {treated})"
        return Score(
            judge=self.name,
            metrics={"apr": 1.0 if all_met else 0.0, "ars": met / len(counted)},
            passed=all_met,
            explanation=explanation,
            details=details,
        )


@register_judge("amc-rubric")
class AMCRubricJudge(RubricJudge):
    """Audio MultiChallenge rubrics graded by a judge model (o4-mini by default), one call per
    rubric item with the dataset card's prompt: APR and ARS."""

    name = "amc-rubric"
    template = "amc_judge.j2"


@register_judge("amc-rubric-exclude")
class AMCRubricExcludeJudge(AMCRubricJudge):
    """Audio MultiChallenge rubrics, but an item whose judge reply stays unreadable after the
    re-asks is left out of its conversation's APR/ARS instead of counting as not met."""

    name = "amc-rubric-exclude"
    unreadable_not_met = False
