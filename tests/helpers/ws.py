"""Reading a server's last words on a WebSocket (shared by the deployment tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conformance._error_helpers import check_event

__all__ = ["rest_of"]


async def rest_of(ws: ClientConnection, wait_s: float = 20.0) -> tuple[list[dict[str, Any]], int]:
    """Every event (validated by the SDK's models) until the server closes, and its close code."""
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait_s):
            while True:
                events.append(check_event(await ws.recv()))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return events, closed.rcvd.code
    raise AssertionError("unreachable")
