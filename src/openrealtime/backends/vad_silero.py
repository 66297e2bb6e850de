"""Silero VAD (v5/v6 ONNX) on onnxruntime, without torch (design.md decision 6).

Never imports ``silero_vad`` or torch: the model file comes from :mod:`openrealtime.models`.
The model takes ``input [B, 576]`` (64 samples of context + a 512-sample frame at 16 kHz),
``state [2, B, 128]`` and ``sr``; it returns ``output [B, 1]`` and the new state. One
:class:`SileroVad` (one ``InferenceSession``) serves every session; each session opens a
:class:`SileroVadStream` holding its own resampler, context and state, and a runtime may run one
frame of many streams in a single call with :meth:`SileroVad.infer_batch`
(embedded-stack.md §1: batched and single runs give identical results).

Frame mapping: the stream resamples 24 kHz session audio to 16 kHz with a stateful soxr
resampler, whose output is time-aligned with its input but delayed (about 21 ms). Frames are
counted on the 16 kHz output from its first sample, so the i-th 512-sample frame is exactly the
i-th 768-sample window of session audio; probabilities simply arrive up to ~one frame late.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler
from openrealtime.backends.errors import ModelFileError

MODEL_RATE = 16000
"""The rate the model runs at."""
FRAME = 512
"""Samples per model frame at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous frame prepended to each frame."""
STATE_WIDTH = 128
"""The recurrent state of one stream: ``[2, 1, 128]`` float32."""
SESSION_FRAME = FRAME * SESSION_RATE // MODEL_RATE
"""Session samples (24 kHz) covered by one probability: 768 (32 ms)."""
INPUT = CONTEXT + FRAME
"""Samples in one row of the model input: 576."""
RESAMPLE_QUALITY = "LQ"
"""soxr's recipe for the detector's 24 -> 16 kHz stream (issue 9, docs/benchmarks.md "Load"):
its filter state is 6 KiB instead of HQ's 35, so the states of a few hundred sessions stay in
the cache, and it holds back 12.5 ms of audio instead of 16.5. On the flite turns of
``bench/vad_latency.py`` no frame's probability moved across 0.5 (largest change 0.14)."""

_F32 = npt.NDArray[np.float32]


class SileroVad:
    """The Silero VAD model, shared by all sessions (implements ``VoiceActivityDetector``).

    Create once at startup with :meth:`from_cache` (or a path), then call :meth:`open_stream`
    per session.

    Args:
        model_path: the ``silero_vad.onnx`` file (v5/v6, 16 kHz input of 512 + 64 samples).
    """

    name = "silero"

    def __init__(self, model_path: Path | str) -> None:
        path = Path(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                os.fspath(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"cannot load Silero VAD model {path}: {exc}") from exc
        self.model_path = path
        self._sr = np.array(MODEL_RATE, dtype=np.int64)
        self._states: _F32 = np.zeros((2, 0, STATE_WIDTH), dtype=np.float32)
        """Every stream's recurrent state, one column per stream (its slot): a batch gathers
        and scatters its columns in two numpy calls instead of one copy per stream."""
        self._free: list[int] = []
        self._states_lock = threading.Lock()

    @classmethod
    def from_cache(
        cls, cache_dir: Path | None = None, local_path: Path | str | None = None
    ) -> SileroVad:
        """Load the pinned ``silero-vad`` model through :func:`openrealtime.models.resolve_model`.

        Call at startup; may download and verify the file when it is not cached.

        Args:
            cache_dir: the model cache directory; the default one when ``None``.
            local_path: the user's own ``silero_vad.onnx`` to use instead.

        Returns:
            A ready detector.
        """
        from openrealtime.models import resolve_model

        return cls(resolve_model("silero-vad", cache_dir=cache_dir, local_path=local_path))

    def open_stream(self) -> SileroVadStream:
        """Create one session's VAD stream; call once per session.

        Returns:
            A new stream with zeroed state.
        """
        return SileroVadStream(self)

    def _new_slot(self) -> int:
        """A zeroed column of the state array for a new stream (grows it when full)."""
        with self._states_lock:
            if not self._free:
                old = self._states
                size = max(16, 2 * old.shape[1])
                self._states = np.zeros((2, size, STATE_WIDTH), dtype=np.float32)
                self._states[:, : old.shape[1]] = old
                self._free = list(range(size - 1, old.shape[1] - 1, -1))
            slot = self._free.pop()
            self._states[:, slot] = 0.0
            return slot

    def _free_slot(self, slot: int) -> None:
        """Give a dead stream's column back (the stream can no longer be in a batch)."""
        with self._states_lock:
            self._free.append(slot)

    def run_batch(self, inputs: _F32, state: _F32) -> tuple[_F32, _F32]:
        """Run the model once over ``B`` frames; the raw call every other method goes through.

        Args:
            inputs: ``[B, 576]`` float32: each row is 64 context samples then a 512-sample frame.
            state: ``[2, B, 128]`` float32, one column per stream.

        Returns:
            ``(probs [B], new_state [2, B, 128])``.
        """
        outputs = self._session.run(
            None,
            {
                "input": np.ascontiguousarray(inputs, dtype=np.float32),
                "state": np.ascontiguousarray(state, dtype=np.float32),
                "sr": self._sr,
            },
        )
        probs = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        new_state = np.asarray(outputs[1], dtype=np.float32)
        return probs, new_state

    def infer_batch(self, streams: Sequence[SileroVadStream]) -> list[float]:
        """Advance each stream by one frame in a single model call (design.md decision 6).

        Call from a batching runtime with the streams whose :attr:`SileroVadStream.frames_ready`
        is positive (after :meth:`SileroVadStream.push`); each stream appears at most once.

        Args:
            streams: streams opened from this detector, each with at least one ready frame.

        Returns:
            One probability per stream, in order; it is also that stream's next frame's result.
        """
        if not streams:
            return []
        for stream in streams:
            if stream._vad is not self:
                raise ValueError("stream was opened from another SileroVad")
            if stream.frames_ready < 1:
                raise ValueError("infer_batch() needs a ready frame in every stream")
        inputs = np.stack([stream._pending[:INPUT] for stream in streams])
        probs = self.infer_inputs(streams, inputs)
        for stream in streams:
            stream._pending = stream._pending[FRAME:]
        return probs

    def infer_inputs(self, streams: Sequence[SileroVadStream], inputs: _F32) -> list[float]:
        """Score one frame of each stream from its model input, advancing its recurrent state.

        The split form of :meth:`infer_batch` for a runtime that frames audio on one thread
        (:meth:`SileroVadStream.take_inputs`) and runs the model on another: this touches only
        the streams' model state, never their audio. Call with each stream's inputs in order.

        Args:
            streams: distinct streams opened from this detector.
            inputs: ``[len(streams), 576]`` float32, row ``i`` the next input of ``streams[i]``.

        Returns:
            One probability per stream, in order.
        """
        slots = [stream._slot for stream in streams]
        with self._states_lock:
            state = self._states[:, slots]
        probs, new_state = self.run_batch(inputs, state)
        with self._states_lock:
            self._states[:, slots] = new_state
        for stream in streams:
            stream.frames_done += 1
        return probs.tolist()  # type: ignore[no-any-return]


class SileroVadStream:
    """One session's Silero state (implements ``VadStream``).

    Feed 24 kHz session audio with :meth:`feed` and get one probability per 768-sample window, or
    split the work for batching: :meth:`push` audio, then :meth:`SileroVad.infer_batch`; or
    frame on one thread (:meth:`push`, :meth:`take_inputs`) and score on another
    (:meth:`SileroVad.infer_inputs`).
    """

    frame_samples = SESSION_FRAME

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._resampler = StreamResampler(SESSION_RATE, MODEL_RATE, quality=RESAMPLE_QUALITY)
        self._pending: _F32 = np.zeros(CONTEXT, dtype=np.float32)
        """The previous frame's last 64 samples (the next frame's context), then the 16 kHz
        audio not yet framed: row ``k`` of the model input is ``_pending[512 k : 512 k + 576]``."""
        self._slot = vad._new_slot()
        """This stream's column of the model's state array, freed when the stream is gone."""
        weakref.finalize(self, vad._free_slot, self._slot)
        self._closed = False
        self.frames_done = 0
        """Frames scored so far; the next probability covers window ``frames_done``."""

    @property
    def frames_ready(self) -> int:
        """How many complete 16 kHz frames are waiting to be scored."""
        return (len(self._pending) - CONTEXT) // FRAME

    def push(self, pcm16_24k: bytes) -> int:
        """Buffer session audio without running the model; call before :meth:`infer_batch`.

        Args:
            pcm16_24k: PCM16 mono audio at 24 kHz, the next chunk of the session.

        Returns:
            :attr:`frames_ready` after buffering.
        """
        if self._closed:
            raise RuntimeError("SileroVadStream used after close()")
        resampled = self._resampler.process_float(pcm16_24k)
        if len(resampled):
            self._pending = np.concatenate((self._pending, resampled))
        return (len(self._pending) - CONTEXT) // FRAME

    def take_inputs(self) -> list[_F32]:
        """Remove every ready frame and return its model input (64 context samples + frame).

        Call on the thread that calls :meth:`push`; hand the rows, in order, to
        :meth:`SileroVad.infer_inputs` (one row per call for this stream). The rows are views
        of the stream's buffer, which it never writes into again (it only appends to copies).

        Returns:
            One 576-sample float32 row per ready frame (possibly none).
        """
        pending = self._pending
        n = (len(pending) - CONTEXT) // FRAME
        if n <= 0:
            return []
        self._pending = pending[n * FRAME :]
        return [pending[k * FRAME : k * FRAME + INPUT] for k in range(n)]

    def feed(self, pcm16_24k: bytes) -> list[float]:
        """Consume session audio and return the probabilities of the frames it completed.

        The i-th probability over the stream's life covers session samples
        ``[i * 768, (i + 1) * 768)``; because of the resampler's delay a window's probability
        may come with the next chunk.

        Args:
            pcm16_24k: PCM16 mono audio at 24 kHz, the next chunk of the session.

        Returns:
            Zero or more probabilities in ``[0, 1]``.
        """
        self.push(pcm16_24k)
        probs: list[float] = []
        while self.frames_ready:
            probs.extend(self._vad.infer_batch([self]))
        return probs

    def close(self) -> None:
        """Drop the stream's buffers and state; call once when the session ends."""
        self._closed = True
        self._pending = np.zeros(CONTEXT, dtype=np.float32)
