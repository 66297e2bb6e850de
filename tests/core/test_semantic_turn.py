"""semantic_vad: pauses are judged by the turn model; eagerness sets the bar and the max wait."""

from __future__ import annotations

import pytest

from openrealtime.core import backend_events as be
from openrealtime.core.commands import EvaluateTurn, Generate, Transcribe
from openrealtime.core.semantic_turn import FIRST_CHECK_MS, MAX_WAIT_MS
from tests.core.sim import FRAME, RATE, Sim, frames_pcm

FRAME_MS = FRAME * 1000 // RATE  # 32


def semantic(eagerness: str = "auto", *, create_response: bool = True) -> Sim:
    return Sim(
        session={
            "audio": {
                "input": {
                    "turn_detection": {
                        "type": "semantic_vad",
                        "eagerness": eagerness,
                        "create_response": create_response,
                    }
                }
            }
        },
        turn_model=True,
    )


def frames(ms: int) -> int:
    return -(-ms // FRAME_MS)


def feed(sim: Sim, probs: list[float]) -> None:
    sim.audio(frames_pcm(len(probs)))
    sim.vad(probs)


def evaluations(sim: Sim) -> list[EvaluateTurn]:
    return [c for c in sim.commands() if isinstance(c, EvaluateTurn)]


def test_a_pause_asks_the_model_and_a_confident_answer_ends_the_turn() -> None:
    sim = semantic("auto")
    feed(sim, [0.0] * 5 + [0.9] * 20)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    feed(sim, [0.0] * frames(FIRST_CHECK_MS))
    assert sim.types() == []  # no speech_stopped yet: the model decides
    asked = evaluations(sim)
    assert len(asked) == 1 and asked[0].item_id == "item_1"
    assert len(asked[0].pcm16) >= 20 * FRAME * 2  # the speech so far
    sim.backend(be.TurnEvaluated("item_1", 0.9))
    assert sim.types() == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    assert [type(c) for c in sim.commands()] == [Transcribe]


def test_an_unfinished_turn_waits_and_the_user_goes_on_in_the_same_item() -> None:
    sim = semantic("auto")
    feed(sim, [0.9] * 10)
    sim.events()
    feed(sim, [0.0] * frames(FIRST_CHECK_MS))
    assert len(evaluations(sim)) == 1
    sim.backend(be.TurnEvaluated("item_1", 0.1))  # "What is the capital of ..."
    assert sim.types() == []
    feed(sim, [0.9] * 10)  # ... "France?"
    assert sim.types() == []  # no second speech_started: one turn
    feed(sim, [0.0] * frames(FIRST_CHECK_MS))
    asked = evaluations(sim)
    assert [a.item_id for a in asked] == ["item_1"]
    sim.backend(be.TurnEvaluated("item_1", 0.95))
    events = sim.events()
    assert events[0]["type"] == "input_audio_buffer.speech_stopped"
    assert events[0]["item_id"] == "item_1"


def test_the_model_is_asked_once_per_pause_about_the_first_200_ms() -> None:
    sim = semantic("low")
    feed(sim, [0.9] * 10)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    feed(sim, [0.0] * frames(FIRST_CHECK_MS))
    asked = evaluations(sim)
    assert len(asked) == 1
    speech_and_shown = (10 * FRAME + FIRST_CHECK_MS * RATE // 1000) * 2
    assert len(asked[0].pcm16) <= speech_and_shown
    sim.backend(be.TurnEvaluated("item_1", 0.5))  # below low's bar: wait
    feed(sim, [0.0] * 60)
    assert evaluations(sim) == []
    assert sim.types() == []


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_max_wait_ends_the_turn_whatever_the_model_says(eagerness: str) -> None:
    sim = semantic(eagerness, create_response=False)
    feed(sim, [0.9] * 10)
    sim.events()
    silent = 0
    while True:
        feed(sim, [0.0])
        silent += 1
        for asked in evaluations(sim):
            sim.backend(be.TurnEvaluated(asked.item_id, 0.0))
        if any(e["type"] == "input_audio_buffer.speech_stopped" for e in sim.events()):
            break
        assert silent < 1000
    waited_ms = silent * FRAME_MS
    assert MAX_WAIT_MS[eagerness] <= waited_ms < MAX_WAIT_MS[eagerness] + 2 * FRAME_MS


def test_eagerness_sets_the_bar() -> None:
    high, low = semantic("high"), semantic("low")
    for sim in (high, low):
        feed(sim, [0.9] * 10)
        feed(sim, [0.0] * frames(FIRST_CHECK_MS))
        evaluations(sim)
        sim.events()
        sim.backend(be.TurnEvaluated("item_1", 0.6))
    assert "input_audio_buffer.speech_stopped" in high.types()
    assert low.types() == []


def test_without_a_turn_model_semantic_vad_ends_turns_on_silence() -> None:
    sim = Sim(session={"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
    feed(sim, [0.9] * 10)
    sim.events()
    feed(sim, [0.0] * frames(600))
    assert "input_audio_buffer.speech_stopped" in sim.types()
    assert not any(isinstance(c, EvaluateTurn) for c in sim.commands())


def test_a_stale_answer_is_ignored() -> None:
    sim = semantic("high")
    feed(sim, [0.9] * 10)
    feed(sim, [0.0] * frames(FIRST_CHECK_MS))
    evaluations(sim)
    sim.events()
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.types() == ["input_audio_buffer.cleared"]
    sim.backend(be.TurnEvaluated("item_1", 1.0))
    assert sim.types() == []
    assert not any(isinstance(c, Generate) for c in sim.commands())
