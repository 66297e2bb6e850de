"""server_vad turns, idle timeout and barge-in (spec §3.1, §5.2, §5.6, §5.10)."""

from __future__ import annotations

from typing import Any

import pytest

from openrealtime.core import backend_events as be
from openrealtime.core.commands import CancelResponse, Generate, Transcribe
from tests.core.sim import FRAME, Sim, add_user_text, frames_pcm, pcm, speak, types

MS_PER_FRAME = FRAME * 1000 // 24_000  # 32


def vad_session(**turn_detection: Any) -> Sim:
    td = {"type": "server_vad", **turn_detection}
    return Sim(session={"instructions": "", "audio": {"input": {"turn_detection": td}}})


@pytest.mark.parametrize(
    ("prefix_ms", "silent_frames", "start_ms"),
    [
        (300, 20, 20 * MS_PER_FRAME - 300),
        (100, 20, 20 * MS_PER_FRAME - 100),
        (0, 20, 20 * MS_PER_FRAME),
        (300, 5, 0),  # clamped at the start of the stream
        (300, 0, 0),
    ],
)
def test_speech_started_audio_start_ms(prefix_ms: int, silent_frames: int, start_ms: int) -> None:
    sim = vad_session(prefix_padding_ms=prefix_ms)
    speak(sim, silent_frames, 2, 0)
    events = sim.events()
    assert types(events) == ["input_audio_buffer.speech_started"]
    assert events[0]["audio_start_ms"] == start_ms
    assert events[0]["item_id"] == "item_1"
    assert sim.commands() == []


def test_speech_started_across_batches() -> None:
    sim = vad_session()
    for _ in range(4):
        speak(sim, 10, 0, 0)
    assert sim.events() == []
    speak(sim, 0, 1, 0)
    events = sim.events()
    assert events[0]["audio_start_ms"] == 40 * MS_PER_FRAME - 300


def test_speech_stopped_after_silence_duration() -> None:
    sim = vad_session(silence_duration_ms=200)
    speak(sim, 20, 10, 6)  # 6 frames = 192 ms of silence: not yet
    assert sim.types() == ["input_audio_buffer.speech_started"]
    speak(sim, 0, 0, 1)  # 224 ms
    events = sim.events()
    assert types(events)[0] == "input_audio_buffer.speech_stopped"
    assert events[0]["audio_end_ms"] == 37 * MS_PER_FRAME
    assert events[0]["item_id"] == "item_1"


def test_server_vad_turn_waits_for_the_transcript_then_generates() -> None:
    sim = vad_session()
    speak(sim, 20, 10, 7)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    started, stopped, committed, added, done, created = events
    assert started["audio_start_ms"] == 340
    assert stopped["audio_end_ms"] == 1184
    for event in (started, stopped, committed):
        assert event["item_id"] == "item_1"
    assert committed["previous_item_id"] is None
    assert added["item"] == {
        "id": "item_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    assert done["item"] == added["item"]
    assert created["response"]["status"] == "in_progress"
    assert created["response"]["output"] == []
    assert created["response"]["conversation_id"] == "conv_1"
    # The committed audio runs from the padded start to the end of the silence tail.
    start_sample = 20 * FRAME - 300 * 24
    end_sample = 37 * FRAME
    (command,) = sim.commands()
    assert command == Transcribe(
        "item_1", 0, frames_pcm(37)[start_sample * 2 : end_sample * 2], None, None, None
    )
    # No Generate until the transcript is known.
    sim.backend(be.TranscriptionDelta("item_1", "hel"))
    assert sim.events() == []
    assert sim.commands() == []
    sim.backend(be.TranscriptionCompleted("item_1", "hello", 0.8))
    assert sim.events() == []
    (generate,) = sim.commands()
    assert isinstance(generate, Generate)
    assert generate.response_id == "resp_1"
    assert [(m.role, m.content) for m in generate.messages] == [("user", "hello")]
    assert generate.modality == "audio"
    assert generate.voice == "alloy"


def test_second_turn_follows_the_first() -> None:
    sim = vad_session(create_response=False)
    speak(sim, 20, 10, 7)
    sim.events()
    speak(sim, 10, 5, 7)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert events[0]["audio_start_ms"] == (37 + 10) * MS_PER_FRAME - 300
    assert events[1]["audio_end_ms"] == (37 + 22) * MS_PER_FRAME
    assert events[2]["item_id"] == "item_2"
    assert events[2]["previous_item_id"] == "item_1"


def test_create_response_false_only_commits() -> None:
    sim = vad_session(create_response=False)
    speak(sim, 20, 10, 7)
    assert sim.types() == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert [type(c) for c in sim.commands()] == [Transcribe]
    sim.backend(be.TranscriptionCompleted("item_1", "hello", 0.8))
    assert sim.events() == []
    assert sim.commands() == []


def test_threshold_is_respected() -> None:
    sim = vad_session(threshold=0.8)
    sim.audio(frames_pcm(30))
    sim.vad([0.79] * 10)
    assert sim.events() == []
    sim.vad([0.8])
    events = sim.events()
    assert types(events) == ["input_audio_buffer.speech_started"]
    assert events[0]["audio_start_ms"] == 10 * MS_PER_FRAME - 300
    # Hysteresis: speech continues above threshold - 0.15, ends below it.
    sim.vad([0.66] * 10)
    assert sim.events() == []
    sim.vad([0.64] * 7)
    assert sim.types()[0] == "input_audio_buffer.speech_stopped"


def test_speech_during_vad_off_makes_no_events() -> None:
    sim = Sim(session={"audio": {"input": {"turn_detection": None}}})
    speak(sim, 5, 20, 20)
    assert sim.events() == []
    assert sim.commands() == []


def test_clear_drops_speech_in_progress() -> None:
    sim = vad_session()
    speak(sim, 5, 5, 0)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.types() == ["input_audio_buffer.cleared"]
    speak(sim, 0, 0, 20)
    assert sim.events() == []


def test_client_commit_during_speech_uses_the_speech_item_id() -> None:
    sim = vad_session()
    speak(sim, 0, 10, 0)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    sim.send({"type": "input_audio_buffer.commit"})
    events = sim.events()
    assert types(events)[:3] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert events[0]["item_id"] == "item_1"


# ------------------------------------------------------------------ idle timeout (spec §5.10)


def _answered_with_audio(sim: Sim, audio_ms: int, done_at_ms: int) -> None:
    add_user_text(sim, "hi")
    sim.send({"type": "response.create"})
    sim.backend(be.ResponseText("resp_1", "Hello!"))
    sim.backend(be.ResponseAudio("resp_1", pcm(audio_ms)))
    sim.time(done_at_ms)
    sim.backend(be.ResponseGenerated("resp_1", "stop", 3, 3))
    assert sim.types()[-2:] == ["response.done", "rate_limits.updated"]
    sim.commands()


def test_idle_timeout_not_armed_before_a_response() -> None:
    sim = vad_session(idle_timeout_ms=5000)
    sim.audio(pcm(1000))
    sim.time(60_000)
    assert sim.events() == []
    assert sim.commands() == []


def test_idle_timeout_fires_after_response_done_plus_audio() -> None:
    sim = vad_session(idle_timeout_ms=5000)
    _answered_with_audio(sim, audio_ms=1000, done_at_ms=2000)
    sim.audio(frames_pcm(31))
    sim.vad([0.0] * 31)
    sim.time(2000 + 1000 + 5000 - 1)
    assert sim.events() == []
    assert sim.session.next_deadline_ms() == sim.session.created_ms + 8000
    sim.time(8000)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    timeout = events[0]
    # Idle audio outside speech is trimmed to the prefix padding (31 frames = 992 ms).
    assert timeout["audio_start_ms"] == 992 - 300
    assert timeout["audio_end_ms"] == 992
    assert timeout["item_id"] == "item_3"
    assert events[1]["item_id"] == "item_3"
    assert events[1]["previous_item_id"] == "item_2"
    assert events[4]["response"]["id"] == "resp_2"
    (command,) = sim.commands()
    assert isinstance(command, Transcribe)
    assert command.item_id == "item_3"
    assert len(command.pcm16) == 300 * 48
    # It fires once.
    sim.time(60_000)
    assert sim.events() == []


def test_speech_disarms_the_idle_timer() -> None:
    sim = vad_session(idle_timeout_ms=5000, create_response=False)
    _answered_with_audio(sim, audio_ms=0, done_at_ms=1000)
    speak(sim, 0, 3, 0)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    sim.time(10_000)
    assert sim.events() == []


# ------------------------------------------------------------------ barge-in (spec §5.6)


def _streaming_audio_response(sim: Sim) -> None:
    add_user_text(sim, "tell me a story")
    sim.send({"type": "response.create"})
    assert sim.types() == ["response.created"]
    assert [type(c) for c in sim.commands()] == [Generate]
    sim.backend(be.ResponseText("resp_1", "Once upon"))
    sim.backend(be.ResponseAudio("resp_1", pcm(500)))
    assert sim.types() == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]


def test_barge_in_cancels_the_response() -> None:
    sim = vad_session()
    _streaming_audio_response(sim)
    speak(sim, 0, 3, 0)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[0]["item_id"] == "item_3"
    assert events[4]["item"]["status"] == "incomplete"
    assert events[5]["item"]["status"] == "incomplete"
    assert events[5]["item"]["content"] == [{"type": "output_audio", "transcript": "Once upon"}]
    response = events[6]["response"]
    assert response["id"] == "resp_1"
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert sim.commands() == [CancelResponse("resp_1")]
    # Late results of the cancelled response are dropped.
    sim.backend(be.ResponseAudio("resp_1", pcm(200)))
    sim.backend(be.ResponseText("resp_1", " a time"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    assert sim.events() == []
    assert sim.commands() == []
    # The user's turn goes on to a new response.
    speak(sim, 0, 0, 7)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    assert events[1]["previous_item_id"] == "item_2"
    assert events[4]["response"]["id"] == "resp_2"


def test_no_barge_in_without_interrupt_response() -> None:
    sim = vad_session(interrupt_response=False)
    _streaming_audio_response(sim)
    speak(sim, 0, 3, 7)
    assert sim.types() == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert [type(c) for c in sim.commands()] == [Transcribe]
    sim.backend(be.ResponseAudio("resp_1", pcm(100)))
    assert sim.types() == ["response.output_audio.delta"]
    # The queued turn is answered once the running response is done.
    sim.backend(be.ResponseGenerated("resp_1", "stop", 3, 3))
    events = sim.events()
    assert types(events)[-3:] == ["response.done", "rate_limits.updated", "response.created"]
    assert events[-3]["response"]["status"] == "completed"
    assert events[-1]["response"]["id"] == "resp_2"
