"""WebRTC calls: latency added over the WebSocket path, and concurrent calls per machine.

One ``openrealtime serve --stt fake --llm fake --tts fake`` process (Silero VAD; the fake LLM
answers ``You said: …`` at once, the fake TTS turns it into a sine tone of 60 ms per character
at once), so what is measured is the transport, not the engines. The server is pinned to one
CPU and this client to another (``--no-pin`` to not pin).

**Part 1: latency.** One WebSocket session (official ``openai`` SDK) and one WebRTC call
(aiortc as the caller: a microphone track, the ``oai-events`` data channel, the offer posted to
``POST /v1/realtime/calls``) are open side by side, and the same turn is played on each in
turn (pairs: WebSocket, then WebRTC; one uncounted warm-up pair per input). Two inputs:

* **text** (``--turns`` pairs): ``conversation.item.create`` (input_text) then
  ``response.create``; the reference instant is just before ``response.create`` is sent.
  No VAD is involved, so this isolates the output path.
* **audio** (``--audio-turns`` pairs, ``server_vad`` defaults): a short flite (voice ``rms``)
  question after 300 ms of silence, streamed in real time in 20 ms pieces (WebSocket:
  ``input_audio_buffer.append``; WebRTC: the microphone track, Opus); the reference instant is
  when the piece holding the true end of speech (signal energy, as in
  ``bench/voice_latency.py``) was sent (WebSocket) or handed to the Opus encoder (WebRTC). This
  adds the input path (Opus, the server's receive jitter buffer, decode, resample) and Silero's
  end-of-turn decision, which is the same on both paths but jitters by its 32 ms frames.

Per turn, from the reference instant:

* WebSocket: the first ``response.output_audio.delta`` received;
* WebRTC: the first non-silent decoded audio frame received on the server's track (peak above
  1000), and, for the breakdown, the arrival of the RTP packet that frame was decoded from
  (same RTP timestamp) and ``output_audio_buffer.started`` received on the data channel;
* the difference WebRTC - WebSocket of each pair (its own percentiles; not the difference of
  the percentiles), to the decoded frame and to the packet's arrival (the latter leaves out the
  caller's receive jitter buffer, which is aiortc's here and a browser's in real use).

Between WebRTC turns the rest of the answer is cut (``output_audio_buffer.clear``) and the
client waits for 200 ms of silence on the track.

**Part 2: capacity.** For each level of ``--levels`` (stop at the first that falls behind),
that many calls are opened (microphone sending silence, ``server_vad`` on, as a browser with an
open microphone); each asks for one long answer (longer than the measurement); once every call's
``output_audio_buffer.started`` has arrived and ``--settle`` seconds passed, the client counts
for ``--window`` seconds, per call, the RTP packets of the server's audio track on arrival (one
packet = one 20 ms frame; the client does not run aiortc's jitter buffer or decoder for these
calls, which keeps its own CPU down and sees the server's pacing directly):

* received rate = packets / window / 50 (100 % = real time);
* gaps between consecutive packets (20 ms when on time); p99 and max over all calls;
* server CPU (the process and its children, % of one core) and client CPU in the window, and
  the client's event-loop lag (a 10 ms ticker's overshoot; client lag shows up as gaps too).

A level keeps up when every call received >= 95 % of real time and the p99 gap is <= 100 ms.

    .venv/bin/python bench/webrtc.py                                # both parts, ~4 min
    .venv/bin/python bench/webrtc.py --turns 40 --audio-turns 0 --levels 0   # latency, text only
    .venv/bin/python bench/webrtc.py --turns 0 --audio-turns 0 --levels 10,20,30,40
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
from _common import (
    append_in_real_time,
    cpu_times,
    default_cpus,
    fmt,
    percentile,
    pin_self,
    print_machine,
    serve,
    spread_cells,
    tree_cpu_delta,
    tree_cpu_seconds,
)
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from voice_latency import Utterance, synthesize

from openrealtime.audio.resample import resample
from openrealtime.transports.webrtc_media import use_audio_jitter_buffer

API_KEY = "sk-bench-webrtc"
RATE = 24000
MIC_RATE = 48000
CHUNK_MS = 20
CHUNK_BYTES = RATE * 2 * CHUNK_MS // 1000
LEAD_MS = 300
"""Silence before each spoken question."""
TAIL_MS = 800
"""Silence after it (WebSocket; the WebRTC microphone sends silence whenever it has nothing)."""
SILENT_PEAK = 1000
"""A decoded frame whose peak is above this (PCM16) is audio; the fake TTS tone peaks at ~9800."""
QUIET_FRAMES = 10
"""Consecutive silent frames (200 ms) that mean the previous answer is no longer playing."""
WAIT_S = 15.0
FAKE_TTS_MS_PER_CHAR = 60
AUDIO_DELTA = b'"type":"response.output_audio.delta"'

TEXT_PROMPT = "What is the capital of France?"
QUESTIONS = (
    "What is the capital of France?",
    "How far is the moon from the earth?",
    "Tell me a joke about computers.",
    "What time does the next train to London leave?",
    "How long should I boil an egg?",
)
LONG_SENTENCE = "This is a long answer that keeps on talking so the call has audio to play. "

NO_VAD = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
SERVER_VAD = {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}


def item_create(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


# ----------------------------------------------------------------------------- caller side


class MicTrack(MediaStreamTrack):
    """A microphone: queued audio in real time 20 ms frames (48 kHz mono), silence otherwise.

    48 kHz like a browser's microphone: aiortc's Opus encoder resamples anything else to 48 kHz
    in fixed 960-sample frames, which holds every frame back by one frame (20 ms).
    ``say(pcm, mark)`` also records when the frame holding byte ``mark`` of ``pcm`` (PCM16 mono
    24 kHz) is handed to aiortc's sender, which encodes it and sends it: :attr:`mark_time`.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._start: float | None = None
        self._pts = 0
        self._played = 0
        self._queued = 0
        self._mark: int | None = None
        self.mark_time: float | None = None

    def say(self, pcm16: bytes, mark: int | None = None) -> None:
        if mark is not None:
            self._mark = self._queued + mark * MIC_RATE // RATE
            self.mark_time = None
        pcm = resample(pcm16, RATE, MIC_RATE)
        self._pending += pcm
        self._queued += len(pcm)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = MIC_RATE * CHUNK_MS // 1000
        nbytes = samples * 2
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += samples
            wait = self._start + self._pts / MIC_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = bytes(self._pending[:nbytes])
        del self._pending[:nbytes]
        before, self._played = self._played, self._played + len(chunk)
        if self._mark is not None and before <= self._mark < self._played:
            self.mark_time = time.monotonic()
            self._mark = None
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(chunk.ljust(nbytes, b"\0"))
        frame.sample_rate = MIC_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        return frame


def strip_candidates(sdp: str) -> str:
    """What agents-js posts: the createOffer() SDP without ICE candidates."""
    lines = [
        line
        for line in sdp.splitlines()
        if not line.startswith("a=candidate:") and line != "a=end-of-candidates"
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Peer:
    """One call as the caller sees it: events, and the server's audio as packets and frames."""

    pc: RTCPeerConnection
    mic: MicTrack
    decode: bool
    channel: Any = None
    call_id: str = ""
    events: asyncio.Queue[tuple[float, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # RTP packets of the server's track, on arrival
    packet_times: list[float] = field(default_factory=list)
    """Arrival time of every packet (kept only while ``recording``)."""
    recording: bool = False
    first_ts: int | None = None
    recent: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=256)
    )
    """(RTP timestamp - the first packet's, arrival time) of the latest packets."""
    # decoded frames (``decode``)
    quiet_run: int = 0
    waiter: asyncio.Future[tuple[float, int]] | None = None
    """Resolved with (receive time, pts) by the first loud frame after it is set."""
    quiet: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def next_event(self, wait_s: float = WAIT_S) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(wait_s):
            return await self.events.get()

    def drain_events(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def arrival_of(self, pts: int) -> float | None:
        """When the packet with this (relative) RTP timestamp arrived."""
        for ts, t in reversed(self.recent):
            if ts == pts:
                return t
        return None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()

    def hook_receiver(self) -> None:
        """Timestamp every RTP packet of the server's audio on arrival (before any buffering)."""
        receiver = self.pc.getTransceivers()[0].receiver
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            now = time.monotonic()
            if self.first_ts is None:
                self.first_ts = packet.timestamp
            self.recent.append(((packet.timestamp - self.first_ts) % (1 << 32), now))
            if self.recording:
                self.packet_times.append(now)
            if self.decode:
                await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    async def read_frames(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            loud = int(np.abs(frame.to_ndarray()).max()) > SILENT_PEAK
            if loud:
                self.quiet_run = 0
                self.quiet.clear()
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result((now, int(frame.pts)))
            else:
                self.quiet_run += 1
                if self.quiet_run >= QUIET_FRAMES:
                    self.quiet.set()


SMALL_CLIENT_BUFFER = False
"""``--small-client-buffer``: the caller receives through openrealtime's own 1-packet jitter
buffer instead of aiortc's default (4 packets, ~80 ms), like a client that keeps its playout
delay low (browsers adapt theirs to the network's jitter)."""


async def open_call(
    base: str, session: dict[str, Any], *, decode: bool, http: httpx.AsyncClient
) -> Peer:
    """A connected caller: data channel open, ``session.created`` read."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = MicTrack()
    pc.addTrack(mic)
    if SMALL_CLIENT_BUFFER:
        for transceiver in pc.getTransceivers():
            use_audio_jitter_buffer(transceiver)
    peer = Peer(pc, mic, decode)
    peer.hook_receiver()
    peer.channel = channel = pc.createDataChannel("oai-events")

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if decode:
            peer.tasks.append(asyncio.create_task(peer.read_frames(track)))

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        peer.events.put_nowait((time.monotonic(), json.loads(message)))

    opened = asyncio.Event()
    channel.on("open", opened.set)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        response = await http.post(
            f"{base}/v1/realtime/calls",
            files={
                "sdp": (None, strip_candidates(pc.localDescription.sdp)),
                "session": (None, json.dumps(session)),
            },
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"call refused: {response.status_code} {response.text}")
        peer.call_id = response.headers["location"].rsplit("/", 1)[-1]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        async with asyncio.timeout(WAIT_S):
            await opened.wait()
        _, created = await peer.next_event()
        if created["type"] != "session.created":
            raise RuntimeError(f"first event: {created}")
    except BaseException:
        await peer.close()
        raise
    return peer


# ----------------------------------------------------------------------------- part 1


@dataclass
class Pair:
    ws_ms: float
    rtc_ms: float
    packet_ms: float | None
    started_ms: float | None

    @property
    def diff_ms(self) -> float:
        return self.rtc_ms - self.ws_ms


async def ws_turn(conn: Any, turn: Utterance | None) -> float:
    """One WebSocket turn; ms from the reference instant to the first audio delta."""
    t_ref: list[float] = []
    sender: asyncio.Task[None] | None = None
    if turn is None:
        await conn.send(item_create(TEXT_PROMPT))
        t_ref.append(time.monotonic())
        await conn.send({"type": "response.create"})
    else:
        audio = bytes(LEAD_MS * RATE * 2 // 1000) + turn.pcm + bytes(TAIL_MS * RATE * 2 // 1000)
        end_chunk = (int((LEAD_MS + turn.end_ms) * RATE * 2 / 1000) - 2) // CHUNK_BYTES

        sender = asyncio.create_task(
            append_in_real_time(conn, audio, chunk_ms=CHUNK_MS, mark_chunk=end_chunk, marks=t_ref)
        )
    first: float | None = None
    try:
        while True:
            async with asyncio.timeout(WAIT_S):
                raw = await conn.recv_bytes()
            now = time.monotonic()
            if AUDIO_DELTA in raw[:200]:
                first = first or now
                continue
            event = json.loads(raw)
            if event["type"] == "response.done":
                break
            if event["type"] == "error":
                raise RuntimeError(f"error event: {event['error']}")
    finally:
        if sender is not None:
            await sender
    if first is None or not t_ref:
        raise RuntimeError("no audio in the WebSocket answer")
    return (first - t_ref[0]) * 1000


async def rtc_turn(peer: Peer, turn: Utterance | None) -> tuple[float, float | None, float | None]:
    """One WebRTC turn: ms to the first loud frame, its packet, ``output_audio_buffer.started``."""
    async with asyncio.timeout(WAIT_S):
        while peer.quiet_run < QUIET_FRAMES:
            await peer.quiet.wait()
    peer.drain_events()
    loop = asyncio.get_running_loop()
    peer.waiter = loop.create_future()
    if turn is None:
        peer.send(item_create(TEXT_PROMPT))
        t_ref = time.monotonic()
        peer.send({"type": "response.create"})
    else:
        lead = bytes(LEAD_MS * RATE * 2 // 1000)
        end_byte = int((LEAD_MS + turn.end_ms) * RATE * 2 / 1000) - 2
        peer.mic.say(lead + turn.pcm, mark=end_byte)
    started: float | None = None
    done = False
    deadline = time.monotonic() + WAIT_S
    while not (done and started is not None and peer.waiter.done()):
        try:
            t, event = await peer.next_event(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            raise RuntimeError(f"WebRTC turn incomplete (done={done}, started={started})") from None
        match event["type"]:
            case "output_audio_buffer.started":
                started = started or t
            case "response.done":
                done = True
            case "error":
                raise RuntimeError(f"error event: {event['error']}")
    t_frame, pts = peer.waiter.result()
    t_packet = peer.arrival_of(pts)
    if turn is not None:
        if peer.mic.mark_time is None:
            raise RuntimeError("the end of speech was never sent")
        t_ref = peer.mic.mark_time
    peer.send({"type": "output_audio_buffer.clear"})  # cut the rest of the answer

    def ms(t: float | None) -> float | None:
        return None if t is None else (t - t_ref) * 1000

    return (t_frame - t_ref) * 1000, ms(t_packet), ms(started)


TurnTimes = tuple[float, float | None, float | None]
"""One call turn's ms: to the answer's audio, to its second measure point, to ``started``."""


async def paired_turns(
    conn: Any,
    update: Callable[[dict[str, Any]], Awaitable[None]],
    call_turn: Callable[[Utterance | None], Awaitable[TurnTimes]],
    counts: dict[str, int],
    questions: list[Utterance],
    describe: Callable[[float, float | None, float | None], str],
) -> dict[str, list[tuple[float, TurnTimes]]]:
    """Part 1's pairs: each turn on the WebSocket ``conn``, then on the call, after one
    uncounted warm-up pair per input (``text``: no VAD; ``audio``: server VAD and
    ``questions``). ``update`` sends a client event over the call's events channel."""
    results: dict[str, list[tuple[float, TurnTimes]]] = {}
    for name, count in counts.items():
        if count <= 0:
            continue
        config = NO_VAD if name == "text" else SERVER_VAD
        await conn.send({"type": "session.update", "session": config})
        await update({"type": "session.update", "session": config})
        await asyncio.sleep(0.3)
        runs: list[tuple[float, TurnTimes]] = []
        for i in range(count + 1):  # + 1 uncounted warm-up pair
            turn = None if name == "text" else questions[i % len(questions)]
            ws_ms = await ws_turn(conn, turn)
            await asyncio.sleep(0.2)
            times = await call_turn(turn)
            label = "warm-up" if i == 0 else f"{name} {i}"
            print(f"  {label}: WebSocket {ws_ms:.0f} ms, {describe(*times)}", file=sys.stderr)
            if i:
                runs.append((ws_ms, times))
            await asyncio.sleep(0.2)
        results[name] = runs
    return results


async def latency(
    base: str, turns: int, audio_turns: int, questions: list[Utterance]
) -> dict[str, list[Pair]]:
    results: dict[str, list[Pair]] = {}
    api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY)
    async with httpx.AsyncClient() as http:
        peer = await open_call(base, NO_VAD, decode=True, http=http)
        try:
            async with api.realtime.connect(model="gpt-realtime") as conn:
                await conn.recv_bytes()  # session.created

                async def update(event: dict[str, Any]) -> None:
                    peer.send(event)

                def describe(rtc_ms: float, packet_ms: float | None, started: float | None) -> str:
                    return (
                        f"WebRTC {rtc_ms:.0f} ms (packet {fmt(packet_ms or float('nan'), 0)}, "
                        f"started {fmt(started or float('nan'), 0)})"
                    )

                counts = {"text": turns, "audio": audio_turns}
                paired = await paired_turns(
                    conn, update, lambda t: rtc_turn(peer, t), counts, questions, describe
                )
                for name, runs in paired.items():
                    results[name] = [Pair(ws_ms, *other) for ws_ms, other in runs]
        finally:
            await peer.close()
            await api.close()
    return results


def latency_table(results: dict[str, list[Pair]]) -> str:
    lines = [
        "| ms from the reference instant to… | input | n | p50 | p90 | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, pairs in results.items():
        rows: list[tuple[str, list[float]]] = [
            ("WebSocket: first `response.output_audio.delta`", [p.ws_ms for p in pairs]),
            ("WebRTC: `output_audio_buffer.started` (data channel)", _known(pairs, "started_ms")),
            ("WebRTC: first audio RTP packet arrived", _known(pairs, "packet_ms")),
            ("WebRTC: first non-silent frame decoded", [p.rtc_ms for p in pairs]),
            ("**WebRTC − WebSocket (per pair)**", [p.diff_ms for p in pairs]),
            (
                "WebRTC first packet − WebSocket (per pair; no client jitter buffer)",
                [p.packet_ms - p.ws_ms for p in pairs if p.packet_ms is not None],
            ),
            (
                "WebRTC: packet arrived → frame decoded (client jitter buffer + decode)",
                [p.rtc_ms - p.packet_ms for p in pairs if p.packet_ms is not None],
            ),
        ]
        for label, values in rows:
            lines.append(f"| {label} | {name} | {spread_cells(values)} |")
    return "\n".join(lines)


def _known(pairs: list[Pair], name: str) -> list[float]:
    return [v for p in pairs if (v := getattr(p, name)) is not None]


# ----------------------------------------------------------------------------- part 2


@dataclass
class Level:
    calls: int
    connect_s: float = 0.0
    window_s: float = 0.0
    rates: list[float] = field(default_factory=list)
    """Per call: packets received in the window / expected (50 per second)."""
    gaps: list[float] = field(default_factory=list)
    """Every inter-packet gap in the window, ms, all calls."""
    worst_call_p99: float = float("nan")
    server_cpu: float = 0.0
    children_cpu: float = 0.0
    client_cpu: float = 0.0
    others_cpu: float | None = None
    loop_lag_p99: float = float("nan")
    ended_early: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def kept_up(self) -> bool:
        return (
            not self.errors
            and bool(self.rates)
            and min(self.rates) >= 0.95
            and percentile(self.gaps, 99) <= 100
        )


async def loop_lag(into: list[float], stop: asyncio.Event) -> None:
    """Overshoot of a 10 ms sleep, ms: how late this (client) event loop runs callbacks."""
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.01)
        into.append((time.monotonic() - t - 0.01) * 1000)


async def measured_window(
    level: Level, window_s: float, server_pid: int, server_cpu: int | None
) -> tuple[float, float]:
    """Wait ``window_s`` while measuring the server's and this process's CPU and this loop's
    lag into ``level``; the window's start and end (``time.monotonic``)."""
    lags: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(loop_lag(lags, stop))
    cpu0, core0 = tree_cpu_seconds(server_pid), cpu_times(server_cpu)
    self0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(window_s)
    self1, t1 = time.process_time(), time.monotonic()
    cpu1, core1 = tree_cpu_seconds(server_pid), cpu_times(server_cpu)
    stop.set()
    await ticker
    level.window_s = window = t1 - t0
    own, kids = tree_cpu_delta(cpu0, cpu1)
    level.server_cpu = own / window * 100
    level.children_cpu = kids / window * 100
    level.client_cpu = (self1 - self0) / window * 100
    total = core1["total"] - core0["total"]
    if server_cpu is not None and total > 0:
        tasks = (core1["tasks"] - core0["tasks"]) / total * 100
        level.others_cpu = max(0.0, tasks - level.server_cpu - level.children_cpu)
    level.loop_lag_p99 = percentile(lags, 99)
    return t0, t1


def tally_call(
    level: Level, arrivals: list[float], events: asyncio.Queue[Any], t0: float, t1: float
) -> float:
    """Add one call's received rate and gaps in ``[t0, t1]`` to ``level`` (and count an answer
    that ended early); the call's gap p99."""
    times = [t for t in arrivals if t0 <= t <= t1]
    level.rates.append(len(times) / ((t1 - t0) * 1000 / CHUNK_MS))
    edges = [t0, *times, t1]
    gaps = [(b - a) * 1000 for a, b in zip(edges, edges[1:], strict=False)]
    level.gaps += gaps
    while not events.empty():
        _, event = events.get_nowait()
        if event["type"] == "output_audio_buffer.stopped":
            level.ended_early += 1
    return percentile(gaps, 99)


async def answers_started(calls: list[Any], level: Level) -> bool:
    """Wait for every call's ``output_audio_buffer.started`` (each has ``next_event``); an
    error event or a timeout goes to ``level.errors``. Whether every answer started."""

    async def until_started(call: Any) -> None:
        while True:
            _, event = await call.next_event(WAIT_S + len(calls) * 0.1)
            if event["type"] == "output_audio_buffer.started":
                return
            if event["type"] == "error":
                raise RuntimeError(f"error event: {event['error']}")

    outcomes = await asyncio.gather(*(until_started(c) for c in calls), return_exceptions=True)
    level.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return not level.errors


async def capacity_level(
    base: str, calls: int, args: argparse.Namespace, server_pid: int, server_cpu: int | None
) -> Level:
    level = Level(calls)
    chars = int((args.settle + args.window + 6 + calls * 0.15) * 1000 / FAKE_TTS_MS_PER_CHAR)
    text = (LONG_SENTENCE * (chars // len(LONG_SENTENCE) + 1))[:chars]
    peers: list[Peer] = []
    gate = asyncio.Semaphore(4)

    async def one(http: httpx.AsyncClient) -> None:
        async with gate:
            peer = await open_call(base, SERVER_VAD, decode=False, http=http)
            peers.append(peer)

    started_connect = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as http:
        outcomes = await asyncio.gather(*(one(http) for _ in range(calls)), return_exceptions=True)
    level.connect_s = time.monotonic() - started_connect
    level.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    try:
        if level.errors:
            return level
        for peer in peers:
            peer.drain_events()
            peer.send(item_create(text))
            peer.send({"type": "response.create"})

        if not await answers_started(peers, level):
            return level
        await asyncio.sleep(args.settle)
        for peer in peers:
            peer.drain_events()
            peer.packet_times.clear()
            peer.recording = True
        t0, t1 = await measured_window(level, args.window, server_pid, server_cpu)
        for peer in peers:
            peer.recording = False
        per_call_p99 = [tally_call(level, peer.packet_times, peer.events, t0, t1) for peer in peers]
        level.worst_call_p99 = max(per_call_p99, default=float("nan"))
        return level
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        await asyncio.sleep(1.5)  # let the server notice and release the calls


def capacity_table(levels: list[Level]) -> str:
    lines = [
        "| calls | connect s | received, % of real time: min / p50 | gap p99 ms (all calls) | "
        "worst call's gap p99 | max gap ms | server CPU % | client CPU % | other processes "
        "on the server's CPU % | client loop lag p99 ms | kept up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        if lv.errors:
            lines.append(
                f"| {lv.calls} | {lv.connect_s:.1f} | failed: {lv.errors[0][:120]} "
                f"({len(lv.errors)} errors) |  |  |  |  |  |  |  | no |"
            )
            continue
        others = "n/a" if lv.others_cpu is None else f"{lv.others_cpu:.0f}"
        early = f" ({lv.ended_early} answers ended early)" if lv.ended_early else ""
        lines.append(
            f"| {lv.calls} | {lv.connect_s:.1f} | {min(lv.rates) * 100:.1f} / "
            f"{percentile(lv.rates, 50) * 100:.1f}{early} | "
            f"{fmt(percentile(lv.gaps, 99))} | {fmt(lv.worst_call_p99)} | "
            f"{fmt(max(lv.gaps, default=float('nan')))} | "
            f"{lv.server_cpu:.0f} (+{lv.children_cpu:.0f}) | {lv.client_cpu:.0f} | {others} | "
            f"{fmt(lv.loop_lag_p99)} | {'yes' if lv.kept_up else '**no**'} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def print_capacity(levels: Sequence[Level], title: str, rule: str, *, table: str) -> None:
    """Print the capacity part of a call benchmark's report: the table, then its reading.

    Args:
        levels: the levels run, in order.
        title: the section's heading line.
        rule: what "kept up" means for these calls, as printed.
        table: the levels' table (each benchmark has its own columns).
    """
    print(title)
    print()
    print(table)
    print()
    largest = max((lv.calls for lv in levels if lv.kept_up), default=0)
    print(
        f"Largest level that kept up ({rule}): "
        f"**{largest or 'none'}** of {', '.join(str(lv.calls) for lv in levels)} tried."
    )
    best = next((lv for lv in levels if lv.calls == largest), None)
    if best is not None:
        per_call = (best.server_cpu + best.children_cpu) / best.calls
        print(
            f"Server CPU at {best.calls} calls: {per_call:.1f}% of one core per call "
            f"(linear extrapolation: ~{100 / per_call:.0f} calls per core)."
        )
    saturated = [lv.calls for lv in levels if lv.client_cpu >= 90 or lv.loop_lag_p99 > 20]
    if saturated:
        print(
            f"The client was saturated (CPU >= 90% or loop lag p99 > 20 ms) at "
            f"{', '.join(map(str, saturated))} calls: there the gaps may be the client's."
        )


def call_bench_parser(doc: str, levels: str) -> argparse.ArgumentParser:
    """The flags this benchmark shares with ``bench/sip.py`` (part 1 pairs, part 2 levels)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="text pairs (part 1; 20)")
    parser.add_argument(
        "--audio-turns", type=int, default=10, help="spoken-question pairs (part 1; 10)"
    )
    parser.add_argument(
        "--levels",
        default=levels,
        help="concurrent calls per capacity level, comma-separated; 0 to skip part 2 "
        f"(default {levels}; stops after the first level that falls behind)",
    )
    parser.add_argument("--window", type=float, default=8.0, help="seconds counted per level (8)")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after every answer started (2)"
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="run every level, even after one fell behind"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client CPUs")
    parser.add_argument("--server-log", type=Path, help="keep the server's log in this file")
    return parser


def spoken_questions(audio_turns: int) -> list[Utterance]:
    """The flite questions of part 1 (exits when flite is missing and they are asked for)."""
    if audio_turns <= 0:
        return []
    if shutil.which("flite") is None:
        sys.exit(
            "flite is needed for the spoken questions (apt-get install flite), or --audio-turns 0"
        )
    with tempfile.TemporaryDirectory() as tmp:
        return [synthesize(q, Path(tmp)) for q in QUESTIONS]


def main() -> None:
    parser = call_bench_parser(__doc__, "1,5,10,20,30,40,60,80")
    parser.add_argument(
        "--small-client-buffer",
        action="store_true",
        help="the caller uses a 1-packet jitter buffer instead of aiortc's 4-packet default",
    )
    args = parser.parse_args()
    global SMALL_CLIENT_BUFFER
    SMALL_CLIENT_BUFFER = args.small_client_buffer
    levels = [int(x) for x in args.levels.split(",") if x.strip() and int(x) > 0]
    print_machine()
    server_cpu, client_cpu = (None, None) if args.no_pin else default_cpus()
    pin_self(client_cpu)
    questions = spoken_questions(args.audio_turns)
    extra = ["--stt", "fake", "--llm", "fake", "--tts", "fake", "--api-key", API_KEY]
    started = time.monotonic()
    with serve("silero", cpu=server_cpu, extra_args=extra) as server:
        command = " ".join(
            shlex.quote(Path(c).name if i == 0 else c) for i, c in enumerate(server.command)
        )
        print(
            f"Server: `{command}` (CPU {server_cpu}); client: this process (CPU {client_cpu}), "
            f"openai {openai.__version__} SDK for WebSocket, aiortc for WebRTC."
        )
        print()
        base = f"http://127.0.0.1:{server.port}"
        results: dict[str, list[Pair]] = {}
        if args.turns > 0 or args.audio_turns > 0:
            results = asyncio.run(latency(base, args.turns, args.audio_turns, questions))
        done: list[Level] = []
        for calls in levels:
            level = asyncio.run(capacity_level(base, calls, args, server.pid, server_cpu))
            done.append(level)
            print(
                f"  {calls} calls: min rate {fmt(min(level.rates, default=float('nan')) * 100)}%, "
                f"gap p99 {fmt(percentile(level.gaps, 99))} ms, server CPU "
                f"{level.server_cpu:.0f}%, client CPU {level.client_cpu:.0f}%"
                + (f", errors {level.errors[:2]}" if level.errors else ""),
                file=sys.stderr,
            )
            if not level.kept_up and not args.keep_going:
                break
        if args.server_log is not None:
            args.server_log.write_text(server.log_path.read_text(errors="replace"))
    elapsed = time.monotonic() - started

    if results:
        print("### Latency: WebRTC vs WebSocket, same turn")
        print()
        print(latency_table(results))
        print()
        for name, pairs in results.items():
            p50 = percentile([p.diff_ms for p in pairs], 50)
            print(
                f"- {name}: WebRTC adds **{fmt(p50, 0)} ms at p50** over WebSocket "
                f"(goal < 40 ms: {'met' if p50 < 40 else 'missed'})."
            )
        print()
    if done:
        print_capacity(
            done,
            "### Capacity: concurrent calls, each playing a long answer",
            "every call >= 95% of real time, gap p99 <= 100 ms",
            table=capacity_table(done),
        )
        print()
    print(f"Run: {elapsed:.0f} s.")


if __name__ == "__main__":
    main()
