"""The ``/v1/realtime`` WebSocket route (spec §1.1) and a :class:`Transport` over Starlette.

The route accepts the upgrade first, like the live service, then checks in this order: the beta
shape (``OpenAI-Beta: realtime=v1``), authentication (an API key or an ephemeral client secret,
through :func:`openrealtime.auth.authenticate`), and the query (exactly one of ``model``,
``intent=transcription``, ``call_id``; none needed with a client secret, whose session config
becomes the session's defaults, spec §1.2). A failed check is answered with one ``error`` event
(spec §6.1) in one text frame, then a close (3000 for auth, 4000 for the request shape). A good
handshake hands a :class:`StarletteWebSocketTransport` and a
:class:`~openrealtime.transports.base.SessionRequest` to the session runner.

This module is a shell (design.md house rule 3): it translates the handshake and frames; it
decides nothing about the session itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast
from urllib.parse import urlencode

from starlette.datastructures import Headers, QueryParams
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from openrealtime import metrics
from openrealtime.auth import (
    AuthError,
    Credential,
    MissingCredential,
    authenticate,
    token_from_authorization,
)
from openrealtime.core.ids import random_base62
from openrealtime.logging_setup import SessionLogger
from openrealtime.protocol.errors import ErrorType, ProtocolError
from openrealtime.runtime.lifecycle import SHUTDOWN_MESSAGE
from openrealtime.transports.base import FrameSink, SessionRequest, Transport, TransportClosed
from openrealtime.transports.connections import PUSH_EXTENSION, GuardedWebSocketProtocol

if TYPE_CHECKING:
    from fastapi import FastAPI

    from openrealtime.config import Config
    from openrealtime.services import Services

__all__ = [
    "BETA_SUBPROTOCOL",
    "CLOSE_AUTH",
    "CLOSE_INTERNAL",
    "CLOSE_POLICY",
    "CLOSE_REQUEST",
    "CLOSE_TRY_AGAIN",
    "KEY_SUBPROTOCOL_PREFIX",
    "REALTIME_PATH",
    "REALTIME_SUBPROTOCOL",
    "HandshakeRejection",
    "SessionRunner",
    "StarletteWebSocketTransport",
    "check_handshake",
    "new_event_id",
    "realtime_websocket_endpoint",
    "register_websocket_routes",
]

_log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
"""Where clients connect (openai-python maps ``base_url`` ``…/v1`` to ``ws://…/v1/realtime``)."""

REALTIME_SUBPROTOCOL = "realtime"
"""Browsers offer it first; the server must select it or the browser fails the connection."""

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
"""Browsers send their key as a subprotocol with this prefix; it is never echoed."""

BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
"""The beta clients' subprotocol; rejected like the ``OpenAI-Beta`` header."""

CLOSE_AUTH = 3000
"""Close code after an authentication error (spec §1.1, live)."""

CLOSE_REQUEST = 4000
"""Close code after a request-shape error: beta header, model, query (spec §1.1, live)."""

CLOSE_POLICY = 1008
"""Close code for a client that stopped reading (reliability-targets.md §5)."""

CLOSE_INTERNAL = 1011
"""Close code when the server itself failed."""

CLOSE_TRY_AGAIN = 1013
"""Close code for a session refused because the server is shutting down (RFC 6455 "try again
later")."""

_MAX_REASON_BYTES = 123
"""RFC 6455 §5.5: a close frame's reason fits in 123 bytes."""

_ID_LEN = 21

_MISSING_MODEL = (
    "You must provide a model parameter, for example "
    "wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5"
)
_BETA_DISABLED = (
    "The Realtime API beta shape is disabled: remove the 'OpenAI-Beta: realtime=v1' header "
    "(or the 'openai-beta.realtime-v1' subprotocol) and use the GA interface."
)


def new_event_id() -> str:
    """Return a fresh server event id, ``event_`` plus 21 base62 characters (spec §2.1)."""
    return "event_" + random_base62(_ID_LEN)


def _new_session_label() -> str:
    return "sess_" + random_base62(_ID_LEN)


def _error_event_json(
    code: str | None,
    message: str,
    *,
    param: str | None = None,
    error_type: ErrorType = "invalid_request_error",
) -> str:
    """One ``error`` server event (spec §6.1) as JSON, for a handshake refused after accept."""
    error = ProtocolError(code, message, param=param, type=error_type)
    event = {"type": "error", "event_id": new_event_id(), "error": error.payload()}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode("utf-8", errors="ignore")


# --------------------------------------------------------------------------- transport


class StarletteWebSocketTransport(Transport):
    """A :class:`~openrealtime.transports.base.Transport` over an accepted Starlette WebSocket.

    Create one per accepted connection and hand it to the session runner. ``receive`` returns
    text or bytes, then ``None`` forever once the peer is gone; ``send_text`` raises
    :class:`TransportClosed` once the socket is closed (by either side); ``close`` is
    idempotent and never raises.

    Args:
        websocket: an accepted WebSocket.
        send_timeout: if set, a ``send_text`` that cannot hand its frame to the socket for this
            many seconds means the client stopped reading (the socket's buffers are full): the
            transport closes with 1008 and raises :class:`TransportClosed`
            (``Config.outbound_stall_seconds``).
        close_timeout: the most seconds ``close`` waits to hand its close frame to the socket.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        send_timeout: float | None = None,
        close_timeout: float = 1.0,
    ) -> None:
        self._ws = websocket
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._closed = False
        self._peer_gone = False
        self.peer_close_code: int | None = None
        """The close code the peer sent (or 1005/1006 from the server), once it is gone."""
        self.close_code: int | None = None
        """The close code this side sent, if it closed first."""
        self._protocol: GuardedWebSocketProtocol | None = None
        """The connection's protocol once messages are pushed (:meth:`push_to`)."""

    @property
    def closed(self) -> bool:
        """Whether the socket is closed (by this side or the peer)."""
        return self._closed

    async def receive(self) -> str | bytes | None:
        """Return the next client message, or ``None`` once the peer closed or the socket died.

        Returns:
            A text frame as ``str``, a binary frame as ``bytes``, or ``None`` at the end.
        """
        while not self._peer_gone:
            try:
                message = await self._ws.receive()
            except (RuntimeError, OSError):
                # Starlette's WebSocketDisconnected (a RuntimeError) after a disconnect.
                self._peer_gone = True
                self._closed = True
                break
            if message["type"] == "websocket.disconnect":
                self._peer_gone = True
                self._closed = True
                self.peer_close_code = cast(int | None, message.get("code"))
                break
            text = message.get("text")
            if text is not None:
                return cast(str, text)
            data = message.get("bytes")
            if data is not None:
                return cast(bytes, data)
        return None

    def push_to(self, deliver: FrameSink) -> bool:
        """Have each later client message handed to ``deliver`` as it arrives (``None`` at the end).

        The per-append fast path (issue 9): the message skips uvicorn's queue, the ASGI
        ``receive`` and Starlette, and no task wakes to read it. Only under
        :class:`~openrealtime.transports.connections.GuardedWebSocketProtocol` (the server's
        own); call :meth:`receive` instead when this returns ``False``, and never both.

        Args:
            deliver: called with each text or binary message, then once with ``None`` when
                the peer is gone.

        Returns:
            Whether messages will be pushed.
        """
        protocol = self._ws.scope.get("extensions", {}).get(PUSH_EXTENSION)
        if protocol is None or self._peer_gone:
            return False
        self._protocol = protocol

        def on_message(message: str | bytes | None) -> None:
            if message is None:
                self._peer_gone = True
                self._closed = True
                self.peer_close_code = protocol.disconnect_code
            deliver(message)

        protocol.push_to(on_message)
        return True

    def pause_reading(self) -> None:
        """Stop reading the socket (pushed messages only) until :meth:`resume_reading`."""
        if self._protocol is not None:
            self._protocol.pause_push()

    def resume_reading(self) -> None:
        """Read the socket again after :meth:`pause_reading`."""
        if self._protocol is not None:
            self._protocol.resume_push()

    async def send_text(self, text: str) -> None:
        """Send one server event (already JSON) as one text frame; awaits socket backpressure.

        Args:
            text: the event's JSON.

        Raises:
            TransportClosed: the socket is closed, or the client stopped reading for longer
                than ``send_timeout`` (the socket is then closed with 1008).
        """
        if self._closed:
            raise TransportClosed("the WebSocket is closed")
        try:
            if self._send_timeout is None:
                await self._ws.send_text(text)
            else:
                async with asyncio.timeout(self._send_timeout):
                    await self._ws.send_text(text)
        except TimeoutError:
            _log.warning(
                "client read nothing for %.1f s; closing with %d", self._send_timeout, CLOSE_POLICY
            )
            await self.close(CLOSE_POLICY, "client is not reading")
            raise TransportClosed("the client stopped reading") from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            # WebSocketDisconnect: lost mid-send; RuntimeError (incl. Starlette's
            # WebSocketDisconnected): already closed; OSError: uvicorn's ClientDisconnected.
            self._closed = True
            raise TransportClosed("the WebSocket is closed") from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a WebSocket close code; a no-op once closed by either side.

        Args:
            code: the close code (1000 normal, 3000 auth, 4000 request shape, 1008 policy...).
            reason: a short reason (truncated to 123 bytes).
        """
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        if self._ws.application_state != WebSocketState.CONNECTED:
            return
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._ws.close(code, _truncate_reason(reason))
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            # The peer is gone or not reading; the server drops the connection when the app ends.
            pass


# --------------------------------------------------------------------------- handshake


@dataclass(frozen=True)
class HandshakeRejection:
    """Why a connection is refused: one ``error`` event (spec §6.1), then a close (spec §1.1)."""

    code: str | None
    """``error.code``, e.g. ``"invalid_api_key"`` (``None`` for missing auth, as live)."""
    message: str
    """``error.message``."""
    close_code: int
    """3000 (auth) or 4000 (request shape)."""
    close_reason: str
    """E.g. ``"invalid_request_error.invalid_api_key"``."""
    param: str | None = None
    """``error.param``."""

    def event_json(self) -> str:
        """Return the ``error`` event to send before closing."""
        return _error_event_json(self.code, self.message, param=self.param)


def _request_error(code: str, message: str, param: str | None = None) -> HandshakeRejection:
    return HandshakeRejection(
        code=code,
        message=message,
        close_code=CLOSE_REQUEST,
        close_reason=f"invalid_request_error.{code}",
        param=param,
    )


def _is_beta(headers: Headers, subprotocols: Sequence[str]) -> bool:
    if BETA_SUBPROTOCOL in subprotocols:
        return True
    for value in headers.getlist("openai-beta"):
        for token in value.split(","):
            if token.strip().lower() == "realtime=v1":
                return True
    return False


def _presented_key(headers: Headers, subprotocols: Sequence[str]) -> str | None:
    """The key from ``Authorization`` (Bearer, or Basic with the key as password) or subprotocol."""
    key = token_from_authorization(headers.get("authorization"))
    if key is not None:
        return key
    for protocol in subprotocols:
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            key = protocol[len(KEY_SUBPROTOCOL_PREFIX) :]
            if key:
                return key
    return None


def check_auth(
    config: Config, headers: Headers, subprotocols: Sequence[str]
) -> Credential | HandshakeRejection:
    """Check the client's key (spec §1.1 "Auth", §1.2) with :func:`openrealtime.auth.authenticate`.

    Args:
        config: the server config (no ``api_keys`` means API keys are not checked).
        headers: the upgrade request's headers.
        subprotocols: the offered subprotocols.

    Returns:
        The credential when the key opens a session (or auth is off), else the rejection to
        send: a missing key gets code ``null``; an unknown key and an expired, altered or
        not-yet-valid client secret get ``invalid_api_key``; all close with 3000.
    """
    try:
        return authenticate(config, _presented_key(headers, subprotocols))
    except MissingCredential as exc:
        return HandshakeRejection(
            code=None,
            message=exc.message,
            close_code=CLOSE_AUTH,
            close_reason="invalid_request_error",
        )
    except AuthError as exc:
        reason = "invalid_request_error" + (f".{exc.code}" if exc.code else "")
        return HandshakeRejection(
            code=exc.code, message=exc.message, close_code=CLOSE_AUTH, close_reason=reason
        )


def _check_query(
    config: Config, query: QueryParams, credential: Credential
) -> SessionRequest | HandshakeRejection:
    given = [name for name in ("model", "intent", "call_id") for v in query.getlist(name) if v]
    if not given and credential.session_type is not None:
        return _with_secret(credential, credential.session_type, None)
    if not given:
        return _request_error("missing_model", _MISSING_MODEL)
    if len(given) > 1:
        names = " and ".join(f"'{name}'" for name in given)
        return _request_error(
            "invalid_value",
            "Provide exactly one of the 'model', 'intent' or 'call_id' query parameters; "
            f"got {names}.",
        )
    label = _new_session_label()
    match given[0]:
        case "model":
            model = query["model"]
            if not config.model_allowed(model):
                supported = ", ".join(config.models)
                return _request_error(
                    "invalid_model",
                    f'Model "{model}" is not supported in realtime mode. '
                    f"Supported models: {supported}.",
                )
            if credential.session_type is not None:
                return _with_secret(credential, "realtime", model)
            return SessionRequest(kind="realtime", model=model, session_label=label)
        case "intent":
            intent = query["intent"]
            if intent != "transcription":
                return _request_error(
                    "invalid_value",
                    f"Invalid value: '{intent}'. Supported values are: 'transcription'.",
                    param="intent",
                )
            if credential.session_type is not None:
                return _with_secret(credential, "transcription", None)
            return SessionRequest(kind="transcription", model="", session_label=label)
        case _:  # a sideband: the route looks the call up (spec §1.4)
            call_id = query["call_id"]
            if credential.kind == "client_secret":  # a browser's secret must not reach calls
                return HandshakeRejection(
                    code="invalid_api_key",
                    message="A client secret (ek_…) cannot attach to a call; a sideband "
                    "connection (?call_id=…) needs an API key.",
                    close_code=CLOSE_AUTH,
                    close_reason="invalid_request_error.invalid_api_key",
                )
            return SessionRequest(kind="realtime", model="", session_label=label, call_id=call_id)


def _with_secret(
    credential: Credential, kind: Literal["realtime", "transcription"], query_model: str | None
) -> SessionRequest | HandshakeRejection:
    """The session a client secret opens; its session type must match the query's."""
    if kind != credential.session_type:
        asked = "?intent=transcription" if kind == "transcription" else "?model=…"
        return _request_error(
            "invalid_value",
            f"This client secret is for a {credential.session_type} session, but the "
            f"connection asked for a {kind} session ({asked}).",
        )
    defaults = credential.session_defaults or {}
    secret_model = defaults.get("model")
    model = ""
    if kind == "realtime":  # the secret's model wins: the server that minted it chose it
        model = secret_model if isinstance(secret_model, str) else query_model or "gpt-realtime"
    return SessionRequest(
        kind=kind, model=model, session_label=_new_session_label(), session_defaults=defaults
    )


def check_handshake(
    config: Config, headers: Headers, subprotocols: Sequence[str], query: QueryParams
) -> SessionRequest | HandshakeRejection:
    """Decide what an accepted upgrade asked for (spec §1.1), in the live service's order.

    Order: beta shape (close 4000), then auth (close 3000), then the query (close 4000).

    Args:
        config: the server config.
        headers: the upgrade request's headers.
        subprotocols: the offered subprotocols.
        query: the URL's query parameters.

    Returns:
        The session to run, or the rejection to send.
    """
    if _is_beta(headers, subprotocols):
        return _request_error("beta_api_shape_disabled", _BETA_DISABLED)
    credential = check_auth(config, headers, subprotocols)
    if isinstance(credential, HandshakeRejection):
        return credential
    return _check_query(config, query, credential)


# --------------------------------------------------------------------------- route


class SessionRunner(Protocol):
    """Runs one session until it ends; ``openrealtime.runtime.driver.run_session`` by default.

    Tests inject another through ``app.state.session_runner``.
    """

    def __call__(
        self, transport: Transport, request: SessionRequest, services: Services, /
    ) -> Awaitable[None]:
        """Run the session over ``transport``; return when it is over (the route then closes)."""
        ...


def _session_runner(app: Any) -> SessionRunner:
    runner = getattr(app.state, "session_runner", None)
    if runner is not None:
        return cast(SessionRunner, runner)
    from openrealtime.runtime.driver import run_session

    return run_session


async def realtime_websocket_endpoint(websocket: WebSocket) -> None:
    """Serve one ``/v1/realtime`` connection: handshake (spec §1.1), then run the session.

    Registered by :func:`register_websocket_routes`; reads ``app.state.services`` (set by the
    app's lifespan) and ``app.state.session_runner`` (optional).

    Args:
        websocket: the incoming (not yet accepted) WebSocket.
    """
    offered: list[str] = list(websocket.scope.get("subprotocols", []))
    selected = REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None
    try:
        await websocket.accept(subprotocol=selected)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client left during the upgrade

    services: Services | None = getattr(websocket.app.state, "services", None)
    if services is None:
        transport = StarletteWebSocketTransport(websocket)
        _log.error("no services on app.state (did the lifespan run?); refusing the connection")
        await _reject(
            transport,
            _error_event_json(None, "The server is not ready.", error_type="server_error"),
            CLOSE_INTERNAL,
            "server_error",
        )
        return

    config = services.config
    transport = StarletteWebSocketTransport(websocket, send_timeout=config.outbound_stall_seconds)
    result = check_handshake(config, websocket.headers, offered, websocket.query_params)
    if isinstance(result, HandshakeRejection):
        _log.info(
            "refused %s: %s (close %d)", _client(websocket), result.close_reason, result.close_code
        )
        metrics.ERRORS.labels(result.code or "none").inc()
        await _reject(transport, result.event_json(), result.close_code, result.close_reason)
        return

    if result.call_id is not None:
        await _serve_sideband(websocket, transport, result.call_id)
        return
    if not services.lifecycle.accepting:  # draining (issue 9): no new sessions
        _log.info("refused %s: the server is shutting down", _client(websocket))
        await _reject(
            transport,
            _error_event_json("server_shutting_down", SHUTDOWN_MESSAGE, error_type="server_error"),
            CLOSE_TRY_AGAIN,
            "server shutting down",
        )
        return
    log = SessionLogger(_log, result.session_label)
    log.info("%s session for %s, model %r", result.kind, _client(websocket), result.model)
    try:
        runner = _session_runner(websocket.app)
        # Its own task: every step of the session (one per client frame) then resumes the
        # session's own coroutines only, not the ~20 ASGI middleware frames awaiting this one.
        # Cancelling this task (server shutdown) cancels the session's with it.
        await asyncio.ensure_future(runner(transport, result, services))
    except TransportClosed:
        pass
    except Exception:
        log.exception("session failed")
        await transport.close(CLOSE_INTERNAL, "internal error")
    finally:
        await transport.close(1000)
        log.info(
            "session ended (server close %s, client close %s)",
            transport.close_code,
            transport.peer_close_code,
        )


async def _serve_sideband(
    websocket: WebSocket, transport: StarletteWebSocketTransport, call_id: str
) -> None:
    """Attach to a live WebRTC call (spec §1.4); an unknown call gets ``call_not_found``.

    A call this process does not hold but another one owns (``--redis-url``) is reached
    through :func:`_relay_sideband`.
    """
    from openrealtime.transports.webrtc import serve_sideband

    try:
        attached = await serve_sideband(websocket.app, transport, call_id)
    except TransportClosed:
        attached = True
    if not attached:
        attached = await _relay_sideband(websocket, transport, call_id)
    if not attached:
        rejection = _request_error("call_not_found", f"No active call with id '{call_id}'.")
        _log.info("refused %s: no call %s (close %d)", _client(websocket), call_id, CLOSE_REQUEST)
        await _reject(
            transport, rejection.event_json(), rejection.close_code, rejection.close_reason
        )
        return
    await transport.close(1000)


# --------------------------------------------------------------------------- sideband relay

CLOSE_OWNER_LOST = 1014
"""Close code of a relayed sideband whose call's owner vanished (RFC 6455 "bad gateway": the
server acted as a gateway and lost the upstream). openai-python does not reconnect on it."""

RELAY_OPEN_TIMEOUT_S = 5.0
"""Most seconds the owner may take to accept a relayed sideband."""

RELAY_PING_INTERVAL_S = 1.0
"""Keepalive pings on the relay's connection to the owner: a machine that vanished without
closing its sockets is noticed within :data:`RELAY_PING_TIMEOUT_S` more seconds."""

RELAY_PING_TIMEOUT_S = 3.0
"""Seconds without a pong after which the owner counts as lost."""

_OWNER_LOST = (
    "The server holding call '{call_id}' stopped answering; the call is lost. Start a new call."
)


@dataclass(frozen=True)
class RelayEnd:
    """How a relayed sideband ended (:func:`relay_websocket`)."""

    reached: bool
    """Whether the owner accepted the connection at all."""
    client_left: bool = False
    """The client closed (or stopped reading) first."""
    owner_lost: bool = False
    """The owner's connection died without a close frame (it crashed, or stopped answering
    keepalive pings)."""
    close_code: int | None = None
    """The owner's close code, when it closed (e.g. 1000 as the call ended, 4000 for
    ``call_not_found``)."""
    close_reason: str = ""
    """The owner's close reason."""


async def relay_websocket(
    client: Transport, upstream_url: str, headers: dict[str, str]
) -> RelayEnd:
    """Relay a client WebSocket to ``upstream_url``, frame by frame both ways, until one ends.

    One task reads each direction and writes every frame before reading the next, so nothing
    is dropped or reordered, and a side that stops reading stops the other (the client's own
    send timeout then closes it with 1008, as for a direct sideband). The caller closes the
    client's side with what the returned :class:`RelayEnd` says.

    Args:
        client: the accepted client connection.
        upstream_url: ``ws://owner/v1/realtime?call_id=…``.
        headers: sent with the upstream handshake (the client's credential, the relay mark).

    Returns:
        How it ended; ``reached=False`` when the owner could not be connected to.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

    try:
        upstream = await connect(
            upstream_url,
            additional_headers=headers,
            open_timeout=RELAY_OPEN_TIMEOUT_S,
            ping_interval=RELAY_PING_INTERVAL_S,
            ping_timeout=RELAY_PING_TIMEOUT_S,
            close_timeout=1.0,
            max_size=None,  # the owner already bounded what its client may send
            compression=None,  # a hop inside the cluster: no CPU spent on deflate
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        _log.info("relay to %s failed: %r", upstream_url.split("?")[0], exc)
        return RelayEnd(reached=False)

    async def downstream() -> RelayEnd:
        """Owner → client, until the owner closes (or is lost)."""
        try:
            async for message in upstream:
                text = message if isinstance(message, str) else message.decode(errors="replace")
                await client.send_text(text)
        except ConnectionClosed:
            pass
        except TransportClosed:
            return RelayEnd(reached=True, client_left=True)
        received = upstream.protocol.close_rcvd
        if received is None:
            return RelayEnd(reached=True, owner_lost=True)
        return RelayEnd(reached=True, close_code=received.code, close_reason=received.reason)

    async def upward() -> None:
        """Client → owner, until the client leaves or the owner's side is closed."""
        try:
            while (message := await client.receive()) is not None:
                await upstream.send(message)
        except ConnectionClosed:
            await asyncio.Event().wait()  # downstream() says why; it ends this task

    down = asyncio.create_task(downstream())
    up = asyncio.create_task(upward())
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        if down.done():
            end = down.result()
        else:  # the client left
            end = RelayEnd(reached=True, client_left=True)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
        await upstream.close()
    return end


async def _relay_sideband(
    websocket: WebSocket, transport: StarletteWebSocketTransport, call_id: str
) -> bool:
    """Reach a call another process owns through the shared call directory (``--redis-url``).

    The sideband is relayed to the owner's private listener with the client's own key (the
    owner authenticates it as usual); the owner's close code is passed on. When the owner's
    connection dies the client gets an ``error`` (``call_owner_lost``) and close
    :data:`CLOSE_OWNER_LOST`.

    Returns:
        ``False`` when no process holds the call (or its owner cannot be reached, so the call
        is gone): the caller answers ``call_not_found``. ``True`` when the connection was
        served here.
    """
    from openrealtime.transports.call_directory import (
        FORWARDED_HEADER,
        DirectoryUnavailable,
        call_directory,
    )

    directory = call_directory(websocket.app)
    if directory is None or websocket.headers.get(FORWARDED_HEADER):
        return False  # a relayed request is served from this process's calls only
    try:
        owner = await directory.owner(call_id)
    except DirectoryUnavailable as exc:
        _log.warning("sideband of %s: %s", call_id, exc)
        await _reject(
            transport,
            _error_event_json(
                "call_directory_unavailable",
                "The call directory (Redis) did not answer; try again.",
                error_type="server_error",
            ),
            CLOSE_TRY_AGAIN,
            "call directory unavailable",
        )
        return True
    if owner is None or owner == directory.url:
        return False
    headers = {FORWARDED_HEADER: "1"}
    key = _presented_key(websocket.headers, list(websocket.scope.get("subprotocols", [])))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    upstream = owner.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    url = f"{upstream}{REALTIME_PATH}?{urlencode({'call_id': call_id})}"
    _log.info("sideband of %s for %s: relayed to %s", call_id, _client(websocket), owner)
    end = await relay_websocket(transport, url, headers)
    if not end.reached:
        _log.info("sideband of %s: its owner %s is unreachable", call_id, owner)
        return False
    if end.owner_lost:
        _log.warning("sideband of %s: lost its owner %s", call_id, owner)
        await _reject(
            transport,
            _error_event_json(
                "call_owner_lost", _OWNER_LOST.format(call_id=call_id), error_type="server_error"
            ),
            CLOSE_OWNER_LOST,
            "call owner lost",
        )
    elif end.close_code is not None:
        await transport.close(end.close_code, end.close_reason)
    _log.info("relayed sideband of %s ended", call_id)
    return True


async def _reject(
    transport: StarletteWebSocketTransport, event_json: str, code: int, reason: str
) -> None:
    try:
        await transport.send_text(event_json)
    except TransportClosed:
        return
    await transport.close(code, reason)


def _client(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client is not None else "unknown client"


def register_websocket_routes(app: FastAPI, *, path: str = REALTIME_PATH) -> None:
    """Add the Realtime WebSocket route to ``app``; call from the app factory.

    Args:
        app: the FastAPI app; its ``state.services`` must be set before connections arrive.
        path: the route path (spec §1.1: ``/v1/realtime``).
    """
    app.add_api_websocket_route(path, realtime_websocket_endpoint, name="realtime")
