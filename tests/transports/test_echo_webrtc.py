"""A speakerphone over a real WebRTC call: the server does not take its own voice for the user.

The WebRTC twin of ``tests/e2e/test_echo.py``. The caller is aiortc (as in ``test_webrtc.py``)
with a simulated loudspeaker and microphone sharing the microphone track's 20 ms clock: every
frame received on the server's track (Opus-decoded, 48 kHz, brought to the microphone's 24 kHz
with the server's own halfband filter) is played by the loudspeaker as it comes, and every
20 ms the microphone sends the echo of what the loudspeaker played 120 ms earlier at −12 dB
through a short room response ([0.6, 0.25, 0.1, 0.05]), plus quiet room noise (−60 dBFS), plus
the user's speech (flite) when a test says so. Over WebRTC the server owns playback: no audio
deltas, the data channel says ``output_audio_buffer.started``/``stopped``/``cleared``, and the
far end of its echo canceller is every frame its track actually sent.

Engines: the real Silero VAD, espeak-ng speaking a fixed reply of four sentences (about 8 s),
the fake STT; the server's echo canceller is on (the default), and the same call against a
server with ``echo_cancellation=False`` shows what the first test catches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from openrealtime.app import create_app
from openrealtime.audio.halfband import HalfbandDownsampler
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText
from openrealtime.backends.tts_espeak import EspeakTextToSpeech
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.config import Config
from openrealtime.transports.webrtc import call_registry
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server
from tests.transports.test_webrtc import (
    API_KEY,
    RATE,
    PcmTrack,
    flite,
    post_offer,
    strip_candidates,
)

FRAME = RATE // 50
"""Samples in one 20 ms microphone frame (24 kHz)."""
ROOM = np.array([0.6, 0.25, 0.1, 0.05])
ECHO_DB = -12.0
DELAY_MS = 120
NOISE_DBFS = -60.0
LOUD = 0.05
"""A frame peaking above this (full scale 1) carries speech: the user's or the loudspeaker's."""
ANSWER = (
    "Here is the forecast for the week. Monday and Tuesday stay sunny and warm, with a light "
    "breeze. Clouds come in on Wednesday. The weekend looks bright again."
)
SESSION = {
    "type": "realtime",
    "audio": {
        "input": {
            "turn_detection": {
                "type": "server_vad",
                "create_response": True,
                "interrupt_response": True,
            }
        }
    },
}


class SpeakerphoneMic(PcmTrack):
    """``PcmTrack`` (the user's speech via ``say``, real-time 24 kHz frames) plus the echo of
    what the loudspeaker played (:meth:`hear`) and room noise."""

    def __init__(self, *, echo_db: float = ECHO_DB, delay_ms: int = DELAY_MS) -> None:
        super().__init__()
        self.gain = 10 ** (echo_db / 20)
        self.lag = RATE * delay_ms // 1000
        self._speaker = np.zeros(0)
        """Received audio the loudspeaker has not played yet."""
        self._history = np.zeros(self.lag + FRAME + len(ROOM) - 1)
        """What the loudspeaker played, the last ``lag`` + one frame (+ the room's memory)."""
        self._down = HalfbandDownsampler()
        self._rng = np.random.default_rng(7)
        self.dropped = 0
        """Frames of received audio skipped to catch up (the remote track ran ahead)."""
        self.underruns = 0
        self.loud_played: list[float] = []
        """When the loudspeaker played a frame of speech (monotonic seconds)."""
        self.user_loud: list[float] = []
        """When the microphone sent a frame carrying the user's speech (monotonic seconds)."""
        self.errors: list[BaseException] = []

    def hear(self, frame: AudioFrame) -> None:
        """A decoded frame of the server's track: the loudspeaker plays it from now on."""
        assert frame.sample_rate == 48000, frame.sample_rate
        stereo = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
        mono48 = stereo.mean(axis=1).astype("<i2").tobytes()
        mono = np.frombuffer(self._down.process(mono48), "<i2") / 32768
        self._speaker = np.concatenate([self._speaker, mono])
        while len(self._speaker) > 5 * FRAME:  # more than 100 ms behind: catch up
            self._speaker = self._speaker[FRAME:]
            self.dropped += 1

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        try:
            now = time.monotonic()
            user = frame.to_ndarray().reshape(-1) / 32768
            played = self._speaker[:FRAME]
            self._speaker = self._speaker[FRAME:]
            if len(played) < FRAME:
                self.underruns += 1
                played = np.concatenate([played, np.zeros(FRAME - len(played))])
            if np.abs(played).max() > LOUD:
                self.loud_played.append(now)
            self._history = np.concatenate([self._history[FRAME:], played])
            heard = self._history[: len(self._history) - self.lag]  # 120 ms ago, + room memory
            mic = self.gain * np.convolve(heard, ROOM, mode="valid")
            mic += self._rng.normal(0, 10 ** (NOISE_DBFS / 20), FRAME)
            if np.abs(user).max() > LOUD:
                self.user_loud.append(now)
            mic += user
            frame.planes[0].update((np.clip(mic, -1, 1) * 32767).astype("<i2").tobytes())
        except BaseException as exc:  # the sender would swallow it and stop sending
            self.errors.append(exc)
            raise
        return frame


@dataclass
class EchoCall:
    """One call: its peer connection, the speakerphone, every event with its arrival time."""

    pc: RTCPeerConnection
    mic: SpeakerphoneMic
    send: Callable[[dict[str, Any]], None]
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def since(self, mark: int, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events[mark:] if e["type"] == kind]

    async def wait_for(
        self, kind: str, after: int = 0, wait_s: float = 30, response_id: str | None = None
    ) -> tuple[float, dict[str, Any]]:
        """The first ``kind`` event from index ``after`` on (of ``response_id``, if given)."""
        async with asyncio.timeout(wait_s):
            while True:
                for t, event in self.events[after:]:
                    if event["type"] == kind and (
                        response_id is None
                        or response_id
                        in (event.get("response_id"), event.get("response", {}).get("id"))
                    ):
                        return t, event
                await asyncio.sleep(0.02)


async def _play(track: MediaStreamTrack, mic: SpeakerphoneMic) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        try:
            assert isinstance(frame, AudioFrame)
            mic.hear(frame)
        except Exception as exc:  # a dead loudspeaker would only show as a missing echo
            mic.errors.append(exc)
            raise


@contextlib.asynccontextmanager
async def speakerphone_call(base: str, mic: SpeakerphoneMic) -> AsyncIterator[EchoCall]:
    """``test_webrtc.call`` with the speakerphone: data channel open, ``session.created`` read."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(mic, direction="sendrecv")
    channel = pc.createDataChannel("oai-events")
    echo = EchoCall(pc, mic, lambda event: channel.send(json.dumps(event)))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        echo.tasks.append(asyncio.create_task(_play(track, mic)))

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        assert isinstance(message, str)
        event = json.loads(message)
        SERVER_EVENT.validate_python(event)
        echo.events.append((time.monotonic(), event))

    opened = asyncio.Event()
    channel.on("open", opened.set)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer, _ = await post_offer(
            base, strip_candidates(pc.localDescription.sdp), session=SESSION
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(10):
            await opened.wait()
        await echo.wait_for("session.created", wait_s=10)
        yield echo
        assert not mic.errors, mic.errors
    finally:
        for task in echo.tasks:
            task.cancel()
        await asyncio.gather(*echo.tasks, return_exceptions=True)
        await pc.close()


@pytest.fixture(scope="module")
def silero() -> SileroVad:
    return SileroVad.from_cache()


@contextlib.asynccontextmanager
async def echo_server(silero: SileroVad, *, echo_cancellation: bool) -> AsyncIterator[str]:
    """A server on Silero, the fake STT, a fixed long reply and espeak-ng; yields its base."""
    engines = Engines(
        vad=silero,
        stt=FakeSpeechToText(),
        llm=FakeLanguageModel(reply=ANSWER),
        tts=EspeakTextToSpeech(),
    )
    config = Config(api_keys=(API_KEY,), echo_cancellation=echo_cancellation)
    app = create_app(config, engines)
    async with running_server(app) as base:
        yield base
    assert len(call_registry(app)) == 0, "calls left running after shutdown"


@dataclass
class Answer:
    response: dict[str, Any]
    """Its ``response.done`` response."""
    end: str
    """``output_audio_buffer.stopped`` (played out) or ``…cleared``."""
    started: list[float]
    """Arrival times of every ``speech_started`` from the request to the end of the echo."""


def ask(call: EchoCall) -> int:
    """Request an answer (a text item and ``response.create``); returns the event mark."""
    mark = len(call.events)
    call.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What is the weather this week?"}],
            },
        }
    )
    call.send({"type": "response.create"})
    return mark


async def answer(call: EchoCall) -> Answer:
    """Ask for an answer and let it play out, with the echo of its last words."""
    mark = ask(call)
    _, created = await call.wait_for("response.created", after=mark)
    rid = created["response"]["id"]
    _, done = await call.wait_for("response.done", after=mark, response_id=rid)
    ends = ("output_audio_buffer.stopped", "output_audio_buffer.cleared")
    async with asyncio.timeout(30):
        while not (end := [e for _, e in call.events[mark:] if e["type"] in ends]):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    # The echo of the last words (120 ms late, behind the caller's jitter buffer) and the VAD's
    # reaction to it.
    await asyncio.sleep(0.8)
    started = [t for t, _ in call.since(mark, "input_audio_buffer.speech_started")]
    return Answer(done["response"], end[0]["type"], started)


async def test_a_speakerphone_call_does_not_interrupt_its_own_answers(
    silero: SileroVad,
) -> None:
    mic = SpeakerphoneMic()
    async with (
        echo_server(silero, echo_cancellation=True) as base,
        speakerphone_call(base, mic) as call,
    ):
        for _ in range(3):
            got = await answer(call)
            assert got.response["status"] == "completed", got.response["status_details"]
            assert got.end == "output_audio_buffer.stopped"  # played fully, never cleared
            assert got.started == [], "the server took its own voice for the user"
        assert not call.since(0, "input_audio_buffer.speech_started")
        assert not mic.user_loud
        assert len(mic.loud_played) > 3 * 5 / 0.02  # three answers of 5 s or more were heard


async def test_without_the_canceller_the_same_call_interrupts_itself(
    silero: SileroVad,
) -> None:
    """What the test above would catch: the echo alone starts a user turn.

    At −12 dB, through Opus and both jitter buffers, it does so within about half a second of
    the answer's first audio (so the first test needs no louder echo to be able to fail).
    """
    mic = SpeakerphoneMic()
    async with (
        echo_server(silero, echo_cancellation=False) as base,
        speakerphone_call(base, mic) as call,
    ):
        mark = ask(call)
        await call.wait_for("output_audio_buffer.started", after=mark)
        await call.wait_for("input_audio_buffer.speech_started", after=mark, wait_s=15)
        assert mic.loud_played and not mic.user_loud


async def test_the_caller_still_interrupts_the_answer_on_a_speakerphone(
    silero: SileroVad, tmp_path: Path
) -> None:
    """A real barge-in, after one full answer (the canceller has learned the room).

    A server that resumes false interruptions may pause the answer at the onset and cancel
    only once the speech proves long enough: the cut is waited for, not expected at once.
    """
    speech = flite("Stop. What time is it?", tmp_path)
    mic = SpeakerphoneMic()
    async with (
        echo_server(silero, echo_cancellation=True) as base,
        speakerphone_call(base, mic) as call,
    ):
        first = await answer(call)
        assert first.end == "output_audio_buffer.stopped" and not first.started
        mark = ask(call)
        _, started = await call.wait_for("output_audio_buffer.started", after=mark)
        rid = started["response_id"]
        await asyncio.sleep(2.0)  # two seconds into the answer, the caller talks over it
        assert not call.since(mark, "input_audio_buffer.speech_started")
        mic.say(speech)
        heard_at, _ = await call.wait_for(
            "input_audio_buffer.speech_started", after=mark, wait_s=10
        )
        assert mic.user_loud, "the user's speech was never sent"
        onset = mic.user_loud[0]
        # Onset (the first microphone frame with the caller's voice) to speech_started on the
        # data channel: Opus both ways, the server's jitter buffer, the canceller, the VAD.
        assert heard_at - onset < 0.5, (heard_at - onset, heard_at, onset)
        _, truncated = await call.wait_for("conversation.item.truncated", after=mark, wait_s=10)
        _, cleared = await call.wait_for("output_audio_buffer.cleared", after=mark, wait_s=1)
        assert cleared["response_id"] == rid
        assert not call.since(mark, "output_audio_buffer.stopped")
        # Heard: two seconds and the VAD's reaction (or the pause before the cut), not the rest.
        assert 2000 <= truncated["audio_end_ms"] <= 4500, truncated
        # The caller's words are the next turn, answered in turn.
        stopped_at, _ = await call.wait_for(
            "input_audio_buffer.speech_stopped", after=mark, wait_s=10
        )
        after = next(i for i, (t, _) in enumerate(call.events) if t >= stopped_at)
        await call.wait_for("response.created", after=after, wait_s=10)
