"""False interruptions over WebRTC: a held answer resumes or is cut off (core/turn_taking.py).

Transcripts of a call (the transport plays the audio) with the server's default options: speech
over a playing answer pauses it; 600 ms of speech or a transcript with a real word interrupts
it as a barge-in at onset would have; a backchannel, a failed transcription or no transcript
within 2 s resumes it, and that turn gets no response. Over a WebSocket, or with the option
off, every barge-in interrupts at once.
"""

from __future__ import annotations

from typing import Any

from openrealtime.core import backend_events as be
from openrealtime.core.commands import (
    CancelResponse,
    ClearPlayback,
    Command,
    EndPlayback,
    Generate,
    PausePlayback,
    PlayAudio,
    ResumePlayback,
    Transcribe,
)
from openrealtime.core.input_buffer import BYTES_PER_MS
from openrealtime.core.turn_taking import INTERRUPT_AT_ONCE, TurnOptions
from tests.core.sim import Sim, pcm, types
from tests.core.turns import call, heard, play_answer, silence, speech

CANCELLED = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "rate_limits.updated",
]
COMMITTED = [
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
]


def kinds(commands: list[Command]) -> list[type]:
    return [type(c) for c in commands]


def held(sim: Sim) -> None:
    """Speech (item_3) starts over resp_1's playing audio: speech_started, and a pause only."""
    speech(sim)
    events = sim.events()
    assert types(events) == ["input_audio_buffer.speech_started"]
    assert events[0]["item_id"] == "item_3"
    assert sim.commands() == [PausePlayback()]


def short_turn(sim: Sim) -> None:
    """The held speech ends early: item_3 is committed, nothing answers it yet."""
    silence(sim)
    assert sim.types() == COMMITTED
    assert kinds(sim.commands()) == [Transcribe]


def cut_at(sim: Sim, played_ms: int) -> list[dict[str, Any]]:
    """The runtime's answer to ClearPlayback: it had played ``played_ms`` of item_2."""
    sim.backend(be.PlaybackCleared("resp_1", True, (("item_2", played_ms * BYTES_PER_MS),)))
    return sim.events()


def test_speech_over_a_playing_answer_pauses_it_and_nothing_else() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    # The response goes on generating; its audio is queued behind the pause.
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 2)))
    assert kinds(sim.commands()) == [PlayAudio]
    assert sim.events() == []


def test_long_speech_is_a_real_interruption_on_its_600th_ms() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    speech(sim, 15)  # 18 frames = 576 ms since the onset: still held
    assert sim.events() == []
    assert sim.commands() == []
    speech(sim, 1)  # 19 frames = 608 ms
    events = sim.events()
    assert types(events) == CANCELLED
    assert events[5]["response"]["status_details"] == {
        "type": "cancelled",
        "reason": "turn_detected",
    }
    assert sim.commands() == [CancelResponse("resp_1"), EndPlayback("resp_1"), ClearPlayback()]
    # Nothing played during the pause: the truncation is where it began.
    events = cut_at(sim, 700)
    assert types(events) == ["output_audio_buffer.cleared", "conversation.item.truncated"]
    assert events[1]["audio_end_ms"] == 700
    # The user's turn goes on as usual and is answered.
    silence(sim)
    assert sim.types() == [*COMMITTED, "response.created"]


def test_a_short_turn_with_real_words_interrupts_and_is_answered() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    short_turn(sim)
    heard(sim, "item_3", "Wait, what?")
    events = sim.events()
    assert types(events) == [
        "conversation.item.input_audio_transcription.completed",
        *CANCELLED,
        "response.created",
    ]
    assert events[6]["response"]["status_details"]["reason"] == "turn_detected"
    assert events[8]["response"]["id"] == "resp_2"
    commands = sim.commands()
    assert commands[:3] == [CancelResponse("resp_1"), EndPlayback("resp_1"), ClearPlayback()]
    assert kinds(commands[3:]) == [Generate]
    assert types(cut_at(sim, 500)) == ["output_audio_buffer.cleared", "conversation.item.truncated"]


def test_a_backchannel_resumes_the_answer_and_gets_no_response() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    short_turn(sim)
    heard(sim, "item_3", "Mm-hm.")
    events = sim.events()
    assert types(events) == ["conversation.item.input_audio_transcription.completed"]
    assert sim.commands() == [ResumePlayback()]
    # The answer finishes as if nothing happened: completed, played to the end, not truncated.
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 2)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    events = sim.events()
    assert types(events)[-2:] == ["response.done", "rate_limits.updated"]
    assert events[-2]["response"]["status"] == "completed"
    assert "response.created" not in types(events)
    assert kinds(sim.commands()) == [PlayAudio, EndPlayback]
    sim.backend(be.PlaybackDrained("resp_1"))
    assert sim.types() == ["output_audio_buffer.stopped"]
    # The user's "mm-hm" stays in the conversation, after the answer it overlapped.
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_3"})
    item = sim.events()[0]["item"]
    assert item["content"][0]["transcript"] == "Mm-hm."


def test_a_failed_transcription_resumes_the_answer() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    short_turn(sim)
    sim.backend(be.TranscriptionFailed("item_3", "stt_failed", "no"))
    assert sim.types() == ["conversation.item.input_audio_transcription.failed"]
    assert sim.commands() == [ResumePlayback()]


def test_no_transcript_within_the_timeout_resumes_the_answer() -> None:
    sim = call()
    play_answer(sim)
    sim.time(1000)
    held(sim)
    short_turn(sim)  # speech_stopped at 1000 ms
    assert sim.session.next_deadline_ms() == sim.session.created_ms + 3000
    sim.time(2999)
    assert sim.commands() == []
    sim.time(3000)
    assert sim.commands() == [ResumePlayback()]
    assert sim.events() == []
    # A transcript that comes after the decision changes nothing.
    heard(sim, "item_3", "Stop right there")
    assert sim.types() == ["conversation.item.input_audio_transcription.completed"]
    assert sim.commands() == []


def test_the_timeout_restarts_when_more_speech_ends() -> None:
    sim = call(options=TurnOptions(false_interruption_timeout_ms=500))
    play_answer(sim)
    held(sim)
    short_turn(sim)
    sim.time(400)
    speech(sim)  # item_4, still held: no second pause
    assert sim.types() == ["input_audio_buffer.speech_started"]
    assert sim.commands() == []
    sim.time(600)
    assert sim.commands() == []  # the timer waits for this speech to end
    silence(sim)
    sim.commands()
    heard(sim, "item_3", "yeah")
    assert sim.commands() == []  # item_4 is still unheard
    heard(sim, "item_4", "okay")
    assert sim.commands() == [ResumePlayback()]


def test_the_response_finishes_while_paused_and_plays_out_after() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    events = sim.events()
    assert events[-2]["response"]["status"] == "completed"
    assert sim.commands() == [EndPlayback("resp_1")]
    short_turn(sim)
    heard(sim, "item_3", "uh-huh")
    assert sim.commands() == [ResumePlayback()]
    sim.events()
    sim.backend(be.PlaybackDrained("resp_1"))
    assert sim.types() == ["output_audio_buffer.stopped"]


def test_a_real_interruption_after_the_response_is_done_still_cuts_and_truncates() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    short_turn(sim)
    heard(sim, "item_3", "Hold on a second")
    assert sim.types() == [
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    commands = sim.commands()
    assert commands[0] == ClearPlayback()
    assert kinds(commands[1:]) == [Generate]
    events = cut_at(sim, 1200)
    assert types(events) == ["output_audio_buffer.cleared", "conversation.item.truncated"]
    assert events[1]["audio_end_ms"] == 1200


def test_with_the_option_off_speech_interrupts_at_once() -> None:
    sim = call(options=INTERRUPT_AT_ONCE)
    play_answer(sim)
    speech(sim)
    assert sim.types() == ["input_audio_buffer.speech_started", *CANCELLED]
    assert sim.commands() == [CancelResponse("resp_1"), EndPlayback("resp_1"), ClearPlayback()]


def test_over_a_websocket_speech_interrupts_at_once() -> None:
    """The client owns playback (and stops it on speech_started): nothing could be resumed."""
    sim = call(playback=False)
    play_answer(sim)
    speech(sim)
    assert sim.types() == ["input_audio_buffer.speech_started", *CANCELLED]
    assert sim.commands() == [CancelResponse("resp_1")]


def test_speech_before_any_audio_plays_interrupts_at_once() -> None:
    """Nothing is playing yet (the model is still thinking): there is nothing to hold."""
    sim = call()
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    speech(sim)
    assert sim.types()[:1] == ["input_audio_buffer.speech_started"]
    assert sim.commands() == [CancelResponse("resp_1")]


def test_turning_detection_off_resumes_a_held_answer() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    assert sim.types() == ["session.updated"]
    assert sim.commands() == [ResumePlayback()]


def test_clearing_the_held_speech_resumes_the_answer() -> None:
    sim = call()
    play_answer(sim)
    held(sim)
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.types() == ["input_audio_buffer.cleared"]
    assert sim.commands() == [ResumePlayback()]


def test_a_client_clear_during_the_pause_ends_it() -> None:
    """output_audio_buffer.clear cuts the audio and unpauses the buffer; no resume follows."""
    sim = call()
    play_answer(sim)
    held(sim)
    sim.send({"type": "output_audio_buffer.clear"})
    assert sim.commands() == [ClearPlayback()]
    assert types(cut_at(sim, 300)) == ["output_audio_buffer.cleared"]
    short_turn(sim)
    heard(sim, "item_3", "mm")
    assert sim.commands() == []
