"""Conversation items and content parts (spec §4.1).

Items are frozen models; the core replaces an item with an updated copy when it changes (a
transcript arrives, arguments stream in, audio is truncated). Audio bytes are never stored on the
item: the conversation keeps PCM beside it and adds base64 only for ``conversation.item.retrieved``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from openrealtime.protocol.base import WireModel, to_wire

ItemId = Annotated[str, Field(min_length=1, max_length=32)]

MAX_TEXT_CHARS = 10_485_760
"""Longest string the live API accepts in a request ("string too long. Expected a string with
maximum length 10485760"): item text, transcripts, arguments, instructions."""

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
"""A client-supplied string, bounded like the live API's (``string_above_max_length``)."""

MAX_AUDIO_CHARS = 15 * 1024 * 1024 * 4 // 3 + 4
"""Longest base64 ``audio`` in an item: 15 MiB of audio, as in one append (spec §7)."""
ItemStatus = Literal["completed", "incomplete", "in_progress"]


class InputText(WireModel):
    """``{type: "input_text", text}``."""

    type: Literal["input_text"]
    text: Text


class InputAudio(WireModel):
    """``{type: "input_audio", audio?, transcript}``; ``transcript`` always sent (spec §8.3)."""

    type: Literal["input_audio"]
    audio: Annotated[str, Field(max_length=MAX_AUDIO_CHARS)] | None = None
    transcript: Text | None = None
    _omit_if_none = frozenset({"audio"})


class InputImage(WireModel):
    """``{type: "input_image", image_url, detail?}``; kept in context, not seen by text models."""

    type: Literal["input_image"]
    image_url: Text
    detail: Literal["auto", "low", "high"] | None = None
    _omit_if_none = frozenset({"detail"})


class OutputText(WireModel):
    """``{type: "output_text", text}``."""

    type: Literal["output_text"]
    text: Text = ""


class OutputAudio(WireModel):
    """``{type: "output_audio", audio?, transcript}``."""

    type: Literal["output_audio"]
    audio: Annotated[str, Field(max_length=MAX_AUDIO_CHARS)] | None = None
    transcript: Text = ""
    _omit_if_none = frozenset({"audio"})


UserContent = Annotated[InputText | InputAudio | InputImage, Field(discriminator="type")]
AssistantContent = Annotated[OutputText | OutputAudio, Field(discriminator="type")]


class _ItemBase(WireModel):
    id: ItemId | None = None
    object: Literal["realtime.item"] | None = None
    status: ItemStatus | None = None
    _omit_if_none = frozenset({"object", "id", "status"})


class SystemMessage(_ItemBase):
    """A system message; only ``input_text`` content."""

    type: Literal["message"]
    role: Literal["system"]
    content: list[InputText]


class UserMessage(_ItemBase):
    """A user message: text, audio or image content."""

    type: Literal["message"]
    role: Literal["user"]
    content: list[UserContent]


class AssistantMessage(_ItemBase):
    """An assistant message: text or audio-with-transcript content."""

    type: Literal["message"]
    role: Literal["assistant"]
    content: list[AssistantContent]


class FunctionCall(_ItemBase):
    """A call the model made; ``name`` and ``arguments`` are always present (spec §8.3/4)."""

    type: Literal["function_call"]
    name: Annotated[str, Field(max_length=64)]
    arguments: Text = ""
    call_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    _omit_if_none = frozenset({"object", "id", "status", "call_id"})


class FunctionCallOutput(_ItemBase):
    """The client's result for a function call (spec §5.5)."""

    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=64)]
    output: Annotated[str, Field(max_length=1_048_576)]


def item_tag(value: Any) -> str | None:
    """Discriminate items by ``type`` and, for messages, ``role`` (spec §8.3 constraint 7)."""
    if isinstance(value, dict):
        kind, role = value.get("type"), value.get("role")
    else:
        kind, role = getattr(value, "type", None), getattr(value, "role", None)
    if kind == "message":
        return f"message:{role}"
    return kind if isinstance(kind, str) else None


ConversationItem = Annotated[
    Annotated[SystemMessage, Tag("message:system")]
    | Annotated[UserMessage, Tag("message:user")]
    | Annotated[AssistantMessage, Tag("message:assistant")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")],
    Discriminator(item_tag),
]
AnyItem = SystemMessage | UserMessage | AssistantMessage | FunctionCall | FunctionCallOutput

ITEM_TYPES = ("message", "function_call", "function_call_output")
MESSAGE_ROLES = ("user", "assistant", "system")


def item_payload(item: AnyItem) -> dict[str, Any]:
    """Return the JSON of an item as sent in ``conversation.item.*`` and ``response.*`` events."""
    return to_wire(item)
