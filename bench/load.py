"""Load: N concurrent sessions streaming real-time 20 ms appends under ``server_vad`` (Silero).

One asyncio process (uvloop when installed) opens N WebSocket sessions to a server subprocess
(``openrealtime serve --vad silero --stt fake --llm fake --tts fake --turn none``), sets
``server_vad`` with ``create_response: false``, and streams ``input_audio_buffer.append`` frames
of 20 ms paced in real time: session i sends chunk k at ``t0 + offset_i + 20 k ms``, the offsets
spread over one 20 ms period so the sends are spread too. The audio is flite speech turns (as in
``bench/vad_latency.py``) separated by low-noise silence.

To drive hundreds of sessions from one core, the generator does almost nothing per append: every
distinct 20 ms chunk is one WebSocket frame built once (JSON, base64, masked and, with
``--compression deflate``, deflated on its own by websockets' own serialisation, so the server
sees what an SDK client sends) and shared by every session; a send is one ``transport.write`` of
those bytes from a single pacer that walks all sessions in deadline order. Only the server's few
events per turn go through a websockets sans-I/O parser. ``--replay N`` instead times the event
loop's part of an append in process (codec, core, VAD hand-over).

Per turn it measures (the definition of ``bench/vad_latency.py``)::

    latency = t_speech_stopped_received - (t_first_silent_chunk_sent + silence_duration_ms)

and, per ``speech_stopped``, how far the server was behind: the audio sent by then minus the
event's ``audio_end_ms`` ("backlog", in ms of audio). A session **kept up** when every planned
turn got its ``speech_stopped`` (no later than ``--behind-ms`` of backlog) and its socket never
backed up (the server kept reading); the generator's own lateness is reported beside it.
The server's CPU (per thread name: ``main`` is the event loop) and memory (PSS) are read from
``/proc`` for the server and all its processes (``--workers N`` adds child processes).

    .venv/bin/python bench/load.py --sessions 1,100,300,500 --seconds 30
    .venv/bin/python bench/load.py --sessions 1,200 --pin --workers 1,2
    .venv/bin/python bench/load.py --sessions 300 --tree /tmp/hot-base/src --tree .   # before/after
    .venv/bin/python bench/load.py --replay 20000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import random
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    cpu_times,
    default_cpus,
    fmt,
    percentile,
    pin_self,
    print_machine,
    redis_server,
    serve,
    thread_cpu_seconds,
    tree_cpu_seconds,
    tree_memory,
)
from vad_latency import CHUNK_MS, CHUNK_SAMPLES, RATE, make_utterances
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

SERVE_ARGS = ("--stt", "fake", "--llm", "fake", "--tts", "fake", "--turn", "none")
WINDOW_BITS = 12
"""permessage-deflate window both ways, as openai-python's websockets client offers."""
DEFLATE_SETTINGS = {"memLevel": 5}
STALL_BYTES = 1 << 20
"""A session whose unsent bytes reach this is stalled: the generator stops feeding it."""
BACKED_UP_BYTES = 64 * 1024
"""Unsent bytes beyond the kernel's socket buffer: the server stopped reading this session."""


# ----------------------------------------------------------------------------- audio


def _append_json(pcm: np.ndarray) -> bytes:
    audio = base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio}).encode()


class Frames:
    """Every distinct append as a ready WebSocket frame: speech chunks and silence chunks."""

    def __init__(self, utterances: list[np.ndarray], compression: bool, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.compression = compression
        noise = [rng.normal(0, 33, CHUNK_SAMPLES).clip(-32768, 32767) for _ in range(64)]
        self.texts = [_append_json(x) for x in noise]
        """The silence appends' JSON (the speech's follow), for ``--replay``."""
        self.silence = [self._frame(text) for text in self.texts]
        self.speech: list[list[bytes]] = []
        for utt in utterances:
            pad = -len(utt) % CHUNK_SAMPLES
            padded = np.concatenate([utt, rng.normal(0, 33, pad)]).clip(-32768, 32767)
            texts = [
                _append_json(padded[i : i + CHUNK_SAMPLES])
                for i in range(0, len(padded), CHUNK_SAMPLES)
            ]
            self.texts += texts
            self.speech.append([self._frame(text) for text in texts])

    def _frame(self, payload: bytes) -> bytes:
        extensions = []
        if self.compression:
            # Deflated on its own (a fresh encoder), so it references no earlier message: valid
            # on a connection with context takeover too (each message ends on a sync flush).
            extensions = [
                PerMessageDeflate(False, True, WINDOW_BITS, WINDOW_BITS, DEFLATE_SETTINGS)
            ]
        return Frame(Opcode.TEXT, payload).serialize(mask=True, extensions=extensions)


@dataclass
class Turn:
    speech_chunk: int
    first_silent_chunk: int


@dataclass
class Plan:
    frames: list[bytes]
    turns: list[Turn]


def make_plan(bank: Frames, rng: random.Random, chunks: int, silence_ms: int) -> Plan:
    """``chunks`` frames: lead silence, then turns each followed by a silence tail."""
    frames: list[bytes] = []
    turns: list[Turn] = []
    tail = math.ceil((silence_ms + 500) / CHUNK_MS)
    # every turn must be decided before the audio ends: its silence, the VAD's lag, a margin
    need_after = math.ceil((silence_ms + 600) / CHUNK_MS)

    def silence(count: int) -> None:
        for _ in range(count):
            frames.append(bank.silence[rng.randrange(len(bank.silence))])

    silence(rng.randrange(10))
    while True:
        utt = bank.speech[rng.randrange(len(bank.speech))]
        if len(frames) + len(utt) + need_after > chunks:
            break
        start = len(frames)
        frames.extend(utt)
        turns.append(Turn(start, len(frames)))
        silence(tail + rng.randrange(10))  # moves the next turn's phase against the VAD frames
    silence(max(0, chunks - len(frames)))
    return Plan(frames[:chunks], turns)


# ----------------------------------------------------------------------------- one session


@dataclass
class Stop:
    audio_end_ms: int
    t_received: float
    sent_ms: int
    """Audio sent on this session when the event arrived (ms)."""


class Session(asyncio.Protocol):
    """One client connection: sans-I/O handshake and receive, pre-built frames sent raw."""

    def __init__(self, url: str, plan: Plan, offset: float, update: str, compression: bool):
        self.plan = plan
        self.offset = offset
        self.update = update
        extensions = None
        if compression:
            extensions = [
                ClientPerMessageDeflateFactory(
                    server_max_window_bits=WINDOW_BITS,
                    client_max_window_bits=WINDOW_BITS,
                    compress_settings=DEFLATE_SETTINGS,
                )
            ]
        self.conn = ClientProtocol(parse_uri(url), extensions=extensions, max_size=None)
        self.transport: asyncio.Transport | None = None
        self.updated = asyncio.get_running_loop().create_future()
        self.times = array("d", bytes(8 * len(plan.frames)))
        """Send time of every chunk."""
        self.sent = 0
        self.stops: list[Stop] = []
        self.starts = 0
        self.errors: list[str] = []
        self.max_buffer = 0
        self.stalled = False
        self.lost = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.conn.send_request(self.conn.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; handle the handshake and text events; answer pings."""
        self.conn.receive_data(data)
        for event in self.conn.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._message(bytes(event.data))
            elif isinstance(event, Response):
                if self.conn.handshake_exc is not None:
                    self._fail(f"handshake: {self.conn.handshake_exc!r}")
                    return
                self.conn.send_text(self.update.encode())
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Note an unexpected loss (the server dropped us)."""
        self.lost = True
        if not self.updated.done():
            self.updated.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(x for x in out if x))

    def _fail(self, why: str) -> None:
        self.errors.append(why)
        if not self.updated.done():
            self.updated.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def _message(self, data: bytes) -> None:
        now = time.monotonic()
        if b'"input_audio_buffer.speech_stopped"' in data:
            end = json.loads(data)["audio_end_ms"]
            self.stops.append(Stop(end, now, self.sent * CHUNK_MS))
        elif b'"input_audio_buffer.speech_started"' in data:
            self.starts += 1
        elif b'"session.updated"' in data:
            if not self.updated.done():
                self.updated.set_result(None)
        elif b'"type":"error"' in data:
            self.errors.append(json.loads(data)["error"].get("code") or "error")

    def close(self) -> None:
        """Say goodbye (close frame) and drop the connection."""
        if self.transport is None or self.transport.is_closing():
            return
        with contextlib.suppress(Exception):
            self.conn.send_close(1000)
            self._flush()
        self.transport.close()


# ----------------------------------------------------------------------------- pacer


class Lateness:
    """The generator's own lateness per send, as a 0.1 ms histogram (no per-send allocation)."""

    def __init__(self) -> None:
        self.bins = array("q", bytes(8 * 10_001))
        self.max = 0.0

    def percentile(self, q: float) -> float:
        total = sum(self.bins)
        if not total:
            return float("nan")
        rank = q / 100 * (total - 1)
        seen = 0
        for i, count in enumerate(self.bins):
            seen += count
            if seen > rank:
                return i / 10
        return self.max * 1000


async def pace(sessions: list[Session], t0: float, chunks: int, late: Lateness) -> None:
    """Send chunk k of session i at ``t0 + offset_i + 20 k ms``, all sessions in one loop."""
    order = sorted(sessions, key=lambda s: s.offset)
    offsets = [t0 + s.offset for s in order]
    period = CHUNK_MS / 1000
    bins = late.bins
    n = len(order)
    j = c = 0
    monotonic = time.monotonic
    while c < chunks:
        now = monotonic()
        base = c * period
        while True:
            deadline = offsets[j] + base
            if deadline > now:
                break
            s = order[j]
            transport = s.transport
            if transport is not None and not s.stalled and not s.lost:
                transport.write(s.plan.frames[c])
                s.times[c] = now
                s.sent = c + 1
                buffered = transport.get_write_buffer_size()
                if buffered > s.max_buffer:
                    s.max_buffer = buffered
                    if buffered >= STALL_BYTES:
                        s.stalled = True
                lag = now - deadline
                bins[min(int(lag * 10_000), 10_000)] += 1
                if lag > late.max:
                    late.max = lag
            j += 1
            if j == n:
                j = 0
                c += 1
                if c == chunks:
                    return
                base = c * period
            now = monotonic()
        await asyncio.sleep(max(deadline - now, 0.001))


# ----------------------------------------------------------------------------- one level


@dataclass
class Result:
    workers: int
    tree: str
    sessions: int
    turns: int = 0
    measured: int = 0
    missed: int = 0
    latency: list[float] = field(default_factory=list)
    backlog: list[float] = field(default_factory=list)
    kept_up: int = 0
    backed_up: int = 0
    stalled: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)
    late_p99: float = float("nan")
    late_max: float = float("nan")
    window_s: float = 0.0
    server_cpu: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)
    """CPU % of one core by server thread name (``main``: event loops, ``vad_0``: the VAD)."""
    generator_cpu: float = 0.0
    machine: dict[str, float] = field(default_factory=dict)
    pss_idle: float = 0.0
    rss_idle: float = 0.0
    pss_busy: float = 0.0
    rss_busy: float = 0.0


def analyse(sessions: list[Session], res: Result, silence_ms: int, behind_ms: float) -> None:
    """Match each planned turn to its ``speech_stopped``; decide which sessions kept up."""
    for s in sessions:
        stops = sorted(s.stops, key=lambda x: x.audio_end_ms)
        turns = s.plan.turns
        ok = not s.stalled and not s.lost and s.max_buffer < BACKED_UP_BYTES
        res.backed_up += s.max_buffer >= BACKED_UP_BYTES
        res.stalled += s.stalled
        res.lost += s.lost
        used: set[int] = set()
        for j, turn in enumerate(turns):
            res.turns += 1
            end_ms = turn.first_silent_chunk * CHUNK_MS
            next_ms = turns[j + 1].speech_chunk * CHUNK_MS if j + 1 < len(turns) else math.inf
            match = next(
                (i for i, x in enumerate(stops) if end_ms < x.audio_end_ms <= next_ms), None
            )
            if match is None or match in used or s.times[turn.first_silent_chunk] == 0.0:
                res.missed += 1
                ok = False
                continue
            used.add(match)
            stop = stops[match]
            t_ideal = s.times[turn.first_silent_chunk] + silence_ms / 1000
            res.measured += 1
            res.latency.append((stop.t_received - t_ideal) * 1000)
            backlog = stop.sent_ms - stop.audio_end_ms
            res.backlog.append(backlog)
            if backlog > behind_ms:
                ok = False
        res.kept_up += ok
        res.errors.extend(s.errors)


async def connect_all(
    url: str, plans: list[Plan], offsets: list[float], update: str, compression: bool
) -> list[Session]:
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    gate = asyncio.Semaphore(32)

    async def one(plan: Plan, offset: float) -> Session:
        async with gate:
            session = Session(url, plan, offset, update, compression)
            await loop.create_connection(lambda: session, uri.host, uri.port)
            await asyncio.wait_for(session.updated, 60)
            return session

    return list(await asyncio.gather(*(one(p, o) for p, o in zip(plans, offsets, strict=True))))


async def warm_up(url: str, bank: Frames, update: str, compression: bool) -> None:
    """One short session first, so the model's first-call allocations are not counted per
    session."""
    frames = [f for utt in bank.speech for f in utt]
    (session,) = await connect_all(url, [Plan(frames, [])], [0.0], update, compression)
    assert session.transport is not None
    for frame in frames:
        session.transport.write(frame)
    await asyncio.sleep(0.5)
    session.close()


async def run_level(
    sessions: int, workers: int, tree: str, args: argparse.Namespace, bank: Frames
) -> Result:
    res = Result(workers, tree, sessions)
    rng = random.Random(args.seed + sessions)
    seconds = args.ref_seconds if sessions == 1 else args.seconds
    chunks = int(seconds * 1000 / CHUNK_MS)
    plans = [make_plan(bank, rng, chunks, args.silence_ms) for _ in range(sessions)]
    offsets = [i * CHUNK_MS / 1000 / sessions for i in range(sessions)]
    update = json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": args.silence_ms,
                            "create_response": False,
                        }
                    }
                },
            },
        }
    )
    extra = [*SERVE_ARGS]
    if workers != 1:  # the flag is left out at 1, so trees from before it was added run too
        extra += ["--workers", str(workers)]
        if args.redis_url is None:
            raise SystemExit("--workers above 1 needs redis-server (the server's --redis-url)")
        extra += ["--redis-url", args.redis_url]
    env_before = os.environ.get("PYTHONPATH")
    if tree != ".":
        os.environ["PYTHONPATH"] = tree
    try:
        server_ctx = serve(args.vad, cpu=args.server_cpu, extra_args=extra)
        server = server_ctx.__enter__()
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
    print(f"  (level {sessions}: server pid {server.pid})", file=sys.stderr, flush=True)
    try:
        url = f"{server.ws_base}/v1/realtime?model=gpt-realtime"
        await warm_up(url, bank, update, args.compression == "deflate")
        await asyncio.sleep(1.0)
        res.rss_idle, res.pss_idle = tree_memory(server.pid)
        clients = await connect_all(url, plans, offsets, update, args.compression == "deflate")
        await asyncio.sleep(1.0)
        late = Lateness()
        t0 = time.monotonic() + 0.5
        cpu0, threads0 = tree_cpu_seconds(server.pid), thread_cpu_seconds(server.pid)
        gen0, mach0, w0 = time.process_time(), cpu_times(None), time.monotonic()
        pacer = asyncio.create_task(pace(clients, t0, chunks, late))
        # memory while every session streams, half-way through
        await asyncio.sleep(0.5 + seconds / 2)
        res.rss_busy, res.pss_busy = tree_memory(server.pid)
        await pacer
        cpu1, threads1 = tree_cpu_seconds(server.pid), thread_cpu_seconds(server.pid)
        gen1, mach1, w1 = time.process_time(), cpu_times(None), time.monotonic()
        # wait (bounded) for the last turns' speech_stopped
        deadline = time.monotonic() + args.grace_s
        while time.monotonic() < deadline:
            if all(len(c.stops) >= len(c.plan.turns) for c in clients):
                break
            await asyncio.sleep(0.1)
        for c in clients:
            c.close()
        window = max(w1 - w0, 1e-9)
        res.window_s = window
        res.server_cpu = sum(v - cpu0.get(p, 0.0) for p, v in cpu1.items()) / window * 100
        res.generator_cpu = (gen1 - gen0) / window * 100
        res.threads = {k: (v - threads0.get(k, 0.0)) / window * 100 for k, v in threads1.items()}
        total = mach1["total"] - mach0["total"]
        if total > 0:
            res.machine = {k: (mach1[k] - mach0[k]) / total * 100 for k in mach1}
        res.late_p99 = late.percentile(99)
        res.late_max = late.max * 1000
        analyse(clients, res, args.silence_ms, args.behind_ms)
        await asyncio.sleep(0.2)
    finally:
        server_ctx.__exit__(None, None, None)
    return res


# ----------------------------------------------------------------------------- report


def line(res: Result) -> str:
    lat, back = res.latency, res.backlog
    mib = 1024 * 1024
    per_session = res.server_cpu / res.sessions
    main_thread = res.threads.get("main", 0.0)
    machine = res.machine
    others = machine.get("tasks", 0.0) * 2 - res.server_cpu - res.generator_cpu
    return (
        f"| {res.tree} | {res.workers} | {res.sessions} | {res.kept_up} | "
        f"{res.measured}/{res.turns} | {fmt(percentile(lat, 50))} | {fmt(percentile(lat, 90))} | "
        f"{fmt(percentile(lat, 99))} | {fmt(max(lat, default=float('nan')))} | "
        f"{fmt(percentile(back, 99), 0)} | {fmt(max(back, default=float('nan')), 0)} | "
        f"{res.server_cpu:.0f} | {main_thread:.0f} / {res.server_cpu - main_thread:.0f} | "
        f"{per_session:.2f} | "
        f"{fmt(100 / per_session if per_session else float('nan'), 0)} | "
        f"{res.pss_busy / mib:.0f} | "
        f"{(res.pss_busy - res.pss_idle) / res.sessions / 1024:.0f} / "
        f"{(res.rss_busy - res.rss_idle) / res.sessions / 1024:.0f} | "
        f"{res.generator_cpu:.0f} | {fmt(res.late_p99)} / {fmt(res.late_max)} | "
        f"{machine.get('idle', float('nan')):.0f} / {max(0.0, others) / 2:.0f} / "
        f"{machine.get('steal', float('nan')):.0f} |"
    )


HEADER = (
    "| tree | workers | sessions | kept up | turns | latency p50 | p90 | p99 | max | "
    "backlog p99 | max | server CPU % | main / other threads % | per session % | "
    "sessions/core | PSS MiB | PSS / RSS per session KiB | generator CPU % | "
    "gen. late p99 / max ms | machine idle / others / steal % |\n" + "|---" * 20 + "|"
)


def verdict(res: Result, ref_p99: float | None, slack_ms: float) -> str:
    p99 = percentile(res.latency, 99)
    notes = []
    if res.backed_up or res.stalled or res.lost:
        notes.append(f"{res.backed_up} backed up, {res.stalled} stalled, {res.lost} dropped")
    if res.missed:
        notes.append(f"{res.missed} turns without speech_stopped")
    if res.errors:
        notes.append(f"{len(res.errors)} errors ({', '.join(sorted(set(res.errors))[:3])})")
    if ref_p99 is not None and res.sessions > 1:
        ok = p99 <= ref_p99 + slack_ms and res.kept_up == res.sessions
        notes.append(
            f"p99 {fmt(p99)} ms vs 1-session {fmt(ref_p99)} + {slack_ms:.0f}: "
            f"{'KEPT UP' if ok else 'DID NOT KEEP UP'}"
        )
    threads = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(res.threads.items()) if v >= 1)
    notes.append(f"server threads: {threads}")
    return f"{res.sessions} sessions, {res.workers} worker(s), tree {res.tree}: " + (
        "; ".join(notes) or "ok"
    )


def replay(bank: Frames, appends: int) -> None:
    """In-process replay of the event loop's part of one append, no sockets (best of 3).

    Times ``parse_client_event``, the core (``advance_time``, ``receive_client_event``,
    ``drain``) and the VAD hand-over on the loop (``push`` and, where the tree has it,
    ``take_inputs``; the model is not run), then the core's handling of one probability.
    """
    from openrealtime.backends.vad_silero import SileroVad
    from openrealtime.core import backend_events as be
    from openrealtime.core.commands import DetectSpeech
    from openrealtime.core.ids import RandomIds
    from openrealtime.core.session import RealtimeSession
    from openrealtime.protocol.codec import parse_client_event

    texts = [t.decode() for t in bank.texts]
    update = {"type": "server_vad", "create_response": False}
    vad = SileroVad.from_cache()
    best: dict[str, float] = {}
    for _ in range(3):
        session = RealtimeSession("realtime", "gpt-realtime", ids=RandomIds(), now_ms=0)
        session.receive_client_event(
            parse_client_event(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {"input": {"turn_detection": update}},
                        },
                    }
                )
            )
        )
        session.drain()
        stream = vad.open_stream()
        take = getattr(stream, "take_inputs", None)
        spent = dict.fromkeys(("parse", "core", "vad hand-over", "probability"), 0.0)
        clock = time.perf_counter
        for k in range(appends):
            t0 = clock()
            event = parse_client_event(texts[k % len(texts)])
            t1 = clock()
            session.advance_time(k * CHUNK_MS)
            session.receive_client_event(event)
            out = session.drain()
            session.drain()
            t2 = clock()
            frames = 0
            for command in out.commands:
                if isinstance(command, DetectSpeech):
                    stream.push(command.pcm16)
                    frames = len(take()) if take else stream.frames_ready
            t3 = clock()
            if frames:
                session.receive_backend_event(be.SpeechProbabilities((0.01,) * frames, 768))
                session.drain()
            if take is None:  # the old stream framed in the worker: drop what it buffered
                stream._pending = stream._pending[frames * 512 :]
            t4 = clock()
            for key, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                spent[key] += dt
        for key, total in spent.items():
            best[key] = min(best.get(key, math.inf), total / appends * 1e6)
    print(
        f"replay of {appends} appends, µs per append (best of 3): "
        + ", ".join(f"{k} {v:.2f}" for k, v in best.items())
        + f"; total {sum(best.values()):.2f}"
    )
    print("Silero model alone, µs per 32 ms frame (best of 3 x 40 calls): " + model_floor(vad))


def model_floor(vad: Any) -> str:
    """Time the Silero model by itself at a few batch sizes: the floor of any VAD path."""
    parts = []
    rng = np.random.default_rng(0)
    for batch in (1, 32, 128):
        inputs = (rng.standard_normal((batch, 576)) * 0.05).astype(np.float32)
        state = np.zeros((2, batch, 128), dtype=np.float32)
        vad.run_batch(inputs, state)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(40):
                vad.run_batch(inputs, state)
            runs.append((time.perf_counter() - t0) / 40 / batch * 1e6)
        parts.append(f"B={batch} {min(runs):.1f}")
    return ", ".join(parts)


def run_all(
    args: argparse.Namespace,
    trees: list[str],
    worker_counts: list[int],
    levels: list[int],
    bank: Frames,
    results: list[Result],
) -> None:
    """Every level for every tree and worker count, in that order."""
    for tree in trees:
        for workers in worker_counts:
            ref: float | None = None
            for sessions in levels:
                res = asyncio.run(run_level(sessions, workers, tree, args, bank))
                results.append(res)
                if sessions == 1:
                    ref = percentile(res.latency, 99)
                print(verdict(res, ref, args.slack_ms), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,100,300,500", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=30, help="streaming time per level")
    parser.add_argument(
        "--ref-seconds", type=float, default=90, help="streaming time of the 1-session level"
    )
    parser.add_argument("--workers", default="1", help="comma-separated server --workers values")
    parser.add_argument(
        "--tree",
        action="append",
        default=None,
        help="server source tree (a src/ directory put on its PYTHONPATH; '.' is this "
        "checkout); repeat to compare trees in one run",
    )
    parser.add_argument(
        "--pin", action="store_true", help="server on one core, generator on the other"
    )
    parser.add_argument(
        "--compression",
        default="none",
        choices=("deflate", "none"),
        help="none: as openai-python (its default max_size=None turns compression off); "
        "deflate: as the Agents SDK, browsers and Node's ws (permessage-deflate, window 12)",
    )
    parser.add_argument(
        "--vad", default="silero", choices=("silero", "energy"), help="the server's --vad"
    )
    parser.add_argument("--silence-ms", type=int, default=200, help="silence_duration_ms")
    parser.add_argument(
        "--behind-ms",
        type=float,
        default=300,
        help="backlog at a speech_stopped that counts as behind",
    )
    parser.add_argument("--slack-ms", type=float, default=50, help="allowed p99 above 1 session")
    parser.add_argument("--grace-s", type=float, default=5, help="wait for the last turns")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--replay",
        type=int,
        default=0,
        metavar="N",
        help="instead: time N appends through codec, core and VAD hand-over in process",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.sessions.split(",") if x.strip()]
    worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    trees = [t if t == "." else str(Path(t).resolve()) for t in args.tree or ["."]]

    print_machine()
    server_cpu, client_cpu = default_cpus() if args.pin else (None, None)
    args.server_cpu = server_cpu
    pin_self(client_cpu)
    source, utterances = make_utterances()
    bank = Frames(utterances, args.compression == "deflate")
    if args.replay:
        replay(bank, args.replay)
        return
    print(
        f"load: audio {source} ({', '.join(f'{len(u) / RATE:.2f}' for u in utterances)} s), "
        f"20 ms appends paced in real time, server_vad silence_duration_ms={args.silence_ms}, "
        f"create_response false; server `openrealtime serve --vad {args.vad} "
        f"{' '.join(SERVE_ARGS)}` "
        f"(CPU {server_cpu if server_cpu is not None else 'any'}), generator one process "
        f"(CPU {client_cpu if client_cpu is not None else 'any'}, "
        f"{type(asyncio.get_event_loop_policy()).__module__.split('.')[0]} loop), "
        f"compression {args.compression}; {args.seconds:g} s per level "
        f"({args.ref_seconds:g} s at 1 session)"
    )
    print()
    results: list[Result] = []
    redis = redis_server() if max(worker_counts) > 1 else contextlib.nullcontext(None)
    with redis as args.redis_url:
        run_all(args, trees, worker_counts, levels, bank, results)
    print()
    print(
        "latency = speech_stopped received - (first silent chunk sent + silence_duration_ms), "
        "ms; backlog = audio sent when it arrived - its audio_end_ms, ms; CPU in % of one core "
        "(all server processes); PSS of all server processes while streaming; "
        "per session = (streaming - before connecting) / sessions"
    )
    print()
    print(HEADER)
    for res in results:
        print(line(res))


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
