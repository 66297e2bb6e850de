"""WebRTC calls (spec §1.3) and their sideband WebSockets (spec §1.4), with aiortc.

``POST /v1/realtime/calls`` takes the caller's SDP offer (a raw ``application/sdp`` body, or a
``multipart/form-data`` body with parts ``sdp`` and ``session``), opens one
``RTCPeerConnection`` for it and answers ``201`` with the SDP answer and
``Location: /v1/realtime/calls/rtc_…``. The session itself is the same
:class:`~openrealtime.runtime.driver.SessionDriver` as over WebSocket, on a
:class:`CallTransport`: the same JSON events over the ``oai-events`` data channel (and over any
sideband WebSocket attached with ``/v1/realtime?call_id=…``), input audio from the caller's Opus
track, output audio played on the answer's track from the call's output buffer
(:mod:`openrealtime.transports.webrtc_media`) instead of ``response.output_audio.delta``.

A call ends on ``POST /v1/realtime/calls/{call_id}/hangup``, when the data channel closes, when
the connection fails or closes, when it never connects (:data:`CONNECT_TIMEOUT_S`), when the
session closes (``session.close``, expiry), and at server shutdown
(:meth:`CallRegistry.close_all`, from the app's lifespan). Each call is one task owned by the
:class:`CallRegistry`; ending it closes its peer connection, tracks and sidebands.

This module is a shell (house rule 3): it negotiates and carries; the session decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from openrealtime.auth import (
    AuthError,
    Credential,
    MissingCredential,
    authenticate,
    token_from_authorization,
)
from openrealtime.core.ids import RandomIds
from openrealtime.logging_setup import SessionLogger
from openrealtime.protocol.codec import dump_event
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.session_config import merge_update
from openrealtime.transports.base import SessionRequest, Transport, TransportClosed
from openrealtime.transports.webrtc_media import CallMedia, use_audio_jitter_buffer

if TYPE_CHECKING:
    from openrealtime.app import Services
    from openrealtime.config import Config
    from openrealtime.runtime.driver import SessionDriver

__all__ = [
    "CALLS_PATH",
    "CONNECT_TIMEOUT_S",
    "EVENTS_CHANNEL",
    "Call",
    "CallRegistry",
    "CallTransport",
    "call_registry",
    "register_webrtc_routes",
    "serve_sideband",
]

_log = logging.getLogger(__name__)

CALLS_PATH = "/v1/realtime/calls"
"""Where browsers post their offer (spec §1.3: no query string in GA clients)."""

EVENTS_CHANNEL = "oai-events"
"""The data channel label the clients create (spec §1.3 step 1)."""

CONNECT_TIMEOUT_S = 30.0
"""A call whose peer connection is not up this long after the answer is hung up."""

MAX_OFFER_BYTES = 256 * 1024
"""Largest request body accepted (an offer is a few KiB; a session config a few more)."""

SIDEBAND_QUEUE_MAX = 1024
"""Events queued for one sideband WebSocket before it is closed for not reading (1008)."""

_HIGH_WATER = 1 << 20
"""Data-channel bytes buffered before ``send_text`` waits for the peer (backpressure)."""

_LOW_WATER = 256 * 1024
"""Buffered bytes below which a waiting ``send_text`` resumes."""

_NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)

_ALLOWED_HEADERS = "Authorization, Content-Type, X-OpenAI-Agents-SDK, OpenAI-Beta, Accept"
"""What browsers send on ``POST /v1/realtime/calls`` (agents-js adds ``X-OpenAI-Agents-SDK``)."""

_ids = RandomIds()


def _new_call_id() -> str:
    """``rtc_`` and 32 hex digits, like the live ``rtc_…`` ids (spec §2.1)."""
    return "rtc_" + secrets.token_hex(16)


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


class CallRegistry:
    """The live calls of one app (``app.state.calls``); owns each call's task."""

    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_id: str) -> Call | None:
        """The live call with this id, if any."""
        return self._calls.get(call_id)

    def start(self, call: Call) -> None:
        """Run ``call`` until it ends; it is forgotten then."""
        self._calls[call.id] = call
        task = asyncio.create_task(call.run(), name=f"call {call.id}")
        self._tasks[call.id] = task
        task.add_done_callback(lambda _: self._forget(call.id))

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


# --------------------------------------------------------------------------- HTTP


class _BadRequest(Exception):
    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status = status


def _cors(request: Request) -> dict[str, str]:
    """CORS headers for browser callers (spec §1.3): any origin, ``Location`` readable."""
    origin = request.headers.get("origin")
    headers = {
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Expose-Headers": "Location",
    }
    if origin:
        headers["Vary"] = "Origin"
    return headers


def _error(
    request: Request,
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    type_: str = "invalid_request_error",
) -> JSONResponse:
    """An OpenAI-shaped REST error (spec §6.2 "REST errors"), with the CORS headers."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=_cors(request))


def _authenticate(request: Request, config: Config) -> Credential | JSONResponse:
    """The caller's credential (API key or ``ek_`` client secret, spec §1.3), or a 401."""
    token = token_from_authorization(request.headers.get("authorization"))
    try:
        return authenticate(config, token)
    except MissingCredential:
        return _error(request, 401, _NO_KEY_MESSAGE)
    except AuthError as exc:
        return _error(request, 401, exc.message, exc.code)


async def _read_offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    """The offer SDP and the ``session`` config of a raw or multipart body (spec §1.3 step 3)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_OFFER_BYTES:
        raise _BadRequest(f"The request body is larger than {MAX_OFFER_BYTES} bytes.", status=413)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: dict[str, Any] | None = None
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=2, max_fields=8, max_part_size=MAX_OFFER_BYTES)
        except HTTPException as exc:  # Starlette's answer to a malformed multipart body
            raise _BadRequest(f"Invalid multipart body: {exc.detail}") from None
        sdp_part = form.get("sdp")
        session_part = form.get("session")
        if sdp_part is None:
            raise _BadRequest(
                "Missing required parameter: 'sdp'.", code="missing_required_parameter", param="sdp"
            )
        sdp = await _part_text(sdp_part)
        if session_part is not None:
            try:
                parsed = json.loads(await _part_text(session_part))
            except ValueError:
                raise _BadRequest(
                    "Invalid 'session': expected a JSON object.",
                    code="invalid_value",
                    param="session",
                ) from None
            if not isinstance(parsed, dict):
                raise _BadRequest(
                    "Invalid 'session': expected a JSON object.",
                    code="invalid_type",
                    param="session",
                )
            session = parsed
    elif content_type in ("application/sdp", "text/plain", ""):
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            raise _BadRequest(
                f"The request body is larger than {MAX_OFFER_BYTES} bytes.", status=413
            )
        sdp = body.decode("utf-8", errors="replace")
    else:
        raise _BadRequest(
            f"Unsupported Content-Type '{content_type}': send the SDP offer as application/sdp, "
            "or as multipart/form-data with parts 'sdp' and 'session'.",
            status=415,
        )
    if not sdp.lstrip().startswith("v=0"):
        raise _BadRequest(
            "Invalid 'sdp': expected an SDP offer (starting with 'v=0').",
            code="invalid_value",
            param="sdp",
        )
    return sdp, session


async def _part_text(part: str | UploadFile) -> str:
    if isinstance(part, str):
        return part
    data = await part.read()
    return data.decode("utf-8", errors="replace")


def _session_defaults(
    config: Config,
    secret_defaults: dict[str, Any] | None,
    session: dict[str, Any] | None,
    query_model: str | None,
) -> tuple[dict[str, Any], str]:
    """The session's defaults (client secret, then the request's ``session``) and its model."""
    defaults: dict[str, Any] = dict(secret_defaults or {})
    if session is not None:
        defaults = merge_update(defaults, session)
    kind = defaults.setdefault("type", "realtime")
    if kind != "realtime":
        raise _BadRequest(
            f"Invalid value: '{kind}'. WebRTC calls open 'realtime' sessions.",
            code="invalid_value",
            param="session.type",
        )
    model = defaults.get("model") or query_model or "gpt-realtime"
    if not isinstance(model, str) or not config.model_allowed(model):
        raise _BadRequest(
            f'Model "{model}" is not supported in realtime mode. '
            f"Supported models: {', '.join(config.models)}.",
            code="invalid_model",
            param="session.model",
        )
    return defaults, model


def ice_configuration(config: Config) -> RTCConfiguration:
    """The peer connection's ICE servers (``--ice-server``; TURN ones get the credentials).

    With none, only host candidates are offered (no STUN lookup, which would stall offline).
    """
    servers = [
        RTCIceServer(urls=url)
        if url.startswith("stun:")
        else RTCIceServer(urls=url, username=config.ice_username, credential=config.ice_credential)
        for url in config.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


async def create_call(request: Request) -> Response:
    """``POST /v1/realtime/calls``: answer an SDP offer and start the call (spec §1.3).

    Registered by :func:`register_webrtc_routes`. Returns ``201`` with the SDP answer
    (``application/sdp``) and ``Location: /v1/realtime/calls/rtc_…``; ``401`` for a missing or
    bad key; ``400`` for a bad body, offer or session config (OpenAI error JSON).
    """
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return _error(request, 503, "The server is not ready.", type_="server_error")
    config = services.config
    credential = _authenticate(request, config)
    if isinstance(credential, JSONResponse):
        return credential
    try:
        offer, session = await _read_offer(request)
        defaults, model = _session_defaults(
            config, credential.session_defaults, session, request.query_params.get("model")
        )
    except _BadRequest as exc:
        return _error(request, exc.status, exc.message, exc.code, exc.param)

    call_id = _new_call_id()
    pc = RTCPeerConnection(ice_configuration(config))
    media = CallMedia()
    transport = CallTransport()

    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio" and media.remote is None:
            media.remote = track

    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label == EVENTS_CHANNEL:
            transport.attach_channel(channel)

    pc.on("track", on_track)
    pc.on("datachannel", on_datachannel)
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as exc:  # aiortc raises ValueError and its own errors for bad SDP
            raise _BadRequest(f"Invalid 'sdp': {exc}", code="invalid_value", param="sdp") from None
        for transceiver in pc.getTransceivers():
            use_audio_jitter_buffer(transceiver)  # 80 ms less on every user turn
        kinds = [t.kind for t in pc.getTransceivers()]
        if "audio" not in kinds:
            raise _BadRequest(
                "Invalid 'sdp': the offer has no audio media section (add a microphone track "
                "or an audio transceiver).",
                code="invalid_value",
                param="sdp",
            )
        pc.addTrack(media.track)  # reuses the offer's audio transceiver: send + receive
        if "m=application" not in offer:
            transport.without_channel()
        await pc.setLocalDescription(await pc.createAnswer())  # gathers our ICE candidates
        from openrealtime.runtime.driver import SessionDriver

        request_info = SessionRequest(kind="realtime", model=model, session_label=_ids.new("sess"))
        try:  # last: from here on the driver holds resources that only its run() releases
            driver = SessionDriver(
                transport, request_info, services, defaults=defaults, media=media
            )
        except ProtocolError as exc:
            raise _BadRequest(exc.message, code=exc.code, param=exc.param) from None
    except _BadRequest as exc:
        media.end()
        await pc.close()
        return _error(request, exc.status, exc.message, exc.code, exc.param)
    except BaseException:
        media.end()
        await pc.close()
        raise
    call = Call(call_id, pc, transport, media, driver)
    call.plays_unheard = not any(
        t.kind == "audio" and t.currentDirection in ("sendrecv", "sendonly")
        for t in pc.getTransceivers()
    )
    call.watch_connection(CONNECT_TIMEOUT_S)
    call_registry(request.app).start(call)
    call.log.info(
        "%s: call created (model %s, %s)",
        call_id,
        model,
        "client secret" if credential.kind == "client_secret" else credential.kind,
    )
    headers = {"Location": f"{CALLS_PATH}/{call_id}", **_cors(request)}
    return Response(
        pc.localDescription.sdp, status_code=201, media_type="application/sdp", headers=headers
    )


async def hangup_call(request: Request) -> Response:
    """``POST /v1/realtime/calls/{call_id}/hangup``: end a call (spec §1.5; also for WebRTC).

    Returns ``200`` with an empty body, ``404`` for an unknown call, ``401`` without a key.
    """
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return _error(request, 503, "The server is not ready.", type_="server_error")
    denied = _authenticate(request, services.config)
    if isinstance(denied, JSONResponse):
        return denied
    call_id = request.path_params["call_id"]
    if not await call_registry(request.app).hangup(call_id):
        return _error(
            request, 404, f"No active call with id '{call_id}'.", "call_not_found", "call_id"
        )
    return Response(status_code=200, headers=_cors(request))


async def preflight(request: Request) -> Response:
    """CORS preflight for the call routes: allow the browser's headers (spec §1.3)."""
    headers = _cors(request)
    headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    asked = request.headers.get("access-control-request-headers")
    headers["Access-Control-Allow-Headers"] = asked or _ALLOWED_HEADERS
    headers["Access-Control-Max-Age"] = "600"
    return Response(status_code=204, headers=headers)


def register_webrtc_routes(app: FastAPI) -> None:
    """Add the WebRTC call routes to ``app`` and its :class:`CallRegistry`; call from the factory.

    The app's lifespan must call ``await call_registry(app).close_all()`` at shutdown.
    """
    call_registry(app)
    app.add_api_route(CALLS_PATH, create_call, methods=["POST"], include_in_schema=False)
    app.add_api_route(CALLS_PATH, preflight, methods=["OPTIONS"], include_in_schema=False)
    hangup_path = CALLS_PATH + "/{call_id}/hangup"
    app.add_api_route(hangup_path, hangup_call, methods=["POST"], include_in_schema=False)
    app.add_api_route(hangup_path, preflight, methods=["OPTIONS"], include_in_schema=False)


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
