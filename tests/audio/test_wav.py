"""WAV helpers: round trips, sample widths, channel mixing, the streaming header."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from openrealtime.audio.wav import read_wav, wav_bytes, wav_stream_header

PCM = (np.arange(-8, 8, dtype=np.int16) * 2048).astype("<i2").tobytes()


def _wav(frames: bytes, width: int, channels: int = 1, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)
    return buffer.getvalue()


def test_round_trip_and_stereo_mix() -> None:
    assert read_wav(wav_bytes(PCM, 16000)) == (PCM, 16000)
    stereo = np.repeat(np.frombuffer(PCM, "<i2"), 2).tobytes()
    assert read_wav(wav_bytes(stereo, 44100, channels=2)) == (PCM, 44100)


def test_other_sample_widths() -> None:
    samples = np.frombuffer(PCM, "<i2").astype(np.int32)
    as32 = (samples << 16).astype("<i4").tobytes()
    as24 = b"".join(int(s << 8).to_bytes(3, "little", signed=True) for s in samples)
    as8 = ((samples >> 8) + 128).astype(np.uint8).tobytes()
    assert read_wav(_wav(as32, 4)) == (PCM, 8000)
    assert read_wav(_wav(as24, 3)) == (PCM, 8000)
    assert read_wav(_wav(as8, 1)) == (PCM, 8000)


def test_bad_file_and_stream_header() -> None:
    with pytest.raises(ValueError, match="invalid WAV"):
        read_wav(b"RIFF\x00\x00\x00\x00WAVEjunk")
    header = wav_stream_header(24000)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[36:40] == b"data"
    assert int.from_bytes(header[24:28], "little") == 24000
