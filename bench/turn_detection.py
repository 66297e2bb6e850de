"""Semantic end-of-turn (Smart Turn v3.2) on a synthetic flite set, and the semantic_vad policy.

For each clip of ``bench/turn_set.py`` (complete sentences; unfinished ones cut from the audio of
the whole sentence; unfinished ones synthesized as text) this scores
``lead-in + speech + s seconds of silence`` with :class:`SmartTurnDetector` for
s = 0.2, 0.4, ... 7.8 s, i.e. every answer the detector would give while the silence grows. Then
it replays the policy the core implements for ``semantic_vad``:

    once server VAD has seen >= 200 ms of silence after speech, ask the detector; if
    P(complete) >= threshold[eagerness] the turn ends now, else ask again after every further
    200 ms of silence; the turn ends anyway after max_wait[eagerness] of silence
    (low 8 s, medium/auto 4 s, high 2 s).

It also replays "ask once": ask only at the first 200 ms of silence (as pipecat does), then wait
for max_wait if the answer was "incomplete" (docs/turn-detection.md explains why).

Reported per eagerness: the premature-end rate on unfinished clips (ended before max_wait) and the
wait on finished clips (end of speech -> end of turn, audio time; add one inference for wall
time), plus a sweep over thresholds and the per-call latency. "Silence" is faint white noise at
about -60 dBFS over the whole clip by default (a quiet microphone); ``--silence zeros`` uses
digital silence.

    .venv/bin/python bench/turn_detection.py
    .venv/bin/python bench/turn_detection.py --silence both --save scores.json
    .venv/bin/python bench/turn_detection.py --load scores.json --thresholds 0.9,0.6,0.3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import turn_set
from _common import fmt, load_average, percentile, print_machine

from openrealtime.backends.turn_smart import SmartTurnDetector, log_mel_features, pcm16_window

RATE = turn_set.RATE
STEP = 0.2  # seconds of silence between two asks (and before the first)
LEAD_IN = 0.3  # seconds of audio before the speech (server VAD prefix padding)
MAX_WAIT = {"low": 8.0, "medium": 4.0, "high": 2.0}
NOISE_STD = 33.0  # int16 units: about -60 dBFS
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
KINDS = ("complete", "incomplete-cut", "incomplete-text")


@dataclass
class Scored:
    utt: turn_set.Utterance
    probs: list[float]  # probs[k] = P(complete) after (k + 1) * STEP s of silence


def _clip(utt: turn_set.Utterance, silence_s: float, noise: np.ndarray | None) -> bytes:
    speech = np.frombuffer(utt.pcm16, dtype="<i2").astype(np.float64)
    lead = int(LEAD_IN * RATE)
    tail = round(silence_s * RATE)
    signal = np.zeros(lead + len(speech) + tail)
    signal[lead : lead + len(speech)] = speech
    if noise is not None:
        signal += noise[: len(signal)]
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def score_all(
    detector: SmartTurnDetector, utts: Sequence[turn_set.Utterance], silence: str
) -> list[Scored]:
    asks = round(max(MAX_WAIT.values()) / STEP) - 1  # the last answer that can still matter
    out: list[Scored] = []
    for i, utt in enumerate(utts):
        noise = None
        if silence == "noise":
            rng = np.random.default_rng(1000 + i)
            noise = rng.normal(0.0, NOISE_STD, int((LEAD_IN + utt.seconds + 8.5) * RATE))
        probs = [detector.predict(_clip(utt, (k + 1) * STEP, noise)) for k in range(asks)]
        out.append(Scored(utt, probs))
        print(f"  [{i + 1}/{len(utts)}] {utt.kind:15} {probs[0]:.3f}  {utt.text}", file=sys.stderr)
    return out


def turn_end(
    probs: Sequence[float], threshold: float, max_wait: float, reask: bool = True
) -> float:
    """Seconds of silence after which the policy ends the turn.

    ``reask``: ask again every STEP of further silence (the core's policy); otherwise ask once
    at the first STEP (as pipecat does) and wait for max_wait when the answer is "incomplete".
    """
    for k, p in enumerate(probs if reask else probs[:1]):
        t = (k + 1) * STEP
        if t >= max_wait - 1e-9:
            break
        if p >= threshold:
            return t
    return max_wait


@dataclass
class Outcome:
    premature_cut: float
    premature_text: float
    p50: float
    p90: float
    held: float  # share of complete clips held to max_wait


def simulate(
    scored: Sequence[Scored], threshold: float, max_wait: float, reask: bool = True
) -> Outcome:
    def ends(kind: str) -> list[float]:
        return [turn_end(s.probs, threshold, max_wait, reask) for s in scored if s.utt.kind == kind]

    def premature(kind: str) -> float:
        e = ends(kind)
        return sum(t < max_wait for t in e) / len(e)

    waits = ends("complete")
    return Outcome(
        premature("incomplete-cut"),
        premature("incomplete-text"),
        percentile(waits, 50),
        percentile(waits, 90),
        sum(t >= max_wait for t in waits) / len(waits),
    )


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def latency(detector: SmartTurnDetector, utts: Sequence[turn_set.Utterance], calls: int) -> None:
    pcm = _clip(utts[0], 0.2, None)
    for _ in range(3):
        detector.predict(pcm)
    feats, total = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        log_mel_features(pcm16_window(pcm))
        t1 = time.perf_counter()
        detector.predict(pcm)
        t2 = time.perf_counter()
        feats.append((t1 - t0) * 1000)
        total.append((t2 - t1) * 1000)

    async def via_thread() -> list[float]:
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await detector.completion_probability(pcm)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    threaded = asyncio.run(via_thread())
    print(f"Per-call latency, ms ({calls} calls each, load average now {load_average()}):")
    print()
    print("| path | p50 | p90 | min |")
    print("|---|---|---|---|")
    for name, v in (
        ("features only (numpy)", feats),
        ("predict() = features + ONNX, 1 thread", total),
        ("await completion_probability() (worker thread)", threaded),
    ):
        print(f"| {name} | {fmt(percentile(v, 50))} | {fmt(percentile(v, 90))} | {fmt(min(v))} |")
    print()


def report(scored: Sequence[Scored], thresholds: dict[str, float], silence: str) -> None:
    n = {k: sum(s.utt.kind == k for s in scored) for k in KINDS}
    first = {k: [s.probs[0] for s in scored if s.utt.kind == k] for k in KINDS}
    print(f"## Silence: {silence}")
    print()
    print(
        f"Set: {n['complete']} complete, {n['incomplete-cut']} incomplete (cut from audio), "
        f"{n['incomplete-text']} incomplete (text); flite -voice rms."
    )
    print()
    print("P(complete) at the first ask (200 ms of silence):")
    print()
    print("| clips | mean | median | share >= 0.5 |")
    print("|---|---|---|---|")
    for k in KINDS:
        v = first[k]
        share = sum(p >= 0.5 for p in v) / len(v)
        print(f"| {k} | {np.mean(v):.2f} | {np.median(v):.2f} | {share:.0%} |")
    print()
    print(
        f"ROC AUC complete vs incomplete-cut: {auc(first['complete'], first['incomplete-cut']):.2f}"
        f"; vs incomplete-text: {auc(first['complete'], first['incomplete-text']):.2f}"
    )
    print()
    print("Policy with the proposed thresholds (re-ask = ask every 200 ms of silence until max")
    print("wait, the core's policy; once = ask only at 200 ms, then wait for max wait):")
    print()
    print(
        "| eagerness | policy | threshold | max wait s | premature end, incomplete-cut "
        "| premature end, incomplete-text | complete wait p50 s | complete wait p90 s "
        "| complete held to max |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for reask in (True, False):
        for level in ("low", "medium", "high"):
            thr, mw = thresholds[level], MAX_WAIT[level]
            o = simulate(scored, thr, mw, reask)
            print(
                f"| {level} | {'re-ask' if reask else 'once'} | {thr} | {mw:g} "
                f"| {o.premature_cut:.0%} | {o.premature_text:.0%} "
                f"| {fmt(o.p50)} | {fmt(o.p90)} | {o.held:.0%} |"
            )
    print()
    print("Threshold sweep, re-ask (premature cut / premature text / complete wait p50, p90 s):")
    print()
    print("| threshold | " + " | ".join(f"{lv} ({MAX_WAIT[lv]:g} s)" for lv in MAX_WAIT) + " |")
    print("|---|" + "---|" * len(MAX_WAIT))
    for thr in SWEEP:
        cells = []
        for level in MAX_WAIT:
            o = simulate(scored, thr, MAX_WAIT[level])
            cells.append(
                f"{o.premature_cut:.0%} / {o.premature_text:.0%} / {fmt(o.p50)}, {fmt(o.p90)}"
            )
        print(f"| {thr} | " + " | ".join(cells) + " |")
    print()
    print("Threshold sweep, ask once (independent of max wait; a complete clip not ended at")
    print("200 ms waits for max wait):")
    print()
    print(
        "| threshold | premature end, incomplete-cut | premature end, incomplete-text "
        "| complete ended at 200 ms |"
    )
    print("|---|---|---|---|")
    for thr in SWEEP:
        o = simulate(scored, thr, 8.0, reask=False)
        print(f"| {thr} | {o.premature_cut:.0%} | {o.premature_text:.0%} | {1 - o.held:.0%} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--silence", choices=["noise", "zeros", "both"], default="noise")
    parser.add_argument(
        "--thresholds", default="0.8,0.5,0.4", help="low,medium,high (default %(default)s)"
    )
    parser.add_argument("--latency-calls", type=int, default=30)
    parser.add_argument("--verbose", action="store_true", help="print every clip's curve")
    parser.add_argument("--save", help="write the scores to this JSON file")
    parser.add_argument("--load", help="re-run the policy on scores saved with --save")
    args = parser.parse_args()
    low, medium, high = (float(x) for x in args.thresholds.split(","))
    thresholds = {"low": low, "medium": medium, "high": high}

    print("# Smart Turn v3.2: semantic_vad on a synthetic set")
    print()
    print_machine()
    modes = ["noise", "zeros"] if args.silence == "both" else [args.silence]
    saved: dict[str, list[dict[str, object]]] = {}
    if args.load:
        with open(args.load, encoding="utf-8") as f:
            saved = json.load(f)
        modes = [m for m in modes if m in saved]
    else:
        detector = SmartTurnDetector.from_cache()
        utts = turn_set.build_set()
        latency(detector, utts, args.latency_calls)
    for mode in modes:
        if args.load:
            scored = [
                Scored(turn_set.Utterance(str(r["kind"]), str(r["text"]), b""), list(r["probs"]))
                for r in saved[mode]
            ]
        else:
            t0 = time.perf_counter()
            scored = score_all(detector, utts, mode)
            elapsed = time.perf_counter() - t0
            print(f"(scored {len(scored)} clips in {elapsed:.0f} s)", file=sys.stderr)
            saved[mode] = [
                {"kind": s.utt.kind, "text": s.utt.text, "probs": s.probs} for s in scored
            ]
        report(scored, thresholds, mode)
        if args.verbose:
            for s in scored:
                curve = " ".join(f"{p:.2f}" for p in s.probs[:10])
                print(f"- {s.utt.kind} `{s.utt.text}`: {curve} ...")
            print()
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            json.dump(saved, f)


if __name__ == "__main__":
    main()
