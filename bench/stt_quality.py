"""The embedded speech-to-text engines side by side: PocketSphinx, Whisper tiny.en and base.

The same spoken questions (flite, four voices), clean and in white noise at 20 dB SNR, go
through each engine in this process (``transcribe`` on the whole utterance, 16 kHz, as a
committed turn is transcribed). Reported per engine and condition: word error rate, key words
heard (the word an answer depends on: "bees", "moo"...), and the time from the call to the
final transcript (p50 / p90; for a streaming engine in a live session most of the decoding
happens while the user speaks, so read it as compute, not as the turn's latency: the
voice-to-voice figure is ``bench/voice_latency.py --serve-arg=--stt --serve-arg=faster-whisper``).

Then the other languages (``--languages``): short questions spoken by espeak-ng's voice for
each language, through Whisper base with the language detected and with it set (as
``audio.input.transcription.language`` sets it): word error rate, how often the detected
language is right, and the time to the final transcript.

    .venv/bin/python bench/stt_quality.py
    .venv/bin/python bench/stt_quality.py --voices rms --conditions clean --languages ""
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections.abc import Callable

import numpy as np
from _common import machine_lines
from _echo_audio import RATE, at_level, flite, make_noise, scaled, to_pcm16, trim, wer

from openrealtime.audio.resample import resample
from openrealtime.backends.base import SpeechToText, TranscriptFinal, TranscriptionRequest

QUESTIONS: dict[str, set[str]] = {
    "What do bees make?": {"bees"},
    "What animal says moo?": {"moo"},
    "What is the capital of France?": {"france"},
    "How many legs does a spider have?": {"spider"},
    "What color is the sky?": {"sky"},
    "Who wrote Romeo and Juliet?": {"romeo"},
    "What is two plus two?": {"two"},
    "Which planet is closest to the sun?": {"planet"},
    "What do cows drink?": {"cows"},
    "How many days are in a week?": {"week"},
    "What is frozen water called?": {"frozen"},
    "Where do penguins live?": {"penguins"},
}


def engines() -> dict[str, Callable[[], SpeechToText]]:
    def sphinx() -> SpeechToText:
        from openrealtime.backends.stt_pocketsphinx import PocketsphinxSpeechToText

        return PocketsphinxSpeechToText()

    def whisper() -> SpeechToText:
        from openrealtime.backends.stt_faster_whisper import FasterWhisperSpeechToText
        from openrealtime.models import resolve_model

        return FasterWhisperSpeechToText(str(resolve_model("whisper-tiny-en").parent))

    return {"pocketsphinx": sphinx, "whisper-tiny.en": whisper, "whisper-base": whisper_base}


def whisper_base() -> SpeechToText:
    from openrealtime.backends.stt_faster_whisper import FasterWhisperSpeechToText
    from openrealtime.models import resolve_model

    return FasterWhisperSpeechToText(str(resolve_model("whisper-base").parent))


SPOKEN: dict[str, list[str]] = {
    "de": [
        "Was ist die Hauptstadt von Deutschland?",
        "Wie viel ist zwei plus zwei?",
        "Welche Farbe hat der Himmel?",
        "Wo leben die Pinguine?",
    ],
    "it": [
        "Ciao come stai oggi?",
        "Qual è la capitale dell'Italia?",
        "Di che colore è il cielo?",
        "Quanti giorni ci sono in una settimana?",
    ],
    "fr": [
        "Quelle est la capitale de la France ?",
        "Combien font deux plus deux ?",
        "De quelle couleur est le ciel ?",
        "Où vivent les pingouins ?",
    ],
    "es": [
        "¿Cuál es la capital de España?",
        "¿Cuántos son dos más dos?",
        "¿De qué color es el cielo?",
        "¿Dónde viven los pingüinos?",
    ],
}
"""Questions per language, spoken by espeak-ng (the only speech in those languages here)."""


def espeak(language: str, text: str) -> bytes:
    """``text`` in espeak-ng's voice for ``language`` at 130 words a minute, 24 kHz PCM16."""
    from openrealtime.backends.tts_espeak import SAMPLE_RATE, EspeakVoice, _Espeak

    out = bytearray()

    def sink(pcm: bytes) -> bool:
        out.extend(pcm)
        return True

    _Espeak.get().synthesize(text, EspeakVoice(language), 130, sink)
    pad = bytes(int(0.3 * RATE) * 2)
    return pad + resample(bytes(out), SAMPLE_RATE, RATE) + pad


async def languages(engine: SpeechToText, codes: list[str]) -> None:
    """The table of the other languages through ``engine`` (Whisper base)."""
    print()
    print("| language | language set | WER | language detected right | final after, ms p50 |")
    print("|---|---|---|---|---|")
    rate = engine.sample_rate
    for code in codes:
        clips = [(text, resample(espeak(code, text), RATE, rate)) for text in SPOKEN[code]]
        for given in (None, code):
            pairs, right, times = [], 0, []
            for text, pcm in clips:
                started = time.perf_counter()
                request = TranscriptionRequest(pcm, rate, language=given)
                finals = [e async for e in engine.transcribe(request)]
                final = finals[-1]
                assert isinstance(final, TranscriptFinal)
                times.append((time.perf_counter() - started) * 1000)
                pairs.append((text, final.text))
                right += final.language == code
            error, _, _ = wer(pairs)
            detected = "—" if given else f"{right}/{len(clips)}"
            print(
                f"| {code} | {'yes' if given else 'no'} | {100 * error:.0f} % | {detected} | "
                f"{statistics.median(times):.0f} |"
            )


def utterance(text: str, voice: str, condition: str, seed: int) -> np.ndarray:
    speech = at_level(trim(flite(text, voice)), -26.0)
    pad = np.zeros(int(0.3 * RATE))
    x = np.concatenate([pad, speech, pad])
    if condition != "clean":
        kind, snr = condition.split("/")
        noise = scaled(make_noise(kind, len(x) / RATE + 0.1, seed), -26.0 - float(snr))
        x = x + noise[: len(x)]
    return x


async def run_engine(
    engine: SpeechToText, audio: list[tuple[str, bytes]]
) -> list[tuple[str, float]]:
    out = []
    for _, pcm in audio:
        rate = engine.sample_rate
        data = resample(pcm, RATE, rate)
        started = time.perf_counter()
        final = ""
        async for event in engine.transcribe(TranscriptionRequest(data, rate)):
            if isinstance(event, TranscriptFinal):
                final = event.text
        out.append((final, (time.perf_counter() - started) * 1000))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", default="rms,slt,awb,kal")
    parser.add_argument("--conditions", default="clean,white/20")
    parser.add_argument("--languages", default="de,it,fr,es")
    args = parser.parse_args()
    voices = args.voices.split(",")
    conditions = args.conditions.split(",")
    print("\n".join(machine_lines()))
    print()
    print("| engine | condition | WER | key words heard | final after, ms p50 / p90 |")
    print("|---|---|---|---|---|")
    made = {
        c: [
            (text, to_pcm16(utterance(text, v, c, i)))
            for v in voices
            for i, text in enumerate(QUESTIONS)
        ]
        for c in conditions
    }
    for name, make in engines().items():
        engine = make()
        asyncio.run(run_engine(engine, made[conditions[0]][:1]))  # warm-up
        for c in conditions:
            results = asyncio.run(run_engine(engine, made[c]))
            rate, _, _ = wer(
                (text, hyp) for (text, _), (hyp, _) in zip(made[c], results, strict=True)
            )
            keys = sum(
                len(QUESTIONS[text] & set(re.findall(r"[a-z]+", hyp.lower())))
                for (text, _), (hyp, _) in zip(made[c], results, strict=True)
            )
            total = sum(len(QUESTIONS[text]) for text, _ in made[c])
            times = sorted(ms for _, ms in results)
            p90 = times[int(0.9 * (len(times) - 1))]
            print(
                f"| {name} | {c} | {100 * rate:.1f} % | {keys}/{total} | "
                f"{statistics.median(times):.0f} / {p90:.0f} |"
            )
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    print()
    print(f"voices: {', '.join(voices)}; {len(QUESTIONS)} questions each")
    if args.languages:
        asyncio.run(languages(whisper_base(), args.languages.split(",")))


if __name__ == "__main__":
    main()
