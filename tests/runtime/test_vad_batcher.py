"""Batched VAD across sessions gives each session exactly what inline scoring gives, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from openrealtime.backends.vad_energy import EnergyVad
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.runtime.vad_batcher import batcher_for


def _audio(seed: int, seconds: float = 1.5) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(24000 * seconds)) / 24000
    voiced = (np.sin(2 * np.pi * (140 + 40 * seed) * t) * (t % 0.6 < 0.3)) * 0.4
    noise = rng.normal(0, 0.01, t.size)
    return ((voiced + noise) * 32767).astype("<i2").tobytes()


async def test_batched_probabilities_equal_inline_ones() -> None:
    vad = SileroVad.from_cache()
    batcher = batcher_for(vad)
    assert batcher is not None and batcher_for(vad) is batcher  # one per model
    audio = [_audio(i) for i in range(4)]
    inline = [vad.open_stream() for _ in audio]
    batched = [vad.open_stream() for _ in audio]
    step = 480 * 2  # 20 ms chunks
    chunks = [[pcm[i : i + step] for i in range(0, len(pcm), step)] for pcm in audio]
    expected = [
        [p for c in stream_chunks for p in inline[i].feed(c)]
        for i, stream_chunks in enumerate(chunks)
    ]
    total = sum(map(len, expected))
    got: list[list[float]] = [[] for _ in audio]
    all_in = asyncio.Event()

    def sink(i: int) -> Callable[[list[float]], None]:
        def deliver(probs: list[float]) -> None:
            got[i].extend(probs)
            if sum(map(len, got)) >= total:
                all_in.set()

        return deliver

    for n in range(len(chunks[0])):  # the sessions' chunks interleave, as on a server
        for i in range(len(audio)):
            batcher.submit(batched[i], chunks[i][n], sink(i))
        await asyncio.sleep(0.002)
    async with asyncio.timeout(10):
        await all_in.wait()
    assert got == expected
    assert all(len(p) >= 40 for p in got)


def test_models_without_batching_are_scored_inline() -> None:
    assert batcher_for(EnergyVad()) is None


async def test_many_sessions_with_uneven_chunks_get_exactly_their_inline_results() -> None:
    """Dozens of streams, some handing over two frames at once: rounds of several depths, each
    session's probabilities in order and equal to scoring it alone."""
    vad = SileroVad.from_cache()
    batcher = batcher_for(vad)
    assert batcher is not None
    audio = [_audio(i % 7, seconds=1.0) for i in range(40)]
    step = 480 * 2
    sizes = [step * (1 + i % 3) for i in range(len(audio))]  # 20, 40 or 60 ms chunks
    chunks = [
        [a[j : j + n] for j in range(0, len(a), n)] for a, n in zip(audio, sizes, strict=True)
    ]
    expected: list[list[float]] = []
    for cs in chunks:
        stream = vad.open_stream()
        expected.append([p for c in cs for p in stream.feed(c)])
    got: list[list[float]] = [[] for _ in audio]
    total = sum(map(len, expected))
    all_in = asyncio.Event()

    def sink(i: int) -> Callable[[list[float]], None]:
        def deliver(probs: list[float]) -> None:
            got[i].extend(probs)
            if sum(map(len, got)) >= total:
                all_in.set()

        return deliver

    streams = [vad.open_stream() for _ in audio]
    for n in range(max(map(len, chunks))):
        for i, cs in enumerate(chunks):
            if n < len(cs):
                batcher.submit(streams[i], cs[n], sink(i))
        await asyncio.sleep(0)
    async with asyncio.timeout(20):
        await all_in.wait()
    assert got == expected
