"""Speculation: the core tells the runtime what answer a pause would get, before the turn ends.

``Speculate`` is a hint, never visible on the wire: the runtime may prepare the answer in the
``silence_duration_ms`` window and use it only if the real ``Generate`` turns out identical.
"""

from __future__ import annotations

from dataclasses import replace

from openrealtime.backends.base import ChatMessage
from openrealtime.core import backend_events as be
from openrealtime.core.commands import DropSpeculation, Generate, Speculate, Transcribe
from tests.core.sim import Sim, add_user_text, frames_pcm

# server_vad defaults: silence_duration_ms 200 = 6.25 Silero frames of 32 ms -> 7 frames.
SILENCE_FRAMES = 7


def sim_with(**session: object) -> Sim:
    return Sim(session={"instructions": "Be brief.", **session})


def feed(sim: Sim, probs: list[float]) -> None:
    sim.audio(frames_pcm(len(probs)))
    sim.vad(probs)


def test_a_pause_asks_for_the_answer_the_turn_would_get() -> None:
    sim = sim_with()
    add_user_text(sim, "Hi there")
    sim.events()
    sim.commands()
    feed(sim, [0.0] * 10 + [0.9] * 10 + [0.0])
    assert "input_audio_buffer.speech_stopped" not in sim.types()
    (spec,) = sim.commands(speculation=True)
    assert isinstance(spec, Speculate)
    assert spec.item_id == "item_2"
    assert spec.template.response_id == ""
    assert spec.template.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi there"),
    )
    # The turn ends as it would have; the Generate is the template plus the user's words.
    feed(sim, [0.0] * (SILENCE_FRAMES - 1))
    assert sim.types()[:2] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    (transcribe,) = sim.commands(speculation=True)
    assert isinstance(transcribe, Transcribe)
    sim.backend(be.TranscriptionCompleted("item_2", "What time is it", 1.0))
    (generate,) = sim.commands(speculation=True)
    assert isinstance(generate, Generate)
    expected = spec.template.messages + (ChatMessage("user", "What time is it"),)
    assert replace(generate, response_id="") == spec.template.with_messages(expected)


def test_speech_coming_back_drops_the_speculation() -> None:
    sim = sim_with()
    feed(sim, [0.0] * 10 + [0.9] * 10 + [0.1, 0.2])
    assert sim.types() == ["input_audio_buffer.speech_started"]
    (spec,) = sim.commands(speculation=True)
    assert isinstance(spec, Speculate)
    feed(sim, [0.9] * 5)
    assert sim.commands(speculation=True) == [DropSpeculation(spec.item_id)]
    assert sim.types() == []  # still one turn, nothing on the wire
    # The next pause asks again, with all the speech so far.
    feed(sim, [0.0])
    (again,) = sim.commands(speculation=True)
    assert isinstance(again, Speculate)
    assert again.item_id == spec.item_id


def test_clearing_the_buffer_drops_it() -> None:
    sim = sim_with()
    feed(sim, [0.0] * 10 + [0.9] * 10 + [0.0])
    (spec,) = sim.commands(speculation=True)
    sim.send({"type": "input_audio_buffer.clear"})
    assert DropSpeculation(spec.item_id) in sim.commands(speculation=True)


def test_turning_detection_off_drops_it() -> None:
    sim = sim_with()
    feed(sim, [0.0] * 10 + [0.9] * 10 + [0.0])
    (spec,) = sim.commands(speculation=True)
    sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    assert DropSpeculation(spec.item_id) in sim.commands(speculation=True)


def no_speculation(sim: Sim) -> None:
    feed(sim, [0.0] * 10 + [0.9] * 10 + [0.0])
    assert not any(isinstance(c, Speculate) for c in sim.commands(speculation=True))


def test_not_when_the_turn_creates_no_response() -> None:
    td = {"type": "server_vad", "create_response": False}
    no_speculation(sim_with(audio={"input": {"turn_detection": td}}))


def test_not_in_a_transcription_session() -> None:
    no_speculation(Sim(kind="transcription"))


def test_not_while_a_response_is_active() -> None:
    td = {"type": "server_vad", "interrupt_response": False}
    sim = sim_with(audio={"input": {"turn_detection": td}})
    sim.send({"type": "response.create"})
    sim.commands()
    no_speculation(sim)


def test_not_when_the_response_would_fail() -> None:
    sim = sim_with(tool_choice={"type": "function", "name": "nope"})
    no_speculation(sim)
