"""The ``realtime.call.incoming`` webhook (spec §1.5), signed as Standard Webhooks.

Each incoming SIP call is announced by one POST of the event to the configured URL, with the
three headers the official SDKs verify (``client.webhooks.unwrap`` in openai-python):
``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature`` (``v1,`` and the
base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"``). The key is the configured secret: a
``whsec_…`` secret is base64 after its prefix (the form OpenAI hands out and the SDK expects),
any other string is used as its UTF-8 bytes, exactly as the SDK decodes it.

Delivery is retried with exponential backoff while the call still waits for an answer: an
answer other than 2xx, a timeout or a refused connection counts as a failure, and every failure
is logged (with the URL, never the secret). Every try carries the same ``webhook-id``, so the
application can drop duplicates; each is signed with its own timestamp.

Signing is a few lines of ``hmac`` rather than the ``standardwebhooks`` package: that package
adds ``attrs``, ``python-dateutil``, ``Deprecated`` and its own HTTP client generator for these
lines, and the test suite checks the result with the official SDK's verifier.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

__all__ = [
    "RETRY_DELAYS_S",
    "WebhookSender",
    "incoming_call_event",
    "secret_key",
    "sign",
]

_log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds before each retry of a failed delivery (then it is given up)."""

TIMEOUT_S = 10.0
"""Most seconds one delivery may take."""

USER_AGENT = "openrealtime-webhooks/1"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a webhook secret, decoded as the official SDK decodes it.

    Raises:
        ValueError: a ``whsec_`` secret that is not base64, or an empty key.
    """
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[6:], validate=True)
        except binascii.Error:
            raise ValueError("webhook secret: the part after 'whsec_' is not base64") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("webhook secret: empty")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def incoming_call_event(call_id: str, sip_headers: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The ``realtime.call.incoming`` event of one call (openai-python's model of it).

    Args:
        call_id: the call's ``rtc_…`` id.
        sip_headers: the INVITE's headers in order, authorization headers already left out.
    """
    return {
        "object": "event",
        "id": "evt_" + secrets.token_hex(16),
        "type": "realtime.call.incoming",
        "created_at": int(time.time()),
        "data": {
            "call_id": call_id,
            "sip_headers": [{"name": name, "value": value} for name, value in sip_headers],
            "sip_media_security": "rtp",
        },
    }


class WebhookSender:
    """Delivers signed events to one URL (one per app; its HTTP client is shared).

    Args:
        url: where events are POSTed.
        secret: the signing secret (``whsec_…`` or any string).
        delays_s: seconds before each retry.
        timeout_s: most seconds one delivery may take.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        delays_s: Sequence[float] = RETRY_DELAYS_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.url = url
        self._key = secret_key(secret)
        self._delays = tuple(delays_s)
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def close(self) -> None:
        """Release the HTTP client."""
        await self._client.aclose()

    async def deliver(
        self, event: dict[str, Any], *, wanted: Callable[[], bool] = lambda: True
    ) -> bool:
        """POST ``event`` until it is taken (2xx), retrying with backoff.

        Args:
            event: the event object.
            wanted: checked before each retry; delivery stops when it returns False (the call
                was answered, cancelled or timed out meanwhile).

        Returns:
            Whether the application took the event.
        """
        body = json.dumps(event, separators=(",", ":")).encode()
        webhook_id = "wh_" + secrets.token_hex(16)
        for attempt, delay in enumerate((0.0, *self._delays)):
            if delay:
                await asyncio.sleep(delay)
                if not wanted():
                    return False
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self._key, webhook_id, timestamp, body),
            }
            try:
                answer = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= answer.status_code < 300:
                    _log.info("webhook %s delivered to %s", event.get("type"), self.url)
                    return True
                why = f"HTTP {answer.status_code}"
            more = attempt < len(self._delays)
            _log.warning(
                "webhook %s to %s failed (%s)%s",
                event.get("type"),
                self.url,
                why,
                f"; retrying in {self._delays[attempt]:g} s" if more else "; giving up",
            )
        return False
