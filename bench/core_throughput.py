"""Events per second through parse -> core -> serialize for one session, in process.

Each round of the mix is what a voice session does in one exchange, fed exactly as
``runtime/driver.py`` feeds the core (no sockets, no asyncio, no engines):

- ``session.update`` (new instructions);
- ``input_audio_buffer.append`` x ~130: 20 ms of base64 PCM16 each (speech, then silence) under
  ``server_vad``; each ``DetectSpeech`` command is answered with the ``SpeechProbabilities``
  the real Silero VAD gave for that chunk (computed once before timing, so the figure is the
  core's cost; the VAD's own cost is printed separately), which starts and stops a turn and
  commits it; ``TranscriptionDelta`` x words + ``TranscriptionCompleted`` back from the STT;
- ``conversation.item.create`` (a user text message);
- ``response.create`` (text) + ``ResponseText`` per word + ``ResponseGenerated``;
- ``response.create`` (audio) + ``ResponseText`` per clause + ``ResponseAudio`` 40 ms chunks
  (as the fake TTS streams them) + ``ResponseGenerated``.

For every input the clock covers: ``parse_client_event`` (client events only), the core call,
every ``drain()`` and ``dump_event`` of every server event it produced. The baseline is the
json-only cost of the same traffic: ``json.loads`` of each client frame plus ``json.dumps`` of
each produced event's dict. Ids come from ``RandomIds``, as in the server.

    .venv/bin/python bench/core_throughput.py                 # 200 rounds
    .venv/bin/python bench/core_throughput.py --rounds 50 --repeat 5
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from _common import fmt, print_machine, summary
from vad_latency import make_utterances

from openrealtime.backends.vad_silero import SileroVad
from openrealtime.core import backend_events as be
from openrealtime.core.commands import DetectSpeech, Generate, Transcribe
from openrealtime.core.ids import RandomIds
from openrealtime.core.session import RealtimeSession
from openrealtime.protocol.codec import dump_event, parse_client_event

RATE = 24000
CHUNK = RATE * 20 // 1000 * 2
"""Bytes of one 20 ms PCM16 chunk."""
TTS_CHUNK = RATE * 40 // 1000 * 2
"""Bytes of one 40 ms TTS chunk (FakeTextToSpeech's default)."""


@dataclass
class Stat:
    count: int = 0
    total_ns: int = 0
    parse_ns: int = 0
    core_ns: int = 0
    dump_ns: int = 0
    out_events: int = 0
    samples: list[float] = field(default_factory=list)
    baseline_ns: int = 0


@dataclass
class Record:
    kind: str
    frame: str | None
    outputs: list[str]


class Bench:
    def __init__(self, probs: list[tuple[float, ...]], frame_samples: int) -> None:
        self.session = RealtimeSession("realtime", "gpt-realtime", ids=RandomIds(), now_ms=0)
        self.probs = probs
        self.frame_samples = frame_samples
        self.stats: dict[str, Stat] = defaultdict(Stat)
        self.records: list[Record] = []
        self.transcribe: list[Transcribe] = []
        self.generate: list[Generate] = []
        self.chunk_index = 0
        self.keep_records = True
        self._drain_dump(Stat(), [])  # session.created

    def _drain_dump(self, stat: Stat, outputs: list[str]) -> None:
        """Drain like ``SessionDriver._flush``: send events, run commands, until quiet."""
        while True:
            t0 = time.perf_counter_ns()
            out = self.session.drain()
            if not out.events and not out.commands:
                stat.core_ns += time.perf_counter_ns() - t0
                return
            t1 = time.perf_counter_ns()
            for event in out.events:
                outputs.append(dump_event(event))
            t2 = time.perf_counter_ns()
            stat.core_ns += t1 - t0
            stat.dump_ns += t2 - t1
            for command in out.commands:
                match command:
                    case DetectSpeech():
                        probs = self.probs[self.chunk_index % len(self.probs)]
                        self.chunk_index += 1
                        if probs:
                            t3 = time.perf_counter_ns()
                            self.session.receive_backend_event(
                                be.SpeechProbabilities(probs, self.frame_samples)
                            )
                            stat.core_ns += time.perf_counter_ns() - t3
                    case Transcribe():
                        self.transcribe.append(command)
                    case Generate():
                        self.generate.append(command)
                    case _:
                        pass

    def client(self, frame: str, kind: str) -> None:
        stat = self.stats[kind]
        outputs: list[str] = []
        t0 = time.perf_counter_ns()
        event = parse_client_event(frame)
        t1 = time.perf_counter_ns()
        self.session.receive_client_event(event)
        t2 = time.perf_counter_ns()
        self._drain_dump(stat, outputs)
        t3 = time.perf_counter_ns()
        stat.count += 1
        stat.parse_ns += t1 - t0
        stat.core_ns += t2 - t1
        stat.total_ns += t3 - t0
        stat.out_events += len(outputs)
        stat.samples.append((t3 - t0) / 1000)
        if self.keep_records:
            self.records.append(Record(kind, frame, outputs))

    def backend(self, event: be.BackendEvent) -> None:
        kind = f"backend {type(event).__name__}"
        stat = self.stats[kind]
        outputs: list[str] = []
        t0 = time.perf_counter_ns()
        self.session.receive_backend_event(event)
        t1 = time.perf_counter_ns()
        self._drain_dump(stat, outputs)
        t2 = time.perf_counter_ns()
        stat.count += 1
        stat.core_ns += t1 - t0
        stat.total_ns += t2 - t0
        stat.out_events += len(outputs)
        stat.samples.append((t2 - t0) / 1000)
        if self.keep_records:
            self.records.append(Record(kind, None, outputs))


# ----------------------------------------------------------------------------- the mix


def append_frames(pcm: bytes) -> list[str]:
    frames = []
    for i in range(0, len(pcm) - CHUNK + 1, CHUNK):
        audio = base64.b64encode(pcm[i : i + CHUNK]).decode("ascii")
        frames.append(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    return frames


def vad_probabilities(vad: SileroVad, pcm: bytes) -> tuple[list[tuple[float, ...]], int]:
    stream = vad.open_stream()
    probs = [tuple(stream.feed(pcm[i : i + CHUNK])) for i in range(0, len(pcm), CHUNK)]
    return probs, stream.frame_samples


def first_update() -> str:
    return json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "You are a helpful assistant.",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {"type": "server_vad", "create_response": False},
                    }
                },
            },
        }
    )


def run_round(bench: Bench, n: int, frames: list[str], tone: bytes) -> None:
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "instructions": f"Round {n}: answer briefly."},
    }
    bench.client(json.dumps(update), "session.update")
    for frame in frames:
        bench.client(frame, "input_audio_buffer.append")
    while bench.transcribe:
        command = bench.transcribe.pop(0)
        words = "what is the capital of france".split()
        for i, word in enumerate(words):
            bench.backend(be.TranscriptionDelta(command.item_id, word if i == 0 else " " + word))
        bench.backend(be.TranscriptionCompleted(command.item_id, " ".join(words), 1.8))
    item = {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "And what about Germany?"}],
        },
    }
    bench.client(json.dumps(item), "conversation.item.create")
    reply = "You said: And what about Germany? The capital of Germany is Berlin."
    for modality in ("text", "audio"):
        create = {"type": "response.create", "response": {"output_modalities": [modality]}}
        bench.client(json.dumps(create), f"response.create ({modality})")
        command = bench.generate.pop()
        rid = command.response_id
        if modality == "text":
            for i, word in enumerate(reply.split(" ")):
                bench.backend(be.ResponseText(rid, word if i == 0 else " " + word))
        else:
            for clause in ("You said: And what about Germany? ", "The capital of Germany ", "is "):
                bench.backend(be.ResponseText(rid, clause))
                seconds = len(clause.strip()) * 0.06
                total = int(seconds * RATE) * 2
                for start in range(0, total, TTS_CHUNK):
                    bench.backend(be.ResponseAudio(rid, tone[: min(TTS_CHUNK, total - start)]))
        bench.backend(be.ResponseGenerated(rid, "stop", 40, 14))


# ----------------------------------------------------------------------------- baseline


def baseline(records: list[Record], stats: dict[str, Stat]) -> None:
    """Time json.loads of each client frame and json.dumps of each produced event's dict."""
    prepared = [(r.kind, r.frame, [json.loads(o) for o in r.outputs]) for r in records]
    for kind, frame, dicts in prepared:
        t0 = time.perf_counter_ns()
        if frame is not None:
            json.loads(frame)
        for d in dicts:
            json.dumps(d, separators=(",", ":"), ensure_ascii=False)
        stats[kind].baseline_ns += time.perf_counter_ns() - t0


# ----------------------------------------------------------------------------- engines


def engine_reference(vad: SileroVad, pcm: bytes) -> list[str]:
    """What the VAD costs per 20 ms chunk (not included above), alone and batched."""
    lines = []
    stream = vad.open_stream()
    chunks = [pcm[i : i + CHUNK] for i in range(0, len(pcm) - CHUNK + 1, CHUNK)]
    for chunk in chunks[:50]:
        stream.feed(chunk)
    t0 = time.perf_counter_ns()
    for _ in range(3):
        for chunk in chunks:
            stream.feed(chunk)
    per_chunk = (time.perf_counter_ns() - t0) / 1000 / (3 * len(chunks))
    lines.append(
        f"- Silero `SileroVadStream.feed` (resample + model, one stream, as the driver runs it): "
        f"{per_chunk:.0f} µs per 20 ms chunk"
    )
    for batch in (1, 100):
        inputs = np.zeros((batch, 576), dtype=np.float32)
        state = np.zeros((2, batch, 128), dtype=np.float32)
        for _ in range(5):
            vad.run_batch(inputs, state)
        reps = max(20, 2000 // batch)
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            vad.run_batch(inputs, state)
        per_frame = (time.perf_counter_ns() - t0) / 1000 / reps / batch
        lines.append(
            f"- Silero model call `run_batch` with B={batch}: {per_frame:.0f} µs per stream-frame "
            f"(32 ms of audio)"
        )
    return lines


# ----------------------------------------------------------------------------- report


def trend(samples: list[float]) -> str:
    tenth = len(samples) // 10
    if tenth < 1:
        return "n/a"
    first = sum(samples[:tenth]) / tenth
    last = sum(samples[-tenth:]) / tenth
    return f"{first:.0f} → {last:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds of the mix (200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is shown (3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (5)")
    args = parser.parse_args()
    print_machine()

    source, utterances = make_utterances()
    speech = utterances[0].astype("<i2").tobytes()
    silence = bytes(RATE * 2 * 600 // 1000)  # 600 ms
    pcm = speech + bytes(-len(speech) % CHUNK) + silence
    vad = SileroVad.from_cache()
    probs, frame_samples = vad_probabilities(vad, pcm)
    frames = append_frames(pcm)
    t = np.arange(TTS_CHUNK // 2) / RATE
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 200 * t)).astype("<i2").tobytes()

    best: Bench | None = None
    best_ns = math.inf
    for _ in range(max(1, args.repeat)):
        gc.collect()
        bench = Bench(probs, frame_samples)
        bench.client(first_update(), "session.update (first)")
        bench.keep_records = False
        for n in range(args.warmup):
            run_round(bench, n, frames, tone)
        bench.stats.clear()
        bench.records.clear()
        bench.keep_records = True
        for n in range(args.rounds):
            run_round(bench, n, frames, tone)
        total = sum(s.total_ns for s in bench.stats.values())
        if total < best_ns:
            best, best_ns = bench, total
    assert best is not None
    baseline(best.records, best.stats)

    stats = best.stats
    inputs = sum(s.count for s in stats.values())
    outputs = sum(s.out_events for s in stats.values())
    base_total = sum(s.baseline_ns for s in stats.values())
    print(
        f"core_throughput: {args.rounds} rounds after {args.warmup} warm-up, best of "
        f"{args.repeat} runs; audio {source}, {len(frames)} appends per round; conversation "
        f"grows to {len(best.session.conversation.entries())} items"
    )
    print()
    print(
        f"**{inputs / best_ns * 1e9:,.0f} input events/s** ({best_ns / inputs / 1000:.1f} µs "
        f"per input) producing {outputs / best_ns * 1e9:,.0f} server events/s; json-only "
        f"baseline for the same traffic: {base_total / inputs / 1000:.1f} µs per input "
        f"({best_ns / max(base_total, 1):.1f}x)"
    )
    print()
    print(
        "| input event | count | µs/event p50 | µs/event mean | events/s | parse | core | "
        "serialize | out events/in | json-only µs | first → last tenth µs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, s in sorted(stats.items(), key=lambda kv: -kv[1].total_ns):
        mean = s.total_ns / s.count / 1000
        print(
            f"| {kind} | {s.count} | {fmt(summary(s.samples)['p50'])} | {mean:.1f} | "
            f"{1e6 / mean:,.0f} | {s.parse_ns / s.count / 1000:.1f} | "
            f"{s.core_ns / s.count / 1000:.1f} | {s.dump_ns / s.count / 1000:.1f} | "
            f"{s.out_events / s.count:.1f} | {s.baseline_ns / s.count / 1000:.1f} | "
            f"{trend(s.samples)} |"
        )
    print()
    print(
        "Columns: parse = `parse_client_event`; core = `receive_*` + `drain()` (+ feeding the "
        "VAD probabilities for appends); serialize = `dump_event`; all µs per input event. "
        "The last column is the mean over the first and the last tenth of the rounds: the "
        "conversation grows by 4 items a round."
    )
    print()
    print("Engine reference (not in the figures above):")
    for line in engine_reference(vad, pcm):
        print(line)


if __name__ == "__main__":
    main()
