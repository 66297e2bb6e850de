"""Engine Protocols: the small surfaces the runtime drives (design.md house rule 4).

Every engine speaks in plain Python types; none of them knows the Realtime protocol. Audio that
crosses these Protocols is PCM16 little-endian mono at the rate the engine declares in
``sample_rate``; the runtime resamples at the boundary (design.md decision 2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from openrealtime.chat import (
    ChatMessage,
    ChatToolCall,
    GenerationRequest,
    ToolChoice,
    ToolSpec,
)

__all__ = [
    "ChatMessage",
    "ChatToolCall",
    "Engines",
    "GenerationDone",
    "GenerationEvent",
    "GenerationRequest",
    "LanguageModel",
    "PeekableSpeechStream",
    "SpeechStream",
    "SpeechToText",
    "StreamingSpeechToText",
    "SynthesisRequest",
    "TextChunk",
    "TextToSpeech",
    "ToolCallArguments",
    "ToolCallStart",
    "ToolChoice",
    "ToolSpec",
    "TranscriptDelta",
    "TranscriptFinal",
    "TranscriptionEvent",
    "TranscriptionRequest",
    "TurnDetector",
    "VadStream",
    "VoiceActivityDetector",
]

# --------------------------------------------------------------------------- VAD


@runtime_checkable
class VadStream(Protocol):
    """Per-session voice-activity state: feed audio, get one speech probability per frame."""

    frame_samples: int
    """Samples of *session* audio (24 kHz) covered by one probability."""

    def feed(self, pcm16_24k: bytes) -> list[float]:
        """Consume session audio (PCM16, 24 kHz) and return probabilities of completed frames.

        Call with every chunk the client appends, in order. The i-th probability returned over
        the stream's life covers session samples ``[i * frame_samples, (i + 1) * frame_samples)``.
        """
        ...

    def close(self) -> None:
        """Release the stream's resources; call once when the session ends."""
        ...


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """A VAD model shared by all sessions; each session opens its own stream."""

    name: str

    def open_stream(self) -> VadStream:
        """Create the per-session state; call once per session."""
        ...


# --------------------------------------------------------------------------- turn


@runtime_checkable
class TurnDetector(Protocol):
    """Semantic end-of-turn model (semantic_vad): how likely is the user's turn complete."""

    name: str
    sample_rate: int

    async def completion_probability(self, pcm16: bytes) -> float:
        """Return P(turn complete) for the current user turn's audio at ``sample_rate``."""
        ...


# --------------------------------------------------------------------------- STT


@dataclass(frozen=True)
class TranscriptionRequest:
    """One user audio item to transcribe (spec §3.1 ``audio.input.transcription``)."""

    pcm16: bytes
    sample_rate: int
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class TranscriptDelta:
    """A piece of transcript text, appended to what came before."""

    text: str


@dataclass(frozen=True)
class TranscriptFinal:
    """The final transcript; the last value an STT stream yields.

    ``language``: the ISO 639-1 code of the speech (``"fr"``) when the engine knows it (asked
    for or detected); ``None`` when it cannot tell (an English-only engine says nothing).
    """

    text: str
    audio_seconds: float
    language: str | None = None


TranscriptionEvent = TranscriptDelta | TranscriptFinal


@runtime_checkable
class SpeechToText(Protocol):
    """Transcribes a finished user audio item, streaming partial text when it can."""

    name: str
    sample_rate: int

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionEvent]:
        """Yield zero or more deltas, then exactly one :class:`TranscriptFinal`."""
        ...


@runtime_checkable
class SpeechStream(Protocol):
    """One utterance recognised while it is being spoken (see :class:`StreamingSpeechToText`)."""

    async def afeed(self, pcm16: bytes) -> str | None:
        """Decode more audio at the engine's rate; may return the current partial text."""
        ...

    async def afinish(self) -> str:
        """End the utterance and return the final transcript."""
        ...

    async def aclose(self) -> None:
        """Release the stream (after :meth:`afinish`, or to abandon it)."""
        ...


@runtime_checkable
class PeekableSpeechStream(SpeechStream, Protocol):
    """A stream that can tell, mid-utterance, what :meth:`afinish` would return right now.

    Used to prepare an answer during the user's pause (see ``core.commands.Speculate``).
    """

    async def apeek(self) -> str:
        """The final transcript of the audio fed so far, leaving the utterance open."""
        ...


@runtime_checkable
class StreamingSpeechToText(SpeechToText, Protocol):
    """An STT engine that can decode while the user speaks.

    The final text is then ready moments after the turn ends instead of a full decode later.
    """

    async def aopen_stream(self) -> SpeechStream:
        """Start recognising one utterance."""
        ...


# --------------------------------------------------------------------------- LLM


@dataclass(frozen=True)
class TextChunk:
    """Assistant text, appended to what came before."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """The model began a function call; ``index`` orders calls within the response."""

    index: int
    name: str
    call_id: str | None = None


@dataclass(frozen=True)
class ToolCallArguments:
    """A piece of a function call's JSON arguments."""

    index: int
    delta: str


@dataclass(frozen=True)
class GenerationDone:
    """The end of generation, with token usage."""

    finish_reason: Literal["stop", "length", "tool_calls"]
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


GenerationEvent = TextChunk | ToolCallStart | ToolCallArguments | GenerationDone


@runtime_checkable
class LanguageModel(Protocol):
    """Streams an assistant turn: text and/or tool calls, then :class:`GenerationDone`."""

    name: str

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Yield text chunks and tool-call pieces, then exactly one :class:`GenerationDone`."""
        ...


# --------------------------------------------------------------------------- TTS


@dataclass(frozen=True)
class SynthesisRequest:
    """Text to speak with one of the session's voices (spec §3.1 ``audio.output``)."""

    text: str
    voice: str = "alloy"
    speed: float = 1.0
    language: str | None = None
    """The text's language (ISO 639-1) when it is not English, for engines that must be told."""


@runtime_checkable
class TextToSpeech(Protocol):
    """Speaks text, streaming PCM16 at ``sample_rate`` as it is produced."""

    name: str
    sample_rate: int

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Yield PCM16 chunks (even byte counts) at ``sample_rate``."""
        ...


@dataclass
class Engines:
    """The set of engines one server runs with; shared by all sessions."""

    vad: VoiceActivityDetector
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    turn: TurnDetector | None = None
    extra: dict[str, object] = field(default_factory=dict)
