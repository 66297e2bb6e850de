"""Embedded speech engines on the real libraries: pocketsphinx STT, espeak-ng and flite TTS.

pocketsphinx and espeakng-loader are optional extras: their tests skip when they are missing.
flite comes from Debian (``apt-get install flite``): its tests skip without it, except under
``CI``, where it is expected and they fail instead. Input speech for the recognizer is made with
the flite CLI's ``rms`` voice, the one pocketsphinx hears best (embedded-stack.md §0.5).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openrealtime.audio.resample import resample
from openrealtime.backends.base import (
    SpeechToText,
    SynthesisRequest,
    TextToSpeech,
    TranscriptDelta,
    TranscriptFinal,
    TranscriptionEvent,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError
from openrealtime.backends.stt_pocketsphinx import (
    PocketsphinxSpeechToText,
    RecognizerStream,
    StreamingRecognizer,
    TranscriptDeltas,
)
from openrealtime.backends.tts_espeak import EspeakTextToSpeech, rate_for
from openrealtime.backends.tts_flite import FliteTextToSpeech, split_sentences

CI = bool(os.environ.get("CI"))
QUESTION = "What is the capital of France?"
SENTENCE = "The weather in Paris today is sunny with a high of twenty two degrees Celsius."
VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]

needs_pocketsphinx = pytest.mark.skipif(
    not PocketsphinxSpeechToText.available(),
    reason="pocketsphinx is not installed (pip install pocketsphinx)",
)
needs_espeak = pytest.mark.skipif(
    not EspeakTextToSpeech.available(),
    reason="espeak-ng is not available (pip install espeakng-loader)",
)


def _require_flite(what: str, present: bool) -> None:
    if present:
        return
    message = f"{what} not installed (apt-get install flite)"
    if CI:
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


# --------------------------------------------------------------------------- audio helpers


def _samples(pcm16: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def _rms(pcm16: bytes) -> float:
    return float(np.sqrt(np.mean(_samples(pcm16) ** 2)))


def _envelope(pcm16: bytes, rate: int) -> npt.NDArray[np.float64]:
    """Average log energy in 24 bands from 150 Hz to 7 kHz over the louder frames."""
    x = _samples(pcm16) / 32768.0
    n = 1024
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::256] * np.hanning(n)
    energy = (frames**2).mean(axis=1)
    frames = frames[energy > energy.max() * 0.01]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    edges = np.geomspace(150, 7000, 25)
    bands = np.stack(
        [
            power[:, (freqs >= lo) & (freqs < hi)].mean(axis=1)
            for lo, hi in itertools.pairwise(edges)
        ],
        axis=1,
    )
    log_bands = np.log(bands + 1e-10).mean(axis=0)
    return log_bands - log_bands.mean()


class _FliteSpeech(dict[str, bytes]):
    """Text -> 16 kHz PCM16 spoken by the flite CLI's rms voice, made on first use."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, text: str) -> bytes:
        path = self.folder / f"{len(self)}.wav"
        subprocess.run(
            ["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True, capture_output=True
        )
        self[text] = _read_wav_16k(path)
        return self[text]


@pytest.fixture(scope="session")
def flite_speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    _require_flite("the flite command is", shutil.which("flite") is not None)
    return _FliteSpeech(tmp_path_factory.mktemp("flite_speech"))


def _read_wav_16k(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    return raw if rate == 16000 else resample(raw, rate, 16000)


def _words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c in " '").split())


# --------------------------------------------------------------------------- deltas (pure)


def test_deltas_release_words_once_stable_and_not_last() -> None:
    deltas = TranscriptDeltas(holdback_words=2, stable_updates=2)
    assert deltas.update("what is the") is None  # first sight: not yet stable
    assert deltas.update("what is the cap") == "what is"  # "the cap" held back
    assert deltas.update("what is the capital of") == " the"
    assert deltas.update("what is the capital of france") == " capital"
    assert deltas.finish("what is the capital of france") == " of france"
    assert deltas.text == "what is the capital of france"


def test_deltas_stop_at_a_revision_and_leave_the_truth_to_the_final() -> None:
    deltas = TranscriptDeltas(holdback_words=1, stable_updates=1)
    assert deltas.update("hello many people") == "hello many"
    assert deltas.update("so many people live here") is None  # "hello" revised
    assert deltas.update("so many people live here now") is None
    assert deltas.finish("so many people live here") is None
    assert deltas.revised


def test_deltas_final_shorter_or_equal_adds_nothing() -> None:
    deltas = TranscriptDeltas(holdback_words=0, stable_updates=1)
    assert deltas.update("one two") == "one two"
    assert deltas.finish("one two") is None
    assert not deltas.revised


# --------------------------------------------------------------------------- pocketsphinx


@pytest.fixture(scope="module")
def stt() -> Iterator[PocketsphinxSpeechToText]:
    engine = PocketsphinxSpeechToText(max_decoders=3)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def stt_single() -> Iterator[PocketsphinxSpeechToText]:
    engine = PocketsphinxSpeechToText(max_decoders=1)
    yield engine
    engine.close()


async def _transcribe(
    stt: SpeechToText, pcm16: bytes, rate: int = 16000
) -> list[TranscriptionEvent]:
    return [event async for event in stt.transcribe(TranscriptionRequest(pcm16, rate))]


@needs_pocketsphinx
@pytest.mark.slow
async def test_transcribe_streams_deltas_then_the_final(
    stt: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    assert isinstance(stt, SpeechToText)
    audio = flite_speech[QUESTION]
    events = await _transcribe(stt, audio)
    *deltas, final = events
    assert isinstance(final, TranscriptFinal)
    assert deltas and all(isinstance(d, TranscriptDelta) for d in deltas)
    assert "capital" in final.text and "france" in final.text
    assert "".join(d.text for d in deltas if isinstance(d, TranscriptDelta)) == final.text
    assert final.audio_seconds == pytest.approx(len(audio) / 2 / 16000)


@needs_pocketsphinx
@pytest.mark.slow
async def test_streaming_recognizer_gives_the_same_final(
    stt: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    assert isinstance(stt, StreamingRecognizer)
    audio = flite_speech[QUESTION]
    *_, expected = await _transcribe(stt, audio)
    stream = await stt.aopen_stream()
    assert isinstance(stream, RecognizerStream)
    partials = []
    for start in range(0, len(audio), 640):  # 20 ms, as a client sends it
        partial = await stream.afeed(audio[start : start + 640])
        if partial is not None:
            partials.append(partial)
    final = await stream.afinish()
    assert isinstance(expected, TranscriptFinal)
    assert final == expected.text
    assert len(partials) == len(audio) // 3200  # one per 100 ms of audio
    assert stream.audio_seconds == pytest.approx(len(audio) / 2 / 16000)
    assert await stream.afinish() == final  # idempotent
    with pytest.raises(RuntimeError):
        await stream.afeed(b"\0\0")


@needs_pocketsphinx
@pytest.mark.slow
async def test_same_audio_same_transcript_whatever_was_decoded_before(
    stt_single: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    first = await _transcribe(stt_single, flite_speech[QUESTION])
    await _transcribe(stt_single, flite_speech["Please turn off the lights in the kitchen."])
    again = await _transcribe(stt_single, flite_speech[QUESTION])
    assert again == first
    assert stt_single.decoders == 1


@needs_pocketsphinx
@pytest.mark.slow
async def test_other_rates_are_resampled(
    stt: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    audio_24k = resample(flite_speech[QUESTION], 16000, 24000)
    *_, final = await _transcribe(stt, audio_24k, 24000)
    assert isinstance(final, TranscriptFinal)
    assert "capital" in final.text and "france" in final.text
    assert final.audio_seconds == pytest.approx(len(audio_24k) / 2 / 24000)


@needs_pocketsphinx
@pytest.mark.slow
async def test_empty_audio_gives_an_empty_final(stt: PocketsphinxSpeechToText) -> None:
    assert await _transcribe(stt, b"") == [TranscriptFinal("", 0.0)]


@needs_pocketsphinx
@pytest.mark.slow
async def test_three_at_once_are_all_right_and_the_loop_stays_responsive(
    stt: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    texts = [
        QUESTION,
        "How many people live in New York City?",
        "Please turn off the lights in the kitchen.",
    ]
    audios = [flite_speech[text] for text in texts]
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    results = await asyncio.gather(*(_transcribe(stt, audio) for audio in audios))
    stop.set()
    await ticking
    # Right = what each clip gives alone (the recognizer is deterministic; flite's speech is
    # not quite, so the clip, not the text, is the reference), and the key words are there.
    alone = [(await _transcribe(stt, audio))[-1] for audio in audios]
    assert [events[-1] for events in results] == alone
    for final, key in zip(alone, ["capital", "york", "kitchen"], strict=True):
        assert isinstance(final, TranscriptFinal) and key in final.text
    assert len(gaps) > 5
    assert max(gaps) < 0.1, f"event loop stalled for {max(gaps) * 1000:.0f} ms"


@needs_pocketsphinx
@pytest.mark.slow
async def test_abandoned_transcription_returns_its_decoder(
    stt_single: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    audio = flite_speech[QUESTION]
    events = stt_single.transcribe(TranscriptionRequest(audio, 16000))
    assert isinstance(events, AsyncIterator)
    first = await anext(events)
    assert isinstance(first, TranscriptDelta)
    await events.aclose()
    # With one decoder, this only finishes if the abandoned one went back to the pool.
    *_, final = await asyncio.wait_for(_transcribe(stt_single, audio), 30)
    assert isinstance(final, TranscriptFinal) and "france" in final.text


@needs_pocketsphinx
@pytest.mark.slow
async def test_a_dead_decoder_process_is_replaced(
    stt_single: PocketsphinxSpeechToText, flite_speech: dict[str, bytes]
) -> None:
    await _transcribe(stt_single, flite_speech[QUESTION])
    (idle,) = stt_single._pool.idle
    idle.kill()  # as if the OS had killed it
    *_, final = await _transcribe(stt_single, flite_speech[QUESTION])
    assert isinstance(final, TranscriptFinal) and "france" in final.text
    assert stt_single.decoders == 1


@needs_pocketsphinx
@pytest.mark.slow
async def test_decoder_failure_is_a_transcription_failed_error(
    flite_speech: dict[str, bytes],
) -> None:
    engine = PocketsphinxSpeechToText(1, decoder_options={"hmm": "/nonexistent/model"})
    try:
        with pytest.raises(BackendError) as raised:
            await _transcribe(engine, flite_speech[QUESTION])
        assert raised.value.code == "transcription_failed"
        assert engine.decoders == 0
    finally:
        engine.close()


# --------------------------------------------------------------------------- TTS, both engines


@pytest.fixture(scope="module")
def espeak() -> Iterator[EspeakTextToSpeech]:
    if not EspeakTextToSpeech.available():
        pytest.skip("espeak-ng is not available (pip install espeakng-loader)")
    engine = EspeakTextToSpeech()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def flite() -> Iterator[FliteTextToSpeech]:
    _require_flite("the flite libraries are", FliteTextToSpeech.available())
    engine = FliteTextToSpeech()
    yield engine
    engine.close()


@pytest.fixture(params=["espeak", "flite"])
def tts(request: pytest.FixtureRequest) -> TextToSpeech:
    engine = request.getfixturevalue(request.param)
    assert isinstance(engine, TextToSpeech)
    return engine


async def _speak(tts: TextToSpeech, text: str, voice: str = "alloy", speed: float = 1.0) -> bytes:
    chunks = [chunk async for chunk in tts.synthesize(SynthesisRequest(text, voice, speed))]
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    return b"".join(chunks)


async def test_speaks_in_several_audible_chunks_of_plausible_length(tts: TextToSpeech) -> None:
    chunks = [chunk async for chunk in tts.synthesize(SynthesisRequest(SENTENCE))]
    assert len(chunks) >= 5
    audio = b"".join(chunks)
    assert _rms(audio) > 500  # about -36 dBFS: speech, not silence
    seconds = len(audio) / 2 / tts.sample_rate
    words = len(SENTENCE.split())
    assert 0.15 * words < seconds < 0.6 * words


async def test_each_voice_sounds_different(tts: TextToSpeech) -> None:
    envelopes = {v: _envelope(await _speak(tts, SENTENCE, v), tts.sample_rate) for v in VOICES}
    repeats = [
        float(np.linalg.norm(_envelope(await _speak(tts, SENTENCE, v), tts.sample_rate) - e))
        for v, e in list(envelopes.items())[:3]
    ]
    distances = {
        (a, b): float(np.linalg.norm(envelopes[a] - envelopes[b]))
        for a, b in itertools.combinations(VOICES, 2)
    }
    closest = min(distances, key=lambda pair: distances[pair])
    assert distances[closest] > 2 * max(repeats) + 0.1, (closest, distances[closest], repeats)


async def test_faster_speech_is_shorter(tts: TextToSpeech) -> None:
    fast = await _speak(tts, SENTENCE, speed=1.5)
    slow = await _speak(tts, SENTENCE, speed=0.75)
    assert len(fast) < 0.7 * len(slow)


async def test_first_chunk_comes_long_before_a_long_text_is_done(tts: TextToSpeech) -> None:
    text = " ".join([SENTENCE] * 8)
    start = time.perf_counter()
    first: float | None = None
    async for _chunk in tts.synthesize(SynthesisRequest(text)):
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert first is not None and first < total / 4, (first, total)


async def test_stopping_early_then_speaking_again(tts: TextToSpeech) -> None:
    stream = tts.synthesize(SynthesisRequest(" ".join([SENTENCE] * 10)))
    assert isinstance(stream, AsyncIterator)
    assert await anext(stream)
    await stream.aclose()
    assert _rms(await _speak(tts, SENTENCE)) > 500


async def test_blank_text_yields_nothing(tts: TextToSpeech) -> None:
    assert await _speak(tts, "  \n ") == b""


def test_espeak_voice_mapping_and_rate(espeak: EspeakTextToSpeech) -> None:
    assert len({espeak.voice_for(v) for v in VOICES}) == len(VOICES)
    assert espeak.voice_for("no-such-voice") == espeak.voice_for("alloy")
    assert (rate_for(1.0), rate_for(1.5), rate_for(0.25), rate_for(4.0)) == (175, 262, 80, 450)


def test_flite_voice_mapping_and_sentences(flite: FliteTextToSpeech) -> None:
    assert len({flite.voice_for(v) for v in VOICES}) == len(VOICES)
    assert flite.voice_for("no-such-voice") == flite.voice_for("alloy")
    assert flite.voice_for("slt").name == "slt"
    assert split_sentences("Hi there. It\u2019s 7:30! Ok?\n\nNext") == [
        "Hi there.",
        "It's 7:30!",
        "Ok?",
        "Next",
    ]


# --------------------------------------------------------------------------- round trip


@needs_pocketsphinx
@pytest.mark.slow
async def test_flite_speech_is_understood_by_pocketsphinx(
    flite: FliteTextToSpeech, stt: PocketsphinxSpeechToText
) -> None:
    # flite's unvoiced excitation is random, so the same text never gives quite the same audio:
    # "How many people live ..." came back with an extra "who" in 1 of 60 runs. Every spoken
    # word must come back, in order; one inserted word is tolerated.
    for text in [QUESTION, "How many people live in New York City?"]:
        audio = await _speak(flite, text, "alloy")  # rms
        *_, final = await _transcribe(stt, audio, flite.sample_rate)
        assert isinstance(final, TranscriptFinal)
        heard, said = _words(final.text).split(), _words(text).split()
        remaining = iter(heard)
        assert all(word in remaining for word in said), (heard, said)
        assert len(heard) <= len(said) + 1, (heard, said)
