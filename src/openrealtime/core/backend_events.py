"""Backend events: results of commands, fed back into the core by the driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SpeechProbabilities:
    """VAD output for the audio of one :class:`~openrealtime.core.commands.DetectSpeech`.

    Each probability covers ``frame_samples`` consecutive session samples, continuing from the
    previous batch (the i-th probability of the session covers frame i).
    """

    probabilities: tuple[float, ...]
    frame_samples: int


@dataclass(frozen=True)
class TurnEvaluated:
    """Answer to :class:`~openrealtime.core.commands.EvaluateTurn`: P(the turn is complete)."""

    item_id: str
    probability: float


@dataclass(frozen=True)
class TranscriptionDelta:
    """Partial transcript text of a user audio item."""

    item_id: str
    text: str


@dataclass(frozen=True)
class TranscriptionCompleted:
    """Final transcript of a user audio item (``language``: what the STT heard, if it says)."""

    item_id: str
    transcript: str
    audio_seconds: float
    language: str | None = None


@dataclass(frozen=True)
class TranscriptionFailed:
    """The STT engine failed on a user audio item."""

    item_id: str
    code: str
    message: str


@dataclass(frozen=True)
class ResponseFirstToken:
    """The language model produced its first token for this response (latency stamp)."""

    response_id: str


@dataclass(frozen=True)
class ResponseText:
    """Assistant text. In audio mode: the transcript of the audio chunks that follow it."""

    response_id: str
    text: str


@dataclass(frozen=True)
class ResponseAudio:
    """Assistant audio, PCM16 at 24 kHz."""

    response_id: str
    pcm16: bytes


@dataclass(frozen=True)
class ResponseToolCall:
    """The model started function call number ``index`` of this response."""

    response_id: str
    index: int
    name: str


@dataclass(frozen=True)
class ResponseToolArguments:
    """A piece of the JSON arguments of function call ``index``."""

    response_id: str
    index: int
    delta: str


@dataclass(frozen=True)
class ResponseGenerated:
    """Generation (and synthesis) finished; the response can complete."""

    response_id: str
    finish_reason: Literal["stop", "length", "tool_calls"]
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class ResponseFailed:
    """An engine failed while producing this response."""

    response_id: str
    code: str
    message: str


@dataclass(frozen=True)
class PlaybackStarted:
    """The transport began playing this response's audio (WebRTC output buffer, spec §1.3)."""

    response_id: str


@dataclass(frozen=True)
class PlaybackDrained:
    """Every sample of this response's audio has been played (after its ``EndPlayback``)."""

    response_id: str


@dataclass(frozen=True)
class PlaybackCleared:
    """Answer to :class:`~openrealtime.core.commands.ClearPlayback`, one per response cut off.

    ``played`` holds, for each of the response's items that still had unplayed audio, the
    bytes of its PCM16 24 kHz audio that were played before the cut: the exact point at which
    the user stopped hearing it (spec §5.7).
    """

    response_id: str
    started: bool
    """Whether any of the response's audio had been played."""
    played: tuple[tuple[str, int], ...]
    """``(item_id, played_bytes)`` pairs."""


@dataclass(frozen=True)
class DtmfReceived:
    """A keypad digit the caller pressed (RFC 4733 ``telephone-event`` over SIP, spec §1.5)."""

    digit: str
    received_at_s: int
    """Unix seconds when the digit ended."""


BackendEvent = (
    SpeechProbabilities
    | TurnEvaluated
    | TranscriptionDelta
    | TranscriptionCompleted
    | TranscriptionFailed
    | ResponseFirstToken
    | ResponseText
    | ResponseAudio
    | ResponseToolCall
    | ResponseToolArguments
    | ResponseGenerated
    | ResponseFailed
    | PlaybackStarted
    | PlaybackDrained
    | PlaybackCleared
    | DtmfReceived
)
