"""One model per GA server event the server emits (spec §2.3), named as the spec names it.

Nested objects (items, responses, sessions) are JSON dicts built by their own modules; the
conformance tests validate every emitted event with the official ``openai`` models.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from openrealtime.protocol.base import WireModel


class ServerEvent(WireModel):
    """Every server event carries an ``event_id`` and its ``type`` (spec §2.1)."""

    event_id: str
    type: str


class Error(ServerEvent):
    """``error``."""

    type: Literal["error"] = "error"
    error: dict[str, Any]


class SessionCreated(ServerEvent):
    """``session.created``."""

    type: Literal["session.created"] = "session.created"
    session: dict[str, Any]


class SessionUpdated(ServerEvent):
    """``session.updated``."""

    type: Literal["session.updated"] = "session.updated"
    session: dict[str, Any]


class ConversationItemAdded(ServerEvent):
    """``conversation.item.added``."""

    type: Literal["conversation.item.added"] = "conversation.item.added"
    item: dict[str, Any]
    previous_item_id: str | None = None


class ConversationItemDone(ServerEvent):
    """``conversation.item.done``."""

    type: Literal["conversation.item.done"] = "conversation.item.done"
    item: dict[str, Any]
    previous_item_id: str | None = None


class ConversationItemRetrieved(ServerEvent):
    """``conversation.item.retrieved``."""

    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: dict[str, Any]


class ConversationItemDeleted(ServerEvent):
    """``conversation.item.deleted``."""

    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemTruncated(ServerEvent):
    """``conversation.item.truncated``."""

    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemInputAudioTranscriptionDelta(ServerEvent):
    """``conversation.item.input_audio_transcription.delta``."""

    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int
    delta: str


class ConversationItemInputAudioTranscriptionCompleted(ServerEvent):
    """``conversation.item.input_audio_transcription.completed``."""

    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int
    transcript: str
    usage: dict[str, Any]


class ConversationItemInputAudioTranscriptionFailed(ServerEvent):
    """``conversation.item.input_audio_transcription.failed``."""

    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int
    error: dict[str, Any]


class InputAudioBufferSpeechStarted(ServerEvent):
    """``input_audio_buffer.speech_started``."""

    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(ServerEvent):
    """``input_audio_buffer.speech_stopped``."""

    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class InputAudioBufferCommitted(ServerEvent):
    """``input_audio_buffer.committed``."""

    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(ServerEvent):
    """``input_audio_buffer.cleared``."""

    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudioBufferTimeoutTriggered(ServerEvent):
    """``input_audio_buffer.timeout_triggered``."""

    type: Literal["input_audio_buffer.timeout_triggered"] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class OutputAudioBufferStarted(ServerEvent):
    """``output_audio_buffer.started``."""

    type: Literal["output_audio_buffer.started"] = "output_audio_buffer.started"
    response_id: str


class OutputAudioBufferStopped(ServerEvent):
    """``output_audio_buffer.stopped``."""

    type: Literal["output_audio_buffer.stopped"] = "output_audio_buffer.stopped"
    response_id: str


class OutputAudioBufferCleared(ServerEvent):
    """``output_audio_buffer.cleared``."""

    type: Literal["output_audio_buffer.cleared"] = "output_audio_buffer.cleared"
    response_id: str


class InputAudioBufferDtmfEventReceived(ServerEvent):
    """``input_audio_buffer.dtmf_event_received`` (SIP calls, spec §1.5): one keypad digit.

    The only server event without an ``event_id`` (the SDK's model and the documented example
    have none); ``event_id`` stays ``None`` and is left out of the JSON.
    """

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"event_id"})

    type: Literal["input_audio_buffer.dtmf_event_received"] = (
        "input_audio_buffer.dtmf_event_received"
    )
    event_id: str | None = None  # type: ignore[assignment]  # the one event without an id
    event: str
    """The digit: ``0``-``9``, ``*``, ``#``, ``A``-``D``."""
    received_at: int
    """When the digit ended, unix seconds."""


class ResponseCreated(ServerEvent):
    """``response.created``."""

    type: Literal["response.created"] = "response.created"
    response: dict[str, Any]


class ResponseDone(ServerEvent):
    """``response.done``."""

    type: Literal["response.done"] = "response.done"
    response: dict[str, Any]


class ResponseOutputItemAdded(ServerEvent):
    """``response.output_item.added``."""

    type: Literal["response.output_item.added"] = "response.output_item.added"
    response_id: str
    output_index: int
    item: dict[str, Any]


class ResponseOutputItemDone(ServerEvent):
    """``response.output_item.done``."""

    type: Literal["response.output_item.done"] = "response.output_item.done"
    response_id: str
    output_index: int
    item: dict[str, Any]


class ResponseContentPartAdded(ServerEvent):
    """``response.content_part.added``."""

    type: Literal["response.content_part.added"] = "response.content_part.added"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


class ResponseContentPartDone(ServerEvent):
    """``response.content_part.done``."""

    type: Literal["response.content_part.done"] = "response.content_part.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


class ResponseOutputTextDelta(ServerEvent):
    """``response.output_text.delta``."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseOutputTextDone(ServerEvent):
    """``response.output_text.done``."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    text: str


class ResponseOutputAudioDelta(ServerEvent):
    """``response.output_audio.delta``."""

    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseOutputAudioDone(ServerEvent):
    """``response.output_audio.done``."""

    type: Literal["response.output_audio.done"] = "response.output_audio.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int


class ResponseOutputAudioTranscriptDelta(ServerEvent):
    """``response.output_audio_transcript.delta``."""

    type: Literal["response.output_audio_transcript.delta"] = (
        "response.output_audio_transcript.delta"
    )
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseOutputAudioTranscriptDone(ServerEvent):
    """``response.output_audio_transcript.done``."""

    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str


class ResponseFunctionCallArgumentsDelta(ServerEvent):
    """``response.function_call_arguments.delta``."""

    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(ServerEvent):
    """``response.function_call_arguments.done``."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


class RateLimitsUpdated(ServerEvent):
    """``rate_limits.updated``."""

    type: Literal["rate_limits.updated"] = "rate_limits.updated"
    rate_limits: list[dict[str, Any]]


AnyServerEvent = (
    Error
    | SessionCreated
    | SessionUpdated
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemRetrieved
    | ConversationItemDeleted
    | ConversationItemTruncated
    | ConversationItemInputAudioTranscriptionDelta
    | ConversationItemInputAudioTranscriptionCompleted
    | ConversationItemInputAudioTranscriptionFailed
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferCommitted
    | InputAudioBufferCleared
    | InputAudioBufferTimeoutTriggered
    | OutputAudioBufferStarted
    | OutputAudioBufferStopped
    | OutputAudioBufferCleared
    | InputAudioBufferDtmfEventReceived
    | ResponseCreated
    | ResponseDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | ResponseOutputAudioDelta
    | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone
    | RateLimitsUpdated
)
