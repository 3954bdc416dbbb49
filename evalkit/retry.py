"""Retries with exponential backoff for transient model errors (timeouts, 429, 5xx, dropped
connections). A server's ``Retry-After`` wins over the computed delay. Non-transient errors and
exhausted retries come back as an ``ErrorInfo`` that the runner records: a failure is data."""

from __future__ import annotations

import asyncio
import random
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

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        raw = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return raw * (1 - self.jitter * random.random())


async def call_with_retries(
    call: Callable[[], Awaitable[ModelOutput]],
    policy: RetryPolicy,
    on_retry: Callable[[ModelError, int], None] | None = None,
) -> ModelOutput:
    """Run ``call`` until it succeeds, fails permanently or runs out of attempts."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except ModelError as exc:
            if not exc.transient or attempt >= policy.max_attempts:
                return ModelOutput(error=ErrorInfo(kind=exc.kind, message=exc.message, attempts=attempt))
            if on_retry is not None:
                on_retry(exc, attempt)
            await asyncio.sleep(policy.delay(attempt, exc.retry_after))
