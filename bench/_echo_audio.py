"""Signals of ``bench/echo.py``: flite speech, noise, the acoustic echo path, WER and ERLE.

Everything is built at run time: speech from Debian's ``flite`` (voice ``rms`` for the user,
``slt``/``kal``/``awb``/``rms`` for babble), noise with numpy. Levels are in dBFS of PCM16
(0 dBFS = a full-scale RMS of 32768). Not a benchmark itself (``bench/run.py`` skips ``_*``).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import wave
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openrealtime.audio.resample import resample

RATE = 24_000
FULL_SCALE = 32768.0

USER_LEVEL_DBFS = -26.0
"""Active speech level of the user's voice at the microphone (ITU-T P.56's nominal -26 dBov)."""

ROOM_NOISE_DBFS = -60.0
"""The quiet room: white noise at the microphone in every echo and barge-in condition."""

ROOM_TAPS_MS_DB = (
    (0, 0.0),
    (3, -4.0),
    (7, -8.0),
    (11, -11.0),
    (17, -15.0),
    (26, -19.0),
    (38, -24.0),
    (55, -30.0),
)
"""A small room's impulse response: the direct path and seven decaying reflections (ms, dB
relative to the direct path), normalised to unit energy so the echo gain is the echo's power
relative to the loudspeaker's."""


def db_to_lin(db: float) -> float:
    return float(10 ** (db / 20))


def rms_dbfs(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return float("-inf")
    return float(10 * np.log10(max(np.mean(x**2), 1e-12) / FULL_SCALE**2))


def active_level_dbfs(x: np.ndarray, rate: int = RATE) -> float:
    """RMS over the 10 ms frames within 30 dB of the loudest (the speech, not the pauses)."""
    step = rate // 100
    x = np.asarray(x, dtype=np.float64)
    frames = x[: len(x) - len(x) % step].reshape(-1, step)
    power = (frames**2).mean(axis=1)
    loud = power[power > power.max() * 1e-3]
    return float(10 * np.log10(max(loud.mean(), 1e-12) / FULL_SCALE**2))


def to_pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def from_pcm16(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


# ----------------------------------------------------------------------------- speech


def flite(text: str, voice: str = "rms", rate: int = RATE, *, stretch: float = 1.0) -> np.ndarray:
    """``flite -voice VOICE`` speech as float samples (PCM16 scale) at ``rate``.

    ``stretch`` is flite's ``duration_stretch`` (0.8: spoken 25 % faster).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        stretching = ["--setf", f"duration_stretch={stretch}"] if stretch != 1.0 else []
        subprocess.run(
            ["flite", "-voice", voice, *stretching, "-t", text, "-o", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with wave.open(str(path), "rb") as wav:
            src_rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    if src_rate != rate:
        raw = resample(raw, src_rate, rate)
    return from_pcm16(raw)


def trim(x: np.ndarray, rate: int = RATE, frame_ms: int = 10) -> np.ndarray:
    """Cut to the first and last 10 ms frame within 35 dB of the loudest (as voice_latency)."""
    step = rate * frame_ms // 1000
    frames = x[: len(x) - len(x) % step].reshape(-1, step)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > max(rms.max() * 10 ** (-35 / 20), 100.0))[0]
    return x[loud[0] * step : (loud[-1] + 1) * step]


def at_level(x: np.ndarray, dbfs: float, rate: int = RATE) -> np.ndarray:
    """``x`` scaled so its active speech level is ``dbfs``."""
    return x * db_to_lin(dbfs - active_level_dbfs(x, rate))


@dataclass(frozen=True)
class Speech:
    """A user utterance (24 kHz float, PCM16 scale), trimmed to its speech and levelled."""

    text: str
    samples: np.ndarray

    @property
    def ms(self) -> float:
        return len(self.samples) * 1000 / RATE


def user_speech(text: str, level_dbfs: float = USER_LEVEL_DBFS) -> Speech:
    return Speech(text, at_level(trim(flite(text, "rms")), level_dbfs))


# ----------------------------------------------------------------------------- noise

BABBLE_SENTENCES = (
    "The quarterly report is due on Friday and nobody has started it yet.",
    "I think we should take the train instead of driving this time.",
    "Did you see the game last night? It went into overtime again.",
    "My sister just moved to a small town near the coast.",
    "Could you pass me the salt and the pepper, please?",
    "The new cafe on the corner makes excellent coffee and pastries.",
    "We need to buy more paper for the printer in the office.",
    "He said the meeting would start at noon but it never did.",
    "There is a good chance of rain later this afternoon.",
    "Our neighbours are renovating their kitchen for the third time.",
    "She has been learning to play the violin for two years.",
    "The children were laughing in the garden all morning.",
)
BABBLE_VOICES = ("slt", "kal", "awb", "rms", "slt")
"""Five talkers (flite voices; ``slt`` twice with other sentences)."""


def white_noise(seconds: float, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    return rng.normal(0.0, 1.0, int(seconds * rate))


def babble(seconds: float, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """Five flite talkers, each a string of sentences with short pauses, time-shifted, summed."""
    n = int(seconds * rate)
    out = np.zeros(n)
    cache: dict[tuple[str, str], np.ndarray] = {}
    for k, voice in enumerate(BABBLE_VOICES):
        talker = np.zeros(0)
        order = list(range(len(BABBLE_SENTENCES)))
        rng.shuffle(order)
        i = 0
        while len(talker) < n + 4 * rate:
            text = BABBLE_SENTENCES[order[(i + k) % len(order)]]
            key = (voice, text)
            if key not in cache:
                cache[key] = at_level(trim(flite(text, voice, rate), rate), -30.0, rate)
            gap = np.zeros(int(rng.uniform(0.1, 0.5) * rate))
            talker = np.concatenate([talker, cache[key], gap])
            i += 1
        shift = int(rng.uniform(0, 3.0) * rate)
        out += talker[shift : shift + n]
    return out


def music(seconds: float, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """A chord progression (C, Am, F, G; three notes, four harmonics each, plucked envelope)
    over a bass line, one chord per 0.6-1.0 s."""
    chords = (
        (261.63, 329.63, 392.00, 130.81),
        (220.00, 261.63, 329.63, 110.00),
        (174.61, 220.00, 261.63, 87.31),
        (196.00, 246.94, 293.66, 98.00),
    )
    n = int(seconds * rate)
    out = np.zeros(n)
    pos = 0
    k = 0
    while pos < n:
        dur = int(rng.uniform(0.6, 1.0) * rate)
        t = np.arange(dur) / rate
        env = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.45)
        tone = np.zeros(dur)
        for f in chords[k % len(chords)]:
            for h, amp in ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)):
                tone += amp * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
        seg = tone * env
        end = min(n, pos + dur)
        out[pos:end] += seg[: end - pos]
        pos = end
        k += 1
    return out


NOISE_KINDS = ("white", "babble", "music")


def make_noise(kind: str, seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """Unit-free noise of ``kind`` (``white``, ``babble``, ``music``); scale with :func:`scaled`."""
    rng = np.random.default_rng(seed)
    if kind == "white":
        return white_noise(seconds, rng, rate)
    if kind == "babble":
        return babble(seconds, rng, rate)
    if kind == "music":
        return music(seconds, rng, rate)
    raise ValueError(f"unknown noise {kind!r}")


def scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` scaled to an overall RMS of ``dbfs``."""
    return x * db_to_lin(dbfs - rms_dbfs(x))


class Looper:
    """Endless noise: ``next(n)`` returns the next ``n`` samples of a looping buffer."""

    def __init__(self, samples: np.ndarray, start: int = 0) -> None:
        self.samples = samples
        self.pos = start % len(samples) if len(samples) else 0

    def next(self, n: int) -> np.ndarray:
        if not len(self.samples):
            return np.zeros(n)
        out = np.empty(n)
        got = 0
        while got < n:
            part = self.samples[self.pos : self.pos + n - got]
            out[got : got + len(part)] = part
            got += len(part)
            self.pos = (self.pos + len(part)) % len(self.samples)
        return out


# ----------------------------------------------------------------------------- echo path


def room_response(
    rate: int, taps: Iterable[tuple[int, float]] = ROOM_TAPS_MS_DB
) -> list[tuple[int, float]]:
    """(delay in samples, linear gain) of each tap, normalised to unit energy."""
    taps = list(taps)
    gains = np.array([db_to_lin(db) for _, db in taps])
    gains /= np.sqrt((gains**2).sum())
    return [(ms * rate // 1000, float(g)) for (ms, _), g in zip(taps, gains, strict=True)]


class EchoPath:
    """Loudspeaker -> microphone: a pure delay, the room's reflections, a gain.

    ``process(chunk)`` takes what the loudspeaker played during one microphone period and
    returns the echo the microphone picks up during that period (so it is driven by the
    microphone's clock, like a sound card's full-duplex stream).
    """

    def __init__(
        self, rate: int, delay_ms: float, gain_db: float | None, room: bool = True
    ) -> None:
        self.gain = 0.0 if gain_db is None else db_to_lin(gain_db)
        base = int(delay_ms * rate / 1000)
        taps = room_response(rate) if room else [(0, 1.0)]
        self.taps = [(base + d, g) for d, g in taps]
        self.span = max(d for d, _ in self.taps)
        self.hist = np.zeros(self.span)

    def process(self, played: np.ndarray) -> np.ndarray:
        n = len(played)
        buf = np.concatenate([self.hist, played])
        out = np.zeros(n)
        if self.gain:
            h = len(self.hist)
            for d, g in self.taps:
                out += g * buf[h - d : h - d + n]
        self.hist = buf[len(buf) - self.span :] if self.span else np.zeros(0)
        return out * self.gain

    @property
    def pending(self) -> bool:
        """Echo of played audio is still on its way to the microphone."""
        return bool(self.gain) and bool(np.any(np.abs(self.hist) > 1.0))


class SampleQueue:
    """A FIFO of float samples (the loudspeaker's playout queue)."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.queued = 0

    def push(self, x: np.ndarray) -> None:
        if len(x):
            self._chunks.append(x)
            self.queued += len(x)

    def pop(self, n: int) -> tuple[np.ndarray, int]:
        """Up to ``n`` samples padded with zeros, and how many were real."""
        out = np.zeros(n)
        got = 0
        while self._chunks and got < n:
            head = self._chunks[0]
            take = min(n - got, len(head))
            out[got : got + take] = head[:take]
            got += take
            if take == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[take:]
        self.queued -= got
        return out, got

    def drop(self, keep: int) -> None:
        """Drop the oldest samples until at most ``keep`` remain."""
        while self.queued > keep and self._chunks:
            head = self._chunks[0]
            extra = self.queued - keep
            if len(head) <= extra:
                self._chunks.popleft()
                self.queued -= len(head)
            else:
                self._chunks[0] = head[extra:]
                self.queued -= extra

    def clear(self) -> None:
        self._chunks.clear()
        self.queued = 0


# ----------------------------------------------------------------------------- WER

_PUNCT = re.compile(r"[^\w\s']")


def words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).replace("'", "").split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(pairs: Iterable[tuple[str, str]]) -> tuple[float, int, int]:
    """(word error rate, errors, reference words) over (reference, hypothesis) pairs."""
    errors = total = 0
    for ref, hyp in pairs:
        r = words(ref)
        errors += edit_distance(r, words(hyp))
        total += len(r)
    return (errors / total if total else float("nan")), errors, total


# ----------------------------------------------------------------------------- ERLE


@dataclass
class Timeline:
    """What a WebSocket speakerphone sent and received, for the offline echo-canceller replay.

    ``mic`` holds (send time ms, the PCM16 chunk sent, the echo's energy in each 10 ms half of
    it, whether the user was speaking); ``far`` holds (arrival time ms, PCM16 audio delta);
    ``drops`` the times at which the server forgets its far end (``speech_started`` received;
    truncation).
    """

    mic: list[tuple[float, bytes, tuple[float, float], bool]]
    far: list[tuple[float, bytes]]
    drops: list[float]


def replay_erle(
    timeline: Timeline, windows: list[tuple[float, float]], noise_dbfs: float
) -> list[tuple[float, float]]:
    """ERLE (dB) per window, by running the server's own ``VoiceProcessor`` offline.

    The client's microphone chunks and the audio deltas are fed to a fresh
    ``openrealtime.audio.processing.VoiceProcessor`` in the order (and with the wall times) in
    which the client sent and received them, as the server's session does. Per window (one
    answer, ms), over the 10 ms frames where the echo is at least 20 dB above the room noise and
    the user is silent: ERLE = 10 log10(sum mic^2 / sum output^2). The noise floor caps what
    can be measured: an output at the noise floor reads as (echo level - noise level) dB, the
    window's ceiling. Returns (ERLE, ceiling) per window that had echo.
    """
    from openrealtime.audio.processing import VoiceProcessor  # noqa: PLC0415

    vp = VoiceProcessor(echo_cancellation=True)
    events: list[tuple[float, int, object]] = []
    for t, pcm in timeline.far:
        events.append((t, 0, pcm))
    for t in timeline.drops:
        events.append((t, 1, None))
    for i, (t, _pcm, _echo, _user) in enumerate(timeline.mic):
        events.append((t, 2, i))
    events.sort(key=lambda e: (e[0], e[1]))
    outs: dict[int, np.ndarray] = {}
    pending = b""
    for t, kind, payload in events:
        if kind == 0:
            vp.far_end(payload, int(t))  # type: ignore[arg-type]
        elif kind == 1:
            vp.drop_far_end()
        else:
            i = int(payload)  # type: ignore[call-overload]
            out = pending + vp.process(timeline.mic[i][1], int(t))
            want = len(timeline.mic[i][1])
            outs[i], pending = from_pcm16(out[:want]), out[want:]
    floor = FULL_SCALE**2 * 10 ** (noise_dbfs / 10)
    result: list[tuple[float, float]] = []
    for start, end in windows:
        num = den = 0.0
        count = 0
        for i, (t, pcm, echo, user) in enumerate(timeline.mic):
            if not start <= t < end or user or i not in outs:
                continue
            mic = from_pcm16(pcm)
            out = outs[i]
            step = len(mic) // 2  # 10 ms frames of a 20 ms chunk
            for half, a in enumerate((0, step)):
                if echo[half] < floor * 100:
                    continue
                num += float(np.sum(mic[a : a + step] ** 2))
                den += float(np.sum(out[a : a + step] ** 2))
                count += step
        if num > 0:
            erle = 10 * np.log10(num / max(den, 1e-9))
            result.append((float(erle), float(10 * np.log10(num / (count * floor)))))
    return result
