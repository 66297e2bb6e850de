"""Exact factor-3 resampling (8 <-> 24 kHz) with a short FIR, for the telephone edge (SIP).

G.711 runs at 8 kHz and the session at 24 kHz. :class:`StreamResampler` (soxr HQ) converts,
but releases its output in blocks: fed 20 ms frames, it gives nothing for two frames and then
61 ms at once, in either direction (``bench/sip.py`` measured it as most of the 80 ms a phone
call added over WebSocket). A factor of 3 needs no block: a linear-phase lowpass FIR, run with
its state kept across frames, delays the signal by its group delay only and gives each frame's
output with that frame, as :mod:`openrealtime.audio.halfband` does for 24 <-> 48 kHz.

Design (:func:`thirdband_taps`): a Kaiser-windowed sinc cut at a sixth of 24 kHz (4 kHz, the
8 kHz stream's Nyquist frequency), :data:`NUM_TAPS` = 97 taps, beta 7. Every third tap away
from the centre is zero and the centre is exactly 1/3, so upsampling passes the 8 kHz samples
through unchanged. At 24 kHz: flat within 0.1 dB up to 3.4 kHz (the telephone band), at
least 60 dB down from 4.6 kHz (``tests/audio/test_thirdband.py`` checks both).

Delay: 48 samples at 24 kHz (:data:`DELAY_24K`, 2 ms) either way; for
:class:`ThirdbandDownsampler` that is 16 output samples at 8 kHz (:data:`DELAY_8K`). Every
input frame of ``n`` samples gives ``3n`` (up) or ``n / 3`` (down) samples at once (a
remainder of one or two samples waits for the next frame).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from openrealtime.audio.halfband import _Carry, _History, _to_float, _to_pcm16

__all__ = [
    "DELAY_8K",
    "DELAY_24K",
    "NUM_TAPS",
    "ThirdbandDownsampler",
    "ThirdbandUpsampler",
    "thirdband_taps",
]

NUM_TAPS = 97
"""Filter length (``6k + 1``, odd, so that the filter has a centre tap)."""

_BETA = 7.0

DELAY_24K = (NUM_TAPS - 1) // 2
"""Group delay of either filter in samples at 24 kHz (48, 2 ms)."""

DELAY_8K = DELAY_24K // 3
"""Group delay of :class:`ThirdbandDownsampler` in output samples at 8 kHz (16)."""

_F64 = npt.NDArray[np.float64]


def thirdband_taps(num_taps: int = NUM_TAPS, beta: float = _BETA) -> _F64:
    """The lowpass cut at a sixth of the sample rate, DC gain exactly 1.

    Args:
        num_taps: the filter length; must be ``6k + 1`` (e.g. 49, 73, 97).
        beta: the Kaiser window's beta.

    Returns:
        ``num_taps`` symmetric coefficients: the centre one is 1/3, every third one away from
        the centre is 0, and each of the three phases sums to 1/3.
    """
    if num_taps < 7 or num_taps % 6 != 1:
        raise ValueError(f"a third-band filter needs 6k + 1 taps, got {num_taps}")
    centre = (num_taps - 1) // 2
    offset = np.arange(num_taps) - centre
    taps = np.sinc(offset / 3) / 3 * np.kaiser(num_taps, beta)
    for phase in range(3):  # each polyphase branch passes DC with gain 1/3 (x3 when upsampling)
        branch = offset % 3 == phase
        taps[branch] *= (1 / 3) / taps[branch].sum()
    return taps


_TAPS = thirdband_taps()
_UP = 3.0 * _TAPS
"""The interpolation filter: the zero-stuffed stream has a third of the signal's energy."""


class ThirdbandUpsampler:
    """A stateful PCM16 mono resampler from 8 to 24 kHz: ``n`` samples in, ``3n`` out.

    Output sample ``m`` is the input signal at ``(m - DELAY_24K) / 24000`` seconds.
    """

    in_rate = 8000
    out_rate = 24000

    def __init__(self) -> None:
        self._carry = _Carry(2)
        self._history = _History(NUM_TAPS - 1)

    def process(self, pcm16: bytes) -> bytes:
        """Upsample the next chunk of the stream; call with every chunk, in order."""
        x = _to_float(self._carry.whole(pcm16))
        if not len(x):  # np.convolve would swap its arguments and invent two samples
            return b""
        stuffed = np.zeros(3 * len(x))
        stuffed[0::3] = x
        return _to_pcm16(np.convolve(self._history.extend(stuffed), _UP, mode="valid"))


class ThirdbandDownsampler:
    """A stateful PCM16 mono resampler from 24 to 8 kHz: ``n`` samples in, ``n / 3`` out.

    Output sample ``k`` is the input signal at ``k / 8000`` seconds minus :data:`DELAY_8K`
    samples. Up to two trailing samples are kept until the next chunk completes the triple.
    """

    in_rate = 24000
    out_rate = 8000

    def __init__(self) -> None:
        self._carry = _Carry(6)  # three samples
        self._history = _History(NUM_TAPS - 1)

    def process(self, pcm16: bytes) -> bytes:
        """Downsample the next chunk of the stream; call with every chunk, in order."""
        x = _to_float(self._carry.whole(pcm16))
        if not len(x):
            return b""
        filtered = np.convolve(self._history.extend(x), _TAPS, mode="valid")
        return _to_pcm16(filtered[0::3])
