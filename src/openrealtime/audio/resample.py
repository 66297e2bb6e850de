"""Resampling PCM16 mono audio with soxr (design.md decision 2).

Use :class:`StreamResampler` (one per stream, it keeps filter state between chunks) at every
engine boundary whose rate differs from the session's 24 kHz, and :func:`resample` for a whole
clip at once.

Timing: soxr's streaming output is time-aligned with its input (output sample ``k`` is the
signal at ``k / out_rate`` seconds), but it is held back while the filter waits for look-ahead
and comes out in bursts. At 24 kHz -> 16 kHz ("HQ") the output trails the input by about 340
output samples (~21 ms) plus up to one burst; :meth:`StreamResampler.flush` releases the rest.
"""

from __future__ import annotations

import numpy as np
import soxr

_PCM16 = np.dtype("<i2")
_QUALITY = "HQ"


class StreamResampler:
    """A stateful PCM16 mono resampler from ``in_rate`` to ``out_rate``.

    Feed chunks in order with :meth:`process`; call :meth:`flush` once at the end of the stream.
    An odd trailing byte is kept until the next chunk completes the sample.

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._identity = in_rate == out_rate
        self._stream: soxr.ResampleStream | None = (
            None
            if self._identity
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=_QUALITY)
        )
        self._carry = b""
        self._flushed = False

    def process(self, pcm16: bytes) -> bytes:
        """Resample the next chunk of the stream; call with every chunk, in order.

        Args:
            pcm16: PCM16 little-endian mono audio at ``in_rate``.

        Returns:
            PCM16 audio at ``out_rate``; may be empty while the filter fills.
        """
        if self._flushed:
            raise RuntimeError("StreamResampler.process() called after flush()")
        data = self._carry + pcm16 if self._carry else pcm16
        if len(data) % 2:
            self._carry = data[-1:]
            data = data[:-1]
        else:
            self._carry = b""
        if self._stream is None:
            return bytes(data)
        if not data:
            return b""
        out = self._stream.resample_chunk(np.frombuffer(data, dtype=_PCM16))
        return np.asarray(out, dtype=_PCM16).tobytes()

    def flush(self) -> bytes:
        """End the stream and return the audio the filter still holds; call once, at the end.

        Returns:
            The remaining PCM16 audio at ``out_rate`` (a dangling odd byte is dropped).
        """
        if self._flushed:
            return b""
        self._flushed = True
        self._carry = b""
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(np.zeros(0, dtype=_PCM16), last=True)
        return np.asarray(out, dtype=_PCM16).tobytes()


def resample(pcm16: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole PCM16 mono clip in one call (no state kept).

    Args:
        pcm16: PCM16 little-endian mono audio at ``in_rate``; the byte count must be even.
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.

    Returns:
        PCM16 audio at ``out_rate``, about ``len * out_rate / in_rate`` samples.
    """
    if in_rate == out_rate or not pcm16:
        return bytes(pcm16)
    samples = np.frombuffer(pcm16, dtype=_PCM16)
    out = soxr.resample(samples, in_rate, out_rate, quality=_QUALITY)
    return np.asarray(out, dtype=_PCM16).tobytes()
