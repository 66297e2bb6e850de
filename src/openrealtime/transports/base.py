"""The Transport Protocol: what the runtime needs from a wire (design.md house rule 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


class TransportClosed(Exception):
    """The peer went away; raised by :meth:`Transport.send_text` after the socket closed."""


class Transport(Protocol):
    """A bidirectional message channel carrying Realtime events as JSON text."""

    async def receive(self) -> str | bytes | None:
        """Return the next client message (text or binary frame), or None once the peer closed."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one server event (already JSON); raises :class:`TransportClosed` if closed."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel with a WebSocket close code; safe to call twice."""
        ...


FrameSink = Callable[[str | bytes | None], None]
"""Where pushed client messages go: each text or binary message, then ``None`` at the end."""


@runtime_checkable
class PushTransport(Protocol):
    """A transport that can hand each client message over as it arrives (no reader task).

    The per-append fast path (issue 9): a session that uses it never calls
    :meth:`Transport.receive`, and bounds its unread messages itself by pausing the reading.
    """

    def push_to(self, deliver: FrameSink) -> bool:
        """Hand every later message to ``deliver`` (``None`` at the end); ``False``: cannot."""
        ...

    def pause_reading(self) -> None:
        """Stop reading the wire until :meth:`resume_reading`."""
        ...

    def resume_reading(self) -> None:
        """Read the wire again."""
        ...


@dataclass(frozen=True)
class SessionRequest:
    """What the connection asked for (spec §1.1): a realtime or a transcription session."""

    kind: Literal["realtime", "transcription"]
    model: str
    session_label: str = ""
    """A short id for logs (never a key)."""
    call_id: str | None = None
    """Set for a sideband connection to a live WebRTC call (``?call_id=rtc_…``, spec §1.4)."""
    session_defaults: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    """Session config applied over the live defaults at creation: a client secret's (spec
    §1.2) or a WebRTC call's ``session`` form field (§1.3)."""
