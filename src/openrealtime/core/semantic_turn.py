"""``semantic_vad``: end the turn when the user *sounds finished*, not after a fixed silence.

Server VAD finds a pause; a turn-completion model (Smart Turn) is asked whether the words so
far make a finished turn. Eagerness sets how sure it must be, and how long a pause may last
before the turn ends anyway (spec §3.1: low 8 s, medium/auto 4 s, high 2 s).
Thresholds come from ``docs/turn-detection.md`` (measured on a labelled synthetic set).
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_CHECK_MS = 200
"""Silence after speech before the model is asked, and the silence it is shown.

The model is asked once per pause. Smart Turn's P(complete) rises with trailing silence for
unfinished phrases too, so asking again later mostly ends turns too early (65-100% of cut
phrases on our labelled set, docs/turn-detection.md); a "not finished" answer therefore holds
until the user speaks again or the max wait passes."""

THRESHOLDS = {"low": 0.8, "medium": 0.5, "auto": 0.5, "high": 0.4}
"""P(complete) at or above which the turn ends, per eagerness."""

MAX_WAIT_MS = {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}
"""Silence after which the turn ends whatever the model says (spec §7)."""

FALLBACK_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 300}
"""Without a turn model, semantic_vad ends turns on silence, eagerness-dependent."""


@dataclass
class TurnPause:
    """A pause inside a user turn while the model decides whether the turn is over."""

    item_id: str
    speech_end: int
    """Sample where the last speech frame ended."""
    ask_at: int
    """Sample position at which to ask the model."""
    asked: bool = False
    """The model was asked about this pause (once is all: see FIRST_CHECK_MS)."""
