"""Shared steps of the turn-taking transcripts (test_turn_taking.py, test_false_interruption.py).

A *call* is a session whose transport plays the audio (WebRTC), with input transcription on so
that transcripts show as events, and the server's turn-taking options.
"""

from __future__ import annotations

from typing import Any

from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate
from openrealtime.core.turn_taking import TurnOptions
from tests.core.sim import Sim, add_user_text, pcm, speak

SERVER_VAD: dict[str, Any] = {"type": "server_vad"}  # silence_duration_ms 200: 7 frames
SEMANTIC_VAD: dict[str, Any] = {"type": "semantic_vad"}  # with the turn model: asked after 7
RESUME = TurnOptions(min_interruption_ms=600)
"""False interruptions resume; 600 ms of speech is real (the frame counts in these tests
assume it; the server's default is 1000), 2000 ms transcript timeout."""


def call(
    td: dict[str, Any] | None = None,
    *,
    options: TurnOptions | None = RESUME,
    playback: bool = True,
) -> Sim:
    """A session over WebRTC (``playback``) with these options, transcription on."""
    td = SERVER_VAD if td is None else td
    audio_input = {"turn_detection": td, "transcription": {"model": "whisper-1"}}
    return Sim(
        session={"instructions": "", "audio": {"input": audio_input}},
        turn_model=td.get("type") == "semantic_vad",
        playback=playback,
        turn_options=options,
    )


def play_answer(sim: Sim, audio_ms: int = 2000) -> None:
    """``resp_1`` answers user text ``item_1`` with ``item_2``; its audio is playing."""
    add_user_text(sim, "tell me a story")
    sim.send({"type": "response.create"})
    assert [type(c) for c in sim.commands()] == [Generate]
    sim.backend(be.ResponseText("resp_1", "Once upon a time there was a story."))
    sim.backend(be.ResponseAudio("resp_1", pcm(audio_ms, 1)))
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.events()
    sim.commands()


def speech(sim: Sim, frames: int = 3) -> None:
    """``frames`` VAD frames of speech (32 ms each)."""
    speak(sim, 0, frames, 0)


def silence(sim: Sim, frames: int = 7) -> None:
    """Enough silence to end a server_vad turn (or to ask the turn model), by default."""
    speak(sim, 0, 0, frames)


def heard(sim: Sim, item_id: str, transcript: str) -> None:
    """The STT's transcript of ``item_id``."""
    sim.backend(be.TranscriptionCompleted(item_id, transcript, 0.3))
