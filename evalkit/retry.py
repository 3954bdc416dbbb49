"""Retries with exponential backoff for transient model errors (timeouts, 429, 5xx, dropped
connections), under two deadlines. A server's ``Retry-After`` wins over the computed delay.
Non-transient errors and exhausted retries come back as an ``ErrorInfo`` that the runner records:
a failure is data.

Deadlines are wall-clock, not idle: ``attempt_timeout`` (``--timeout``, or the model card's
``timeout``) bounds each attempt from its first byte sent to its last byte read, so a server that
trickles a keep-alive byte every second cannot hold an attempt open; ``budget``
(``--request-budget``) bounds one request across all its attempts and the waits between them. An
attempt past its deadline is a transient ``timeout`` (retried while attempts and budget remain);
a request whose budget is spent is recorded as ``timeout`` with the attempts it took.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from evalkit.errors import ModelError
from evalkit.records import ErrorInfo, ModelOutput


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: each delay is multiplied by a factor in [1 - jitter, 1] so clients do not retry in lockstep
    jitter: float = 0.5
    #: seconds one attempt may take in all (None: no deadline)
    attempt_timeout: float | None = None
    #: seconds one request may take across its attempts and backoff waits (None: no budget)
    budget: float | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        raw = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return raw * (1 - self.jitter * random.random())


def _attempt_limit(policy: RetryPolicy, deadline: float | None) -> tuple[float | None, str]:
    """This attempt's deadline in seconds and the flag that sets it (the tighter of the two)."""
    if deadline is None:
        return policy.attempt_timeout, "--timeout"
    left = max(0.0, deadline - time.monotonic())
    if policy.attempt_timeout is not None and policy.attempt_timeout <= left:
        return policy.attempt_timeout, "--timeout"
    return left, "--request-budget"


async def _attempt(call: Callable[[], Awaitable[ModelOutput]], limit: float | None, flag: str) -> ModelOutput:
    """One attempt under its wall-clock deadline; running out is a transient ``timeout``."""
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            return await call()
    except TimeoutError:
        if not deadline.expired():
            raise  # not this deadline's: the adapter's own, left to the runner to record
        raise ModelError(
            "timeout", f"no complete answer within {limit:g} s ({flag})", transient=True
        ) from None


async def call_with_retries(
    call: Callable[[], Awaitable[ModelOutput]],
    policy: RetryPolicy,
    on_retry: Callable[[ModelError, int], None] | None = None,
) -> ModelOutput:
    """Run ``call`` until it succeeds, fails permanently, runs out of attempts or of budget."""
    deadline = None if policy.budget is None else time.monotonic() + policy.budget
    attempt = 0
    while True:
        attempt += 1
        limit, flag = _attempt_limit(policy, deadline)
        try:
            return await _attempt(call, limit, flag)
        except ModelError as exc:
            wait = policy.delay(attempt, exc.retry_after)
            out_of_budget = deadline is not None and time.monotonic() + wait >= deadline
            if not exc.transient or attempt >= policy.max_attempts or out_of_budget:
                message = exc.message
                if out_of_budget and exc.transient and attempt < policy.max_attempts:
                    message += f"; --request-budget {policy.budget:g} s spent"
                return ModelOutput(error=ErrorInfo(kind=exc.kind, message=message, attempts=attempt))
            if on_retry is not None:
                on_retry(exc, attempt)
            await asyncio.sleep(wait)
