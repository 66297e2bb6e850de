"""input_audio_buffer.append / commit / clear, push-to-talk (spec §2.2, §5.4, §6.2, §7)."""

from __future__ import annotations

import pytest

from openrealtime.core import backend_events as be
from openrealtime.core.commands import DetectSpeech, Generate, Transcribe
from openrealtime.core.session import Limits
from tests.core.sim import Sim, pcm, types

NO_VAD = {"audio": {"input": {"turn_detection": None}}}


def test_append_is_not_acknowledged_and_runs_the_vad() -> None:
    sim = Sim()
    audio = pcm(40, 5)
    sim.audio(audio)
    assert sim.events() == []
    assert sim.commands(speech=True) == [DetectSpeech(audio)]


def test_commit_makes_a_user_audio_item_without_a_response() -> None:
    sim = Sim(session=NO_VAD)
    audio = pcm(150, 9)
    sim.audio(audio)
    sim.send({"type": "input_audio_buffer.commit"})
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert events[0]["item_id"] == "item_1"
    assert events[0]["previous_item_id"] is None
    item = {
        "id": "item_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    assert events[1]["item"] == item
    assert events[2]["item"] == item
    assert sim.commands() == [Transcribe("item_1", 0, audio, None, None, None)]
    # The buffer is empty again.
    sim.send({"type": "input_audio_buffer.commit"})
    assert sim.error()["code"] == "input_audio_buffer_commit_empty"


@pytest.mark.parametrize(("ms", "shown"), [(0, "0.00"), (50, "50.00"), (99, "99.00")])
def test_commit_under_100_ms(ms: int, shown: str) -> None:
    sim = Sim(session=NO_VAD)
    sim.audio(pcm(ms))
    sim.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "input_audio_buffer_commit_empty",
        "message": "Error committing input audio buffer: buffer too small. Expected at least "
        f"100ms of audio, but buffer only has {shown}ms of audio.",
        "param": None,
        "event_id": "evt_c",
    }
    assert sim.commands() == []


def test_commit_of_exactly_100_ms_works() -> None:
    sim = Sim(session=NO_VAD)
    sim.audio(pcm(100))
    sim.send({"type": "input_audio_buffer.commit"})
    assert sim.types()[0] == "input_audio_buffer.committed"


def test_clear() -> None:
    sim = Sim(session=NO_VAD)
    sim.audio(pcm(300))
    sim.send({"type": "input_audio_buffer.clear"})
    events = sim.events()
    assert types(events) == ["input_audio_buffer.cleared"]
    assert set(events[0]) == {"type", "event_id"}
    sim.send({"type": "input_audio_buffer.commit"})
    assert "0.00ms" in sim.error()["message"]


def test_append_over_the_limit_is_rejected_and_the_session_goes_on() -> None:
    sim = Sim(limits=Limits(max_append_bytes=4800), session=NO_VAD)
    sim.audio(pcm(200), event_id="evt_big")
    error = sim.error()
    assert error["code"] == "input_audio_buffer_append_too_large"
    assert error["param"] == "audio"
    assert error["event_id"] == "evt_big"
    assert sim.commands(speech=True) == []
    sim.audio(pcm(100))
    sim.send({"type": "input_audio_buffer.commit"})
    assert sim.types()[0] == "input_audio_buffer.committed"
    (command,) = sim.commands()
    assert isinstance(command, Transcribe)
    assert len(command.pcm16) == 4800


@pytest.mark.parametrize("audio", ["not base64!", "AAA"])
def test_invalid_base64(audio: str) -> None:
    sim = Sim()
    sim.send({"type": "input_audio_buffer.append", "audio": audio})
    error = sim.error()
    assert error["code"] == "invalid_value"
    assert error["param"] == "audio"
    assert sim.commands(speech=True) == []
    sim.audio(pcm(10))
    assert sim.events() == []


def test_push_to_talk_turn() -> None:
    """turn_detection null: no VAD events; commit, then an explicit response.create (§5.4)."""
    sim = Sim(session={**NO_VAD, "instructions": ""})
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.types() == ["input_audio_buffer.cleared"]
    audio = pcm(500, 4)
    sim.audio(audio)
    sim.vad([0.0] * 3 + [0.99] * 10 + [0.0] * 30)
    assert sim.events() == []
    assert sim.commands() == []
    sim.send({"type": "input_audio_buffer.commit"})
    assert sim.types() == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert sim.commands() == [Transcribe("item_1", 0, audio, None, None, None)]
    sim.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = sim.events()
    assert types(events) == ["response.created"]
    assert events[0]["response"]["id"] == "resp_1"
    # The model needs the transcript first.
    assert sim.commands() == []
    sim.backend(be.TranscriptionCompleted("item_1", "what time is it", 0.5))
    assert sim.events() == []
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    assert [(m.role, m.content) for m in command.messages] == [("user", "what time is it")]


def test_speech_is_streamed_to_listen_while_the_user_speaks() -> None:
    from openrealtime.core.commands import Listen, StopListening
    from tests.core.sim import FRAME, frames_pcm

    sim = Sim()
    sim.audio(frames_pcm(12))
    sim.commands(speech=True)
    sim.vad([0.0] * 10 + [0.9] * 2)  # speech starts in frame 10
    listen = [c for c in sim.commands(speech=True) if isinstance(c, Listen)]
    assert len(listen) == 1 and listen[0].item_id == "item_1"
    # prefix padding (300 ms) before the speech frame, up to what is buffered
    assert len(listen[0].pcm16) == (2 * FRAME + 300 * 24) * 2
    sim.audio(frames_pcm(1))
    more = [c for c in sim.commands(speech=True) if isinstance(c, Listen)]
    assert [len(c.pcm16) for c in more] == [FRAME * 2]
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.commands(speech=True) == [StopListening("item_1")]
