"""SIGTERM drains, and readiness means something (issue 9, items 5 and 6).

Both run the real ``openrealtime serve`` in a child process, as an operator's supervisor would:
SIGTERM for the drain; a second instance as the first one's LLM engine (docs/engines.md
"openrealtime as another instance's engine") for readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.conformance._error_helpers import check_event
from tests.helpers.cli_server import FAKE_ENGINES, cli_server, free_port
from tests.helpers.ws import rest_of

FAST = {"OPENREALTIME_ENGINE_PROBE_SECONDS": "0.3"}


async def _open(base: str) -> ClientConnection:
    ws = await connect(base.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime")
    assert check_event(await ws.recv())["type"] == "session.created"
    return ws


async def _slow_llm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A chat-completions server that streams one token every 100 ms, 200 of them."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(v)
                for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                if k.strip().lower() == b"content-length"
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        for _ in range(200):
            chunk = {"choices": [{"index": 0, "delta": {"content": "tok "}}]}
            writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await writer.drain()
            await asyncio.sleep(0.1)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await writer.wait_closed()


@contextlib.contextmanager
def _slow_llm_server() -> Iterator[str]:
    """:func:`_slow_llm` on its own thread and loop (the test's loop blocks in ``cli_server``)."""
    loop = asyncio.new_event_loop()
    started: list[asyncio.Server] = []
    ready = threading.Event()

    async def start() -> None:
        started.append(await asyncio.start_server(_slow_llm, "127.0.0.1", 0))
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    ready.wait(5)
    try:
        yield f"http://127.0.0.1:{started[0].sockets[0].getsockname()[1]}/v1"
    finally:

        async def stop() -> None:
            started[0].close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await started[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def test_sigterm_drains_sessions_then_ends_them_with_an_error_and_a_close(
    tmp_path: Path,
) -> None:
    with _slow_llm_server() as llm_url:
        await _drain_scenario(tmp_path, llm_url)


async def _drain_scenario(tmp_path: Path, llm_url: str) -> None:
    args = (
        *FAKE_ENGINES[:4],  # --vad energy --stt fake
        "--tts",
        "fake",
        "--turn",
        "none",
        "--llm",
        "openai-compatible",
        "--llm-base-url",
        llm_url,
        "--llm-model",
        "slow",
        "--drain-seconds",
        "1.5",
    )
    with cli_server(*args, log_dir=tmp_path) as server:
        idle = await _open(server.base)
        busy = await _open(server.base)
        finished = await _open(server.base)
        await busy.send(
            json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}})
        )
        while check_event(await busy.recv())["type"] != "response.output_text.delta":
            pass
        server.process.send_signal(15)  # SIGTERM
        signalled = time.monotonic()
        async with httpx.AsyncClient(base_url=server.base) as http:
            for _ in range(50):  # readiness fails at once; liveness stays
                ready = await http.get("/readyz")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.02)
            assert ready.status_code == 503 and ready.json()["status"] == "not ready"
            assert any("draining" in r for r in ready.json()["reasons"])
            assert (await http.get("/healthz")).status_code == 200
        # A new session is refused, with a reason.
        late = await connect(server.base.replace("http://", "ws://") + "/v1/realtime?model=x")
        events, code = await rest_of(late)
        assert code == 1013 and [e["error"]["code"] for e in events] == ["server_shutting_down"]
        # A session that leaves by itself during the drain just leaves.
        await finished.close()
        # The others go on until the drain ends, then get the error and a close.
        idle_events, idle_code = await rest_of(idle)
        busy_events, busy_code = await rest_of(busy)
        waited = time.monotonic() - signalled
        assert 1.3 < waited < 6, waited
        assert idle_code == busy_code == 1001
        assert [e["type"] for e in idle_events] == ["error"]
        assert idle_events[0]["error"]["code"] == "server_shutting_down"
        assert idle_events[0]["error"]["type"] == "server_error"
        kinds = [e["type"] for e in busy_events]
        done = busy_events[kinds.index("response.done")]["response"]
        assert done["status"] == "failed"
        assert done["status_details"]["error"]["code"] == "server_shutting_down"
        assert kinds[-1] == "error" and busy_events[-1]["error"]["code"] == "server_shutting_down"
        assert kinds.count("response.done") == 1
        exited = server.stop(timeout=10)
        assert time.monotonic() - signalled < 8, f"exited {exited:.1f} s after the last close"


async def test_an_engine_down_at_start_is_reported_not_ready_and_recovers(tmp_path: Path) -> None:
    engine_port = free_port()
    engine_url = f"http://127.0.0.1:{engine_port}/v1"
    front_args = (
        *FAKE_ENGINES[:4],
        "--tts",
        "fake",
        "--turn",
        "none",
        "--llm",
        "openai-compatible",
        "--llm-base-url",
        engine_url,
        "--llm-model",
        "m",
    )
    with cli_server(*front_args, env=FAST, log_dir=tmp_path) as front:
        async with httpx.AsyncClient(base_url=front.base) as http:
            # Up (it did not die with a traceback), live, not ready, and it says why.
            assert (await http.get("/healthz")).status_code == 200
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert any("warm-up failed" in r for r in not_ready.json()["reasons"])
            with cli_server(*FAKE_ENGINES, port=engine_port, log_dir=tmp_path):
                assert await _becomes(http, 200)
                ws = await _open(front.base)  # answered by the engine instance
                await ws.send(
                    json.dumps(
                        {"type": "response.create", "response": {"output_modalities": ["text"]}}
                    )
                )
                kinds = []
                while (event := check_event(await ws.recv()))["type"] != "response.done":
                    kinds.append(event["type"])
                assert (
                    event["response"]["status"] == "completed"
                    and "response.output_text.delta" in kinds
                )
                await ws.close()
            # The engine went away: not ready again, until it is back.
            assert await _becomes(http, 503)
            reasons = (await http.get("/readyz")).json()["reasons"]
            assert any("LLM engine at" in r and "unreachable" in r for r in reasons), reasons
            with cli_server(*FAKE_ENGINES, port=engine_port, log_dir=tmp_path):
                assert await _becomes(http, 200)


async def _becomes(http: httpx.AsyncClient, status: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await http.get("/readyz")).status_code == status:
            return True
        await asyncio.sleep(0.1)
    return False
