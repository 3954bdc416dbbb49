"""A real, small OpenAI-compatible chat server on the loopback interface, for tests and benchmarks.

Why a server and not a mock: the ``openai:`` adapter's job is to speak HTTP the way vLLM and
OpenAI expect (JSON bodies, SSE streaming, status codes, Retry-After), so the only honest test is
to let it do exactly that against something that parses what arrives and answers over a socket.
This server is deterministic, records every request body it receives, and has knobs for the
behaviours a harness must survive: latency, reasoning, spoken output and injected failures.

Endpoints:

- ``GET /v1/models``: lists the one served model name.
- ``POST /v1/chat/completions``: ``stream=false`` (one JSON completion) or ``stream=true``
  (SSE ``data: {...}`` chunks, then ``data: [DONE]``; ``stream_options.include_usage`` adds a
  final chunk with usage and no choices, as OpenAI does).
- ``POST /v1/audio/speech``: a WAV "speech" tone (``speech_wav``: length by word count, pitch by
  the request's ``instructions``), recorded apart (``speech_requests``, not in ``hits``).
- ``GET /_loopback/stats``: hit counts, for a server running in another process.

Use it in-process (a background thread, OS-chosen port)::

    with OpenAIServer(delay=0.1) as server:
        adapter = load_model(f"openai:{server.model}@{server.base_url}")
        ...
        assert server.hits == 1

or from the command line (prints its base URL on one line, then serves until killed)::

    python -m evalkit.testing.openai_server --port 0 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

#: OpenAI streams spoken output as raw 16-bit little-endian PCM at 24 kHz (and so does this server)
PCM_RATE = 24000
#: bytes of PCM per streamed audio delta (0.1 s)
PCM_CHUNK_BYTES = PCM_RATE // 10 * 2
#: prompt tokens charged per input audio part: the usage numbers only need to be deterministic
AUDIO_PART_TOKENS = 100
#: keys that change how an answer travels, not what was asked: left out of ``request_hash``
TRANSPORT_KEYS = ("stream", "stream_options")

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_PIECES = re.compile(r"\S+\s*|\s+")


@dataclass
class Reply:
    """What the scripted model says: the answer text and, optionally, its reasoning.

    ``extra_message_fields`` are added to the reply's message as they are (non-streamed) or sent
    in one delta of their own before the finishing chunk (streamed): how a test plays a server
    with non-OpenAI fields, e.g. Step-Audio's ``tts_content``. ``finish_reason`` is what the
    completion says it stopped for (``length``: a reply cut by the token limit)."""

    text: str
    reasoning: str | None = None
    extra_message_fields: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (string content or the text parts of a part list)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""


def default_answer(body: dict[str, Any]) -> Reply:
    """Deterministic and easy to predict by hand: echo the last number in the last user message's
    text ("The answer is N."); without one (e.g. a purely spoken question) answer 12."""
    numbers = _NUMBER.findall(last_user_text(body))
    return Reply(f"The answer is {numbers[-1] if numbers else 12}.")


def request_hash(body: dict[str, Any]) -> str:
    """sha256 of what was asked (canonical JSON without the transport keys), so a test can count
    how often the *same* request arrived regardless of whether it was streamed."""
    content = {k: v for k, v in body.items() if k not in TRANSPORT_KEYS}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def count_tokens(text: str) -> int:
    """Whitespace-separated words: the server's (documented, deterministic) notion of a token."""
    return len(text.split())


def prompt_tokens(body: dict[str, Any]) -> int:
    """Words of every text in every message plus ``AUDIO_PART_TOKENS`` per input audio part."""
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            total += count_tokens(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                total += count_tokens(part.get("text", ""))
            elif part.get("type") == "input_audio":
                total += AUDIO_PART_TOKENS
    return total


def tone_pcm16(seconds: float, rate: int = PCM_RATE, freq: float = 440.0) -> bytes:
    """A quiet sine tone as 16-bit little-endian PCM: the "speech" of the scripted model."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.2 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


def pcm16_to_wav(pcm: bytes, rate: int = PCM_RATE) -> bytes:
    """A mono 16-bit WAV file around raw PCM (standard library only)."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buf.getvalue()


def speech_wav(body: dict[str, Any]) -> bytes:
    """The scripted speech of a ``/v1/audio/speech`` request: 0.15 s per word of ``input``, a tone
    whose pitch follows the ``instructions`` sentence (so two affects sound different)."""
    words = max(1, count_tokens(str(body.get("input", ""))))
    digest = hashlib.sha256(str(body.get("instructions", "")).encode()).digest()
    freq = 180.0 + digest[0]  # 180-435 Hz
    return pcm16_to_wav(tone_pcm16(0.15 * words / float(body.get("speed") or 1.0), freq=freq))


@dataclass
class FailureRule:
    """Answer matching requests with an HTTP error instead of a completion, or (``cut_stream``)
    start a streamed completion with status 200 and drop the connection halfway, as a crashing
    server or an impatient proxy does.

    ``times`` limits how many requests the rule takes (None: every matching one); ``match`` picks
    requests by body (None: any); ``nth`` picks them by arrival number (1-based). Rules are tried in
    the order they were added; the first that applies answers.
    """

    status: int
    times: int | None = None
    match: Callable[[dict[str, Any]], bool] | None = None
    nth: frozenset[int] | None = None
    retry_after: float | None = None
    message: str = "injected failure"
    cut_stream: bool = False
    used: int = 0

    def take(self, number: int, body: dict[str, Any]) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.nth is not None and number not in self.nth:
            return False
        if self.match is not None and not self.match(body):
            return False
        self.used += 1
        return True


@dataclass
class ReceivedRequest:
    """One request as it arrived: its arrival number (1-based), the parsed body, its content hash,
    the status it was answered with, and when (``time.monotonic()``) it arrived."""

    number: int
    body: dict[str, Any]
    hash: str
    status: int
    arrived: float
    #: the Authorization header as sent (tests check the key travels there and nowhere else)
    authorization: str | None = None


@dataclass
class OpenAIServer:
    """The loopback server. Every knob is a plain attribute, so a test may change it between
    requests (``server.delay = 0.5``); ``fail_first``/``fail_matching``/``cut_streams`` add failure
    rules (or ``add_rule(FailureRule(..., nth=frozenset({3})))`` for one particular request).

    - ``delay``: seconds before the answer starts (headers included), for every request.
    - ``chunk_delay``: seconds between streamed chunks, so time to first token < total.
    - ``answer``: body -> ``Reply`` or str; default ``default_answer``.
    - ``think``: deliver reasoning as a ``reasoning_content`` field (``"field"``) or inline as
      ``<think>...</think>`` before the answer (``"inline"``); None sends no reasoning even if the
      answer function gave some. A reply without reasoning gets ``thought`` when ``think`` is set.
    - ``audio_seconds``: length of the tone spoken when the request's ``modalities`` include
      ``"audio"``. Like OpenAI, the text then travels as ``audio.transcript`` and ``content`` is
      null (streaming: ``delta.audio.transcript`` pieces beside ``delta.audio.data`` PCM chunks).
    - ``trickle``: seconds between keep-alive bytes of an answer that never comes: status 200, then
      an SSE comment (``: keep-alive``; a space for a non-streamed request) every ``trickle``
      seconds, forever. Never idle, never done: only a whole-attempt deadline ends it.
    """

    model: str = "loopback"
    delay: float = 0.0
    chunk_delay: float = 0.0
    answer: Callable[[dict[str, Any]], Reply | str] = default_answer
    think: Literal["field", "inline"] | None = None
    thought: str = "The user wants a number; I will give it."
    audio_seconds: float = 0.5
    host: str = "127.0.0.1"
    port: int = 0
    rules: list[FailureRule] = field(default_factory=list)
    trickle: float | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[ReceivedRequest] = []
        self._speech: list[dict[str, Any]] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    # -- failure injection ------------------------------------------------------------------------
    def fail_first(self, n: int, status: int = 500, retry_after: float | None = None) -> FailureRule:
        """The next ``n`` requests answer ``status`` (with ``Retry-After`` when given)."""
        return self.add_rule(FailureRule(status=status, times=n, retry_after=retry_after))

    def fail_matching(
        self,
        match: Callable[[dict[str, Any]], bool],
        status: int = 400,
        times: int | None = None,
        retry_after: float | None = None,
    ) -> FailureRule:
        """Requests whose body satisfies ``match`` answer ``status`` (``times`` of them, or all)."""
        return self.add_rule(FailureRule(status=status, times=times, match=match, retry_after=retry_after))

    def cut_streams(self, n: int) -> FailureRule:
        """The next ``n`` streamed requests get half an answer, then a dropped connection."""
        return self.add_rule(
            FailureRule(status=200, times=n, match=lambda body: bool(body.get("stream")), cut_stream=True)
        )

    def add_rule(self, rule: FailureRule) -> FailureRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    # -- what arrived -----------------------------------------------------------------------------
    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of every chat request received so far, in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def hits(self) -> int:
        """Chat requests received so far (failed ones included)."""
        with self._lock:
            return len(self._received)

    @property
    def max_in_flight(self) -> int:
        """The most chat requests this server has held open at once (a client's concurrency bound,
        as the server sees it: from the request's arrival to the end of its answer)."""
        with self._lock:
            return self._max_in_flight

    def hash_counts(self) -> Counter[str]:
        """How many times each distinct request (by ``request_hash``) arrived."""
        with self._lock:
            return Counter(r.hash for r in self._received)

    def count(self, where: Callable[[dict[str, Any]], bool] | None = None, hash: str | None = None) -> int:
        """Requests received whose body satisfies ``where`` and/or whose hash is ``hash``."""
        with self._lock:
            return sum(
                1
                for r in self._received
                if (hash is None or r.hash == hash) and (where is None or where(r.body))
            )

    def _receive(
        self, body: dict[str, Any], authorization: str | None = None
    ) -> tuple[ReceivedRequest, FailureRule | None]:
        with self._lock:
            number = len(self._received) + 1
            rule = next((r for r in self.rules if r.take(number, body)), None)
            record = ReceivedRequest(
                number=number,
                body=body,
                hash=request_hash(body),
                status=rule.status if rule else 200,
                arrived=time.monotonic(),
                authorization=authorization,
            )
            self._received.append(record)
        return record, rule

    # -- HTTP -------------------------------------------------------------------------------------
    def make_app(self):
        from aiohttp import web

        app = web.Application(client_max_size=256 * 2**20)  # base64 audio makes large bodies
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._counted_chat)
        app.router.add_post("/v1/audio/speech", self._speech_endpoint)
        app.router.add_get("/_loopback/stats", self._stats)
        return app

    async def _models(self, request):
        from aiohttp import web

        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "loopback"}],
            }
        )

    @property
    def speech_requests(self) -> list[dict[str, Any]]:
        """Every ``/v1/audio/speech`` body received so far, in arrival order."""
        with self._lock:
            return list(self._speech)

    async def _speech_endpoint(self, request):
        """``/v1/audio/speech`` as OpenAI serves it: the body's ``input`` spoken (here a tone) in the
        requested ``response_format`` (only ``wav``, the format evalkit asks for)."""
        from aiohttp import web

        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "request body is not JSON", "invalid_request_error")
        with self._lock:
            self._speech.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if not str(body.get("input", "")).strip() or body.get("response_format", "mp3") != "wav":
            return self._error(
                400, "input must be non-empty and response_format wav", "invalid_request_error"
            )
        return web.Response(body=speech_wav(body), content_type="audio/wav")

    async def _stats(self, request):
        from aiohttp import web

        with self._lock:
            by_status = Counter(str(r.status) for r in self._received)
            hits = len(self._received)
        return web.json_response({"hits": hits, "by_status": dict(by_status)})

    @staticmethod
    def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None):
        from aiohttp import web

        payload = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return web.json_response(payload, status=status, headers=headers)

    async def _counted_chat(self, request):
        """``_chat``, counted in flight until its answer is written (``max_in_flight``)."""
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._chat(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _chat(self, request):
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "request body is not JSON", "invalid_request_error")
        record, rule = self._receive(body, request.headers.get("Authorization"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.trickle is not None:
            return await self._trickle(request, bool(body.get("stream")))
        if rule is not None and not rule.cut_stream:
            headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else None
            return self._error(
                rule.status, f"{rule.message} (request {record.number})", "server_error", headers
            )
        if body.get("model") != self.model:
            return self._error(
                404, f"The model `{body.get('model')}` does not exist.", "NotFoundError"
            )  # what vLLM answers
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(400, "messages must be a non-empty list", "invalid_request_error")
        reply = self.answer(body)
        if isinstance(reply, str):
            reply = Reply(reply)
        reasoning = None
        if self.think is not None:
            reasoning = reply.reasoning or self.thought
        speak = "audio" in (body.get("modalities") or [])
        completion_id = f"chatcmpl-loopback-{record.number}"
        if body.get("stream"):
            cut = rule is not None and rule.cut_stream
            extra = reply.extra_message_fields
            return await self._stream(
                request, body, completion_id, reply.text, reasoning, speak, cut, extra, reply.finish_reason
            )
        return self._complete(
            body, completion_id, reply.text, reasoning, speak, reply.extra_message_fields, reply.finish_reason
        )

    async def _trickle(self, request, stream: bool):
        """Headers now, then one keep-alive every ``trickle`` seconds until the client hangs up."""
        from aiohttp import web

        kind = "text/event-stream" if stream else "application/json"
        response = web.StreamResponse(headers={"Content-Type": kind, "Cache-Control": "no-cache"})
        await response.prepare(request)
        beat = b": keep-alive\n\n" if stream else b" "
        with contextlib.suppress(ConnectionError):  # the client giving up is how this ends
            while True:
                await response.write(beat)
                await asyncio.sleep(self.trickle or 0.0)
        return response

    def _usage(self, body: dict[str, Any], text: str, reasoning: str | None) -> dict[str, Any]:
        reasoning_tokens = count_tokens(reasoning or "")
        completion = count_tokens(text) + reasoning_tokens
        prompt = prompt_tokens(body)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        }

    def _complete(self, body, completion_id, text, reasoning, speak, extra=None, finish="stop"):
        from aiohttp import web

        content = text
        message: dict[str, Any] = {"role": "assistant"}
        if reasoning is not None and self.think == "field":
            message["reasoning_content"] = reasoning
        elif reasoning is not None:
            content = f"<think>{reasoning}</think>{text}"
        message["content"] = content
        if speak:
            wav = pcm16_to_wav(tone_pcm16(self.audio_seconds))
            message["content"] = None if self.think != "inline" else f"<think>{reasoning}</think>"
            message["audio"] = {
                "id": f"audio-{completion_id}",
                "data": base64.b64encode(wav).decode("ascii"),
                "expires_at": 0,
                "transcript": text,
            }
        message.update(extra or {})
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": self._usage(body, text, reasoning),
            }
        )

    async def _stream(
        self, request, body, completion_id, text, reasoning, speak, cut=False, extra=None, finish="stop"
    ):
        from aiohttp import web

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        created = int(time.time())

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage=None) -> bytes:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if usage is not None:
                payload["usage"] = usage
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if reasoning is not None and self.think == "field":
            deltas += [{"reasoning_content": piece} for piece in _PIECES.findall(reasoning)]
        elif reasoning is not None:
            deltas += [{"content": piece} for piece in _PIECES.findall(f"<think>{reasoning}</think>")]
        if speak:
            pcm = tone_pcm16(self.audio_seconds)
            pieces = _PIECES.findall(text)
            spans = range(0, len(pcm), PCM_CHUNK_BYTES)
            for i, start in enumerate(spans):
                audio: dict[str, Any] = {"id": f"audio-{completion_id}"}
                audio["data"] = base64.b64encode(pcm[start : start + PCM_CHUNK_BYTES]).decode("ascii")
                if i < len(pieces):
                    audio["transcript"] = pieces[i]
                if i == len(spans) - 1 and len(pieces) > len(spans):
                    audio["transcript"] = "".join(pieces[i:])
                deltas.append({"audio": audio})
        else:
            deltas += [{"content": piece} for piece in _PIECES.findall(text)]
        if extra:
            deltas.append(dict(extra))
        events = [chunk(delta) for delta in deltas] + [chunk({}, finish=finish)]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk(None, usage=self._usage(body, text, reasoning)))
        events.append(b"data: [DONE]\n\n")
        if cut:  # half the answer, then the connection drops
            await response.write(b"".join(events[: len(events) // 2]))
            request.transport.abort()
            return response
        if not self.chunk_delay:
            # Nothing to wait for between events: send them in one write, so that the server's own
            # cost stays out of what a benchmark measures (the client still parses every event).
            await response.write(b"".join(events))
        else:
            for i, event in enumerate(events):
                if i:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(event)
        await response.write_eof()
        return response

    # -- lifecycle --------------------------------------------------------------------------------
    async def start_async(self, sock: socket.socket | None = None) -> str:
        """Start serving on the running event loop; returns the base URL (``http://HOST:PORT/v1``)."""
        from aiohttp import web

        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=1024).start()
        self.base_url = f"http://{self.host}:{self.port}/v1"
        return self.base_url

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> str:
        """Serve from a daemon thread with its own event loop; returns the base URL once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # report to the starting thread instead of dying silently
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=serve, name="loopback-openai-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        assert self.base_url is not None
        return self.base_url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = self._thread = None

    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_subprocess(
    delay: float = 0.0, model: str = "loopback", extra_args: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """Run the server in its own process (so it does not share a CPU-bound interpreter with the
    harness being measured); returns the process and its base URL. Stop it with ``terminate()``."""
    cmd = [sys.executable, "-m", "evalkit.testing.openai_server", "--port", "0", "--delay", str(delay)]
    return spawn_url_process([*cmd, "--model", model, *(extra_args or [])])


def spawn_url_process(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    """Start a server process whose first stdout line is its base URL; return it and the URL.
    A process that says anything else is killed and reported with what it said."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.kill()
        raise RuntimeError(f"server {cmd[1:3]} did not start (said {line!r}, exit {proc.wait()})")
    return proc, line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback OpenAI-compatible chat server (tests, benchmarks)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: let the OS choose")
    parser.add_argument("--model", default="loopback", help="the served model name")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--think", choices=["field", "inline"], default=None, help="send reasoning")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N requests with an error")
    parser.add_argument("--fail-status", type=int, default=500, help="status of those errors")
    parser.add_argument(
        "--trickle", type=float, default=None, help="never answer: a keep-alive byte every N seconds"
    )
    args = parser.parse_args(argv)
    server = OpenAIServer(
        model=args.model,
        delay=args.delay,
        chunk_delay=args.chunk_delay,
        think=args.think,
        host=args.host,
        port=args.port,
        trickle=args.trickle,
    )
    if args.fail_first:
        server.fail_first(args.fail_first, status=args.fail_status)

    async def serve() -> None:
        print(await server.start_async(), flush=True)
        await asyncio.Event().wait()  # until killed

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop it
        asyncio.run(serve())


if __name__ == "__main__":
    main()
