"""OpenAI-compatible chat adapter: how vLLM servers, Step-Audio-R1.x and OpenAI itself are reached.

Spec: ``openai:MODEL@BASE_URL`` (``@BASE_URL`` optional: ``OPENAI_BASE_URL`` or OpenAI's own).
The API key comes from the environment variable named by ``api_key_env`` (default
``OPENAI_API_KEY``; a local server accepts any key) and is never written anywhere.

Requests are plain JSON POSTs over aiohttp (``evalkit.models.chat_http``) and are streamed so that
time to first token is measured. Reasoning is taken from the ``reasoning_content``/``reasoning`` delta fields
when the server splits it, else from inline ``<think>`` tags. Audio the model speaks
(``modalities=["text","audio"]``) is collected into ``ModelOutput.audio``; its words (OpenAI sends
them as the audio's ``transcript``) are the answer text when the reply has no text content.
A completed call with nothing after its reasoning is an answer (``text=""``), scored by the judges;
only transport and server failures are ``ModelError``s. The completion's ``finish_reason`` is kept
on the output (``length`` marks it truncated).

Measured choices keep the client from being the bottleneck (``benchmarks/harness_overhead.py``
and ``benchmarks/floor.py``, 64 requests in flight against a 200 ms endpoint, on 2 cores): the
httpx pool cost ~20 ms of CPU per request (ratio ~0.15), ``chat.completions.create``'s typed
transform several ms (0.43), the client's SSE decoder ~0.4 ms (0.73 -> 0.85), and the ``openai``
client's generic ``post`` over aiohttp still ~1.5 ms per request plus ~1.8 s of import per run
(issue 18): so the chat path speaks HTTP itself (``ChatHttp``: a bearer key, a JSON body, SSE
lines parsed here) and maps failures to the same kinds the client's error classes gave. The
``client`` property (the official client) stays for the speech endpoint (``models/tts.py``).
Nothing here retries: the runner's retry policy owns retries and counts attempts.

Model cards (``evalkit.models.model_cards``) configure this adapter per known model: default
stop strings, sampling defaults and extra request fields, prefilled reasoning, input audio split
into chunks of at most N seconds, and speech returned in a non-OpenAI message field
(``tts_content``, see ``parse_tts_content``).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from evalkit import audio as audio_io
from evalkit.clips import ObjectMemo
from evalkit.errors import EndpointUnreachable, ModelError, SpecError
from evalkit.manifest import redact_urls
from evalkit.models.base import Capabilities, ModelAdapter
from evalkit.models.chat_http import (
    ChatHttp,
    JsonSafe,
    close_on_its_loop,
    drain,
    http_status_error,
    is_unreachable,
    map_error,
)
from evalkit.models.reasoning import split_reasoning
from evalkit.records import (
    AudioPart,
    AudioRef,
    ChatRequest,
    GenerationParams,
    Message,
    ModelOutput,
    Timing,
    Usage,
)
from evalkit.registry import register_model

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: OpenAI streams spoken output as raw 16-bit PCM at 24 kHz
STREAM_PCM_RATE = 24000
#: seconds allowed for the pre-run ``GET /models`` check
CHECK_TIMEOUT_S = 15.0
#: seconds a streamed body may take to end after ``[DONE]`` (read so its connection is reused)
DRAIN_TIMEOUT_S = 5.0


#: how a clip longer than ``chunk_seconds`` is cut (see ``chunk_bounds``)
CHUNK_RULES = ("even", "step-audio-client")


def order_parts(parts: Sequence[Any], text_first: bool) -> list[Any]:
    """A message's parts in the order they are sent. ``text_first``: every text part, then every
    audio part, each in its own order (Step-Audio's published examples put the question before
    the clip); otherwise as the task built them."""
    if not text_first:
        return list(parts)
    return [p for p in parts if not isinstance(p, AudioPart)] + [p for p in parts if isinstance(p, AudioPart)]


def message_to_openai(
    message: Message,
    audio_sample_rate: int | None,
    chunk_seconds: float | None = None,
    *,
    chunk_rule: str = "even",
    mono: bool = True,
    text_first: bool = False,
) -> dict[str, Any]:
    """One message in the chat-completions wire format. Text-only messages are plain strings
    (the most widely accepted form); messages with audio are part lists with ``input_audio``.
    With ``chunk_seconds``, a clip longer than that becomes several consecutive ``input_audio``
    parts (Step-Audio's encoder takes at most 25 s per part; its own client splits the same way).
    ``audio_sample_rate`` None sends the file's own rate; ``mono`` False keeps its channels."""
    if not any(isinstance(p, AudioPart) for p in message.content):
        return {"role": message.role, "content": message.text()}
    parts: list[dict[str, Any]] = []
    for part in order_parts(message.content, text_first):
        if isinstance(part, AudioPart):
            for data in audio_chunks_base64(part.audio, audio_sample_rate, chunk_seconds, chunk_rule, mono):
                parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        else:
            parts.append({"type": "text", "text": part.text})
    return {"role": message.role, "content": parts}


def chunk_bounds(
    n_frames: int, rate: int, chunk_seconds: float | None, rule: str = "even"
) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of the pieces a clip of ``n_frames`` at ``rate`` is sent as.

    ``even``: consecutive pieces of ``round(chunk_seconds * rate)`` frames, the last one shorter,
    never an empty one. ``step-audio-client``: the rule of stepfun-ai/Step-Audio-R1
    ``stepaudior1vllm.py`` (``AudioService.read_audio_file`` on a pydub segment), transcribed:
    the duration is the clip's length in whole milliseconds (rounded); up to ``chunk_seconds`` it
    is one piece (the whole clip); above, ``int(duration // chunk_seconds) + 1`` pieces cut at
    multiples of ``chunk_seconds`` in milliseconds, each end capped at that rounded length. So a
    clip of exactly 50 s is three pieces, the last one empty, as that client sends it."""
    if rule not in CHUNK_RULES:
        raise SpecError(f"unknown audio chunking rule {rule!r}; known: {', '.join(CHUNK_RULES)}")
    if chunk_seconds is None:
        return [(0, n_frames)]
    if rule == "even":
        step = max(1, int(round(chunk_seconds * rate)))
        return [(start, min(start + step, n_frames)) for start in range(0, max(n_frames, 1), step)]
    length_ms = round(1000 * (n_frames / rate))  # pydub's len(segment)
    if length_ms / 1000.0 <= chunk_seconds:
        return [(0, n_frames)]
    piece_ms = int(chunk_seconds * 1000)
    pieces = int((length_ms / 1000.0) // chunk_seconds) + 1

    def frame(ms: int) -> int:  # pydub's frame_count(ms=...), then capped by the data itself
        return min(int(min(ms, length_ms) * (rate / 1000.0)), n_frames)

    return [(frame(i * piece_ms), frame((i + 1) * piece_ms)) for i in range(pieces)]


def audio_chunks_base64(
    ref: AudioRef,
    sample_rate: int | None,
    chunk_seconds: float | None,
    chunk_rule: str = "even",
    mono: bool = True,
) -> list[str]:
    """Base64 16-bit WAV of ``ref`` (resampled to ``sample_rate`` unless None, mixed to mono
    when ``mono``), cut into the pieces ``chunk_bounds`` names. Without ``chunk_seconds``: one.
    Made once per clip object (``evalkit.clips.ObjectMemo``): a conversation's later turns send
    its earlier clips again, as the same objects (``TurnLoop`` confines a sample once)."""

    def encode() -> list[str]:
        raw = _clip_bytes(ref)
        header = audio_io.pcm16_wav_as_is(raw, sample_rate, mono) if raw is not None else None
        pieces = chunk_bounds(header.frames, header.samplerate, chunk_seconds, chunk_rule) if header else []
        if raw is not None and len(pieces) == 1:
            return [JsonSafe(base64.b64encode(raw).decode("ascii"))]  # already the wire format
        samples, rate = audio_io.load(ref, sample_rate=sample_rate, mono=mono)
        return [
            JsonSafe(base64.b64encode(audio_io.wav_bytes(samples[start:end], rate)).decode("ascii"))
            for start, end in chunk_bounds(len(samples), rate, chunk_seconds, chunk_rule)
        ]

    key = (ref.path, id(ref.data), sample_rate, chunk_seconds, chunk_rule, mono)
    return ENCODED.get(ref, key, encode)


#: each clip's wire encoding, kept while its ``AudioRef`` lives (``audio_chunks_base64``)
ENCODED = ObjectMemo()


def _clip_bytes(ref: AudioRef) -> bytes | None:
    """The clip's encoded bytes, or None when they cannot be read (``audio_io.load`` says why)."""
    try:
        return ref.read_bytes()
    except OSError:
        return None


def count_audio_chunks(
    ref: AudioRef, chunk_seconds: float | None, sample_rate: int | None = 16000, chunk_rule: str = "even"
) -> int:
    """How many ``input_audio`` parts ``audio_chunks_base64`` makes of ``ref`` (decodes the clip:
    the count must match the samples actually sent, not a rounded header duration)."""
    if chunk_seconds is None:
        return 1
    samples, rate = audio_io.load(ref, sample_rate=sample_rate)
    return len(chunk_bounds(len(samples), rate, chunk_seconds, chunk_rule))


_AUDIO_TOKEN = re.compile(r"<audio_(\d+)>")
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


def load_speech_decoder(target: str) -> Callable[[list[int]], bytes]:
    """The decoder hook a model card names (``package.module:function``): called with the codec
    token ids of one reply, it returns encoded audio (WAV). Imported once, when the adapter is
    built, so a wrong name fails before any request."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"speech decoder {target!r}: write it as package.module:function")
    try:
        decoder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"speech decoder {target!r} cannot be imported: {exc}") from None
    if not callable(decoder):
        raise SpecError(f"speech decoder {target!r} is not callable")
    return decoder


def parse_tts_content(values: list[Any]) -> tuple[bytes | None, str, str | None, list[int]]:
    """Speech a server returns in a ``tts_content`` message field (non-streamed: one value;
    streamed: one value per delta, accumulated in order). Returns ``(audio, mime, text, tokens)``.

    Shapes accepted (anything else is a ``bad_response`` error, never silently dropped):

    - a string: base64 of an encoded audio file (WAV unless told otherwise);
    - ``{"data": BASE64, "format": "wav"|"mp3"|...}``: the same with its format;
    - ``{"tts_text": TEXT, "tts_audio": AUDIO}``: the shape Step-Audio's published client reads
      (stepfun-ai/Step-Audio-R1 ``stepaudior1vllm.py``). ``tts_text`` is the spoken words;
      ``tts_audio`` is either base64 audio or a run of ``<audio_N>`` codec tokens, which need
      Step-Audio's token2wav model to become sound: those are returned as ``tokens`` (kept in the
      output's trace) and produce no audio here.

    Streamed base64 pieces are decoded one by one and their bytes joined: the assumption is that a
    server splits one encoded file into consecutive byte ranges."""
    audio = bytearray()
    mime = "audio/wav"
    text: list[str] = []
    tokens: list[int] = []
    for value in values:
        if value is None:
            continue
        data: Any = None
        fmt: Any = None
        if isinstance(value, str):
            data = value
        elif isinstance(value, dict) and ("tts_text" in value or "tts_audio" in value):
            text.append(value.get("tts_text") or "")
            spoken = value.get("tts_audio") or ""
            if not isinstance(spoken, str):
                raise ModelError("bad_response", f"tts_content.tts_audio is {type(spoken).__name__}", False)
            found = _AUDIO_TOKEN.findall(spoken)
            if found and not _AUDIO_TOKEN.sub("", spoken).strip():
                tokens.extend(int(t) for t in found)
            else:
                data = spoken or None
        elif isinstance(value, dict) and "data" in value:
            data, fmt = value.get("data"), value.get("format")
        else:
            raise ModelError("bad_response", f"unrecognised tts_content: {str(value)[:200]}", False)
        if fmt is not None:
            if fmt not in _AUDIO_FORMATS:
                raise ModelError("bad_response", f"tts_content audio format {fmt!r} is not supported", False)
            mime = _AUDIO_FORMATS[fmt]
        if data:
            try:
                audio += base64.b64decode(data, validate=True)
            except ValueError as exc:
                raise ModelError("bad_response", f"tts_content audio is not base64: {exc}", False) from exc
    return (bytes(audio) or None), mime, ("".join(text) or None), tokens


def _pcm16_to_wav(pcm: bytes, rate: int) -> bytes:
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2").astype("float32") / 32768.0
    return audio_io.wav_bytes(samples, rate)


def _map_error(exc: Exception) -> ModelError | None:
    """openai/transport exceptions -> ModelError with a stable kind and a transient flag: 408, 429,
    5xx, timeouts and dropped connections are transient (retried, honouring ``Retry-After``); any
    other status is the request's own fault and is recorded at once. None: not an API failure."""
    import openai

    refused = _caused_by(exc, ConnectionRefusedError)
    if refused is not None:  # the aiohttp transport reports a refused connect as a connect *timeout*
        return ModelError("connection", f"connection failed: {refused}", transient=True)
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return ModelError("timeout", f"request timed out: {exc or type(exc).__name__}", transient=True)
    if isinstance(exc, openai.APIConnectionError):
        return ModelError("connection", f"connection failed: {exc.__cause__ or exc}", transient=True)
    if isinstance(exc, openai.APIStatusError):
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        return http_status_error(exc.status_code, exc.message, header)
    if isinstance(exc, openai.APIError):
        return ModelError("api_error", f"server error: {exc.message}", transient=False)
    http = _http_module()  # failures while reading a raw streamed body arrive unwrapped
    if isinstance(exc, http.TimeoutException):
        return ModelError("timeout", f"read timed out: {exc or type(exc).__name__}", transient=True)
    if isinstance(exc, http.TransportError):
        return ModelError("connection", f"connection failed: {exc}", transient=True)
    return None


def _http_module():
    """The HTTP library under the installed openai client (httpx2 from openai 3, httpx before)."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def _caused_by(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def split_spec_url(arg: str) -> tuple[str, str]:
    """``MODEL@http://HOST/v1`` -> ``(MODEL, URL)``; ``(arg, "")`` without a URL. The URL starts at
    the first ``@http(s)://``, so a URL that itself has an ``@`` (credentials) is not cut in two."""
    match = _SPEC_URL.search(arg)
    if match is not None:
        return arg[: match.start()], arg[match.start() + 1 :]
    body, sep, tail = arg.rpartition("@")
    return (body, tail) if sep else (arg, "")


_SPEC_URL = re.compile(r"@https?://")


def check_base_url(url: str, where: str, expected: str) -> None:
    """A base URL must be http(s) and carry no credentials: a ``user:password@`` in it would be
    written wherever the URL is (manifest, reports, error lines); the key belongs in the variable
    named by ``--api-key-env``. Every message shows the URL redacted."""
    from urllib.parse import urlsplit

    if not url.startswith(("http://", "https://")):
        raise SpecError(f"bad base URL {redact_urls(url)!r} in {where}: expected {expected}")
    if "@" in urlsplit(url).netloc:
        raise SpecError(
            f"base URL {redact_urls(url)!r} in {where} carries credentials (user:password@); remove "
            "them and put the API key in the environment variable named by --api-key-env"
        )


OPENAI_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:o\d+|gpt-5)(?:[-.].*)?$")


def is_openai_reasoning_model(name: str) -> bool:
    """OpenAI's own reasoning models (o1, o3, o4-mini, gpt-5...), which take a different request shape."""
    return bool(OPENAI_REASONING_MODEL.match(name))


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
        audio_sample_rate: int | None = 16000,
        reasoning_prefilled: bool = False,
        audio_chunk_seconds: float | None = None,
        audio_chunk_rule: str = "even",
        audio_mono: bool = True,
        text_before_audio: bool = False,
        default_params: dict[str, Any] | None = None,
        default_stop: Sequence[str] = (),
        default_extra: dict[str, Any] | None = None,
        speech_field: str | None = None,
        speech_decoder: str | None = None,
    ):
        if not model:
            raise SpecError("openai spec needs a model name: openai:MODEL@BASE_URL")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        #: the runner's whole-attempt deadline when the run gives no --timeout (a card's default)
        self.request_timeout = self.timeout
        self.stream = stream
        self.audio_sample_rate = None if audio_sample_rate is None else int(audio_sample_rate)
        self.reasoning_prefilled = reasoning_prefilled
        self.audio_chunk_seconds = audio_chunk_seconds
        chunk_bounds(1, 1, None, audio_chunk_rule)  # an unknown rule fails when the adapter is built
        self.audio_chunk_rule = audio_chunk_rule
        self.audio_mono = audio_mono
        #: every text part of a message before its audio (Step-Audio's published request shape)
        self.text_before_audio = text_before_audio
        #: sampling defaults (max_tokens/temperature/top_p) used where the task did not set them
        self.default_params = dict(default_params or {})
        #: stop strings always sent (before the task's own); also cut from the end of a reply
        self.default_stop = list(default_stop)
        #: extra request fields; the task's ``GenerationParams.extra`` overrides them key by key
        self.default_extra = dict(default_extra or {})
        #: a message field carrying speech besides OpenAI's ``audio`` (only ``tts_content``)
        self.speech_field = speech_field
        #: ``module:function`` turning codec tokens (``<audio_N>``) into encoded audio bytes
        self.speech_decoder = load_speech_decoder(speech_decoder) if speech_decoder else None
        self.speech_decoder_name = speech_decoder
        unknown = set(self.default_params) - {"max_tokens", "temperature", "top_p"}
        if unknown:
            raise SpecError(f"unsupported sampling defaults: {', '.join(sorted(unknown))}")
        if speech_field not in (None, "tts_content"):
            raise SpecError(f"unsupported speech field {speech_field!r}; known: tts_content")
        self.spec = f"openai:{model}@{self.base_url}"
        self._client = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._http: ChatHttp | None = None

    @property
    def endpoint(self) -> str:
        """The server: two model names served at one base URL share its concurrency bound."""
        return self.base_url

    @property
    def secret_env(self) -> tuple[str, ...]:
        return (self.api_key_env,)

    @classmethod
    def from_spec(cls, arg: str, **options: Any) -> ModelAdapter:
        """``MODEL@BASE_URL``; without ``@``: the ``base_url`` option (``--base-url``), else
        ``OPENAI_BASE_URL``, else OpenAI's own. A URL in both places must agree. A list of URLs
        (``--base-url`` repeated) gives a ``ReplicaPool`` with one adapter per server."""
        if isinstance(options.get("base_url"), list | tuple):
            from evalkit.models.replica_pool import replicate_over_urls

            return replicate_over_urls(cls.from_spec, arg, options, "openai")
        model, base_url = split_spec_url(arg)
        option_url = options.get("base_url")
        shown = redact_urls(arg)
        if not base_url:
            base_url = option_url or os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
        elif option_url and option_url.rstrip("/") != base_url.rstrip("/"):
            raise SpecError(
                f"model spec 'openai:{shown}' names base URL {redact_urls(base_url)!r} but --base-url is "
                f"{redact_urls(option_url)!r}; give it once"
            )
        check_base_url(base_url, f"model spec 'openai:{shown}'", "openai:MODEL@http(s)://HOST:PORT/v1")
        known = {"api_key_env", "timeout", "stream", "audio_sample_rate", "reasoning_prefilled"}
        return cls(model, base_url, **{k: v for k, v in options.items() if k in known})

    @property
    def client(self):
        """One ``AsyncOpenAI`` per event loop: its connections belong to the loop that opened them,
        so ``asyncio.run(check())`` then ``asyncio.run(generate())`` must not share them."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            from openai import AsyncOpenAI, DefaultAioHttpClient

            self._client = AsyncOpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "EMPTY",
                max_retries=0,
                timeout=self.timeout,
                http_client=DefaultAioHttpClient(timeout=self.timeout),
            )
            self._client_loop = loop
        return self._client

    @property
    def http(self) -> ChatHttp:
        """The chat path's HTTP (``evalkit.models.chat_http``): built on first use."""
        if self._http is None:
            self._http = ChatHttp(self.base_url, self.api_key_env, self.timeout)
        return self._http

    async def check(self) -> None:
        try:
            listing = await self.http.get_json("/models", CHECK_TIMEOUT_S)
        except ModelError:
            return  # some compatible servers do not implement /models; the first request will tell
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            reason = str(exc) or type(exc).__name__
            raise EndpointUnreachable(
                f"cannot reach model server at {self.base_url} ({reason}); "
                "start the server or fix the URL after '@' in --model"
            ) from None
        entries = listing.get("data") if isinstance(listing, dict) else None
        served = [m.get("id") for m in entries or () if isinstance(m, dict)]
        if served and self.model not in served:
            raise EndpointUnreachable(
                f"model {self.model!r} is not served at {self.base_url}; it serves: {', '.join(served)}"
            )

    def build_payload(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` (without the streaming switches).
        ``GenerationParams.extra`` (``modalities``, vLLM's ``skip_special_tokens`` ...) goes in at the
        top level, after the standard fields."""
        p = self.effective_params(request.params)
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [self.wire_message(m) for m in request.messages],
        }
        if is_openai_reasoning_model(self.model):
            # o-series / gpt-5 reject sampling settings and ``max_tokens``: they take the budget
            # as ``max_completion_tokens`` (reasoning included) and sample at their fixed default.
            payload["max_completion_tokens"] = p.max_tokens
        else:
            payload.update(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p)
        if p.seed is not None:
            payload["seed"] = p.seed
        if p.stop:
            payload["stop"] = p.stop
        payload.update(p.extra)
        return payload

    def wire_message(self, message: Message) -> dict[str, Any]:
        """One message as this adapter sends it (audio rate, channels, chunking, part order)."""
        return message_to_openai(
            message,
            self.audio_sample_rate,
            self.audio_chunk_seconds,
            chunk_rule=self.audio_chunk_rule,
            mono=self.audio_mono,
            text_first=self.text_before_audio,
        )

    def effective_params(self, params: GenerationParams) -> GenerationParams:
        """The request's parameters with this adapter's (model card's) defaults filled in where the
        caller left a field unset (pydantic's ``model_fields_set``).

        In a run the precedence command line > card > task > defaults is decided once, by the
        runner (``evalkit.generation.resolve_generation``), which sets every field explicitly, so
        this fill-in only serves callers that build requests by hand. Stop strings are the card's
        followed by the request's (no duplicates); extra fields are the card's updated by the
        request's, key by key."""
        if not (self.default_params or self.default_stop or self.default_extra):
            return params
        update: dict[str, Any] = {
            k: v for k, v in self.default_params.items() if k not in params.model_fields_set
        }
        update["stop"] = list(dict.fromkeys([*self.default_stop, *params.stop]))
        update["extra"] = {**self.default_extra, **params.extra}
        return params.model_copy(update=update)

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
        except Exception as exc:  # transport failures are classified; anything else is a bug
            mapped = map_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        text, reasoning_field, audio_bytes, transcript, usage, first_token, model_name, speech, finish = (
            result
        )
        mime = "audio/wav"
        trace: dict[str, Any] = {}
        if speech:
            spoken, mime, said, tokens = parse_tts_content(speech)
            if spoken is not None and audio_bytes is not None:
                raise ModelError("bad_response", f"speech in both audio and {self.speech_field}", False)
            audio_bytes = audio_bytes if spoken is None else spoken
            transcript = transcript or said
            if tokens:  # codec tokens need the model's own vocoder: kept, never silently dropped
                trace["tts_audio_tokens"] = tokens
                if self.speech_decoder is not None and audio_bytes is None:
                    audio_bytes, mime = self.speech_decoder(tokens), "audio/wav"
                    trace["speech_decoder"] = self.speech_decoder_name
        answer, inline_reasoning = split_reasoning(self._strip_stop(text), prefilled=self.reasoning_prefilled)
        if not answer and transcript:  # OpenAI sends a spoken reply's words only as its transcript
            answer = transcript.strip()
        reasoning = "\n".join(r for r in (reasoning_field, inline_reasoning) if r) or None
        # an empty answer from a completed call is an answer (judges score it); only transport and
        # server failures are model errors
        return ModelOutput(
            text=answer,
            reasoning=reasoning,
            audio=AudioRef(data=audio_bytes, mime=mime) if audio_bytes else None,
            usage=usage,
            timing=Timing(first_token=first_token, total=time.perf_counter() - started),
            model=model_name,
            finish_reason=finish,
            trace=trace,
        )

    def _strip_stop(self, text: str) -> str:
        """Cut the card's stop strings off the end: with ``skip_special_tokens: false`` a server may
        return the end-of-turn token (``<|EOT|>``), which is never part of the answer."""
        text = text.rstrip()
        trimmed = True
        while trimmed:
            trimmed = False
            for stop in self.default_stop:
                if stop and text.endswith(stop):
                    text, trimmed = text[: -len(stop)].rstrip(), True
        return text

    async def _generate_once(self, payload: dict[str, Any]):
        response = await self.http.post("/chat/completions", payload)
        try:
            data = await response.json(content_type=None)
        except ValueError as exc:
            raise ModelError("bad_response", f"completion is not JSON: {exc}", transient=False) from None
        finally:
            response.release()
        if not isinstance(data, dict) or not data.get("choices"):
            raise ModelError(
                "bad_response", f"completion without choices: {str(data)[:300]}", transient=False
            )
        choice = data["choices"][0]
        message = choice.get("message") or {}
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        audio_bytes = transcript = None
        spoken = message.get("audio")
        if isinstance(spoken, dict):
            if spoken.get("data"):
                audio_bytes = base64.b64decode(spoken["data"])
            transcript = spoken.get("transcript")
        content = message.get("content") or ""
        speech = [message[self.speech_field]] if self.speech_field and message.get(self.speech_field) else []
        usage = _usage(data.get("usage"))
        finish = choice.get("finish_reason")
        return content, reasoning, audio_bytes, transcript, usage, None, data.get("model"), speech, finish

    async def _generate_streaming(self, payload: dict[str, Any], started: float):
        """Server-sent events, read from the client's raw streaming response: ``data: {chunk}``
        lines, ending with ``data: [DONE]``; a chunk with an ``error`` is vLLM reporting a failure
        mid-stream."""
        body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        response = await self.http.post("/chat/completions", body)
        text: list[str] = []
        reasoning: list[str] = []
        pcm: list[bytes] = []
        transcript: list[str] = []
        speech: list[Any] = []
        first_token = None
        usage = Usage()
        model_name = None
        pending = b""
        done = False
        finish: str | None = None  # the last finish_reason a chunk carried
        try:
            async for block in response.content.iter_any():
                *lines, pending = (pending + block).split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments (": ping"), event names
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        error = chunk["error"]
                        detail = error.get("message", error) if isinstance(error, dict) else error
                        raise ModelError("stream_error", f"server error during streaming: {detail}", False)
                    model_name = chunk.get("model") or model_name
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
                    for choice in chunk.get("choices") or ():
                        finish = choice.get("finish_reason") or finish
                        delta = choice.get("delta") or {}
                        piece = delta.get("content") or ""
                        thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
                        spoken = delta.get("audio")
                        extra_speech = delta.get(self.speech_field) if self.speech_field else None
                        if (piece or thought or spoken or extra_speech) and first_token is None:
                            first_token = time.perf_counter() - started
                        if extra_speech:
                            speech.append(extra_speech)
                        text.append(piece)
                        reasoning.append(thought)
                        if isinstance(spoken, dict):
                            if spoken.get("data"):
                                pcm.append(base64.b64decode(spoken["data"]))
                            transcript.append(spoken.get("transcript") or "")
                if done:
                    break
            if done:  # read the body to its end, so the connection goes back to the pool (not closed)
                await drain(response, DRAIN_TIMEOUT_S)
        finally:
            response.release()
        if not done and finish is None:  # cut off mid-answer: retry rather than score half a reply
            raise ModelError("connection", "stream ended before the completion finished", transient=True)
        audio_bytes = _pcm16_to_wav(b"".join(pcm), STREAM_PCM_RATE) if pcm else None
        said = "".join(transcript) or None
        thought = "".join(reasoning) or None
        return "".join(text), thought, audio_bytes, said, usage, first_token, model_name, speech, finish

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        client, self._client = self._client, None
        loop, self._client_loop = self._client_loop, None
        await close_on_its_loop(client, loop)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            model=self.model, base_url=self.base_url, stream=self.stream, api_key_env=self.api_key_env
        )
        defaults = {**self.default_params, **({"stop": self.default_stop} if self.default_stop else {})}
        if defaults:  # what the runner's precedence rule takes as the model card's layer
            info["generation_defaults"] = defaults
        return info


def _usage(raw: dict[str, Any] | None) -> Usage:
    if not raw:
        return Usage()
    details = raw.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=raw.get("prompt_tokens"),
        completion_tokens=raw.get("completion_tokens"),
        reasoning_tokens=details.get("reasoning_tokens"),
    )
