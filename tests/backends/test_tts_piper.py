"""The embedded Piper voice (``--tts piper``) on the real model, espeak-ng and onnxruntime.

The pinned ``piper-joe`` voice is resolved through the model cache (fetched once if missing).
Skips without espeak-ng (``pip install espeakng-loader``), which makes the phonemes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openrealtime.backends.base import (
    SynthesisRequest,
    TextToSpeech,
    TranscriptFinal,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError, ModelFileError
from openrealtime.backends.registry import build_tts
from openrealtime.backends.stt_pocketsphinx import PocketsphinxSpeechToText
from openrealtime.backends.tts_languages import WithOtherLanguages
from openrealtime.backends.tts_piper import (
    PiperTextToSpeech,
    clause_end,
    phoneme_ids,
    sentences_from_clauses,
)
from openrealtime.config import Config
from openrealtime.models import resolve_model

SENTENCE = "The weather in Paris today is sunny with a high of twenty two degrees Celsius."
QUESTION = "What is the capital of France?"
VOICES = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PiperTextToSpeech.available(),
        reason="espeak-ng is not available (pip install espeakng-loader)",
    ),
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return resolve_model("piper-joe", progress=False)


@pytest.fixture(scope="module")
def piper(model_path: Path) -> Iterator[PiperTextToSpeech]:
    engine = PiperTextToSpeech(model_path)
    yield engine
    engine.close()


async def _speak(tts: TextToSpeech, text: str, voice: str = "alloy", speed: float = 1.0) -> bytes:
    chunks = [chunk async for chunk in tts.synthesize(SynthesisRequest(text, voice, speed))]
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    return b"".join(chunks)


def _rms(pcm16: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(pcm16, dtype="<i2").astype(np.float64) ** 2)))


# --------------------------------------------------------------------------- audio


async def test_speaks_a_sentence_at_22050_hz_for_a_plausible_time(
    piper: PiperTextToSpeech,
) -> None:
    assert isinstance(piper, TextToSpeech)
    assert piper.name == "piper"
    assert piper.sample_rate == PiperTextToSpeech.sample_rate == 22050
    audio = await _speak(piper, SENTENCE)
    assert _rms(audio) > 500  # speech, not silence
    seconds = len(audio) / 2 / piper.sample_rate
    words = len(SENTENCE.split())
    assert 0.12 * words < seconds < 0.6 * words, seconds


async def test_faster_speech_is_shorter(piper: PiperTextToSpeech) -> None:
    fast = await _speak(piper, SENTENCE, speed=1.5)
    slow = await _speak(piper, SENTENCE, speed=0.75)
    assert len(fast) < 0.7 * len(slow), (len(fast), len(slow))


async def test_first_sentence_is_heard_before_the_rest_is_made(piper: PiperTextToSpeech) -> None:
    text = f"{SENTENCE} {SENTENCE} {SENTENCE}"
    start = time.perf_counter()
    first: float | None = None
    chunks = 0
    async for _chunk in piper.synthesize(SynthesisRequest(text)):
        chunks += 1
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert chunks >= 3 * 20  # 100 ms chunks, three sentences of several seconds
    assert first is not None and first < 0.6 * total, (first, total)


async def test_every_voice_name_speaks_with_the_one_speaker(piper: PiperTextToSpeech) -> None:
    assert piper.config.num_speakers == 1
    assert {piper.speaker_for(v) for v in [*VOICES, "no-such-voice"]} == {None}
    assert _rms(await _speak(piper, "Hello there.", "no-such-voice")) > 500


async def test_stopping_early_then_speaking_again(piper: PiperTextToSpeech) -> None:
    stream = piper.synthesize(SynthesisRequest(f"{SENTENCE} {SENTENCE}"))
    assert await anext(stream)
    await stream.aclose()
    assert _rms(await _speak(piper, QUESTION)) > 500


async def test_blank_or_unspeakable_text_yields_nothing(piper: PiperTextToSpeech) -> None:
    assert await _speak(piper, "  \n ") == b""


async def test_understood_by_pocketsphinx(piper: PiperTextToSpeech) -> None:
    """PocketSphinx hears Piper's speech word for word, over several renderings.

    Piper draws fresh noise on every call (noise_scale, noise_w), so one rendering in a dozen
    or so comes out slurred ("whether i'm cursed today" for "weather in Paris today"); the
    words heard are counted over three renderings of each text, as a listener would judge.
    """
    if not PocketsphinxSpeechToText.available():
        pytest.skip("pocketsphinx is not installed (pip install pocketsphinx)")
    stt = PocketsphinxSpeechToText(max_decoders=1)
    found, wanted, heard_all = 0, 0, []
    try:
        for text in [QUESTION, SENTENCE] * 3:
            audio = await _speak(piper, text)  # 22 050 Hz; the engine resamples to 16 kHz
            request = TranscriptionRequest(audio, piper.sample_rate)
            *_, final = [event async for event in stt.transcribe(request)]
            assert isinstance(final, TranscriptFinal)
            said = re.sub(r"[^a-z ]", "", text.lower()).split()
            heard = set(final.text.split())
            found, wanted = found + sum(word in heard for word in said), wanted + len(said)
            heard_all.append(final.text)
    finally:
        stt.close()
    # 12 renderings of each here: 23 of 24 heard at 93 % or better, one at 80 %; CI once
    # heard a rendering at 67 %, which is 88 % over these six
    assert found >= 0.85 * wanted, heard_all


# --------------------------------------------------------------------------- phonemes and ids


def test_phoneme_ids_follow_piper(piper: PiperTextToSpeech) -> None:
    id_map = piper.config.phoneme_id_map
    [phonemes] = piper.phonemize("Hi.")
    assert "".join(phonemes) == "hˈaɪ."
    ids = piper.phoneme_ids(phonemes)
    expected = [id_map["^"][0], id_map["_"][0]]
    for phoneme in phonemes:
        expected += [id_map[phoneme][0], id_map["_"][0]]
    expected.append(id_map["$"][0])
    assert ids == expected == [1, 0, 20, 0, 120, 0, 14, 0, 74, 0, 10, 0, 2]
    assert ids[0] == id_map["^"][0] and ids[-1] == id_map["$"][0]
    assert set(ids[1:-1:2]) == {id_map["_"][0]}  # a pad after BOS and after every phoneme


def test_phonemes_missing_from_the_map_are_skipped() -> None:
    id_map = {"_": [0], "^": [1], "$": [2], "a": [5]}
    assert phoneme_ids(["a", "\u2603", "a"], id_map) == [1, 0, 5, 0, 5, 0, 2]


def test_sentences_keep_espeak_punctuation(piper: PiperTextToSpeech) -> None:
    text = "Hello world. How are you? I'm fine, thanks: really; yes!"
    assert ["".join(s) for s in piper.phonemize(text)] == [
        "həlˈoʊ wˈɜːld.",
        "hˈaʊ ɑːɹ juː?",
        "aɪm fˈaɪn, θˈæŋks: ɹˈiəli; jˈɛs!",
    ]
    # a blank line ends a sentence without a mark; "?!" keeps the first; no mark at the end
    assert ["".join(s) for s in piper.phonemize("Really?! Yes.\n\nNext")] == [
        "ɹˈiəli?",
        "jˈɛs",
        "nˈɛkst",
    ]


def test_clause_ends_as_espeak_reports_them() -> None:
    # the consumed text runs one character past a clause that is not the last
    assert clause_end("Hello world. H", False) == (".", True)
    assert clause_end('He said "hi."', False) == (".", True)
    assert clause_end("a, b", False) == (", ", False)
    assert clause_end("Wait \u2014 w", False) == ("; ", False)
    assert clause_end("Go... n", False) == ("", False)
    assert clause_end("Yes!\n\nN", False) == ("", True)
    assert clause_end("no mark at the end", True) == ("", True)
    assert clause_end("Done?", True) == ("?", True)
    clauses = [("(en)ˈa(fr)b", "Ab, c", False), ("sˈiː", "c.", True)]
    assert sentences_from_clauses(clauses) == [["ˈ", "a", "b", ",", " ", "s", "ˈ", "i", "ː", "."]]
    assert sentences_from_clauses([("ç", "x", True)]) == [["c", "\u0327"]]  # NFD


# --------------------------------------------------------------------------- setup


async def test_built_from_the_config_and_closed(model_path: Path) -> None:
    engine = build_tts(Config(tts="piper", cache_dir=str(model_path.parent.parent)))
    assert isinstance(engine, WithOtherLanguages)  # English voice; espeak-ng for the rest
    assert isinstance(engine.english, PiperTextToSpeech)
    assert engine.english.model_path == model_path
    assert (engine.name, engine.sample_rate) == ("piper", 22050)
    engine.close()
    with pytest.raises(BackendError):
        await _speak(engine, "Hello.")


def test_missing_model_or_config_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError):
        PiperTextToSpeech(tmp_path / "nowhere.onnx")
    lonely = tmp_path / "voice.onnx"
    lonely.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="voice config"):
        PiperTextToSpeech(lonely)
