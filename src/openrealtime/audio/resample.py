"""Resampling PCM16 mono audio with soxr (design.md decision 2).

Use :class:`StreamResampler` (one per stream, it keeps filter state between chunks) at every
engine boundary whose rate differs from the session's 24 kHz, and :func:`resample` for a whole
clip at once.

Samples go through soxr as float32 and are rounded back to int16 here: soxr's own int16 path
dithers, so its output would depend on how the stream was chunked; the float path is bit-exact
whatever the chunking, which keeps VAD results reproducible (and batched == single).

Timing: soxr's streaming output is time-aligned with its input (output sample ``k`` is the
signal at ``k / out_rate`` seconds), but it is held back while the filter waits for look-ahead
and comes out in bursts. At 24 kHz -> 16 kHz ("HQ"), fed 10-32 ms chunks, the output trails the
input by 97-585 output samples (6-37 ms, ~21 ms on average); :meth:`StreamResampler.flush`
releases the rest.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from openrealtime.audio.pcm import float32_to_pcm16, pcm16_to_float32

_QUALITY = "HQ"
_EMPTY = np.zeros(0, dtype=np.float32)


class StreamResampler:
    """A stateful PCM16 mono resampler from ``in_rate`` to ``out_rate``.

    Feed chunks in order with :meth:`process`; call :meth:`flush` once at the end of the stream.
    An odd trailing byte is kept until the next chunk completes the sample.

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
        quality: soxr's quality recipe: ``"HQ"`` (the default, for audio people hear or an
            engine transcribes) or a cheaper one for a consumer that only needs the speech band
            roughly (``"LQ"``: a 6 KiB filter state instead of 35, and less look-ahead).
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = _QUALITY) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._identity = in_rate == out_rate
        self._stream: soxr.ResampleStream | None = (
            None
            if self._identity
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
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
        if self._stream is None:
            return self._take_whole_samples(pcm16)
        return float32_to_pcm16(self.process_float(pcm16))

    def process_float(self, pcm16: bytes) -> npt.NDArray[np.float32]:
        """Like :meth:`process`, but return float32 samples in ``[-1, 1]`` (no requantising).

        Call instead of :meth:`process` when the consumer wants floats (e.g. an ONNX model);
        do not mix the two on one stream.

        Args:
            pcm16: PCM16 little-endian mono audio at ``in_rate``.

        Returns:
            float32 audio at ``out_rate``; may be empty while the filter fills.
        """
        data = self._take_whole_samples(pcm16)
        if self._stream is None:
            return pcm16_to_float32(data)
        if not data:
            return _EMPTY
        out = self._stream.resample_chunk(pcm16_to_float32(data))
        return np.asarray(out, dtype=np.float32)

    def flush(self) -> bytes:
        """End the stream and return the audio the filter still holds; call once, at the end.

        Returns:
            The remaining PCM16 audio at ``out_rate`` (a dangling odd byte is dropped).
        """
        return float32_to_pcm16(self.flush_float())

    def flush_float(self) -> npt.NDArray[np.float32]:
        """Like :meth:`flush`, but return float32 samples; pairs with :meth:`process_float`.

        Returns:
            The remaining float32 audio at ``out_rate``.
        """
        if self._flushed:
            return _EMPTY
        self._flushed = True
        self._carry = b""
        if self._stream is None:
            return _EMPTY
        out = self._stream.resample_chunk(_EMPTY, last=True)
        return np.asarray(out, dtype=np.float32)

    def _take_whole_samples(self, pcm16: bytes) -> bytes:
        """Prepend the carried byte and keep back a trailing odd byte."""
        if self._flushed:
            raise RuntimeError("StreamResampler used after flush()")
        data = self._carry + pcm16 if self._carry else pcm16
        if len(data) % 2:
            self._carry = data[-1:]
            return bytes(data[:-1])
        self._carry = b""
        return bytes(data)


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
    out = soxr.resample(pcm16_to_float32(pcm16), in_rate, out_rate, quality=_QUALITY)
    return float32_to_pcm16(np.asarray(out, dtype=np.float32))
