"""REST answers and authentication shared by every HTTP route (spec §1.2, §1.3, §6.2).

One place for the OpenAI error response and for "which key may call this route", so the
client-secret, call, model and engine routes cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse

from openrealtime.auth import (
    AuthError,
    Credential,
    MissingCredential,
    authenticate,
    token_from_authorization,
)
from openrealtime.logging_setup import redact
from openrealtime.protocol.errors import rest_error_body

if TYPE_CHECKING:
    from openrealtime.config import Config

__all__ = [
    "NO_KEY_MESSAGE",
    "CallRequestError",
    "http_auth_error",
    "http_credential",
    "openai_error",
]

NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
"""The live service's 401 message when no key was sent."""

_SECRET_ON_REST_MESSAGE = (
    "Incorrect API key provided: {key}. Client secrets (ek_…) only open Realtime sessions; "
    "use an API key for this endpoint."
)


class CallRequestError(Exception):
    """A call-control request that is refused: the route answers it with :func:`openai_error`."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int = 400,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status = status
        self.type = type_


def openai_error(
    status: int,
    message: str,
    code: str | None = None,
    type_: str = "invalid_request_error",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An HTTP error response in the OpenAI REST shape (spec §6.2 "REST errors")."""
    body = rest_error_body(message, type=type_, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def http_credential(config: Config, request: Request) -> Credential | JSONResponse:
    """Authenticate a REST call (``Authorization: Bearer``); a 401 response when refused."""
    try:
        return authenticate(config, token_from_authorization(request.headers.get("authorization")))
    except MissingCredential:
        return openai_error(401, NO_KEY_MESSAGE)
    except AuthError as exc:
        return openai_error(401, exc.message, exc.code)


def http_auth_error(config: Config, request: Request) -> JSONResponse | None:
    """Check ``Authorization: Bearer`` on a REST call; ``None`` when it may proceed.

    Only an API key opens these routes; a client secret is for Realtime sessions only.
    """
    if not config.auth_enabled:
        return None
    credential = http_credential(config, request)
    if isinstance(credential, JSONResponse):
        return credential
    if credential.kind != "api_key":
        key = redact(token_from_authorization(request.headers.get("authorization")))
        return openai_error(401, _SECRET_ON_REST_MESSAGE.format(key=key), "invalid_api_key")
    return None
