"""One Silero call for every session that has audio in the same loop tick (design decision 6).

Each session's driver hands its audio to the batcher instead of running the model itself. The
first hand-over of a tick schedules a flush with ``loop.call_soon``, so it runs right after the
drivers that are ready in this tick have all handed theirs over; the flush scores every ready
frame of every such session in batched calls (``SileroVad.infer_batch``, input ``[B, 576]``)
and hands each session its probabilities. Per stream, a batch of 8 costs ~50 µs against
~130 µs alone (docs/benchmarks.md). No thread and no task: nothing to own or cancel.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Protocol

Deliver = Callable[[list[float]], None]


class BatchStream(Protocol):
    """The per-session side of a batchable VAD (``SileroVadStream``)."""

    @property
    def frames_ready(self) -> int:
        """Complete frames waiting to be scored."""
        ...

    def push(self, pcm16_24k: bytes) -> int:
        """Buffer session audio without scoring it."""
        ...


class BatchVad(Protocol):
    """A VAD model that scores one frame of many streams in one call."""

    def infer_batch(self, streams: list[BatchStream]) -> list[float]:
        """Advance each stream by one frame; one probability per stream."""
        ...


class VadBatcher:
    """Collects the sessions with audio in one loop tick and scores them together."""

    def __init__(self, vad: BatchVad) -> None:
        self._vad = vad
        self._pending: dict[BatchStream, Deliver] = {}
        self._scheduled = False

    def submit(self, stream: BatchStream, pcm16: bytes, deliver: Deliver) -> None:
        """Buffer a session's audio; ``deliver`` gets its probabilities later in this tick."""
        stream.push(pcm16)
        if not stream.frames_ready and stream not in self._pending:
            return
        self._pending[stream] = deliver
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Score every ready frame of the pending streams and deliver the results."""
        self._scheduled = False
        pending, self._pending = self._pending, {}
        results: dict[BatchStream, list[float]] = {stream: [] for stream in pending}
        active = [stream for stream in pending if stream.frames_ready]
        while active:
            for stream, prob in zip(active, self._vad.infer_batch(active), strict=True):
                results[stream].append(prob)
            active = [stream for stream in active if stream.frames_ready]
        for stream, deliver in pending.items():
            if results[stream]:
                deliver(results[stream])


_batchers: weakref.WeakKeyDictionary[object, VadBatcher] = weakref.WeakKeyDictionary()


def batcher_for(vad: object) -> VadBatcher | None:
    """The shared batcher of a VAD model that supports batching, else None (score inline)."""
    if not callable(getattr(vad, "infer_batch", None)):
        return None
    batcher = _batchers.get(vad)
    if batcher is None:
        batcher = _batchers[vad] = VadBatcher(vad)  # type: ignore[arg-type]
    return batcher
