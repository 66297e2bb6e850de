from __future__ import annotations

import numpy as np
import pytest

from openrealtime.audio.pcm import (
    SESSION_RATE,
    float32_to_pcm16,
    ms_to_samples,
    pcm16_to_float32,
    samples_to_ms,
)
from openrealtime.audio.resample import StreamResampler, resample


def _pcm(samples: np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def _sine(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return _pcm(np.rint(amp * np.sin(2 * np.pi * freq * t)))


def test_session_rate() -> None:
    assert SESSION_RATE == 24000


def test_pcm16_float_round_trip_is_exact() -> None:
    raw = _pcm(np.array([-32768, -1, 0, 1, 12345, 32767]))
    floats = pcm16_to_float32(raw)
    assert floats.dtype == np.float32
    assert floats[0] == -1.0
    assert floats[2] == 0.0
    assert float32_to_pcm16(floats) == raw


def test_float32_to_pcm16_clips() -> None:
    out = np.frombuffer(float32_to_pcm16(np.array([-2.0, 1.0, 1.5, 0.5], np.float32)), "<i2")
    assert out.tolist() == [-32768, 32767, 32767, 16384]


def test_pcm16_to_float32_rejects_odd_bytes() -> None:
    with pytest.raises(ValueError):
        pcm16_to_float32(b"\x00\x01\x02")


@pytest.mark.parametrize(
    ("n", "rate", "ms"),
    [(0, 24000, 0), (24000, 24000, 1000), (23, 24000, 0), (24, 24000, 1), (767, 24000, 31)],
)
def test_samples_to_ms_floors(n: int, rate: int, ms: int) -> None:
    assert samples_to_ms(n, rate) == ms


def test_ms_to_samples() -> None:
    assert ms_to_samples(20, 24000) == 480
    assert ms_to_samples(32, 16000) == 512
    assert ms_to_samples(1, 22050) == 22


def test_identity_stream_returns_input() -> None:
    r = StreamResampler(24000, 24000)
    data = _sine(440, 24000, 0.1)
    assert r.process(data) == data
    assert r.flush() == b""


def test_stream_carries_odd_byte() -> None:
    r = StreamResampler(16000, 16000)
    data = _pcm(np.array([1, 2, 3]))
    assert r.process(data[:3]) == data[:2]
    assert r.process(data[3:]) == data[2:]


def test_stream_length_and_alignment_24k_to_16k() -> None:
    # An impulse at 24 kHz sample 2400 (100 ms) comes out at 16 kHz sample 1600.
    x = np.zeros(24000, np.int16)
    x[2400] = 20000
    r = StreamResampler(24000, 16000)
    chunks = [r.process(_pcm(x[i : i + 480])) for i in range(0, len(x), 480)]
    out = np.frombuffer(b"".join(chunks) + r.flush(), "<i2")
    assert len(out) == 16000
    assert int(np.argmax(np.abs(out))) == 1600


def test_stream_matches_one_shot() -> None:
    data = _sine(300, 24000, 1.0)
    r = StreamResampler(24000, 16000)
    streamed = b"".join(r.process(data[i : i + 960]) for i in range(0, len(data), 960)) + r.flush()
    whole = resample(data, 24000, 16000)
    a = np.frombuffer(streamed, "<i2").astype(np.float64)
    b = np.frombuffer(whole, "<i2").astype(np.float64)
    assert len(a) == len(b) == 16000
    # Same signal away from the edges (the filters differ only in edge handling).
    assert np.max(np.abs(a[200:-200] - b[200:-200])) < 50


@pytest.mark.parametrize(("src", "dst"), [(16000, 24000), (22050, 24000), (24000, 8000)])
def test_one_shot_resample_preserves_tone(src: int, dst: int) -> None:
    out = np.frombuffer(resample(_sine(440, src, 1.0), src, dst), "<i2").astype(np.float64)
    assert abs(len(out) - dst) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * dst / len(out)
    assert abs(peak_hz - 440) < 2


def test_one_shot_identity_and_empty() -> None:
    data = _sine(440, 24000, 0.01)
    assert resample(data, 24000, 24000) == data
    assert resample(b"", 24000, 16000) == b""


def test_process_after_flush_raises() -> None:
    r = StreamResampler(24000, 16000)
    r.flush()
    assert r.flush() == b""
    with pytest.raises(RuntimeError):
        r.process(b"\x00\x00")


def test_bad_rates_rejected() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, 16000)


@pytest.mark.parametrize("rates", [(24000, 16000), (22050, 24000), (16000, 24000)])
def test_stream_output_does_not_depend_on_chunking(rates: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    data = _pcm(np.rint(rng.normal(0, 3000, rates[0])))

    def run(step: int) -> bytes:
        r = StreamResampler(*rates)
        return (
            b"".join(r.process(data[i : i + step]) for i in range(0, len(data), step)) + r.flush()
        )

    whole = run(len(data))
    assert run(960) == whole
    assert run(333) == whole  # odd byte counts included


def test_process_float_matches_process() -> None:
    data = _sine(440, 24000, 0.2)
    a, b = StreamResampler(24000, 16000), StreamResampler(24000, 16000)
    floats = np.concatenate([a.process_float(data), a.flush_float()])
    pcm = b.process(data) + b.flush()
    assert float32_to_pcm16(floats) == pcm
