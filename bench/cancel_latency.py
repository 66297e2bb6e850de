"""How fast a response stops: ``response.cancel`` and barge-in on the embedded stack.

One ``openrealtime serve`` process with the embedded default engines (Silero VAD, PocketSphinx,
SmolLM2-135M on llama.cpp, espeak-ng). Each trial asks for a long spoken answer and stops it
while the engines are working on it, in one of two ways:

* **cancel**: the client sends ``response.cancel`` 0-200 ms after the first audio delta;
* **barge-in**: 0-200 ms after ``response.created`` the client streams flite speech
  (``server_vad``, ``interrupt_response``), and the server cancels the response itself at
  ``speech_started`` (over WebSocket an answer that has finished generating is done, so the
  speech comes while it is still being produced).

Per trial it reports:

* client: ``response.done`` (status ``cancelled``) received - cancel sent (cancel), or -
  ``speech_started`` received (barge-in), and how many audio deltas of that response arrived
  after its ``response.done`` (must be 0);
* server (INFO log): ``cancelled resp_…: its engine tasks stopped X ms later`` (the response's
  asyncio task: LLM stream, clause chunker, TTS) and ``llama.cpp worker stopped Y ms later``
  (the decode thread, which checks its cancel flag before every token and prompt chunk).

    .venv/bin/python bench/cancel_latency.py --trials 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import openai
from _common import append_in_real_time, fmt, percentile, print_machine, serve

from openrealtime.audio.resample import resample

RATE = 24000
CHUNK_MS = 20
PROMPT = "Tell me a long story about a sailor and the sea, with many details."
INTERRUPTION = "Stop, wait a moment please."
AUDIO_DELTA = b'"response.output_audio.delta"'

_TASKS = re.compile(r"cancelled (resp_\w+): its engine tasks stopped ([\d.]+) ms later")
_WORKER = re.compile(r"llama\.cpp worker stopped ([\d.]+) ms later \(in (\w+)\)")


def flite_pcm(text: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
        with wave.open(str(path), "rb") as wav:
            rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    return resample(raw, rate, RATE)


async def recv(conn: Any, wait_s: float = 20.0) -> tuple[bytes, float]:
    async with asyncio.timeout(wait_s):
        raw: bytes = await conn.recv_bytes()
    return raw, time.monotonic()


async def response_id(conn: Any) -> str:
    """Read until response.created; return the new response's id."""
    while True:
        raw, _ = await recv(conn)
        if AUDIO_DELTA not in raw[:200]:
            event = json.loads(raw)
            if event["type"] == "response.created":
                return str(event["response"]["id"])


async def until_first_audio(conn: Any) -> str:
    """Read until the first audio delta of the new response; return that response's id."""
    while True:
        raw, _ = await recv(conn)
        if AUDIO_DELTA in raw[:200]:
            return str(json.loads(raw)["response_id"])


async def stopped(conn: Any, response_id: str, since: list[float]) -> tuple[float, int] | None:
    """Read until the response's done; (ms from ``since[0]``, audio deltas after done).

    None if the response completed before it could be stopped.
    """
    done_at: float | None = None
    late = 0
    deadline = time.monotonic() + 10
    while True:
        try:
            raw, now = await recv(conn, 0.4 if done_at is not None else deadline - time.monotonic())
        except TimeoutError:
            if done_at is None:
                raise RuntimeError("no response.done after the cancel") from None
            return (done_at - since[0]) * 1000, late
        if AUDIO_DELTA in raw[:200]:
            if done_at is not None and json.loads(raw)["response_id"] == response_id:
                late += 1
            continue
        event = json.loads(raw)
        if event["type"] == "input_audio_buffer.speech_started" and not since:
            since.append(now)
        if event["type"] == "response.done" and event["response"]["id"] == response_id:
            if event["response"]["status"] != "cancelled" or not since:
                return None  # finished generating first: nothing left to stop
            done_at = now


Outcome = tuple[str, tuple[float, int] | None]


async def ask_for_a_long_answer(conn: Any) -> None:
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": PROMPT}],
            },
        }
    )
    await conn.send({"type": "response.create"})


async def cancel_trial(conn: Any, rng: random.Random) -> Outcome:
    await ask_for_a_long_answer(conn)
    rid = await until_first_audio(conn)
    await asyncio.sleep(rng.uniform(0, 0.2))
    since = [time.monotonic()]
    await conn.send({"type": "response.cancel"})
    return rid, await stopped(conn, rid, since)


async def barge_in_trial(conn: Any, rng: random.Random, speech: bytes) -> Outcome:
    await ask_for_a_long_answer(conn)
    rid = await response_id(conn)
    # Speech right away (after 0-200 ms): it is detected while the answer is being produced.
    audio = bytes(int(rng.uniform(0, 0.2) * RATE) * 2) + speech + bytes(RATE * 2)

    sender = asyncio.create_task(append_in_real_time(conn, audio, chunk_ms=CHUNK_MS))
    since: list[float] = []
    try:
        outcome = await stopped(conn, rid, since)
    finally:
        await sender
    # The interruption is a user turn: let its own answer start, then cancel and clear it.
    await asyncio.sleep(1.0)
    await conn.send({"type": "response.cancel"})
    await conn.send({"type": "input_audio_buffer.clear"})
    await asyncio.sleep(0.5)
    while True:
        try:
            await recv(conn, 0.3)
        except TimeoutError:
            break
    return rid, outcome


async def run(base: str, trials: int, seed: int) -> list[tuple[str, str, float, int]]:
    rng = random.Random(seed)
    speech = flite_pcm(INTERRUPTION)
    client = openai.AsyncOpenAI(api_key="bench", base_url=f"{base}/v1")
    results: list[tuple[str, str, float, int]] = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "You are a storyteller. Tell long stories.",
                    "max_output_tokens": "inf",
                    "audio": {"input": {"turn_detection": {"type": "server_vad"}}},
                },
            }
        )
        for i in range(trials):
            kind = "cancel" if i % 2 == 0 else "barge-in"
            if kind == "cancel":
                rid, outcome = await cancel_trial(conn, rng)
            else:
                rid, outcome = await barge_in_trial(conn, rng, speech)
            if outcome is None:
                print(f"{i + 1:2d} {kind:8s} {rid}: finished before it could be stopped")
                continue
            ms, late = outcome
            results.append((kind, rid, ms, late))
            print(f"{i + 1:2d} {kind:8s} {rid}: response.done after {ms:.0f} ms, late audio {late}")
    return results


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"| {label} | 0 | n/a | n/a | n/a |"
    return (
        f"| {label} | {len(values)} | {fmt(percentile(values, 50))} | "
        f"{fmt(percentile(values, 90))} | {fmt(max(values))} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="half cancel, half barge-in")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra serve argument (repeat)"
    )
    args = parser.parse_args()
    if shutil.which("flite") is None:
        sys.exit("flite is needed for the barge-in speech (apt-get install flite)")
    print_machine()
    with serve("silero", extra_args=args.serve_arg, startup_timeout=180) as server:
        results = asyncio.run(run(f"http://127.0.0.1:{server.port}", args.trials, args.seed))
        time.sleep(0.5)
        log_text = server.log_path.read_text(errors="replace")
    tasks = {m[1]: float(m[2]) for m in _TASKS.finditer(log_text)}
    workers = [float(m[1]) for m in _WORKER.finditer(log_text)]
    print()
    print("| ms | n | p50 | p90 | max |")
    print("|---|---|---|---|---|")
    labels = (("cancel", "response.cancel sent"), ("barge-in", "speech_started received"))
    for kind, label in labels:
        print(row(f"{label} -> response.done received", [r[2] for r in results if r[0] == kind]))
    print(row("cancel -> the response's engine tasks stopped (server)", list(tasks.values())))
    print(row("cancel -> llama.cpp decode thread stopped (server)", workers))
    for phase in sorted({m[2] for m in _WORKER.finditer(log_text)}):
        in_phase = [float(m[1]) for m in _WORKER.finditer(log_text) if m[2] == phase]
        print(row(f"... of which cancelled while in {phase}", in_phase))
    late = sum(r[3] for r in results)
    print(f"\nAudio deltas of a response received after its response.done: {late}")
    matched = sum(1 for r in results if r[1] in tasks)
    print(f"Trials with a server stop line: {matched}/{len(results)}")
    all_ms = list(tasks.values()) + workers
    if all_ms:
        worst = max(all_ms)
        print(f"Every engine task stopped within 50 ms: {worst <= 50} (max {worst:.1f} ms)")


if __name__ == "__main__":
    main()
