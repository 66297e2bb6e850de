"""Voice-to-voice latency of the embedded stack: end of the user's speech -> first answer audio.

One ``openrealtime serve`` process with the embedded default engines (Silero VAD, PocketSphinx,
SmolLM2-135M on llama.cpp, espeak-ng) and ``server_vad`` with its defaults. One client (the
official ``openai`` SDK) speaks the 20 test sentences of embedded-stack.md §8 (flite, voice
``rms``), each followed by 1 s of silence, **in real time** (20 ms chunks, chunk k sent at
t0 + 20 k ms), and waits for the answer's ``response.done`` before the next turn (cancelling
answers that run too long).

What is measured, per turn::

    latency = t_first_output_audio_delta_received - t_end_of_speech_sent

``t_end_of_speech_sent`` is when the client sent the chunk holding the last speech sample (the
true end of speech, from the signal's energy: the last 10 ms frame within 35 dB of the loudest,
as in ``tests/conformance/conftest.py``). The server logs the same turn's stages (INFO,
``turn item_… latency from end of speech: vad_end=… turn_decision=… stt_final=…
llm_first_token=… tts_first_audio=… first_delta_sent=…``), each relative to when the audio
holding the last speech frame arrived (its own estimate of the same instant); those lines give
the breakdown.

    .venv/bin/python bench/voice_latency.py                 # 20 turns + 1 warm-up turn
    .venv/bin/python bench/voice_latency.py --rounds 2      # 40 turns
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
from _common import append_in_real_time, fmt, percentile, print_machine, serve, spread_cells

from openrealtime.audio.resample import resample

RATE = 24000
CHUNK_MS = 20
CHUNK_BYTES = RATE * 2 * CHUNK_MS // 1000
LEAD_MS = 300
"""Silence before each utterance."""
TAIL_MS = 1000
"""Silence after each utterance (the issue: "speech + 1 s silence")."""
ANSWER_LIMIT_S = 30.0
"""An answer still running this long after the end of speech is cancelled."""

SENTENCES = (
    "What is the weather like in Paris today?",
    "Can you set an alarm for seven thirty tomorrow morning?",
    "How many people live in New York City?",
    "Please turn off the lights in the kitchen.",
    "What time does the next train to London leave?",
    "Tell me a joke about computers.",
    "How do I make a cup of green tea?",
    "Who wrote the book Pride and Prejudice?",
    "Remind me to call my mother at five o'clock.",
    "What is the capital of France?",
    "Play some relaxing music in the living room.",
    "How far is the moon from the earth?",
    "I would like to book a table for two people tonight.",
    "Why is the sky blue during the day?",
    "Send a message to John saying I will be late.",
    "What is twenty five plus seventeen?",
    "Can you recommend a good movie for the weekend?",
    "The meeting has been moved to Thursday afternoon.",
    "Translate good morning into Spanish.",
    "How long should I boil an egg?",
)
"""embedded-stack.md §8."""

AUDIO_DELTA = b'"type":"response.output_audio.delta"'

WARMUP = "Hello, can you hear me?"

STAGES = (
    "vad_end",
    "turn_decision",
    "stt_final",
    "llm_first_token",
    "tts_first_audio",
    "first_delta_sent",
)
LATENCY_LINE = re.compile(r"turn (item_\w+) latency from end of speech: (.*)$")
STAGE_VALUE = re.compile(r"(\w+)=\+?(-?\d+)ms")


# ----------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes
    onset_ms: float
    end_ms: float


def energy_bounds(pcm: bytes, frame_ms: int = 10) -> tuple[float, float]:
    """First and last 10 ms frame whose RMS is within 35 dB of the loudest frame."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    step = RATE * frame_ms // 1000
    frames = samples[: len(samples) - len(samples) % step].reshape(-1, step)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > max(rms.max() * 10 ** (-35 / 20), 100.0))[0]
    return float(loud[0] * frame_ms), float((loud[-1] + 1) * frame_ms)


def synthesize(text: str, tmp: Path) -> Utterance:
    """flite voice rms, resampled to 24 kHz PCM16."""
    path = tmp / "speech.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    pcm = resample(raw, rate, RATE)
    onset, end = energy_bounds(pcm)
    return Utterance(text, pcm, onset, end)


# ----------------------------------------------------------------------------- one turn


@dataclass
class Turn:
    text: str
    item_id: str | None = None
    latency_ms: float | None = None
    """Client-side: first output audio delta received - end-of-speech chunk sent."""
    transcript: str = ""
    answer: str = ""
    status: str = ""
    input_tokens: int = 0
    cached_tokens: int = 0
    stages: dict[str, int] = field(default_factory=dict)

    @property
    def reprefilled(self) -> bool:
        """The LLM re-read most of the conversation (its KV prefix did not match)."""
        return self.input_tokens > 400 and self.cached_tokens < self.input_tokens // 2


async def run_turn(conn: Any, utt: Utterance) -> Turn:
    """Stream one utterance in real time and read events until the answer's response.done."""
    turn = Turn(utt.text)
    audio = bytes(LEAD_MS * RATE * 2 // 1000) + utt.pcm + bytes(TAIL_MS * RATE * 2 // 1000)
    end_byte = int((LEAD_MS + utt.end_ms) * RATE * 2 / 1000) - 2  # the last speech sample
    end_chunk = end_byte // CHUNK_BYTES
    t_end: list[float] = []

    sender = asyncio.create_task(
        append_in_real_time(conn, audio, chunk_ms=CHUNK_MS, mark_chunk=end_chunk, marks=t_end)
    )
    response_id: str | None = None
    cancelled = False
    try:
        while True:
            timeout = ANSWER_LIMIT_S
            if cancelled:
                timeout = 5.0  # for the cancelled response's response.done
            elif t_end:
                timeout = max(0.05, t_end[0] + ANSWER_LIMIT_S - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    raw = await conn.recv_bytes()
            except TimeoutError:
                if response_id is None or cancelled:
                    raise RuntimeError(f"no answer to {utt.text!r}") from None
                await conn.send({"type": "response.cancel"})
                cancelled = True
                continue
            now = time.monotonic()
            if AUDIO_DELTA in raw[:200]:  # skip decoding the audio deltas' JSON
                if turn.latency_ms is None:
                    turn.latency_ms = (now - t_end[0]) * 1000 if t_end else float("nan")
                continue
            event = json.loads(raw)
            match event["type"]:
                case "input_audio_buffer.committed":
                    turn.item_id = turn.item_id or event["item_id"]
                case "conversation.item.input_audio_transcription.completed":
                    turn.transcript = event["transcript"]
                case "response.created":
                    response_id = response_id or event["response"]["id"]
                case "response.output_audio_transcript.done":
                    turn.answer = event["transcript"]
                case "response.done" if event["response"]["id"] == response_id:
                    turn.status = event["response"]["status"]
                    usage = event["response"].get("usage") or {}
                    turn.input_tokens = usage.get("input_tokens", 0)
                    details = usage.get("input_token_details") or {}
                    turn.cached_tokens = details.get("cached_tokens", 0)
                    break
                case "error":
                    print(f"  error event: {event['error']}", file=sys.stderr)
    finally:
        await sender
    return turn


# ----------------------------------------------------------------------------- run


def parse_latency_lines(log_text: str) -> dict[str, dict[str, int]]:
    """item_id -> {stage: ms after end of speech}, from the server's INFO lines."""
    found: dict[str, dict[str, int]] = {}
    for line in log_text.splitlines():
        match = LATENCY_LINE.search(line)
        if match:
            found[match.group(1)] = {k: int(v) for k, v in STAGE_VALUE.findall(match.group(2))}
    return found


async def run_sessions(
    base: str, utterances: list[Utterance], warmup: Utterance, per_session: int
) -> list[Turn]:
    """Every utterance, in sessions of ``per_session`` turns (0: one session)."""
    size = per_session or len(utterances)
    turns: list[Turn] = []
    for start in range(0, len(utterances), size):
        turns += await run_session(base, utterances[start : start + size], warmup, start)
    return turns


@contextlib.asynccontextmanager
async def voice_session(base: str, instructions: str | None = None) -> AsyncIterator[Any]:
    """An SDK connection with input transcription and ``server_vad`` at its defaults."""
    session: dict[str, Any] = {
        "type": "realtime",
        "audio": {
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad"},  # the defaults
            }
        },
    }
    if instructions is not None:
        session["instructions"] = instructions
    api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-bench")
    try:
        async with api.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv_bytes()  # session.created
            await conn.send({"type": "session.update", "session": session})
            yield conn
    finally:
        await api.close()


async def run_session(
    base: str, utterances: list[Utterance], warmup: Utterance, first_index: int
) -> list[Turn]:
    """One session: a warm-up turn (not counted), then the utterances."""
    turns: list[Turn] = []
    async with voice_session(base) as conn:
        for i, utt in enumerate([warmup, *utterances]):
            turn = await run_turn(conn, utt)
            lat = fmt(turn.latency_ms or float("nan"), 0)
            label = "warm-up" if i == 0 else f"turn {first_index + i}"
            print(f"  {label}: {lat} ms", file=sys.stderr)
            if i:
                turns.append(turn)
            await asyncio.sleep(0.3)
    return turns


def table(rows: list[tuple[str, list[float]]]) -> str:
    lines = ["| from the true end of speech to… | n | p50 ms | p90 ms | min | max |"]
    lines.append("|---|---|---|---|---|---|")
    for name, values in rows:
        lines.append(f"| {name} | {spread_cells(values)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="passes over the 20 sentences")
    parser.add_argument(
        "--turns-per-session",
        type=int,
        default=0,
        help="start a new session every N turns (default 0: one session for every turn)",
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra serve argument (repeat)"
    )
    parser.add_argument("--server-log", type=Path, help="keep the server's log in this file")
    args = parser.parse_args()
    if shutil.which("flite") is None:
        sys.exit("flite is needed to synthesize the questions (apt-get install flite)")

    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        bank = [synthesize(text, Path(tmp)) for text in SENTENCES]
        warmup = synthesize(WARMUP, Path(tmp))
    utterances = bank * args.rounds
    speech_s = sum((u.end_ms - u.onset_ms) for u in utterances) / 1000

    per = args.turns_per_session
    sessions = (
        "one session" if per <= 0 or per >= len(utterances) else f"a new session every {per} turns"
    )
    with serve("silero", extra_args=args.serve_arg, startup_timeout=180) as server:
        command = " ".join(
            shlex.quote(Path(c).name if i == 0 else c) for i, c in enumerate(server.command)
        )
        print(f"Server: `{command}` (embedded defaults; server_vad defaults:")
        print("threshold 0.5, prefix_padding_ms 300, silence_duration_ms 200)")
        print(
            f"Client: openai {openai.__version__} SDK, {sessions}, {len(utterances)} turns "
            f"(+1 uncounted warm-up turn per session), {speech_s:.0f} s of flite rms speech, "
            f"each + {TAIL_MS} ms silence, streamed in real time in {CHUNK_MS} ms chunks"
        )
        print()
        started = time.monotonic()
        base = f"http://127.0.0.1:{server.port}"
        turns = asyncio.run(run_sessions(base, utterances, warmup, args.turns_per_session))
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        log_text = server.log_path.read_text(errors="replace")
        logged = parse_latency_lines(log_text)
        if args.server_log is not None:
            args.server_log.write_text(log_text)

    for i, turn in enumerate(turns, 1):
        if turn.item_id is not None:
            turn.stages = logged.get(turn.item_id, {})
        stages = " ".join(f"{k}={v}" for k, v in turn.stages.items())
        print(
            f"{i:2d}: {fmt(turn.latency_ms or float('nan'), 0):>5} ms  [{stages}]  prompt "
            f"{turn.input_tokens} (cached {turn.cached_tokens}), {turn.status}: heard "
            f"{turn.transcript!r} -> {turn.answer[:50]!r}",
            file=sys.stderr,
        )
    measured = [t.latency_ms for t in turns if t.latency_ms is not None]
    rows: list[tuple[str, list[float]]] = [
        (f"`{stage}` (server log)", [float(t.stages[stage]) for t in turns if stage in t.stages])
        for stage in STAGES
    ]
    rows.append(("**first audio delta received (client)**", measured))
    offsets = [
        t.latency_ms - t.stages["first_delta_sent"]
        for t in turns
        if t.latency_ms is not None and "first_delta_sent" in t.stages
    ]
    print(table(rows))
    print()

    def step(a: str, b: str) -> list[float]:
        return [float(t.stages[b] - t.stages[a]) for t in turns if a in t.stages and b in t.stages]

    print("| stage (each from the previous stamp) | p50 ms | p90 ms |")
    print("|---|---|---|")
    print(
        f"| true end of speech -> the server's end-of-speech stamp, + downlink (client - "
        f"server) | {fmt(percentile(offsets, 50), 0)} | {fmt(percentile(offsets, 90), 0)} |"
    )
    for a, b, name in (
        ("", "vad_end", "VAD: end-of-speech stamp -> silence_duration_ms of silence seen"),
        ("vad_end", "turn_decision", "turn decision (server_vad: none)"),
        ("turn_decision", "stt_final", "STT: final transcript after the turn ended"),
        ("stt_final", "llm_first_token", "LLM: first token (prefill + 1 token)"),
        ("llm_first_token", "tts_first_audio", "TTS: first audio (first sentence/clause)"),
        ("tts_first_audio", "first_delta_sent", "driver: delta written to the socket"),
    ):
        values = [float(t.stages[b]) for t in turns if b in t.stages] if not a else step(a, b)
        print(f"| {name} | {fmt(percentile(values, 50), 0)} | {fmt(percentile(values, 90), 0)} |")
    print()
    statuses: dict[str, int] = {}
    for t in turns:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    p50 = percentile(measured, 50)
    print(
        f"Turns answered: {len(measured)}/{len(turns)} (response status {statuses}); "
        f"server latency lines matched: {sum(1 for t in turns if t.stages)}; run {elapsed:.0f} s."
    )
    slow = [t for t in turns if t.reprefilled]
    if slow:
        lat = ", ".join(fmt(t.latency_ms or float("nan"), 0) for t in slow)
        print(
            f"Turns whose LLM prompt was re-evaluated from the system prompt on (conversation "
            f"past the context budget, oldest turns dropped): {len(slow)} ({lat} ms)."
        )
    print(
        f"**Voice-to-voice p50 {fmt(p50, 0)} ms, p90 {fmt(percentile(measured, 90), 0)} ms** "
        f"(goal: p50 < 500 ms: {'met' if p50 < 500 else 'missed'})."
    )


if __name__ == "__main__":
    main()
