"""A loopback chat endpoint for throughput benchmarks: every answer leaves exactly ``delay``
seconds after its request arrived, for a few microseconds of CPU per request.

Why not ``openai_server``: that server parses every body as JSON, records it and builds its
answer through aiohttp's web stack, ~0.7 ms of CPU per request, and under 64-way bursts its own
queue adds ~10 ms to each answer. A benchmark of the *client* (``benchmarks/floor.py``,
``benchmarks/harness_overhead.py``) then measures the server's queue too: a bare client reached
only 0.87-0.90 of the ideal C / D against it. This one speaks just enough HTTP/1.1 for a chat
client (keep-alive, ``Content-Length`` bodies, pipelined requests answered in order): it finds
the answer in the raw body with the caller's rule (``answer``: body bytes -> reply text, e.g. a
regular expression over the question; no JSON parse of ~90 kB of base64), answers from
pre-encoded server-sent events (a vLLM-style stream: role chunk, one chunk per word, finish,
usage, ``[DONE]``) in one write, and schedules that write for arrival + ``delay`` on its event
loop rather than holding a task per request.

Endpoints: ``POST /v1/chat/completions`` (always streamed), ``GET /v1/models``,
``GET /_loopback/stats`` (``{"hits": N}``, for a server in another process). Anything else is 404;
a body without ``Content-Length`` is 411. Run it in its own process: ``serve_forever`` prints the
base URL on one line (``openai_server.spawn_url_process`` reads it), then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

#: the served model's name, as ``GET /v1/models`` lists it
MODEL = "loopback"
_HEAD_END = b"\r\n\r\n"


def streamed_answer(text: str, model: str = MODEL) -> bytes:
    """A whole streamed chat completion of ``text`` as a vLLM-style server sends it: a role chunk,
    one chunk per word, a finish chunk, a usage chunk and ``[DONE]``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {"id": "chatcmpl-lean", "object": "chat.completion.chunk", "created": 0,
                 "model": model, "choices": choices, **extra}  # fmt: skip
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def delta(content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}

    words = re.findall(r"\S+\s*", text)
    usage = {"prompt_tokens": 64, "completion_tokens": len(words), "total_tokens": 64 + len(words)}
    events = [event([delta({"role": "assistant", "content": ""})])]
    events += [event([delta({"content": word})]) for word in words]
    events += [event([delta({}, "stop")]), event([], usage=usage), b"data: [DONE]\n\n"]
    return b"".join(events)


def http_response(status: str, content_type: str, body: bytes) -> bytes:
    """One whole HTTP/1.1 keep-alive response."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body


@lru_cache(maxsize=4096)
def chat_response(text: str) -> bytes:
    """The whole HTTP response streaming ``text``, encoded once per answer text."""
    return http_response("200 OK", "text/event-stream", streamed_answer(text))


def json_response(payload: Any, status: str = "200 OK") -> bytes:
    return http_response(status, "application/json", json.dumps(payload).encode())


class LeanServer:
    """The endpoint's state: the answer rule, the delay and the count of chat requests."""

    def __init__(self, answer: Callable[[bytes], str], delay: float) -> None:
        self.answer = answer
        self.delay = delay
        self.hits = 0
        self._server: asyncio.Server | None = None  # held: the listening socket lives with it

    def respond(self, method: bytes, path: bytes, body: bytes) -> tuple[bytes, bool]:
        """The response to one request, and whether it waits ``delay`` (chat answers do)."""
        if method == b"POST" and path == b"/v1/chat/completions":
            self.hits += 1
            return chat_response(self.answer(body)), True
        if method == b"GET" and path == b"/v1/models":
            return json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]}), False
        if method == b"GET" and path == b"/_loopback/stats":
            return json_response({"hits": self.hits}), False
        return json_response({"error": {"message": f"no route {path.decode(errors='replace')}"}},
                             "404 Not Found"), False  # fmt: skip

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on the running loop; returns the base URL (``http://HOST:PORT/v1``)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self, loop), host, port, backlog=1024)
        self._server = server
        return f"http://{host}:{server.sockets[0].getsockname()[1]}/v1"


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed from the byte stream as they complete; each answer
    written at its request's arrival + delay, in request order (HTTP/1.1 pipelining)."""

    def __init__(self, server: LeanServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.loop = server, loop
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.need = 0  # bytes of the request in progress (head + body); 0: its head is not yet parsed
        self.head: tuple[bytes, bytes] = (b"", b"")
        self.body_at = 0
        self.ready_at = 0.0  # when the previous answer leaves: answers never overtake each other

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._next_request():
            pass

    def _next_request(self) -> bool:
        """Take one whole request off the buffer and schedule its answer; False while incomplete."""
        if not self.need:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                return False
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in headers.items()}
            if method == b"POST" and b"content-length" not in fields:
                self._write(http_response("411 Length Required", "text/plain", b"Content-Length required"))
                self.buffer.clear()
                if self.transport is not None:  # the rest of the stream cannot be framed
                    self.transport.close()
                return False
            self.head = (method, path)
            self.body_at = end + len(_HEAD_END)
            self.need = self.body_at + int(fields.get(b"content-length", b"0"))
        if len(self.buffer) < self.need:
            return False
        body = bytes(self.buffer[self.body_at : self.need])
        del self.buffer[: self.need]
        self.need = 0
        response, waits = self.server.respond(*self.head, body)
        at = max(self.ready_at, self.loop.time() + (self.server.delay if waits else 0.0))
        self.ready_at = at
        self.loop.call_at(at, self._write, response)
        return True

    def _write(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def serve_forever(answer: Callable[[bytes], str], delay: float) -> None:
    """Serve on an OS-chosen loopback port until killed, after printing the base URL."""

    async def main() -> None:
        print(await LeanServer(answer, delay).start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
