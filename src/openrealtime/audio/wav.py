"""WAV containers for PCM16 audio: build one, read one, and a header for a stream.

Pure functions for the HTTP edges (design.md decision 9): the OpenAI-compatible STT engine
uploads WAV, ``/v1/audio/transcriptions`` reads it and ``/v1/audio/speech`` streams it.
"""

from __future__ import annotations

import io
import wave

import numpy as np

__all__ = ["read_wav", "wav_bytes", "wav_stream_header"]


def wav_bytes(pcm16: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap PCM16 little-endian audio in a WAV container.

    Args:
        pcm16: interleaved PCM16 samples.
        sample_rate: the rate in Hz.
        channels: the channel count.

    Returns:
        The whole WAV file.
    """
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm16)
    return buffer.getvalue()


def wav_stream_header(sample_rate: int) -> bytes:
    """The 44-byte header of a PCM16 mono WAV stream of unknown length.

    The RIFF and data sizes are set to their maximum, as streaming servers (OpenAI's
    ``/v1/audio/speech`` included) do; send the PCM16 samples right after it.
    """
    header = bytearray(wav_bytes(b"", sample_rate))
    header[4:8] = (0xFFFFFFFF).to_bytes(4, "little")
    header[40:44] = (0xFFFFFFFF - 36).to_bytes(4, "little")
    return bytes(header)


def read_wav(data: bytes) -> tuple[bytes, int]:
    """Decode a PCM WAV file (8/16/24/32-bit, any channel count) to PCM16 mono.

    Args:
        data: the whole file.

    Returns:
        ``(pcm16_mono, sample_rate)``; channels are averaged.

    Raises:
        ValueError: not a PCM WAV file this reader understands.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"invalid WAV file ({exc}); send PCM WAV") from None
    return _to_mono(_to_pcm16(frames, width), channels), rate


def _to_pcm16(frames: bytes, width: int) -> bytes:
    if width == 2:
        return frames
    if width == 1:  # unsigned 8-bit
        widened = np.frombuffer(frames, np.uint8).astype(np.int16) - 128
        return bytes((widened << 8).astype("<i2").tobytes())
    if width == 3:  # keep the two most significant bytes of each little-endian sample
        raw = np.frombuffer(frames, np.uint8)
        return bytes(raw[: len(raw) - len(raw) % 3].reshape(-1, 3)[:, 1:].tobytes())
    if width == 4:
        return bytes((np.frombuffer(frames, "<i4") >> 16).astype("<i2").tobytes())
    raise ValueError(f"unsupported WAV sample width: {width * 8} bits")


def _to_mono(pcm16: bytes, channels: int) -> bytes:
    if channels == 1:
        return pcm16
    samples = np.frombuffer(pcm16, "<i2")
    samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
    return bytes(samples.mean(axis=1).round().astype("<i2").tobytes())
