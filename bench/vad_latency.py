"""End-of-turn latency of server VAD (Silero) over real WebSockets, at 1 and 100 sessions.

What is measured, per user turn (docs/benchmarks.md has the full definition):

    latency = t_stop_received - (t_first_silent_chunk_sent + silence_duration_ms)

where ``t_first_silent_chunk_sent`` is when the client sent the first 20 ms chunk after the last
chunk holding speech, and ``t_stop_received`` is when it received
``input_audio_buffer.speech_stopped``. Chunks are paced in real time (chunk k is sent at
t0 + 20 k ms), so the reference is the wall time at which the silence has lasted
``silence_duration_ms``; the chunk that completes it was sent 20 ms earlier.

It is split into: the VAD decision lag (``audio_end_ms`` of the event minus the ideal
``speech_end + silence_duration_ms``, in audio time: Silero's hang-over after speech plus 32 ms
frame granularity), the wait for the chunk that made the server decide (that lag, plus the
resampler's look-ahead), and — with the probe (default) — uplink, server (frame received ->
event handed to the socket) and downlink, from CLOCK_MONOTONIC stamps shared by both processes.

The server runs as a separate process (``openrealtime serve --port P --vad silero --stt fake
--llm fake --tts fake``, under ``bench/_serve_probe.py`` unless ``--plain``; ``--engines
embedded`` keeps the embedded STT/LLM/TTS instead), pinned to its own CPU when there are two;
the clients are asyncio tasks in this process streaming paced PCM over loopback. Sessions use
``server_vad`` with ``create_response: false``, so nothing but turn detection (and the fake
transcription of each committed turn) runs.

    .venv/bin/python bench/vad_latency.py                       # 1 and 100 sessions
    .venv/bin/python bench/vad_latency.py --sessions 1,10,100 --turns 4 --plain
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
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets
from _common import (
    cpu_times,
    default_cpus,
    fmt,
    pin_self,
    print_machine,
    read_cpu_seconds,
    serve,
    summary,
    tree_cpu_delta,
    tree_cpu_seconds,
)
from websockets.asyncio.client import ClientConnection, connect

from openrealtime.audio.resample import resample

RATE = 24000
CHUNK_MS = 20
CHUNK_SAMPLES = RATE * CHUNK_MS // 1000
FRAME_MS = 32
"""Silero frame: 512 samples at 16 kHz = 768 session samples."""
SPEECH_LEVEL = 328
"""|sample| at or above 1% of full scale counts as speech when trimming the utterances."""

ENGINE_ARGS = {
    "fake": ("--stt", "fake", "--llm", "fake", "--tts", "fake"),
    "embedded": (),
}
"""``openrealtime serve`` flags for ``--engines``."""

SENTENCES = (
    "What is the capital of France?",
    "Please turn on the kitchen lights.",
    "How will the weather be tomorrow?",
    "Book a table for two at eight.",
)


# ----------------------------------------------------------------------------- audio


def _flite(text: str, workdir: Path) -> bytes:
    path = workdir / "utt.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    return resample(pcm, rate, RATE) if rate != RATE else pcm


def _vowels(seconds: float, seed: int) -> bytes:
    """A synthetic vowel-like signal: harmonics of a gliding f0 under three formants, in
    syllables (used only when ``flite`` is not installed)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    formants = ((700, 110), (1220, 120), (2600, 160))
    signal = np.zeros(n)
    for k in range(1, 30):
        freq = k * 120
        gain = sum(math.exp(-(((freq - f) / bw) ** 2)) for f, bw in formants) + 0.05
        signal += gain / k * np.sin(k * phase)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t - np.pi / 2)
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)
    signal *= syllables * envelope
    signal *= 0.3 * 32767 / np.abs(signal).max()
    return signal.astype("<i2").tobytes()


def _trim(pcm: bytes) -> np.ndarray:
    x = np.frombuffer(pcm, dtype="<i2")
    loud = np.nonzero(np.abs(x.astype(np.int32)) >= SPEECH_LEVEL)[0]
    return x[loud[0] : loud[-1] + 1]


def make_utterances() -> tuple[str, list[np.ndarray]]:
    """The speech bursts, trimmed to their first and last loud sample (24 kHz int16)."""
    if shutil.which("flite"):
        with tempfile.TemporaryDirectory() as tmp:
            return "flite -voice rms", [_trim(_flite(s, Path(tmp))) for s in SENTENCES]
    return "synthetic vowels (flite not found)", [
        _trim(_vowels(1.4 + 0.2 * i, i)) for i in range(len(SENTENCES))
    ]


def _frame(pcm: np.ndarray) -> str:
    audio = base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


@dataclass
class Turn:
    speech_chunk: int
    """Session chunk index of the first speech chunk."""
    first_silent_chunk: int
    """Session chunk index of the first chunk after the last chunk holding speech."""


@dataclass
class Plan:
    frames: list[str]
    """Every append frame of the session, in order (chunk k covers [20k, 20k+20) ms)."""
    turns: list[Turn]


class AudioBank:
    """Pre-encoded 20 ms append frames: each utterance's chunks and low-noise silence chunks."""

    def __init__(self, utterances: list[np.ndarray], seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.silence = [
            _frame(rng.normal(0, 33, CHUNK_SAMPLES).clip(-32768, 32767)) for _ in range(64)
        ]
        self.speech: list[list[str]] = []
        for utt in utterances:
            pad = -len(utt) % CHUNK_SAMPLES
            padded = np.concatenate([utt, rng.normal(0, 33, pad)]).clip(-32768, 32767)
            self.speech.append(
                [
                    _frame(padded[i : i + CHUNK_SAMPLES])
                    for i in range(0, len(padded), CHUNK_SAMPLES)
                ]
            )

    def plan(self, rng: random.Random, turns: int, lead_chunks: int, tail_chunks: int) -> Plan:
        frames: list[str] = []
        out: list[Turn] = []

        def silence(count: int) -> None:
            for _ in range(count):
                frames.append(self.silence[rng.randrange(len(self.silence))])

        silence(lead_chunks)
        for _ in range(turns):
            utt = self.speech[rng.randrange(len(self.speech))]
            start = len(frames)
            frames.extend(utt)
            out.append(Turn(start, len(frames)))
            # a random extra 0..9 chunks moves the next turn's phase against the 32 ms frames
            silence(tail_chunks + rng.randrange(10))
        return Plan(frames, out)


# ----------------------------------------------------------------------------- client


@dataclass
class Stop:
    item_id: str
    audio_end_ms: int
    t_received: float


@dataclass
class Client:
    plan: Plan
    offset_s: float
    send_times: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    starts: int = 0
    errors: list[str] = field(default_factory=list)
    updated: asyncio.Event = field(default_factory=asyncio.Event)
    all_stopped: asyncio.Event = field(default_factory=asyncio.Event)
    t_done: float = 0.0


async def _reader(ws: ClientConnection, client: Client) -> None:
    async for message in ws:
        now = time.monotonic()
        if not isinstance(message, str):
            continue
        if '"input_audio_buffer.speech_stopped"' in message:
            event = json.loads(message)
            client.stops.append(Stop(event["item_id"], event["audio_end_ms"], now))
            if len(client.stops) >= len(client.plan.turns):
                client.all_stopped.set()
        elif '"input_audio_buffer.speech_started"' in message:
            client.starts += 1
        elif '"session.updated"' in message:
            client.updated.set()
        elif '"type":"error"' in message:
            client.errors.append(json.loads(message)["error"].get("message", message))


async def run_client(
    url: str,
    client: Client,
    update: str,
    ready: asyncio.Event,
    go: asyncio.Event,
    start_at: list[float],
    compression: str | None,
    grace_s: float,
) -> None:
    async with connect(
        url, compression=compression, max_size=None, ping_interval=None, open_timeout=30
    ) as ws:
        reader = asyncio.create_task(_reader(ws, client))
        await ws.send(update)
        client.send_times.append(time.monotonic())
        await asyncio.wait_for(client.updated.wait(), 30)
        ready.set()
        await go.wait()
        t0 = start_at[0] + client.offset_s
        for k, frame in enumerate(client.plan.frames):
            deadline = t0 + k * CHUNK_MS / 1000
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(frame)
            now = time.monotonic()
            client.send_times.append(now)
            client.lateness.append(now - deadline)
        client.t_done = time.monotonic()
        # wait for the last turn's speech_stopped (a backlogged server may still be working)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.all_stopped.wait(), grace_s)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


# ----------------------------------------------------------------------------- one level


@dataclass
class Result:
    sessions: int
    turns_planned: int = 0
    measured: int = 0
    splits: int = 0
    missed: int = 0
    latency: list[float] = field(default_factory=list)
    decision: list[float] = field(default_factory=list)
    hangover: list[float] = field(default_factory=list)
    trigger_wait: list[float] = field(default_factory=list)
    uplink: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    server_queue: list[float] = field(default_factory=list)
    server_vad: list[float] = field(default_factory=list)
    server_send: list[float] = field(default_factory=list)
    downlink: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    children_cpu: float = 0.0
    """CPU% of the server's child processes (engine workers) over the window."""
    server_cpu_steady: float = float("nan")
    core_share: dict[str, float] = field(default_factory=dict)
    """How the server's CPU spent the window (% of it): tasks, irq, steal, idle."""
    client_cpu: float = 0.0
    window_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def _probe_records(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["item_id"]] = record
    return records


def analyse(
    clients: list[Client], silence_ms: int, probe: dict[str, dict[str, Any]], res: Result
) -> None:
    silence_chunks = math.ceil(silence_ms / CHUNK_MS)
    whole_frames_ms = math.ceil(silence_ms / FRAME_MS) * FRAME_MS
    for client in clients:
        stops = sorted(client.stops, key=lambda s: s.audio_end_ms)
        turns = client.plan.turns
        used: set[str] = set()
        for j, turn in enumerate(turns):
            res.turns_planned += 1
            speech_ms = turn.speech_chunk * CHUNK_MS
            end_ms = turn.first_silent_chunk * CHUNK_MS
            next_ms = turns[j + 1].speech_chunk * CHUNK_MS if j + 1 < len(turns) else math.inf
            res.splits += sum(1 for s in stops if speech_ms < s.audio_end_ms <= end_ms)
            stop = next((s for s in stops if end_ms < s.audio_end_ms <= next_ms), None)
            if stop is None or stop.item_id in used:
                res.missed += 1
                continue
            used.add(stop.item_id)
            first_silent_frame = turn.first_silent_chunk + 1  # frame 0 is session.update
            if first_silent_frame + silence_chunks > len(client.send_times):
                res.missed += 1
                continue
            t_ideal = client.send_times[first_silent_frame] + silence_ms / 1000
            res.measured += 1
            res.latency.append((stop.t_received - t_ideal) * 1000)
            res.decision.append(stop.audio_end_ms - (end_ms + silence_ms))
            res.hangover.append(stop.audio_end_ms - whole_frames_ms - end_ms)
            record = probe.get(stop.item_id)
            if record is None:
                continue
            t_trigger = client.send_times[record["frame"]]
            res.trigger_wait.append((t_trigger - t_ideal) * 1000)
            res.uplink.append((record["t_recv"] - t_trigger) * 1000)
            res.server.append((record["t_sent"] - record["t_recv"]) * 1000)
            res.server_queue.append((record["t_dequeue"] - record["t_recv"]) * 1000)
            res.server_vad.append((record["t_vad_done"] - record["t_vad_start"]) * 1000)
            res.server_send.append((record["t_sent"] - record["t_vad_done"]) * 1000)
            res.downlink.append((stop.t_received - record["t_sent"]) * 1000)
        res.lateness.extend(x * 1000 for x in client.lateness)
        res.errors.extend(client.errors)


async def run_level(
    sessions: int, args: argparse.Namespace, bank: AudioBank, server_cpu: int | None
) -> Result:
    rng = random.Random(args.seed + sessions)
    tail_chunks = math.ceil((args.silence_ms + args.tail_ms) / CHUNK_MS)
    turn_s = (
        sum(len(s) for s in bank.speech) / len(bank.speech) * CHUNK_MS / 1000
        + (tail_chunks + 4.5) * CHUNK_MS / 1000
    )
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
                            "create_response": args.respond,
                        }
                    }
                },
            },
        }
    )
    clients = [
        Client(
            bank.plan(rng, args.turns, rng.randrange(10), tail_chunks),
            rng.uniform(0, turn_s) if sessions > 1 else 0.0,
        )
        for _ in range(sessions)
    ]
    probe_path = Path(tempfile.mkdtemp(prefix="openrealtime-probe-")) / "probe.jsonl"
    res = Result(sessions)
    extra = ENGINE_ARGS[args.engines]
    probe = None if args.plain else probe_path
    with serve(args.vad, probe_file=probe, cpu=server_cpu, extra_args=extra) as server:
        url = f"{server.ws_base}/v1/realtime?model=gpt-realtime"
        compression = None if args.compression == "none" else "deflate"
        readies = [asyncio.Event() for _ in clients]
        go = asyncio.Event()
        start_at = [0.0]
        tasks = [
            asyncio.create_task(
                run_client(url, c, update, r, go, start_at, compression, args.grace_ms / 1000)
            )
            for c, r in zip(clients, readies, strict=True)
        ]
        budget = args.max_seconds
        cpu0: dict[int, float] = {}
        self0 = t0 = 0.0
        core0 = core1 = cpu_times(server_cpu)
        samples: list[tuple[float, float]] = []

        async def sample_cpu() -> None:
            while True:
                samples.append((time.monotonic(), read_cpu_seconds(server.pid)))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample_cpu())
        try:
            async with asyncio.timeout(budget):
                await asyncio.gather(*(r.wait() for r in readies))
                await asyncio.sleep(0.5)
                cpu0, self0 = tree_cpu_seconds(server.pid), time.process_time()
                core0 = cpu_times(server_cpu)
                t0 = time.monotonic()
                start_at[0] = t0 + 0.2
                go.set()
                await asyncio.gather(*tasks)
        except TimeoutError:
            print(f"  (stopped after --max-seconds {budget}; partial results)", file=sys.stderr)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        cpu1, self1, t1 = tree_cpu_seconds(server.pid), time.process_time(), time.monotonic()
        core1 = cpu_times(server_cpu)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if not t0:
            cpu0, self0, t0 = cpu1, self1, t1
        # steady state: from when the last session started streaming to when the first stopped
        all_in = start_at[0] + max(c.offset_s for c in clients)
        first_out = min((c.t_done for c in clients if c.t_done), default=0.0)
        inside = [s for s in samples if all_in <= s[0] <= first_out]
        if len(inside) >= 2 and inside[-1][0] - inside[0][0] >= 1.0:
            res.server_cpu_steady = (
                (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
            )
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                res.errors.append(repr(task.exception()))
        window = max(t1 - t0, 1e-9)
        res.window_s = window
        own, kids = tree_cpu_delta(cpu0, cpu1)
        res.server_cpu = own / window * 100
        res.children_cpu = kids / window * 100
        total = core1["total"] - core0["total"]
        if server_cpu is not None and total > 0:
            res.core_share = {k: (core1[k] - core0[k]) / total * 100 for k in core1}
        res.client_cpu = (self1 - self0) / window * 100
    analyse(clients, args.silence_ms, _probe_records(probe_path), res)
    shutil.rmtree(probe_path.parent, ignore_errors=True)
    return res


# ----------------------------------------------------------------------------- report


def _row(name: str, values: list[float]) -> str:
    s = summary(values)
    return (
        f"| {name} | {len(values)} | {fmt(s['p50'])} | {fmt(s['p90'])} | {fmt(s['p99'])} | "
        f"{fmt(s['max'])} |"
    )


def core_line(res: Result) -> str:
    """Who used the server's CPU during the window (other tenants distort a shared machine)."""
    share = res.core_share
    if not share:
        return ""
    others = max(0.0, share["tasks"] - res.server_cpu - res.children_cpu)
    return (
        f"its CPU was {share['idle']:.0f}% idle, other processes took {others:.0f}%, "
        f"interrupts {share['irq']:.0f}%, steal {share['steal']:.0f}%; "
    )


def report(res: Result, args: argparse.Namespace) -> str:
    lines = [
        f"**{res.sessions} session{'s' if res.sessions > 1 else ''}**: "
        f"{res.measured}/{res.turns_planned} turns measured "
        f"({res.missed} missed, {res.splits} mid-utterance stops), "
        f"streaming window {res.window_s:.1f} s, server CPU {res.server_cpu:.0f}% of one core "
        f"(+{res.children_cpu:.0f}% in its engine worker processes) "
        f"(all sessions streaming: {fmt(res.server_cpu_steady, 0)}%, "
        f"{fmt(res.server_cpu_steady / res.sessions, 1)}% per session); {core_line(res)}"
        f"client CPU {res.client_cpu:.0f}%, client send lateness p99 "
        f"{fmt(summary(res.lateness)['p99'])} ms",
        "",
        "| ms | n | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|",
        _row("**latency beyond silence_duration_ms**", res.latency),
        _row("VAD decision lag (audio time)", res.decision),
        _row("  of which Silero hang-over (first silent frame - speech end)", res.hangover),
    ]
    if res.server:
        lines += [
            _row("deciding chunk sent (after the reference)", res.trigger_wait),
            _row("uplink (client send -> server driver)", res.uplink),
            _row("server (frame in -> event out)", res.server),
            _row("  of which inbox wait", res.server_queue),
            _row("  of which Silero + core", res.server_vad),
            _row("  of which outbox + socket send", res.server_send),
            _row("downlink (server send -> client)", res.downlink),
        ]
    rounding = math.ceil(args.silence_ms / FRAME_MS) * FRAME_MS - args.silence_ms
    lines += [
        "",
        f"VAD decision lag = Silero hang-over + whole-frame rounding of the silence "
        f"(ceil({args.silence_ms}/{FRAME_MS})*{FRAME_MS} - {args.silence_ms} = {rounding} ms, "
        "constant).",
    ]
    if res.errors:
        lines += ["", f"errors ({len(res.errors)}): " + "; ".join(sorted(set(res.errors))[:5])]
    return "\n".join(lines)


def busy_loop_share(cpu: int | None, seconds: float = 1.0) -> float:
    """CPU% that a pure busy loop gets on ``cpu``: 100% of one core as this VM accounts it."""
    code = (
        "import time\n"
        "t=time.monotonic(); c=time.process_time()\n"
        f"while time.monotonic()-t<{seconds}: pass\n"
        "print((time.process_time()-c)/(time.monotonic()-t)*100)\n"
    )

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=pin, check=True
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,100", help="comma-separated levels (1,100)")
    parser.add_argument("--turns", type=int, default=0, help="turns per session (0: auto)")
    parser.add_argument("--silence-ms", type=int, default=200, help="silence_duration_ms (200)")
    parser.add_argument("--tail-ms", type=int, default=500, help="silence after it per turn")
    parser.add_argument("--vad", default="silero", choices=("silero", "energy"))
    parser.add_argument(
        "--engines",
        default="fake",
        choices=("fake", "embedded"),
        help="STT/LLM/TTS: fake (--stt fake --llm fake --tts fake, isolates the VAD; default) "
        "or the embedded default stack",
    )
    parser.add_argument("--plain", action="store_true", help="no probe: plain openrealtime serve")
    parser.add_argument("--respond", action="store_true", help="create_response=true")
    parser.add_argument("--compression", default="deflate", choices=("deflate", "none"))
    parser.add_argument(
        "--grace-ms", type=int, default=30000, help="most to wait for the last stop (30000)"
    )
    parser.add_argument("--max-seconds", type=float, default=300, help="time bound per level")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client CPUs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    levels = [int(x) for x in args.sessions.split(",") if x.strip()]

    print_machine()
    server_cpu, client_cpu = (None, None) if args.no_pin else default_cpus()
    pin_self(client_cpu)
    source, utterances = make_utterances()
    bank = AudioBank(utterances)
    lengths = ", ".join(f"{len(u) / RATE:.2f}" for u in utterances)
    print(
        f"vad_latency: audio {source} ({lengths} s), 20 ms chunks paced in real time, "
        f"silence_duration_ms={args.silence_ms}, VAD {args.vad}, engines {args.engines} "
        f"(serve flags: {' '.join(ENGINE_ARGS[args.engines]) or 'defaults'}), "
        f"server {'openrealtime serve' if args.plain else 'openrealtime serve + probe'}"
        f" (CPU {server_cpu}), clients in one asyncio process (CPU {client_cpu}), "
        f"compression {args.compression}, websockets {websockets.__version__}"
    )
    print(
        f"A busy loop pinned to the server's CPU is accounted {busy_loop_share(server_cpu):.0f}% "
        "CPU here (the ceiling of a single-threaded server on this VM)."
    )
    print()
    for sessions in levels:
        turns = args.turns or max(5, math.ceil(40 / sessions))
        args_level = argparse.Namespace(**{**vars(args), "turns": turns})
        res = asyncio.run(run_level(sessions, args_level, bank, server_cpu))
        print(report(res, args_level))
        print()


if __name__ == "__main__":
    main()
