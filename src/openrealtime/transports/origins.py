"""Which web pages may use the server: the ``Host`` and ``Origin`` checks (issue 8, defect 5).

Browsers let any page open a WebSocket or send a "simple" POST to any address, and a DNS
rebinding attack makes a foreign page look same-origin to a server on loopback. Without an API
key nothing else stops them, so every HTTP request and WebSocket handshake passes
:class:`OriginGuard` first (RFC 6455 §10.2, OWASP ASVS 4.4.2, as Jupyter and dev servers do):

* **Host.** When authentication is off (or ``allowed_hosts`` is set), the ``Host`` header must
  name this server: an IP address, ``localhost`` (or ``*.localhost``), the bound ``--host``,
  or an ``--allowed-host``. A rebinding page's ``Host: rebind.evil.example`` is refused.
* **Origin.** A request without ``Origin`` is not from a browser page and passes. A page's
  ``Origin`` passes when it is the server's own (the playground's: same host and port as the
  checked ``Host``), when it is an ``--allowed-origin``, or when keys are configured and no
  origin list was given (any page may then use a key or an ``ek_`` secret it was handed, the
  browser flow of spec §1.2). Every other origin gets 403 and, on a WebSocket, no 101.

Refusals answer 403 with an OpenAI-shaped error body (``origin_not_allowed`` /
``host_not_allowed``); routes that answer CORS reflect only origins that got through.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from openrealtime.protocol.errors import rest_error_body

if TYPE_CHECKING:
    from openrealtime.config import Config

__all__ = ["OriginGuard", "OriginPolicy"]

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` too) as a lower-case name and a port; None if malformed."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:  # a bare IPv6 address
        name, port_text = value, ""
    else:
        name, port_text = value, ""
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        return name, int(port_text)
    return name, None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _origin_key(origin: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` as (scheme, host, port) with the default port filled in."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


@dataclass(frozen=True)
class OriginPolicy:
    """The Host and Origin rules of one server; build it with :meth:`from_config`."""

    check_host: bool
    """Whether ``Host`` is checked (authentication off, or an explicit ``allowed_hosts``)."""
    hosts: frozenset[str]
    """Extra host names: exact names, and ``.example.com`` suffixes."""
    any_host: bool
    origins: frozenset[tuple[str, str, int]]
    """Allowed origins besides the server's own, normalised."""
    any_origin: bool
    """``*`` listed, or keys configured with no origin list."""
    raw_null_allowed: bool
    """``null`` (sandboxed frames, ``file://`` pages) listed explicitly."""

    @classmethod
    def from_config(cls, config: Config) -> OriginPolicy:
        """The policy for ``config`` (``allowed_hosts``, ``allowed_origins``, ``api_keys``)."""
        hosts = {h.strip().lower() for h in config.allowed_hosts if h.strip()}
        if config.host.strip():
            hosts.add(config.host.strip().strip("[]").lower())
        origins = {key for o in config.allowed_origins if (key := _origin_key(o)) is not None}
        listed = {o.strip().lower() for o in config.allowed_origins}
        return cls(
            check_host=not config.auth_enabled or bool(config.allowed_hosts),
            hosts=frozenset(hosts),
            any_host="*" in hosts,
            origins=frozenset(origins),
            any_origin="*" in listed or (config.auth_enabled and not config.allowed_origins),
            raw_null_allowed="null" in listed,
        )

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header is for this server."""
        if not self.check_host or self.any_host:
            return True
        split = _split_host(host_header or "")
        if split is None:
            return False
        name = split[0].strip("[]").rstrip(".")
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True
        if name in self.hosts:
            return True
        return any(h.startswith(".") and (name == h[1:] or name.endswith(h)) for h in self.hosts)

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """Whether a page from ``origin`` may use the server, reached as ``host_header``."""
        if self.any_origin:
            return True
        if origin.strip().lower() == "null":
            return self.raw_null_allowed
        key = _origin_key(origin)
        if key is None:
            return False
        if key in self.origins:
            return True
        split = _split_host(host_header or "")
        if split is None:
            return False
        scheme, host, port = key
        name, host_port = split
        return host == name.strip("[]") and port == (
            host_port if host_port is not None else _DEFAULT_PORTS[scheme]
        )


class OriginGuard:
    """ASGI middleware refusing requests and handshakes from hosts or origins not allowed.

    Wrap the whole app (``create_app`` does), so no route can forget the check.
    """

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check ``Host`` and ``Origin`` of HTTP and WebSocket scopes; refuse or pass on."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        refusal: tuple[str, str] | None = None
        if not self.policy.host_allowed(host):
            refusal = (
                "host_not_allowed",
                f"This server does not answer to the host '{(host or '')[:100]}'. Reach it by "
                "an IP address or localhost, or start it with --allowed-host NAME.",
            )
        elif origin is not None and not self.policy.origin_allowed(origin, host):
            refusal = (
                "origin_not_allowed",
                f"Pages from the origin '{origin[:100]}' may not use this server. Start it with "
                "--allowed-origin ORIGIN to allow them (or configure an API key).",
            )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        who = f"{client[0]}:{client[1]}" if client else "a client"
        _log.warning("refused %s %s from %s: %s", scope["type"], scope["path"], who, refusal[1])
        await _forbid(scope, receive, send, *refusal)


async def _forbid(scope: Scope, receive: Receive, send: Send, code: str, message: str) -> None:
    """Answer 403 with an OpenAI error body; a WebSocket is refused before its 101."""
    body = json.dumps(rest_error_body(message, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # servers without the denial-response extension answer a close with 403
        await send({"type": "websocket.close", "code": 1008})
