"""Prometheus metrics (issue 9, item 4), through ``prometheus_client``.

Everything an operator watches: sessions open by transport, client and server events by
type, errors by code, responses by status, the per-stage latency of each answered turn
(measured from the true end of speech), engine request latency and failures, the VAD batch
size, and the event loop's lag. ``GET /metrics`` serves them in the Prometheus text format.

With several worker processes, ``PROMETHEUS_MULTIPROC_DIR`` is set before any worker starts
(the CLI does it); ``prometheus_client`` then keeps each process's values in files there and
:func:`render` adds them up (its multiprocess mode). In one process the default registry is
used. Label values are bounded: event types come from the protocol's own lists, codes from
our own errors.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = [
    "CONTENT_TYPE",
    "CLIENT_EVENTS",
    "ENGINE_FAILURES",
    "ENGINE_SECONDS",
    "ERRORS",
    "LOOP_LAG",
    "RESPONSES",
    "SERVER_EVENTS",
    "SESSIONS_OPEN",
    "SESSIONS_TOTAL",
    "TURN_STAGE_SECONDS",
    "VAD_BATCH",
    "client_event",
    "forget_dead_workers",
    "monitor_loop_lag",
    "observe_turn",
    "render",
    "server_event",
    "worker_exited",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of :func:`render`'s output."""

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

SESSIONS_OPEN = Gauge(
    "openrealtime_sessions_open",
    "Realtime sessions open now, by transport (websocket, webrtc).",
    ["transport"],
    multiprocess_mode="livesum",
)
SESSIONS_TOTAL = Counter(
    "openrealtime_sessions", "Realtime sessions started, by transport.", ["transport"]
)
CLIENT_EVENTS = Counter(
    "openrealtime_client_events",
    "Client events received, by type ('invalid' for a frame that is no valid event).",
    ["type"],
)
SERVER_EVENTS = Counter("openrealtime_server_events", "Server events sent, by type.", ["type"])
ERRORS = Counter("openrealtime_errors", "'error' events sent, by error code.", ["code"])
RESPONSES = Counter(
    "openrealtime_responses", "Responses ended (response.done), by status.", ["status"]
)
TURN_STAGE_SECONDS = Histogram(
    "openrealtime_turn_stage_seconds",
    "Seconds from the end of the user's speech to each stage of the answered turn: vad_end, "
    "turn_decision, stt_final, llm_first_token, tts_first_audio, first_delta_sent.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
ENGINE_SECONDS = Histogram(
    "openrealtime_engine_seconds",
    "Engine request latency by engine (stt, llm, tts, turn) and stage (first: to the first "
    "result; total: to the end).",
    ["engine", "stage"],
    buckets=_LATENCY_BUCKETS,
)
ENGINE_FAILURES = Counter(
    "openrealtime_engine_failures",
    "Engine requests that failed, by engine and code.",
    ["engine", "code"],
)
VAD_BATCH = Histogram(
    "openrealtime_vad_batch_size",
    "Sessions scored together in one batched VAD inference.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LOOP_LAG = Histogram(
    "openrealtime_event_loop_lag_seconds",
    "How late the event loop ran a timer (sampled every 0.5 s): time not spent serving.",
    buckets=_LAG_BUCKETS,
)


_client_children: dict[str, Any] = {}
_server_children: dict[str, Any] = {}


def client_event(kind: str) -> None:
    """Count one client event of type ``kind`` (``"invalid"`` for a frame that is none).

    The labelled child is looked up once per type: this runs for every 20 ms append.
    """
    child = _client_children.get(kind)
    if child is None:
        child = _client_children[kind] = CLIENT_EVENTS.labels(kind)
    child.inc()


def server_event(kind: str) -> None:
    """Count one server event of type ``kind`` sent to a client (audio deltas included)."""
    child = _server_children.get(kind)
    if child is None:
        child = _server_children[kind] = SERVER_EVENTS.labels(kind)
    child.inc()


def observe_turn(stages: Iterable[tuple[str, int | None]]) -> None:
    """Record one answered turn's stages (``TurnLatency.stages()``, milliseconds)."""
    for stage, ms in stages:
        if ms is not None and ms >= 0:
            TURN_STAGE_SECONDS.labels(stage).observe(ms / 1000)


def render() -> bytes:
    """The metrics in the Prometheus text format (all workers' when there are several)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def worker_exited(pid: int) -> None:
    """A worker process is gone: drop its live gauges (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def forget_dead_workers() -> None:
    """Drop the live gauges of workers that died (a worker calls it as it starts).

    uvicorn's supervisor restarts a dead worker without telling anyone; the new worker clears
    what its dead predecessors left, so ``sessions_open`` does not count their sessions.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        stem = name.removesuffix(".db")
        pid_text = stem.rsplit("_", 1)[-1]
        if not name.startswith("gauge_live") or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            worker_exited(pid)
        except PermissionError:  # alive, someone else's
            pass


async def monitor_loop_lag(interval: float = 0.5) -> None:
    """Sample the event loop's lag for ever (run it as a task; cancel it at shutdown)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        LOOP_LAG.observe(max(0.0, loop.time() - started - interval))


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a :func:`time.perf_counter` reading)."""
    return time.perf_counter() - start
