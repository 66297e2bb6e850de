"""Connections that never finish their handshake, never read, or outlive the server's stop.

Issue 8, defects 4 and 7. Before the fixes: an idle TCP connection or half a request line was
kept forever; an HTTP request with a 100 KB header line was served; a WebSocket closed with 1008
for not reading kept megabytes queued for minutes; SIGTERM waited for that client to leave.
The bounds come from ``Config.handshake_timeout``, ``close_timeout`` and ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import psutil
import pytest
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from openrealtime.config import Config
from tests.conformance._error_helpers import KEY, alive, raw_session, serve
from tests.helpers.cli_server import FAKE_ENGINES, CliServer, cli_server

UPGRADE = (
    b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Authorization: Bearer " + KEY.encode() + b"\r\n"
)


async def _exchange(base: str, data: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send ``data`` raw; return what the server answered before closing, and when it closed."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait_s):
            answer = await reader.read()  # until the server closes
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (UPGRADE + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (UPGRADE + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)), b"431"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
    ],
    ids=[
        "upgrade-long-line",
        "upgrade-200-headers",
        "http-100k-line",
        "http-200-headers",
        "long-request-line",
        "garbage",
    ],
)
async def test_oversized_or_malformed_heads_are_answered_and_closed(
    request_bytes: bytes, status: bytes
) -> None:
    async with serve() as base:
        answer, _ = await _exchange(base, request_bytes, wait_s=5)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
        assert b"connection: close" in answer.lower()
        # The server still serves.
        async with raw_session(base) as session:
            await alive(session)


async def test_idle_and_slow_handshakes_are_timed_out() -> None:
    config = Config(api_keys=(KEY,), vad="energy", handshake_timeout=1.0)
    async with serve(config) as base:
        idle = asyncio.create_task(_exchange(base, b"", wait_s=10))
        half = asyncio.create_task(_exchange(base, b"GET /heal", wait_s=10))
        slow = asyncio.create_task(_exchange(base, UPGRADE, wait_s=10))  # no blank line
        (answer, idle_s), (half_answer, half_s), (slow_answer, slow_s) = await asyncio.gather(
            idle, half, slow
        )
        assert answer == b"" and 0.8 < idle_s < 4  # closed without a word
        assert half_answer.startswith(b"HTTP/1.1 408") and 0.8 < half_s < 4
        assert slow_answer.startswith(b"HTTP/1.1 408") and 0.8 < slow_s < 4
        # A kept-alive connection gets the same deadline for its next request head.
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /hea")
        async with asyncio.timeout(10):
            everything = await reader.read()
        writer.close()
        assert everything.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in everything


# --------------------------------------------------------------------------- stalled readers


def _stalled_client(port: int, *, retrieves: int = 30) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that asks for ~12 MB and reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    protocol.receive_data(head)
    protocol.events_received()
    item = {"id": "big", "type": "message", "role": "user"}
    item["content"] = [{"type": "input_text", "text": "z " * 200_000}]  # type: ignore[assignment]
    events = [{"type": "conversation.item.create", "item": item}]
    events += [{"type": "conversation.item.retrieve", "item_id": "big"}] * retrieves
    for event in events:
        protocol.send_text(json.dumps(event).encode())
    sock.sendall(b"".join(protocol.data_to_send()))
    return sock


def _connections_to(server: CliServer, client: socket.socket) -> int:
    """Server-side TCP connections to ``client``'s port (not counting TIME_WAIT)."""
    port = client.getsockname()[1]
    return sum(
        1
        for c in psutil.Process(server.process.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
    )


STALL_ENV = {
    "OPENREALTIME_DRAIN_SECONDS": "0.5",  # the drain is not what these tests measure
    "OPENREALTIME_OUTBOUND_STALL_SECONDS": "1",
    "OPENREALTIME_CLOSE_TIMEOUT": "1",
    "OPENREALTIME_SHUTDOWN_TIMEOUT": "3",
}


def test_a_reader_closed_for_stalling_is_dropped_and_shutdown_is_quick(tmp_path: Path) -> None:
    with cli_server(*FAKE_ENGINES, env=STALL_ENV, log_dir=tmp_path) as server:
        client = _stalled_client(server.port)
        try:
            deadline = time.monotonic() + 15
            while "closing with 1008" not in server.log_text():
                assert time.monotonic() < deadline, server.log_text()[-2000:]
                time.sleep(0.1)
            # 1008 sent (or not: the peer reads nothing); within close_timeout + slack the
            # connection and its queued megabytes are gone.
            deadline = time.monotonic() + 5
            while _connections_to(server, client):
                assert time.monotonic() < deadline, "the stalled connection was kept"
                time.sleep(0.1)
            assert "aborted the WebSocket" in server.log_text()
            assert server.stop() < 5
        finally:
            client.close()


def test_sigterm_with_a_stalled_reader_exits_within_the_shutdown_bound(tmp_path: Path) -> None:
    env = {**STALL_ENV, "OPENREALTIME_OUTBOUND_STALL_SECONDS": "60"}  # never stall-closed
    with cli_server(*FAKE_ENGINES, env=env, log_dir=tmp_path) as server:
        client = _stalled_client(server.port)
        try:
            time.sleep(2)  # the server's buffers toward the client are full by now
            assert _connections_to(server, client) == 1
            seconds = server.stop()
            assert seconds < 3 + 3, f"SIGTERM took {seconds:.1f} s\n{server.log_text()[-2000:]}"
        finally:
            client.close()


async def test_a_text_message_that_is_not_utf8_closes_1007_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve() as base:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        uri = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
        protocol = ClientProtocol(parse_uri(uri))
        request = protocol.connect()
        request.headers["Authorization"] = f"Bearer {KEY}"
        protocol.send_request(request)
        writer.write(b"".join(protocol.data_to_send()))
        protocol.receive_data(await reader.readuntil(b"\r\n\r\n"))
        for _ in range(20):
            protocol.send_text(b"\xff\xfe not utf-8")  # sansio sends the bytes as they are
        writer.write(b"".join(protocol.data_to_send()))
        async with asyncio.timeout(5):
            while not reader.at_eof():
                protocol.receive_data(await reader.read(65536))
        writer.close()
        assert protocol.close_rcvd is not None and protocol.close_rcvd.code == 1007
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [r.getMessage() for r in errors]
        async with raw_session(base) as session:
            await alive(session)
