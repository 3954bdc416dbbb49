"""Rubric judges: a judge model reads the conversation, the model's final reply and a list of rubric
criteria, and says for each criterion whether the reply meets it (with a short explanation).

Why a strict parser with re-asks: a rubric score is only as good as the mapping from the judge's
words to verdicts. The judge must return exactly one ``{explanation, criteria_met}`` object per
rubric, in order, with a JSON boolean verdict; anything else is re-asked (the parse error appended
to the conversation, nothing random varied) up to ``retries`` times and then recorded as a judge
error: never guessed, never scored as a zero.

Every judge call goes through the model adapter (``load_model``) with the runner's retry policy for
transient failures, and is cached in the shared ``ResponseCache`` under
``request_key(judge spec, request)``, so a rerun of a finished evaluation repeats no judge call.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evalkit.cache import ResponseCache, request_key
from evalkit.judges.base import Judge
from evalkit.models.base import ModelAdapter, load_model
from evalkit.paths import response_cache_path
from evalkit.records import (
    ChatRequest,
    ErrorInfo,
    GenerationParams,
    Message,
    ModelOutput,
    Sample,
    Score,
    TextPart,
)
from evalkit.registry import register_judge
from evalkit.retry import RetryPolicy, call_with_retries
from evalkit.tasks.prompts import render_prompt

#: the judge the Audio MultiChallenge authors use
DEFAULT_JUDGE_MODEL = "openai:o4-mini"
#: a reasoning judge spends most of its budget thinking; a short budget truncates the JSON
DEFAULT_JUDGE_MAX_TOKENS = 8192
#: keys under which a judge may wrap its list of verdicts in an object
_LIST_KEYS = ("results", "rubrics", "verdicts", "evaluations")
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)

REASK = (
    "Your reply could not be read: {error}. Reply again with only a JSON array of exactly {n} objects, "
    'one per rubric in order, each {{"explanation": string, "criteria_met": true or false}}, '
    "and nothing else."
)


class RubricParseError(ValueError):
    """The judge's reply is not the JSON verdict list the prompt asked for."""


@dataclass(frozen=True)
class RubricVerdict:
    criteria_met: bool
    explanation: str


def _strip_fences(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1).strip() if match else text.strip()


def parse_rubric_verdicts(text: str | None, n_rubrics: int) -> list[RubricVerdict]:
    """The judge reply as one verdict per rubric, in order. Accepts a JSON array, or an object
    wrapping it under one of ``results``/``rubrics``/``verdicts``/``evaluations``, optionally in a
    Markdown code fence. ``criteria_met`` must be a JSON boolean (not "yes", not 1) and
    ``explanation`` a string; an ``index``/``rubric_index`` field, when present, must match the
    position (1-based). Raises ``RubricParseError`` naming the first problem."""
    if not text or not text.strip():
        raise RubricParseError("the reply is empty")
    body = _strip_fences(text)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise RubricParseError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if isinstance(data, dict):
        keys = [k for k in _LIST_KEYS if k in data]
        if len(keys) != 1 or not isinstance(data[keys[0]], list):
            raise RubricParseError(
                f"expected a JSON array (or an object with one of {', '.join(_LIST_KEYS)} holding it)"
            )
        data = data[keys[0]]
    if not isinstance(data, list):
        raise RubricParseError(f"expected a JSON array, got {type(data).__name__}")
    if len(data) != n_rubrics:
        raise RubricParseError(f"expected {n_rubrics} verdicts (one per rubric), got {len(data)}")
    verdicts = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise RubricParseError(f"verdict {i} is not an object")
        met = item.get("criteria_met")
        if not isinstance(met, bool):
            raise RubricParseError(f"verdict {i}: 'criteria_met' must be true or false, got {met!r}")
        explanation = item.get("explanation")
        if not isinstance(explanation, str):
            raise RubricParseError(f"verdict {i}: 'explanation' must be a string, got {explanation!r}")
        for key in ("rubric_index", "index"):
            if key in item and item[key] != i:
                raise RubricParseError(f"verdict {i}: '{key}' is {item[key]!r}, expected {i}")
        verdicts.append(RubricVerdict(criteria_met=met, explanation=explanation))
    return verdicts


class RubricJudge(Judge):
    """Rubric grading by a judge model (reusable: a task picks the template, model and retries).

    ``sample.reference["rubrics"]`` is the list of criteria (strings). The prompt template gets
    ``transcript`` (a list of ``{role, text}``: user transcripts and assistant texts before the
    final reply), ``response`` (the final reply) and ``rubrics``. ``context`` says which assistant
    texts the transcript shows: ``reference`` (the dataset's, as a fixed-context run sends them)
    or ``model`` (the model's own earlier replies, as a closed-loop run sends them).
    """

    name = "rubric"
    template = "amc_judge.j2"

    def __init__(
        self,
        model_spec: str = DEFAULT_JUDGE_MODEL,
        retries: int = 3,
        context: Literal["reference", "model"] = "reference",
        template: str | None = None,
        max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
        cache_path: Path | None = None,
        use_cache: bool = True,
        retry_policy: RetryPolicy | None = None,
    ):
        if retries < 0:
            raise ValueError(f"judge retries must be >= 0, got {retries}")
        if context not in ("reference", "model"):
            raise ValueError(f"context must be 'reference' or 'model', got {context!r}")
        # Resolved now (no network) so a bad spec fails before the run, and for the canonical spec.
        self.model_spec = load_model(model_spec).spec
        self._raw_spec = model_spec
        self.retries = retries
        self.context = context
        if template is not None:
            self.template = template
        self.params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
        self.cache_path = cache_path
        self.use_cache = use_cache
        self.retry_policy = retry_policy or RetryPolicy()
        self._cache: ResponseCache | None = None

    # -- prompt -----------------------------------------------------------------------------------
    def transcript(self, sample: Sample, outputs: list[ModelOutput]) -> list[dict[str, str]]:
        """The conversation before the final reply as the judge reads it: what each user turn says
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

    def render(self, sample: Sample, outputs: list[ModelOutput]) -> str:
        return render_prompt(
            self.template,
            transcript=self.transcript(sample, outputs),
            response=outputs[-1].text or "",
            rubrics=list(sample.reference["rubrics"]),
        )

    # -- calls --------------------------------------------------------------------------------------
    @property
    def cache(self) -> ResponseCache | None:
        if self.use_cache and self._cache is None:
            self._cache = ResponseCache(self.cache_path or response_cache_path())
        return self._cache

    async def _call(self, adapter: ModelAdapter, request: ChatRequest) -> tuple[ModelOutput, bool]:
        """One judge request: from the cache, else from the model (transient failures retried)."""
        key = request_key(adapter.spec, request)
        cache = self.cache
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit, True
        output = await call_with_retries(lambda: adapter.generate(request), self.retry_policy)
        if cache is not None:
            cache.put(key, adapter.spec, output)
            cache.flush()  # the runner never closes judges: a judge verdict must not wait in memory
        return output, False

    async def ascore(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        rubrics = list(sample.reference.get("rubrics") or [])
        if not rubrics:
            return self._error(f"sample {sample.id!r} has no rubrics", attempts=0)
        prompt = self.render(sample, outputs)
        messages = [Message(role="user", content=[TextPart(text=prompt)])]
        # One adapter per sample, closed here: the runner does not close judges, and an adapter's
        # HTTP client must not outlive the event loop or be closed under a concurrent sample.
        adapter = load_model(self._raw_spec)
        problems: list[str] = []
        cached_all = True
        try:
            for attempt in range(1, self.retries + 2):
                request = ChatRequest(messages=messages, params=self.params)
                output, cached = await self._call(adapter, request)
                cached_all = cached_all and cached
                if not output.ok:
                    assert output.error is not None
                    return self._error(
                        f"judge model {self.model_spec}: [{output.error.kind}] {output.error.message}",
                        attempts=attempt,
                    )
                try:
                    verdicts = parse_rubric_verdicts(output.text, len(rubrics))
                except RubricParseError as exc:
                    problems.append(str(exc))
                    reask = REASK.format(error=exc, n=len(rubrics))
                    messages = [
                        *messages,
                        Message(role="assistant", content=[TextPart(text=output.text or "")]),
                        Message(role="user", content=[TextPart(text=reask)]),
                    ]
                    continue
                return self._score(rubrics, verdicts, attempt, problems, cached_all)
        finally:
            await adapter.aclose()
        return self._error(
            f"judge reply unreadable after {self.retries + 1} attempts: {problems[-1]}",
            attempts=self.retries + 1,
        )

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """Synchronous entry for scripts outside an event loop (the runner awaits ``ascore``)."""
        return asyncio.run(self.ascore(sample, outputs))

    # -- results ------------------------------------------------------------------------------------
    def _error(self, message: str, attempts: int) -> Score:
        return Score(judge=self.name, error=ErrorInfo(kind="judge_error", message=message, attempts=attempts))

    def _score(
        self,
        rubrics: list[str],
        verdicts: list[RubricVerdict],
        attempts: int,
        problems: list[str],
        cached: bool,
    ) -> Score:
        met = sum(v.criteria_met for v in verdicts)
        all_met = met == len(rubrics)
        details: dict[str, Any] = {
            "rubrics": [
                {"rubric": r, "criteria_met": v.criteria_met, "explanation": v.explanation}
                for r, v in zip(rubrics, verdicts, strict=True)
            ],
            "judge_model": self.model_spec,
            "judge_attempts": attempts,
            "judge_cached": cached,
        }
        if problems:
            details["judge_parse_errors"] = problems
        return Score(
            judge=self.name,
            metrics={"apr": 1.0 if all_met else 0.0, "ars": met / len(rubrics)},
            passed=all_met,
            explanation=f"{met}/{len(rubrics)} rubrics met",
            details=details,
        )


@register_judge("amc-rubric")
class AMCRubricJudge(RubricJudge):
    """Audio MultiChallenge rubrics graded by a judge model (o4-mini by default): APR and ARS."""

    name = "amc-rubric"
    template = "amc_judge.j2"
