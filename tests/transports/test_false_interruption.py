"""False interruptions over a real WebRTC call (core/turn_taking.py; LiveKit's false-interruption
resume).

The server runs in-process as in ``test_webrtc.py``: the real Silero VAD, the fake LLM (a fixed
reply) and the fake TTS (a 200-380 Hz tone, 60 ms per character, which the caller can measure).
The caller is an aiortc peer that speaks flite speech into its microphone track while the
answer plays. The fake STT is an *ideal* recogniser: before each utterance the test sets its
``transcript`` to exactly the words the caller is about to say, so what is tested is the
server's turn-taking, not speech recognition. Silero hears flite's "uh huh" as about 450 ms of
speech (under ``min_interruption_ms``, 1000) and the long sentence as almost 3 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from openrealtime.app import create_app
from openrealtime.backends.base import Engines, SpeechToText
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.config import Config
from openrealtime.runtime.playback import PlaybackBuffer
from openrealtime.transports.webrtc import call_registry
from tests.helpers.server import running_server
from tests.transports.test_webrtc import API_KEY, Caller, call, flite, of_type

REPLY = "Here is a fairly long answer that goes on for a few seconds."
"""The fake TTS speaks it in about 3.5 s."""
SESSION = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
TONE_WINDOW = 480
"""10 ms at the caller's 48 kHz."""


@pytest.fixture(scope="module")
def silero() -> SileroVad:
    return SileroVad.from_cache()


@dataclass
class Played:
    """What the server's output buffer of one call did, recorded by wrapping its methods."""

    bytes_read: int = 0
    moves: list[str] = field(default_factory=list)

    def watch(self, buffer: PlaybackBuffer) -> None:
        read, pause, resume = buffer.read, buffer.pause, buffer.resume

        def counted_read(nbytes: int) -> bytes:
            before = buffer.queued_bytes
            frame = read(nbytes)
            self.bytes_read += before - buffer.queued_bytes
            return frame

        def paused() -> None:
            self.moves.append("pause")
            pause()

        def resumed() -> None:
            self.moves.append("resume")
            resume()

        buffer.read = counted_read  # type: ignore[method-assign]
        buffer.pause = paused  # type: ignore[method-assign]
        buffer.resume = resumed  # type: ignore[method-assign]


@dataclass
class Server:
    base: str
    app: Any
    stt: FakeSpeechToText


@contextlib.asynccontextmanager
async def serving(
    silero: SileroVad, recogniser: SpeechToText | None = None, **config: Any
) -> AsyncIterator[Server]:
    stt = FakeSpeechToText()
    engines = Engines(
        vad=silero,
        stt=recogniser or stt,
        llm=FakeLanguageModel(reply=REPLY),
        tts=FakeTextToSpeech(),
    )
    app = create_app(Config(api_keys=(API_KEY,), **config), engines)
    async with running_server(app) as base:
        yield Server(base, app, stt)


def tone_ms(audio_48k: bytes) -> int:
    """Milliseconds of the answer's tone in what the caller received (10 ms windows)."""
    samples = np.frombuffer(audio_48k, dtype="<i2").astype(np.float64)
    windows = samples[: samples.size // TONE_WINDOW * TONE_WINDOW].reshape(-1, TONE_WINDOW)
    loud = np.sqrt((windows**2).mean(axis=1)) > 2000  # the tone's RMS is about 6950
    return int(loud.sum()) * 10


async def answer_and_speak(
    server: Server, caller: Caller, words: str, transcript: str, tmp: Path
) -> tuple[list[dict[str, Any]], Played]:
    """Ask for the answer, and say ``words`` one second into its playback.

    Returns the events up to ``output_audio_buffer.started`` and the recorder of the buffer.
    """
    played = Played()
    live = call_registry(server.app).get(caller.call_id)
    assert live is not None
    played.watch(live.media.playback)
    caller.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "talk to me"}],
            },
        }
    )
    caller.send({"type": "response.create"})
    events = await caller.collect_until("output_audio_buffer.started")
    await asyncio.sleep(1.0)
    server.stt.transcript = transcript
    caller.mic.say(flite(words, tmp))
    return events, played


async def item_audio_bytes(caller: Caller, item_id: str) -> int:
    caller.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await caller.wait_for("conversation.item.retrieved"))["item"]
    return len(base64.b64decode(item["content"][0]["audio"]))


async def test_a_backchannel_pauses_the_answer_which_then_plays_to_the_end(
    silero: SileroVad, tmp_path: Path
) -> None:
    async with serving(silero) as server, call(server.base, session=SESSION) as caller:
        events, played = await answer_and_speak(server, caller, "uh huh", "Uh-huh.", tmp_path)
        response_id = events[-1]["response_id"]
        events += await caller.collect_until("output_audio_buffer.stopped", wait_s=15)
        kinds = [e["type"] for e in events]
        # The caller was heard: a committed turn with its transcript...
        (started,) = of_type(events, "input_audio_buffer.speech_started")
        assert kinds.index("input_audio_buffer.speech_stopped") > kinds.index(
            "input_audio_buffer.speech_started"
        )
        (completed,) = of_type(events, "conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == started["item_id"]
        # ... the answer was paused, then resumed, never cancelled, cleared or truncated ...
        assert played.moves == ["pause", "resume"]
        (done,) = of_type(events, "response.done")
        assert done["response"]["id"] == response_id
        assert done["response"]["status"] == "completed"
        assert len(of_type(events, "response.created")) == 1  # "uh huh" gets no answer
        for kind in ("output_audio_buffer.cleared", "conversation.item.truncated"):
            assert kind not in kinds
        assert of_type(events, "output_audio_buffer.stopped")[0]["response_id"] == response_id
        # ... and all of it was played, and heard by the caller.
        item_id = done["response"]["output"][0]["id"]
        generated = await item_audio_bytes(caller, item_id)
        assert generated >= 3000 * 48  # about 60 ms per character (3.5 s)
        assert played.bytes_read == generated
        await asyncio.sleep(0.5)  # the tail still in the caller's jitter buffer
        assert abs(tone_ms(bytes(caller.audio)) - generated // 48) <= 40


async def test_with_false_interruptions_off_the_same_backchannel_cuts_the_answer(
    silero: SileroVad, tmp_path: Path
) -> None:
    """``--false-interruptions off``: today's barge-in at onset (what the test above rules out)."""
    async with (
        serving(silero, resume_false_interruptions=False) as server,
        call(server.base, session=SESSION) as caller,
    ):
        await answer_and_speak(server, caller, "uh huh", "Uh-huh.", tmp_path)
        events = await caller.collect_until("conversation.item.truncated", wait_s=15)
        kinds = [e["type"] for e in events]
        assert "output_audio_buffer.cleared" in kinds
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
            "output_audio_buffer.cleared"
        )


async def test_long_speech_interrupts_and_truncates_at_what_the_caller_heard(
    silero: SileroVad, tmp_path: Path
) -> None:
    async with serving(silero) as server, call(server.base, session=SESSION) as caller:
        said = "Wait, stop, I have a question about that."
        events, played = await answer_and_speak(server, caller, said, said, tmp_path)
        response_id = events[-1]["response_id"]
        events += await caller.collect_until("conversation.item.truncated", wait_s=15)
        kinds = [e["type"] for e in events]
        (done,) = of_type(events, "response.done")
        assert done["response"]["id"] == response_id
        if done["response"]["status"] == "cancelled":  # the answer was still being generated
            assert done["response"]["status_details"]["reason"] == "turn_detected"
        else:  # generated long before; its audio was still playing
            assert kinds.index("response.done") < kinds.index("input_audio_buffer.speech_started")
        (cleared,) = of_type(events, "output_audio_buffer.cleared")
        assert cleared["response_id"] == response_id
        # Decided by the speech's length, while the caller was still speaking.
        assert "input_audio_buffer.speech_stopped" not in kinds
        assert played.moves == ["pause"]
        truncated = events[-1]
        assert truncated["item_id"] == done["response"]["output"][0]["id"]
        # Truncated where the pause began: exactly what was read, and what the caller heard.
        assert truncated["audio_end_ms"] == played.bytes_read // 48
        assert 1000 <= truncated["audio_end_ms"] < len(REPLY) * 60
        await asyncio.sleep(0.5)
        assert abs(tone_ms(bytes(caller.audio)) - truncated["audio_end_ms"]) <= 40
        # The caller's turn goes on and is answered.
        events = await caller.collect_until("response.created", wait_s=15)
        assert "input_audio_buffer.speech_stopped" in [e["type"] for e in events]


def cough() -> bytes:
    """A cough: 250 ms of decaying noise bursts, 24 kHz PCM16."""
    rng = np.random.default_rng(11)
    t = np.arange(6000)
    burst = rng.normal(0, 0.35, t.size) * np.exp(-t / 1500) * (1 + np.sin(t / 40))
    return (np.clip(burst, -1, 1) * 32767).astype(np.int16).tobytes()


@pytest.mark.parametrize("sound", ["cough", "okay", "mm hm"])
async def test_with_the_real_recogniser_a_cough_or_a_backchannel_does_not_lose_the_answer(
    silero: SileroVad, tmp_path: Path, sound: str
) -> None:
    """The embedded PocketSphinx instead of the ideal recogniser: what a user of the default
    stack gets. It hears the cough as nothing, "okay" as "okay" and "mm hm" as "m m h m"."""
    from openrealtime.backends.stt_pocketsphinx import PocketsphinxSpeechToText

    recogniser = PocketsphinxSpeechToText()
    try:
        async with (
            serving(silero, recogniser) as server,
            call(server.base, session=SESSION) as caller,
        ):
            played = Played()
            live = call_registry(server.app).get(caller.call_id)
            assert live is not None
            played.watch(live.media.playback)
            caller.send({"type": "response.create"})
            events = await caller.collect_until("output_audio_buffer.started")
            await asyncio.sleep(1.0)
            caller.mic.say(cough() if sound == "cough" else flite(sound, tmp_path))
            events += await caller.collect_until("output_audio_buffer.stopped", wait_s=20)
            kinds = [e["type"] for e in events]
            if sound == "cough" and "input_audio_buffer.speech_started" not in kinds:
                assert played.moves == []  # Silero did not even take it for speech
            else:
                assert "input_audio_buffer.speech_started" in kinds, "the sound was not heard"
                assert played.moves == ["pause", "resume"]
            assert "conversation.item.truncated" not in kinds
            assert "output_audio_buffer.cleared" not in kinds
            (done,) = of_type(events, "response.done")
            assert done["response"]["status"] == "completed"
            assert len(of_type(events, "response.created")) == 1
    finally:
        recogniser.close()
