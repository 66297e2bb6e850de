"""Limits over a real server and real clients (spec §1.7, §7; reliability checks 2, 6, 10).

Size caps (the 15 MiB append, the uncommitted-buffer cap, the WebSocket ``max_size``), session
expiry, and a client that stops reading while audio streams. Every server event is validated
against the SDK's ``RealtimeServerEvent`` union.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from openrealtime.app import Services
from openrealtime.backends.fake import FakeLanguageModel, FakeTextToSpeech
from openrealtime.config import Config
from openrealtime.runtime.driver import run_session
from openrealtime.transports.base import SessionRequest
from tests.conformance._error_helpers import (
    KEY,
    alive,
    fake_engines,
    raw_session,
    sdk_session,
    serve,
)

MIB = 1024 * 1024


def _b64(nbytes: int) -> str:
    return base64.b64encode(bytes(nbytes)).decode("ascii")


# --------------------------------------------------------------------------- sizes (check 2)


async def test_append_over_15_mib_gets_an_error_and_the_session_lives() -> None:
    audio = _b64(16 * MIB)  # ~21.3 MiB of base64: the frame fits the 24 MiB ws_max_size
    assert len(audio) + 100 < Config().ws_max_size
    async with serve() as base, sdk_session(base) as session:
        await session.send(
            {"type": "input_audio_buffer.append", "event_id": "evt_huge", "audio": audio}
        )
        event, before = await session.recv_until("error", wait_s=30)
        assert before == []
        assert event["error"] == {
            "type": "invalid_request_error",
            "code": "input_audio_buffer_append_too_large",
            "message": "Invalid 'audio': each input_audio_buffer.append may carry at most 15 MiB.",
            "param": "audio",
            "event_id": "evt_huge",
        }
        # The session goes on, and a normal append after it is accepted silently.
        await session.send({"type": "input_audio_buffer.append", "audio": _b64(48_000)})
        await alive(session)


async def test_uncommitted_buffer_is_capped_with_an_error() -> None:
    eight_mib = _b64(8 * MIB)
    async with serve() as base, sdk_session(base) as session:
        await session.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await session.recv_until("session.updated")
        await session.send({"type": "input_audio_buffer.append", "audio": eight_mib})
        await session.send(
            {"type": "input_audio_buffer.append", "event_id": "evt_full", "audio": eight_mib}
        )
        event, before = await session.recv_until("error", wait_s=30)
        assert before == []
        error = event["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "input_audio_buffer_full"
        assert error["event_id"] == "evt_full"
        await session.send({"type": "input_audio_buffer.clear"})
        await session.recv_until("input_audio_buffer.cleared")
        await alive(session)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "deflate-bomb"])
async def test_frame_over_ws_max_size_closes_with_1009(compressed: bool) -> None:
    limit = 64 * 1024
    config = Config(api_keys=(KEY,), vad="energy", ws_max_size=limit)
    # Plain: one byte over the cap. Compressed: 8 MiB that deflates to a few KiB on the wire.
    size = 8 * MIB if compressed else limit + 1
    frame = '{"type":"input_audio_buffer.append","audio":"' + "A" * (size - 47) + '"}'
    assert len(frame) == size
    async with serve(config) as base:
        async with raw_session(base, compression="deflate" if compressed else None) as session:
            assert session.ws is not None
            if compressed:
                assert session.ws.response is not None
                assert "permessage-deflate" in session.ws.response.headers.get(
                    "Sec-WebSocket-Extensions", ""
                )
            started = time.monotonic()
            await session.send(frame)
            closed = await session.expect_closed(wait_s=5)
            assert time.monotonic() - started < 1.0
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009
        # The server is fine: a new session works.
        async with sdk_session(base) as other:
            await alive(other)


# --------------------------------------------------------------------------- lifetime (check 10)


async def test_session_expires_with_session_expired_then_close() -> None:
    config = Config(api_keys=(KEY,), vad="energy", session_max_seconds=2)
    async with serve(config) as base:
        opened = time.time()
        async with sdk_session(base) as session:
            created = session.received[0]
            assert abs(created["session"]["expires_at"] - (opened + 2)) <= 1.5
            await alive(session)  # usable until the deadline
            event, before = await session.recv_until("error", wait_s=5)
            expired_at = time.time()
            assert before == []
            assert 1.8 <= expired_at - opened <= 3.5
            error = event["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "session_expired"
            assert error["param"] is None
            assert error["event_id"] is None
            assert error["message"].startswith("Your session hit the maximum duration of ")
            closed = await session.expect_closed(wait_s=5)
            assert time.time() - expired_at < 1.0
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1001


async def test_session_close_event_ends_the_session_with_1000() -> None:
    async with serve() as base:
        async with sdk_session(base) as session:
            await alive(session)
            await session.send({"type": "session.close", "event_id": "evt_bye"})
            closed = await session.expect_closed(wait_s=5)
            assert [e["type"] for e in session.received] == ["session.created", "session.updated"]
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1000


# --------------------------------------------------------------------------- slow reader (check 6)

STALL_S = 1.0
"""``outbound_stall_seconds`` of this test."""
CLOSE_MARGIN_S = 1.0
"""How late past the stall the server may decide to close with 1008."""
RELEASE_MARGIN_S = 3.5
"""How late past the stall the session may end and free its socket: the transport's 1 s close
timeout plus the driver's 2 s wait for its writer, plus slack."""


class _Watch:
    """What the server did on one connection, seen from inside the session runner."""

    def __init__(self) -> None:
        self.last_sent = time.monotonic()
        self.close_started: float | None = None
        self.close_code: int | None = None
        self.ended: float | None = None
        self.done = asyncio.Event()


async def test_client_that_stops_reading_is_closed_and_others_go_on() -> None:
    # ~500 s of speech (~32 MiB of base64 deltas): far more than the socket buffers hold.
    reply = " ".join(["la"] * 170)
    engines = fake_engines(
        llm=FakeLanguageModel(reply=reply), tts=FakeTextToSpeech(ms_per_char=1000)
    )
    watches: dict[str, _Watch] = {}

    async def watched_runner(transport: Any, request: SessionRequest, services: Services) -> None:
        """The real session runner, timing the transport's sends and its close."""
        watch = watches[request.session_label] = _Watch()
        send_text, close = transport.send_text, transport.close

        async def timed_send(text: str) -> None:
            await send_text(text)
            watch.last_sent = time.monotonic()

        async def timed_close(code: int = 1000, reason: str = "") -> None:
            if watch.close_started is None:
                watch.close_started, watch.close_code = time.monotonic(), code
            await close(code, reason)

        transport.send_text, transport.close = timed_send, timed_close  # shadow the methods
        try:
            await run_session(transport, request, services)
        finally:
            watch.ended = time.monotonic()
            watch.done.set()

    config = Config(api_keys=(KEY,), vad="energy", outbound_stall_seconds=STALL_S)
    async with serve(config, engines, session_runner=watched_runner) as base:
        async with (
            sdk_session(base) as healthy,
            raw_session(base, max_queue=1, compression=None) as slow,
        ):
            watch = watches[slow.received[0]["session"]["id"]]
            await slow.send({"type": "response.create"})
            # The slow client reads nothing from here on. Meanwhile, a text turn elsewhere:
            await asyncio.sleep(0.3)
            await healthy.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "hello"}],
                    },
                }
            )
            await healthy.send(
                {"type": "response.create", "response": {"output_modalities": ["text"]}}
            )
            done, _ = await healthy.recv_until("response.done")
            assert done["response"]["status"] == "completed"
            assert not watch.done.is_set(), "the healthy turn should end while the slow one stalls"

            async with asyncio.timeout(30):
                await watch.done.wait()
            assert watch.close_code == 1008
            assert watch.close_started is not None and watch.ended is not None
            stalled_for = watch.close_started - watch.last_sent
            assert stalled_for <= STALL_S + CLOSE_MARGIN_S, stalled_for
            assert watch.ended - watch.last_sent <= STALL_S + RELEASE_MARGIN_S

            # Once the slow client reads again it gets what was buffered, then the end.
            closed = await slow.expect_closed(wait_s=30)
            assert closed.rcvd is None or closed.rcvd.code == 1008
            kinds = {e["type"] for e in slow.received}
            assert "response.output_audio.delta" in kinds
            assert "response.done" not in kinds

            # The healthy session is still fine afterwards.
            await alive(healthy)
