"""The turn-taking table, walked move by move through real session inputs (core/turn_taking.py).

Every ``(state, trigger)`` of :data:`TURN_TRANSITIONS` has a case here: a session brought into
``state`` by audio, VAD results, client events, backend results and time only, then the input
that should fire ``trigger``. A spy on the module's ``advance`` checks that exactly that move
happened, and :func:`test_every_move_of_the_table_has_a_case` that the cases cover the table.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from openrealtime.core import backend_events as be
from openrealtime.core import turn_taking
from openrealtime.core.state import InvalidTransition
from openrealtime.core.turn_taking import TURN_TRANSITIONS, TurnState, claims_the_turn
from tests.core.sim import Sim, pcm
from tests.core.turns import SEMANTIC_VAD, SERVER_VAD, call, heard, play_answer, silence, speech

LI, SP, PA = TurnState.LISTENING, TurnState.SPEAKING, TurnState.PAUSE
OV, OP, CH = TurnState.OVERLAP, TurnState.OVERLAP_PAUSE, TurnState.CHECKING

Step = Callable[[Sim], None]


# ------------------------------------------------------------------ how to reach each state


def listening() -> Sim:
    return call()


def speaking() -> Sim:
    sim = call()
    speech(sim)
    return sim


def semantic_speaking() -> Sim:
    sim = call(SEMANTIC_VAD)
    speech(sim)
    return sim


def paused() -> Sim:
    sim = semantic_speaking()
    silence(sim)  # the turn model is asked; speech item_1 stays open
    return sim


def overlapping(td: dict[str, object] = SERVER_VAD) -> Sim:
    sim = call(td)
    play_answer(sim)
    speech(sim)  # speech item_3 over resp_1's audio: held
    return sim


def overlap_paused() -> Sim:
    sim = overlapping(SEMANTIC_VAD)
    silence(sim)
    return sim


def checking() -> Sim:
    sim = overlapping()
    silence(sim)  # item_3 committed; its transcript is awaited
    return sim


def overlapping_again() -> Sim:
    """``overlap`` with item_3 still unheard: more speech (item_4) while checking."""
    sim = checking()
    speech(sim)
    return sim


def overlap_paused_again() -> Sim:
    """``overlap_pause`` of item_4 with item_3 still unheard."""
    sim = overlap_paused()
    sim.backend(be.TurnEvaluated("item_3", 0.99))
    speech(sim)
    silence(sim)
    return sim


def idle_armed() -> Sim:
    """``listening`` with the idle timer armed: a response without audio is done at 0 ms."""
    sim = call({"type": "server_vad", "idle_timeout_ms": 1000})
    sim.send({"type": "response.create"})
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    return sim


REACH: dict[TurnState, Callable[[], Sim]] = {
    LI: listening,
    SP: speaking,
    PA: paused,
    OV: overlapping,
    OP: overlap_paused,
    CH: checking,
}


# ------------------------------------------------------------------ inputs


def commit(sim: Sim) -> None:
    sim.audio(pcm(200))  # appended, not yet seen by the VAD: the buffer holds >= 100 ms
    sim.send({"type": "input_audio_buffer.commit"})


def clear(sim: Sim) -> None:
    sim.send({"type": "input_audio_buffer.clear"})


def vad_off(sim: Sim) -> None:
    sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )


def turn_over(item_id: str) -> Step:
    return lambda sim: sim.backend(be.TurnEvaluated(item_id, 0.99))


def transcript(item_id: str, text: str) -> Step:
    return lambda sim: heard(sim, item_id, text)


def at(ms: int) -> Step:
    return lambda sim: sim.time(ms)


def then(*steps: Step) -> Step:
    def run(sim: Sim) -> None:
        for step in steps:
            step(sim)

    return run


CASES: dict[tuple[TurnState, str], tuple[Callable[[], Sim], Step]] = {
    (LI, "speech_started"): (listening, speech),
    (SP, "pause"): (semantic_speaking, silence),
    (PA, "speech_continued"): (paused, speech),
    (SP, "speech_stopped"): (speaking, silence),
    (PA, "speech_stopped"): (paused, turn_over("item_1")),
    (LI, "idle_timeout"): (idle_armed, at(1000)),
    (LI, "commit"): (listening, commit),
    (SP, "commit"): (speaking, commit),
    (PA, "commit"): (paused, commit),
    (CH, "commit"): (checking, commit),
    (LI, "clear"): (listening, clear),
    (SP, "clear"): (speaking, clear),
    (PA, "clear"): (paused, clear),
    (CH, "clear"): (checking, clear),
    (LI, "overlap_started"): (listening, then(play_answer, speech)),
    (CH, "speech_started"): (checking, speech),
    (OV, "pause"): (lambda: overlapping(SEMANTIC_VAD), silence),
    (OP, "speech_continued"): (overlap_paused, speech),
    (OV, "speech_stopped"): (overlapping, silence),
    (OP, "speech_stopped"): (overlap_paused, turn_over("item_3")),
    (OV, "commit"): (overlapping, commit),
    (OP, "commit"): (overlap_paused, commit),
    (OV, "clear"): (overlapping_again, clear),
    (OP, "clear"): (overlap_paused_again, clear),
    (OV, "long_speech"): (overlapping, lambda sim: speech(sim, 16)),
    (OV, "words"): (overlapping_again, transcript("item_3", "Wait, stop.")),
    (OP, "words"): (overlap_paused_again, transcript("item_3", "Wait, stop.")),
    (CH, "words"): (checking, transcript("item_3", "Wait, stop.")),
    (CH, "no_words"): (checking, transcript("item_3", "Mm-hm.")),
    (CH, "timeout"): (checking, at(2000)),
    **{(state, "vad_off"): (REACH[state], vad_off) for state in TurnState},
}


def test_every_move_of_the_table_has_a_case() -> None:
    assert set(CASES) == set(TURN_TRANSITIONS)


@pytest.mark.parametrize(
    ("state", "trigger"), list(CASES), ids=[f"{s.value}-{t}" for s, t in CASES]
)
def test_each_move_is_reached_through_session_inputs(
    state: TurnState, trigger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reach, act = CASES[(state, trigger)]
    sim = reach()
    assert sim.session._turns.state is state
    moves: list[tuple[TurnState, str, TurnState]] = []
    real = turn_taking.advance

    def recording(machine: str, table: dict, now: TurnState, name: str) -> TurnState:  # type: ignore[type-arg]
        after = real(machine, table, now, name)
        moves.append((now, name, after))
        return after

    monkeypatch.setattr(turn_taking, "advance", recording)
    act(sim)
    assert moves[0] == (state, trigger, TURN_TRANSITIONS[(state, trigger)]), moves
    assert all(t != "error" for t in sim.types())


def test_a_move_outside_the_table_is_refused() -> None:
    sim = listening()
    with pytest.raises(InvalidTransition, match="'long_speech' is not allowed in state"):
        sim.session._turns._move("long_speech")


@pytest.mark.parametrize(
    ("text", "claims"),
    [
        ("", False),
        ("Mm-hm.", False),
        ("mm hm", False),
        ("Mm-hmm!", False),
        ("Uh-huh, yeah.", False),
        ("Hmmm", False),
        ("OK. Okay, alright, sure, right, yep, yes.", False),
        ("um... uh", False),
        ("m m h m", False),  # PocketSphinx's spelling of flite's "mm hm"
        ("I", False),
        ("I want to know", True),
        ("Yeah, but wait.", True),
        ("Stop.", True),
        ("no", True),
        ("mm-no", True),
    ],
)
def test_backchannel_words(text: str, claims: bool) -> None:
    assert claims_the_turn(text) is claims
