"""The browser playground: plain HTML/CSS/JS files served at ``/`` (design.md "What users get").

The page (``static/``) talks to this same server the way a browser app talks to OpenAI: it may
mint an ephemeral key with ``POST /v1/realtime/client_secrets`` (spec §1.2), then opens a WebRTC
call with ``POST /v1/realtime/calls`` and the ``oai-events`` data channel (spec §1.3). Nothing
here runs a session; these routes only hand out files.

There is no build step: the files ship as package data and are read from the installed package
on every request (they are small), so editing them in a checkout shows on the next reload.
Every response carries an ``ETag`` and ``Cache-Control: no-cache``: browsers revalidate each
load and get a cheap ``304`` when nothing changed, so a server upgrade never leaves a stale
page behind. The page loads nothing from other origins; its Content-Security-Policy says so.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ASSET_PREFIX", "CONTENT_TYPES", "asset_names", "register_playground_routes"]

ASSET_PREFIX = "/playground"
"""Where the page's own files are served (``index.html`` refers to them relatively)."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The file types the playground ships, with explicit types (module scripts need a JS type,
and the system's ``mimetypes`` table is not trusted: some map ``.js`` to ``text/plain``)."""

_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob: mediastream:",
        # the page may be pointed at another openrealtime server (its "Server" setting)
        "connect-src 'self' http: https:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)

_COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static_dir() -> Traversable:
    return resources.files(__name__).joinpath("static")


def asset_names() -> list[str]:
    """The files the playground serves, by name (``index.html``, ``app.js``, ...)."""
    return sorted(
        entry.name
        for entry in _static_dir().iterdir()
        if entry.is_file() and _suffix(entry.name) in CONTENT_TYPES
    )


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _file_response(request: Request, name: str) -> Response:
    """One static file with its type, an ETag, and a revalidate-every-time cache policy."""
    if name not in asset_names():  # a fixed list: no path is ever joined from the request
        return PlainTextResponse("Not Found", status_code=404)
    body = _static_dir().joinpath(name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = dict(_COMMON_HEADERS, ETag=etag)
    if name.endswith(".html"):
        headers["Content-Security-Policy"] = _CSP
        headers["Permissions-Policy"] = "microphone=(self), camera=()"
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=CONTENT_TYPES[_suffix(name)], headers=headers)


async def _index(request: Request) -> Response:
    """``GET /``: the playground page."""
    return _file_response(request, "index.html")


async def _asset(request: Request) -> Response:
    """``GET /playground/{name}``: one of the page's scripts, styles or icons."""
    return _file_response(request, str(request.path_params["name"]))


def register_playground_routes(app: FastAPI) -> None:
    """Serve the playground at ``/`` and its files under :data:`ASSET_PREFIX`.

    Call once from the app factory. Both routes answer ``GET`` and ``HEAD``; unknown names
    get a plain ``404``.
    """
    app.add_route("/", _index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route(
        ASSET_PREFIX + "/{name}", _asset, methods=["GET", "HEAD"], include_in_schema=False
    )
