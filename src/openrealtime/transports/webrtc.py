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

With ``--redis-url`` (several workers or instances), the call is claimed in the shared
:mod:`~openrealtime.transports.call_directory` before its answer is sent, and a hangup for a
call another process owns is relayed there by one HTTP request (docs/deployment.md "Calls
across workers and instances").

This module is a shell (house rule 3): it negotiates and carries; the session decides.
"""

from __future__ import annotations

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
from aiortc.mediastreams import MediaStreamTrack
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
from openrealtime.protocol.codec import JsonInputError, loads
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.session_config import merge_update
from openrealtime.runtime.lifecycle import SHUTDOWN_MESSAGE
from openrealtime.transports.base import SessionRequest
from openrealtime.transports.call_directory import (
    CallDirectory,
    DirectoryUnavailable,
    call_directory,
)
from openrealtime.transports.rest import NO_KEY_MESSAGE, CallRequestError, openai_error
from openrealtime.transports.webrtc_calls import (
    EVENTS_CHANNEL,
    Call,
    CallRegistry,
    CallTransport,
    call_registry,
    serve_sideband,
)
from openrealtime.transports.webrtc_media import CallMedia, use_audio_jitter_buffer

if TYPE_CHECKING:
    from openrealtime.config import Config
    from openrealtime.services import Services

__all__ = [
    "CALLS_PATH",
    "CONNECT_TIMEOUT_S",
    "DIRECTORY_DOWN",
    "EVENTS_CHANNEL",
    "Call",
    "CallRegistry",
    "CallTransport",
    "authenticate_call",
    "call_error",
    "call_registry",
    "call_session_defaults",
    "cors_headers",
    "preflight",
    "register_webrtc_routes",
    "serve_sideband",
]

_log = logging.getLogger(__name__)

CALLS_PATH = "/v1/realtime/calls"
"""Where browsers post their offer (spec §1.3: no query string in GA clients)."""

CONNECT_TIMEOUT_S = 30.0
"""A call whose peer connection is not up this long after the answer is hung up."""

MAX_OFFER_BYTES = 256 * 1024
"""Largest request body accepted (an offer is a few KiB; a session config a few more)."""

DIRECTORY_DOWN = "The call directory (Redis) did not answer; try again."

_ALLOWED_HEADERS = "Authorization, Content-Type, X-OpenAI-Agents-SDK, OpenAI-Beta, Accept"
"""What browsers send on ``POST /v1/realtime/calls`` (agents-js adds ``X-OpenAI-Agents-SDK``)."""

_ids = RandomIds()


def _new_call_id() -> str:
    """``rtc_`` and 32 hex digits, like the live ``rtc_…`` ids (spec §2.1)."""
    return "rtc_" + secrets.token_hex(16)


# --------------------------------------------------------------------------- HTTP


def cors_headers(request: Request) -> dict[str, str]:
    """CORS headers for browser callers (spec §1.3): any origin, ``Location`` readable."""
    origin = request.headers.get("origin")
    headers = {
        "Access-Control-Allow-Origin": origin or "*",
        "Access-Control-Expose-Headers": "Location",
    }
    if origin:
        headers["Vary"] = "Origin"
    return headers


def call_error(
    request: Request,
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    type_: str = "invalid_request_error",
) -> JSONResponse:
    """An OpenAI-shaped REST error (spec §6.2 "REST errors"), with the CORS headers."""
    return openai_error(status, message, code, type_, param, headers=cors_headers(request))


def authenticate_call(request: Request, config: Config) -> Credential | JSONResponse:
    """The caller's credential (API key or ``ek_`` client secret, spec §1.3), or a 401."""
    token = token_from_authorization(request.headers.get("authorization"))
    try:
        return authenticate(config, token)
    except MissingCredential:
        return call_error(request, 401, NO_KEY_MESSAGE)
    except AuthError as exc:
        return call_error(request, 401, exc.message, exc.code)


async def _read_offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    """The offer SDP and the ``session`` config of a raw or multipart body (spec §1.3 step 3)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_OFFER_BYTES:
        raise CallRequestError(
            f"The request body is larger than {MAX_OFFER_BYTES} bytes.", status=413
        )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: dict[str, Any] | None = None
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=2, max_fields=8, max_part_size=MAX_OFFER_BYTES)
        except HTTPException as exc:  # Starlette's answer to a malformed multipart body
            raise CallRequestError(f"Invalid multipart body: {exc.detail}") from None
        sdp_part = form.get("sdp")
        session_part = form.get("session")
        if sdp_part is None:
            raise CallRequestError(
                "Missing required parameter: 'sdp'.", code="missing_required_parameter", param="sdp"
            )
        sdp = await _part_text(sdp_part)
        if session_part is not None:
            try:
                parsed = loads(await _part_text(session_part))
            except JsonInputError as exc:
                raise CallRequestError(
                    f"Invalid 'session': expected a JSON object ({exc}).",
                    code="invalid_value",
                    param="session",
                ) from None
            if not isinstance(parsed, dict):
                raise CallRequestError(
                    "Invalid 'session': expected a JSON object.",
                    code="invalid_type",
                    param="session",
                )
            session = parsed
    elif content_type in ("application/sdp", "text/plain", ""):
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            raise CallRequestError(
                f"The request body is larger than {MAX_OFFER_BYTES} bytes.", status=413
            )
        sdp = body.decode("utf-8", errors="replace")
    else:
        raise CallRequestError(
            f"Unsupported Content-Type '{content_type}': send the SDP offer as application/sdp, "
            "or as multipart/form-data with parts 'sdp' and 'session'.",
            status=415,
        )
    if not sdp.lstrip().startswith("v=0"):
        raise CallRequestError(
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


def call_session_defaults(
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
        raise CallRequestError(
            f"Invalid value: '{kind}'. WebRTC calls open 'realtime' sessions.",
            code="invalid_value",
            param="session.type",
        )
    model = defaults.get("model") or query_model or "gpt-realtime"
    if not isinstance(model, str) or not config.model_allowed(model):
        raise CallRequestError(
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
        return call_error(request, 503, "The server is not ready.", type_="server_error")
    config = services.config
    credential = authenticate_call(request, config)
    if isinstance(credential, JSONResponse):
        return credential
    if not services.lifecycle.accepting:  # draining (issue 9): no new calls
        return call_error(
            request, 503, SHUTDOWN_MESSAGE, "server_shutting_down", type_="server_error"
        )
    try:
        offer, session = await _read_offer(request)
        defaults, model = call_session_defaults(
            config, credential.session_defaults, session, request.query_params.get("model")
        )
    except CallRequestError as exc:
        return call_error(request, exc.status, exc.message, exc.code, exc.param)

    call_id = _new_call_id()
    directory = call_directory(request.app)
    claimed = False
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
            raise CallRequestError(
                f"Invalid 'sdp': {exc}", code="invalid_value", param="sdp"
            ) from None
        for transceiver in pc.getTransceivers():
            use_audio_jitter_buffer(transceiver)  # 80 ms less on every user turn
        kinds = [t.kind for t in pc.getTransceivers()]
        if "audio" not in kinds:
            raise CallRequestError(
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
        if directory is not None:  # before the answer: a sideband may follow at once, anywhere
            try:
                await directory.claim(call_id)
            except DirectoryUnavailable as exc:
                _log.warning("%s: refused: %s", call_id, exc)
                raise CallRequestError(
                    DIRECTORY_DOWN,
                    code="call_directory_unavailable",
                    status=503,
                    type_="server_error",
                ) from None
            claimed = True
        try:  # last: from here on the driver holds resources that only its run() releases
            driver = SessionDriver(
                transport, request_info, services, defaults=defaults, media=media
            )
        except ProtocolError as exc:
            raise CallRequestError(exc.message, code=exc.code, param=exc.param) from None
    except CallRequestError as exc:
        await _abandon(pc, media, directory if claimed else None, call_id)
        return call_error(request, exc.status, exc.message, exc.code, exc.param, exc.type)
    except BaseException:
        await _abandon(pc, media, directory if claimed else None, call_id)
        raise
    call = Call(call_id, pc, transport, media, driver)
    call.plays_unheard = not any(
        t.kind == "audio" and t.currentDirection in ("sendrecv", "sendonly")
        for t in pc.getTransceivers()
    )
    call.watch_connection(CONNECT_TIMEOUT_S)
    call_registry(request.app).start(call, directory=directory if claimed else None)
    call.log.info(
        "%s: call created (model %s, %s)",
        call_id,
        model,
        "client secret" if credential.kind == "client_secret" else credential.kind,
    )
    headers = {"Location": f"{CALLS_PATH}/{call_id}", **cors_headers(request)}
    return Response(
        pc.localDescription.sdp, status_code=201, media_type="application/sdp", headers=headers
    )


async def _abandon(
    pc: RTCPeerConnection, media: CallMedia, claimed: CallDirectory | None, call_id: str
) -> None:
    """Release what an offer that will not become a call holds."""
    media.end()
    await pc.close()
    if claimed is not None:
        await claimed.release(call_id)


async def preflight(request: Request) -> Response:
    """CORS preflight for the call routes: allow the browser's headers (spec §1.3)."""
    headers = cors_headers(request)
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
