"""Exact factor-2 resampling (24 <-> 48 kHz) with a short halfband FIR, for the WebRTC edge.

WebRTC's Opus runs at 48 kHz and the session at 24 kHz. :class:`StreamResampler` (soxr HQ)
would convert, but soxr releases its output in blocks and holds back 16-36 ms of a 20 ms frame
stream; aiortc's own resampler (used when a track hands it 24 kHz frames) holds back one whole
frame. A factor of 2 needs neither: a linear-phase halfband FIR, run sample by sample with its
state kept across frames, delays the signal by its group delay only and gives each frame's
output with that frame.

Design (:func:`halfband_taps`): a Kaiser-windowed sinc, :data:`NUM_TAPS` = 63 taps, beta 7.
Every other tap is zero and the centre tap is exactly 1/2, so half of each filter is a pure
delay. At 48 kHz: flat within 0.01 dB up to 10 kHz, at least 70 dB down from 14 kHz
(``tests/audio/test_halfband.py`` checks both); the band from 10 to 14 kHz is the transition
(-6 dB at 12 kHz, the 24 kHz stream's Nyquist frequency).

Delay: 31 samples at 48 kHz (:data:`DELAY_48K`, 0.65 ms) for either direction; for
:class:`HalfbandDownsampler` that is exactly 15 output samples at 24 kHz (:data:`DELAY_24K`).
There is no other hold: every input frame of ``n`` samples gives ``2n`` (up) or ``n / 2``
(down) samples at once.

Both classes take and return PCM16 little-endian mono bytes (like
:meth:`StreamResampler.process`), compute in float64 and round once on output.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "DELAY_24K",
    "DELAY_48K",
    "NUM_TAPS",
    "HalfbandDownsampler",
    "HalfbandUpsampler",
    "halfband_taps",
]

NUM_TAPS = 63
"""Filter length (``4k + 3``, so that the outermost taps are not zero)."""

_BETA = 7.0
"""Kaiser window beta: trades the transition width against stopband attenuation."""

DELAY_48K = (NUM_TAPS - 1) // 2
"""Group delay of either filter in samples at 48 kHz (31, 0.65 ms)."""

DELAY_24K = (DELAY_48K - 1) // 2
"""Group delay of :class:`HalfbandDownsampler` in output samples at 24 kHz (15)."""

_F64 = npt.NDArray[np.float64]
_PCM16 = np.dtype("<i2")


def halfband_taps(num_taps: int = NUM_TAPS, beta: float = _BETA) -> _F64:
    """The halfband lowpass (cut-off at a quarter of the sample rate), DC gain exactly 1.

    Args:
        num_taps: the filter length; must be ``4k + 3`` (e.g. 31, 47, 63).
        beta: the Kaiser window's beta.

    Returns:
        ``num_taps`` symmetric coefficients: the centre one is 0.5, every second one away from
        the centre is 0, and the others sum to 0.5.
    """
    if num_taps < 3 or num_taps % 4 != 3:
        raise ValueError(f"a halfband filter needs 4k + 3 taps, got {num_taps}")
    centre = (num_taps - 1) // 2
    offset = np.arange(num_taps) - centre
    taps = 0.5 * np.sinc(offset / 2) * np.kaiser(num_taps, beta)
    taps[offset % 2 == 0] = 0.0
    odd = offset % 2 == 1
    taps[odd] *= 0.5 / taps[odd].sum()  # undo the window's effect on the DC gain
    taps[centre] = 0.5
    return taps


_TAPS = halfband_taps()
_SIDE = _TAPS[0::2].copy()
"""The non-zero taps off the centre (32 of them: at even indices, since the centre is odd)."""


def _to_float(pcm16: bytes) -> _F64:
    return np.frombuffer(pcm16, dtype=_PCM16).astype(np.float64)


def _to_pcm16(samples: _F64) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype(_PCM16).tobytes()


class _History:
    """The last ``size`` samples of a stream, to prepend to its next chunk (starts as zeros)."""

    def __init__(self, size: int) -> None:
        self._tail = np.zeros(size)

    def extend(self, chunk: _F64) -> _F64:
        """``tail + chunk``; remembers the new tail."""
        joined = np.concatenate((self._tail, chunk))
        self._tail = joined[len(joined) - len(self._tail) :]
        return joined


class _Carry:
    """Keeps back the trailing bytes that do not fill a whole ``unit`` until the next chunk."""

    def __init__(self, unit: int) -> None:
        self._unit = unit
        self._rest = b""

    def whole(self, pcm16: bytes) -> bytes:
        """``rest + pcm16``, cut to a multiple of ``unit`` bytes; keeps what is left over."""
        data = self._rest + pcm16 if self._rest else pcm16
        cut = len(data) - len(data) % self._unit
        self._rest = bytes(data[cut:])
        return bytes(data[:cut])


class HalfbandUpsampler:
    """A stateful PCM16 mono resampler from 24 to 48 kHz: ``n`` samples in, ``2n`` out.

    Output sample ``m`` is the input signal at ``(m - DELAY_48K) / 48000`` seconds.
    """

    in_rate = 24000
    out_rate = 48000

    def __init__(self) -> None:
        self._carry = _Carry(2)  # one sample
        self._side = _History(len(_SIDE) - 1)
        self._centre = _History((DELAY_48K - 1) // 2)

    def process(self, pcm16: bytes) -> bytes:
        """Upsample the next chunk of the stream; call with every chunk, in order.

        Args:
            pcm16: PCM16 little-endian mono audio at 24 kHz.

        Returns:
            Twice as many samples, at 48 kHz.
        """
        x = _to_float(self._carry.whole(pcm16))
        if not len(x):  # np.convolve would swap its arguments and invent two samples
            return b""
        out = np.empty(2 * len(x))
        # Zero-stuffed input filtered with 2 * taps: the even outputs see only the side taps,
        # the odd outputs only the centre tap (2 * 0.5), i.e. the input delayed.
        out[0::2] = 2.0 * np.convolve(self._side.extend(x), _SIDE, mode="valid")
        out[1::2] = self._centre.extend(x)[: len(x)]
        return _to_pcm16(out)


class HalfbandDownsampler:
    """A stateful PCM16 mono resampler from 48 to 24 kHz: ``n`` samples in, ``n / 2`` out.

    Output sample ``k`` is the input signal at ``k / 24000`` seconds minus :data:`DELAY_24K`
    samples. An odd trailing sample is kept until the next chunk completes the pair.
    """

    in_rate = 48000
    out_rate = 24000

    def __init__(self) -> None:
        self._carry = _Carry(4)  # one pair of samples
        self._odd = _History(len(_SIDE) - 1)
        self._even = _History(DELAY_24K)

    def process(self, pcm16: bytes) -> bytes:
        """Downsample the next chunk of the stream; call with every chunk, in order.

        Args:
            pcm16: PCM16 little-endian mono audio at 48 kHz.

        Returns:
            Half as many samples (rounded down; the odd one is used next time), at 24 kHz.
        """
        x = _to_float(self._carry.whole(pcm16))
        pairs = len(x) // 2
        if not pairs:  # np.convolve would swap its arguments and invent samples
            return b""
        # Output k = filter output at input sample 2k + 1: the side taps (at even indices) see
        # the odd input samples, the centre tap (index 31) the even input sample 15 pairs back.
        side = np.convolve(self._odd.extend(x[1::2]), _SIDE, mode="valid")
        centre = 0.5 * self._even.extend(x[0::2])[:pairs]
        return _to_pcm16(side + centre)
