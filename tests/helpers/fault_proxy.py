"""An in-process TCP fault proxy for network-failure tests (reliability-targets.md §0.6, check 5).

``tc netem`` and toxiproxy are not available here, so tests put this proxy between a real client
and the real server and break the path on demand::

    from tests.helpers.fault_proxy import FaultProxy

    async with FaultProxy("127.0.0.1", server_port) as proxy:
        async with connect(proxy.ws_url("/v1/realtime?model=x")) as ws:
            ...
            proxy.blackhole()   # the peer vanishes: no FIN, no RST, nothing forwarded
            proxy.reset()       # or: both sides get a TCP RST

Faults:

* :meth:`FaultProxy.blackhole` stops forwarding in both directions and closes neither socket:
  each end sees a silent, still-open connection (a dead NAT entry, a pulled cable). With
  ``drain=True`` (the default) the proxy keeps reading and drops what it reads (like a route that
  loses every packet; senders see no backpressure) and keeps the tail of what was dropped in
  :attr:`Link.dropped_to_client` / :attr:`Link.dropped_to_server`. With ``drain=False`` it stops
  reading, so the kernel buffers fill and a sender that keeps writing eventually blocks (a
  half-open connection whose peer is gone).
* :meth:`FaultProxy.reset` aborts both sides with ``SO_LINGER`` 0, so each peer gets an RST.

The proxy listens on 127.0.0.1 at a free port and forwards with flow control (a side that cannot
write pauses reading on the other). A FIN from one side is passed on as a FIN (half-close).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Literal

__all__ = ["FaultProxy", "Link"]

_KEEP_DROPPED = 64 * 1024
"""Bytes of dropped traffic each link keeps per direction (the newest)."""

_State = Literal["forward", "blackhole", "stalled", "reset"]


class _Side(asyncio.Protocol):
    """One socket of a link: the client's (``to_server`` data) or the server's."""

    def __init__(self, link: Link, name: Literal["client", "server"]) -> None:
        self.link = link
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def other(self) -> _Side | None:
        return self.link.server if self.name == "client" else self.link.client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        state = self.link.state
        other = self.other
        if state == "forward" and other is not None and other.transport is not None:
            other.transport.write(data)
        elif state == "forward":  # the server side is still connecting: hold the bytes
            self.link.pending += data
        else:
            self.link.drop(self.name, data)

    def eof_received(self) -> bool:
        other = self.other
        if self.link.state == "forward" and other is not None and other.transport is not None:
            if other.transport.can_write_eof():
                other.transport.write_eof()
        return True  # keep our side open: a half-close is the peer's to finish

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        other = self.other
        if self.link.state == "forward" and other is not None and other.transport is not None:
            other.transport.close()

    def pause_writing(self) -> None:
        other = self.other
        if other is not None and other.transport is not None and self.link.state == "forward":
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        other = self.other
        if other is not None and other.transport is not None and self.link.state == "forward":
            other.transport.resume_reading()


class Link:
    """One proxied connection: the client's socket and the proxy's socket to the server."""

    def __init__(self) -> None:
        self.state: _State = "forward"
        self.client: _Side | None = None
        self.server: _Side | None = None
        self.pending = b""
        self.dropped_to_server = bytearray()
        """The newest bytes the client sent that the fault dropped."""
        self.dropped_to_client = bytearray()
        """The newest bytes the server sent that the fault dropped."""
        self.dropped_bytes = {"to_server": 0, "to_client": 0}

    def drop(self, source: Literal["client", "server"], data: bytes) -> None:
        tail = self.dropped_to_server if source == "client" else self.dropped_to_client
        tail += data
        del tail[:-_KEEP_DROPPED]
        self.dropped_bytes["to_server" if source == "client" else "to_client"] += len(data)

    def transports(self) -> list[asyncio.Transport]:
        return [
            side.transport
            for side in (self.client, self.server)
            if side is not None and side.transport is not None
        ]

    def sides(self) -> list[_Side]:
        return [side for side in (self.client, self.server) if side is not None]


class FaultProxy:
    """Forwards TCP from a free loopback port to ``(host, port)``; breaks the path on demand.

    Use it as an async context manager (it listens on enter; on exit it stops listening and
    aborts every connection, so no socket outlives the test).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.links: list[Link] = []
        self._state: _State = "forward"
        self._server: asyncio.Server | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port clients connect to."""
        assert self._server is not None, "start the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy (for helpers that take a server base URL)."""
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        """``ws://127.0.0.1:PORT`` + ``path``."""
        return f"ws://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> FaultProxy:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def blackhole(self, *, drain: bool = True) -> None:
        """Stop forwarding both ways on every connection (and new ones); close no socket.

        Args:
            drain: keep reading and drop the bytes (senders never block), or stop reading
                (kernel buffers fill; a sender that keeps writing eventually blocks).
        """
        self._state = "blackhole" if drain else "stalled"
        for link in self.links:
            if link.state != "reset":
                link.state = self._state
                self._apply(link)

    def reset(self) -> None:
        """Abort every current connection with a TCP RST to both peers (``SO_LINGER`` 0)."""
        for link in self.links:
            link.state = "reset"
            for transport in link.transports():
                sock = transport.get_extra_info("socket")
                if sock is not None and not transport.is_closing():
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()

    async def close(self, wait_s: float = 5.0) -> None:
        """Stop listening, abort every connection, and wait until their sockets are closed."""
        if self._server is not None:
            self._server.close()
        for task in self._connecting:
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        for link in self.links:
            link.state = "reset"
            for transport in link.transports():
                transport.abort()
        lost = [side.lost for link in self.links for side in link.sides() if side.transport]
        if lost:
            await asyncio.wait(lost, timeout=wait_s)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ internals

    def _accept(self) -> _Side:
        link = Link()
        link.state = self._state
        side = _Side(link, "client")
        link.client = side
        self.links.append(link)
        task = asyncio.get_running_loop().create_task(self._connect_upstream(link))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return side

    async def _connect_upstream(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        side = _Side(link, "server")
        try:
            await loop.create_connection(lambda: side, *self.target)
        except OSError:
            for transport in link.transports():
                transport.abort()
            return
        link.server = side
        if link.state == "reset":
            assert side.transport is not None
            side.transport.abort()
            return
        if link.pending and link.state == "forward":
            assert side.transport is not None
            side.transport.write(link.pending)
        elif link.pending:
            link.drop("client", link.pending)
        link.pending = b""
        self._apply(link)

    @staticmethod
    def _apply(link: Link) -> None:
        """Put a link's sockets in the proxy's current fault state."""
        if link.state == "reset":
            return
        for transport in link.transports():
            if transport.is_closing():
                continue
            if link.state == "stalled":
                transport.pause_reading()
            else:
                transport.resume_reading()
