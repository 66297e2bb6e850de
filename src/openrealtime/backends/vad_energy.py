"""An energy (loudness) VAD: an explicit, dependency-free option, never a silent fallback.

Each 768-sample window (32 ms at 24 kHz) gets a "probability" from its RMS level in dBFS through
a logistic curve centred on a threshold. It cannot tell speech from other sound, so use it only
when chosen on purpose (tests, very constrained machines, clean input).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from openrealtime.audio.pcm import SESSION_RATE, pcm16_to_float32

SESSION_FRAME = 32 * SESSION_RATE // 1000
"""Session samples per probability: 768 (32 ms), the same windows as the Silero VAD."""

_FLOOR_DBFS = -120.0


class EnergyVad:
    """A loudness-based detector (implements ``VoiceActivityDetector``).

    Args:
        threshold_dbfs: the RMS level, in dBFS, that maps to probability 0.5.
        slope_db: how many dB move the logistic by one unit; smaller is sharper.
    """

    name = "energy"

    def __init__(self, threshold_dbfs: float = -45.0, slope_db: float = 3.0) -> None:
        if slope_db <= 0:
            raise ValueError(f"slope_db must be positive, got {slope_db}")
        self.threshold_dbfs = threshold_dbfs
        self.slope_db = slope_db

    def open_stream(self) -> EnergyVadStream:
        """Create one session's stream; call once per session.

        Returns:
            A new stream.
        """
        return EnergyVadStream(self.threshold_dbfs, self.slope_db)


class EnergyVadStream:
    """One session's energy VAD (implements ``VadStream``): buffers to whole 768-sample windows.

    Args:
        threshold_dbfs: the RMS level, in dBFS, that maps to probability 0.5.
        slope_db: how many dB move the logistic by one unit.
    """

    frame_samples = SESSION_FRAME

    def __init__(self, threshold_dbfs: float, slope_db: float) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.slope_db = slope_db
        self._pending = b""
        self._closed = False

    def feed(self, pcm16_24k: bytes) -> list[float]:
        """Consume session audio and return one probability per completed 768-sample window.

        Args:
            pcm16_24k: PCM16 mono audio at 24 kHz, the next chunk of the session.

        Returns:
            Zero or more probabilities in ``[0, 1]``.
        """
        if self._closed:
            raise RuntimeError("EnergyVadStream used after close()")
        data = self._pending + pcm16_24k
        frame_bytes = 2 * self.frame_samples
        count = len(data) // frame_bytes
        self._pending = data[count * frame_bytes :]
        if count == 0:
            return []
        frames = pcm16_to_float32(data[: count * frame_bytes]).reshape(count, self.frame_samples)
        return [self.probability(float(db)) for db in frame_dbfs(frames)]

    def probability(self, dbfs: float) -> float:
        """Map a level in dBFS to a speech probability with the stream's logistic curve.

        Args:
            dbfs: an RMS level in dBFS.

        Returns:
            ``1 / (1 + exp(-(dbfs - threshold) / slope))``.
        """
        z = (dbfs - self.threshold_dbfs) / self.slope_db
        z = max(-60.0, min(60.0, z))
        return 1.0 / (1.0 + math.exp(-z))

    def close(self) -> None:
        """Drop buffered audio; call once when the session ends."""
        self._closed = True
        self._pending = b""


def frame_dbfs(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Return the RMS level of each row of ``frames`` (floats in ``[-1, 1]``) in dBFS.

    Args:
        frames: ``[N, samples]`` float audio.

    Returns:
        ``[N]`` levels; digital silence is clamped to -120 dBFS.
    """
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    floor = 10.0 ** (_FLOOR_DBFS / 10.0)
    db: npt.NDArray[np.float64] = 10.0 * np.log10(np.maximum(power, floor))
    return db
