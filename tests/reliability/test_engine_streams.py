"""Engine streams are closed on every path a response can end by (fault injection, defect 1).

Instance A is a real openrealtime (fake engines, slow on purpose) serving the OpenAI HTTP
endpoints; the remote engines, or instance B running them, talk to it over loopback. What is
measured is B's side: the connections its engines hold to A (``psutil`` on this process) and
the state of each engine's httpx pool. A connection still registered as in use after every
session is gone is a leak: ~100 of them fill the pool and every later answer fails with
``engine_timeout`` (``PoolTimeout``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect

from openrealtime.backends.base import (
    ChatMessage,
    Engines,
    GenerationRequest,
    SynthesisRequest,
    TranscriptionRequest,
)
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech, Faults
from openrealtime.backends.llm_openai_compat import OpenAICompatibleLLM
from openrealtime.backends.stt_openai_compat import OpenAICompatibleSTT
from openrealtime.backends.tts_openai_compat import OpenAICompatibleTTS
from openrealtime.backends.vad_energy import EnergyVad
from openrealtime.config import Config
from openrealtime.runtime.pipeline import closing
from tests.conformance._error_helpers import KEY, fake_engines, raw_session, serve
from tests.helpers.polling import settled
from tests.helpers.server import ws_url

Engine = OpenAICompatibleSTT | OpenAICompatibleLLM | OpenAICompatibleTTS

LONG_REPLY = (
    "Well, here is an answer, in many short clauses, so that speech starts, stops, "
    "and starts again, clause after clause, for quite a while, until it ends."
)


def in_use(engine: Engine) -> tuple[int, int]:
    """(requests the engine's pool still counts, its connections that are neither idle nor
    closed); both are 0 once every stream is closed."""
    client = engine.http._client
    if client is None:
        return 0, 0
    pool = client._transport._pool  # type: ignore[attr-defined]
    busy = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    return len(pool._requests), len(busy)


def keepalive_limit(engine: Engine) -> int:
    """How many idle connections the engine's pool keeps for reuse."""
    assert engine.http._client is not None
    limit: int = engine.http._client._transport._pool._max_keepalive_connections  # type: ignore[attr-defined]
    return limit


def sockets_to(port: int) -> int:
    """This process's TCP connections to ``port`` that are not yet closed on our side."""
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
    )


@asynccontextmanager
async def server_a(chunk_delay_s: float) -> AsyncIterator[str]:
    """A: fake engines that stream with ``chunk_delay_s`` between pieces; yields ``.../v1``."""
    faults = Faults(chunk_delay_s=chunk_delay_s)
    engines = fake_engines(
        llm=FakeLanguageModel(reply=LONG_REPLY, faults=faults),
        tts=FakeTextToSpeech(chunk_ms=40, faults=faults),
        stt=FakeSpeechToText(transcript=LONG_REPLY, faults=faults),
    )
    async with serve(Config(api_keys=(KEY,), vad="energy"), engines) as base:
        yield f"{base}/v1"


def open_stream(kind: str, engine: Engine) -> AsyncIterator[Any]:
    if isinstance(engine, OpenAICompatibleSTT):
        return engine.transcribe(TranscriptionRequest(b"\x01\x00" * 16000, 16000))
    if isinstance(engine, OpenAICompatibleLLM):
        return engine.generate(GenerationRequest([ChatMessage("user", "talk")]))
    return engine.synthesize(SynthesisRequest("A sentence long enough to take a while."))


def make_engine(kind: str, url: str) -> Engine:
    if kind == "stt":
        return OpenAICompatibleSTT(url, api_key=KEY)
    if kind == "llm":
        return OpenAICompatibleLLM(url, "m", api_key=KEY)
    return OpenAICompatibleTTS(url, api_key=KEY)


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_a_stream_cancelled_while_it_closes_releases_its_connection(kind: str) -> None:
    """The driver cancels an engine task once; anyio and the session's own cancel paths may
    cancel it again a loop turn later, while httpcore is returning the connection. Sweep that
    second cancel over the first loop turns (each leaked one connection before the fix)."""
    async with server_a(chunk_delay_s=0.005) as url:
        engine = make_engine(kind, url)
        started = asyncio.Event()

        async def consume() -> None:
            async with closing(open_stream(kind, engine)) as events:
                async for _ in events:
                    started.set()
                    await asyncio.sleep(0.002)  # the consumer is busy (emit, TTS...)

        for gap in range(1, 9):
            for trial in range(4):
                started.clear()
                task = asyncio.create_task(consume())
                await started.wait()
                await asyncio.sleep(0.003 * trial)
                task.cancel()
                for _ in range(gap):
                    await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                assert in_use(engine) == (0, 0), f"gap {gap}, trial {trial}: {in_use(engine)}"
        # The pool still serves whole answers.
        assert [event async for event in open_stream(kind, engine)]
        await engine.aclose()


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_a_stream_cancelled_anywhere_in_its_life_releases_its_connection(kind: str) -> None:
    """One cancel at a moment swept across the whole stream, its end and its close included."""
    async with server_a(chunk_delay_s=0.0) as url:
        engine = make_engine(kind, url)
        finished = 0

        async def consume() -> None:
            nonlocal finished
            async with closing(open_stream(kind, engine)) as events:
                async for _ in events:
                    pass
            finished += 1

        for turns in range(0, 400, 3):
            task = asyncio.create_task(consume())
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert in_use(engine) == (0, 0), f"cancelled after {turns} turns: {in_use(engine)}"
        assert finished, "some streams ran to their end before the cancel (the sweep is too short)"
        await engine.aclose()


# --------------------------------------------------------------------------- the storm


async def _drop_mid_answer(base: str, index: int) -> str:
    """One client: ask for a spoken answer, then leave after a few audio deltas."""
    async with connect(
        ws_url(base, "/v1/realtime?model=gpt-realtime"),
        additional_headers={"Authorization": f"Bearer {KEY}"},
        max_size=None,
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "response.create"}))
        deltas = 0
        wanted = 1 + index % 7
        while deltas < wanted:
            event = json.loads(await ws.recv())
            if event["type"] == "response.output_audio.delta":
                deltas += 1
            elif event["type"] == "response.done":
                return "done"
        if index % 2:
            _reset(ws)
            return "reset"
        await ws.close()
        return "closed"


def _reset(ws: ClientConnection) -> None:
    """Drop the TCP connection with a RST (no close frame, no FIN)."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def test_disconnect_storm_leaves_no_speech_connection_in_use() -> None:
    """Hundreds of clients drop mid-answer (half reset, half close); then B's TTS holds no
    connection in use, no more sockets to A than its keep-alive pool, and a new session
    still gets its audio."""
    async with server_a(chunk_delay_s=0.001) as url:
        port_a = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        tts = OpenAICompatibleTTS(url, api_key=KEY)
        engines = Engines(
            vad=EnergyVad(),
            stt=FakeSpeechToText(),
            llm=FakeLanguageModel(reply=LONG_REPLY),
            tts=tts,
        )
        async with serve(Config(api_keys=(KEY,), vad="energy"), engines) as b:
            gate = asyncio.Semaphore(100)  # a busy loop is what makes cancels land in closes

            async def client(index: int) -> str:
                async with gate:
                    return await _drop_mid_answer(b, index)

            started = time.monotonic()
            outcomes = await asyncio.gather(*(client(i) for i in range(400)))
            assert outcomes.count("reset") >= 150 and outcomes.count("closed") >= 150
            assert time.monotonic() - started < 25

            released = await settled(lambda: in_use(tts) == (0, 0))
            assert released, f"connections left in use after the storm: {in_use(tts)}"
            assert sockets_to(port_a) <= keepalive_limit(tts)

            async with raw_session(b) as session:
                await session.send({"type": "response.create"})
                done, events = await session.recv_until("response.done")
            assert done["response"]["status"] == "completed", done
            audio = b"".join(
                base64.b64decode(e["delta"])
                for e in events
                if e["type"] == "response.output_audio.delta"
            )
            assert len(audio) > 24000  # more than half a second of speech
            assert in_use(tts) == (0, 0)
        await tts.aclose()
