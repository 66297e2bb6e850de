"""G.711 mu-law / A-law (audio/g711.py) and the wire-format converters (audio/formats.py)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from openrealtime.audio.formats import (
    InputDecoder,
    OutputEncoder,
    WireFormat,
    decode_clip,
    encode_clip,
)
from openrealtime.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

ALL_CODES = bytes(range(256))
ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
G711: list[WireFormat] = ["audio/pcmu", "audio/pcma"]


def _pcm(values: list[int]) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def _ints(pcm16: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(pcm16, dtype="<i2")]


# ------------------------------------------------------------------ the ITU G.191 reference
# A line-by-line transcription of ulaw_compress/alaw_compress/ulaw_expand/alaw_expand from the
# ITU-T G.191 Software Tools Library (g711.c), one sample at a time.


def _stl_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x8 - segno
    low_nibble = 0xF - ((absno >> segno) & 0xF)
    code = (high_nibble << 4) | low_nibble
    return code | 0x80 if x >= 0 else code


def _stl_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def _stl_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x7
    segment = exponent + 1
    mantissa &= 0xF
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def _stl_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def test_every_code_decodes_as_the_itu_reference() -> None:
    assert _ints(ulaw_decode(ALL_CODES)) == [_stl_ulaw_expand(c) for c in range(256)]
    assert _ints(alaw_decode(ALL_CODES)) == [_stl_alaw_expand(c) for c in range(256)]


def test_every_pcm16_value_encodes_as_the_itu_reference() -> None:
    values = range(-32768, 32768)
    assert list(ulaw_encode(ALL_PCM)) == [_stl_ulaw_compress(x) for x in values]
    assert list(alaw_encode(ALL_PCM)) == [_stl_alaw_compress(x) for x in values]


# ------------------------------------------------------------------ G.711 table values


def test_ulaw_table_values() -> None:
    """G.711 Table 2a scaled to 16 bits: first segment 0, 8, ... 120; peak 8031 * 4 = 32124."""
    assert _ints(ulaw_decode(bytes(range(0xFF, 0xEF, -1)))) == list(range(0, 128, 8))
    assert _ints(ulaw_decode(bytes(range(0x7F, 0x6F, -1)))) == [-v for v in range(0, 128, 8)]
    assert _ints(ulaw_decode(bytes([0x80, 0x00, 0xFF, 0x7F]))) == [32124, -32124, 0, 0]
    # Encoding: decision values sit halfway (16-bit 4 between 0 and 8); both zeros; clipping.
    assert list(ulaw_encode(_pcm([0, 3, 4, 8, 11, 12]))) == [0xFF, 0xFF, 0xFE, 0xFE, 0xFE, 0xFD]
    assert list(ulaw_encode(_pcm([-1, -4, -5, 32767, -32768]))) == [0x7F, 0x7F, 0x7E, 0x80, 0x00]


def test_alaw_table_values() -> None:
    """G.711 Table 1a scaled to 16 bits: first segment 8, 24, ... 248; peak 4032 * 8 = 32256."""
    positive = bytes((0x80 | i) ^ 0x55 for i in range(16))
    negative = bytes(i ^ 0x55 for i in range(16))
    assert _ints(alaw_decode(positive)) == list(range(8, 256, 16))
    assert _ints(alaw_decode(negative)) == [-v for v in range(8, 256, 16)]
    assert _ints(alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]
    assert list(alaw_encode(_pcm([0, 15, 16, -1, -16, -17]))) == [
        0xD5,
        0xD5,
        0xD4,
        0x55,
        0x55,
        0x54,
    ]
    assert list(alaw_encode(_pcm([32767, -32768]))) == [0xAA, 0x2A]


def test_codes_round_trip() -> None:
    """Decoding then encoding gives the code back; mu-law's negative zero becomes +0."""
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert ulaw_encode(ulaw_decode(ALL_CODES)) == bytes(expected)


@pytest.mark.parametrize(
    ("encode", "decode", "peak"),
    [(ulaw_encode, ulaw_decode, 32124), (alaw_encode, alaw_decode, 32256)],
)
def test_quantisation_is_monotonic_and_within_half_a_step(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes], peak: int
) -> None:
    x = np.arange(-32768, 32768)
    y = np.frombuffer(decode(encode(ALL_PCM)), dtype="<i2").astype(np.int64)
    assert np.all(np.diff(y) >= 0)
    inside = np.abs(x) <= peak
    assert np.max(np.abs(y[inside] - x[inside])) <= 512  # half the top segment's 1024 step
    assert np.max(np.abs(y)) == peak


def test_odd_pcm_length_is_refused() -> None:
    with pytest.raises(ValueError, match="whole samples"):
        ulaw_encode(b"\x00\x00\x00")
    with pytest.raises(ValueError, match="whole samples"):
        alaw_encode(b"\x00")


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="audioop was removed in Python 3.13")
def test_agrees_with_audioop_where_the_sun_code_agrees_with_the_itu() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    assert ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
    assert alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)
    ours = np.frombuffer(ulaw_encode(ALL_PCM), np.uint8)
    sun = np.frombuffer(audioop.lin2ulaw(ALL_PCM, 2), np.uint8)
    differ = np.arange(-32768, 32768)[ours != sun]
    # Only negative inputs next to a decision value: the Sun code negates, the ITU complements.
    assert differ.size and np.all(differ < 0)
    gap = np.abs(
        np.frombuffer(ulaw_decode(ours.tobytes()), "<i2").astype(int)
        - np.frombuffer(ulaw_decode(sun.tobytes()), "<i2").astype(int)
    )
    assert gap.max() <= 1024  # one step at most


# ------------------------------------------------------------------ wire formats <-> session audio


def _sine(hz: float, rate: int, samples: int, amplitude: float = 8000.0) -> np.ndarray:
    return np.rint(amplitude * np.sin(2 * np.pi * hz * np.arange(samples) / rate))


@pytest.mark.parametrize("fmt", G711)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 799, 800, 8001])
def test_clip_lengths_are_exact(fmt: WireFormat, n: int) -> None:
    """n G.711 bytes <-> 3n session samples, both ways (milliseconds agree)."""
    rng = np.random.default_rng(n)
    assert len(decode_clip(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), fmt)) == 6 * n
    pcm = rng.integers(-3000, 3000, n, dtype=np.int16).astype("<i2").tobytes()
    assert len(encode_clip(pcm, fmt)) == n // 3


@pytest.mark.parametrize("fmt", G711)
def test_streams_equal_whole_clips_whatever_the_chunking(fmt: WireFormat) -> None:
    rng = np.random.default_rng(7)
    wire = rng.integers(0, 256, 9000, dtype=np.uint8).tobytes()
    decoder, out, start = InputDecoder(fmt), [], 0
    while start < len(wire):
        step = int(rng.integers(1, 700))
        out.append(decoder.process(wire[start : start + step]))
        start += step
    out.append(decoder.flush())
    assert b"".join(out) == decode_clip(wire, fmt)

    pcm = _sine(300.0, 24000, 24001).astype("<i2").tobytes()
    encoder, chunks, start = OutputEncoder(fmt), [], 0
    while start < len(pcm):
        step = int(rng.integers(1, 3000))  # odd byte counts too: a sample split across chunks
        chunks.append(encoder.process(pcm[start : start + step]))
        start += step
    chunks.append(encoder.flush())
    assert b"".join(chunks) == encode_clip(pcm, fmt)


@pytest.mark.parametrize("fmt", G711)
def test_a_tone_survives_the_round_trip_time_aligned(fmt: WireFormat) -> None:
    """24 kHz -> 8 kHz G.711 -> 24 kHz: no delay, no gain change, ~39 dB SNR (8-bit G.711)."""
    tone = _sine(440.0, 24000, 24000)
    back = np.frombuffer(decode_clip(encode_clip(tone.astype("<i2").tobytes(), fmt), fmt), "<i2")
    body = slice(1000, -1000)
    error = back[body].astype(float) - tone[body]
    snr = 10 * np.log10(np.mean(tone[body] ** 2) / np.mean(error**2))
    assert snr > 33.0


@pytest.mark.parametrize("fmt", G711)
def test_speech_band_tone_decodes_at_its_frequency(fmt: WireFormat) -> None:
    """G.711 input is 8 kHz: a 1 kHz tone in G.711 is a 1 kHz tone in session audio."""
    tone = _sine(1000.0, 8000, 8000).astype("<i2").tobytes()
    wire = ulaw_encode(tone) if fmt == "audio/pcmu" else alaw_encode(tone)
    pcm = np.frombuffer(decode_clip(wire, fmt), "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(pcm))
    assert np.argmax(spectrum) * 24000 / len(pcm) == pytest.approx(1000.0, abs=2.0)


def test_pcm_passes_through() -> None:
    decoder = InputDecoder("audio/pcm")
    assert decoder.process(b"\x01\x02\x03") == b"\x01\x02"  # a dangling odd byte is dropped
    assert decoder.flush() == b""
    encoder = OutputEncoder("audio/pcm")
    assert encoder.process(b"\x01\x02") == b"\x01\x02"
    assert encoder.flush() == b""
    assert decode_clip(b"\x05\x00", "audio/pcm") == b"\x05\x00"
    assert encode_clip(b"\x05\x00", "audio/pcm") == b"\x05\x00"
