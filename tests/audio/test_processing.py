"""Echo cancellation and noise suppression of the input (``openrealtime.audio.processing``).

Real signals through the real module: flite speech as the assistant's audio, an echo of it
(delayed, scaled, through a short room response) plus room noise as the microphone, the real
WebRTC audio processing module, and the real Silero VAD judging what comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from openrealtime.audio.processing import FRAME_BYTES, VoiceProcessor
from openrealtime.backends.vad_silero import SileroVad
from tests.conformance.conftest import Speech, flite_speech

RATE = 24_000
STEP = 480 * 2  # 20 ms appends


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad.from_cache()


@pytest.fixture(scope="module")
def say(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Speech]:
    tmp: Path = tmp_path_factory.mktemp("flite")
    return lambda text: flite_speech(text, tmp)


ANSWER = (
    "The weather today is sunny with a light breeze from the west. Temperatures reach twenty "
    "degrees in the afternoon, and the evening stays mild and dry across the whole region."
)


def samples(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768


def pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()


def microphone(
    far: np.ndarray,
    *,
    echo_db: float | None,
    delay_ms: int = 120,
    near: np.ndarray | None = None,
    near_at_s: float = 0.0,
    noise_dbfs: float = -60,
) -> np.ndarray:
    """What a microphone hears: the loudspeaker's echo, the user, room noise."""
    n = len(far) + RATE
    mic = np.random.default_rng(1).normal(0, 10 ** (noise_dbfs / 20), n).astype(np.float32)
    if echo_db is not None:
        echo = np.convolve(far, [0.6, 0.25, 0.1, 0.05])[: len(far)] * 10 ** (echo_db / 20)
        start = delay_ms * RATE // 1000
        mic[start : start + len(echo)] += echo[: n - start]
    if near is not None:
        start = int(near_at_s * RATE)
        mic[start : start + len(near)] += near * 0.7
    return mic


def run(processor: VoiceProcessor, far: np.ndarray, mic: np.ndarray) -> bytes:
    """Push the far end as a WebSocket session does (all at once), then stream the mic."""
    processor.far_end(pcm(far), 0)
    data = pcm(mic)
    out = bytearray()
    for i in range(0, len(data), STEP):
        out += processor.process(data[i : i + STEP], i // 48)
    out += processor.flush()
    return bytes(out)


def speech_ms(vad: SileroVad, pcm16: bytes, start_s: float = 0.0) -> list[int]:
    """Positions (ms) of the 32 ms frames Silero finds speech in, from ``start_s`` on."""
    probabilities = vad.open_stream().feed(pcm16)
    return [i * 32 for i, p in enumerate(probabilities) if p > 0.5 and i * 32 >= start_s * 1000]


@pytest.mark.parametrize(("echo_db", "delay_ms"), [(-20, 40), (-12, 120), (-6, 250)])
def test_the_echo_of_the_answer_is_not_speech_any_more(
    vad: SileroVad, say: Callable[[str], Speech], echo_db: int, delay_ms: int
) -> None:
    far = samples(say(ANSWER).pcm)
    mic = microphone(far, echo_db=echo_db, delay_ms=delay_ms)
    assert len(speech_ms(vad, pcm(mic))) > 50  # the echo alone is heard as speech
    processor = VoiceProcessor()
    out = run(processor, far, mic)
    assert len(out) == len(pcm(mic))
    assert speech_ms(vad, out) == []
    assert processor.echo_path.echo is True
    # Echo return loss enhancement once converged (the last two thirds of the answer).
    tail = slice(len(far) // 3, len(far))
    erle = 10 * np.log10(np.mean(mic[tail] ** 2) / np.mean(samples(out)[tail] ** 2))
    assert erle > 20, erle


def test_the_user_talking_over_the_answer_is_still_heard(
    vad: SileroVad, say: Callable[[str], Speech]
) -> None:
    far = samples(say(ANSWER).pcm)
    stop = say("Stop. What time is it?")
    mic = microphone(far, echo_db=-12, near=samples(stop.pcm), near_at_s=5.0)
    out = run(VoiceProcessor(), far, mic)
    found = speech_ms(vad, out, start_s=4.5)
    onset = 5000 + stop.onset_ms
    assert found and found[0] - onset < 200, (found[:3], onset)


def test_a_headset_user_is_heard_as_is(vad: SileroVad, say: Callable[[str], Speech]) -> None:
    """No echo comes back: after the detector's 0.8 s the input is left untouched."""
    far = samples(say(ANSWER).pcm)
    stop = say("Stop please.")
    mic = microphone(far, echo_db=None, near=samples(stop.pcm), near_at_s=1.0)
    processor = VoiceProcessor()
    out = run(processor, far, mic)
    assert processor.echo_path.echo is False
    after = int(1.0 * RATE) * 2
    assert out[after:] == pcm(mic)[after:]
    found = speech_ms(vad, out, start_s=0.9)
    assert found and found[0] - (1000 + stop.onset_ms) < 100


def test_without_far_end_audio_the_input_passes_untouched() -> None:
    processor = VoiceProcessor()
    chunk = pcm(np.random.default_rng(2).normal(0, 0.1, 480).astype(np.float32))
    assert processor.process(chunk, 0) == chunk
    assert processor.frames_cancelled == 0


def test_cancellation_off_ignores_the_far_end(say: Callable[[str], Speech]) -> None:
    far = samples(say(ANSWER).pcm)
    mic = microphone(far, echo_db=-12)
    assert run(VoiceProcessor(echo_cancellation=False), far, mic) == pcm(mic)


def test_after_a_gap_in_the_input_stale_far_end_audio_is_dropped() -> None:
    """Push-to-talk: no microphone audio while most of the answer played."""
    processor = VoiceProcessor()
    processor.far_end(bytes(RATE * 2 * 10), now_ms=0)  # 10 s of answer, sent at once
    for ms in range(0, 1000, 20):
        processor.process(bytes(STEP), now_ms=ms)
    processor.process(bytes(STEP), now_ms=4000)  # the microphone comes back after 3 s
    # What played before 3.5 s (4 s less the echo's 500 ms reach) is gone.
    left_ms = processor._far.queued // 48
    assert 6480 <= left_ms <= 6520, left_ms


def test_a_late_but_steady_microphone_is_never_skipped_ahead() -> None:
    """Every append arrives 1.5 s after it was recorded: the lockstep alone keeps the lag."""
    processor = VoiceProcessor()
    for ms in range(0, 3000, 20):
        if ms == 500:
            processor.far_end(bytes(RATE * 2 * 10), now_ms=ms + 1500)
        processor.process(bytes(STEP), now_ms=ms + 1500)
    # 20 ms of silence put the answer at the microphone's "now" (an append ends 20 ms later).
    assert processor._far.queued // 48 == 10_000 + 20 - 2500


def test_barge_in_drops_the_far_end() -> None:
    processor = VoiceProcessor()
    processor.far_end(bytes(FRAME_BYTES * 10), now_ms=0)
    processor.drop_far_end()
    assert processor._far.queued == 0


@pytest.mark.parametrize("kind", ["near_field", "far_field"])
def test_noise_reduction_lowers_steady_noise(kind: str) -> None:
    rng = np.random.default_rng(3)
    noise = pcm(rng.normal(0, 10 ** (-30 / 20), RATE * 3).astype(np.float32))
    processor = VoiceProcessor()
    processor.set_noise_reduction(kind)  # type: ignore[arg-type]
    out = bytearray()
    for i in range(0, len(noise), STEP):
        out += processor.process(noise[i : i + STEP], i // 48)
    tail = slice(len(out) // 2, len(out))
    reduction = 10 * np.log10(
        np.mean(samples(noise[tail]) ** 2) / np.mean(samples(bytes(out[tail])) ** 2)
    )
    assert reduction > 6, reduction
    processor.set_noise_reduction(None)
    processor.flush()
    assert processor.process(noise[:STEP], 0) == noise[:STEP]


def test_input_streamed_faster_than_real_time_is_left_alone(say: Callable[[str], Speech]) -> None:
    """A file streamed at 8x cannot hold the room's echo: the canceller must not eat it."""
    far = samples(say(ANSWER).pcm)
    mic = pcm(microphone(far, echo_db=None, near=samples(say("Stop please.").pcm), near_at_s=0.3))
    processor = VoiceProcessor()
    processor.far_end(pcm(far), 0)
    out = bytearray()
    for i in range(0, len(mic), STEP):
        out += processor.process(mic[i : i + STEP], i // 48 // 8)
    # Found out within the first 300 ms of audio (the lateness fell by 250 ms); after that the
    # input is returned as it came.
    start = 300 * 48
    assert bytes(out[start:]) == mic[start : len(out)]


def test_a_live_microphone_with_jitter_is_still_cancelled(say: Callable[[str], Speech]) -> None:
    """Appends that arrive in bursts of up to 200 ms, as over a congested network."""
    far = samples(say(ANSWER).pcm)
    mic = pcm(microphone(far, echo_db=-12))
    processor = VoiceProcessor()
    processor.far_end(pcm(far), 0)
    out = bytearray()
    rng = np.random.default_rng(4)
    for i in range(0, len(mic), STEP):
        out += processor.process(mic[i : i + STEP], i // 48 + int(rng.integers(0, 200)))
    assert processor.frames_cancelled > len(far) // 240 * 0.9


def test_a_backlog_after_a_stall_is_still_live_input(say: Callable[[str], Speech]) -> None:
    """The server's loop (or the network) stalls 600 ms, then 600 ms of appends arrive at once:
    still a microphone, still cancelled."""
    far = samples(say(ANSWER).pcm)
    mic = pcm(microphone(far, echo_db=-12))
    processor = VoiceProcessor()
    processor.far_end(pcm(far), 0)
    for i in range(0, len(mic), STEP):
        at = i // 48
        if 2000 <= at < 2600:
            at = 2600  # held back, then all at once
        before = processor.frames_cancelled
        processor.process(mic[i : i + STEP], at)
        if at < len(far) // 24:  # while the answer plays
            assert processor.frames_cancelled == before + 2, at


def test_every_answer_starts_at_the_same_offset_from_the_microphone() -> None:
    """Answers pushed at different points of the client's append cycle: each one is placed at
    the microphone's audio time, so the echo's lag stays the same from answer to answer."""
    processor = VoiceProcessor()
    starts = []
    now = 0
    for answer_at in (1_005, 4_013, 7_019):  # ms, at different phases of the 20 ms appends
        while now + 20 <= answer_at:
            processor.process(bytes(STEP), now)  # appends at 0, 20, 40 ... (ending 20 ms later)
            now += 20
        processor.drop_far_end()
        processor.far_end(b"\x01\x00" * 4800, answer_at)  # 200 ms of answer
        queued = processor._far.take(processor._far.queued)
        lead = len(queued) // 2 - 4800  # silence put in front, in samples
        next_frame = processor._input_samples
        starts.append(next_frame + lead)
    # Each answer starts where the microphone is at its wall time: its audio time then is
    # wall time less the least lateness (-20 ms here: each append is sent as it starts).
    assert starts == [(t + 20) * 24 for t in (1_005, 4_013, 7_019)]


def answers_with_moving_alignment(
    answers: list[np.ndarray], leads: list[int], *, echo_db: float
) -> tuple[list[tuple[int, np.ndarray]], np.ndarray, list[int]]:
    """Answers a second apart, each pushed to the far end ``lead`` appends before the
    loudspeaker starts it (the client's playback start moves by one of its 20 ms ticks from
    answer to answer). Returns the pushes (sample, answer), the microphone and the starts."""
    chunk = STEP // 2
    starts, t = [], RATE // 2
    for answer in answers:
        starts.append(t // chunk * chunk)
        t = starts[-1] + len(answer) + RATE
    played = np.zeros(t + RATE, dtype=np.float32)
    pushes = []
    for start, answer, lead in zip(starts, answers, leads, strict=True):
        played[start : start + len(answer)] += answer
        pushes.append((start - lead * chunk, answer))
    mic = microphone(played, echo_db=echo_db)
    return pushes, mic[: len(played)], starts


def run_live(
    processor: VoiceProcessor, pushes: list[tuple[int, np.ndarray]], mic: np.ndarray
) -> bytes:
    """Stream the microphone; each answer reaches the far end when the server sends it."""
    chunk = STEP // 2
    at = dict(pushes)
    out = bytearray()
    for i in range(0, len(mic) // chunk * chunk, chunk):
        if i in at:
            processor.far_end(pcm(at[i]), i * 1000 // RATE)
        out += processor.process(pcm(mic[i : i + chunk]), i * 1000 // RATE)
    return bytes(out)


@pytest.mark.parametrize("echo_db", [-12, -6])
def test_answers_whose_echo_moved_do_not_leak_at_their_start(
    vad: SileroVad, say: Callable[[str], Speech], echo_db: int
) -> None:
    """AEC3 follows a moved echo within a second or two; until it has, what leaks through is
    no louder than the echo expected from the far end at the delay found, and is muted."""
    answers = [samples(say(text).pcm) for text in ANSWERS]
    pushes, mic, starts = answers_with_moving_alignment(answers, [0, 1, 0, 1], echo_db=echo_db)
    processor = VoiceProcessor()
    out = run_live(processor, pushes, mic)
    assert processor.echo_path.echo is True
    assert speech_ms(vad, out, start_s=starts[1] / RATE) == []


def test_the_user_is_heard_early_in_an_answer_whose_echo_moved(
    vad: SileroVad, say: Callable[[str], Speech]
) -> None:
    answers = [samples(say(text).pcm) for text in ANSWERS[:2]]
    pushes, mic, starts = answers_with_moving_alignment(answers, [0, 1], echo_db=-12)
    stop = say("Stop. What time is it?")
    at = starts[1] + RATE  # a second into the second answer
    near = samples(stop.pcm) * 0.7
    mic[at : at + len(near)] += near[: len(mic) - at]
    out = run_live(VoiceProcessor(), pushes, mic)
    found = speech_ms(vad, out, start_s=starts[1] / RATE)
    onset = at * 1000 // RATE + stop.onset_ms
    assert found and found[0] - onset < 600, (found[:3], onset)


ANSWERS = [
    ANSWER,
    "Sure. Here is another thought about the weather in the region this week.",
    "Of course. Rain may come later on Thursday, so keep an umbrella close by.",
    "Yes. The weekend looks bright and warm, a good time for a long walk outside.",
]
