"""Commands: work the core asks the runtime to do (design.md data flow).

The core never calls an engine; it emits these frozen records and the driver runs them, feeding
results back as :mod:`openrealtime.core.backend_events`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from openrealtime.chat import ChatMessage, GenerationRequest, ToolChoice, ToolSpec


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
    """Run the language model (and TTS for audio output) for one response.

    ``request`` is what the engine gets as it is (the shared chat vocabulary); the rest says
    what becomes of its answer.
    """

    response_id: str
    request: GenerationRequest
    modality: Literal["audio", "text"]
    voice: str
    speed: float
    language: str | None = None
    """The language to answer in, for the speech engine (``None``: English, as configured)."""

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The context: system instructions, then the conversation as chat messages."""
        return self.request.messages

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """The tools the model may call."""
        return self.request.tools

    @property
    def tool_choice(self) -> ToolChoice:
        """``auto``, ``none``, ``required`` or a function name."""
        return self.request.tool_choice

    @property
    def max_output_tokens(self) -> int | None:
        """The output cap (``None``: the server's own cap, for ``"inf"``)."""
        return self.request.max_output_tokens

    @property
    def session_key(self) -> str | None:
        """The conversation's key for an engine's cache (``None`` for out-of-band responses)."""
        return self.request.session_key

    def with_messages(self, messages: tuple[ChatMessage, ...]) -> Generate:
        """The same response with another context."""
        return replace(self, request=replace(self.request, messages=messages))


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
    """Drop every unplayed sample of the output buffer now; report ``PlaybackCleared``.

    Also ends a pause (:class:`PausePlayback`): the next audio queued plays at once.
    """


@dataclass(frozen=True)
class PausePlayback:
    """Stop handing out the output buffer's audio, keeping all of it, until resumed or cleared.

    The transport's track goes on sending silence in real time; nothing queued is consumed,
    so the play position of every item stays where it was (WebRTC; the user may be
    interrupting, see :mod:`openrealtime.core.turn_taking`). Audio queued meanwhile waits.
    """


@dataclass(frozen=True)
class ResumePlayback:
    """Play the output buffer again from where :class:`PausePlayback` stopped it."""


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
    | PausePlayback
    | ResumePlayback
)
