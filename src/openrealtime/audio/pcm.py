"""PCM16 helpers: conversions between bytes, float arrays, sample counts and milliseconds.

Session audio is PCM16 little-endian mono at :data:`SESSION_RATE` (design.md decision 2). These
helpers are pure and cheap; call them at engine and transport boundaries.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SESSION_RATE = 24000
"""Sample rate of all audio inside the server (the Realtime API's ``audio/pcm`` at 24 kHz)."""

_PCM16 = np.dtype("<i2")


def pcm16_to_float32(pcm16: bytes) -> npt.NDArray[np.float32]:
    """Convert PCM16 little-endian bytes to float32 samples in ``[-1.0, 1.0)``.

    Call when an engine wants floats (e.g. an ONNX model). The byte count must be even.

    Args:
        pcm16: PCM16 little-endian mono audio.

    Returns:
        A new float32 array, one element per sample (``int16 / 32768``).
    """
    samples = np.frombuffer(pcm16, dtype=_PCM16)
    return samples.astype(np.float32) / np.float32(32768.0)


def float32_to_pcm16(samples: npt.NDArray[np.floating]) -> bytes:
    """Convert float samples (nominally ``[-1.0, 1.0]``) to PCM16 little-endian bytes.

    Values are scaled by 32768, rounded and clipped to the int16 range, so
    ``float32_to_pcm16(pcm16_to_float32(b)) == b`` for any PCM16 ``b``.

    Args:
        samples: mono float samples.

    Returns:
        PCM16 little-endian bytes, two per sample.
    """
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(_PCM16).tobytes()


def samples_to_ms(samples: int, rate: int) -> int:
    """Return the duration of ``samples`` at ``rate`` Hz in whole milliseconds (floor).

    Args:
        samples: number of samples.
        rate: sample rate in Hz.

    Returns:
        ``samples * 1000 // rate``.
    """
    return samples * 1000 // rate


def ms_to_samples(ms: int, rate: int) -> int:
    """Return how many samples ``ms`` milliseconds span at ``rate`` Hz (floor).

    Args:
        ms: a duration in milliseconds.
        rate: sample rate in Hz.

    Returns:
        ``ms * rate // 1000``.
    """
    return ms * rate // 1000
