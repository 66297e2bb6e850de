"""One WebRTC call once it is answered: its transport, its lifetime, its sideband WebSockets.

:class:`CallTransport` carries the session's JSON events over the ``oai-events`` data channel
(and to every sideband WebSocket attached with ``/v1/realtime?call_id=…``, spec §1.4);
:class:`Call` runs the session driver and releases the peer connection, media and sidebands
however the call ends; :class:`CallRegistry` (``app.state``) owns every call's task. The HTTP
side that answers offers is :mod:`openrealtime.transports.webrtc`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError

from openrealtime.core.ids import RandomIds
from openrealtime.logging_setup import SessionLogger
from openrealtime.protocol.codec import dump_event
from openrealtime.transports.base import Transport, TransportClosed
from openrealtime.transports.webrtc_media import CallMedia

if TYPE_CHECKING:
    from openrealtime.runtime.driver import SessionDriver
    from openrealtime.transports.call_directory import CallDirectory

__all__ = [
    "EVENTS_CHANNEL",
    "SIDEBAND_QUEUE_MAX",
    "Call",
    "CallRegistry",
    "LiveCall",
    "CallTransport",
    "call_registry",
    "serve_sideband",
]

_log = logging.getLogger(__name__)

_ids = RandomIds()

EVENTS_CHANNEL = "oai-events"
"""The data channel label the clients create (spec §1.3 step 1)."""

SIDEBAND_QUEUE_MAX = 1024
"""Events queued for one sideband WebSocket before it is closed for not reading (1008)."""

_HIGH_WATER = 1 << 20
"""Data-channel bytes buffered before ``send_text`` waits for the peer (backpressure)."""

_LOW_WATER = 256 * 1024
"""Buffered bytes below which a waiting ``send_text`` resumes."""


# --------------------------------------------------------------------------- transport


class _Sideband:
    """One attached sideband WebSocket's outgoing queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(SIDEBAND_QUEUE_MAX)
        self.overflowed = False

    def push(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed = True

    def finish(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class CallTransport(Transport):
    """The session's :class:`~openrealtime.transports.base.Transport` for one call.

    Client events come from the ``oai-events`` data channel and from attached sideband
    WebSockets, in arrival order; server events go to the data channel and to every sideband.
    :meth:`receive` returns ``None`` once the call is over (:meth:`end`), which ends the session.
    """

    def __init__(self) -> None:
        self._inbound: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._channel: RTCDataChannel | None = None
        self._channel_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._sidebands: set[_Sideband] = set()
        self._ended = False
        self.end_reason = ""
        """Why the call ended (for the log)."""

    @property
    def ended(self) -> bool:
        """Whether the call is over."""
        return self._ended

    # ---------------------------------------------------------------- wiring

    def attach_channel(self, channel: RTCDataChannel) -> None:
        """Carry events over ``channel`` (call from ``pc.on("datachannel")``)."""
        if self._channel is not None or self._ended:
            channel.close()
            return
        self._channel = channel
        channel.bufferedAmountLowThreshold = _LOW_WATER
        channel.on("message", self._on_message)
        channel.on("close", lambda: self.end("data channel closed"))
        channel.on("bufferedamountlow", self._drained.set)
        if channel.readyState == "open":
            self._channel_ready.set()
        else:
            channel.on("open", self._channel_ready.set)

    def without_channel(self) -> None:
        """The offer has no data channel: events go to sidebands only."""
        self._channel_ready.set()

    def end(self, reason: str) -> None:
        """The call is over: the session sees the client leave; sidebands are released."""
        if self._ended:
            return
        self._ended = True
        self.end_reason = reason
        self._inbound.put_nowait(None)
        self._channel_ready.set()
        self._drained.set()
        for sideband in self._sidebands:
            sideband.finish()

    def _on_message(self, message: str | bytes) -> None:
        if not self._ended:
            self._inbound.put_nowait(message)

    # ---------------------------------------------------------------- sidebands

    def add_sideband(self) -> _Sideband:
        """Start copying server events to a new sideband (spec §1.4)."""
        sideband = _Sideband()
        if self._ended:
            sideband.finish()
        else:
            self._sidebands.add(sideband)
        return sideband

    def remove_sideband(self, sideband: _Sideband) -> None:
        """Stop copying events to a sideband that went away."""
        self._sidebands.discard(sideband)

    def inject(self, message: str | bytes) -> None:
        """A client event from a sideband: handled like one from the data channel."""
        self._on_message(message)

    # ---------------------------------------------------------------- Transport

    async def receive(self) -> str | bytes | None:
        """The next client event (data channel or sideband); ``None`` once the call is over."""
        if self._ended and self._inbound.empty():
            return None
        return await self._inbound.get()

    async def send_text(self, text: str) -> None:
        """Send one server event to the data channel and every sideband.

        Waits for the data channel to open and for its buffer to drain below the high-water
        mark (a peer that stops reading stalls the session's outbox, which closes it).

        Raises:
            TransportClosed: the call is over.
        """
        if self._ended:
            raise TransportClosed("the call is over")
        for sideband in self._sidebands:
            sideband.push(text)
        await self._channel_ready.wait()
        channel = self._channel
        while channel is not None and channel.bufferedAmount > _HIGH_WATER and not self._ended:
            self._drained.clear()
            await self._drained.wait()
        if self._ended:
            raise TransportClosed("the call is over")
        if channel is None:
            return
        try:
            channel.send(text)
        except ValueError as exc:  # larger than the peer's a=max-message-size
            _log.warning("event of %d bytes dropped: %s", len(text.encode()), exc)
            channel.send(_too_large(text, str(exc)))
        except InvalidStateError:
            self.end("data channel closed")
            raise TransportClosed("the data channel is closed") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The session closed (``session.close``, expiry, a stalled peer): end the call."""
        self.end(reason or f"session closed ({code})")

    async def flush(self, wait_s: float) -> None:
        """Wait (at most ``wait_s``) until the data channel has sent what it buffered."""
        channel = self._channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount == 0:
            return
        sent = asyncio.Event()
        channel.bufferedAmountLowThreshold = 0
        channel.on("bufferedamountlow", sent.set)
        channel.on("close", sent.set)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await sent.wait()


def _too_large(text: str, why: str) -> str:
    """An ``error`` event standing in for an event the data channel cannot carry."""
    try:
        kind = json.loads(text).get("type", "event")
    except (ValueError, AttributeError):
        kind = "event"
    return json.dumps(
        {
            "type": "error",
            "event_id": _ids.new("event"),
            "error": {
                "type": "invalid_request_error",
                "code": "event_too_large",
                "message": f"The '{kind}' event is too large for the data channel: {why}. "
                "Use the sideband WebSocket (/v1/realtime?call_id=…) for large events.",
                "param": None,
                "event_id": None,
            },
        }
    )


# --------------------------------------------------------------------------- call


class Call:
    """One WebRTC call: its peer connection, media, transport and session driver."""

    def __init__(
        self,
        call_id: str,
        pc: RTCPeerConnection,
        transport: CallTransport,
        media: CallMedia,
        driver: SessionDriver,
    ) -> None:
        self.id = call_id
        self.pc = pc
        self.transport = transport
        self.media = media
        self.driver = driver
        self.log = SessionLogger(_log, driver.session.id)
        self._connect_timer: asyncio.TimerHandle | None = None
        self.plays_unheard = False
        """The caller takes no audio (a ``sendonly`` offer): the output is still paced in real
        time, into nowhere, so ``output_audio_buffer.*`` events and truncation stay true."""

    def watch_connection(self, timeout_s: float) -> None:
        """End the call if the connection fails, closes, or is not up within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        self._connect_timer = loop.call_later(timeout_s, self._not_connected, timeout_s)
        self.pc.on("connectionstatechange", self._on_connection_state)

    def _not_connected(self, timeout_s: float) -> None:
        self.transport.end(f"not connected within {timeout_s:g} s")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.log.debug("%s: connection %s", self.id, state)
        if state == "connected" and self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        elif state in ("failed", "closed"):
            self.transport.end(f"connection {state}")

    def hangup(self, reason: str = "hung up") -> None:
        """End the call (``POST …/hangup``, shutdown); the call's task then cleans up."""
        self.transport.end(reason)

    async def run(self) -> None:
        """Serve the session until the call ends, then release everything the call holds."""
        self.log.info("%s: call started", self.id)
        unheard = asyncio.create_task(self._play_unheard()) if self.plays_unheard else None
        try:
            await self.driver.run()
        except Exception:
            self.log.exception("%s: session failed", self.id)
        finally:
            if unheard is not None:
                unheard.cancel()
                await asyncio.gather(unheard, return_exceptions=True)
            self.transport.end("session ended")
            if self._connect_timer is not None:
                self._connect_timer.cancel()
            self.media.end()
            await self.transport.flush(1.0)  # the last events (e.g. session_expired) go out
            await self.pc.close()
            self.log.info("%s: call ended (%s)", self.id, self.transport.end_reason)

    async def _play_unheard(self) -> None:
        """Read the output track as aiortc's sender would, for a caller that takes no audio."""
        while True:
            try:
                await self.media.track.recv()
            except MediaStreamError:
                return


class LiveCall(Protocol):
    """What the registry and the sidebands need of a call (WebRTC's :class:`Call`, SIP's)."""

    id: str
    transport: CallTransport
    driver: SessionDriver
    log: SessionLogger

    def hangup(self, reason: str = "hung up") -> None:
        """End the call; its :meth:`run` then releases what it holds."""
        ...

    async def run(self) -> None:
        """Serve the session until the call ends."""
        ...


class CallRegistry:
    """The live calls of one app (``app.state.calls``); owns each call's task.

    This is the in-process registry, the only one without ``--redis-url``. With it, each call
    is also claimed in the shared :class:`~openrealtime.transports.call_directory.CallDirectory`
    (by the route that answers the offer) and released here when its task ends.
    """

    def __init__(self) -> None:
        self._calls: dict[str, LiveCall] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_id: str) -> LiveCall | None:
        """The live call with this id, if any."""
        return self._calls.get(call_id)

    def start(self, call: LiveCall, *, directory: CallDirectory | None = None) -> None:
        """Run ``call`` until it ends; it is forgotten then.

        Args:
            call: the answered call.
            directory: where the call was claimed; it is released there when the call ends.
        """
        self._calls[call.id] = call
        task = asyncio.create_task(self._run(call, directory), name=f"call {call.id}")
        self._tasks[call.id] = task
        task.add_done_callback(lambda _: self._forget(call.id))

    @staticmethod
    async def _run(call: LiveCall, directory: CallDirectory | None) -> None:
        try:
            await call.run()
        finally:
            if directory is not None:
                await directory.release(call.id)

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self._tasks.pop(call_id, None)

    async def hangup(self, call_id: str, *, wait_s: float = 5.0) -> bool:
        """End a call and wait (at most ``wait_s``) for it to be cleaned up.

        Returns:
            Whether the call existed.
        """
        call = self._calls.get(call_id)
        task = self._tasks.get(call_id)
        if call is None or task is None:
            return False
        call.hangup()
        await asyncio.wait({task}, timeout=wait_s)
        return True

    async def close_all(self, *, wait_s: float = 5.0) -> None:
        """End every call (server shutdown); cancel those that do not end within ``wait_s``."""
        for call in list(self._calls.values()):
            call.hangup("server shutting down")
        tasks = set(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=wait_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


def call_registry(app: Any) -> CallRegistry:
    """The app's :class:`CallRegistry` (created on first use)."""
    registry = getattr(app.state, "calls", None)
    if registry is None:
        registry = app.state.calls = CallRegistry()
    assert isinstance(registry, CallRegistry)
    return registry


# --------------------------------------------------------------------------- sideband


async def serve_sideband(app: Any, websocket: Transport, call_id: str) -> bool:
    """Attach an accepted WebSocket to a live call as its sideband (spec §1.4).

    The WebSocket gets a ``session.created`` with the current config, then every server event
    of the call; its client events go to the call's session like the data channel's. Returns
    when the WebSocket or the call ends (the caller closes the socket).

    Args:
        app: the app holding the :class:`CallRegistry`.
        websocket: the sideband connection (after its handshake and auth).
        call_id: the ``call_id`` query parameter.

    Returns:
        ``False`` when no such call is live (nothing was sent), else ``True``.
    """
    call = call_registry(app).get(call_id)
    if call is None or call.transport.ended:
        return False
    created = dump_event(call.driver.session.session_created())
    sideband = call.transport.add_sideband()
    call.log.info("%s: sideband attached", call_id)

    async def forward() -> None:
        await websocket.send_text(created)
        while (text := await sideband.queue.get()) is not None:
            if sideband.overflowed:
                await websocket.close(1008, "client is not reading events")
                return
            await websocket.send_text(text)

    async def listen() -> None:
        while (message := await websocket.receive()) is not None:
            call.transport.inject(message)

    tasks = [asyncio.create_task(forward()), asyncio.create_task(listen())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        call.transport.remove_sideband(sideband)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, TransportClosed):
                call.log.error("%s: sideband failed: %r", call_id, result)
        call.log.info("%s: sideband detached", call_id)
    return True
