"""One response's bookkeeping and its wire object (spec §4.3, §5.2-5.9).

The session drives the lifecycle; this module holds what a response accumulates (output items,
open content part, usage) and renders ``response.created``/``response.done`` payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from openrealtime.chat import ChatMessage
from openrealtime.core.commands import Generate
from openrealtime.core.conversation import Entry
from openrealtime.core.state import RESPONSE_TRANSITIONS, ResponseState, advance
from openrealtime.protocol.items import AnyItem, item_payload


@dataclass
class OpenMessage:
    """The assistant message currently receiving text or audio."""

    item_id: str
    output_index: int
    modality: Literal["audio", "text"]
    text: str = ""
    audio_bytes: int = 0

    def part(self, response_id: str) -> dict[str, str | int]:
        """The fields that locate this message's content part in ``response.*`` events."""
        return {
            "response_id": response_id,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": 0,
        }


@dataclass
class OpenCall:
    """A function call whose arguments are streaming in."""

    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str = ""


@dataclass
class Usage:
    """Token counts of one response (spec §4.3 usage)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0

    def payload(self) -> dict[str, Any]:
        """The live usage object; audio tokens are a share of the counted tokens."""
        in_audio = min(self.input_audio_tokens, self.input_tokens)
        out_audio = min(self.output_audio_tokens, self.output_tokens)
        cached = min(self.cached_tokens, self.input_tokens)
        return {
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_token_details": {
                "text_tokens": self.input_tokens - in_audio,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {
                    "text_tokens": cached,
                    "audio_tokens": 0,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {
                "text_tokens": self.output_tokens - out_audio,
                "audio_tokens": out_audio,
            },
        }


@dataclass
class ResponseRun:
    """A response from ``response.created`` to ``response.done``."""

    id: str
    conversation_id: str | None
    modality: Literal["audio", "text"]
    voice: str
    output_format: dict[str, Any]
    max_output_tokens: int | Literal["inf"]
    metadata: dict[str, str] | None
    state: ResponseState = ResponseState.WAITING_INPUT
    waiting_for: set[str] = field(default_factory=set)
    """User audio items whose transcripts the model needs before it can start."""
    output: list[AnyItem] = field(default_factory=list)
    message: OpenMessage | None = None
    calls: dict[int, OpenCall] = field(default_factory=dict)
    usage: Usage | None = None
    status_details: dict[str, Any] | None = None
    pending_generate: Generate | None = None
    """The Generate command to emit once ``waiting_for`` empties."""
    pending_context: tuple[list[ChatMessage], list[Entry] | None] | None = None
    """``(system messages, entries)`` rendered into that command's messages when it is emitted;
    entries ``None`` means the whole default conversation as it is then."""

    @property
    def in_conversation(self) -> bool:
        """Whether this response writes to the default conversation."""
        return self.conversation_id is not None

    @property
    def active(self) -> bool:
        """Still running (not yet ``response.done``)."""
        return self.state in (ResponseState.WAITING_INPUT, ResponseState.GENERATING)

    def move(self, trigger: str) -> None:
        """Advance the response state machine (:mod:`openrealtime.core.state`)."""
        self.state = advance("response", RESPONSE_TRANSITIONS, self.state, trigger)

    def payload(self) -> dict[str, Any]:
        """The ``response`` object of ``response.created``/``response.done`` (spec §4.3)."""
        status = "in_progress" if self.active else self.state.value
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": self.status_details,
            "output": [item_payload(item) for item in self.output],
            "conversation_id": self.conversation_id,
            "output_modalities": [self.modality],
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": {"format": self.output_format, "voice": self.voice}},
            "usage": self.usage.payload() if self.usage is not None else None,
            "metadata": self.metadata,
        }
