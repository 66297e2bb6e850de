"""The ``realtime.call.incoming`` webhook: signed so the official SDK verifies it, retried.

Deliveries go over real HTTP to a real server in the test's loop; the receiving side verifies
with openai-python's ``client.webhooks.unwrap``, as an application would.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from openai import InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from openrealtime.config import Config
from openrealtime.transports.sip.signalling import header_lines
from openrealtime.transports.sip.webhook import WebhookSender, incoming_call_event, secret_key
from tests.helpers.server import running_server

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OTHER = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def receiver(answers: list[int]) -> tuple[FastAPI, list[tuple[bytes, dict[str, str]]]]:
    """An application endpoint answering ``answers`` in turn (then 200), keeping what came."""
    app = FastAPI()
    got: list[tuple[bytes, dict[str, str]]] = []

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        got.append((await request.body(), dict(request.headers)))
        status = answers.pop(0) if answers else 200
        return Response(status_code=status)

    return app, got


@pytest.mark.parametrize("secret", [SECRET, "a plain shared secret"])
async def test_the_official_sdk_verifies_and_parses_the_event(secret: str) -> None:
    app, got = receiver([])
    headers = [("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1"), ("X-Trunk", "acme")]
    event = incoming_call_event("rtc_" + "ab" * 16, headers)
    async with running_server(app) as base:
        sender = WebhookSender(f"{base}/hook", secret)
        try:
            assert await sender.deliver(event)
        finally:
            await sender.close()
    [(body, received)] = got
    parsed = OpenAI(api_key="unused").webhooks.unwrap(body, received, secret=secret)
    assert isinstance(parsed, RealtimeCallIncomingWebhookEvent)
    assert parsed.type == "realtime.call.incoming" and parsed.object == "event"
    assert parsed.id.startswith("evt_") and abs(parsed.created_at - event["created_at"]) <= 1
    assert parsed.data.call_id == event["data"]["call_id"]
    assert [(h.name, h.value) for h in parsed.data.sip_headers] == headers
    assert received["webhook-id"].startswith("wh_")
    with pytest.raises(InvalidWebhookSignatureError):  # another secret does not verify it
        OpenAI(api_key="unused").webhooks.unwrap(body, received, secret=OTHER)
    with pytest.raises(InvalidWebhookSignatureError):  # nor does a changed body
        OpenAI(api_key="unused").webhooks.unwrap(
            body.replace(b"ab", b"cd"), received, secret=secret
        )


async def test_failures_are_retried_with_backoff_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, got = receiver([500, 503])
    caplog.set_level(logging.WARNING, "openrealtime.transports.sip.webhook")
    async with running_server(app) as base:
        sender = WebhookSender(f"{base}/hook", SECRET, delays_s=(0.05, 0.2, 0.2))
        try:
            assert await sender.deliver(incoming_call_event("rtc_1", []))
        finally:
            await sender.close()
    assert len(got) == 3
    assert len({h["webhook-id"] for _, h in got}) == 1  # one id: the application can dedupe
    for body, headers in got:  # every try is signed on its own
        OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=SECRET)
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2 and "HTTP 500" in failures[0] and "HTTP 503" in failures[1]
    assert all("retrying" in f and SECRET not in f for f in failures)


async def test_an_unreachable_application_is_given_up_and_retries_stop_when_unwanted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "openrealtime.transports.sip.webhook")
    sender = WebhookSender("http://127.0.0.1:9/hook", SECRET, delays_s=(0.01, 0.01))
    try:
        assert not await sender.deliver(incoming_call_event("rtc_1", []))
        assert "giving up" in caplog.records[-1].getMessage()
        tries: list[int] = []

        def wanted() -> bool:
            tries.append(1)
            return False  # the call was answered meanwhile

        assert not await sender.deliver(incoming_call_event("rtc_2", []), wanted=wanted)
        assert len(tries) == 1
    finally:
        await sender.close()


def test_secrets_decode_as_the_sdk_decodes_them() -> None:
    assert secret_key("whsec_" + base64.b64encode(b"key").decode()) == b"key"
    assert secret_key("plain") == b"plain"
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not base64!")


def test_header_lines_keep_names_values_repeats_and_order() -> None:
    raw = (
        b"INVITE sip:agent@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n"
        b"Allow: INVITE, ACK,BYE\r\n"
        b"X-Long: first\r\n"
        b" second\r\n"
        b"f: <sip:a@b>;tag=1\r\n"
        b"\r\n"
        b"v=0\r\nx: not a header\r\n"
    )
    assert header_lines(raw) == [
        ("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"),
        ("Allow", "INVITE, ACK,BYE"),
        ("X-Long", "first second"),
        ("f", "<sip:a@b>;tag=1"),
    ]


def _config(**fields: Any) -> Config:
    return Config(**{"sip_port": 5060, **fields})


def test_no_call_is_taken_without_a_webhook_target() -> None:
    with pytest.raises(ValueError, match="webhook_url and webhook_secret"):
        _config()
    with pytest.raises(ValueError, match="webhook_url and webhook_secret"):
        _config(webhook_url="http://app/hook")
    with pytest.raises(ValueError, match="http"):
        _config(webhook_url="ftp://app/hook", webhook_secret="s")
    with pytest.raises(ValueError, match="base64"):
        _config(webhook_url="http://app/hook", webhook_secret="whsec_!!")
    ok = _config(webhook_url="http://app/hook", webhook_secret=SECRET)
    assert ok.sip_rtp_range == (40000, 40999)


def test_sip_settings_are_checked() -> None:
    hook = {"webhook_url": "http://app/hook", "webhook_secret": SECRET}
    with pytest.raises(ValueError, match="sip_rtp_ports"):
        _config(sip_rtp_ports="40000", **hook)
    with pytest.raises(ValueError, match="sip_allow"):
        _config(sip_allow=("not-a-network",), **hook)
    with pytest.raises(ValueError, match="together"):
        _config(sip_username="trunk", **hook)
    with pytest.raises(ValueError, match="sip_advertise"):
        _config(host="0.0.0.0", **hook)
    assert _config(host="0.0.0.0", sip_advertise="203.0.113.7", **hook).sip_advertise
    with pytest.raises(ValueError, match="--workers 1"):
        _config(workers=2, redis_url="redis://localhost:6379/0", **hook)
    config = Config.from_env(
        {
            "OPENREALTIME_SIP_PORT": "5070",
            "OPENREALTIME_SIP_ALLOW": "10.0.0.0/8, 192.0.2.7",
            "OPENREALTIME_WEBHOOK_URL": "http://app/hook",
            "OPENREALTIME_WEBHOOK_SECRET": SECRET,
        }
    )
    assert config.sip_port == 5070 and config.sip_allow == ("10.0.0.0/8", "192.0.2.7")
    assert Config.from_env(config.to_env()) == config


async def test_a_slow_application_does_not_hold_the_sender() -> None:
    """Delivery is bounded by its timeout; a stalled receiver counts as a failure."""
    app = FastAPI()

    @app.post("/hook")
    async def hook() -> Response:
        await asyncio.sleep(5)
        return Response(status_code=200)

    async with running_server(app) as base:
        sender = WebhookSender(f"{base}/hook", SECRET, delays_s=(), timeout_s=0.3)
        try:
            assert not await sender.deliver(incoming_call_event("rtc_1", []))
        finally:
            await sender.close()
