"""Smart Turn v3.2 (pipecat-ai) end-of-turn model on onnxruntime, features in numpy only.

The model (``smart-turn-v3.2-cpu.onnx``, a Whisper-tiny encoder with a classifier head, int8)
takes ``input_features [N, 80, 800]``: the Whisper log-mel spectrogram of exactly 8 s of 16 kHz
audio. Its output, named ``logits [N, 1]``, already ends in a ``Sigmoid`` node, so it *is*
P(turn complete); no further squashing is applied. Design.md decision 7: the file comes from the
pinned ``pipecat-ai`` wheel through :mod:`openrealtime.models`; neither torch nor transformers is
imported.

Input preparation, matching how the model is served upstream:

1. PCM16 -> float32 in ``[-1, 1)`` (divide by 32768).
2. Keep the last 8 s (128 000 samples); shorter audio is zero-padded **at the start**, so the
   end of the clip (where the turn ends) always sits at the end of the window.
3. Zero-mean, unit-variance normalisation over the whole 8 s window (padding included),
   ``(x - mean) / sqrt(var + 1e-7)``.
4. Whisper log-mel: centred STFT (reflect padding of 200 samples each side), periodic Hann window
   of 400, hop 160, power spectrum; 80 Slaney-scale, Slaney-normalised triangular mel filters over
   0-8 kHz; ``log10(max(mel, 1e-10))``; the last of the 801 frames is dropped; values are
   clamped to at least ``max - 8`` and mapped with ``(x + 4) / 4``.

These steps reproduce ``transformers.WhisperFeatureExtractor(chunk_length=8)`` with
``do_normalize=True`` on the padded window to within float32 rounding (docs/turn-detection.md).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from openrealtime.backends.errors import BackendError, ModelFileError

MODEL_RATE = 16000
"""The rate the model runs at."""
WINDOW_SECONDS = 8
"""Seconds of audio the model sees: the end of the turn's audio."""
WINDOW_SAMPLES = WINDOW_SECONDS * MODEL_RATE
"""128 000 samples."""
N_FFT = 400
"""STFT frame length (25 ms)."""
HOP = 160
"""STFT hop (10 ms)."""
N_MELS = 80
"""Mel bands."""
N_FRAMES = WINDOW_SAMPLES // HOP
"""Feature frames per window: 800."""

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

_MEL_FLOOR = 1e-10
_NORM_EPS = 1e-7
_DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum (80 dB)


def _hz_to_mel(hz: _F64) -> _F64:
    """Slaney mel scale: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above."""
    linear = hz * (3.0 / 200.0)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz < 1000.0, linear, log_part)


def _mel_to_hz(mel: _F64) -> _F64:
    """Inverse of :func:`_hz_to_mel`."""
    linear = mel * (200.0 / 3.0)
    log_part = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel < 15.0, linear, log_part)


def _mel_filterbank() -> _F64:
    """Return the ``[80, 201]`` Slaney-normalised triangular filterbank over 0-8 kHz."""
    edges_mel = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([MODEL_RATE / 2]))[0], N_MELS + 2
    )
    edges = _mel_to_hz(edges_mel)  # N_MELS + 2 corner frequencies
    bins = np.linspace(0.0, MODEL_RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    weights *= 2.0 / (upper - lower)  # equal area per filter (Slaney normalisation)
    return np.asarray(weights, dtype=np.float64)


_MEL_T = np.ascontiguousarray(_mel_filterbank().T)  # [201, 80]
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic


def pcm16_window(pcm16: bytes) -> _F32:
    """Convert PCM16 audio to the model's 8 s float window (last 8 s, zero-padded in front).

    Call with the turn's audio at 16 kHz; a trailing odd byte is ignored.

    Args:
        pcm16: PCM16 little-endian mono audio at 16 kHz, any length (empty is allowed).

    Returns:
        ``[128000]`` float32 samples in ``[-1, 1)``.
    """
    usable = len(pcm16) - len(pcm16) % 2
    samples = np.frombuffer(pcm16[:usable], dtype="<i2")[-WINDOW_SAMPLES:]
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    if len(samples):
        window[WINDOW_SAMPLES - len(samples) :] = samples.astype(np.float32) / 32768.0
    return window


def log_mel_features(window: _F32) -> _F32:
    """Compute the model's input features for one 8 s window.

    Call with the output of :func:`pcm16_window`; the steps are listed in the module docstring.

    Args:
        window: ``[128000]`` float samples at 16 kHz.

    Returns:
        ``[80, 800]`` float32 log-mel features, roughly in ``[-1.5, 1.5]``.
    """
    if window.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {window.shape}")
    x = window.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)  # float32, as upstream normalises
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    # Only the first 800 of the 801 centred frames are kept; float64 from here on (numpy's
    # float64 FFT is also the faster one).
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:N_FRAMES]
    spectrum = np.fft.rfft(frames * _HANN, axis=-1)  # [800, 201]
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ _MEL_T  # [800, 80]
    log_mel = np.log10(np.maximum(mel, _MEL_FLOOR))
    log_mel = np.maximum(log_mel, log_mel.max() - _DYNAMIC_RANGE)
    return np.ascontiguousarray(((log_mel + 4.0) / 4.0).T, dtype=np.float32)


class SmartTurnDetector:
    """Smart Turn v3.2 semantic end-of-turn model (implements ``TurnDetector``).

    Create once at startup with :meth:`from_cache` (or a path) and share it between sessions; ask
    :meth:`completion_probability` when server VAD has seen a pause after speech (semantic_vad,
    spec §3.1 ``audio.input.turn_detection``). One onnxruntime session with one intra-op thread;
    each call runs in a worker thread so the event loop is never blocked.

    Args:
        model_path: the ``smart-turn-v3.2-cpu.onnx`` file (or a compatible v3 export).
    """

    name = "smart-turn"
    sample_rate = MODEL_RATE

    def __init__(self, model_path: Path | str) -> None:
        path = Path(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                os.fspath(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"cannot load Smart Turn model {path}: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape)[1:] != [N_MELS, N_FRAMES]:
            shapes = [(i.name, i.shape) for i in inputs]
            raise ModelFileError(
                f"{path} is not a Smart Turn v3 model: expected one input [N, 80, 800], "
                f"got {shapes}"
            )
        self._input = str(inputs[0].name)
        self.model_path = path

    @classmethod
    def from_cache(
        cls, cache_dir: Path | None = None, local_path: Path | str | None = None
    ) -> SmartTurnDetector:
        """Load the pinned ``smart-turn`` model through :func:`openrealtime.models.resolve_model`.

        Call at startup; may download and verify the ``pipecat-ai`` wheel when the file is not
        cached.

        Args:
            cache_dir: the model cache directory; the default one when ``None``.
            local_path: the user's own Smart Turn v3 ONNX file to use instead.

        Returns:
            A ready detector.
        """
        from openrealtime.models import resolve_model

        return cls(resolve_model("smart-turn", cache_dir=cache_dir, local_path=local_path))

    def features(self, pcm16: bytes) -> _F32:
        """Return the batched model input for some audio; for tests and benchmarks.

        Args:
            pcm16: PCM16 mono audio at 16 kHz.

        Returns:
            ``[1, 80, 800]`` float32 features.
        """
        return log_mel_features(pcm16_window(pcm16))[None, :, :]

    def predict(self, pcm16: bytes) -> float:
        """Score the audio synchronously (blocks for the inference; tens of ms).

        Call from a worker thread or a benchmark; the event loop uses
        :meth:`completion_probability`.

        Args:
            pcm16: the current user turn's PCM16 mono audio at 16 kHz, including the silence
                heard since speech stopped; only the last 8 s are used.

        Returns:
            P(turn complete) in ``[0, 1]``.

        Raises:
            BackendError: onnxruntime failed.
        """
        features = self.features(pcm16)
        try:
            outputs = self._session.run(None, {self._input: features})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"Smart Turn inference failed: {exc}") from exc
        probability = float(np.asarray(outputs[0], dtype=np.float32).reshape(-1)[0])
        if not np.isfinite(probability):
            raise BackendError("Smart Turn returned a non-finite probability")
        return min(1.0, max(0.0, probability))

    async def completion_probability(self, pcm16: bytes) -> float:
        """Return P(turn complete) for the current user turn's audio at 16 kHz.

        Call when server VAD has seen at least a short pause after speech (semantic_vad), with
        the turn's audio so far, trailing silence included. Runs :meth:`predict` in a worker
        thread.

        Args:
            pcm16: PCM16 mono audio at 16 kHz; only the last 8 s are used.

        Returns:
            P(turn complete) in ``[0, 1]``.

        Raises:
            BackendError: onnxruntime failed.
        """
        return await asyncio.to_thread(self.predict, pcm16)
