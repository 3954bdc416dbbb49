"""One path for every model call of a run: the model under test (role ``target``), judge models
(``judge``), and the user simulator, speech synthesis and remote ASR to come (``user``, ``tts``,
``asr``).

Why one path: what a call costs and how it may fail do not depend on who makes it. A judge's
request to a server must wait for the same slot as the model under test's request to that server,
be cached under the same identity rules, retried under the same deadlines, counted in the same
usage and recorded as data when it fails. Judges that built their own adapter and cache per sample
got none of that (issue 13).

Resolution, once per run: ``register(role, adapter)`` takes an adapter already built (the runner's
model under test); ``resolve(role, spec, revision=...)`` builds one from a spec a judge option
names. One ``(role, spec, revision)`` is one ``RoleModel`` for the whole run, however many judges
and samples ask for it; the service closes the adapters it built (``aclose``).

One call (``call``):

1. the request hash: ``evalkit.cache.request_key`` of the adapter's cache identity and the request;
2. the response cache, under the model's scope (``evalkit.cache.cache_scope``): a model pinned by
   its adapter (``pinned_revision``) or by the revision given for its role (``--model-revision``
   for the target, ``judge_revision=`` for a judge) shares entries across runs; an unpinned one
   only within the run that made them (its ``--resume``);
3. on a miss, one slot of its endpoint's semaphore (``ModelAdapter.endpoint``: a server's base
   URL; every role calling one server shares its bound, the smallest bound any of them asks for:
   the run's concurrency, an adapter's ``max_concurrency``), and retries with backoff under the
   whole-attempt deadline (``--timeout``, else the adapter's) and the request budget
   (``--request-budget``), ``evalkit.retry``;
4. secrets scrubbed (the values of every model's ``secret_env`` and the run's API key variable)
   before the answer is cached, returned or written;
5. usage counted per role (requests, cache hits, retries, errors, tokens): ``usage()``;
6. the call written to the run directory by role: ``calls/<role>.jsonl``, one ``CallRecord`` per
   call (request hash, task, sample id, caller, model, cached, the output or its error), for every
   role but ``target``, whose calls the turn loop writes to responses.jsonl beside the turn they
   answer. Lines are in arrival order (calls run concurrently).

Outside a run (a judge scored by a script or a test) ``ModelService.standalone()`` is the same
path with no run directory and no cache unless one is given.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evalkit.cache import ResponseCache, cache_scope, request_key, scoped_key
from evalkit.manifest import redact_urls, scrub_output, secret_values
from evalkit.models.base import ModelAdapter, load_model
from evalkit.records import CallRecord, ChatRequest, ErrorInfo, ModelOutput
from evalkit.retry import RetryPolicy, call_with_retries
from evalkit.store import JsonlAppender

#: the roles a model can be called in; ``target`` is the model under test
ROLES = ("target", "judge", "user", "tts", "asr")
#: the folder of a run directory holding ``<role>.jsonl`` call logs (every role but target)
CALLS_DIR = "calls"


@dataclass(frozen=True)
class ServiceSettings:
    """What bounds and retries every call of a run (``RunConfig``'s fields of the same names)."""

    concurrency: int = 8
    max_attempts: int = 5
    #: whole-attempt deadline (s); None: each adapter's own (``request_timeout``)
    timeout: float | None = None
    #: seconds one request may take across its retries (None: no budget)
    request_budget: float | None = None

    @classmethod
    def of(cls, config: Any) -> ServiceSettings:
        """The settings of a run config (any object with these attribute names)."""
        return cls(
            concurrency=config.concurrency,
            max_attempts=config.max_attempts,
            timeout=config.timeout,
            request_budget=config.request_budget,
        )


@dataclass(frozen=True)
class CallResult:
    """One call's answer (or error, ``output.error``), its request hash, and where it came from:
    ``cached_from`` is the run whose cache entry served it, None when it was asked now."""

    output: ModelOutput
    request_hash: str
    cached_from: str | None = None

    @property
    def cached(self) -> bool:
        return self.cached_from is not None


@dataclass
class RoleUsage:
    """What one role's calls cost in a session: fresh requests (each counted once, however many
    retries it took), cache hits, retries, failed calls and the tokens of fresh answers."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add_output(self, output: ModelOutput) -> None:
        if not output.ok:
            self.errors += 1
        self.prompt_tokens += output.usage.prompt_tokens or 0
        self.completion_tokens += output.usage.completion_tokens or 0


class Endpoint:
    """One server (or in-process model) and the one bound every caller of it shares. The bound is
    the smallest any registered model asks for; it is fixed when the first call takes a slot (a run
    resolves all its roles before its first call)."""

    def __init__(self, key: str, limit: int):
        self.key = key
        self.limit = max(1, limit)
        self.in_flight = 0
        self.max_in_flight = 0
        self._slots: asyncio.Semaphore | None = None

    def tighten(self, limit: int) -> None:
        self.limit = min(self.limit, max(1, limit))

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        return self._slots

    def describe(self) -> dict[str, int]:
        return {"limit": self.limit, "max_in_flight": self.max_in_flight}


@dataclass
class RoleModel:
    """A model resolved for a role: its adapter, cache scope, retry policy and endpoint."""

    role: str
    adapter: ModelAdapter
    scope: str
    retry: RetryPolicy
    endpoint: Endpoint
    #: built by the service from a spec (so closed by it), not handed in by the caller
    owned: bool = False
    revision: str | None = None

    @property
    def spec(self) -> str:
        return self.adapter.spec

    def request_hash(self, request: ChatRequest) -> str:
        """The request's cache hash for this model (raises ``AudioError`` on unreadable audio)."""
        return request_key(self.adapter.cache_identity, request)

    def describe(self) -> dict[str, Any]:
        """What the manifest records (settings only: the same in two runs of one setup)."""
        return {"spec": self.spec, "pinned": self.revision or self.adapter.pinned_revision}


@dataclass
class ModelService:
    """The run's one path to every model (see the module docstring)."""

    settings: ServiceSettings = field(default_factory=ServiceSettings)
    cache: ResponseCache | None = None
    #: the run whose cache scope unpinned models use; None: a one-off id (``standalone``)
    run_id: str | None = None
    #: what makes that scope the run's own (the manifest's ``run_uid``); None: ``run_id``. A run's
    #: name is unique only in its folder: two runs of one config started in the same second in
    #: two folders share it, and must not share answers an unpinned model gave
    run_scope: str | None = None
    #: the run directory the call logs go to; None: calls are not written (outside a run)
    run_dir: Path | None = None
    #: environment variables whose values are scrubbed besides the models' own ``secret_env``
    secret_env: tuple[str, ...] = ("OPENAI_API_KEY",)
    #: the run was created by this session (not resumed): its own scope holds no cache entry yet
    new_run: bool = False

    def __post_init__(self) -> None:
        if self.run_id is None:
            self.run_id = f"standalone-{uuid.uuid4().hex[:12]}"
        if self.run_scope is None:
            self.run_scope = self.run_id
        self._models: dict[tuple[str, str, str | None], RoleModel] = {}
        #: (role, spec as named, revision) -> the model ``resolve`` built for it
        self._resolved: dict[tuple[str, str, str | None], RoleModel] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._usage: dict[str, RoleUsage] = {}
        self._logs: dict[str, JsonlAppender] = {}
        self._secret_env: list[str] = list(self.secret_env)
        self._secrets: list[str] = secret_values(self._secret_env)

    @classmethod
    def standalone(cls, cache: ResponseCache | None = None, **settings: Any) -> ModelService:
        """A service for use outside a run: no run directory, this process's own cache scope."""
        return cls(settings=ServiceSettings(**settings), cache=cache)

    # -- resolution ---------------------------------------------------------------------------------
    def register(
        self, role: str, adapter: ModelAdapter, revision: str | None = None, owned: bool = False
    ) -> RoleModel:
        """Make ``adapter`` callable in ``role`` (``revision``: the user's pin, e.g.
        ``--model-revision``; the adapter's own ``pinned_revision`` otherwise)."""
        if role not in ROLES:
            raise ValueError(f"unknown model role {role!r}; known: {', '.join(ROLES)}")
        key = (role, adapter.spec, revision)
        if key in self._models:
            return self._models[key]
        limit = self.settings.concurrency
        if adapter.max_concurrency is not None:
            limit = min(limit, adapter.max_concurrency)
        endpoint = self._endpoints.get(adapter.endpoint)
        if endpoint is None:
            endpoint = self._endpoints[adapter.endpoint] = Endpoint(adapter.endpoint, limit)
        else:
            endpoint.tighten(limit)
        timeout = self.settings.timeout if self.settings.timeout is not None else adapter.request_timeout
        model = RoleModel(
            role=role,
            adapter=adapter,
            scope=cache_scope(revision or adapter.pinned_revision, str(self.run_scope)),
            retry=RetryPolicy(
                max_attempts=self.settings.max_attempts,
                attempt_timeout=timeout,
                budget=self.settings.request_budget,
            ),
            endpoint=endpoint,
            owned=owned,
            revision=revision,
        )
        self._models[key] = model
        self._add_secrets(adapter.secret_env)
        if self.cache is not None and self.new_run and model.scope == cache_scope(None, str(self.run_scope)):
            self.cache.declare_new_scope(model.scope)
        return model

    def resolve(self, role: str, spec: str, revision: str | None = None) -> RoleModel:
        """The model a spec names, in ``role``: built on first ask (no network), then the same
        one for every later ask in this service's life."""
        key = (role, spec, revision)
        if key not in self._resolved:
            self._resolved[key] = self.register(role, load_model(spec), revision=revision, owned=True)
        return self._resolved[key]

    def _add_secrets(self, env_names: tuple[str, ...]) -> None:
        new = [name for name in env_names if name not in self._secret_env]
        if new:
            self._secret_env += new
            self._secrets = secret_values(self._secret_env)

    # -- calls --------------------------------------------------------------------------------------
    async def call(
        self,
        model: RoleModel,
        request: ChatRequest,
        *,
        task: str | None = None,
        sample_id: str | None = None,
        caller: str | None = None,
        request_hash: str | None = None,
    ) -> CallResult:
        """One request to ``model``: from the cache, else from the model under its endpoint's
        bound with retries; scrubbed, counted, and recorded by role. ``task``/``sample_id``/
        ``caller`` say what the call was for (the call log's fields)."""
        request_hash = request_hash or model.request_hash(request)
        usage = self._usage.setdefault(model.role, RoleUsage())
        key = scoped_key(request_hash, model.scope)
        result: CallResult | None = None
        if self.cache is not None:
            entry = self.cache.get_entry(key, scope=model.scope)
            if entry is not None:
                usage.cache_hits += 1
                output = scrub_output(entry.output, self._secrets)
                result = CallResult(output, request_hash, entry.run_id or "(unrecorded run)")
        if result is None:
            try:
                output = await self._ask(model, request, usage)
            except Exception as exc:  # an adapter bug: recorded in the call log, then the caller's
                usage.errors += 1
                self._log(model, request_hash, task, sample_id, caller, _internal_output(exc), None)
                raise
            usage.add_output(output)
            if self.cache is not None:
                self.cache.put(key, model.spec, output, run_id=self.run_id, scope=model.scope)
            result = CallResult(output, request_hash)
        self._log(model, request_hash, task, sample_id, caller, result.output, result.cached_from)
        return result

    async def _ask(self, model: RoleModel, request: ChatRequest, usage: RoleUsage) -> ModelOutput:
        """The model's answer under its endpoint's bound, retried; scrubbed of secrets."""

        def count_retry(_exc: Exception, _attempt: int) -> None:
            usage.retries += 1

        endpoint = model.endpoint
        async with endpoint.slots:
            endpoint.in_flight += 1
            endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
            usage.requests += 1
            try:
                output = await call_with_retries(
                    lambda: model.adapter.generate(request), model.retry, count_retry
                )
            finally:
                endpoint.in_flight -= 1
        return scrub_output(output, self._secrets)

    def _log(
        self,
        model: RoleModel,
        request_hash: str,
        task: str | None,
        sample_id: str | None,
        caller: str | None,
        output: ModelOutput,
        cached_from: str | None,
    ) -> None:
        """One line in ``calls/<role>.jsonl`` (target calls are the turn loop's responses.jsonl)."""
        if self.run_dir is None or model.role == "target":
            return
        log = self._logs.get(model.role)
        if log is None:
            folder = self.run_dir / CALLS_DIR
            folder.mkdir(exist_ok=True)
            log = self._logs[model.role] = JsonlAppender(folder / f"{model.role}.jsonl")
        log.append(
            CallRecord(
                role=model.role,
                model=model.spec,
                task=task,
                sample_id=sample_id,
                caller=caller,
                request_hash=request_hash,
                cached=cached_from is not None,
                cached_from=cached_from,
                output=output,
            )
        )

    # -- accounts and lifecycle ---------------------------------------------------------------------
    def usage(self) -> dict[str, dict[str, int]]:
        """Per role, what its calls cost this session (manifest ``last_session.calls``)."""
        return {role: asdict(u) for role, u in self._usage.items()}

    def role_usage(self, role: str) -> RoleUsage:
        return self._usage.setdefault(role, RoleUsage())

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """The models resolved per role, each with its pin (manifest ``model_roles``): a judge
        model is part of what makes two runs comparable (``evalkit.compare``)."""
        roles: dict[str, list[dict[str, Any]]] = {}
        for model in self._models.values():
            roles.setdefault(model.role, []).append(model.describe())
        return roles

    def endpoints(self) -> dict[str, dict[str, int]]:
        """Per endpoint (credentials redacted), its bound and the most calls it had in flight
        (manifest ``last_session.endpoints``: how a session went, not a setting)."""
        return {redact_urls(e.key): e.describe() for e in self._endpoints.values()}

    def close_logs(self) -> None:
        """Flush and close the call logs (a later call opens them again, appending)."""
        logs, self._logs = self._logs, {}
        for log in logs.values():
            log.close()

    async def aclose(self) -> None:
        """Close the call logs, write the cache's pending entries (the cache itself is its
        opener's to close) and release the clients of the adapters this service built (they
        reopen on their next call, so a standalone service stays usable across event loops)."""
        self.close_logs()
        if self.cache is not None:
            self.cache.flush()
        for model in self._models.values():
            if model.owned:
                await model.adapter.aclose()


def _internal_output(exc: Exception) -> ModelOutput:
    """The call-log record of an adapter bug (the caller records it its own way too)."""
    return ModelOutput(error=ErrorInfo(kind="internal", message=f"{type(exc).__name__}: {exc}"))
