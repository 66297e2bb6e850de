"""A bounded queue of outgoing frames that can drop a cancelled response's audio.

When a response is cancelled (``response.cancel`` or barge-in), audio deltas of that response
still waiting to be written are discarded, so the client stops hearing it at once (issue 2,
barge-in) instead of after the backlog drains.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from openrealtime.core.latency import TurnLatency


@dataclass(frozen=True)
class Frame:
    """One outgoing text frame; ``audio_of`` names the response whose audio it carries."""

    text: str
    audio_of: str | None = None
    latency: TurnLatency | None = None
    """The turn whose first output this frame is; stamped and logged once it is written."""


class Outbox:
    """FIFO with a capacity for one writer task; ``put`` waits for room, ``get`` for a frame."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._frames: deque[Frame | None] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._frames)

    async def put(self, frame: Frame) -> None:
        """Append a frame, waiting while the outbox is full (backpressure on the session).

        After :meth:`close` the frame is dropped at once: nobody will write it.
        """
        while len(self._frames) >= self.capacity and not self._closed:
            await self._writable.wait()
        if self._closed:
            return
        self._frames.append(frame)
        self._update()

    def close(self) -> None:
        """The writer is gone: drop what is queued and never wait for room again."""
        self._closed = True
        self._frames.clear()
        self._writable.set()
        self._readable.clear()

    def end(self) -> None:
        """Mark the end of the stream: ``get`` returns None after the queued frames."""
        self._frames.append(None)
        self._update()

    async def get(self) -> Frame | None:
        """Remove and return the oldest frame; None once :meth:`end` was reached."""
        while not self._frames:
            await self._readable.wait()
        frame = self._frames.popleft()
        self._update()
        return frame

    def discard_audio(self, response_id: str) -> int:
        """Drop queued audio frames of ``response_id``; return how many were dropped."""
        before = len(self._frames)
        self._frames = deque(f for f in self._frames if f is None or f.audio_of != response_id)
        self._update()
        return before - len(self._frames)

    def _update(self) -> None:
        if self._frames:
            self._readable.set()
        else:
            self._readable.clear()
        if len(self._frames) < self.capacity or self._closed:
            self._writable.set()
        else:
            self._writable.clear()
