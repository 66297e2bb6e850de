"""One Silero call for every session that has audio (design decision 6), off the event loop.

Each session's driver hands its audio to the batcher instead of running the model itself. A
single worker thread takes everything handed over so far, resamples it per stream and scores
every ready frame of every stream in batched calls (``SileroVad.infer_batch``, input
``[B, 576]``); onnxruntime and soxr release the GIL, so this work runs on the second core while
the event loop serves the sockets. Each session gets its probabilities back through the event
loop, in order. Per stream, a batch of 8 costs ~50 µs against ~130 µs alone
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger(__name__)

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
    """Collects the audio of all sessions and scores it in batches on one worker thread."""

    def __init__(self, vad: BatchVad) -> None:
        self._vad = vad
        self._lock = threading.Lock()
        self._audio: dict[BatchStream, list[bytes]] = {}
        self._deliver: dict[BatchStream, tuple[asyncio.AbstractEventLoop, Deliver]] = {}
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")

    def submit(self, stream: BatchStream, pcm16: bytes, deliver: Deliver) -> None:
        """Hand over a session's audio; ``deliver`` later gets its probabilities, in order.

        Call from the event loop; ``deliver`` is called on that loop.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            self._audio.setdefault(stream, []).append(pcm16)
            self._deliver[stream] = (loop, deliver)
            if self._busy:
                return  # the worker takes it on its next round
            self._busy = True
        self._executor.submit(self._work)

    def _work(self) -> None:
        """Worker thread: rounds of resample + batched inference until nothing is left."""
        while True:
            with self._lock:
                audio, self._audio = self._audio, {}
                if not audio:
                    self._busy = False
                    return
                targets = {stream: self._deliver[stream] for stream in audio}
            try:
                results = self._score(audio)
            except Exception:  # a model error must not stop the worker
                log.exception("batched VAD failed for this round")
                continue
            for stream, probs in results.items():
                if probs:
                    loop, deliver = targets[stream]
                    try:
                        loop.call_soon_threadsafe(deliver, probs)
                    except RuntimeError:  # that session's loop is gone
                        pass

    def _score(self, audio: dict[BatchStream, list[bytes]]) -> dict[BatchStream, list[float]]:
        results: dict[BatchStream, list[float]] = {}
        for stream, chunks in audio.items():
            try:
                for chunk in chunks:
                    stream.push(chunk)
            except Exception:  # this one stream is broken (closed); the others go on
                log.exception("VAD stream rejected audio")
                continue
            results[stream] = []
        active = [stream for stream in results if stream.frames_ready]
        while active:
            for stream, prob in zip(active, self._vad.infer_batch(active), strict=True):
                results[stream].append(prob)
            active = [stream for stream in active if stream.frames_ready]
        return results

    def forget(self, stream: BatchStream) -> None:
        """Stop delivering for a stream whose session ended."""
        with self._lock:
            self._audio.pop(stream, None)
            self._deliver.pop(stream, None)


_batchers: weakref.WeakKeyDictionary[object, VadBatcher] = weakref.WeakKeyDictionary()


def batcher_for(vad: object) -> VadBatcher | None:
    """The shared batcher of a VAD model that supports batching, else None (score inline)."""
    if not callable(getattr(vad, "infer_batch", None)):
        return None
    batcher = _batchers.get(vad)
    if batcher is None:
        batcher = _batchers[vad] = VadBatcher(vad)  # type: ignore[arg-type]
    return batcher
