"""One Silero call for every session that has audio (design decision 6), off the event loop.

Each session's driver hands its audio to the batcher instead of running the model itself. The
event loop resamples and frames it at once (:meth:`BatchStream.push`, :meth:`take_inputs`: soxr,
a few µs a chunk); a single worker thread takes every frame handed over so far and scores one
frame of every stream per model call (``infer_inputs``, input ``[B, 576]``), then hands each
session its probabilities back, in order, through one callback per event loop and round.

Why the work is split this way (docs/benchmarks.md, "Load"): onnxruntime and soxr release the
GIL, and a thread that gives the GIL away waits for it to come back, up to the interpreter's
5 ms switch interval while the event loop runs Python. A worker that resampled each stream
itself paid that wait once per stream per round, so its rounds stretched to hundreds of ms
exactly when the loop was busy; now it lets go of the GIL about once per round, for the model
call, which runs on the second core while the loop serves the sockets. Rounds gather frames
for up to :data:`WINDOW_S`, so that calls are large (cheaper per frame) and few.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import numpy.typing as npt

from openrealtime import metrics

log = logging.getLogger(__name__)

Deliver = Callable[[list[float]], None]
_Rows = npt.NDArray[np.float32]


class BatchStream(Protocol):
    """The per-session side of a batchable VAD (``SileroVadStream``)."""

    def push(self, pcm16_24k: bytes) -> int:
        """Buffer session audio without scoring it; returns the frames ready."""
        ...

    def take_inputs(self) -> list[_Rows]:
        """Remove the ready frames and return their model inputs, one row each."""
        ...


class BatchVad(Protocol):
    """A VAD model that scores one frame of many streams in one call."""

    def infer_inputs(self, streams: Sequence[BatchStream], inputs: _Rows) -> list[float]:
        """Advance each stream by one frame from its input row; one probability per stream."""
        ...


_Target = tuple[asyncio.AbstractEventLoop, Deliver]
_Item = tuple[BatchStream, list[_Rows], _Target]


WINDOW_S = 0.010
"""The most a frame waits for other streams' frames before its round starts (docs/benchmarks.md,
"Load": 5, 10 and 20 ms gave the same latency at 200 sessions; 10 ms fills calls of B >= 32 from
about 100 streaming sessions up)."""


class VadBatcher:
    """Frames every session's audio on its event loop, scores it in batches on one thread.

    A round starts once it holds as many frames as ``window_s`` of the recent arrival rate
    brings, or ``window_s`` after its first frame, whichever comes first: a lone session never
    waits, and many sessions share calls of dozens of streams (Silero costs ~125 µs for a frame
    scored alone, ~43 µs a frame in calls of 32 or more), with few hand-overs of the GIL.

    Args:
        vad: the shared model.
        window_s: the most a frame waits for others before its round starts.
    """

    def __init__(self, vad: BatchVad, window_s: float = WINDOW_S) -> None:
        self._vad = vad
        self._window_s = window_s
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        """Signalled when a waiting round is full; ``with self._lock`` is the cheaper enter."""
        self._items: list[_Item] = []
        """Frames handed over and not yet taken by the worker, in arrival order."""
        self._first_at = 0.0
        """When the oldest of ``_items`` was handed over (``time.monotonic``)."""
        self._target = 1
        """Items that start a round at once: the arrival rate times the window."""
        self._rate = 0.0
        self._arrived = 0
        self._rate_since = time.monotonic()
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")

    def submit(self, stream: BatchStream, pcm16: bytes, deliver: Deliver) -> None:
        """Hand over a session's audio; ``deliver`` later gets its probabilities, in order.

        Call from the event loop; ``deliver`` is called on that loop.
        """
        try:
            stream.push(pcm16)
            rows = stream.take_inputs()
        except Exception:  # this one stream is broken (closed); the others go on
            log.exception("VAD stream rejected audio")
            return
        if not rows:
            return  # no frame complete yet (the resampler holds back its look-ahead)
        item = (stream, rows, (asyncio.get_running_loop(), deliver))
        with self._lock:
            items = self._items
            if not items:
                self._first_at = time.monotonic()
            items.append(item)
            self._arrived += 1
            if self._busy:
                if len(items) == self._target:
                    self._ready.notify()  # the worker waits for this many
                return
            self._busy = True
        self._executor.submit(self._work)

    def _work(self) -> None:
        """Worker thread: rounds of batched inference until nothing is left."""
        while True:
            with self._ready:
                if not self._items:
                    self._busy = False
                    return
                self._gather()
                items, self._items = self._items, []
            try:
                results = self._score(items)
            except Exception:  # a model error must not stop the worker
                log.exception("batched VAD failed for this round")
                continue
            _deliver(results)

    def _gather(self) -> None:
        """Wait (lock held) until the round is full or its first frame waited ``window_s``."""
        now = time.monotonic()
        if now - self._rate_since >= 0.25:  # arrivals per second, smoothed
            rate = self._arrived / (now - self._rate_since)
            self._rate = rate if self._rate == 0.0 else 0.5 * (self._rate + rate)
            self._arrived, self._rate_since = 0, now
            self._target = max(1, round(self._rate * self._window_s))
        deadline = self._first_at + self._window_s
        while len(self._items) < self._target:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ready.wait(left)

    def _score(self, items: list[_Item]) -> dict[BatchStream, tuple[_Target, list[float]]]:
        """Score every frame of ``items``: one model call per frame depth across streams."""
        rows: dict[BatchStream, list[_Rows]] = {}
        targets: dict[BatchStream, _Target] = {}
        for stream, stream_rows, target in items:
            rows.setdefault(stream, []).extend(stream_rows)
            targets[stream] = target
        results: dict[BatchStream, tuple[_Target, list[float]]] = {
            stream: (targets[stream], []) for stream in rows
        }
        streams = list(rows)
        depth = 0
        while streams:
            inputs = np.stack([rows[stream][depth] for stream in streams])
            metrics.VAD_BATCH.observe(len(streams))
            probs = self._vad.infer_inputs(streams, inputs)
            for stream, prob in zip(streams, probs, strict=True):
                results[stream][1].append(prob)
            depth += 1
            streams = [stream for stream in streams if len(rows[stream]) > depth]
        return results

    def forget(self, stream: BatchStream) -> None:
        """Stop scoring a stream whose session ended (frames already handed over are dropped)."""
        with self._ready:
            self._items = [item for item in self._items if item[0] is not stream]


def _deliver(results: dict[BatchStream, tuple[_Target, list[float]]]) -> None:
    """Hand a round's probabilities to their event loops: one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Deliver, list[float]]]] = {}
    for (loop, deliver), probs in results.values():
        by_loop.setdefault(loop, []).append((deliver, probs))
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver_round, batch)
        except RuntimeError:  # that loop is gone
            pass


def _deliver_round(batch: list[tuple[Deliver, list[float]]]) -> None:
    """On the event loop: give each session its probabilities of the round."""
    for deliver, probs in batch:
        try:
            deliver(probs)
        except Exception:  # one session's failure must not starve the others
            log.exception("delivering VAD probabilities failed")


_batchers: weakref.WeakKeyDictionary[object, VadBatcher] = weakref.WeakKeyDictionary()


def batcher_for(vad: object) -> VadBatcher | None:
    """The shared batcher of a VAD model that supports batching, else None (score inline)."""
    if not callable(getattr(vad, "infer_inputs", None)):
        return None
    batcher = _batchers.get(vad)
    if batcher is None:
        batcher = _batchers[vad] = VadBatcher(vad)  # type: ignore[arg-type]
    return batcher
