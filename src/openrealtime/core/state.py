"""Every state machine of a session, written down (design.md house rule 2; h11 ``_state.py``).

Each machine is an enum plus a transition table ``{(state, trigger): next_state}``. A move not in
the table raises :class:`InvalidTransition`, which the session reports as a ``server_error``
naming the machine, the state and the trigger.

The turn-taking machine (who has the floor: the user's turn, semantic pauses, barge-in and
false interruptions) is written down with its logic in :mod:`openrealtime.core.turn_taking`.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

S = TypeVar("S", bound=Enum)


class InvalidTransition(Exception):
    """A trigger arrived in a state where the table does not allow it."""

    def __init__(self, machine: str, state: Enum, trigger: str) -> None:
        super().__init__(f"{machine}: '{trigger}' is not allowed in state {state.value!r}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


class SessionState(Enum):
    """The session as a whole (spec §1.7)."""

    OPEN = "open"
    CLOSED = "closed"


SESSION_TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.OPEN, "close"): SessionState.CLOSED,
}


class SpeechState(Enum):
    """Server VAD over the input audio buffer (spec §5.2).

    The hysteresis of :class:`~openrealtime.core.turn_detection.ServerVadDetector`; a commit, a
    clear or turning detection off resets it (trigger ``clear``).
    """

    SILENCE = "silence"
    SPEAKING = "speaking"


SPEECH_TRANSITIONS: dict[tuple[SpeechState, str], SpeechState] = {
    (SpeechState.SILENCE, "speech_started"): SpeechState.SPEAKING,
    (SpeechState.SPEAKING, "speech_stopped"): SpeechState.SILENCE,
    (SpeechState.SPEAKING, "clear"): SpeechState.SILENCE,
}


class ResponseState(Enum):
    """One response (spec §4.3): waits for user transcripts, generates, ends in a status."""

    WAITING_INPUT = "waiting_input"
    GENERATING = "generating"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"
    FAILED = "failed"


RESPONSE_TRANSITIONS: dict[tuple[ResponseState, str], ResponseState] = {
    (ResponseState.WAITING_INPUT, "input_ready"): ResponseState.GENERATING,
    (ResponseState.WAITING_INPUT, "cancel"): ResponseState.CANCELLED,
    (ResponseState.WAITING_INPUT, "fail"): ResponseState.FAILED,
    (ResponseState.GENERATING, "complete"): ResponseState.COMPLETED,
    (ResponseState.GENERATING, "length"): ResponseState.INCOMPLETE,
    (ResponseState.GENERATING, "cancel"): ResponseState.CANCELLED,
    (ResponseState.GENERATING, "fail"): ResponseState.FAILED,
}

TERMINAL_RESPONSE_STATES = frozenset(
    {
        ResponseState.COMPLETED,
        ResponseState.CANCELLED,
        ResponseState.INCOMPLETE,
        ResponseState.FAILED,
    }
)


def advance(machine: str, table: dict[tuple[S, str], S], state: S, trigger: str) -> S:
    """Return the next state for ``trigger``, or raise :class:`InvalidTransition`."""
    try:
        return table[(state, trigger)]
    except KeyError:
        raise InvalidTransition(machine, state, trigger) from None
