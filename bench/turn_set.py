"""A small labelled end-of-turn set, synthesized on the fly with Debian ``flite -voice rms``.

Not a benchmark itself: ``bench/turn_detection.py`` imports it (``bench/run.py`` runs only the
benchmarks it names).

Every incomplete utterance is a ``(prefix, rest)`` pair: ``prefix + " " + rest`` is a complete
sentence. Each pair yields three clips:

* **complete**: the whole sentence.
* **incomplete, cut**: the whole sentence synthesized, then the audio cut at the end of the
  prefix's last phone (flite's ``-psdur`` segment end times). The prosody is mid-sentence, as
  when a speaker pauses to think; this is the realistic case.
* **incomplete, text**: the prefix synthesized on its own. Flite gives any text it is handed a
  sentence-final fall, so only the words say it is unfinished; a hard, unnatural case.

``SHORT_COMPLETE`` adds short replies (yes/no, thanks) that a turn detector must not hold back.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openrealtime.audio.resample import resample

RATE = 16000

PAIRS: tuple[tuple[str, str], ...] = (
    ("What is the capital of", "France?"),
    ("I would like to book a table for", "two people tonight."),
    ("Can you set an alarm for seven", "tomorrow morning?"),
    ("My favourite colour is um", "probably blue."),
    ("Could you tell me how to get to the", "train station?"),
    ("I need to buy some milk and", "a loaf of bread."),
    ("What's the weather going to be like in", "London tomorrow?"),
    ("Please remind me to call my", "mother this evening."),
    ("How many ounces are there in a", "pound?"),
    ("The meeting has been moved to", "Thursday afternoon."),
    ("Can you play some music by", "the Beatles?"),
    ("I was thinking that maybe we could", "go to the beach this weekend."),
    ("Send a message to John saying that", "I will be late."),
    ("What time does the", "pharmacy close today?"),
    ("I'd like to order a large pizza with", "mushrooms and olives."),
    ("Turn off the lights in the", "living room."),
    ("How do I say thank you in", "Japanese?"),
    ("My flight leaves at", "half past nine."),
    ("Add eggs to my", "shopping list."),
    ("Is it going to rain on", "Saturday?"),
)
"""``(prefix, rest)``: the prefix is an unfinished utterance, prefix + rest a finished one."""

SHORT_COMPLETE: tuple[str, ...] = (
    "Yes, please.",
    "No.",
    "Thanks, that's all.",
    "Stop.",
    "What time is it?",
)
"""Short finished replies."""


@dataclass(frozen=True)
class Utterance:
    """One labelled clip: PCM16 mono at 16 kHz, trimmed right after the last speech sample."""

    kind: str
    """``complete``, ``incomplete-cut`` or ``incomplete-text``."""
    text: str
    pcm16: bytes

    @property
    def complete(self) -> bool:
        return self.kind == "complete"

    @property
    def seconds(self) -> float:
        return len(self.pcm16) / 2 / RATE


def require_flite() -> str:
    path = shutil.which("flite")
    if path is None:
        raise RuntimeError("flite is required (apt-get install flite)")
    return path


def _flite(text: str) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Synthesize ``text`` with the rms voice; return 16 kHz int16 samples and phone end times."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        proc = subprocess.run(
            [require_flite(), "-voice", "rms", "-psdur", "-t", text, "-o", str(wav)],
            check=True,
            capture_output=True,
            text=True,
        )
        with wave.open(str(wav), "rb") as w:
            assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
            rate = w.getframerate()
            raw = w.readframes(w.getnframes())
    if rate != RATE:
        raw = resample(raw, rate, RATE)
    phones: list[tuple[str, float]] = []
    for token in proc.stdout.split():
        name, _, end = token.rpartition(":")
        phones.append((name, float(end)))
    return np.frombuffer(raw, dtype="<i2").copy(), phones


def _speech_phones(phones: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return [(p, t) for p, t in phones if p != "pau"]


def _trim_end(samples: np.ndarray, level: int = 100) -> np.ndarray:
    """Drop everything after the last sample louder than ``level`` (about -50 dBFS)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > level)
    return samples[: int(loud[-1]) + 1] if len(loud) else samples[:0]


def synthesize(text: str) -> bytes:
    """Return ``text`` spoken by flite rms, 16 kHz PCM16, ending at the last speech sample."""
    samples, _ = _flite(text)
    return _trim_end(samples).tobytes()


def synthesize_cut(prefix: str, rest: str) -> bytes:
    """Speak ``prefix rest`` and cut the audio where the prefix's last phone ends."""
    samples, phones = _flite(f"{prefix} {rest}")
    _, prefix_phones = _flite(prefix)
    full = _speech_phones(phones)
    head = _speech_phones(prefix_phones)
    if len(head) > len(full):
        raise ValueError(f"cannot align {prefix!r} inside {prefix} {rest!r}")
    names_full = [p for p, _ in full[: len(head)]]
    names_head = [p for p, _ in head]
    if sum(a != b for a, b in zip(names_full, names_head, strict=True)) > 2:
        raise ValueError(f"cannot align {prefix!r} inside {prefix} {rest!r}")
    end = full[len(head) - 1][1]
    return _trim_end(samples[: round(end * RATE)]).tobytes()


def build_set() -> list[Utterance]:
    """Synthesize the whole set (about 65 clips, a few seconds of CPU)."""
    require_flite()
    out: list[Utterance] = []
    for prefix, rest in PAIRS:
        full = f"{prefix} {rest}"
        out.append(Utterance("complete", full, synthesize(full)))
        out.append(Utterance("incomplete-cut", f"{prefix} | {rest}", synthesize_cut(prefix, rest)))
        out.append(Utterance("incomplete-text", prefix, synthesize(prefix)))
    for text in SHORT_COMPLETE:
        out.append(Utterance("complete", text, synthesize(text)))
    return out
