"""Offline checks behind ``bench/echo.py``'s readings: the server's canceller without a server.

Runs the server's own ``openrealtime.audio.processing.VoiceProcessor`` and Silero VAD in this
process on signals built as ``bench/echo.py`` builds them (espeak answers through the same echo
path, flite ``rms`` user speech, room noise at -60 dBFS), fed 20 ms at a time as a session
feeds them. Two experiments (``bench/run.py`` skips this file; run it directly):

* ``alignment``: five answers with ~1 s between them. The far end is pushed when an answer
  starts and consumed from the next microphone chunk on, as the session does; the pattern says
  by how many 20 ms chunks the reference starts before the loudspeaker, per answer. A constant
  lead (0 or 1) is a fixed delay; a lead that changes between answers moves the echo path by
  20 ms at that answer's start. Reported: Silero speech starts (threshold 0.5, 0.35 to stay,
  200 ms of silence to stop) in the processed input, as (answer, seconds into it).
* ``doubletalk``: the user says "Stop. What time is it?" at several points of an answer; the
  frame where Silero first reaches 0.5 (ms after the speech onset, end of that 32 ms frame)
  and the level of the processed input over the first 300 ms of the speech relative to the
  speech alone, without echo and with echo at -20/-12/-6 dB (120 ms).

    .venv/bin/python bench/_echo_offline.py              # both, ~2 min
    .venv/bin/python bench/_echo_offline.py alignment
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
from _echo_audio import (
    RATE,
    ROOM_NOISE_DBFS,
    EchoPath,
    Looper,
    from_pcm16,
    make_noise,
    scaled,
    to_pcm16,
    user_speech,
)

from openrealtime.audio.processing import VoiceProcessor
from openrealtime.backends.base import SynthesisRequest
from openrealtime.backends.tts_espeak import EspeakTextToSpeech
from openrealtime.backends.vad_silero import SileroVad

CHUNK = RATE // 50
FRAME = 768
"""Silero's frame: 32 ms at 24 kHz."""


def espeak(text: str) -> np.ndarray:
    async def run() -> bytes:
        tts = EspeakTextToSpeech()
        out = b""
        async for chunk in tts.synthesize(SynthesisRequest(text)):
            out += chunk
        return out

    return from_pcm16(asyncio.run(run()))


def vad_starts(vad: SileroVad, pcm: bytes) -> list[float]:
    """Seconds at which a server_vad-like hysteresis over Silero starts speech."""
    stream = vad.open_stream()
    probs = stream.feed(pcm)
    stream.close()
    out: list[float] = []
    speaking = False
    quiet = 0
    for j, p in enumerate(probs):
        if not speaking and p >= 0.5:
            speaking, quiet = True, 0
            out.append(j * FRAME / RATE)
        elif speaking:
            quiet = quiet + 1 if p < 0.35 else 0
            if quiet * 32 >= 200:
                speaking = False
    return out


def alignment(vad: SileroVad, answers: list[np.ndarray], noise: np.ndarray) -> None:
    print("## alignment: the far end's start relative to the loudspeaker, per answer")
    print()
    print("| echo | reference lead per answer (20 ms chunks) | speech starts (answer, s into it) |")
    print("|---|---|---|")
    for gain in (-20, -12, -6):
        for leads in ((0,), (1,), (0, 1), (1, 0), (0, 2, 1, 0, 1)):
            starts: list[float] = []
            t = 0.5
            for k in range(5):
                starts.append(t)
                t += len(answers[k % len(answers)]) / RATE + 0.12 + 1.0
            total = int((t + 1) * RATE) // CHUNK * CHUNK
            played = np.zeros(total)
            push: dict[int, int] = {}
            for k, s in enumerate(starts):
                a = answers[k % len(answers)]
                i = int(s * RATE) // CHUNK * CHUNK
                played[i : i + len(a)] += a[: total - i]
                push[i - leads[k % len(leads)] * CHUNK] = k
            path = EchoPath(RATE, 120, gain, True)
            vp = VoiceProcessor(echo_cancellation=True)
            room = Looper(noise)
            out = []
            for i in range(0, total, CHUNK):
                if i in push:
                    vp.far_end(to_pcm16(answers[push[i] % len(answers)]), i * 1000 // RATE)
                mic = path.process(played[i : i + CHUNK]) + room.next(CHUNK)
                out.append(vp.process(to_pcm16(mic), i * 1000 // RATE))
            found = []
            for s in vad_starts(vad, b"".join(out)):
                k = max((k for k, a in enumerate(starts) if a <= s), default=0)
                found.append(f"({k}, {s - starts[k]:.2f})")
            print(
                f"| {gain} dB / 120 ms | {', '.join(map(str, leads))} | "
                f"{' '.join(found) or 'none'} |"
            )
    print()


def doubletalk(vad: SileroVad, answer: np.ndarray, noise: np.ndarray) -> None:
    print("## doubletalk: the user barges in over the answer (first answer of a session)")
    print()
    stop = user_speech("Stop. What time is it?").samples
    cases = (("no echo", None), ("-20 dB", -20), ("-12 dB", -12), ("-6 dB", -6))
    print(
        "| onset, s into the answer | "
        + " | ".join(f"{name}: Silero >= 0.5 after, ms (level over 300 ms)" for name, _ in cases)
        + " |"
    )
    print("|---|" + "---|" * len(cases))
    for onset_s in (1.3, 1.7, 2.2, 2.6, 3.1, 4.0, 5.5):
        row = [f"{onset_s}"]
        for _, gain in cases:
            n = int((onset_s + 3) * RATE) // CHUNK * CHUNK
            far = np.zeros(n)
            far[: min(n, len(answer))] = answer[:n]
            path = EchoPath(RATE, 120, gain, True)
            echo = np.concatenate([path.process(far[i : i + CHUNK]) for i in range(0, n, CHUNK)])
            mic = echo + Looper(noise).next(n)
            on = int(onset_s * RATE)
            mic[on : on + len(stop)] += stop[: n - on]
            vp = VoiceProcessor(echo_cancellation=True)
            vp.far_end(to_pcm16(far), 0)
            pcm = b"".join(
                vp.process(to_pcm16(mic[i : i + CHUNK]), i * 20 // CHUNK)
                for i in range(0, n, CHUNK)
            )
            out = from_pcm16(pcm)
            head = slice(on, on + int(0.3 * RATE))
            level = 10 * np.log10(np.mean(out[head] ** 2) / np.mean(stop[: int(0.3 * RATE)] ** 2))
            stream = vad.open_stream()
            probs = stream.feed(pcm)
            stream.close()
            hit = next(
                (
                    (j * FRAME + FRAME - on) * 1000 / RATE
                    for j, p in enumerate(probs)
                    if j * FRAME >= on - FRAME and p >= 0.5
                ),
                None,
            )
            row.append(f"{'missed' if hit is None else f'{hit:.0f}'} ({level:+.1f} dB)")
        print("| " + " | ".join(row) + " |")
    print()


def main() -> None:
    which = set(sys.argv[1:]) or {"alignment", "doubletalk"}
    from echo import PARAGRAPHS  # noqa: PLC0415 - the same answers as the live benchmark

    answers = [espeak("You said: " + p) for p in PARAGRAPHS]
    noise = scaled(make_noise("white", 10, 1), ROOM_NOISE_DBFS)
    vad = SileroVad.from_cache()
    if "alignment" in which:
        alignment(vad, answers, noise)
    if "doubletalk" in which:
        doubletalk(vad, answers[0], noise)


if __name__ == "__main__":
    main()
