"""The two speakerphone clients of ``bench/echo.py``: WebSocket (official SDK) and WebRTC (aiortc).

Both keep a virtual loudspeaker and a virtual microphone driven by the same 20 ms clock (a sound
card's full-duplex stream): each period the loudspeaker plays the next 20 ms of the assistant's
audio, the :class:`~_echo_audio.EchoPath` turns what it played into the echo the microphone
picks up (delay, the room's reflections, a gain), and the microphone sends that echo + the
user's speech (when the scenario says) + room noise. Not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from _echo_audio import (
    RATE,
    EchoPath,
    Looper,
    SampleQueue,
    Timeline,
    from_pcm16,
    to_pcm16,
)
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from webrtc import MIC_RATE, MicTrack, Peer, strip_candidates

CHUNK_MS = 20
CHUNK = RATE * CHUNK_MS // 1000
AUDIO_DELTA = b'"type":"response.output_audio.delta"'
LOUD_PEAK = 500
"""A decoded WebRTC frame whose peak is above this is the assistant's audio (espeak peaks
around 25,000; the server's silence decodes to ~0)."""


def item_create(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


def session_update(
    *,
    create_response: bool = False,
    interrupt_response: bool = True,
    noise_reduction: str | None = None,
    turn_detection: bool = True,
    transcription: bool = False,
    instructions: str | None = None,
) -> dict[str, Any]:
    audio_in: dict[str, Any] = {
        "turn_detection": (
            {
                "type": "server_vad",
                "create_response": create_response,
                "interrupt_response": interrupt_response,
            }
            if turn_detection
            else None
        ),
        "noise_reduction": None if noise_reduction is None else {"type": noise_reduction},
    }
    if transcription:
        audio_in["transcription"] = {"model": "whisper-1"}
    session: dict[str, Any] = {"type": "realtime", "audio": {"input": audio_in}}
    if instructions is not None:
        session["instructions"] = instructions
    return {"type": "session.update", "session": session}


@dataclass
class Answer:
    """One assistant answer as the speakerphone lived it."""

    t_start: float
    t_first_audio: float | None = None
    t_end: float = 0.0
    starts: list[float] = field(default_factory=list)
    """``speech_started`` received during the answer (the user was silent: self-interruptions)."""
    status: str = ""
    reason: str = ""
    played_s: float = 0.0
    """Seconds of the answer the loudspeaker played."""
    first_start_into_s: float | None = None
    """Seconds of the answer played when the first self-interruption came."""
    index: int = 0
    """Its place in the session (0: the first answer the canceller hears)."""
    after_drop: bool = False
    """WebRTC: the caller's loudspeaker dropped 20 ms (a step in the echo path's delay) in the
    2 s before the first false start."""
    cut: bool = False
    """The answer was cut off (WebSocket: at the first ``speech_started``; WebRTC: its playback
    was cleared, where a false interruption only pauses it and resumes)."""


# ----------------------------------------------------------------------------- WebSocket


class Speakerphone:
    """A WebSocket client with a loudspeaker and a microphone that hears it.

    Audio deltas are queued and played in real time from the first one on; on
    ``input_audio_buffer.speech_started`` the loudspeaker stops (queue flushed) and the playing
    item is truncated to what was heard, as the official clients do.
    """

    def __init__(
        self,
        conn: Any,
        *,
        gain_db: float | None,
        delay_ms: float,
        room: bool,
        noise: Looper,
        record: bool = False,
    ) -> None:
        self.conn = conn
        self.speaker = SampleQueue()
        self.path = EchoPath(RATE, delay_ms, gain_db, room)
        self.delay_ms = delay_ms
        self.noise = noise
        self.user = SampleQueue()
        self.user_pushed = 0
        self.user_sent = 0
        self.user_speaking_until = 0.0
        self._marks: list[tuple[int, str]] = []
        self.marks: dict[str, float] = {}
        self.events: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.starts: list[float] = []
        self.deltas: list[float] = []
        """Arrival time of every audio delta."""
        self.muted = False
        self.item_id: str | None = None
        self.content_index = 0
        self.item_played = 0
        self.played_total = 0
        self.last_played = 0.0
        """When the loudspeaker last played assistant audio."""
        self.active: set[str] = set()
        """Responses created and not done."""
        self.cancel_while_muted = False
        self.timeline = Timeline([], [], []) if record else None
        self.lag_ms: list[float] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._mic()),
            asyncio.create_task(self._reader()),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ user

    def say(self, samples: np.ndarray, marks: dict[str, int] | None = None) -> float:
        """Queue user speech; ``marks`` name sample offsets whose send time is recorded.
        Returns the speech's duration in seconds."""
        base = self.user_pushed
        for name, offset in (marks or {}).items():
            self.marks.pop(name, None)
            self._marks.append((base + offset, name))
        self.user.push(samples)
        self.user_pushed += len(samples)
        return len(samples) / RATE

    @property
    def user_busy(self) -> bool:
        return self.user.queued > 0

    def quiet(self, margin_s: float = 0.3) -> bool:
        """The loudspeaker is silent, its echo has died away and no response is running."""
        return (
            self.speaker.queued == 0
            and not self.path.pending
            and not self.active
            and time.monotonic() - self.last_played > margin_s + self.delay_ms / 1000
        )

    async def wait_quiet(self, margin_s: float = 0.3, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.quiet(margin_s) or self.user_busy:
            if time.monotonic() > deadline:
                raise TimeoutError("the loudspeaker did not go quiet")
            await asyncio.sleep(0.02)

    def stop_listening(self) -> None:
        """The user stops the assistant: loudspeaker off, item truncated, responses cancelled."""
        self.muted = True
        self._flush()
        for rid in list(self.active):
            self._send({"type": "response.cancel", "response_id": rid})

    # ------------------------------------------------------------------ internals

    def _send(self, event: dict[str, Any]) -> None:
        task = asyncio.create_task(self.conn.send(event))
        self._tasks.append(task)

    def _flush(self) -> None:
        self.speaker.clear()
        if self.item_id is not None and self.item_played > 0:
            self._send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": self.item_id,
                    "content_index": self.content_index,
                    "audio_end_ms": self.item_played * 1000 // RATE,
                }
            )
            if self.timeline is not None:
                self.timeline.drops.append(time.monotonic() * 1000)
        self.item_id = None
        self.item_played = 0

    async def _mic(self) -> None:
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            wait = t0 + k * CHUNK_MS / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                self.lag_ms.append(-wait * 1000)
            played, got = self.speaker.pop(CHUNK)
            if got:
                self.item_played += got
                self.played_total += got
                self.last_played = time.monotonic()
            echo = self.path.process(played)
            user, ugot = self.user.pop(CHUNK)
            before = self.user_sent
            self.user_sent += ugot
            mic = echo + user + self.noise.next(CHUNK)
            pcm = to_pcm16(mic)
            await self.conn.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
            )
            now = time.monotonic()
            if ugot:
                self.user_speaking_until = now + 0.1
            for pos, name in list(self._marks):
                if before <= pos < self.user_sent:
                    self.marks[name] = now
                    self._marks.remove((pos, name))
            if self.timeline is not None:
                half = CHUNK // 2
                energy = (float(np.mean(echo[:half] ** 2)), float(np.mean(echo[half:] ** 2)))
                self.timeline.mic.append((now * 1000, pcm, energy, ugot > 0))
            k += 1

    async def _reader(self) -> None:
        while True:
            raw = await self.conn.recv_bytes()
            now = time.monotonic()
            if AUDIO_DELTA in raw[:200]:
                event = json.loads(raw)
                pcm = base64.b64decode(event["delta"])
                self.deltas.append(now)
                if self.timeline is not None:
                    self.timeline.far.append((now * 1000, pcm))
                if not self.muted:
                    if event["item_id"] != self.item_id:
                        self.item_id = event["item_id"]
                        self.content_index = event.get("content_index", 0)
                        self.item_played = 0
                    self.speaker.push(from_pcm16(pcm))
                continue
            event = json.loads(raw)
            match event["type"]:
                case "input_audio_buffer.speech_started":
                    self.starts.append(now)
                    self._flush()
                    if self.timeline is not None:
                        self.timeline.drops.append(now * 1000)
                case "response.created":
                    rid = event["response"]["id"]
                    self.active.add(rid)
                    if self.muted and self.cancel_while_muted:
                        self._send({"type": "response.cancel", "response_id": rid})
                case "response.done":
                    self.active.discard(event["response"]["id"])
                case "error":
                    message = event["error"].get("message", "")
                    if "no active response" not in message.lower():
                        self.errors.append(f"{message} ({event['error'].get('event_id')})")
            self.events.put_nowait((now, event))

    async def next_event(self, timeout_s: float) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            return await self.events.get()

    async def wait_for(self, kind: str, timeout_s: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            t, event = await self.next_event(max(0.01, deadline - time.monotonic()))
            if event["type"] == kind:
                return t, event


async def ws_answer(phone: Speakerphone, text: str, timeout_s: float = 60.0) -> Answer:
    """Ask for one answer (text prompt), let it play with the user silent, count false starts."""
    phone.muted = False
    n_starts = len(phone.starts)
    played0 = phone.played_total
    answer = Answer(time.monotonic())
    phone._send(item_create(text))
    await asyncio.sleep(0.05)
    phone._send({"type": "response.create"})
    rid: str | None = None
    deadline = time.monotonic() + timeout_s
    while True:
        t, event = await phone.next_event(max(0.01, deadline - time.monotonic()))
        if event["type"] == "response.created":
            rid = rid or event["response"]["id"]
        elif event["type"] == "response.done" and event["response"]["id"] == rid:
            answer.status = event["response"]["status"]
            answer.reason = (event["response"].get("status_details") or {}).get("reason") or ""
            break
        elif event["type"] == "error":
            raise RuntimeError(f"error event: {event['error']}")
    await phone.wait_quiet(0.3, timeout_s)
    await asyncio.sleep(0.4)  # a late speech_started from the echo's tail still counts
    answer.t_end = time.monotonic()
    answer.t_first_audio = next((d for d in phone.deltas if d >= answer.t_start), None)
    answer.starts = phone.starts[n_starts:]
    answer.played_s = (phone.played_total - played0) / RATE
    answer.cut = bool(answer.starts)
    if answer.starts and answer.t_first_audio is not None:
        answer.first_start_into_s = answer.starts[0] - answer.t_first_audio
    return answer


# ----------------------------------------------------------------------------- WebRTC


class EchoMic(MicTrack):
    """``bench/webrtc.py``'s microphone (user speech via ``say``, real-time 48 kHz frames) plus
    the echo of what the call's remote track played, and room noise."""

    def __init__(self, *, gain_db: float | None, delay_ms: float, room: bool, noise: Looper):
        super().__init__()
        self.speaker = SampleQueue()
        self.path = EchoPath(MIC_RATE, delay_ms, gain_db, room)
        self.noise = noise
        self.delay_ms = delay_ms
        self.underruns = 0
        self.drops = 0
        self.drop_times: list[float] = []
        self.lag_ms: list[float] = []
        """How late each frame was handed to the encoder (beyond 1 ms), ms."""

    def hear(self, samples: np.ndarray) -> None:
        """A decoded frame of the remote track, played by the loudspeaker as it comes."""
        self.speaker.push(samples)
        if self.speaker.queued > MIC_RATE * 80 // 1000:  # more than 4 frames behind: catch up
            self.drops += 1
            self.drop_times.append(time.monotonic())
            self.speaker.drop(MIC_RATE * 20 // 1000)

    async def recv(self) -> Any:
        frame = await super().recv()
        if self._start is not None:
            late = time.monotonic() - (self._start + self._pts / MIC_RATE)
            if late > 0.001:
                self.lag_ms.append(late * 1000)
        n = frame.samples
        user = frame.to_ndarray().reshape(-1).astype(np.float64)
        played, got = self.speaker.pop(n)
        if got < n:
            self.underruns += 1
        mic = user + self.path.process(played) + self.noise.next(n)
        frame.planes[0].update(to_pcm16(mic))
        return frame


@dataclass
class Caller:
    """One WebRTC call: ``bench/webrtc.py``'s :class:`Peer` with an :class:`EchoMic`."""

    peer: Peer
    mic: EchoMic
    frames: list[tuple[float, int]] = field(default_factory=list)
    """(arrival, peak) of every decoded frame of the server's track (while ``recording``)."""
    recording: bool = True
    last_loud: float = 0.0
    starts: list[float] = field(default_factory=list)

    async def read_frames(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            arr = frame.to_ndarray().astype(np.float64)
            channels = len(frame.layout.channels)
            mono = arr.reshape(-1, channels).mean(axis=1) if channels > 1 else arr.reshape(-1)
            if frame.sample_rate != MIC_RATE:
                raise RuntimeError(f"unexpected remote rate {frame.sample_rate}")
            self.mic.hear(mono)
            peak = int(np.abs(mono).max()) if len(mono) else 0
            if peak > LOUD_PEAK:
                self.last_loud = now
            if self.recording:
                self.frames.append((now, peak))

    def quiet(self, margin_s: float = 0.3) -> bool:
        return time.monotonic() - self.last_loud > margin_s + self.mic.delay_ms / 1000

    async def wait_quiet(self, margin_s: float = 0.3, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.quiet(margin_s) or self.mic._pending:
            if time.monotonic() > deadline:
                raise TimeoutError("the call did not go quiet")
            await asyncio.sleep(0.02)

    async def next_event(self, timeout_s: float) -> tuple[float, dict[str, Any]]:
        t, event = await self.peer.next_event(timeout_s)
        if event["type"] == "input_audio_buffer.speech_started":
            self.starts.append(t)
        return t, event

    async def wait_for(self, kind: str, timeout_s: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            t, event = await self.next_event(max(0.01, deadline - time.monotonic()))
            if event["type"] == kind:
                return t, event

    async def pump(self, seconds: float) -> None:
        """Read (and note) events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await self.next_event(left)
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.peer.close()


async def open_echo_call(
    base: str,
    session: dict[str, Any],
    mic: EchoMic,
    http: httpx.AsyncClient,
    api_key: str,
    wait_s: float = 15.0,
) -> Caller:
    """``bench/webrtc.py``'s ``open_call`` with an :class:`EchoMic` and a frame reader that feeds
    the loudspeaker: data channel open, ``session.created`` read."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(mic)
    peer = Peer(pc, mic, True)
    peer.hook_receiver()
    caller = Caller(peer, mic)
    peer.channel = channel = pc.createDataChannel("oai-events")

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        peer.tasks.append(asyncio.create_task(caller.read_frames(track)))

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
            headers={"Authorization": f"Bearer {api_key}"},
        )
        if response.status_code != 201:
            raise RuntimeError(f"call refused: {response.status_code} {response.text}")
        peer.call_id = response.headers["location"].rsplit("/", 1)[-1]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        async with asyncio.timeout(wait_s):
            await opened.wait()
        _, created = await peer.next_event(wait_s)
        if created["type"] != "session.created":
            raise RuntimeError(f"first event: {created}")
    except BaseException:
        await peer.close()
        raise
    return caller


async def rtc_answer(caller: Caller, text: str, timeout_s: float = 60.0) -> Answer:
    """One answer over WebRTC with the user silent; false starts counted."""
    n_starts = len(caller.starts)
    answer = Answer(time.monotonic())
    caller.frames.clear()
    caller.peer.send(item_create(text))
    await asyncio.sleep(0.05)
    caller.peer.send({"type": "response.create"})
    rid: str | None = None
    done = stopped = False
    deadline = time.monotonic() + timeout_s
    while not (done and stopped):
        t, event = await caller.next_event(max(0.01, deadline - time.monotonic()))
        match event["type"]:
            case "response.created":
                rid = rid or event["response"]["id"]
            case "response.done" if event["response"]["id"] == rid:
                answer.status = event["response"]["status"]
                answer.reason = (event["response"].get("status_details") or {}).get("reason") or ""
                done = True
            case "output_audio_buffer.stopped":
                stopped = True
            case "output_audio_buffer.cleared":
                stopped = answer.cut = True
            case "error":
                raise RuntimeError(f"error event: {event['error']}")
    while not caller.quiet(0.3):
        await caller.pump(0.05)
    await caller.pump(0.4)
    answer.t_end = time.monotonic()
    loud = [t for t, peak in caller.frames if peak > LOUD_PEAK and t >= answer.t_start]
    answer.t_first_audio = loud[0] if loud else None
    answer.played_s = (loud[-1] - loud[0]) if loud else 0.0
    answer.starts = caller.starts[n_starts:]
    if answer.starts and answer.t_first_audio is not None:
        answer.first_start_into_s = answer.starts[0] - answer.t_first_audio
    if answer.starts:
        first = answer.starts[0]
        answer.after_drop = any(first - 2.0 <= t <= first for t in caller.mic.drop_times)
    return answer
