"""Several replicas of one model behind one adapter: ``--base-url`` given N times, or N Ray actors.

Why a pool inside the adapter layer: the runner stays unchanged (one adapter, one cache identity,
one run directory), so ``--resume`` and the response cache keep their guarantees whether one
server or twenty answer. The pool only decides *where* each request goes:

- Balancing: the replica with the fewest requests in flight (least outstanding requests), ties
  broken round-robin. A slow replica keeps its requests longer and so gets fewer new ones, without
  any latency model to tune.
- Health: a connection failure (refused, reset, stream cut) marks a replica down at once; other
  transient failures (timeouts, 429, 5xx) mark it down after ``unhealthy_after`` in a row. A down
  replica is skipped for a cool-down (doubling on each failed probe, capped), then receives exactly
  one probe request at a time until one succeeds. With every replica down, each request still
  tries the one due back first, so the runner's retries and backoff govern as with one server.
- Failover: a request that fails transiently on one replica is sent at once to another healthy
  replica it has not tried. Only when every replica has failed it does the error reach the runner,
  whose retry policy counts that as *one* attempt: a replica killed mid-run costs no item and no
  retry budget. Permanent errors (4xx, bad responses) are the request's own fault and are returned
  as they are: another server would answer the same.

Cache identity: the replicas serve the same model, so their answers are interchangeable and the
pool shares the cache with a single-endpoint run. The identity is the *first* replica's, which for
``openai:``/card specs still names its base URL (the URL is part of those specs today): a pool
over ``--base-url A --base-url B`` shares cache entries with a plain run against ``A``, and
``--resume`` (which re-reads the URL list from the manifest) with the run that started it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError, ModelError, SpecError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.records import ChatRequest, ModelOutput

log = logging.getLogger("evalkit.replicas")

#: error kinds that mean "this server is not there" (as opposed to "this server is struggling")
CONNECTION_KINDS = frozenset({"connection", "replica_died"})


@dataclass
class Replica:
    """One replica and what the pool knows about it (counters end up in the manifest)."""

    name: str
    adapter: ModelAdapter
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    ok: int = 0
    #: transient failures (each one was failed over or handed to the runner's retry)
    failures: int = 0
    #: permanent errors answered by this replica (not its fault, not failed over)
    errors: int = 0
    marked_down: int = 0
    consecutive_failures: int = 0
    #: monotonic time until which the replica is skipped; None: healthy
    down_until: float | None = None
    cooldown_s: float = 0.0

    def state(self, now: float) -> str:
        """``up``, ``down`` (cooling down) or ``probe`` (cool-down over, one request at a time)."""
        if self.down_until is None:
            return "up"
        return "down" if now < self.down_until else "probe"

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "ok": self.ok,
            "failures": self.failures,
            "errors": self.errors,
            "marked_down": self.marked_down,
            "max_in_flight": self.max_in_flight,
            "healthy": self.down_until is None,
        }


class ReplicaPool(ModelAdapter):
    """A ``ModelAdapter`` over N interchangeable adapters (see the module docstring).

    ``names`` label the replicas in logs and the manifest (base URLs, actor ids). Health knobs:
    ``unhealthy_after`` consecutive transient failures mark a replica down for ``cooldown_s``,
    doubled per failed probe up to ``max_cooldown_s``.
    """

    def __init__(
        self,
        replicas: Sequence[ModelAdapter],
        names: Sequence[str] | None = None,
        unhealthy_after: int = 3,
        cooldown_s: float = 2.0,
        max_cooldown_s: float = 30.0,
    ):
        if not replicas:
            raise SpecError("a replica pool needs at least one replica")
        names = list(names) if names is not None else [f"replica-{i}" for i in range(len(replicas))]
        if len(names) != len(replicas):
            raise SpecError(f"{len(replicas)} replicas but {len(names)} names")
        first = replicas[0]
        caps = {r.capabilities for r in replicas}
        if len(caps) != 1:
            raise SpecError("replicas of one pool must have the same capabilities")
        self.replicas = [Replica(name=n, adapter=a) for n, a in zip(names, replicas, strict=True)]
        self.spec = first.spec
        self.capabilities: Capabilities = first.capabilities
        limits = [r.max_concurrency for r in replicas]
        self.max_concurrency = None if any(m is None for m in limits) else sum(m for m in limits if m)
        self.unhealthy_after = max(1, unhealthy_after)
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._next = 0  # round-robin cursor for ties

    # -- identity ---------------------------------------------------------------------------------
    @property
    def cache_identity(self) -> str:
        """The first replica's: the same model on several servers gives the same answers."""
        return self.replicas[0].adapter.cache_identity

    @property
    def pinned_revision(self) -> str | None:
        """The first replica's, like the cache identity."""
        return self.replicas[0].adapter.pinned_revision

    @property
    def endpoint(self) -> str:
        """All replicas together: the pool balances its own load, under the run's one bound."""
        return " + ".join(r.adapter.endpoint for r in self.replicas)

    @property
    def secret_env(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(env for r in self.replicas for env in r.adapter.secret_env))

    @property
    def request_timeout(self) -> float | None:  # type: ignore[override]
        """The first replica's deadline (replicas of one spec share their options)."""
        return self.replicas[0].adapter.request_timeout

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> ModelAdapter:
        """Not a registered kind: pools are made by the adapters that accept several base URLs
        (``replicate_over_urls``) and by the Ray executor."""
        raise SpecError("a replica pool is not named by a spec; repeat --base-url or use --executor ray")

    # -- routing ----------------------------------------------------------------------------------
    def _pick(self, tried: set[int]) -> int | None:
        """Index of the replica for the next attempt: among the up replicas and the probe-eligible
        ones with nothing in flight, the least busy; ties go round-robin from the cursor. When no
        replica is eligible and this request has tried none yet (all are down), the one whose
        cool-down ends first is tried anyway: every attempt the runner makes is then a real one,
        paced by its own retry policy exactly as with a single endpoint, and never parked for a
        cool-down the runner knows nothing about."""
        now = time.monotonic()
        n = len(self.replicas)
        best: int | None = None
        for step in range(n):
            i = (self._next + step) % n
            if i in tried:
                continue
            rep = self.replicas[i]
            state = rep.state(now)
            if state == "down" or (state == "probe" and rep.in_flight > 0):
                continue
            if best is None or rep.in_flight < self.replicas[best].in_flight:
                best = i
        if best is None and not tried:
            best = min(range(n), key=lambda i: self.replicas[i].down_until or now)
        if best is not None:
            self._next = (best + 1) % n
        return best

    def _failed(self, rep: Replica, exc: ModelError) -> None:
        rep.failures += 1
        rep.consecutive_failures += 1
        now = time.monotonic()
        probing = rep.down_until is not None
        if probing or exc.kind in CONNECTION_KINDS or rep.consecutive_failures >= self.unhealthy_after:
            rep.cooldown_s = min(self.max_cooldown_s, rep.cooldown_s * 2) if probing else self.base_cooldown_s
            rep.down_until = now + rep.cooldown_s
            rep.marked_down += 1
            log.warning(
                "replica %s marked down for %.1f s after [%s] %s", rep.name, rep.cooldown_s, exc.kind, exc
            )

    def _answered(self, rep: Replica) -> None:
        if rep.down_until is not None:
            log.warning("replica %s is back", rep.name)
        rep.consecutive_failures = 0
        rep.down_until = None
        rep.cooldown_s = 0.0

    async def generate(self, request: ChatRequest) -> ModelOutput:
        tried: set[int] = set()
        last: ModelError | None = None
        while True:
            index = self._pick(tried)
            if index is None:
                break
            tried.add(index)
            rep = self.replicas[index]
            rep.requests += 1
            rep.in_flight += 1
            rep.max_in_flight = max(rep.max_in_flight, rep.in_flight)
            try:
                output = await rep.adapter.generate(request)
            except ModelError as exc:
                if not exc.transient:
                    rep.errors += 1
                    self._answered(rep)  # it answered: alive, and the request is at fault
                    raise
                self._failed(rep, exc)
                last = exc
                continue
            finally:
                rep.in_flight -= 1
            rep.ok += 1
            self._answered(rep)
            return output
        # every replica this request could try failed: one attempt for the runner's retry policy
        assert last is not None  # _pick always offers a first replica
        raise last

    # -- lifecycle --------------------------------------------------------------------------------
    async def check(self) -> None:
        """Passes if at least one replica passes its own check; the others are logged and start
        cooling down (they are probed later, so a server that comes up mid-run joins in)."""
        results = await asyncio.gather(*(r.adapter.check() for r in self.replicas), return_exceptions=True)
        down: list[tuple[Replica, BaseException]] = []
        for rep, result in zip(self.replicas, results, strict=True):
            if result is None:
                continue
            if not isinstance(result, EvalkitError):
                raise result  # a bug or an interrupt, not an unreachable server
            down.append((rep, result))
        if len(down) == len(self.replicas):
            reasons = "; ".join(f"{rep.name}: {exc}" for rep, exc in down)
            raise type(down[0][1])(f"none of the {len(down)} replicas is usable: {reasons}")
        now = time.monotonic()
        for rep, exc in down:
            rep.cooldown_s = self.base_cooldown_s
            rep.down_until = now + rep.cooldown_s
            rep.marked_down += 1
            log.warning(
                "replica %s is down at the start (%s); it will be probed during the run", rep.name, exc
            )

    async def aclose(self) -> None:
        results = await asyncio.gather(*(r.adapter.aclose() for r in self.replicas), return_exceptions=True)
        failures = [e for e in results if isinstance(e, BaseException)]
        if failures:
            raise failures[0]

    def describe(self) -> dict[str, Any]:
        """The first replica's description (the model) plus every replica's name and balancing."""
        info = self.replicas[0].adapter.describe()
        info["replicas"] = [{"name": r.name, **_replica_detail(r.adapter)} for r in self.replicas]
        info["balancing"] = {
            "policy": "least outstanding requests, ties round-robin; transient failures fail over",
            "unhealthy_after": self.unhealthy_after,
            "cooldown_s": self.base_cooldown_s,
            "max_cooldown_s": self.max_cooldown_s,
        }
        return info

    def session_stats(self) -> list[dict[str, Any]]:
        """Per-replica counters of this session (requests, failures, most in flight ...)."""
        return [r.stats() for r in self.replicas]


def _replica_detail(adapter: ModelAdapter) -> dict[str, Any]:
    """What distinguishes one replica from another in the manifest (its URL, its actor)."""
    info = adapter.describe()
    return {k: info[k] for k in ("base_url", "ray") if k in info}


def replicate_over_urls(
    build: Callable[..., ModelAdapter], arg: str, options: dict[str, Any], kind: str
) -> ModelAdapter:
    """``build(arg, base_url=URL, **rest)`` once per URL of the ``base_url`` option (a list), in a
    pool; one URL gives the plain adapter. The spec must not name a URL itself (which one would
    win is not obvious), and a URL given twice is a mistake, not extra weight."""
    urls = [str(u).rstrip("/") for u in options["base_url"]]
    from evalkit.manifest import redact_urls
    from evalkit.models.openai_chat import split_spec_url

    if split_spec_url(arg)[1].startswith(("http://", "https://")):
        raise SpecError(
            f"model spec '{kind}:{redact_urls(arg)}' names a base URL and --base-url is given "
            f"{len(urls)} times; name the servers only with --base-url"
        )
    duplicates = sorted({u for u in urls if urls.count(u) > 1})
    if duplicates:
        raise SpecError(f"--base-url {redact_urls(duplicates[0])} is given more than once")
    if not urls:
        raise SpecError(f"model spec '{kind}:{arg}': the base_url list is empty")
    rest = {k: v for k, v in options.items() if k != "base_url"}
    adapters = [build(arg, base_url=url, **rest) for url in urls]
    return adapters[0] if len(adapters) == 1 else ReplicaPool(adapters, names=urls)
