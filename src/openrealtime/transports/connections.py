"""Connection-level guards under uvicorn: bounded request heads and closes that never hang.

uvicorn's own protocols leave three doors open (issue 8, defects 4 and 7):

* A TCP connection that sends nothing, or half a request line, is kept forever: uvicorn's
  keep-alive timer only runs *after* a response. :class:`GuardedHttpProtocol` gives every
  request head :attr:`~GuardedHttpProtocol.head_timeout` seconds (``Config.handshake_timeout``),
  then answers ``408`` (or just closes an idle connection).
* httptools accepts header lines and header counts of any size. The guarded protocol answers
  ``431`` past websockets' own handshake limits (:data:`MAX_HEADER_LINE` bytes a line,
  :data:`MAX_HEADERS` headers, :data:`MAX_HEAD_BYTES` in all), for HTTP requests and WebSocket
  upgrades alike.
* ``asyncio.Transport.close()`` waits until the write buffer is flushed, which a peer that does
  not read never allows: a WebSocket closed with 1008, one failing its keepalive, one told 1012
  at shutdown, or one whose session simply ended, kept megabytes queued and held shutdown for as
  long as the peer stayed. :class:`GuardedWebSocketProtocol` aborts any such connection
  :attr:`~GuardedWebSocketProtocol.abort_after` seconds (``Config.close_timeout``) after its
  close started or its session ended.

``cli.uvicorn_settings`` hands the two classes to uvicorn (``http=``, ``ws=``). They are plain
module-level classes, so uvicorn's worker processes (``--workers``) can unpickle its config;
each connection reads its limits from the :class:`~openrealtime.config.Config` of the app it
serves (``app.state.config``), so every process, and every app of a test process, applies
its own. This module is a shell (house rule 3): it bounds connections and decides nothing
about sessions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from openrealtime.config import Config
from openrealtime.transports.base import FrameSink

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "MAX_HEAD_BYTES",
    "GuardedHttpProtocol",
    "GuardedWebSocketProtocol",
    "PUSH_EXTENSION",
    "guarded_protocols",
]

_log = logging.getLogger(__name__)

MAX_HEADER_LINE = 8192
"""Longest request line or header line, in bytes (websockets' handshake limit)."""

MAX_HEADERS = 128
"""Most header lines in one request (websockets' handshake limit)."""

MAX_HEAD_BYTES = 64 * 1024
"""Most bytes a request head may take before it is complete."""

PUSH_EXTENSION = "openrealtime.push"
"""The ASGI scope extension under which a :class:`GuardedWebSocketProtocol` offers itself to the
app for push delivery (:meth:`GuardedWebSocketProtocol.push_to`)."""

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


def _app_config(uvicorn_config: Any) -> Config | None:
    """The :class:`Config` of the app uvicorn serves, through the middlewares around it."""
    app = getattr(uvicorn_config, "loaded_app", None)
    for _ in range(16):
        if app is None:
            return None
        config = getattr(getattr(app, "state", None), "config", None)
        if isinstance(config, Config):
            return config
        app = getattr(app, "app", None)
    return None


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head past the limits."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and size limits on every request head.

    The deadline starts when the connection opens and again when a kept-alive connection
    starts its next request; it ends when the head is complete (the body is the app's to read).
    """

    head_timeout: float = 10.0
    """Seconds a request head may take: the app's ``Config.handshake_timeout`` (this default
    when the app has no config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app_config = _app_config(self.config)
        if app_config is not None:
            self.head_timeout = app_config.handshake_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_pending = True
        self._head_bytes = 0
        self._head_lines = 0
        self._head_started = False
        """Whether any byte of the pending head arrived (408 then, else a silent close)."""
        self._refusal: tuple[int, str] | None = None

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first head's deadline as the connection opens."""
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the head timer with the connection."""
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser as uvicorn does, counting the bytes of a pending head.

        A head past the limits is refused with 431 (414 for the request line), a malformed one
        with 400.
        """
        if self.parser is None or self.transport.is_closing():
            return  # refused or closing: nothing more is parsed
        if self._head_pending:
            self._head_started = True
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                self._refusal = (400, "invalid HTTP request")
        if self._refusal is None and self._head_pending and self._head_bytes > MAX_HEAD_BYTES:
            self._refusal = (431, "the request head is too large")
        if self._refusal is not None and not self.transport.is_closing():
            self._refuse(*self._refusal)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        """A request starts: its head gets a fresh deadline and fresh counters."""
        super().on_message_begin()
        self._head_pending = True
        self._head_started = True
        self._head_lines = 0
        if self._head_timer is None:
            self._head_bytes = 0
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        """Refuse a request line past :data:`MAX_HEADER_LINE`."""
        super().on_url(url)
        if len(self.url) > MAX_HEADER_LINE:
            self._stop(414, "the request line is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Refuse a header line past :data:`MAX_HEADER_LINE` or the :data:`MAX_HEADERS`-th."""
        self._head_lines += 1
        if self._head_lines > MAX_HEADERS:
            self._stop(431, f"more than {MAX_HEADERS} header lines")
        if len(name) + len(value) + 2 > MAX_HEADER_LINE:
            self._stop(431, "a header line is too long")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is complete: its deadline ends (an upgrade hands over to the WebSocket)."""
        self._head_pending = False
        self._head_started = False
        self._disarm_head_timer()
        super().on_headers_complete()

    # ------------------------------------------------------------------ helpers

    def _stop(self, status: int, why: str) -> None:
        self._refusal = (status, why)
        raise _HeadRefused(why)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._head_pending or self.transport.is_closing():
            return
        if self._head_started:
            self._refuse(408, f"the request head did not arrive within {self.head_timeout:g} s")
        else:  # an idle connection: nothing to answer
            self.transport.close()

    def _refuse(self, status: int, why: str) -> None:
        """Answer ``status`` with a short text body and close the connection."""
        self._disarm_head_timer()
        self._head_pending = False
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        _log.info("refused a request from %s with %d: %s", client, status, why)
        body = why.encode("ascii", "replace") + b"\n"
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed


class _AppQueue(asyncio.Queue[Any]):
    """uvicorn's queue of ASGI messages for the app, which a pushed connection bypasses.

    Every message uvicorn hands the app goes through ``put_nowait``; once the app asked for
    push delivery (:meth:`GuardedWebSocketProtocol.push_to`), received messages go straight to
    its callback and a disconnect becomes ``None``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.deliver: FrameSink | None = None
        self.disconnect_code: int | None = None

    def put_nowait(self, item: Any) -> None:
        deliver = self.deliver
        if deliver is None:
            super().put_nowait(item)
        elif item["type"] == "websocket.disconnect":
            if self.disconnect_code is None:
                self.disconnect_code = item.get("code", 1005)
                deliver(None)
        else:
            text = item.get("text")
            deliver(text if text is not None else item.get("bytes", b""))


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol whose closes never wait on a peer that does not read.

    Once the closing handshake starts (either side, keepalive failure, server shutdown) or the
    session's ASGI task ends, the connection has :attr:`abort_after` seconds to finish; then its
    transport is aborted, dropping whatever the peer never read.

    It also offers the app a faster way in (issue 9, the per-append path): through the scope
    extension :data:`PUSH_EXTENSION` the app may call :meth:`push_to` once the connection is
    accepted, and each message is then handed to its callback as it is parsed, instead of
    travelling through uvicorn's queue, the ASGI ``receive`` and Starlette, and without
    uvicorn's pause and resume of the socket around every message. The app then pauses reading
    itself (:meth:`pause_push`) when it falls behind.
    """

    abort_after: float = 2.0
    """Seconds between the start of a close and the abort: the app's ``Config.close_timeout``
    (this default when the app has no config)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app_config = _app_config(self.config)
        if app_config is not None:
            self.abort_after = app_config.close_timeout
        self.close_timeout = self.abort_after
        self._abort_timer: asyncio.TimerHandle | None = None
        self.queue = _AppQueue()
        self._push_paused = False

    def handle_connect(self, event: Any) -> None:
        """Start the ASGI app as uvicorn does, offering push delivery in the scope."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][PUSH_EXTENSION] = self

    def push_to(self, deliver: FrameSink) -> int | None:
        """Hand every later message to ``deliver`` as it is parsed; ``None`` once disconnected.

        Call once, after the app accepted the connection and instead of ever calling the ASGI
        ``receive`` again. Messages already queued are delivered first, in order.

        Args:
            deliver: called with each text (``str``) or binary (``bytes``) message, then once
                with ``None`` when the connection is gone.

        Returns:
            The disconnect code once the connection is gone (``None`` while it is open).
        """
        queue = self.queue
        assert isinstance(queue, _AppQueue)
        pending = []
        while not queue.empty():
            pending.append(queue.get_nowait())
        queue.deliver = deliver
        for message in pending:
            queue.put_nowait(message)
        if self.read_paused:  # uvicorn paused after the last queued message
            self.read_paused = False
            if not self._push_paused:
                self.transport.resume_reading()
        return queue.disconnect_code

    @property
    def disconnect_code(self) -> int | None:
        """The close code of a pushed connection once it is gone (1005/1006 without one)."""
        queue = self.queue
        return queue.disconnect_code if isinstance(queue, _AppQueue) else None

    def pause_push(self) -> None:
        """Stop reading the socket until :meth:`resume_push` (the app fell behind)."""
        if not self._push_paused:
            self._push_paused = True
            if not self.disconnected:
                self.transport.pause_reading()

    def resume_push(self) -> None:
        """Read the socket again after :meth:`pause_push`."""
        if self._push_paused:
            self._push_paused = False
            if not self.disconnected:
                self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the abort timer with the connection."""
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)

    def send_receive_event_to_app(self) -> None:
        """Hand a whole message to the app; a text message that is not UTF-8 closes 1007.

        As uvicorn does, except that the invalid message is logged at info (uvicorn logs an
        ERROR with a traceback for each, so any client could flood the error log), and that a
        pushed connection's message goes straight to the app's callback.
        """
        if self.close_sent:
            super().send_receive_event_to_app()  # discarded, as uvicorn does
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        message: str | bytes = data
        if self.curr_msg_data_type == "text":
            try:
                message = data.decode()
            except UnicodeDecodeError:
                client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
                _log.info(
                    "closing the WebSocket of %s with 1007: a text message is not UTF-8", client
                )
                self.conn.send_close(1007, "invalid UTF-8 in a text message")
                self.handle_parser_exception()
                return
        queue = self.queue
        if isinstance(queue, _AppQueue) and queue.deliver is not None:
            queue.deliver(message)  # pushed: no queue, no pause and resume per message
            return
        if isinstance(message, str):
            queue.put_nowait({"type": "websocket.receive", "text": message})
        else:
            queue.put_nowait({"type": "websocket.receive", "bytes": bytes(message)})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def shutdown(self) -> None:
        """Server shutdown: uvicorn sends 1012 and closes; abort if the peer does not read."""
        super().shutdown()
        self._abort_later("server shutdown")

    def keepalive_timeout(self) -> None:
        """No pong: uvicorn fails the connection with 1011; abort if the peer does not read."""
        super().keepalive_timeout()
        self._abort_later("keepalive ping timeout")

    async def send(self, message: Any) -> None:
        """Send an ASGI message; a ``websocket.close`` starts the abort deadline."""
        if message.get("type") == "websocket.close" and self.handshake_complete:
            self._abort_later("close sent")
        await super().send(message)

    async def run_asgi(self) -> None:
        """Run the session; once it ended, the connection gets :attr:`abort_after` seconds."""
        try:
            await super().run_asgi()
        finally:
            self._abort_later("session ended")

    def _abort_later(self, why: str) -> None:
        if self._abort_timer is None and not self.disconnected:
            self._abort_timer = self.loop.call_later(self.abort_after, self._abort, why)

    def _abort(self, why: str) -> None:
        self._abort_timer = None
        if self.disconnected:
            return
        pending = self.transport.get_write_buffer_size()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        _log.info(
            "aborted the WebSocket of %s %g s after %s (%d bytes it never read dropped)",
            client,
            self.abort_after,
            why,
            pending,
        )
        self.transport.abort()


def guarded_protocols(
    config: Config | None = None,
) -> tuple[type[GuardedHttpProtocol], type[GuardedWebSocketProtocol]]:
    """The HTTP and WebSocket protocol classes to give uvicorn (``http=``, ``ws=``).

    Each connection takes its limits (``handshake_timeout``, ``close_timeout``) from the
    config of the app it serves, so the classes are the same for every config and pickle by
    name into uvicorn's worker processes.

    Args:
        config: unused; kept so callers may pass the config the limits come from.

    Returns:
        ``(GuardedHttpProtocol, GuardedWebSocketProtocol)``.
    """
    return GuardedHttpProtocol, GuardedWebSocketProtocol
