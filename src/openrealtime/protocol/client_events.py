"""One strict model per GA client event (spec §2.2).

Nested objects whose validation depends on session state (``session.update``'s ``session``,
items) are kept as raw JSON here and validated by :mod:`openrealtime.protocol.codec` helpers,
so that every error names its full path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from openrealtime.protocol.base import WireModel
from openrealtime.protocol.items import ConversationItem, Text
from openrealtime.protocol.session_config import (
    AudioFormat,
    FunctionTool,
    MaxOutputTokens,
    PromptReference,
    Reasoning,
    ToolChoice,
    VoiceId,
)

EventId = Annotated[str, Field(max_length=512)]


class _ClientEvent(WireModel):
    event_id: EventId | None = None


class SessionUpdate(_ClientEvent):
    """``session.update``: ``session`` is merged and validated against the session's type."""

    type: Literal["session.update"]
    session: dict[str, Any]


class SessionClose(_ClientEvent):
    """``session.close``: end the session (accepted by the live service, spec §2.2)."""

    type: Literal["session.close"]


class InputAudioBufferAppend(_ClientEvent):
    """``input_audio_buffer.append``: base64 audio in the session's input format."""

    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_ClientEvent):
    """``input_audio_buffer.commit``."""

    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_ClientEvent):
    """``input_audio_buffer.clear``."""

    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClear(_ClientEvent):
    """``output_audio_buffer.clear`` (WebRTC/SIP only)."""

    type: Literal["output_audio_buffer.clear"]


class ConversationItemCreate(_ClientEvent):
    """``conversation.item.create``; ``previous_item_id`` null appends, ``"root"`` prepends."""

    type: Literal["conversation.item.create"]
    item: ConversationItem
    previous_item_id: str | None = None


class ConversationItemRetrieve(_ClientEvent):
    """``conversation.item.retrieve``."""

    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncate(_ClientEvent):
    """``conversation.item.truncate``: keep only ``audio_end_ms`` of an assistant audio item."""

    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: Annotated[int, Field(ge=0)]
    audio_end_ms: Annotated[int, Field(ge=0)]


class ConversationItemDelete(_ClientEvent):
    """``conversation.item.delete``."""

    type: Literal["conversation.item.delete"]
    item_id: str


class ItemReference(WireModel):
    """``{type: "item_reference", id}`` inside ``response.input`` (spec §2.2)."""

    type: Literal["item_reference"]
    id: str


def _input_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "item_reference" if kind == "item_reference" else "item"


InputItem = Annotated[
    Annotated[ConversationItem, Tag("item")] | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_input_tag),
]


class ResponseAudioOutput(WireModel):
    """``response.audio.output`` overrides."""

    format: AudioFormat | None = None
    voice: Annotated[str, Field(min_length=1, max_length=64)] | VoiceId | None = None


class ResponseAudio(WireModel):
    """``response.audio``."""

    output: ResponseAudioOutput | None = None


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class ResponseCreateParams(WireModel):
    """``response.create.response`` (spec §2.2 table)."""

    conversation: Literal["auto", "none"] | None = None
    input: list[InputItem] | None = None
    instructions: Text | None = None
    output_modalities: (
        Annotated[list[Literal["audio", "text"]], Field(min_length=1, max_length=1)] | None
    ) = None
    audio: ResponseAudio | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    max_output_tokens: MaxOutputTokens | None = None
    prompt: PromptReference | None = None
    reasoning: Reasoning | None = None
    parallel_tool_calls: bool | None = None
    metadata: Metadata | None = None


class ResponseCreate(_ClientEvent):
    """``response.create``."""

    type: Literal["response.create"]
    response: ResponseCreateParams | None = None


class ResponseCancel(_ClientEvent):
    """``response.cancel``; without ``response_id`` it cancels the default-conversation one."""

    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = (
    SessionUpdate
    | SessionClose
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | OutputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
)

CLIENT_EVENT_MODELS: dict[str, type[_ClientEvent]] = {
    "session.update": SessionUpdate,
    "session.close": SessionClose,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit,
    "input_audio_buffer.clear": InputAudioBufferClear,
    "output_audio_buffer.clear": OutputAudioBufferClear,
    "conversation.item.create": ConversationItemCreate,
    "conversation.item.retrieve": ConversationItemRetrieve,
    "conversation.item.truncate": ConversationItemTruncate,
    "conversation.item.delete": ConversationItemDelete,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
}
"""Event type to model; the codec consults it once per frame (spec §2.2)."""

WEBSOCKET_EVENT_TYPES = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)
"""Types accepted over WebSocket, in the live error message's order (spec §6.2)."""
