"""Test signals and measurements shared by the resampler tests (halfband, thirdband)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def pcm(samples: F64) -> bytes:
    """Float samples as PCM16 little-endian bytes (rounded, clipped)."""
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def floats(pcm16: bytes) -> F64:
    """PCM16 bytes as float samples."""
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def sine(freq: float, rate: int, n: int, amp: float = 16000.0, delay: float = 0) -> F64:
    """``n`` samples of a sine at ``rate``, delayed by ``delay`` samples."""
    return amp * np.sin(2 * np.pi * freq * (np.arange(n) - delay) / rate)


def rms(x: F64) -> float:
    """Root mean square."""
    return float(np.sqrt(np.mean(x**2)))


def response_db(taps: F64, freqs_hz: F64, rate: int) -> F64:
    """The gain of an FIR filter at these frequencies, in dB."""
    w = 2 * np.pi * freqs_hz / rate
    h = np.exp(-1j * np.outer(w, np.arange(len(taps)))) @ taps
    return np.asarray(20 * np.log10(np.maximum(np.abs(h), 1e-12)), dtype=np.float64)
