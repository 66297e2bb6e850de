"""The chat vocabulary shared by the core and the engines (design.md decision 11).

What a language model is asked: the conversation as chat messages, the tools it may call and
how, and the output cap. The core builds it (``core.commands.Generate`` carries one), the
runtime hands it to the engine, the served ``/v1/chat/completions`` parses one: written once,
below both, importing nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ChatMessage", "ChatToolCall", "GenerationRequest", "ToolChoice", "ToolSpec"]


@dataclass(frozen=True)
class ChatToolCall:
    """A function call the assistant made earlier in the conversation."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of chat context, in the shape of ``/v1/chat/completions``."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ChatToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A function tool the model may call (spec §3.1 ``tools``)."""

    name: str
    description: str
    parameters: dict[str, object]


ToolChoice = Literal["auto", "none", "required"] | str
"""``auto``/``none``/``required``, or the name of the one function the model must call."""


@dataclass(frozen=True)
class GenerationRequest:
    """Everything the language model needs for one response."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | None = None
    session_key: str | None = None
    """Stable per conversation; lets an engine keep its KV cache between turns."""
