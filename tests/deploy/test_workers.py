"""``openrealtime serve --workers 2``: processes sharing one port (issue 9, item 1).

The real command in a child process, with a real Redis (``tests/helpers/redis_server.py``):
sessions spread over both workers (which worker holds each connection is read from the kernel
with psutil), a client secret minted by one worker opens sessions on the other, and SIGTERM
drains every worker and stops them all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from openrealtime.config import Config
from tests.conformance._error_helpers import check_event
from tests.helpers.cli_server import FAKE_ENGINES, CliServer, cli_server
from tests.helpers.redis_server import redis_server
from tests.helpers.ws import rest_of

WAIT_S = 10.0


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


def workers_of(server: CliServer, count: int, wait_s: float = 30.0) -> list[psutil.Process]:
    """The ``count`` worker processes of ``server``, once each listens on its private port."""
    deadline = time.monotonic() + wait_s
    while True:
        workers = [
            child
            for child in psutil.Process(server.process.pid).children()
            if _listening_worker(child, server.port)
        ]
        if len(workers) == count:
            return workers
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(workers)} of {count} workers up: {server.log_text()}")
        time.sleep(0.1)


def _listening_worker(child: psutil.Process, port: int) -> bool:
    """Whether ``child`` is a live worker listening on its private port."""
    try:
        return "spawn_main" in " ".join(child.cmdline()) and any(
            c.status == psutil.CONN_LISTEN and c.laddr.port != port
            for c in child.net_connections(kind="tcp")
        )
    except psutil.Error:  # gone, or a zombie the supervisor has not reaped yet
        return False


def holder(workers: list[psutil.Process], ws: ClientConnection) -> int:
    """The pid of the worker holding the server side of ``ws``."""
    port = ws.local_address[1]
    for worker in workers:
        if any(c.raddr and c.raddr.port == port for c in worker.net_connections(kind="tcp")):
            return worker.pid
    raise AssertionError(f"no worker holds the connection from port {port}")


async def open_session(
    base: str, key: str | None = None, instructions: str | None = None
) -> ClientConnection:
    """A realtime session (``?model=`` without a key; the secret's session with one)."""
    url = base.replace("http://", "ws://") + "/v1/realtime"
    if key is None:
        url += "?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {key}"} if key else None
    ws = await connect(url, additional_headers=headers)
    async with asyncio.timeout(WAIT_S):
        created = check_event(await ws.recv())
    assert created["type"] == "session.created", created
    if instructions is not None:
        assert created["session"]["instructions"] == instructions
    return ws


async def test_sessions_spread_over_the_workers_and_secrets_open_sessions_on_any(
    tmp_path: Path, redis_url: str
) -> None:
    args = (*FAKE_ENGINES, "--workers", "2", "--redis-url", redis_url)
    with cli_server(*args, log_dir=tmp_path) as server:
        workers = workers_of(server, 2)
        sessions = [await open_session(server.base) for _ in range(24)]
        held = [holder(workers, ws) for ws in sessions]
        assert set(held) == {w.pid for w in workers}, held  # both workers serve sessions
        # Each session is served (not just accepted) by its worker.
        for ws in sessions:
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            async with asyncio.timeout(WAIT_S):
                event = check_event(await ws.recv())
            assert event["type"] == "input_audio_buffer.cleared"
            await ws.close()

        # /metrics adds up every worker's values (prometheus_client's multiprocess mode),
        # whichever worker answers the scrape.
        for _ in range(4):
            async with httpx.AsyncClient(base_url=server.base) as http:
                scraped = await http.get("/metrics")
            assert scraped.status_code == 200
            totals = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(scraped.text)
                for sample in family.samples
            }
            started = totals[("openrealtime_sessions_total", (("transport", "websocket"),))]
            cleared = totals[
                ("openrealtime_client_events_total", (("type", "input_audio_buffer.clear"),))
            ]
            assert started == 24 and cleared == 24, (started, cleared)

        # One secret, minted by whichever worker took the request, opens sessions on both.
        session = {"type": "realtime", "instructions": "from the secret"}
        async with httpx.AsyncClient(base_url=server.base) as http:
            minted = await http.post("/v1/realtime/client_secrets", json={"session": session})
        assert minted.status_code == 200, minted.text
        secret = minted.json()["value"]
        assert secret.startswith("ek_")
        opened: set[int] = set()
        for _ in range(40):  # new connections until both workers took one
            ws = await open_session(server.base, key=secret, instructions="from the secret")
            opened.add(holder(workers, ws))
            await ws.close()
            if len(opened) == 2:
                break
        assert opened == {w.pid for w in workers}, opened


async def test_sigterm_drains_every_worker_then_stops_them_all(
    tmp_path: Path, redis_url: str
) -> None:
    args = (*FAKE_ENGINES, "--workers", "2", "--redis-url", redis_url, "--drain-seconds", "1")
    with cli_server(*args, log_dir=tmp_path) as server:
        workers = workers_of(server, 2)
        sessions: list[ClientConnection] = []
        while len({holder(workers, ws) for ws in sessions}) < 2:  # one session on each, at least
            assert len(sessions) < 40, "every session landed on one worker"
            sessions.append(await open_session(server.base))
        server.process.send_signal(15)  # SIGTERM to the parent, as a supervisor does
        signalled = time.monotonic()
        ends = await asyncio.gather(*(rest_of(ws) for ws in sessions))
        waited = time.monotonic() - signalled
        for events, code in ends:  # every session on every worker drained, then was told
            assert code == 1001, (code, events)
            assert [e["error"]["code"] for e in events] == ["server_shutting_down"]
        assert 0.8 < waited < 6, waited
        server.process.wait(10)
        assert server.process.returncode == 0, server.log_text()
        for worker in workers:
            assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        assert server.log_text().count("Finished server process") == 2


def test_workers_without_redis_are_refused_with_a_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "openrealtime", "serve", *FAKE_ENGINES, "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--workers 2 needs --redis-url" in done.stderr


def test_config_round_trips_through_the_environment() -> None:
    config = Config(
        api_keys=("sk-one-0123456789", "sk-two-0123456789"),
        secret_signing_key="k" * 40,
        workers=3,
        redis_url="redis://127.0.0.1:6379/2",
        internal_host="10.0.0.5",
        internal_port=9100,
        advertise_host="node-a.internal",
        llm="openai-compatible",
        llm_base_url="http://engine:8000/v1",
        llm_model="m",
        drain_seconds=1.5,
        accept_any_model=False,
        allowed_origins=(),
        models=("gpt-realtime",),
    )
    env = config.to_env()
    assert Config.from_env(env) == config
    assert Config.from_env(Config().to_env()) == Config()
    # Every field is written, so what the parent inherited cannot leak into a worker.
    assert env["OPENREALTIME_STT_BASE_URL"] == ""
    assert Config.from_env({"OPENREALTIME_TTS_MODEL": "stale", **env}) == config
    with pytest.raises(ValueError, match="api_keys"):
        Config(api_keys=("sk-a,b-0123456789",)).to_env()


def test_worker_and_call_flags_reach_the_config(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from openrealtime import cli

    seen: list[Config] = []
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    monkeypatch.setattr(cli, "_run_server", lambda config: seen.append(config) or 0)
    for name in list(os.environ):
        if name.startswith("OPENREALTIME_"):
            monkeypatch.delenv(name)
    argv = ["serve", "--workers", "3", "--redis-url", "redis://10.0.0.2:6379/1"]
    argv += ["--internal-host", "0.0.0.0", "--internal-port", "9100"]
    argv += ["--advertise-host", "node-a.internal"]
    caplog.set_level(logging.INFO, logger="openrealtime")
    assert cli.main(argv) == 0
    (config,) = seen
    assert (config.workers, config.redis_url) == (3, "redis://10.0.0.2:6379/1")
    assert (config.internal_host, config.internal_port) == ("0.0.0.0", 9100)
    assert config.advertise_host == "node-a.internal"
    # Without a signing key or API keys, the other instances would refuse its secrets: said.
    assert "refused by the other instances" in caplog.text
    # A wildcard private listener needs the address others reach it at.
    assert cli.main(argv[:-2]) == 2


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_worker_killed_with_open_sessions_leaves_no_ghost_sessions_in_metrics(
    tmp_path: Path, redis_url: str
) -> None:
    args = (*FAKE_ENGINES, "--workers", "2", "--redis-url", redis_url)
    open_key = ("openrealtime_sessions_open", (("transport", "websocket"),))
    with cli_server(*args, log_dir=tmp_path) as server:
        workers = workers_of(server, 2)
        sessions = [await open_session(server.base) for _ in range(12)]
        held = [holder(workers, ws) for ws in sessions]
        victim = held[0]
        survivors = [ws for ws, pid in zip(sessions, held, strict=True) if pid != victim]
        psutil.Process(victim).kill()
        workers_of(server, 2)  # the supervisor started a new one
        deadline = time.monotonic() + WAIT_S
        while True:
            async with httpx.AsyncClient(base_url=server.base) as http:
                # no series at all is 0 open: the accepts may all have gone to the victim
                value = _samples((await http.get("/metrics")).text).get(open_key, 0.0)
            if value == len(survivors):
                break
            assert time.monotonic() < deadline, f"sessions_open {value}, {len(survivors)} alive"
            await asyncio.sleep(0.2)
        for ws in sessions:
            await ws.close()
