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
class CancelResponse:
    """Stop every engine task of this response now; its later results are ignored."""

    response_id: str


@dataclass(frozen=True)
class CloseSession:
    """Close the connection with this WebSocket close code after sending pending events."""

    code: int
    reason: str


Command = (
    DetectSpeech
    | EvaluateTurn
    | Listen
    | StopListening
    | Transcribe
    | Generate
    | CancelResponse
    | CloseSession
)
