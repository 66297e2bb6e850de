"""What a user hears and gets, per engine combination that ships: words heard, answers, latency.

For each combination (``--combos``; default: the embedded defaults, Whisper tiny.en, Piper,
and both), one ``openrealtime serve`` process, and the same eight spoken questions in several
conditions (``--conditions``; default: flite's ``rms`` and ``slt`` voices, ``rms`` spoken 25 %
faster, and ``rms`` in white noise at 20 dB SNR), each asked in its own session through the
official SDK, in real time, with ``server_vad`` (as ``bench/voice_latency.py`` does). Reported
per combination:

- **WER**: the input transcript against the question;
- **answered**: answers that hold the key word ("honey" for "What do bees make?");
- **STT final**, **first audio** and **voice-to-voice** p50 / p90 (ms from the true end of
  speech; the first two from the server's per-turn latency line);
- **CPU** seconds the server's process tree used per turn, and its RSS after the run.

    .venv/bin/python bench/quality.py
    .venv/bin/python bench/quality.py --combos defaults,whisper-base --conditions rms
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
from dataclasses import dataclass

from _common import fmt, percentile, print_machine, serve, tree_cpu_seconds, tree_memory
from _echo_audio import RATE, at_level, flite, make_noise, scaled, to_pcm16, trim, wer
from voice_latency import (
    Turn,
    Utterance,
    energy_bounds,
    parse_latency_lines,
    run_turn,
    voice_session,
)

COMBOS: dict[str, list[str]] = {
    "defaults": [],
    "whisper": ["--stt", "faster-whisper"],
    "piper": ["--tts", "piper"],
    "whisper+piper": ["--stt", "faster-whisper", "--tts", "piper"],
    "whisper-base": ["--stt", "faster-whisper", "--stt-model-path", "whisper-base"],
}
"""Engine combinations that ship (``serve`` arguments)."""


@dataclass(frozen=True)
class Condition:
    voice: str
    stretch: float
    """flite's duration_stretch: 0.8 speaks 25 % faster."""
    noise: str
    """``clean`` or ``KIND/SNR`` (``white/20``)."""


CONDITIONS: dict[str, Condition] = {
    "rms": Condition("rms", 1.0, "clean"),
    "slt": Condition("slt", 1.0, "clean"),
    "rms-fast": Condition("rms", 0.8, "clean"),
    "rms-white20": Condition("rms", 1.0, "white/20"),
}

QUESTIONS: dict[str, frozenset[str]] = {
    "What do bees make?": frozenset({"honey"}),
    "What animal says moo?": frozenset({"cow", "cows"}),
    "What is the capital of France?": frozenset({"paris"}),
    "How many legs does a spider have?": frozenset({"eight", "8"}),
    "What color is the sky?": frozenset({"blue"}),
    "What is frozen water called?": frozenset({"ice"}),
    "How many days are in a week?": frozenset({"seven", "7"}),
    "Which planet do we live on?": frozenset({"earth"}),
}
"""Questions and the words a right answer holds."""
INSTRUCTIONS = "You are a helpful voice assistant. Answer in one short sentence."
"""What a voice app would set (the default instructions make the small model ramble)."""


def utterance(text: str, condition: Condition, seed: int) -> Utterance:
    speech = at_level(trim(flite(text, condition.voice, stretch=condition.stretch)), -26.0)
    if condition.noise != "clean":
        kind, snr = condition.noise.split("/")
        noise = scaled(make_noise(kind, len(speech) / RATE + 0.1, seed), -26.0 - float(snr))
        speech = speech + noise[: len(speech)]
    pcm = to_pcm16(speech)
    onset, end = energy_bounds(pcm)
    return Utterance(text, pcm, onset, end)


async def ask(base: str, utt: Utterance) -> Turn:
    """One question in a session of its own (the model's answer depends on nothing else)."""
    async with voice_session(base, INSTRUCTIONS) as conn:
        return await run_turn(conn, utt)


def right(answer: str, keys: frozenset[str]) -> bool:
    return bool(keys & set(re.findall(r"[a-z0-9]+", answer.lower())))


def p50_90(values: list[float]) -> str:
    return f"{fmt(percentile(values, 50), 0)} / {fmt(percentile(values, 90), 0)}"


def run_combo(name: str, utterances: dict[str, list[Utterance]]) -> list[str]:
    """The table rows of one combination (one row per condition, then all of them)."""
    rows: list[str] = []
    with serve(extra_args=COMBOS[name], startup_timeout=300) as server:
        base = f"http://127.0.0.1:{server.port}"
        warmup = next(iter(utterances.values()))[0]
        asyncio.run(ask(base, warmup))
        everything: list[Turn] = []
        cpu_before = tree_cpu_seconds(server.pid)
        for condition, utts in utterances.items():
            turns = [asyncio.run(ask(base, utt)) for utt in utts]
            for turn in turns:
                heard = f"{turn.transcript!r} -> {turn.answer!r}"
                print(f"  {name} {condition}: {heard}", file=sys.stderr)
            everything += turns
            rows.append(row(name, condition, turns, server.log_path.read_text(errors="replace")))
        cpu_after = tree_cpu_seconds(server.pid)
        cpu = sum(cpu_after.values()) - sum(cpu_before.values())
        rss, _pss = tree_memory(server.pid)
        log = server.log_path.read_text(errors="replace")
        rows.append(row(name, "**all**", everything, log, cpu / len(everything), rss))
    return rows


def row(
    name: str,
    condition: str,
    turns: list[Turn],
    log: str,
    cpu_per_turn: float | None = None,
    rss: int | None = None,
) -> str:
    stages = parse_latency_lines(log)
    error, _, _ = wer((t.text, t.transcript) for t in turns)
    answered = sum(right(t.answer, QUESTIONS[t.text]) for t in turns)
    v2v = [t.latency_ms for t in turns if t.latency_ms is not None]
    stt, tts = stage(turns, stages, "stt_final"), stage(turns, stages, "tts_first_audio")
    cpu = "" if cpu_per_turn is None else f"{cpu_per_turn:.2f}"
    mem = "" if rss is None else f"{rss / 2**20:.0f}"
    return (
        f"| {name} | {condition} | {100 * error:.0f} % | {answered}/{len(turns)} | "
        f"{p50_90(stt)} | {p50_90(tts)} | {p50_90(v2v)} | {cpu} | {mem} |"
    )


def stage(turns: list[Turn], stages: dict[str, dict[str, int]], name: str) -> list[float]:
    """One stage's ms after the end of speech, for the turns whose latency line has it."""
    found = (stages.get(t.item_id or "", {}).get(name) for t in turns)
    return [float(ms) for ms in found if ms is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combos", default="defaults,whisper,piper,whisper+piper")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    args = parser.parse_args()
    combos = args.combos.split(",")
    conditions = args.conditions.split(",")
    print_machine()
    utterances = {
        c: [utterance(text, CONDITIONS[c], i) for i, text in enumerate(QUESTIONS)]
        for c in conditions
    }
    print()
    print(
        "| engines | condition | WER | answered | STT final p50 / p90 | first audio p50 / p90 "
        "| voice-to-voice p50 / p90 | CPU s per turn | RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in combos:
        for line in run_combo(name, utterances):
            print(line, flush=True)
    lengths = [len(u.pcm) / 2 / RATE for utts in utterances.values() for u in utts]
    print()
    print(
        f"{len(QUESTIONS)} questions x {len(conditions)} conditions per combination, one "
        f"session each; speech {statistics.median(lengths):.1f} s at the median"
    )


if __name__ == "__main__":
    main()
