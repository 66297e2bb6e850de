"""Commands: work the core asks the runtime to do (design.md data flow).

The core never calls an engine; it emits these frozen records and the driver runs them, feeding
results back as :mod:`openrealtime.core.backend_events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from openrealtime.backends.base import ChatMessage, ToolChoice, ToolSpec


@dataclass(frozen=True)
class DetectSpeech:
    """Run the session's VAD stream over this audio (PCM16, 24 kHz); answer with probabilities."""

    pcm16: bytes


@dataclass(frozen=True)
class EvaluateTurn:
    """Ask the turn-completion model whether this speech (PCM16, 24 kHz) is a finished turn."""

    item_id: str
    pcm16: bytes


@dataclass(frozen=True)
class Listen:
    """Speech audio of a user turn still being spoken (PCM16, 24 kHz), in order.

    A streaming STT engine may decode it as it comes; the :class:`Transcribe` for the same item
    then only has to finish the stream. Engines that cannot stream ignore it.
    """

    item_id: str
    pcm16: bytes


@dataclass(frozen=True)
class StopListening:
    """The speech of this item was thrown away (buffer cleared); drop its stream."""

    item_id: str


@dataclass(frozen=True)
class Transcribe:
    """Transcribe a committed user audio item (PCM16, 24 kHz)."""

    item_id: str
    content_index: int
    pcm16: bytes
    model: str | None
    language: str | None
    prompt: str | None


@dataclass(frozen=True)
class Generate:
    """Run the language model (and TTS for audio output) for one response."""

    response_id: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...]
    tool_choice: ToolChoice
    max_output_tokens: int | None
    modality: Literal["audio", "text"]
    voice: str
    speed: float
    session_key: str | None


@dataclass(frozen=True)
class Speculate:
    """The user went quiet: prepare the answer this turn will probably get, without sending it.

    ``template`` is the :class:`Generate` the session would issue if the turn ended now, minus
    the user's words (its ``response_id`` is empty). The runtime may take the transcript of the
    speech so far (from the item's :class:`Listen` stream) and start generating; when the real
    :class:`Generate` arrives and equals ``template`` plus a user message with that transcript,
    the prepared output is used for it, else it is thrown away. Never visible on the wire.
    """

    item_id: str
    template: Generate


@dataclass(frozen=True)
class DropSpeculation:
    """The user went on speaking (or the speech was cleared): the prepared answer is stale."""

    item_id: str


@dataclass(frozen=True)
class CancelResponse:
    """Stop every engine task of this response now; its later results are ignored."""

    response_id: str


@dataclass(frozen=True)
class CloseSession:
    """Close the connection with this WebSocket close code after sending pending events."""

    code: int
    reason: str


@dataclass(frozen=True)
class PlayAudio:
    """Queue assistant audio (PCM16, 24 kHz) on the transport's output buffer (WebRTC).

    Sent instead of ``response.output_audio.delta`` when the transport plays audio itself;
    the runtime answers with ``PlaybackStarted`` once the response's first sample plays.
    """

    response_id: str
    item_id: str
    pcm16: bytes


@dataclass(frozen=True)
class EndPlayback:
    """No more audio will come for this response: report ``PlaybackDrained`` once it played."""

    response_id: str


@dataclass(frozen=True)
class ClearPlayback:
    """Drop every unplayed sample of the output buffer now; report ``PlaybackCleared``."""


Command = (
    DetectSpeech
    | EvaluateTurn
    | Listen
    | StopListening
    | Transcribe
    | Generate
    | Speculate
    | DropSpeculation
    | CancelResponse
    | CloseSession
    | PlayAudio
    | EndPlayback
    | ClearPlayback
)
