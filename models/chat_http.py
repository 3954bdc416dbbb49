"""The chat adapter's HTTP: one aiohttp session per event loop, a JSON body out, JSON or
server-sent events back, failures as ``ModelError`` with a stable kind and a transient flag.

Why not the ``openai`` client on this path (it is still what ``models/tts.py`` speaks through):
measured with ``benchmarks/floor.py`` (64 requests in flight against a 200 ms loopback server, on
2 cores), its request building (typed options, URL objects, httpx request and response models over
the aiohttp transport) cost ~1.5 ms of CPU per request, about as much as the whole floor client,
and importing it ~1.8 s of every run's start. A POST of a JSON body with a bearer key is the whole
protocol; what the client added here was its error classes, which ``map_error`` replaces one for
one: 408, 429 and 5xx, timeouts and dropped connections are transient (retried by the runner's
policy, honouring ``Retry-After``); any other status is the request's own fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

from evalkit.errors import ModelError

#: bytes of an error body kept in the message
ERROR_BODY_CHARS = 300


class ChatHttp:
    """POST/GET against one base URL with the key from ``api_key_env``; sessions follow the loop."""

    def __init__(self, base_url: str, api_key_env: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self._session = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self):
        """One ``aiohttp.ClientSession`` per event loop: its connections belong to the loop that
        opened them, so ``asyncio.run(check())`` then ``asyncio.run(generate())`` must not share
        them. No connection cap of its own: the model service bounds calls per endpoint."""
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(sock_connect=self.timeout, sock_read=self.timeout),
                proxy=env_proxy(self.base_url),
                headers={"Authorization": f"Bearer {os.environ.get(self.api_key_env) or 'EMPTY'}"},
            )
            self._loop = loop
        return self._session

    async def post(self, path: str, body: dict[str, Any]):
        """The response to a JSON POST (the caller releases it); an error status is raised as
        ``ModelError`` with the server's message."""
        data = json_body(body)
        response = await self.session().post(
            self.base_url + path, data=data, headers={"Content-Type": "application/json"}
        )
        if response.status >= 400:
            try:
                raise await status_error(response)
            finally:
                response.release()
        return response

    async def get_json(self, path: str, timeout: float) -> Any:
        """GET and decode JSON; an error status raises ``ModelError`` (``http_STATUS``)."""
        import aiohttp

        async with self.session().get(
            self.base_url + path, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            if response.status >= 400:
                raise await status_error(response)
            return await response.json(content_type=None)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        await close_on_its_loop(session, loop)


async def close_on_its_loop(client: Any, loop: asyncio.AbstractEventLoop | None) -> None:
    """``await client.close()`` when called on the event loop the client was made on; a client
    of a loop that is gone (or another loop) is dropped instead: closing it there would raise.
    Used for the aiohttp session here and for the openai client (``models.openai_chat``)."""
    if client is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        await client.close()


class JsonSafe(str):
    """A string that is its own JSON form between quotes (base64 text): ``json_body`` splices it
    into a body as it is instead of having the encoder scan it for characters to escape."""


#: a spliced string's stand-in while the rest of the body is encoded (private-use characters)
_SPLICE = re.compile("\ue000(\\d+)\ue001")


def json_body(body: Any) -> bytes:
    """``body`` as UTF-8 JSON, with every ``JsonSafe`` string copied in unscanned. Why: encoding a
    request with a 2 s clip cost 2.5-4.4 ms of CPU, nearly all of it the encoder scanning the
    base64 text (which never needs escaping) for quotes and control characters."""
    spliced: list[str] = []
    text = json.dumps(_stand_in(body, spliced), separators=(",", ":"), ensure_ascii=False)
    pieces = _SPLICE.split(text)
    if len(pieces) != 2 * len(spliced) + 1:  # the body's own text had such characters: no splicing
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"".join(
        p.encode("utf-8") if i % 2 == 0 else spliced[int(p)].encode("ascii") for i, p in enumerate(pieces)
    )


def _stand_in(value: Any, spliced: list[str]) -> Any:
    """``value`` with each ``JsonSafe`` string replaced by its stand-in, the strings collected in
    ``spliced``. A module function, not a closure that calls itself: such a closure is a reference
    cycle that kept every request body alive until the garbage collector ran (issue 18)."""
    if isinstance(value, JsonSafe):
        spliced.append(value)
        return f"\ue000{len(spliced) - 1}\ue001"
    if isinstance(value, dict):
        return {k: _stand_in(v, spliced) if isinstance(v, _NESTED) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_stand_in(v, spliced) if isinstance(v, _NESTED) else v for v in value]
    return value


#: what ``_stand_in`` looks into (any other value is copied as it is, without a call)
_NESTED = (JsonSafe, dict, list)


async def drain(response, timeout: float) -> bool:
    """Read what is left of a body whose answer is complete (a stream after ``[DONE]``), so that
    its connection is reused instead of closed: a new connection per request cost ~10% of the
    harness's CPU at 64 in flight. False when the rest did not come in ``timeout`` or broke off:
    the answer stands, only that connection is closed by the release that follows."""
    import aiohttp

    try:
        await asyncio.wait_for(response.content.read(), timeout)
    except (TimeoutError, aiohttp.ClientError):
        return False
    return True


def env_proxy(url: str) -> str | None:
    """The proxy ``HTTP(S)_PROXY``/``NO_PROXY`` name for ``url`` (as the openai client honoured
    them), looked up once per session: aiohttp's own ``trust_env`` looks it up per request, in a
    thread."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if proxy is None or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


async def status_error(response) -> ModelError:
    """An error status as ``ModelError``: ``http_STATUS``, the server's ``error.message`` (or the
    start of its body), transient for 408, 429 and 5xx, with ``Retry-After`` in seconds."""
    text = await response.text(errors="replace")
    detail = text[:ERROR_BODY_CHARS]
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        detail = str(error.get("message", error) if isinstance(error, dict) else error)[:ERROR_BODY_CHARS]
    return http_status_error(response.status, detail, response.headers.get("Retry-After"))


def http_status_error(status: int, detail: str, retry_after_header: str | None) -> ModelError:
    """The ``ModelError`` of an HTTP error status, whichever client saw it: ``http_STATUS``,
    transient for 408, 429 and 5xx, with ``Retry-After`` in seconds (an HTTP date is ignored: the
    policy's own backoff applies)."""
    retry_after = None
    if retry_after_header:
        try:
            retry_after = max(0.0, float(retry_after_header))
        except ValueError:
            retry_after = None
    transient = status in (408, 429) or status >= 500
    return ModelError(f"http_{status}", f"HTTP {status}: {detail}", transient, retry_after)


def map_error(exc: BaseException) -> ModelError | None:
    """aiohttp/asyncio failures -> ``ModelError``; None: not a transport failure (a bug)."""
    import aiohttp

    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ModelError("connection", f"connection failed: {exc}", transient=True)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ModelError("timeout", f"request timed out: {exc or type(exc).__name__}", transient=True)
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return ModelError("connection", f"connection failed: {exc or type(exc).__name__}", transient=True)
    return None


def is_unreachable(exc: BaseException) -> bool:
    """A failure that means the server cannot be reached at all (``check``)."""
    import aiohttp

    return isinstance(exc, aiohttp.ClientConnectionError | TimeoutError | asyncio.TimeoutError | OSError)
