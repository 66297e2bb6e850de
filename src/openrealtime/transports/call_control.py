"""Call control over REST (spec §1.5): accept, reject, refer and hang up a call.

``POST /v1/realtime/calls/{call_id}/{action}``, each answered ``200`` with an empty body as the
reference service does, or an OpenAI-shaped error:

- ``accept`` (body: a realtime session config, ``type: "realtime"``) answers a ringing SIP
  call and starts its session;
- ``reject`` (``{"status_code": 486}``, 603 by default) declines it;
- ``refer`` (``{"target_uri": "sip:…" | "tel:…"}``) transfers it;
- ``hangup`` ends any call, WebRTC or SIP (a ringing one is declined).

A call this process does not hold, with ``--redis-url``, is looked up in the shared call
directory and the request is relayed to its owner with the caller's ``Authorization`` and
body; the owner's answer is returned. The SIP work itself is
:class:`~openrealtime.transports.sip.endpoint.SipEndpoint`'s (``app.state.sip``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from openrealtime.protocol.errors import ProtocolError
from openrealtime.transports.call_directory import (
    FORWARDED_HEADER,
    DirectoryUnavailable,
    call_directory,
)
from openrealtime.transports.rest import CallRequestError
from openrealtime.transports.webrtc import (
    CALLS_PATH,
    DIRECTORY_DOWN,
    authenticate_call,
    call_error,
    call_registry,
    call_session_defaults,
    cors_headers,
    preflight,
)

if TYPE_CHECKING:
    from openrealtime.services import Services
    from openrealtime.transports.sip.endpoint import SipEndpoint

__all__ = ["ACTIONS", "FORWARD_TIMEOUT_S", "register_call_control_routes"]

_log = logging.getLogger(__name__)

ACTIONS = ("accept", "reject", "refer", "hangup")

FORWARD_TIMEOUT_S = 15.0
"""Most seconds a request relayed to the call's owner may take (a hangup waits up to 5 s for
the call to be cleaned up, a refer up to 10 s for the caller's answer)."""

MAX_BODY_BYTES = 256 * 1024

DEFAULT_REJECT_STATUS = 603


def _not_found(request: Request, call_id: str, why: str = "") -> JSONResponse:
    message = f"No active call with id '{call_id}'." + (f" {why}" if why else "")
    return call_error(request, 404, message, "call_not_found", "call_id")


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise CallRequestError(
            f"The request body is larger than {MAX_BODY_BYTES} bytes.", status=413
        )
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise CallRequestError(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(parsed, dict):
        raise CallRequestError("The body must be a JSON object.")
    return parsed


async def call_action(request: Request) -> Response:
    """``POST /v1/realtime/calls/{call_id}/{accept|reject|refer|hangup}``."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return call_error(request, 503, "The server is not ready.", type_="server_error")
    credential = authenticate_call(request, services.config)
    if isinstance(credential, JSONResponse):
        return credential
    call_id = request.path_params["call_id"]
    action = request.url.path.rsplit("/", 1)[-1]
    if action != "hangup" and credential.kind == "client_secret":
        return call_error(
            request,
            401,
            f"Use an API key to {action} calls; client secrets are for browsers.",
            "invalid_api_key",
        )
    try:
        body = await _json_body(request)
        handled = await _act_here(request, services, action, call_id, body)
    except CallRequestError as exc:
        return call_error(request, exc.status, exc.message, exc.code, exc.param, exc.type)
    if handled is not None:
        return handled
    directory = call_directory(request.app)
    if directory is None or request.headers.get(FORWARDED_HEADER):
        return _not_found(request, call_id)  # relayed requests are never relayed again
    try:
        owner = await directory.owner(call_id)
    except DirectoryUnavailable as exc:
        _log.warning("%s of %s: %s", action, call_id, exc)
        return call_error(
            request, 503, DIRECTORY_DOWN, "call_directory_unavailable", None, "server_error"
        )
    if owner is None or owner == directory.url:
        return _not_found(request, call_id)
    return await _relay(request, owner, call_id, action)


async def _act_here(
    request: Request, services: Services, action: str, call_id: str, body: dict[str, Any]
) -> Response | None:
    """Do ``action`` if this process holds the call; ``None`` when it does not."""
    ok = Response(status_code=200, headers=cors_headers(request))
    sip: SipEndpoint | None = getattr(request.app.state, "sip", None)
    if action == "hangup":
        if await call_registry(request.app).hangup(call_id):
            return ok
        if sip is not None and sip.hangup_ringing(call_id):
            return ok
        return None
    if sip is None or not sip.owns(call_id):
        return None
    try:
        if action == "accept":
            defaults, model = call_session_defaults(services.config, None, body, None)
            await sip.accept(call_id, defaults, model)
        elif action == "reject":
            status = body.get("status_code", DEFAULT_REJECT_STATUS)
            if not isinstance(status, int) or isinstance(status, bool):
                raise CallRequestError(
                    "Invalid type for 'status_code': expected an integer.",
                    code="invalid_type",
                    param="status_code",
                )
            sip.reject(call_id, status)
        else:
            target = body.get("target_uri")
            if not isinstance(target, str) or not target:
                raise CallRequestError(
                    "Missing required parameter: 'target_uri'.",
                    code="missing_required_parameter",
                    param="target_uri",
                )
            await sip.refer(call_id, target)
    except ProtocolError as exc:  # a bad session config; CallRequestError goes to the caller
        return call_error(request, 400, exc.message, exc.code, exc.param)
    return ok


async def _relay(request: Request, owner: str, call_id: str, action: str) -> Response:
    """Relay a call-control request to the process owning the call; its answer is returned."""
    headers = {FORWARDED_HEADER: "1"}
    for name in ("authorization", "content-type"):
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    url = f"{owner}{CALLS_PATH}/{quote(call_id, safe='')}/{action}"
    try:
        async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_S) as client:
            answer = await client.post(url, headers=headers, content=await request.body())
    except httpx.ConnectError as exc:  # nothing listens there: the owner is gone
        _log.info("%s of %s: its owner %s is gone (%s)", action, call_id, owner, exc)
        return _not_found(request, call_id, "The server that held it is gone.")
    except httpx.HTTPError as exc:
        _log.warning("%s of %s: its owner %s did not answer (%r)", action, call_id, owner, exc)
        return call_error(
            request,
            502,
            f"The server holding call '{call_id}' did not answer.",
            "call_owner_unreachable",
            None,
            "server_error",
        )
    _log.info("%s of %s relayed to %s: %d", action, call_id, owner, answer.status_code)
    response_headers = cors_headers(request)
    content_type = answer.headers.get("content-type")
    if content_type is not None:
        response_headers["Content-Type"] = content_type
    return Response(answer.content, status_code=answer.status_code, headers=response_headers)


def register_call_control_routes(app: FastAPI) -> None:
    """Add ``POST`` (and the CORS preflight) for every call-control action to ``app``."""
    for action in ACTIONS:
        path = f"{CALLS_PATH}/{{call_id}}/{action}"
        app.add_api_route(path, call_action, methods=["POST"], include_in_schema=False)
        app.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)
