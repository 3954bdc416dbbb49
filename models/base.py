"""The model adapter interface and model-spec resolution.

A model is named by a spec string ``KIND[:ARG]`` (``openai:gpt-4o@http://host/v1``, ``hf:/path``,
``cascade:asr=tiny.en,llm=hf:/path,tts=espeak``). The kind picks a registered adapter class whose
``from_spec`` parses ARG. The canonical spec (``ModelAdapter.spec``) is part of every cache key, so
it must identify the model and everything that changes its answers, and never carry a secret.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from evalkit.errors import SpecError
from evalkit.records import ChatRequest, ModelOutput


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do; tasks check this before any request is sent."""

    audio_in: bool = False
    audio_out: bool = False
    multi_turn: bool = True
    batching: bool = False


class ModelAdapter(ABC):
    """Base of all adapters. ``generate`` raises ``evalkit.errors.ModelError`` on failure (marked
    transient or not); the runner owns retries, caching, concurrency and recording."""

    #: canonical spec: part of the cache key
    spec: str
    capabilities: Capabilities = Capabilities()
    #: most requests this adapter can usefully serve at once (None: as many as the run allows)
    max_concurrency: int | None = None

    @property
    def cache_identity(self) -> str:
        """What the response cache keys on besides the request: the spec, plus any setting that
        changes answers without being part of the spec (a cascade's ASR decoding, say)."""
        return self.spec

    @property
    def pinned_revision(self) -> str | None:
        """What pins the model's weights exactly (a commit, a content digest, a package version),
        or None when the spec alone cannot tell (a server behind a URL can change its model under
        the same name). Only pinned models share response-cache entries across runs
        (``evalkit.cache``); ``--model-revision`` pins any model by the user's word."""
        return None

    @property
    def endpoint(self) -> str:
        """Where this adapter's requests go. Every caller of one endpoint (the model under test, a
        judge on the same server) shares one concurrency bound (``evalkit.service``); an
        in-process model is an endpoint of its own."""
        return self.spec

    @property
    def secret_env(self) -> tuple[str, ...]:
        """Environment variables holding this adapter's credentials: their values are scrubbed
        from every output before it is cached or written (``evalkit.service``)."""
        return ()

    #: whole-attempt deadline in seconds this adapter asks for (a card's ``timeout``), when the run
    #: gives no ``--timeout``; None: no deadline of its own
    request_timeout: float | None = None

    @classmethod
    @abstractmethod
    def from_spec(cls, arg: str, **options: Any) -> ModelAdapter:
        """Build the adapter from the part of the spec after ``KIND:``."""

    @abstractmethod
    async def generate(self, request: ChatRequest) -> ModelOutput:
        """Answer one request (the whole conversation so far) with the next assistant turn."""

    async def check(self) -> None:
        """Fail fast before a run (unreachable server, missing weights). Default: nothing to check."""
        return None

    async def aclose(self) -> None:
        """Release clients and models."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this model (no secrets)."""
        return {"spec": self.spec, "adapter": type(self).__name__, "capabilities": asdict(self.capabilities)}


def adapter_class(spec: str) -> tuple[Any, str]:
    """The adapter class a spec names and the spec's argument, without loading anything: an empty
    spec or an unknown kind (with a did-you-mean) is one line before a run reads its data."""
    from evalkit.registry import models

    if not spec or not spec.strip():
        raise SpecError("empty model spec; give --model KIND:ARG, e.g. openai:MODEL@http://127.0.0.1:8000/v1")
    kind, _, arg = spec.strip().partition(":")
    return models.get(kind), arg


def load_model(spec: str, **options: Any) -> ModelAdapter:
    """Resolve a spec string to an adapter instance (unknown kinds list the known ones)."""
    adapter_cls, arg = adapter_class(spec)
    return adapter_cls.from_spec(arg, **options)
