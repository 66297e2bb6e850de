"""Many sessions come and go, cleanly or torn down: nothing is left behind (check 8).

Each session connects, updates its config, streams some audio, asks for a spoken answer and
leaves in the middle of it: half close cleanly (1000), half tear the TCP connection down with
a reset. Afterwards the server process's open files, asyncio tasks and threads are back where
they started (±2), and a new session works.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import socket
import struct

import psutil
from websockets.asyncio.client import connect

from openrealtime.backends.fake import FakeTextToSpeech, Faults
from tests.conformance._error_helpers import KEY, alive, fake_engines, raw_session, serve
from tests.helpers.server import ws_url

SESSIONS = 240
AT_ONCE = 24
AUDIO = base64.b64encode(bytes(4800)).decode()  # 100 ms of silence


def _resources() -> tuple[int, int, int]:
    gc.collect()
    process = psutil.Process()
    return process.num_fds(), len(asyncio.all_tasks()), process.num_threads()


async def _one(base: str, index: int) -> None:
    async with connect(
        ws_url(base, "/v1/realtime?model=gpt-realtime"),
        additional_headers={"Authorization": f"Bearer {KEY}"},
    ) as ws:
        await ws.recv()  # session.created
        await ws.send(
            json.dumps(
                {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
            )
        )
        for _ in range(3):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": AUDIO}))
        await ws.send(json.dumps({"type": "response.create"}))
        while json.loads(await ws.recv())["type"] != "response.output_audio.delta":
            pass
        if index % 2:  # torn down mid-answer: RST, no close frame
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()


async def test_sessions_that_come_and_go_leave_nothing_behind() -> None:
    tts = FakeTextToSpeech(faults=Faults(chunk_delay_s=0.01))  # answers still going on at exit
    async with serve(engines=fake_engines(tts=tts)) as base:
        async with raw_session(base) as warm:  # first-use allocations are not a leak
            await alive(warm)
        await asyncio.sleep(0.2)
        before = _resources()
        slots = asyncio.Semaphore(AT_ONCE)

        async def run(i: int) -> None:
            async with slots:
                await _one(base, i)

        results = await asyncio.gather(*(run(i) for i in range(SESSIONS)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            after = _resources()
            if all(abs(a - b) <= 2 for a, b in zip(after, before, strict=True)):
                break
            assert asyncio.get_running_loop().time() < deadline, (
                f"open files, tasks, threads: before {before}, after {after}"
            )
            await asyncio.sleep(0.2)
        async with raw_session(base) as session:
            await alive(session)
