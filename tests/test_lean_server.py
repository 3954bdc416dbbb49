"""The benchmarks' lean loopback endpoint (``evalkit.testing.lean_server``) and the warm-up of a
run's end (``evalkit.warmup``): a real evalkit run against the endpoint, its HTTP on a raw
socket (keep-alive, pipelining, errors), and that each answer waits its delay."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_runs import numbers_file

from evalkit.runner import RunConfig, evaluate
from evalkit.testing.lean_server import LeanServer, streamed_answer
from evalkit.warmup import finish_warm, warm_finish

NUMBER = re.compile(rb"repeat the number (\d+)")


def echo(body: bytes) -> str:
    found = NUMBER.findall(body)
    return f"The answer is {found[-1].decode()}." if found else "no number"


@pytest.fixture
def lean() -> Iterator[tuple[LeanServer, str]]:
    """A LeanServer (delay 0.05 s) on its own event loop in a thread; yields it and its base URL."""
    server = LeanServer(echo, delay=0.05)
    loop = asyncio.new_event_loop()
    started: list[str] = []
    ready = threading.Event()

    def serve() -> None:
        started.append(loop.run_until_complete(server.start()))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield server, started[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def raw_exchange(url: str, payload: bytes, responses: int) -> list[bytes]:
    """Send ``payload`` on one connection and read ``responses`` whole responses back."""
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        data, out = b"", []
        while len(out) < responses:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses: {data!r}"
            data += chunk
            while (end := data.find(b"\r\n\r\n")) >= 0:
                length = int(re.search(rb"Content-Length: (\d+)", data[:end]).group(1))
                if len(data) < end + 4 + length:
                    break
                out.append(data[: end + 4 + length])
                data = data[end + 4 + length :]
    return out


def chat(text: str) -> bytes:
    body = json.dumps({"messages": [{"role": "user", "content": text}], "stream": True}).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_an_evalkit_run_against_it_gets_every_answer_right(lean, tmp_path: Path) -> None:
    server, url = lean
    data = numbers_file(tmp_path / "n.jsonl", 12, "lean")
    config = RunConfig(
        model=f"openai:loopback@{url}",
        tasks=f"jsonl:path={data},judges=numeric",
        out_dir=str(tmp_path / "runs"),
        use_cache=False,
        concurrency=4,
    )
    store = evaluate(config, argv=["test"], show_progress=False)
    summary = store.read_summary()["tasks"]["jsonl-n"]
    assert summary["judges"]["numeric"]["metrics"]["accuracy"]["value"] == 1.0
    assert summary["requests"]["n_errors"] == 0
    assert server.hits == 12
    assert store.read_manifest()["last_session"]["requests"] == 12


def test_pipelined_requests_are_answered_in_order_each_after_its_delay(lean) -> None:
    _, url = lean
    started = time.monotonic()
    first, second, stats = raw_exchange(
        url,
        chat("repeat the number 7") + chat("repeat the number 8") + b"GET /_loopback/stats HTTP/1.1\r\n\r\n",
        3,
    )
    assert time.monotonic() - started >= 0.05
    assert first.endswith(streamed_answer("The answer is 7.")) and b"text/event-stream" in first
    assert second.endswith(streamed_answer("The answer is 8."))
    assert json.loads(stats.split(b"\r\n\r\n", 1)[1]) == {"hits": 2}


def test_a_body_split_over_many_packets_is_read_whole(lean) -> None:
    _, url = lean
    host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
    request = chat("x" * 200_000 + " repeat the number 41")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for at in range(0, len(request), 7001):
            sock.sendall(request[at : at + 7001])
        reply = b""
        while b"[DONE]" not in reply:
            chunk = sock.recv(65536)
            assert chunk
            reply += chunk
    assert b'"content":"41."' in reply


def test_unknown_routes_and_bodies_without_length_are_errors(lean) -> None:
    _, url = lean
    (missing,) = raw_exchange(url, b"GET /v1/nothing HTTP/1.1\r\n\r\n", 1)
    assert missing.startswith(b"HTTP/1.1 404")
    (models,) = raw_exchange(url, b"GET /v1/models HTTP/1.1\r\n\r\n", 1)
    assert json.loads(models.split(b"\r\n\r\n", 1)[1])["data"][0]["id"] == "loopback"
    (unsized,) = raw_exchange(
        url, b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 1
    )
    assert unsized.startswith(b"HTTP/1.1 411")


def test_the_warmup_loads_the_report_template_and_never_raises() -> None:
    from evalkit.reports import html

    html._report_template.cache_clear()
    finish_warm(warm_finish(("evalkit.reports.html",)))
    assert html._report_template.cache_info().currsize == 1
    failing = warm_finish(("evalkit_no_such_module",))
    finish_warm(failing)  # a failed warm-up leaves the error to the end's own import
    assert not failing.is_alive() and "evalkit_no_such_module" not in sys.modules
