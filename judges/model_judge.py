"""Judges that ask a model: the judge model as a role of the run's model service, and the one
re-ask loop for judges whose replies must parse.

The judge model is resolved once per run, not per sample: the runner calls ``bind(service)`` on
every judge before the first sample, and ``bind`` resolves the judge's spec in role ``judge``
(``evalkit.service``). Its calls then share the run's response cache (pinned by ``revision``, else
within this run only), its endpoint's concurrency bound (with the model under test when both are
served by one server), retries and deadlines, usage accounting and the run directory's
``calls/judge.jsonl``. A judge used outside a run (a script, a test) binds itself on first use
to ``ModelService.standalone()``, or to a service the caller binds it to.

Why one re-ask loop (``ask_until_parsed``): a judge's score is only as good as the mapping from
its words to a verdict, so a reply that does not parse is asked again with the parse error
appended (fixed text, nothing random varied), up to ``retries`` times. Every such judge (rubric,
emotion-llm, the conversation judges to come) gets the same loop and reports the same things:
attempts, which calls were cached, the parse problems, and whether the reply stayed unreadable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from evalkit.errors import EvalkitError
from evalkit.judges.base import Judge, JudgeOptions
from evalkit.models.base import load_model
from evalkit.records import (
    ChatRequest,
    ContentPart,
    ErrorInfo,
    GenerationParams,
    Message,
    ModelOutput,
    Sample,
    Score,
    TextPart,
)
from evalkit.service import CallResult, ModelService, RoleModel

T = TypeVar("T")

#: a reasoning judge spends most of its budget thinking; a short budget truncates the JSON
DEFAULT_JUDGE_MAX_TOKENS = 8192


@dataclass
class Parsed(Generic[T]):
    """What asking until the reply parses gave. Exactly one of: ``value`` (a reply parsed),
    ``error`` (a call failed: transport, server; no verdict at all), or neither: ``unreadable``
    (the judge answered every time, never readably, after all the re-asks)."""

    value: T | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    #: per call made, whether the cache answered it
    cached: list[bool] = field(default_factory=list)
    #: why each unreadable reply could not be read
    problems: list[str] = field(default_factory=list)

    @property
    def unreadable(self) -> bool:
        return self.value is None and self.error is None


def score_and_justification(data: dict, error: type[ValueError], where: str = "") -> tuple[int, str]:
    """The ``score`` (a JSON integer 1..5: not "4", not 4.5, not true) and ``justification`` (a
    string) of a judge's JSON verdict; anything else raises ``error``, prefixed with ``where``."""
    prefix = f"{where}: " if where else ""
    score = data.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise error(f"{prefix}'score' must be an integer from 1 to 5, got {score!r}")
    justification = data.get("justification")
    if not isinstance(justification, str):
        raise error(f"{prefix}'justification' must be a string, got {justification!r}")
    return score, justification


def _text_message(role: str, text: str) -> Message:
    return Message(role=role, content=[TextPart(text=text)])  # type: ignore[arg-type]


async def ask_until_parsed(
    ask: Callable[[list[Message]], Awaitable[CallResult]],
    prompt: str | list[ContentPart],
    parse: Callable[[str | None], T],
    parse_error: type[ValueError],
    reask: str,
    retries: int,
) -> Parsed[T]:
    """Send ``prompt`` (one user message: text, or text and audio parts for a judge that listens)
    through ``ask``; while the reply does not ``parse`` (raises ``parse_error``), append the reply
    and ``reask.format(error=...)`` and ask again, at most ``retries`` times. A failed call ends
    the loop with its error."""
    result: Parsed[T] = Parsed()
    content = [TextPart(text=prompt)] if isinstance(prompt, str) else list(prompt)
    messages = [Message(role="user", content=content)]
    for attempt in range(1, retries + 2):
        result.attempts = attempt
        call = await ask(messages)
        result.cached.append(call.cached)
        if not call.output.ok:
            result.error = call.output.error
            return result
        try:
            result.value = parse(call.output.text)
            return result
        except parse_error as exc:
            result.problems.append(str(exc))
            messages = [
                *messages,
                _text_message("assistant", call.output.text or ""),
                _text_message("user", reask.format(error=exc)),
            ]
    return result


class ModelJudgeOptions(JudgeOptions):
    """A model judge's settings as the manifest records them (the canonical judge model spec)."""

    judge_model: str
    revision: str | None = None
    retries: int
    max_tokens: int | None


class ModelJudge(Judge):
    """Base of judges that ask a judge model (role ``judge`` of the run's ``ModelService``).

    ``model_spec`` names the model (checked now, no network); ``revision`` pins it, so its cached
    answers serve other runs (as ``--model-revision`` does for the model under test); ``retries``
    is how many re-asks an unreadable reply gets; requests go at temperature 0."""

    #: the environment variable that names the judge model when none is given (None: it must be given)
    model_env: ClassVar[str | None] = None
    #: what kind of judge model the judge needs, for the error when none is named
    model_hint: ClassVar[str] = "a judge model: e.g. openai:gpt-4o or openai:MODEL@http://127.0.0.1:8000/v1"

    @classmethod
    def model_from_env(cls, model_spec: str | None) -> str:
        """``model_spec``, else the spec in ``model_env`` (a default only: the effective spec is
        what the manifest records); neither is a one-line error naming the variable."""
        if model_spec:
            return model_spec
        from_env = os.environ.get(cls.model_env, "").strip() if cls.model_env else ""
        if not from_env:
            where = f"set {cls.model_env} to a model spec" if cls.model_env else "give judge_model="
            raise EvalkitError(f"the {cls.name} judge needs {cls.model_hint}; {where}")
        return from_env

    def __init__(
        self,
        model_spec: str,
        retries: int = 3,
        max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
        revision: str | None = None,
    ):
        if retries < 0:
            raise ValueError(f"judge retries must be >= 0, got {retries}")
        #: the canonical spec (what the manifest and each score's details name)
        self.model_spec = load_model(model_spec).spec
        self._raw_spec = model_spec
        self.revision = revision or None
        self.retries = retries
        self.params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
        self._service: ModelService | None = None
        self._model: RoleModel | None = None

    Options: type[ModelJudgeOptions] = ModelJudgeOptions

    @property
    def options(self) -> ModelJudgeOptions:  # type: ignore[override]
        """The effective settings; a subclass's extra fields are read from its attributes."""
        values = {
            "judge_model": self.model_spec,
            "revision": self.revision,
            "retries": self.retries,
            "max_tokens": self.params.max_tokens,
        }
        extra = {key: getattr(self, key) for key in self.Options.model_fields if key not in values}
        return self.Options(**values, **extra)

    def bind(self, service: ModelService) -> None:
        """Resolve the judge model in ``service`` (once per run; the runner calls this)."""
        self._service = service
        self._model = service.resolve("judge", self._raw_spec, revision=self.revision)

    def _bound(self) -> tuple[ModelService, RoleModel]:
        """The service and judge model, binding to a standalone service outside a run."""
        if self._service is None or self._model is None:
            self.bind(ModelService.standalone())
        assert self._service is not None and self._model is not None
        return self._service, self._model

    async def ask(self, sample: Sample, messages: list[Message]) -> CallResult:
        """One judge request about ``sample`` through the service (cached, bounded, recorded)."""
        service, model = self._bound()
        request = ChatRequest(messages=messages, params=self.params)
        return await service.call(model, request, task=sample.task, sample_id=sample.id, caller=self.name)

    async def ask_until_parsed(
        self,
        sample: Sample,
        prompt: str | list[ContentPart],
        parse: Callable[[str | None], T],
        parse_error: type[ValueError],
        reask: str,
    ) -> Parsed[T]:
        """``ask_until_parsed`` with this judge's model and ``retries``."""
        return await ask_until_parsed(
            lambda messages: self.ask(sample, messages), prompt, parse, parse_error, reask, self.retries
        )

    async def ask_each_until_parsed(
        self,
        sample: Sample,
        prompts: list[str | list[ContentPart]],
        parse: Callable[[str | None], T],
        parse_error: type[ValueError],
        reask: str,
        label: str,
    ) -> tuple[list[Parsed[T]], int, Score | None]:
        """Every prompt asked concurrently (the orders or passes of an order-bias control), each
        until it parses: ``(results, attempts, None)``, or the judge error of the first prompt
        that failed or stayed unreadable (``label`` names it: "order 2", "pass 1")."""
        results = await asyncio.gather(
            *(self.ask_until_parsed(sample, p, parse, parse_error, reask) for p in prompts)
        )
        attempts = max((r.attempts for r in results), default=0)
        for i, result in enumerate(results, start=1):
            if result.error is not None:
                return (
                    results,
                    attempts,
                    self._error(f"{label} {i}: {self.call_error(result.error)}", result.attempts),
                )
            if result.value is None:
                return (
                    results,
                    attempts,
                    self._error(
                        f"{label} {i}: judge reply unreadable after {result.attempts} attempts: "
                        f"{result.problems[-1]}",
                        result.attempts,
                    ),
                )
        return results, attempts, None

    def call_error(self, error: ErrorInfo) -> str:
        """How a failed judge call reads in the score's error message."""
        return f"judge model {self.model_spec}: [{error.kind}] {error.message}"

    def _error(self, message: str, attempts: int) -> Score:
        return Score(judge=self.name, error=ErrorInfo(kind="judge_error", message=message, attempts=attempts))

    def score(self, sample: Sample, outputs: list[ModelOutput]) -> Score:
        """Synchronous entry for scripts outside an event loop (the runner awaits ``ascore``): one
        event loop per call, the judge model's clients released at its end."""

        async def once() -> Score:
            service, _ = self._bound()
            try:
                return await self.ascore(sample, outputs)
            finally:
                await service.aclose()

        return asyncio.run(once())

    def __getstate__(self) -> dict:
        """Pickled without its binding (a process-pool worker binds its own, standalone)."""
        return {**self.__dict__, "_service": None, "_model": None}
