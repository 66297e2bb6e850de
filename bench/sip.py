"""SIP phone calls: latency a caller hears over SIP versus WebSocket, and concurrent calls per core.

One ``openrealtime serve --stt fake --llm fake --tts fake --sip-port P`` process (Silero VAD;
the fake LLM answers ``You said: …`` at once, the fake TTS turns it into a sine tone of 60 ms
per character at once), so what is measured is the transport, not the engines. The server is
pinned to one CPU and this client to another (``--no-pin`` to not pin), as in
``bench/webrtc.py``, whose turns, percentiles and capacity criteria this benchmark shares.

This process is both sides of a deployment: the **application** (a webhook receiver at
``/hook`` in this event loop takes each signed ``realtime.call.incoming``, verified with
openai-python's ``client.webhooks.unwrap``; the call is answered with
``client.realtime.calls.accept`` and driven through the sideband
``client.realtime.connect(call_id=…)``), and the **phones**: aiosipua's UAC over UDP (INVITE
with a PCMU + ``telephone-event`` offer, ``a=ptime:20``; 100/180/200, ACK; BYE at the end) and
one aiortp RTP session per call. Each phone's microphone sends 20 ms of 8 kHz audio per 20 ms on
one absolute clock (silence when it has nothing to say). The server's audio is timestamped on
arrival of each RTP packet (what the WebRTC benchmark calls "first packet arrived"; a µ-law
lookup table tells the answer from silence without decoding); for the latency call aiortp also
decodes it (``on_audio``, ``jitter_prefetch=0``, no concealment), which is reported too: its
jitter buffer hands a frame on only when the next packet arrives. A real phone adds its own
playout buffer (typically 20-60 ms).

**Part 1: latency.** One WebSocket session (official SDK) and one SIP call side by side; the
same turn is played on each in turn (pairs: WebSocket, then SIP; one uncounted warm-up pair per
input):

* **text** (``--turns`` pairs): ``conversation.item.create`` then ``response.create`` (over the
  WebSocket / over the call's sideband); reference instant: just before ``response.create`` is
  sent. No VAD involved: this isolates the output path.
* **audio** (``--audio-turns`` pairs, ``server_vad`` defaults): a flite (voice ``rms``)
  question after 300 ms of silence, in real time in 20 ms pieces (WebSocket:
  ``input_audio_buffer.append`` at 24 kHz; SIP: the phone's microphone, 8 kHz PCMU); reference
  instant: when the piece holding the true end of speech was sent.

Per turn: WebSocket, the first ``response.output_audio.delta``; SIP, the arrival of the first
RTP packet whose peak is above 1000 (also: when aiortp hands it on decoded, and
``output_audio_buffer.started`` on the sideband); and per pair the difference SIP - WebSocket
(its own percentiles). Between SIP turns the rest of the answer is
cut (``output_audio_buffer.clear`` on the sideband) and the phone waits for 200 ms of silence.
What SIP adds by design: the server's sender sends one 20 ms frame per 20 ms on its clock, so an
answer waits for the next tick (0-20 ms, ~10 on average); 24 → 8 kHz resampling; G.711.

**Part 2: capacity.** For each level of ``--levels`` (stop at the first that falls behind),
that many calls are placed at once (each: INVITE, webhook, ``accept``, 200 OK, ACK, sideband);
every microphone sends silence (an open line, ``server_vad`` on); each call asks for one long
answer over its sideband; once every call's ``output_audio_buffer.started`` has arrived and
``--settle`` seconds passed, the phones count for ``--window`` seconds, per call, the RTP
packets of the server's audio on arrival (not decoded: a lookup table says whether a µ-law
payload holds a sample above 1000):

* received rate = packets / window / 50 (100 % = real time);
* answer audio = the share of those packets that carry the answer (the server sends silence in
  place of audio it does not have in time, so a late answer shows here, not in the rate);
* gaps between consecutive packets (20 ms when on time); p99 and max over all calls;
* server CPU (process + children, % of one core), client CPU, the client's loop lag;
* after the window every phone hangs up (BYE); a call whose sideband the server has not closed
  5 s later is counted as not ended.

A level keeps up when every call received >= 95 % of real time with >= 95 % of it answer audio,
and the p99 gap is <= 100 ms.

    .venv/bin/python bench/sip.py                                # both parts, ~4 min
    .venv/bin/python bench/sip.py --turns 40 --audio-turns 0 --levels 0   # latency, text only
    .venv/bin/python bench/sip.py --turns 0 --audio-turns 0 --levels 10,20,40
    .venv/bin/python bench/sip.py --turns 0 --audio-turns 0 --echo-cancellation off
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import uvicorn
from _common import (
    default_cpus,
    fmt,
    free_port,
    percentile,
    pin_self,
    print_machine,
    serve,
    spread_cells,
)
from aiortp import RTPSession
from aiortp.codecs import get_codec
from aiortp.port_allocator import PortAllocator
from aiosipua import SipUAC, SipUAS
from aiosipua.outgoing_call import OutgoingCall
from aiosipua.sdp_negotiate import build_sdp
from fastapi import FastAPI, Request
from fastapi.responses import Response
from voice_latency import Utterance
from webrtc import (
    CHUNK_MS,
    FAKE_TTS_MS_PER_CHAR,
    LEAD_MS,
    LONG_SENTENCE,
    NO_VAD,
    QUIET_FRAMES,
    RATE,
    SERVER_VAD,
    SILENT_PEAK,
    TEXT_PROMPT,
    WAIT_S,
    Level,
    answers_started,
    call_bench_parser,
    item_create,
    measured_window,
    paired_turns,
    print_capacity,
    spoken_questions,
    tally_call,
)

from openrealtime.audio.resample import StreamResampler, resample
from openrealtime.audio.thirdband import ThirdbandDownsampler, ThirdbandUpsampler
from openrealtime.transports.sip.signalling import UvUdpSipTransport

API_KEY = "sk-bench-sip"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
PHONE_RATE = 8000
FRAME_BYTES = PHONE_RATE * 2 * CHUNK_MS // 1000
PCMU = get_codec(0)
SILENCE = PCMU.encode(bytes(FRAME_BYTES))
LOUD = bytes(
    int(abs(int(np.frombuffer(PCMU.decode(bytes([b])), "<i2")[0])) > SILENT_PEAK)
    for b in range(256)
)
"""µ-law byte → 1 where its sample is above ``SILENT_PEAK``: ``b"\\1" in payload.translate(LOUD)``
tells a packet of the answer from silence without decoding it."""
PHONE_PORTS = (30000, 39998)
"""The phones' RTP/RTCP port pairs (the server's default range is 40000-40999)."""
BYE_WAIT_S = 5.0


# ----------------------------------------------------------------------------- the phone


class PhoneRtp(RTPSession):
    """aiortp's RTP session, every packet of the server's audio seen on arrival first (before
    aiortp's jitter buffer, which hands a frame on only when the next packet has come)."""

    phone: Phone | None = None

    def _handle_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        phone = self.phone
        if phone is None:
            return
        phone.arrived(data)
        if phone.decode:  # → on_audio, at once (jitter_prefetch=0, in order)
            super()._handle_rtp(data, addr)


@dataclass
class Phone:
    """One call as the caller sees it: SIP dialog, RTP, microphone, and the app's sideband."""

    rtp: PhoneRtp
    port: int
    decode: bool
    call: OutgoingCall | None = None
    call_id: str = ""
    """The server's ``rtc_…`` id (from the webhook)."""
    conn: Any = None
    """The sideband (``client.realtime.connect(call_id=…)``)."""
    live: bool = False
    """Answered: the microphone sends."""
    events: asyncio.Queue[tuple[float, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """The sideband was closed (by the server, when the call ended)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # microphone
    pending: bytearray = field(default_factory=bytearray)
    queued: int = 0
    played: int = 0
    mark: int | None = None
    mark_time: float | None = None
    # ear
    recording: bool = False
    arrivals: list[float] = field(default_factory=list)
    loud_packets: int = 0
    quiet_run: int = 0
    quiet: asyncio.Event = field(default_factory=asyncio.Event)
    waiter: asyncio.Future[float] | None = None
    """Resolved with the arrival time of the first loud packet after it is set."""
    decoded: asyncio.Future[float] | None = None
    """Resolved when aiortp (``on_audio``) first hands on a loud frame after it is set."""

    def say(self, pcm16: bytes, mark: int | None = None) -> None:
        """Queue 24 kHz audio for the microphone; note when byte ``mark`` of it is sent."""
        pcm = resample(pcm16, RATE, PHONE_RATE)
        if mark is not None:
            self.mark = self.queued + mark * PHONE_RATE // RATE
            self.mark_time = None
        self.pending += pcm
        self.queued += len(pcm)

    def speak_frame(self) -> None:
        """The microphone's next 20 ms (called by the shared clock)."""
        if not self.pending:
            self.rtp.send_audio_auto(SILENCE)
            return
        chunk = bytes(self.pending[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
        del self.pending[:FRAME_BYTES]
        self.rtp.send_audio_pcm_auto(chunk)
        before, self.played = self.played, self.played + FRAME_BYTES
        if self.mark is not None and before <= self.mark < self.played:
            self.mark_time = time.monotonic()
            self.mark = None

    def arrived(self, data: bytes) -> None:
        """One RTP packet of the server's audio (PCMU), on arrival."""
        now = time.monotonic()
        loud = b"\1" in data[12 + 4 * (data[0] & 0x0F) :].translate(LOUD)
        if self.recording:
            self.arrivals.append(now)
            self.loud_packets += loud
        if not self.decode:
            return
        if loud:
            self.quiet_run = 0
            self.quiet.clear()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(now)
        else:
            self.quiet_run += 1
            if self.quiet_run >= QUIET_FRAMES:
                self.quiet.set()

    def heard(self, pcm: bytes, _timestamp: int) -> None:
        """aiortp's ``on_audio``: one decoded 8 kHz frame."""
        if self.decoded is not None and not self.decoded.done():
            if int(np.abs(np.frombuffer(pcm, "<i2")).max(initial=0)) > SILENT_PEAK:
                self.decoded.set_result(time.monotonic())

    async def read_events(self) -> None:
        try:
            while True:
                raw = await self.conn.recv_bytes()
                self.events.put_nowait((time.monotonic(), json.loads(raw)))
        except Exception:  # the server closed the sideband (or we did)
            self.closed.set()

    async def next_event(self, wait_s: float = WAIT_S) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(wait_s):
            return await self.events.get()

    def drain_events(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    async def send(self, event: dict[str, Any]) -> None:
        await self.conn.send(event)


class _InLoopServer(uvicorn.Server):
    """uvicorn in this event loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Switchboard:
    """What the phones share (SIP over one UDP socket, the microphone clock) and the
    application (the webhook receiver, the official client)."""

    def __init__(self, base: str, sip_port: int, hook_port: int) -> None:
        self.api = openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=API_KEY, webhook_secret=SECRET, max_retries=0
        )
        self.server_sip = ("127.0.0.1", sip_port)
        self.hook_port = hook_port
        self.ringing: dict[str, asyncio.Future[str]] = {}
        """SIP Call-ID → future of the server's call id (from the webhook)."""
        self.phones: list[Phone] = []
        self.ports = PortAllocator(PHONE_PORTS)
        self.transport = UvUdpSipTransport(local_addr=("127.0.0.1", 0))
        self.uac = SipUAC(self.transport)
        self.uas = SipUAS(self.transport, uac=self.uac)
        self.mic_late = 0
        """Microphone ticks more than 200 ms late (the clock then restarts)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._web: _InLoopServer | None = None

    def application(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            event = self.api.webhooks.unwrap(await request.body(), request.headers)
            if event.type != "realtime.call.incoming":
                return Response(status_code=200)
            sip_id = next(
                (h.value for h in event.data.sip_headers if h.name.lower() in ("call-id", "i")),
                "",
            )
            waiting = self.ringing.get(sip_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(event.data.call_id)
            return Response(status_code=200)

        return app

    async def start(self) -> None:
        await self.uas.start()
        sock = self.transport._udp_transport.get_extra_info("sockname")  # type: ignore[union-attr]
        self.uac.advertised_addr = self.uas.advertised_addr = (sock[0], sock[1])
        config = uvicorn.Config(
            self.application(),
            host="127.0.0.1",
            port=self.hook_port,
            log_level="warning",
            lifespan="off",
        )
        self._web = _InLoopServer(config)
        self._tasks.append(asyncio.create_task(self._web.serve()))
        async with asyncio.timeout(10):
            while not self._web.started:  # noqa: ASYNC110 (uvicorn has no event for it)
                await asyncio.sleep(0.02)
        self._tasks.append(asyncio.create_task(self._microphones()))

    async def stop(self) -> None:
        await asyncio.gather(*(self.hangup(p) for p in list(self.phones)), return_exceptions=True)
        if self._web is not None:
            self._web.should_exit = True
        self._tasks[-1].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.uas.stop()
        await self.api.close()

    async def _microphones(self) -> None:
        """Every answered phone's next 20 ms, one tick per 20 ms on an absolute clock."""
        start, ticks = time.monotonic(), 0
        while True:
            ticks += 1
            wait = start + ticks * CHUNK_MS / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.2:
                self.mic_late += 1
                start, ticks = time.monotonic(), 0
            for phone in self.phones:
                if phone.live:
                    phone.speak_frame()

    async def dial(self, session: dict[str, Any], *, decode: bool) -> Phone:
        """Place a call, accept it as the application, open its sideband; the phone."""
        port, _ = await self.ports.allocate()
        rtp = await PhoneRtp.create(
            local_addr=("127.0.0.1", port),
            remote_addr=("127.0.0.1", 9),  # from the 200 OK's SDP, below
            payload_type=0,
            jitter_prefetch=0,
            plc=False,
            cname="bench-phone",
        )
        assert isinstance(rtp, PhoneRtp)
        phone = rtp.phone = Phone(rtp, port, decode)
        rtp.on_audio = phone.heard
        self.phones.append(phone)
        try:
            offer = build_sdp("127.0.0.1", port, 0, "PCMU", dtmf_payload_type=101, ptime=20)
            phone.call = call = self.uac.send_invite(
                "sip:caller@127.0.0.1", f"sip:bench@{self.server_sip[0]}:{self.server_sip[1]}",
                self.server_sip, offer, user_agent="openrealtime-bench",
            )  # fmt: skip
            ringing = self.ringing[call.call_id] = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(WAIT_S):
                    phone.call_id = await ringing
            finally:
                self.ringing.pop(call.call_id, None)
            config = {k: v for k, v in session.items() if k != "type"}
            await self.api.realtime.calls.accept(phone.call_id, type="realtime", **config)
            await call.wait_answered(WAIT_S)
            assert call.sdp_answer is not None and call.sdp_answer.rtp_address is not None
            rtp.update_remote(call.sdp_answer.rtp_address)
            phone.live = True
            phone.conn = await self.api.realtime.connect(call_id=phone.call_id).__aenter__()
            _, created = await _first_event(phone.conn)
            if created["type"] != "session.created":
                raise RuntimeError(f"first sideband event: {created}")
            phone.tasks.append(asyncio.create_task(phone.read_events()))
        except BaseException:
            await self.hangup(phone)
            raise
        return phone

    async def hangup(self, phone: Phone) -> bool:
        """BYE; whether the server then closed the call's sideband within ``BYE_WAIT_S``."""
        if phone not in self.phones:
            return True
        self.phones.remove(phone)
        phone.live = False
        ended = True
        if phone.call is not None and phone.call.hangup(self.uac) is not None:
            if phone.conn is not None:
                try:
                    async with asyncio.timeout(BYE_WAIT_S):
                        await phone.closed.wait()
                except TimeoutError:
                    ended = False
        elif phone.call is not None:
            phone.call.cancel(self.uac)
        for task in phone.tasks:
            task.cancel()
        await asyncio.gather(*phone.tasks, return_exceptions=True)
        if phone.conn is not None:
            with contextlib.suppress(Exception):
                await phone.conn.close()
        await phone.rtp.close()
        await self.ports.release(phone.port)
        return ended


async def _first_event(conn: Any) -> tuple[float, dict[str, Any]]:
    async with asyncio.timeout(WAIT_S):
        raw = await conn.recv_bytes()
    return time.monotonic(), json.loads(raw)


# ----------------------------------------------------------------------------- part 1


@dataclass
class Pair:
    ws_ms: float
    sip_ms: float
    decoded_ms: float
    started_ms: float | None

    @property
    def diff_ms(self) -> float:
        return self.sip_ms - self.ws_ms


async def sip_turn(phone: Phone, turn: Utterance | None) -> tuple[float, float, float | None]:
    """One SIP turn: ms to the first loud RTP packet, to aiortp's decoded frame of it, and to
    ``output_audio_buffer.started``."""
    async with asyncio.timeout(WAIT_S):
        while phone.quiet_run < QUIET_FRAMES:
            await phone.quiet.wait()
    phone.drain_events()
    phone.waiter = asyncio.get_running_loop().create_future()
    phone.decoded = asyncio.get_running_loop().create_future()
    if turn is None:
        await phone.send(item_create(TEXT_PROMPT))
        t_ref = time.monotonic()
        await phone.send({"type": "response.create"})
    else:
        lead = bytes(LEAD_MS * RATE * 2 // 1000)
        end_byte = int((LEAD_MS + turn.end_ms) * RATE * 2 / 1000) - 2
        phone.say(lead + turn.pcm, mark=end_byte)
    started: float | None = None
    done = False
    deadline = time.monotonic() + WAIT_S
    while not (done and started is not None and phone.waiter.done() and phone.decoded.done()):
        try:
            t, event = await phone.next_event(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            raise RuntimeError(f"SIP turn incomplete (done={done}, started={started})") from None
        match event["type"]:
            case "output_audio_buffer.started":
                started = started or t
            case "response.done":
                done = True
            case "error":
                raise RuntimeError(f"error event: {event['error']}")
    if turn is not None:
        if phone.mark_time is None:
            raise RuntimeError("the end of speech was never sent")
        t_ref = phone.mark_time
    await phone.send({"type": "output_audio_buffer.clear"})  # cut the rest of the answer
    started_ms = None if started is None else (started - t_ref) * 1000
    return (
        (phone.waiter.result() - t_ref) * 1000,
        (phone.decoded.result() - t_ref) * 1000,
        started_ms,
    )


async def latency(
    board: Switchboard, turns: int, audio_turns: int, questions: list[Utterance]
) -> dict[str, list[Pair]]:
    results: dict[str, list[Pair]] = {}
    phone = await board.dial(NO_VAD, decode=True)
    try:
        async with board.api.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv_bytes()  # session.created

            def describe(sip_ms: float, decoded_ms: float | None, started: float | None) -> str:
                return (
                    f"SIP {sip_ms:.0f} ms (decoded {fmt(decoded_ms or float('nan'), 0)}, "
                    f"started {fmt(started or float('nan'), 0)})"
                )

            counts = {"text": turns, "audio": audio_turns}
            paired = await paired_turns(
                conn, phone.send, lambda t: sip_turn(phone, t), counts, questions, describe
            )
            for name, runs in paired.items():
                results[name] = [Pair(ws_ms, *other) for ws_ms, other in runs]
    finally:
        if not await board.hangup(phone):
            print("  the latency call did not end after its BYE", file=sys.stderr)
    return results


def latency_table(results: dict[str, list[Pair]]) -> str:
    lines = [
        "| ms from the reference instant to… | input | n | p50 | p90 | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, pairs in results.items():
        started = [p.started_ms for p in pairs if p.started_ms is not None]
        rows: list[tuple[str, list[float]]] = [
            ("WebSocket: first `response.output_audio.delta`", [p.ws_ms for p in pairs]),
            ("SIP: `output_audio_buffer.started` (sideband)", started),
            ("SIP: first RTP packet of the answer arrived", [p.sip_ms for p in pairs]),
            ("SIP: … handed on decoded by aiortp (`on_audio`)", [p.decoded_ms for p in pairs]),
            ("**SIP − WebSocket (per pair)**", [p.diff_ms for p in pairs]),
            (
                "SIP: `started` → first packet arrived (per turn; server output path)",
                [p.sip_ms - p.started_ms for p in pairs if p.started_ms is not None],
            ),
        ]
        for label, values in rows:
            lines.append(f"| {label} | {name} | {spread_cells(values)} |")
    return "\n".join(lines)


def release_pattern(resampler: Any, chunks: int = 15) -> str:
    """What a streaming resampler gives back for each 20 ms fed in (ms of audio, in steady
    state): one that holds audio until it has a block delays SIP audio by it."""
    chunk = bytes(resampler.in_rate * CHUNK_MS // 1000 * 2)
    out = [len(resampler.process(chunk)) / 2 * 1000 / resampler.out_rate for _ in range(chunks)]
    return ", ".join(f"{ms:.0f}" for ms in out[-9:])


# ----------------------------------------------------------------------------- part 2


@dataclass
class SipLevel(Level):
    audio: list[float] = field(default_factory=list)
    """Per call: the share of the packets received in the window that carry the answer."""
    not_ended: int = 0
    """Calls whose sideband was still open ``BYE_WAIT_S`` after the phone's BYE."""
    mic_late: int = 0

    @property
    def kept_up(self) -> bool:
        return super().kept_up and min(self.audio) >= 0.95


async def capacity_level(
    board: Switchboard,
    calls: int,
    args: argparse.Namespace,
    server_pid: int,
    server_cpu: int | None,
) -> SipLevel:
    level = SipLevel(calls)
    chars = int((args.settle + args.window + 6 + calls * 0.15) * 1000 / FAKE_TTS_MS_PER_CHAR)
    text = (LONG_SENTENCE * (chars // len(LONG_SENTENCE) + 1))[:chars]
    mic_late = board.mic_late
    started_connect = time.monotonic()
    outcomes = await asyncio.gather(
        *(board.dial(SERVER_VAD, decode=False) for _ in range(calls)), return_exceptions=True
    )
    level.connect_s = time.monotonic() - started_connect
    phones = [o for o in outcomes if isinstance(o, Phone)]
    level.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    try:
        if level.errors:
            return level
        for phone in phones:
            phone.drain_events()
            await phone.send(item_create(text))
            await phone.send({"type": "response.create"})

        if not await answers_started(phones, level):
            return level
        await asyncio.sleep(args.settle)
        for phone in phones:
            phone.drain_events()
            phone.arrivals.clear()
            phone.loud_packets = 0
            phone.recording = True
        t0, t1 = await measured_window(level, args.window, server_pid, server_cpu)
        for phone in phones:
            phone.recording = False
        level.mic_late = board.mic_late - mic_late
        per_call_p99: list[float] = []
        for phone in phones:
            level.audio.append(phone.loud_packets / max(1, len(phone.arrivals)))
            per_call_p99.append(tally_call(level, phone.arrivals, phone.events, t0, t1))
        level.worst_call_p99 = max(per_call_p99, default=float("nan"))
        return level
    finally:
        ended = await asyncio.gather(*(board.hangup(p) for p in phones), return_exceptions=True)
        level.not_ended = sum(1 for e in ended if e is not True)
        await asyncio.sleep(1.5)  # let the server release the calls


def capacity_table(levels: list[SipLevel]) -> str:
    lines = [
        "| calls | connect s | received, % of real time: min / p50 | answer audio in it, % "
        "min | gap p99 ms (all calls) | worst call's gap p99 | max gap ms | server CPU % | "
        "client CPU % | other processes on the server's CPU % | client loop lag p99 ms | "
        "calls not ended by BYE | kept up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        if lv.errors:
            lines.append(
                f"| {lv.calls} | {lv.connect_s:.1f} | failed: {lv.errors[0][:120]} "
                f"({len(lv.errors)} errors) |  |  |  |  |  |  |  |  | {lv.not_ended} | no |"
            )
            continue
        others = "n/a" if lv.others_cpu is None else f"{lv.others_cpu:.0f}"
        early = f" ({lv.ended_early} answers ended early)" if lv.ended_early else ""
        late = f" ({lv.mic_late} mic clock restarts)" if lv.mic_late else ""
        lines.append(
            f"| {lv.calls} | {lv.connect_s:.1f} | {min(lv.rates) * 100:.1f} / "
            f"{percentile(lv.rates, 50) * 100:.1f}{early} | {min(lv.audio) * 100:.1f} | "
            f"{fmt(percentile(lv.gaps, 99))} | {fmt(lv.worst_call_p99)} | "
            f"{fmt(max(lv.gaps, default=float('nan')))} | "
            f"{lv.server_cpu:.0f} (+{lv.children_cpu:.0f}) | {lv.client_cpu:.0f} | {others} | "
            f"{fmt(lv.loop_lag_p99)}{late} | {lv.not_ended} | "
            f"{'yes' if lv.kept_up else '**no**'} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


async def run(
    args: argparse.Namespace,
    server: Any,
    sip_port: int,
    hook_port: int,
    server_cpu: int | None,
    questions: list[Utterance],
) -> tuple[dict[str, list[Pair]], list[SipLevel]]:
    board = Switchboard(f"http://127.0.0.1:{server.port}", sip_port, hook_port)
    await board.start()
    results: dict[str, list[Pair]] = {}
    done: list[SipLevel] = []
    try:
        if args.turns > 0 or args.audio_turns > 0:
            results = await latency(board, args.turns, args.audio_turns, questions)
        for calls in args.level_list:
            level = await capacity_level(board, calls, args, server.pid, server_cpu)
            done.append(level)
            print(
                f"  {calls} calls: min rate {fmt(min(level.rates, default=float('nan')) * 100)}%, "
                f"min answer audio {fmt(min(level.audio, default=float('nan')) * 100)}%, "
                f"gap p99 {fmt(percentile(level.gaps, 99))} ms, server CPU "
                f"{level.server_cpu:.0f}%, client CPU {level.client_cpu:.0f}%, "
                f"not ended {level.not_ended}"
                + (f", errors {level.errors[:2]}" if level.errors else ""),
                file=sys.stderr,
            )
            if not level.kept_up and not args.keep_going:
                break
    finally:
        await board.stop()
    return results, done


def main() -> None:
    parser = call_bench_parser(__doc__, "1,10,20,30,40,60,80,120,160")
    parser.add_argument(
        "--echo-cancellation",
        choices=("on", "off"),
        help="the server's --echo-cancellation (its default: on; it runs on every call's input "
        "while an answer plays, which is most of a call's CPU in part 2)",
    )
    args = parser.parse_args()
    args.level_list = [int(x) for x in args.levels.split(",") if x.strip() and int(x) > 0]
    print_machine()
    server_cpu, client_cpu = (None, None) if args.no_pin else default_cpus()
    pin_self(client_cpu)
    questions = spoken_questions(args.audio_turns)
    sip_port, hook_port = free_port(), free_port()
    most = max(args.level_list, default=1)
    ports = f"40000-{max(40999, 40000 + 2 * most + 99)}"
    extra = [
        "--stt", "fake", "--llm", "fake", "--tts", "fake", "--turn", "none",
        "--api-key", API_KEY,
        "--sip-port", str(sip_port), "--sip-host", "127.0.0.1", "--sip-rtp-ports", ports,
        "--webhook-url", f"http://127.0.0.1:{hook_port}/hook", "--webhook-secret", SECRET,
    ]  # fmt: skip
    if args.echo_cancellation is not None:
        extra += ["--echo-cancellation", args.echo_cancellation]
    started = time.monotonic()
    with serve("silero", cpu=server_cpu, extra_args=extra) as server:
        command = " ".join(
            shlex.quote(Path(c).name if i == 0 else "whsec_…" if c == SECRET else c)
            for i, c in enumerate(server.command)
        )
        print(
            f"Server: `{command}` (CPU {server_cpu}); client: this process (CPU {client_cpu}): "
            f"openai {openai.__version__} SDK (WebSocket, webhook check, calls.accept, sideband), "
            "aiosipua UAC over UDP + aiortp PCMU for the phones."
        )
        print()
        try:
            results, done = asyncio.run(
                run(args, server, sip_port, hook_port, server_cpu, questions)
            )
        finally:
            if args.server_log is not None:
                args.server_log.write_text(server.log_path.read_text(errors="replace"))
    elapsed = time.monotonic() - started

    if results:
        print("### Latency: SIP vs WebSocket, same turn")
        print()
        print(latency_table(results))
        print()
        for name, pairs in results.items():
            p50 = percentile([p.diff_ms for p in pairs], 50)
            print(
                f"- {name}: SIP adds **{fmt(p50, 0)} ms at p50** over WebSocket "
                f"(goal < 40 ms: {'met' if p50 < 40 else 'missed'})."
            )
        print(
            "- Inherent to SIP: the server sends one 20 ms frame per 20 ms on its clock (an "
            "answer waits 0-20 ms for the next tick), 24 → 8 kHz resampling, G.711 (no delay); "
            "a real phone's playout buffer comes on top (not measured: the packet's arrival is)."
        )
        print(
            "- Per 20 ms fed in, the server's third-band resamplers (`audio/thirdband.py`) give "
            f"back (ms): 24 → 8 kHz {release_pattern(ThirdbandDownsampler())}; 8 → 24 kHz "
            f"{release_pattern(ThirdbandUpsampler())}; soxr's stream (`StreamResampler`, used "
            f"before) {release_pattern(StreamResampler(RATE, PHONE_RATE))} and "
            f"{release_pattern(StreamResampler(PHONE_RATE, RATE))}: it held audio for a block. "
            "The client's aiortp jitter buffer (`on_audio` above) hands a frame on only when the "
            "next packet arrives (+20 ms); the server's input uses its own in-order buffer."
        )
        print()
    if done:
        print_capacity(
            done,
            "### Capacity: concurrent SIP calls, each playing a long answer",
            "every call >= 95% of real time and >= 95% of it answer audio, gap p99 <= 100 ms",
            table=capacity_table(done),
        )
        not_ended = sum(lv.not_ended for lv in done)
        if not_ended:
            print(f"**{not_ended} calls did not end within {BYE_WAIT_S:g} s of the phone's BYE.**")
        print()
    print(f"Run: {elapsed:.0f} s.")


if __name__ == "__main__":
    main()
