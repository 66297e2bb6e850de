"""G.711 mu-law and A-law (``audio/pcmu``, ``audio/pcma``; spec §3.1) with numpy lookup tables.

Telephony audio is 8-bit G.711 at 8 kHz. These functions convert between G.711 bytes and PCM16
little-endian samples at the same rate; resampling to the session's 24 kHz is
:mod:`openrealtime.audio.formats`' job.

The tables are built once, at import, from the ITU-T G.191 reference implementation of G.711
(``ulaw_compress``/``alaw_compress``/``*_expand`` in the STL's ``g711.c``): the 16-bit input's
top 14 (mu-law) or 13 (A-law) bits are encoded, negative values through their one's complement,
so the quantiser is symmetric (``x`` and ``-x - 1`` get mirror codes). Decoding gives the
reconstruction values of G.711 Tables 1a/2a, scaled to 16 bits (mu-law peaks at +-32124, A-law
at +-32256). Python's ``audioop`` (gone in 3.13) used the Sun code, which agrees on decoding and
on A-law encoding; for mu-law it rounds the sign of some small negative inputs differently.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_PCM16 = np.dtype("<i2")


def _all_pcm16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its unsigned bit pattern (the encode tables' index)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_pcm16()
    # 14-bit magnitude (one's complement for negatives) plus the mu-law bias of 33.
    absno = np.minimum(np.where(x < 0, ~x, x) >> 2, 0x1FFF - 33) + 33
    segno = np.ones_like(absno)
    rest = absno >> 6
    for _ in range(8):
        segno += rest != 0
        rest >>= 1
    high = 8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    code = (high << 4) | low
    table: npt.NDArray[np.uint8] = np.where(x >= 0, code | 0x80, code).astype(np.uint8)
    return table


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_pcm16()
    ix = np.where(x < 0, ~x, x) >> 4  # 0 <= ix < 2048
    # Exponent: how many halvings bring ix into [16, 31]; 0 when ix <= 15.
    iexp = np.zeros_like(ix)
    mant = ix.copy()
    big = ix > 15
    iexp[big] = 1
    for _ in range(7):
        shift = mant > 31
        mant = np.where(shift, mant >> 1, mant)
        iexp += shift
    code = np.where(big, (mant - 16) + (iexp << 4), ix)
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    sign = np.where(code < 0x80, -1, 1)
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x7
    mantissa = inverted & 0xF
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    table: npt.NDArray[np.int16] = (sign * magnitude).astype(np.int16)
    return table


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0xF
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    mantissa = (mantissa << 4) + 8
    mantissa = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    table: npt.NDArray[np.int16] = np.where(code > 127, mantissa, -mantissa).astype(np.int16)
    return table


_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_ENCODE = _alaw_encode_table()
_ULAW_DECODE = _ulaw_decode_table().astype(_PCM16)
_ALAW_DECODE = _alaw_decode_table().astype(_PCM16)


def _encode(pcm16: bytes, table: npt.NDArray[np.uint8]) -> bytes:
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 audio must hold whole samples, got {len(pcm16)} bytes")
    return bytes(table[np.frombuffer(pcm16, dtype="<u2")].tobytes())


def _decode(data: bytes, table: npt.NDArray[np.int16]) -> bytes:
    return bytes(table[np.frombuffer(data, dtype=np.uint8)].tobytes())


def ulaw_encode(pcm16: bytes) -> bytes:
    """Encode PCM16 little-endian samples as G.711 mu-law, one byte per sample.

    Call at the wire edge of an ``audio/pcmu`` session (spec §3.1), after resampling to 8 kHz.

    Args:
        pcm16: PCM16 little-endian mono audio (an even number of bytes).

    Returns:
        The mu-law bytes.

    Raises:
        ValueError: ``pcm16`` has an odd length.
    """
    return _encode(pcm16, _ULAW_ENCODE)


def ulaw_decode(data: bytes) -> bytes:
    """Decode G.711 mu-law bytes to PCM16 little-endian samples (same rate).

    Args:
        data: mu-law bytes, one per sample.

    Returns:
        PCM16 little-endian mono audio, two bytes per input byte.
    """
    return _decode(data, _ULAW_DECODE)


def alaw_encode(pcm16: bytes) -> bytes:
    """Encode PCM16 little-endian samples as G.711 A-law, one byte per sample.

    Call at the wire edge of an ``audio/pcma`` session (spec §3.1), after resampling to 8 kHz.

    Args:
        pcm16: PCM16 little-endian mono audio (an even number of bytes).

    Returns:
        The A-law bytes (even bits inverted, as transmitted).

    Raises:
        ValueError: ``pcm16`` has an odd length.
    """
    return _encode(pcm16, _ALAW_ENCODE)


def alaw_decode(data: bytes) -> bytes:
    """Decode G.711 A-law bytes to PCM16 little-endian samples (same rate).

    Args:
        data: A-law bytes, one per sample.

    Returns:
        PCM16 little-endian mono audio, two bytes per input byte.
    """
    return _decode(data, _ALAW_DECODE)
