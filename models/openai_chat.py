"""OpenAI-compatible chat adapter: how vLLM servers, Step-Audio-R1.x and OpenAI itself are reached.

Spec: ``openai:MODEL@BASE_URL`` (``@BASE_URL`` optional: ``OPENAI_BASE_URL`` or OpenAI's own).
The API key comes from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``; a local server accepts any key) and is never written anywhere.

Requests are streamed so that time to first token is measured. Reasoning is taken from the
``reasoning_content``/``reasoning`` delta fields when the server splits it, else from inline
``<think>`` tags. Audio the model speaks (``modalities=["text","audio"]``) is collected into
``ModelOutput.audio``. The client's own retries are off: the runner's retry policy counts attempts.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

from evalkit import audio as audio_io
from evalkit.errors import EndpointUnreachable, ModelError, SpecError
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.reasoning import split_reasoning
from evalkit.records import AudioPart, AudioRef, ChatRequest, Message, ModelOutput, Timing, Usage
from evalkit.registry import register_model

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: OpenAI streams spoken output as raw 16-bit PCM at 24 kHz
STREAM_PCM_RATE = 24000


def message_to_openai(message: Message, audio_sample_rate: int) -> dict[str, Any]:
    """One message in the chat-completions wire format. Text-only messages are plain strings
    (the most widely accepted form); messages with audio are part lists with ``input_audio``."""
    if not any(isinstance(p, AudioPart) for p in message.content):
        return {"role": message.role, "content": message.text()}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, AudioPart):
            data = audio_io.to_base64_wav(part.audio, sample_rate=audio_sample_rate)
            parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        else:
            parts.append({"type": "text", "text": part.text})
    return {"role": message.role, "content": parts}


def _pcm16_to_wav(pcm: bytes, rate: int) -> bytes:
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2").astype("float32") / 32768.0
    return audio_io.wav_bytes(samples, rate)


def _map_error(exc: Exception) -> ModelError:
    """openai/httpx exceptions -> ModelError with a stable kind and a transient flag."""
    import httpx
    import openai

    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return ModelError("timeout", f"request timed out: {exc}", transient=True)
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return ModelError("connection", f"connection failed: {exc}", transient=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retry_after = None
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        if header:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        transient = status == 429 or status >= 500 or status == 408
        return ModelError(f"http_{status}", f"HTTP {status}: {exc.message}", transient, retry_after)
    return ModelError("api", f"{type(exc).__name__}: {exc}", transient=False)


@register_model("openai")
class OpenAIChatAdapter(ModelAdapter):
    """OpenAI-compatible chat completions: openai:MODEL@BASE_URL (vLLM, Step-Audio-R1.x, OpenAI)."""

    capabilities = Capabilities(audio_in=True, audio_out=True, multi_turn=True, batching=False)

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 600.0,
        stream: bool = True,
        audio_sample_rate: int = 16000,
        reasoning_prefilled: bool = False,
    ):
        if not model:
            raise SpecError("openai spec needs a model name: openai:MODEL@BASE_URL")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.stream = stream
        self.audio_sample_rate = audio_sample_rate
        self.reasoning_prefilled = reasoning_prefilled
        self.spec = f"openai:{model}@{self.base_url}"
        self._client = None

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> OpenAIChatAdapter:
        model, sep, base_url = arg.rpartition("@")
        if not sep:
            model, base_url = arg, os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
        if not base_url.startswith(("http://", "https://")):
            raise SpecError(
                f"bad base URL {base_url!r} in model spec 'openai:{arg}': expected openai:MODEL@http(s)://HOST:PORT/v1"
            )
        known = {"api_key_env", "timeout", "stream", "audio_sample_rate", "reasoning_prefilled"}
        return cls(model, base_url, **{k: v for k, v in options.items() if k in known})

    @property
    def client(self):
        if self._client is None:
            import httpx
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "EMPTY",
                max_retries=0,
                timeout=self.timeout,
                http_client=httpx.AsyncClient(
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=1024, max_keepalive_connections=1024),
                ),
            )
        return self._client

    async def check(self) -> None:
        import openai

        try:
            listing = await self.client.with_options(timeout=15.0).models.list()
        except openai.APIConnectionError as exc:
            raise EndpointUnreachable(
                f"cannot reach model server at {self.base_url} ({exc.__cause__ or exc}); "
                "start the server or fix the URL after '@' in --model"
            ) from None
        except openai.APIStatusError:
            return  # some compatible servers do not implement /models; the first request will tell
        served = [m.id for m in listing.data]
        if served and self.model not in served:
            raise EndpointUnreachable(
                f"model {self.model!r} is not served at {self.base_url}; it serves: {', '.join(served)}"
            )

    def build_payload(self, request: ChatRequest) -> dict[str, Any]:
        """The exact keyword arguments sent to ``chat.completions.create``."""
        p = request.params
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [message_to_openai(m, self.audio_sample_rate) for m in request.messages],
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.seed is not None:
            payload["seed"] = p.seed
        if p.stop:
            payload["stop"] = p.stop
        extra = dict(p.extra)
        for key in ("modalities", "audio"):  # first-class OpenAI fields
            if key in extra:
                payload[key] = extra.pop(key)
        if extra:
            payload["extra_body"] = extra
        return payload

    async def generate(self, request: ChatRequest) -> ModelOutput:
        payload = self.build_payload(request)
        started = time.perf_counter()
        try:
            if self.stream:
                result = await self._generate_streaming(payload, started)
            else:
                result = await self._generate_once(payload)
        except ModelError:
            raise
        except Exception as exc:  # openai/httpx errors are classified; anything else is a bug
            mapped = _map_error(exc)
            if mapped.kind == "api" and not _is_client_error(exc):
                raise
            raise mapped from exc
        text, reasoning_field, audio_bytes, transcript, usage, first_token, model_name = result
        answer, inline_reasoning = split_reasoning(text, prefilled=self.reasoning_prefilled)
        if not answer and transcript:  # OpenAI sends a spoken reply's words only as its transcript
            answer = transcript.strip()
        reasoning = "\n".join(r for r in (reasoning_field, inline_reasoning) if r) or None
        if not answer and not reasoning and audio_bytes is None:
            raise ModelError("empty_response", "server returned an empty completion", transient=False)
        return ModelOutput(
            text=answer,
            reasoning=reasoning,
            audio=AudioRef(data=audio_bytes) if audio_bytes else None,
            usage=usage,
            timing=Timing(first_token=first_token, total=time.perf_counter() - started),
            model=model_name,
        )

    async def _generate_once(self, payload: dict[str, Any]):
        response = await self.client.chat.completions.create(**payload)
        choice = response.choices[0]
        message = choice.message
        reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
        audio_bytes = transcript = None
        if getattr(message, "audio", None) is not None:
            if getattr(message.audio, "data", None):
                audio_bytes = base64.b64decode(message.audio.data)
            transcript = getattr(message.audio, "transcript", None)
        content = message.content or ""
        return content, reasoning, audio_bytes, transcript, _usage(response.usage), None, response.model

    async def _generate_streaming(self, payload: dict[str, Any], started: float):
        stream = await self.client.chat.completions.create(
            **payload, stream=True, stream_options={"include_usage": True}
        )
        text: list[str] = []
        reasoning: list[str] = []
        pcm: list[bytes] = []
        transcript: list[str] = []
        first_token = None
        usage = Usage()
        model_name = None
        async for chunk in stream:
            model_name = chunk.model or model_name
            if chunk.usage is not None:
                usage = _usage(chunk.usage)
            for choice in chunk.choices:
                delta = choice.delta
                piece = delta.content or ""
                thought = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None) or ""
                spoken = getattr(delta, "audio", None)
                if (piece or thought or spoken) and first_token is None:
                    first_token = time.perf_counter() - started
                text.append(piece)
                reasoning.append(thought)
                if spoken:
                    field = spoken.get if isinstance(spoken, dict) else lambda k: getattr(spoken, k, None)
                    if field("data"):
                        pcm.append(base64.b64decode(field("data")))
                    transcript.append(field("transcript") or "")
        audio_bytes = _pcm16_to_wav(b"".join(pcm), STREAM_PCM_RATE) if pcm else None
        said = "".join(transcript) or None
        return "".join(text), "".join(reasoning) or None, audio_bytes, said, usage, first_token, model_name

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            model=self.model, base_url=self.base_url, stream=self.stream, api_key_env=self.api_key_env
        )
        return info


def _is_client_error(exc: Exception) -> bool:
    import openai

    return isinstance(exc, openai.OpenAIError)


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    details = getattr(raw, "completion_tokens_details", None)
    return Usage(
        prompt_tokens=raw.prompt_tokens,
        completion_tokens=raw.completion_tokens,
        reasoning_tokens=getattr(details, "reasoning_tokens", None) if details else None,
    )
