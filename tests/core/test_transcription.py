"""Input transcription events and transcription sessions (spec §1.6, §2.3, §5.2, §6.2)."""

from __future__ import annotations

from typing import Any

from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate, Transcribe
from tests.core.sim import Sim, speak, types

TRANSCRIBE = {"model": "gpt-4o-mini-transcribe", "language": "en"}


def realtime_with_transcription() -> Sim:
    return Sim(session={"instructions": "", "audio": {"input": {"transcription": TRANSCRIBE}}})


def test_transcription_events() -> None:
    sim = realtime_with_transcription()
    speak(sim, 10, 10, 7)
    assert types(sim.events())[-1] == "response.created"
    (command,) = sim.commands()
    assert isinstance(command, Transcribe)
    assert (command.item_id, command.model, command.language) == (
        "item_1",
        "gpt-4o-mini-transcribe",
        "en",
    )
    sim.backend(be.TranscriptionDelta("item_1", "Hello"))
    sim.backend(be.TranscriptionDelta("item_1", " world"))
    events = sim.events()
    assert types(events) == ["conversation.item.input_audio_transcription.delta"] * 2
    assert [(e["item_id"], e["content_index"], e["delta"]) for e in events] == [
        ("item_1", 0, "Hello"),
        ("item_1", 0, " world"),
    ]
    assert sim.commands() == []
    sim.backend(be.TranscriptionCompleted("item_1", "Hello world", 1.2))
    events = sim.events()
    assert types(events) == ["conversation.item.input_audio_transcription.completed"]
    completed = events[0]
    assert completed["item_id"] == "item_1"
    assert completed["content_index"] == 0
    assert completed["transcript"] == "Hello world"
    assert completed["usage"] == {
        "type": "tokens",
        "input_tokens": 12,
        "output_tokens": 2,
        "total_tokens": 14,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 12},
    }
    (generate,) = sim.commands()
    assert isinstance(generate, Generate)
    assert generate.messages[-1].content == "Hello world"
    # The stored item now carries its transcript.
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_1"})
    part = sim.events()[0]["item"]["content"][0]
    assert part["transcript"] == "Hello world"


def test_transcription_failed() -> None:
    sim = realtime_with_transcription()
    speak(sim, 10, 10, 7)
    sim.events()
    sim.commands()
    sim.backend(be.TranscriptionFailed("item_1", "audio_unintelligible", "Could not hear it."))
    events = sim.events()
    assert types(events) == ["conversation.item.input_audio_transcription.failed"]
    assert events[0]["item_id"] == "item_1"
    assert events[0]["content_index"] == 0
    assert events[0]["error"] == {
        "type": "transcription_error",
        "code": "audio_unintelligible",
        "message": "Could not hear it.",
    }
    # The response is not stuck: it runs without the transcript.
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    assert command.response_id == "resp_1"


def test_transcription_disabled_emits_no_transcription_events() -> None:
    sim = Sim(session={"instructions": ""})
    speak(sim, 10, 10, 7)
    sim.events()
    sim.commands()
    sim.backend(be.TranscriptionDelta("item_1", "hi"))
    sim.backend(be.TranscriptionCompleted("item_1", "hi", 0.3))
    assert sim.events() == []
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    assert command.messages[-1].content == "hi"


def transcription_session(**turn_detection: Any) -> Sim:
    td: dict[str, Any] = {"type": "server_vad", **turn_detection}
    return Sim(
        "transcription",
        session={"audio": {"input": {"transcription": TRANSCRIBE, "turn_detection": td}}},
    )


def test_transcription_session_turn_has_no_response() -> None:
    sim = transcription_session()
    speak(sim, 10, 10, 7)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert events[2]["item_id"] == "item_1"
    (command,) = sim.commands()
    assert isinstance(command, Transcribe)
    sim.backend(be.TranscriptionDelta("item_1", "hi"))
    sim.backend(be.TranscriptionCompleted("item_1", "hi", 0.5))
    assert sim.types() == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert sim.commands() == []


def test_transcription_session_manual_commit() -> None:
    sim = transcription_session()
    speak(sim, 0, 5, 0)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    sim.send({"type": "input_audio_buffer.commit"})
    assert sim.types() == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert [type(c) for c in sim.commands()] == [Transcribe]


def test_transcription_session_rejects_response_create() -> None:
    sim = transcription_session()
    sim.send({"type": "response.create", "event_id": "evt_r"})
    error = sim.error()
    assert error["type"] == "invalid_request_error"
    assert error["event_id"] == "evt_r"
    assert "response.create" in error["message"]
    assert sim.commands() == []


def test_transcription_session_update_echo() -> None:
    sim = Sim("transcription")
    sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            },
        }
    )
    events = sim.events()
    assert types(events) == ["session.updated"]
    audio_input = events[0]["session"]["audio"]["input"]
    assert audio_input["transcription"] == {"model": "whisper-1", "language": None, "prompt": None}
    assert audio_input["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    }
