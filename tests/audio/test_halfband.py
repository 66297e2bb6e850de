"""The 24 <-> 48 kHz halfband filters of the WebRTC edge: response, delay, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from openrealtime.audio.halfband import (
    DELAY_24K,
    DELAY_48K,
    NUM_TAPS,
    HalfbandDownsampler,
    HalfbandUpsampler,
    halfband_taps,
)
from tests.audio import signals as sg


def _db(x: float) -> float:
    return float(20 * np.log10(max(x, 1e-12)))


# --------------------------------------------------------------------------- the filter


def test_taps_are_a_linear_phase_halfband() -> None:
    taps = halfband_taps()
    assert len(taps) == NUM_TAPS == 63
    assert np.allclose(taps, taps[::-1])  # symmetric: linear phase, delay (N - 1) / 2
    assert taps[DELAY_48K] == 0.5
    assert np.all(taps[DELAY_48K + 2 :: 2] == 0) and np.all(taps[DELAY_48K - 2 :: -2] == 0)
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    assert taps[0] != 0


@pytest.mark.parametrize("num_taps", [1, 2, 29, 32, 61])
def test_taps_need_4k_plus_3(num_taps: int) -> None:
    with pytest.raises(ValueError, match="4k"):
        halfband_taps(num_taps)


def test_passband_is_flat_and_stopband_is_70_db_down() -> None:
    passband = sg.response_db(halfband_taps(), np.linspace(0, 10000, 2001), 48000)
    assert passband.max() - passband.min() < 0.01
    assert abs(passband[0]) < 1e-9  # DC gain 1
    stopband = sg.response_db(halfband_taps(), np.linspace(14000, 24000, 2001), 48000)
    assert stopband.max() < -70
    assert sg.response_db(halfband_taps(), np.array([12000.0]), 48000)[0] == pytest.approx(
        -6.02, abs=0.01
    )


def test_delays_are_well_under_a_millisecond() -> None:
    assert DELAY_48K == 31 and DELAY_48K / 48000 < 0.001
    assert DELAY_24K == 15 and DELAY_24K / 24000 < 0.001


# --------------------------------------------------------------------------- upsampling


def test_upsampler_delay_is_31_samples_at_48k() -> None:
    impulse = np.zeros(200)
    impulse[50] = 16000
    out = sg.floats(HalfbandUpsampler().process(sg.pcm(impulse)))
    assert len(out) == 400
    assert int(np.argmax(out)) == 2 * 50 + DELAY_48K
    assert out[2 * 50 + DELAY_48K] == 16000  # the odd phase passes the input through
    peak = 2 * 50 + DELAY_48K
    response = out[peak - DELAY_48K : peak + DELAY_48K + 1]
    assert np.allclose(response, response[::-1], atol=1)  # symmetric about the claimed delay


def test_upsampled_tone_is_the_same_tone_at_48k_delayed_31_samples() -> None:
    x = sg.sine(1000, 24000, 4800)
    out = sg.floats(HalfbandUpsampler().process(sg.pcm(x)))
    ideal = sg.sine(1000, 48000, 9600, delay=DELAY_48K)
    error = (out - ideal)[200:]  # past the start-up transient
    assert _db(sg.rms(error) / sg.rms(ideal)) < -70


def test_upsampling_leaves_no_image_above_14_khz() -> None:
    out = sg.floats(HalfbandUpsampler().process(sg.pcm(sg.sine(9000, 24000, 24000))))[2000:]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / 48000)
    tone = spectrum[np.abs(freqs - 9000) < 50].max()
    image = spectrum[freqs > 14000].max()  # 9 kHz's image is at 24 - 9 = 15 kHz
    assert _db(image / tone) < -70


# --------------------------------------------------------------------------- downsampling


def test_downsampler_delay_is_15_samples_at_24k() -> None:
    x = sg.sine(1000, 48000, 9600)
    out = sg.floats(HalfbandDownsampler().process(sg.pcm(x)))
    assert len(out) == 4800
    ideal = sg.sine(1000, 24000, 4800, delay=DELAY_24K)
    error = (out - ideal)[100:]
    assert _db(sg.rms(error) / sg.rms(ideal)) < -70


def test_downsampling_rejects_what_would_alias() -> None:
    # 16 kHz would fold to 8 kHz; 14 kHz to 10 kHz.
    for freq in (14000, 16000, 20000):
        out = sg.floats(HalfbandDownsampler().process(sg.pcm(sg.sine(freq, 48000, 9600))))[100:]
        assert _db(sg.rms(out) / 16000) < -66, freq  # -70 dB is about 1.6 LSB: rounding counts


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(
    ("make", "rate"), [(HalfbandUpsampler, 24000), (HalfbandDownsampler, 48000)]
)
def test_chunked_stream_equals_one_pass(make: type, rate: int) -> None:
    rng = np.random.default_rng(1)
    pcm = sg.pcm(sg.sine(440, rate, rate // 2) + rng.normal(0, 2000, rate // 2))
    whole = make().process(pcm)
    resampler = make()
    pieces = []
    pos = 0
    while pos < len(pcm):
        size = int(rng.integers(1, 999))  # odd byte counts too
        pieces.append(resampler.process(pcm[pos : pos + size]))
        pos += size
    assert b"".join(pieces) == whole


def test_a_tone_in_frame_k_comes_out_in_frame_k() -> None:
    """20 ms frames in, 20 ms frames out, each at once: nothing is held for the next frame."""
    up, down = HalfbandUpsampler(), HalfbandDownsampler()
    tone = sg.sine(1000, 24000, 480 * 3)
    frames24 = [bytes(960)] * 3 + [sg.pcm(tone[i : i + 480]) for i in range(0, len(tone), 480)]
    for k, frame in enumerate(frames24):
        frame48 = sg.floats(up.process(frame))
        back = sg.floats(down.process(sg.pcm(frame48)))
        assert (len(frame48), len(back)) == (960, 480)
        if k < 3:
            assert not frame48.any() and not back.any(), k
        elif k == 3:  # the tone starts within this very frame, after the filters' delay
            assert sg.rms(frame48[DELAY_48K:]) > 10000
            assert sg.rms(back[DELAY_48K:]) > 10000


def test_up_then_down_is_the_input_delayed_30_5_samples() -> None:
    """31 + 31 samples at 48 kHz, less the one the downsampler's phase gains: 30.5 at 24 kHz."""
    x = sg.sine(3000, 24000, 4800) + sg.sine(7000, 24000, 4800, amp=8000)
    out = sg.floats(HalfbandDownsampler().process(HalfbandUpsampler().process(sg.pcm(x))))
    ideal = sg.sine(3000, 24000, 4800, delay=30.5) + sg.sine(
        7000, 24000, 4800, amp=8000, delay=30.5
    )
    error = (out - ideal)[200:]
    assert _db(sg.rms(error) / sg.rms(ideal)) < -65


def test_an_empty_or_partial_chunk_gives_nothing_yet() -> None:
    assert HalfbandUpsampler().process(b"") == b""
    down = HalfbandDownsampler()
    assert down.process(b"\x01\x00") == b""  # half a pair: waits for its partner
    assert len(down.process(b"\x01\x00")) == 2
