"""The shared HTTP boundary of the OpenAI-compatible engines (design.md decision 9).

Every remote engine (``stt_openai_compat``, ``llm_openai_compat``, ``tts_openai_compat``) talks
through one :class:`OpenAICompatClient`, and every transport failure becomes a
:class:`~openrealtime.backends.errors.BackendError` here, at one place (house rule 4):

========================================  ==============================  =========
failure                                   ``code``                        retriable
========================================  ==============================  =========
connection refused / DNS / reset          ``engine_unavailable``          yes
connect, read, write or pool timeout      ``engine_timeout``              yes
no content for ``idle_timeout`` seconds   ``engine_timeout``              yes
HTTP 4xx/5xx (OpenAI error body read)     ``engine_http_<status>``        429, 5xx
body cut before its end                   ``engine_stream_incomplete``    yes
unparsable, oversized or wrong-type body  ``engine_bad_response``         no
========================================  ==============================  =========

Messages name the engine and the server (without credentials), never contain the API key, and
are bounded (:data:`MAX_MESSAGE_CHARS`): what comes from the server is shown as a short excerpt.

**Why each request runs in its own task.** httpcore returns a connection to its pool inside
``anyio.CancelScope(shield=True)``, which stops anyio cancellation but not a plain asyncio
``Task.cancel()``. A session's engine task cancelled while one of its responses was closing
(a client dropping the connection as a clause's audio ends) left the pool request registered
and the connection ``ACTIVE`` forever; about one in fifteen such drops leaked one, until the
pool was full and every request failed with ``PoolTimeout``. So the request, the body and the
close run in an :class:`_Exchange` task that nothing but its own ``stream()`` block stops, and
it stops it through an anyio cancel scope, which those shields do hold off.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
import httpx

from openrealtime.backends.errors import BackendError, BackendTimeout
from openrealtime.protocol.codec import loads

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_KEEPALIVE_CONNECTIONS",
    "MAX_MESSAGE_CHARS",
    "OpenAICompatClient",
    "ServerSentEvent",
    "StreamedBody",
    "excerpt",
    "incomplete",
    "iter_sse",
    "parse_json",
]

_log = logging.getLogger(__name__)

_USER_AGENT = "openrealtime"
MAX_MESSAGE_CHARS = 600
"""Longest error message an engine error carries (server text is cut to fit)."""
_EXCERPT_CHARS = 200
"""Characters of a server's body shown in a message."""
MAX_CONNECTIONS = 100
"""Connections one engine keeps open to its server at most (httpx's default, made explicit)."""
MAX_KEEPALIVE_CONNECTIONS = 20
"""Idle connections one engine keeps for reuse; more are closed once their answer ends."""
MAX_ERROR_BODY = 64 * 1024
"""Bytes of an error (4xx/5xx) body read; the rest is dropped."""
MAX_JSON_BODY = 8 * 1024 * 1024
"""Largest non-streamed JSON answer accepted (a transcription, a whole completion)."""
MAX_SSE_LINE = 1024 * 1024
"""Longest line of an event stream."""
MAX_SSE_EVENT = 4 * 1024 * 1024
"""Most ``data`` characters of one server-sent event."""
_READ_AHEAD = 8
"""Body chunks read ahead of the consumer before the reading waits (TCP backpressure)."""
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One SSE event: its ``event:`` name (``""`` when absent) and its joined ``data:`` lines."""

    event: str
    data: str


def excerpt(text: str | bytes, limit: int = _EXCERPT_CHARS) -> str:
    """The start of ``text`` for a message: at most ``limit`` characters, ``…`` when cut."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OpenAICompatClient:
    """An ``httpx.AsyncClient`` for one OpenAI-compatible server, with errors mapped.

    Create one per engine; it opens its connection pool on first use. Call :meth:`aclose` when
    the engine is retired (optional in a process that exits).

    Args:
        engine: the engine's label for messages (e.g. ``"LLM"``).
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (paths are appended to it).
        api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
        timeout: seconds to wait for each read/write (and the default for connecting).
        connect_timeout: seconds to wait for the TCP/TLS connection; defaults to ``timeout``.
        idle_timeout: seconds a body may go without content (keep-alives do not count); time
            the caller spends between pieces is not counted.
    """

    def __init__(
        self,
        engine: str,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout or timeout)
        self.idle_timeout = idle_timeout
        url = httpx.URL(self.base_url)
        self.server = str(url.copy_with(username=None, password=None, query=None))
        """The server as messages show it: no credentials, no query string."""
        self._client: httpx.AsyncClient | None = None
        self._exchanges: set[_Exchange] = set()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._new_client(MAX_KEEPALIVE_CONNECTIONS)
        return self._client

    def _new_client(self, keepalive: int) -> httpx.AsyncClient:
        headers = {"User-Agent": _USER_AGENT}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=keepalive)
        return httpx.AsyncClient(
            base_url=self.base_url + "/", headers=headers, timeout=self.timeout, limits=limits
        )

    async def aclose(self) -> None:
        """Stop the requests still running, then close the pool (reopened if used again)."""
        exchanges = list(self._exchanges)
        for exchange in exchanges:
            exchange.stop()
        await asyncio.gather(*(exchange.task for exchange in exchanges), return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def probe(self, *, wait_s: float = 3.0) -> None:
        """Check that the server answers (``GET models``); any status below 500 will do.

        Raises:
            BackendError: refused, timed out, or a 5xx (the readiness check reports it).
        """
        try:
            response = await self._http().get("models", timeout=wait_s)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 500:
            raise self.error(f"HTTP {response.status_code} to GET models", "engine_unavailable")

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        new_connection: bool = False,
    ) -> AsyncIterator[StreamedBody]:
        """POST to ``path`` and yield the streaming answer once its status is 2xx.

        Any failure while the block runs (reading the body included) is raised as a
        :class:`BackendError`; a 4xx/5xx status raises one with the server's error message.
        However the block ends (done, failed, cancelled, even cancelled again while it
        closes), the response is closed and its connection released.

        ``new_connection``: send it on a connection of its own, closed afterwards, never one
        from the pool (to ask again after a server broke a stream: the connection it is about
        to close may still look reusable to the pool).
        """
        client = self._new_client(0) if new_connection else self._http()
        try:
            request = client.build_request(
                "POST", path.lstrip("/"), json=json_body, data=data, files=files
            )
        except httpx.HTTPError as exc:
            if new_connection:
                await client.aclose()
            raise self._transport_error(exc) from None
        exchange = _Exchange(client, request, self._exchanges)
        try:
            body = StreamedBody(self, exchange)
            await body.start()
            if body.status_code >= 400:
                text = await body.read(MAX_ERROR_BODY, truncate=True)
                raise self._status_error(body.status_code, text, body.reason)
            yield body
        finally:
            exchange.stop()
            # Not cancelled by a cancel of this task: it closes on its own even then.
            await asyncio.wait({exchange.task})
            if new_connection:
                await asyncio.shield(client.aclose())

    def scrub(self, text: str) -> str:
        """Remove the API key from ``text`` (for messages built from server answers)."""
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    def message(self, text: str) -> str:
        """``text`` prefixed with this engine and server, bounded and without the API key."""
        return excerpt(
            self.scrub(f"{self.engine} engine at {self.server}: {text}"), MAX_MESSAGE_CHARS
        )

    def error(self, message: str, code: str, *, retriable: bool = False) -> BackendError:
        """A :class:`BackendError` whose message names this engine and server (bounded)."""
        return BackendError(self.message(message), code=code, retriable=retriable)

    def idle_error(self) -> BackendTimeout:
        """The error for a body that sent no content for :attr:`idle_timeout` seconds."""
        return BackendTimeout(
            self.message(
                f"no content for {self.idle_timeout:g} s (keep-alives do not count; "
                "engine_idle_timeout)"
            )
        )

    def _status_error(self, status: int, text: bytes, reason: str) -> BackendError:
        detail = _error_detail(self.scrub(text.decode("utf-8", "replace")), reason)
        return self.error(
            f"HTTP {status}: {detail}",
            f"engine_http_{status}",
            retriable=status == 429 or status >= 500,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> BackendError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            if isinstance(exc, httpx.ConnectTimeout):
                phase, seconds = "connecting", self.timeout.connect
            elif isinstance(exc, httpx.PoolTimeout):
                phase, seconds = f"all {MAX_CONNECTIONS} connections busy", self.timeout.pool
            else:
                phase, seconds = "waiting", self.timeout.read
            return BackendTimeout(self.message(f"no answer after {seconds:g} s ({phase}, {kind})"))
        if isinstance(exc, httpx.ConnectError):
            return self.error(
                f"cannot connect ({excerpt(str(exc))})", "engine_unavailable", retriable=True
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return self.error(
                f"the connection broke before the answer ended ({kind})",
                "engine_stream_incomplete",
                retriable=True,
            )
        if isinstance(exc, httpx.TransportError):
            message = f"transport failure ({kind}: {excerpt(str(exc))})"
            return self.error(message, "engine_unavailable", retriable=True)
        return self.error(f"request failed ({kind}: {excerpt(str(exc))})", "engine_error")


class _Exchange:
    """One request, its body and its close, in a task of their own (see the module docstring).

    The response head and then the body's chunks go to the consumer through a short queue; an
    httpx error goes the same way. :meth:`stop` ends it through an anyio cancel scope, which
    respects the shields httpcore puts around returning a connection to the pool.
    """

    def __init__(
        self, client: httpx.AsyncClient, request: httpx.Request, registry: set[_Exchange]
    ) -> None:
        self.response: httpx.Response | None = None
        """The response once its head arrived."""
        self.chunks: deque[bytes | Exception | None] = deque()
        """Body pieces in order; ``None`` marks the end, an exception a failed request."""
        self.ready = asyncio.Event()
        """Set when the head, a piece or the end arrives."""
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._scope: anyio.CancelScope | None = None
        registry.add(self)
        self.task = asyncio.create_task(self._run(client, request), name="engine-http")
        self.task.add_done_callback(functools.partial(self._finish, registry))

    def _finish(self, registry: set[_Exchange], _task: asyncio.Task[None]) -> None:
        registry.discard(self)
        self.ready.set()

    @property
    def finished(self) -> bool:
        """Whether the task ended (nothing more will be queued)."""
        return self.task.done()

    def take(self) -> bytes | Exception | None:
        """The next queued piece (call only when :attr:`chunks` is not empty)."""
        piece = self.chunks.popleft()
        if len(self.chunks) < _READ_AHEAD:
            self._room.set()
        return piece

    def stop(self) -> None:
        """Stop reading and close the response; idempotent, never blocks."""
        self._stopping = True
        self._room.set()
        if self._scope is not None:
            self._scope.cancel()

    def _put(self, piece: bytes | Exception | None) -> None:
        self.chunks.append(piece)
        self.ready.set()

    async def _run(self, client: httpx.AsyncClient, request: httpx.Request) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._stopping:
                scope.cancel()
            try:
                response = await client.send(request, stream=True)
            except Exception as exc:
                self._put(exc)
                return
            try:
                self.response = response
                self.ready.set()
                async for chunk in response.aiter_bytes():
                    if chunk:
                        self._put(chunk)
                    while len(self.chunks) >= _READ_AHEAD and not self._stopping:
                        self._room.clear()
                        await self._room.wait()
                    if self._stopping:
                        return
                self._put(None)
            except Exception as exc:
                self._put(exc)
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await response.aclose()
                    except Exception:  # best effort: the pool has let go of it by now
                        _log.debug("closing an engine response failed", exc_info=True)


class StreamedBody:
    """A 2xx (or error) answer being read: its status, headers and body, with an idle timer.

    The idle timer counts only the time spent waiting inside :meth:`next_chunk` (and for the
    headers) since the consumer last reported content with :meth:`saw_content`; it is what
    ends a body that sends keep-alives but no content.
    """

    def __init__(self, http: OpenAICompatClient, exchange: _Exchange) -> None:
        self.http = http
        self._exchange = exchange
        self._waited = 0.0
        self._ended = False
        self._response: httpx.Response | None = None

    async def start(self) -> None:
        """Wait for the status line and headers (called by :meth:`OpenAICompatClient.stream`)."""
        exchange = self._exchange
        await self._wait(lambda: exchange.response is not None or bool(exchange.chunks))
        if exchange.response is None:
            piece = exchange.take() if exchange.chunks else None
            self._raise(piece if isinstance(piece, Exception) else None)
        self._response = exchange.response

    async def _wait(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``; the time counts against the idle timeout."""
        exchange = self._exchange
        if done():
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(max(0.0, self.http.idle_timeout - self._waited)):
                while not done() and not exchange.finished:
                    exchange.ready.clear()
                    await exchange.ready.wait()
        except TimeoutError:
            raise self.http.idle_error() from None
        finally:
            self._waited += loop.time() - started

    def _raise(self, piece: Exception | None) -> NoReturn:
        if isinstance(piece, httpx.HTTPError):
            raise self.http._transport_error(piece)
        if isinstance(piece, Exception):
            raise piece
        raise self.http.error("the request stopped before its answer", "engine_unavailable")

    @property
    def response(self) -> httpx.Response:
        """The httpx response (its body is read through this object, not through httpx)."""
        assert self._response is not None, "start() first"
        return self._response

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self.response.status_code

    @property
    def reason(self) -> str:
        """The HTTP reason phrase."""
        return self.response.reason_phrase

    @property
    def headers(self) -> httpx.Headers:
        """The response headers."""
        return self.response.headers

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case (``""`` when absent)."""
        value = str(self.headers.get("content-type", ""))
        return value.split(";", 1)[0].strip().lower()

    def saw_content(self) -> None:
        """The consumer found content: the idle timer starts again from zero."""
        self._waited = 0.0

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, ``None`` at its end.

        Raises:
            BackendTimeout: no content for ``idle_timeout`` seconds of waiting.
            BackendError: the body could not be read (mapped from httpx).
        """
        exchange = self._exchange
        if self._ended:
            return None
        await self._wait(lambda: bool(exchange.chunks))
        if not exchange.chunks:
            self._raise(None)
        piece = exchange.take()
        if piece is None:
            self._ended = True
        elif isinstance(piece, Exception):
            self._raise(piece)
        return piece

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body's pieces; each one counts as content (an audio stream)."""
        while (chunk := await self.next_chunk()) is not None:
            self.saw_content()
            yield chunk

    async def read(self, limit: int = MAX_JSON_BODY, *, truncate: bool = False) -> bytes:
        """The whole body, at most ``limit`` bytes; only non-whitespace counts as content.

        Args:
            limit: the most bytes accepted.
            truncate: past ``limit``, return the first ``limit`` bytes instead of failing.

        Raises:
            BackendError: ``engine_bad_response`` when the body is larger than ``limit``.
        """
        parts: list[bytes] = []
        size = 0
        while (chunk := await self.next_chunk()) is not None:
            if chunk.strip():
                self.saw_content()
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                if truncate:
                    break
                raise self.http.error(
                    f"the answer is larger than {limit} bytes", "engine_bad_response"
                )
        return b"".join(parts)[:limit]

    async def excerpt(self) -> str:
        """The start of the body for a message, read best effort (never raises)."""
        data = b""
        with contextlib.suppress(BackendError):
            while len(data) < _EXCERPT_CHARS and (chunk := await self.next_chunk()) is not None:
                data += chunk
        return repr(excerpt(self.http.scrub(data.decode("utf-8", "replace"))))

    async def lines(self) -> AsyncIterator[str]:
        """Yield the body's lines (CR LF, LF or CR ended; UTF-8)."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        while (chunk := await self.next_chunk()) is not None:
            text = pending + decoder.decode(chunk)
            held = text.endswith("\r")  # maybe the first half of "\r\n"
            *complete, pending = _LINE_BREAK.split(text[:-1] if held else text)
            if held:
                pending += "\r"
            if len(pending) > MAX_SSE_LINE:
                raise self.http.error(
                    f"a line of the answer is longer than {MAX_SSE_LINE} characters",
                    "engine_bad_response",
                )
            for line in complete:
                yield line
        rest = pending + decoder.decode(b"", final=True)
        if rest.rstrip("\r"):
            yield rest.rstrip("\r")


def incomplete(client: OpenAICompatClient, what: str) -> BackendError:
    """The error for a stream that ended without its final event (cut mid-answer)."""
    return client.error(f"{what} ended before its end", "engine_stream_incomplete", retriable=True)


async def iter_sse(body: StreamedBody) -> AsyncIterator[ServerSentEvent]:
    """Parse a ``text/event-stream`` body into events (WHATWG SSE, as OpenAI streams it).

    Comment lines and ``id``/``retry`` fields are skipped; an event still open when the body
    ends is dropped, as the SSE spec says. Only an event with data is content for the idle
    timer: comments, blank lines and whitespace keep-alives are not.
    """
    event = ""
    data: list[str] = []
    size = 0
    async for line in body.lines():
        if not line:
            if data:
                body.saw_content()
                yield ServerSentEvent(event, "\n".join(data))
            event, data, size = "", [], 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
            size += len(value)
            if size > MAX_SSE_EVENT:
                raise body.http.error(
                    f"an event is larger than {MAX_SSE_EVENT} characters", "engine_bad_response"
                )
        elif name == "event":
            event = value


def parse_json(client: OpenAICompatClient, text: str | bytes, what: str) -> Any:
    """Decode JSON from the server, mapping garbage to ``engine_bad_response``.

    Lone surrogate escapes become U+FFFD (issue 8, defect 2): such text would fail the
    client's frame and, kept in the conversation, the next request to the engine.
    """
    try:
        return loads(text, peer="engine")
    except ValueError:
        shown = excerpt(
            client.scrub(text if isinstance(text, str) else text.decode("utf-8", "replace")), 80
        )
        raise client.error(f"{what} is not JSON: {shown!r}", "engine_bad_response") from None


def _error_detail(text: str, reason: str) -> str:
    """The message of an OpenAI error body, else the start of the body text (bounded)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message: str = error["message"]
            code = error.get("code") or error.get("type")
            detail = f"{message} ({code})" if isinstance(code, str) and code else message
            return excerpt(detail, 2 * _EXCERPT_CHARS)
        if isinstance(error, str):
            return excerpt(error, 2 * _EXCERPT_CHARS)
        if isinstance(body.get("detail"), str):  # FastAPI-style servers
            return excerpt(str(body["detail"]), 2 * _EXCERPT_CHARS)
    return excerpt(text.strip(), 2 * _EXCERPT_CHARS) or reason or "no body"
