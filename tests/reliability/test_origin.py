"""Which pages may use the server: Host and Origin checks (issue 8, defect 5; check 12).

Before the fix a keyless loopback server gave a full session to a WebSocket with
``Origin: https://evil.example`` and ``Host: rebind.evil.example``, and ``/v1/realtime/calls``
answered CORS for any origin.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from openrealtime.config import Config
from tests.conformance._error_helpers import KEY, check_event, serve
from tests.helpers.server import ws_url

EVIL = "https://evil.example"


def _keyless(**overrides: Any) -> Config:
    return Config(vad="energy", **overrides)


async def _handshake(base: str, headers: dict[str, str]) -> dict[str, Any]:
    """Open a session; return ``session.created``, or the refusal's status and error body."""
    try:
        async with connect(
            ws_url(base, "/v1/realtime?model=gpt-realtime"), additional_headers=headers
        ) as ws:
            return check_event(await ws.recv())
    except InvalidStatus as refused:
        body = json.loads(refused.response.body or b"{}")
        return {"status": refused.response.status_code, **body}


def _port(base: str) -> str:
    return base.rsplit(":", 1)[1]


async def test_a_keyless_server_refuses_foreign_pages_and_rebinding() -> None:
    async with serve(_keyless()) as base:
        port = _port(base)
        refused = await _handshake(base, {"Origin": EVIL})
        assert refused["status"] == 403 and refused["error"]["code"] == "origin_not_allowed"
        # DNS rebinding: the page's origin *is* the host it reached, so Host is what tells.
        rebound = f"rebind.evil.example:{port}"
        for headers in (
            {"Origin": EVIL, "Host": rebound},
            {"Origin": f"http://{rebound}", "Host": rebound},
            {"Host": rebound},  # no Origin: a rebinding script's request still carries Host
        ):
            refused = await _handshake(base, headers)
            assert refused["status"] == 403 and refused["error"]["code"] == "host_not_allowed"
        # Its own pages (the playground), by IP or localhost, and non-browser clients get in.
        for headers in (
            {"Origin": f"http://127.0.0.1:{port}"},
            {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
            {"Host": f"[::1]:{port}"},
            {},
        ):
            assert (await _handshake(base, headers))["type"] == "session.created", headers


async def test_a_keyless_server_answers_cors_and_rest_only_to_allowed_origins() -> None:
    async with serve(_keyless()) as base, httpx.AsyncClient(base_url=base) as client:
        own = f"http://127.0.0.1:{_port(base)}"
        for path in ("/v1/realtime/calls", "/v1/realtime/calls/rtc_x/hangup"):
            preflight = {"Access-Control-Request-Method": "POST"}
            evil = await client.options(path, headers={"Origin": EVIL, **preflight})
            assert evil.status_code == 403
            assert "access-control-allow-origin" not in evil.headers
            good = await client.options(path, headers={"Origin": own, **preflight})
            assert good.status_code == 204
            assert good.headers["access-control-allow-origin"] == own
        # "Simple" cross-origin requests need no preflight; they are refused all the same.
        for path, body in (
            ("/v1/realtime/calls", "v=0\r\n"),
            ("/v1/chat/completions", '{"messages":[{"role":"user","content":"hi"}]}'),
            ("/v1/realtime/client_secrets", "{}"),
        ):
            response = await client.post(
                path, content=body, headers={"Origin": EVIL, "Content-Type": "text/plain"}
            )
            assert response.status_code == 403, path
            assert response.json()["error"]["code"] == "origin_not_allowed"
        assert (await client.get("/healthz")).status_code == 200


async def test_allowed_origins_and_hosts_are_configurable() -> None:
    config = _keyless(allowed_origins=("https://app.example.com",), allowed_hosts=(".example.com",))
    async with serve(config) as base:
        port = _port(base)
        ok = await _handshake(base, {"Origin": "https://app.example.com"})
        assert ok["type"] == "session.created"
        assert (await _handshake(base, {"Origin": EVIL}))["status"] == 403
        for host in (f"voice.example.com:{port}", "example.com"):
            assert (await _handshake(base, {"Host": host}))["type"] == "session.created"
        assert (await _handshake(base, {"Host": "example.com.evil.example"}))["status"] == 403
    async with serve(_keyless(allowed_origins=("*",), allowed_hosts=("*",))) as base:
        assert (await _handshake(base, {"Origin": EVIL, "Host": "x.y"}))["type"] == (
            "session.created"
        )


@pytest.mark.parametrize("origins", [(), ("https://app.example.com",)])
async def test_with_keys_a_key_opens_from_any_origin_unless_origins_are_listed(
    origins: tuple[str, ...],
) -> None:
    config = Config(api_keys=(KEY,), vad="energy", allowed_origins=origins)
    async with serve(config) as base:
        auth = {"Authorization": f"Bearer {KEY}"}
        result = await _handshake(base, {"Origin": EVIL, **auth})
        if origins:
            assert result["status"] == 403
            assert (await _handshake(base, {"Origin": origins[0], **auth}))["type"] == (
                "session.created"
            )
        else:  # the ek_ browser flow: the key (or a secret minted with it) is the check
            assert result["type"] == "session.created"
        # With keys, the Host is not checked unless hosts are listed: proxies name it freely.
        assert (await _handshake(base, {"Host": "voice.example.org", **auth}))["type"] == (
            "session.created"
        )
        # And no key is still no session, whatever the origin.
        async with connect(
            ws_url(base, "/v1/realtime?model=gpt-realtime"),
            additional_headers={"Origin": origins[0] if origins else EVIL},
        ) as ws:
            assert check_event(await ws.recv())["type"] == "error"
