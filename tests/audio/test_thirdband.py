"""The 8 <-> 24 kHz third-band filters of the SIP edge: response, delay, streaming, no hold."""

from __future__ import annotations

import numpy as np
import pytest

from openrealtime.audio.resample import StreamResampler
from openrealtime.audio.thirdband import (
    DELAY_8K,
    DELAY_24K,
    NUM_TAPS,
    ThirdbandDownsampler,
    ThirdbandUpsampler,
    thirdband_taps,
)
from tests.audio import signals as sg


def test_taps_are_a_linear_phase_third_band_filter() -> None:
    taps = thirdband_taps()
    assert len(taps) == NUM_TAPS == 97
    assert np.allclose(taps, taps[::-1])
    assert taps[DELAY_24K] == pytest.approx(1 / 3, abs=1e-15)
    assert np.allclose(taps[DELAY_24K + 3 :: 3], 0) and np.allclose(taps[DELAY_24K - 3 :: -3], 0)
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="6k"):
        thirdband_taps(96)


def test_flat_in_the_telephone_band_and_quiet_above_it() -> None:
    passband = sg.response_db(thirdband_taps(), np.linspace(0, 3400, 200), 24000)
    assert np.max(np.abs(passband)) < 0.1, np.max(np.abs(passband))
    stopband = sg.response_db(thirdband_taps(), np.linspace(4600, 12000, 400), 24000)
    assert np.max(stopband) < -60, np.max(stopband)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_upsampling_keeps_a_tone_with_the_stated_delay(freq: float) -> None:
    up = ThirdbandUpsampler()
    tone = sg.sine(freq, 8000, 8000)
    out = sg.floats(b"".join(up.process(sg.pcm(tone[i : i + 160])) for i in range(0, 8000, 160)))
    assert len(out) == 3 * len(tone)
    expected = sg.sine(freq, 24000, len(out), delay=DELAY_24K)
    steady = slice(2 * NUM_TAPS, None)
    assert sg.rms(out[steady] - expected[steady]) < 0.01 * sg.rms(expected[steady])


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_downsampling_keeps_a_tone_with_the_stated_delay(freq: float) -> None:
    down = ThirdbandDownsampler()
    tone = sg.sine(freq, 24000, 24000)
    out = sg.floats(b"".join(down.process(sg.pcm(tone[i : i + 480])) for i in range(0, 24000, 480)))
    assert len(out) == len(tone) // 3
    expected = sg.sine(freq, 8000, len(out), delay=DELAY_8K)
    steady = slice(NUM_TAPS, None)
    assert sg.rms(out[steady] - expected[steady]) < 0.01 * sg.rms(expected[steady])


def test_downsampling_removes_what_would_alias() -> None:
    down = ThirdbandDownsampler()
    out = sg.floats(down.process(sg.pcm(sg.sine(6000, 24000, 24000))))  # folds to 2 kHz if kept
    assert sg.rms(out[NUM_TAPS:]) < 16000 * 10 ** (-60 / 20)


def test_every_frame_comes_out_with_that_frame() -> None:
    """Unlike soxr's stream, which holds 40 ms and then gives 61: the reason for this module."""
    up, down = ThirdbandUpsampler(), ThirdbandDownsampler()
    assert [len(up.process(bytes(320))) for _ in range(5)] == [960] * 5
    assert [len(down.process(bytes(960))) for _ in range(5)] == [320] * 5
    assert len(down.process(bytes(4))) == 0 and len(down.process(bytes(2))) == 2  # a triple
    soxr = StreamResampler(24000, 8000)
    assert len(soxr.process(bytes(960))) < 320  # what it replaces held the first frame back
