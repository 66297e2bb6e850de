"""WebRTC calls against a real server, with aiortc as the caller (spec §1.3, §1.4, §5.7).

Every test starts the real app on a loopback port (``tests/helpers/server.py``) with the real
Silero VAD and the deterministic fake STT/LLM/TTS, and calls it the way a browser does: an
``RTCPeerConnection`` with a microphone track and the ``oai-events`` data channel, its offer
posted (without ICE candidates, like agents-js) to ``POST /v1/realtime/calls``. Every event
received on the data channel (or a sideband) is validated with the official SDK's models.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import websockets
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from av import AudioFrame

from openrealtime.app import create_app
from openrealtime.audio.halfband import DELAY_24K
from openrealtime.audio.resample import resample
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.config import Config
from openrealtime.runtime.playback import PlaybackBuffer
from openrealtime.transports import webrtc
from openrealtime.transports.webrtc import CallRegistry, call_registry
from openrealtime.transports.webrtc_media import (
    AudioJitterBuffer,
    CallMedia,
    PlaybackTrack,
    use_audio_jitter_buffer,
)
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server, ws_url

API_KEY = "sk-webrtc-test-0123456789abcdef"
RATE = 24_000
WAIT_S = 10.0


# --------------------------------------------------------------------------- caller side


class PcmTrack(MediaStreamTrack):
    """A microphone: plays queued PCM16 mono 24 kHz audio in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._start: float | None = None
        self._pts = 0

    def say(self, pcm16: bytes) -> None:
        self._pending += pcm16

    @property
    def idle(self) -> bool:
        return not self._pending

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = RATE // 50
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += samples
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        nbytes = samples * 2
        chunk = bytes(self._pending[:nbytes]).ljust(nbytes, b"\0")
        del self._pending[:nbytes]
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(chunk)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


def strip_candidates(sdp: str) -> str:
    """What agents-js posts: the createOffer() SDP, with no ICE candidates at all."""
    lines = [
        line
        for line in sdp.splitlines()
        if not line.startswith("a=candidate:") and line != "a=end-of-candidates"
    ]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Caller:
    """One aiortc peer connected to the server, with its data channel and received audio."""

    pc: RTCPeerConnection
    channel: RTCDataChannel
    mic: PcmTrack
    call_id: str
    answer: str
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    received: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    """Audio received on the server's track, mixed to PCM16 mono 48 kHz."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def recv(self, wait_s: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(wait_s):
            event = await self.events.get()
        self.received.append(event)
        return event

    async def collect_until(self, kind: str, wait_s: float = WAIT_S) -> list[dict[str, Any]]:
        """Events up to and including the first ``kind``; an ``error`` fails the test."""
        out: list[dict[str, Any]] = []
        while True:
            try:
                event = await self.recv(wait_s)
            except TimeoutError:
                raise AssertionError(f"no {kind}; got {[e['type'] for e in out]}") from None
            out.append(event)
            if event["type"] == kind:
                return out
            assert event["type"] != "error" or kind == "error", event

    async def wait_for(self, kind: str, wait_s: float = WAIT_S) -> dict[str, Any]:
        return (await self.collect_until(kind, wait_s))[-1]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()


async def _read_track(track: MediaStreamTrack, into: bytearray) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, AudioFrame)
        data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
        into += data.mean(axis=1).astype("<i2").tobytes()


async def post_offer(
    base: str,
    sdp: str,
    *,
    key: str | None = API_KEY,
    session: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Post an offer: raw ``application/sdp`` with httpx, or multipart through the openai SDK.

    Returns ``(answer_sdp, call_id)``.
    """
    if session is None:
        headers = {"Content-Type": "application/sdp"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{base}/v1/realtime/calls", content=sdp, headers=headers)
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith("application/sdp")
        location = response.headers["location"]
        answer = response.text
    else:
        api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key)
        try:
            raw = await api.realtime.calls.with_raw_response.create(sdp=sdp, session=session)  # type: ignore[arg-type]
            assert raw.status_code == 201
            location = raw.headers["location"]
            answer = raw.content.decode()
        finally:
            await api.close()
    assert location.startswith("/v1/realtime/calls/rtc_"), location
    return answer, location.rsplit("/", 1)[-1]


@contextlib.asynccontextmanager
async def call(
    base: str,
    *,
    session: dict[str, Any] | None = None,
    keep_candidates: bool = False,
    read_created: bool = True,
    direction: str = "sendrecv",
) -> AsyncIterator[Caller]:
    """A connected caller (data channel open, ``session.created`` read); closed on exit."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = PcmTrack()
    pc.addTransceiver(mic, direction=direction)
    channel = pc.createDataChannel("oai-events")
    audio = bytearray()
    tasks: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.create_task(_read_track(track, audio)))

    opened = asyncio.Event()
    channel.on("open", opened.set)
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    answer, call_id = await post_offer(
        base, offer if keep_candidates else strip_candidates(offer), session=session
    )
    caller = Caller(pc, channel, mic, call_id, answer, audio=audio, tasks=tasks)

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        assert isinstance(message, str)
        event = json.loads(message)
        SERVER_EVENT.validate_python(event)
        caller.events.put_nowait(event)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    try:
        async with asyncio.timeout(WAIT_S):
            await opened.wait()
        if read_created:
            created = await caller.recv()
            assert created["type"] == "session.created", created
        yield caller
    finally:
        await caller.close()


# --------------------------------------------------------------------------- server side


@pytest.fixture(scope="module")
def silero() -> SileroVad:
    return SileroVad.from_cache()


@dataclass
class Server:
    base: str
    app: Any
    llm: FakeLanguageModel
    tts: FakeTextToSpeech

    @property
    def calls(self) -> CallRegistry:
        return call_registry(self.app)


@pytest.fixture
async def server(silero: SileroVad) -> AsyncIterator[Server]:
    llm, tts = FakeLanguageModel(), FakeTextToSpeech()
    engines = Engines(vad=silero, stt=FakeSpeechToText(), llm=llm, tts=tts)
    app = create_app(Config(api_keys=(API_KEY,)), engines)
    async with running_server(app) as base:
        yield Server(base, app, llm, tts)
    assert len(call_registry(app)) == 0, "calls left running after shutdown"


async def until(condition: Callable[[], bool], wait_s: float = WAIT_S) -> None:
    """Poll ``condition`` (state of another process-side object) until true."""
    async with asyncio.timeout(wait_s):
        while not condition():  # noqa: ASYNC110 - the state lives in the server's objects
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- tests


async def test_raw_sdp_offer_without_candidates_connects(server: Server) -> None:
    """Spec §1.3: 201, application/sdp answer with candidates and a=msid; events flow."""
    async with call(server.base) as caller:
        answer = caller.answer
        assert "a=candidate:" in answer
        assert "a=msid:" in answer
        assert "a=setup:active" in answer
        assert "opus/48000/2" in answer
        created = caller.received[0]
        assert created["session"]["type"] == "realtime"
        caller.send(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
        )
        updated = await caller.wait_for("session.updated")
        assert updated["session"]["instructions"] == "x"
        assert server.calls.get(caller.call_id) is not None


def rms(pcm16: bytes) -> float:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    return float(np.sqrt((samples**2).mean())) if samples.size else 0.0


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


NO_VAD = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}


async def test_multipart_offer_through_the_sdk_sets_the_session(server: Server) -> None:
    """openai-python ``realtime.calls.create(sdp, session=…)``: multipart, config = defaults."""
    session = {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Be brief.",
        "audio": {"output": {"voice": "ash"}},
    }
    async with call(server.base, session=session) as caller:
        created = caller.received[0]["session"]
        assert created["instructions"] == "Be brief."
        assert created["audio"]["output"]["voice"] == "ash"
        assert created["model"] == "gpt-realtime"


async def test_offer_with_candidates_also_works(server: Server) -> None:
    async with call(server.base, keep_candidates=True) as caller:
        caller.send({"type": "input_audio_buffer.clear"})
        await caller.wait_for("input_audio_buffer.cleared")


async def test_audio_out_plays_on_the_track_with_output_buffer_events(server: Server) -> None:
    """Spec §1.3, §5.2: no audio deltas on the channel; started/stopped frame the playback."""
    async with call(server.base, session=NO_VAD) as caller:
        caller.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello there"}],
                },
            }
        )
        caller.send({"type": "response.create"})
        events = await caller.collect_until("output_audio_buffer.started")
        played_from = time.monotonic()
        events += await caller.collect_until("output_audio_buffer.stopped")
        played_s = time.monotonic() - played_from
        kinds = [e["type"] for e in events]
        assert "response.output_audio.delta" not in kinds
        response_id = of_type(events, "response.created")[0]["response"]["id"]
        (started,) = of_type(events, "output_audio_buffer.started")
        (stopped,) = of_type(events, "output_audio_buffer.stopped")
        assert started["response_id"] == stopped["response_id"] == response_id
        assert kinds.index("response.content_part.added") < kinds.index(
            "output_audio_buffer.started"
        )
        assert kinds.index("response.done") < kinds.index("output_audio_buffer.stopped")
        transcript = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
        assert transcript == "You said: hello there"
        # The fake TTS speaks 60 ms per character, played in real time (paced, not a burst).
        expected_s = len(transcript) * 60 / 1000
        assert expected_s - 0.15 <= played_s <= expected_s + 0.5, (played_s, expected_s)
        await asyncio.sleep(0.4)  # what is still in the caller's jitter buffer
        assert rms(bytes(caller.audio)) > 500, "the received audio is silent"
        assert len(caller.audio) / 96 >= expected_s * 1000  # 48 kHz mono: 96 bytes per ms


async def test_a_caller_that_takes_no_audio_still_gets_paced_buffer_events(
    server: Server,
) -> None:
    """A ``sendonly`` offer: nothing is sent to the caller, but the output buffer still plays
    in real time (into nowhere), so started/stopped keep their meaning."""
    async with call(server.base, session=NO_VAD, direction="sendonly") as caller:
        assert "a=recvonly" in caller.answer
        caller.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello there"}],
                },
            }
        )
        caller.send({"type": "response.create"})
        await caller.wait_for("output_audio_buffer.started")
        played_from = time.monotonic()
        await caller.wait_for("output_audio_buffer.stopped")
        played_s = time.monotonic() - played_from
        expected_s = len("You said: hello there") * 60 / 1000
        assert expected_s - 0.15 <= played_s <= expected_s + 0.5, (played_s, expected_s)
        assert caller.audio == bytearray()


def flite(text: str, tmp: Path) -> bytes:
    """Real speech (Debian's flite, voice rms) as PCM16 mono 24 kHz."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    path = tmp / "speech.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    return resample(raw, rate, RATE)


async def test_audio_in_is_heard_transcribed_and_answered(server: Server, tmp_path: Path) -> None:
    """The caller's microphone track feeds the session as if appended (spec §1.3)."""
    speech = flite("What is the capital of France?", tmp_path)
    session = {
        "type": "realtime",
        "audio": {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
    }
    async with call(server.base, session=session) as caller:
        caller.mic.say(bytes(RATE // 2 * 2) + speech)
        events = await caller.collect_until("output_audio_buffer.stopped", wait_s=15)
        (started,) = of_type(events, "input_audio_buffer.speech_started")
        (stopped,) = of_type(events, "input_audio_buffer.speech_stopped")
        assert started["item_id"] == stopped["item_id"]
        assert 200 <= started["audio_start_ms"] <= 1000, started
        (completed,) = of_type(events, "conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == started["item_id"]
        assert completed["transcript"].startswith("I spoke for ")
        speech_s = len(speech) / 2 / RATE
        spoken = float(completed["transcript"].split()[3])
        assert speech_s - 0.6 <= spoken <= speech_s + 1.2, (spoken, speech_s)
        assert of_type(events, "response.done")[0]["response"]["status"] == "completed"


async def test_barge_in_truncates_at_the_played_position(server: Server, tmp_path: Path) -> None:
    """Spec §5.7: the server cuts its audio and truncates the item at what was heard."""
    server.llm.reply = "This is a long answer that keeps on going for quite a few seconds more."
    speech = flite("Stop please.", tmp_path)
    async with call(server.base) as caller:
        caller.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "talk"}],
                },
            }
        )
        caller.send({"type": "response.create"})
        started = await caller.wait_for("output_audio_buffer.started")
        response_id = started["response_id"]
        await asyncio.sleep(1.0)  # let the caller hear a second of it
        caller.mic.say(speech)
        events = await caller.collect_until("conversation.item.truncated", wait_s=15)
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        (cleared,) = of_type(events, "output_audio_buffer.cleared")
        assert cleared["response_id"] == response_id
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
            "output_audio_buffer.cleared"
        )
        assert "output_audio_buffer.stopped" not in kinds
        truncated = events[-1]
        full_ms = len(server.llm.reply) * 60
        # Heard: about one second plus the VAD's reaction time (real speech through Opus).
        assert 900 <= truncated["audio_end_ms"] <= 3000 < full_ms, truncated
        caller.send({"type": "conversation.item.retrieve", "item_id": truncated["item_id"]})
        item = (await caller.wait_for("conversation.item.retrieved"))["item"]
        transcript = item["content"][0]["transcript"]
        assert transcript and server.llm.reply.startswith(transcript)
        assert len(transcript) < len(server.llm.reply)


async def test_output_audio_buffer_clear_cuts_the_audio(server: Server) -> None:
    """Spec §5.7 manual cut-off (agents-js interrupt()): cancel, clear, cleared, truncated."""
    server.llm.reply = "A fairly long reply so that the audio is still playing when we clear it."
    async with call(server.base, session=NO_VAD) as caller:
        caller.send({"type": "response.create"})
        started = await caller.wait_for("output_audio_buffer.started")
        await asyncio.sleep(0.5)
        caller.send({"type": "output_audio_buffer.clear"})
        events = await caller.collect_until("conversation.item.truncated")
        (cleared,) = of_type(events, "output_audio_buffer.cleared")
        assert cleared["response_id"] == started["response_id"]
        assert 400 <= events[-1]["audio_end_ms"] <= 1500, events[-1]
        # The audio stops: the next second is (nearly) silent.
        heard = len(caller.audio)
        await asyncio.sleep(0.6)
        tail = bytes(caller.audio[heard + 96 * 200 :])  # skip the jitter buffer's 200 ms
        assert rms(tail) < 100, rms(tail)


async def test_hangup_ends_the_call(server: Server) -> None:
    async with call(server.base) as caller:
        closed = asyncio.Event()
        caller.channel.on("close", closed.set)
        async with httpx.AsyncClient(base_url=server.base) as http:
            path = f"/v1/realtime/calls/{caller.call_id}/hangup"
            denied = await http.post(path)
            assert denied.status_code == 401
            response = await http.post(path, headers={"Authorization": f"Bearer {API_KEY}"})
            assert response.status_code == 200
            assert response.content == b""
            assert server.calls.get(caller.call_id) is None
            async with asyncio.timeout(WAIT_S):
                await closed.wait()
            again = await http.post(path, headers={"Authorization": f"Bearer {API_KEY}"})
            assert again.status_code == 404
            assert again.json()["error"]["code"] == "call_not_found"


async def test_closing_the_peer_connection_ends_the_call(server: Server) -> None:
    async with call(server.base) as caller:
        call_id = caller.call_id
        await caller.pc.close()
        await until(lambda: server.calls.get(call_id) is None)


async def test_session_close_ends_the_call(server: Server) -> None:
    async with call(server.base) as caller:
        caller.send({"type": "session.close"})
        await until(lambda: server.calls.get(caller.call_id) is None)


async def test_server_shutdown_ends_live_calls(silero: SileroVad) -> None:
    engines = Engines(
        vad=silero, stt=FakeSpeechToText(), llm=FakeLanguageModel(), tts=FakeTextToSpeech()
    )
    app = create_app(Config(api_keys=(API_KEY,)), engines)
    async with running_server(app) as base, call(base) as caller:
        closed = asyncio.Event()
        caller.channel.on("close", closed.set)
        assert len(call_registry(app)) == 1
    assert len(call_registry(app)) == 0
    assert closed.is_set() or caller.pc.connectionState in ("closed", "failed")


async def test_sideband_attaches_to_the_live_call(server: Server) -> None:
    """Spec §1.4: ``/v1/realtime?call_id=…`` with an API key sees and steers the call."""
    async with call(server.base, session=NO_VAD) as caller:
        url = ws_url(server.base, f"/v1/realtime?call_id={caller.call_id}")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with websockets.connect(url, additional_headers=headers) as sideband:

            async def next_event() -> dict[str, Any]:
                async with asyncio.timeout(WAIT_S):
                    event = json.loads(await sideband.recv())
                SERVER_EVENT.validate_python(event)
                return dict(event)

            created = await next_event()
            assert created["type"] == "session.created"
            assert created["session"]["id"] == caller.received[0]["session"]["id"]
            # The sideband steers the session; both connections see the result.
            await sideband.send(
                json.dumps(
                    {"type": "session.update", "session": {"type": "realtime", "instructions": "S"}}
                )
            )
            assert (await next_event())["type"] == "session.updated"
            updated = await caller.wait_for("session.updated")
            assert updated["session"]["instructions"] == "S"
            # Events the caller causes reach the sideband too.
            caller.send({"type": "response.create"})
            while (event := await next_event())["type"] != "response.done":
                assert event["type"] != "response.output_audio.delta"
        # The call outlives its sideband.
        caller.send({"type": "input_audio_buffer.clear"})
        await caller.wait_for("input_audio_buffer.cleared")


async def test_sideband_for_an_unknown_call_is_refused(server: Server) -> None:
    url = ws_url(server.base, "/v1/realtime?call_id=rtc_nope")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        event = json.loads(await ws.recv())
        assert event["type"] == "error"
        assert event["error"]["code"] == "call_not_found"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, None),
        ({"Authorization": "Bearer sk-wrong"}, "invalid_api_key"),
    ],
)
async def test_calls_need_a_valid_key(
    server: Server, headers: dict[str, str], code: str | None
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.base}/v1/realtime/calls",
            content="v=0\r\n",
            headers={"Content-Type": "application/sdp", **headers},
        )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert len(server.calls) == 0


async def test_bad_offers_are_refused(server: Server) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=server.base) as http:
        garbage = await http.post(
            "/v1/realtime/calls",
            content="hello",
            headers={**auth, "Content-Type": "application/sdp"},
        )
        assert garbage.status_code == 400
        assert garbage.json()["error"]["param"] == "sdp"
        wrong_type = await http.post("/v1/realtime/calls", json={"sdp": "v=0"}, headers=auth)
        assert wrong_type.status_code == 415
        # A data channel but no audio section.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        no_audio = await http.post(
            "/v1/realtime/calls",
            content=pc.localDescription.sdp,
            headers={**auth, "Content-Type": "application/sdp"},
        )
        await pc.close()
        assert no_audio.status_code == 400, no_audio.text
        assert "audio" in no_audio.json()["error"]["message"]
    assert len(server.calls) == 0


async def test_a_bad_session_config_is_refused(server: Server) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PcmTrack())
    await pc.setLocalDescription(await pc.createOffer())
    api = openai.AsyncOpenAI(base_url=f"{server.base}/v1", api_key=API_KEY)
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            await api.realtime.calls.create(
                sdp=pc.localDescription.sdp,
                session={"type": "realtime", "bogus": 1},  # type: ignore[typeddict-unknown-key]
            )
    finally:
        await api.close()
        await pc.close()
    assert refused.value.code == "unknown_parameter"
    assert len(server.calls) == 0


async def test_cors_lets_a_browser_post_and_read_location(server: Server) -> None:
    origin = {"Origin": "http://localhost:5173"}
    async with httpx.AsyncClient(base_url=server.base) as http:
        preflight = await http.options(
            "/v1/realtime/calls",
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-openai-agents-sdk",
            },
        )
        assert preflight.status_code == 204
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-origin"] == origin["Origin"]
        refused = await http.post("/v1/realtime/calls", content="v=0", headers=origin)
        assert refused.headers["access-control-allow-origin"] == origin["Origin"]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PcmTrack())
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with httpx.AsyncClient(base_url=server.base) as http:
            created = await http.post(
                "/v1/realtime/calls",
                content=strip_candidates(pc.localDescription.sdp),
                headers={
                    **origin,
                    "Authorization": f"Bearer {API_KEY}",
                    "Content-Type": "application/sdp",
                },
            )
            assert created.status_code == 201
            assert created.headers["access-control-expose-headers"] == "Location"
            call_id = created.headers["location"].rsplit("/", 1)[-1]
            await http.post(
                f"/v1/realtime/calls/{call_id}/hangup",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
    finally:
        await pc.close()


async def test_client_secret_opens_a_call_with_its_session(server: Server) -> None:
    """The browser flow (spec §1.2, §1.3): mint ek_ with the API key, post the offer with it."""
    async with httpx.AsyncClient(base_url=server.base) as http:
        minted = await http.post(
            "/v1/realtime/client_secrets",
            json={"session": {"type": "realtime", "instructions": "From the secret."}},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert minted.status_code == 200, minted.text
    secret = minted.json()["value"]
    assert secret.startswith("ek_")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PcmTrack())
    channel = pc.createDataChannel("oai-events")
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    channel.on("message", lambda m: first.done() or first.set_result(m))
    await pc.setLocalDescription(await pc.createOffer())
    try:
        answer, _ = await post_offer(
            server.base, strip_candidates(pc.localDescription.sdp), key=secret
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        async with asyncio.timeout(WAIT_S):
            created = json.loads(await first)
        assert created["type"] == "session.created"
        assert created["session"]["instructions"] == "From the secret."
    finally:
        await pc.close()


async def test_closing_the_data_channel_ends_the_call(server: Server) -> None:
    async with call(server.base) as caller:
        caller.channel.close()
        await until(lambda: server.calls.get(caller.call_id) is None)


async def test_a_call_that_never_connects_is_dropped(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webrtc, "CONNECT_TIMEOUT_S", 0.3)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PcmTrack())
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        _, call_id = await post_offer(server.base, strip_candidates(pc.localDescription.sdp))
        assert server.calls.get(call_id) is not None
        # The answer is never applied: no connectivity check ever reaches the server.
        await until(lambda: server.calls.get(call_id) is None, wait_s=5)
    finally:
        await pc.close()


# --------------------------------------------------------------------------- media, in process


def _tone_48k(samples: int, channels: int) -> AudioFrame:
    tone = np.rint(12000 * np.sin(2 * np.pi * 1000 * np.arange(samples) / 48000)).astype("<i2")
    frame = AudioFrame(format="s16", layout="stereo" if channels == 2 else "mono", samples=samples)
    frame.planes[0].update(np.repeat(tone, channels).tobytes())
    frame.sample_rate = 48000
    return frame


async def test_playback_track_audio_is_in_the_opus_packet_of_its_own_frame() -> None:
    """Frame k's audio is in the packet encoded from frame k: aiortc's encoder gets 48 kHz
    frames and does not resample (its resampler held every 24 kHz frame back one frame)."""
    buffer = PlaybackBuffer()
    track = PlaybackTrack(buffer)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    loud: list[bool] = []
    try:
        for k in range(6):
            if k == 3:
                buffer.play("resp_1", "item_1", _tone())
            frame = await track.recv()
            assert (frame.sample_rate, frame.samples, len(frame.layout.channels)) == (48000, 960, 1)
            packets, _ = encoder.encode(frame)
            assert len(packets) == 1, k  # one packet per frame, from the first frame on
            decoded = decoder.decode(JitterFrame(packets[0], k * 960))
            samples = np.concatenate([d.to_ndarray().ravel() for d in decoded])
            loud.append(rms(samples.astype("<i2").tobytes()) > 1000)
    finally:
        track.stop()
    assert loud == [False, False, False, True, True, True]


def _tone() -> bytes:
    """100 ms of a 1 kHz tone, PCM16 mono 24 kHz."""
    t = np.arange(2400) / RATE
    return np.rint(12000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()


class FramesTrack(MediaStreamTrack):
    """A remote track that yields the given frames, then ends."""

    kind = "audio"

    def __init__(self, frames: list[AudioFrame]) -> None:
        super().__init__()
        self._frames = list(frames)

    async def recv(self) -> AudioFrame:
        if not self._frames:
            raise MediaStreamError
        return self._frames.pop(0)


async def test_call_media_converts_opus_frames_at_once_and_other_rates_too() -> None:
    """48 kHz (Opus): every 20 ms frame gives its 20 ms at 24 kHz at once; 8 kHz: soxr."""
    media = CallMedia()
    media.remote = FramesTrack([_tone_48k(960, 2) for _ in range(3)])
    chunks = [await media.receive_audio() for _ in range(3)]
    assert [len(c or b"") for c in chunks] == [960] * 3
    assert rms(b"".join(c or b"" for c in chunks)[DELAY_24K * 2 :]) > 8000
    assert await media.receive_audio() is None

    narrow = []
    for _ in range(10):
        frame = AudioFrame(format="s16", layout="mono", samples=160)
        frame.planes[0].update(_pcm_tone(160, 8000))
        frame.sample_rate = 8000
        narrow.append(frame)
    media = CallMedia()
    media.remote = FramesTrack(narrow)
    got = bytearray()
    while (chunk := await media.receive_audio()) is not None:
        got += chunk
    assert 0 < len(got) <= 10 * 960 and rms(bytes(got)) > 5000
    media.end()


def _pcm_tone(samples: int, rate: int) -> bytes:
    t = np.arange(samples) / rate
    return np.rint(12000 * np.sin(2 * np.pi * 500 * t)).astype("<i2").tobytes()


def _packet(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq & 0xFFFF, timestamp=seq * 960)
    packet._data = bytes([seq & 0xFF])  # type: ignore[attr-defined]
    return packet


def _released(buffer: AudioJitterBuffer, seqs: list[int]) -> list[int | None]:
    out: list[int | None] = []
    for seq in seqs:
        pli, frame = buffer.add(_packet(seq))
        assert pli is False
        out.append(None if frame is None else frame.timestamp // 960)
    return out


def test_audio_jitter_buffer_releases_in_order_packets_at_once() -> None:
    assert _released(AudioJitterBuffer(), [0, 1, 2, 3]) == [0, 1, 2, 3]
    wrapping = [65534, 65535, 65536, 65537]  # sent as 65534, 65535, 0, 1
    assert _released(AudioJitterBuffer(), wrapping) == wrapping


def test_audio_jitter_buffer_puts_one_reordered_packet_back_in_place() -> None:
    buffer = AudioJitterBuffer()
    assert _released(buffer, [0, 1, 3, 2, 4, 5]) == [0, 1, None, 2, 3, 4]
    assert buffer.held == 1  # one packet held from then on, never more


def test_audio_jitter_buffer_gives_up_a_lost_packet_after_one_more() -> None:
    buffer = AudioJitterBuffer()
    got = _released(buffer, [0, 1, 3, 4, 5, 6, 2, 7])
    assert got == [0, 1, None, 3, 4, 5, None, 6]  # 2 is lost; when it comes late, it is dropped
    assert buffer.held == 1
    # aiortc's own audio buffer (capacity 16, prefetch 4) stalls 15 packets at a loss, drops
    # packets it had received, and holds about 14 for the rest of the call:
    stock = JitterBuffer(capacity=16, prefetch=4)
    stock_out = []
    for seq in [s for s in range(40) if s != 5]:
        _, frame = stock.add(_packet(seq))
        stock_out.append(None if frame is None else frame.timestamp // 960)
    assert stock_out[-1] == 25 and 1 not in stock_out  # 39 arrived, 25 released


def test_audio_jitter_buffer_drops_duplicates_and_restarts_after_jumps() -> None:
    buffer = AudioJitterBuffer()
    assert _released(buffer, [10, 11, 11, 10]) == [10, 11, None, None]
    assert _released(buffer, [40]) == [40]  # 29 ahead >= capacity 16: restart there
    far_behind = (41 - 200) & 0xFFFF
    assert _released(buffer, [41, far_behind]) == [41, far_behind]  # >= 100 back: restart
    with pytest.raises(ValueError, match="reorder"):
        AudioJitterBuffer(reorder=0)


def test_audio_jitter_buffer_never_holds_more_than_reorder_packets() -> None:
    rng = np.random.default_rng(7)
    for reorder in (1, 2, 3):
        buffer = AudioJitterBuffer(reorder=reorder)
        seqs = [s for s in range(2000) if rng.random() > 0.05]  # 5 % loss
        for i in range(0, len(seqs) - 1, 7):  # and swaps
            seqs[i], seqs[i + 1] = seqs[i + 1], seqs[i]
        released = [s for s in _released(buffer, seqs) if s is not None]
        assert released == sorted(released)  # in order, each at most once
        assert buffer.held <= reorder
        assert len(released) >= 0.9 * len(seqs)


async def test_use_audio_jitter_buffer_replaces_only_a_known_audio_buffer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio")
        video = pc.addTransceiver("video")
        assert use_audio_jitter_buffer(audio) is True
        assert isinstance(audio.receiver._RTCRtpReceiver__jitter_buffer, AudioJitterBuffer)  # type: ignore[attr-defined]
        assert use_audio_jitter_buffer(video) is False
        # an aiortc whose receiver no longer looks as expected: calls go on with its buffer
        assert use_audio_jitter_buffer(audio) is False  # already replaced: not a JitterBuffer
        assert "not replacing" in caplog.text
    finally:
        await pc.close()


async def test_calls_use_the_audio_jitter_buffer(server: Server) -> None:
    async with call(server.base) as caller:
        live = server.calls.get(caller.call_id)
        assert live is not None
        (transceiver,) = live.pc.getTransceivers()
        buffer = transceiver.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert isinstance(buffer, AudioJitterBuffer)
