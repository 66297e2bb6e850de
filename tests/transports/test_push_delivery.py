"""Client frames pushed to the session as they are parsed (issue 9, the per-append path).

Under the server's own WebSocket protocol a session takes its frames from a callback instead of
the ASGI ``receive`` (``StarletteWebSocketTransport.push_to``). Over a real socket: frames that
arrived before the session asked for them come first and in order; the session can stop the
socket being read and start it again without losing or reordering a frame; the end of the
connection is pushed once, with the client's close code; and a real session served this way
still answers every frame.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

from openrealtime.transports.base import SessionRequest
from openrealtime.transports.websocket import StarletteWebSocketTransport
from tests.conformance._error_helpers import KEY, raw_session, serve
from tests.helpers.polling import settled
from tests.helpers.server import ws_url

URL_PATH = "/v1/realtime?model=gpt-realtime"
HEADERS = {"Authorization": f"Bearer {KEY}"}


class _Recorder:
    """A session runner that records what is pushed to it."""

    def __init__(self, *, delay_s: float = 0.0, pause_after: int | None = None) -> None:
        self.delay_s = delay_s
        self.pause_after = pause_after
        self.frames: list[str | bytes] = []
        self.ended = asyncio.Event()
        self.pushed = False
        self.peer_close_code: int | None = None
        self.transport: StarletteWebSocketTransport | None = None
        self.ends = 0

    async def __call__(self, transport: Any, request: SessionRequest, services: Any, /) -> None:
        assert isinstance(transport, StarletteWebSocketTransport)
        self.transport = transport
        await asyncio.sleep(self.delay_s)  # frames sent meanwhile wait in uvicorn's queue

        def deliver(frame: str | bytes | None) -> None:
            if frame is None:
                self.ends += 1
                self.peer_close_code = transport.peer_close_code
                self.ended.set()
                return
            self.frames.append(frame)
            if self.pause_after is not None and len(self.frames) == self.pause_after:
                transport.pause_reading()

        self.pushed = transport.push_to(deliver)
        await self.ended.wait()


async def test_frames_sent_before_the_session_asked_come_first_and_in_order() -> None:
    recorder = _Recorder(delay_s=0.5)
    async with serve(session_runner=recorder) as base:
        async with connect(ws_url(base, URL_PATH), additional_headers=HEADERS) as ws:
            for i in range(20):
                await ws.send(json.dumps({"n": i}))
            await ws.send(b"\x00binary")
            await asyncio.sleep(1.0)  # the session asks after 0.5 s
            for i in range(20, 30):
                await ws.send(json.dumps({"n": i}))
            await asyncio.sleep(0.2)
        async with asyncio.timeout(5):
            await recorder.ended.wait()
        await asyncio.sleep(0.2)
    assert recorder.pushed
    texts = [json.loads(f)["n"] for f in recorder.frames if isinstance(f, str)]
    assert texts == list(range(30))
    assert recorder.frames[20] == b"\x00binary"
    assert recorder.ends == 1  # the end is pushed once, though uvicorn reports it twice
    assert recorder.peer_close_code == 1000


async def test_a_paused_socket_is_not_read_and_loses_nothing_when_resumed() -> None:
    recorder = _Recorder(pause_after=3)
    big = "x" * 65536
    async with serve(session_runner=recorder) as base:
        async with connect(
            ws_url(base, URL_PATH), additional_headers=HEADERS, max_size=None, compression=None
        ) as ws:
            sent = 0

            async def flood() -> None:
                nonlocal sent
                for i in range(400):  # 26 MB: far more than the socket buffers hold
                    await ws.send(json.dumps({"n": i, "pad": big}))
                    sent += 1

            sender = asyncio.create_task(flood())
            await asyncio.sleep(1.5)
            assert not sender.done(), "the client could send everything: nothing was paused"
            assert len(recorder.frames) == 3  # nothing read past the pause
            assert recorder.transport is not None
            recorder.transport.resume_reading()
            async with asyncio.timeout(20):
                await sender
            assert await settled(lambda: len(recorder.frames) == 400, within=20)
    numbers = [json.loads(f)["n"] for f in recorder.frames]
    assert numbers == list(range(400))


async def test_a_real_session_answers_every_frame_of_a_burst_in_order() -> None:
    """The real driver under push: a burst sent at once, each event answered in order."""
    async with serve() as base, raw_session(base) as session:
        ids = [f"evt_{i}" for i in range(300)]
        for event_id in ids:  # unknown events: each gets its own error, echoing its id
            await session.send({"type": "no.such.event", "event_id": event_id})
        echoed = []
        async with asyncio.timeout(20):
            while len(echoed) < len(ids):
                event = await session.recv()
                if event["type"] == "error":
                    echoed.append(event["error"]["event_id"])
        assert echoed == ids
