"""Deterministic fake engines for tests, benchmarks and fault injection (house rule 4).

They are not stand-ins for features: the real engines arrive with the voice pipeline. Each fake
is predictable (same input, same output), streams like a real engine, and can be told to be slow
or to fail, so the runtime's timing and error paths can be exercised.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from openrealtime.backends.base import (
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    SynthesisRequest,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    ToolSpec,
    TranscriptDelta,
    TranscriptFinal,
    TranscriptionEvent,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError

_R = TypeVar("_R")


MAX_RECORDED = 16
"""Requests a fake remembers (the newest): a fake serving a long benchmark or a memory test
must not hold every request's audio."""


def _record(requests: list[_R], request: _R) -> None:
    requests.append(request)
    if len(requests) > MAX_RECORDED:
        del requests[0]


@dataclass
class Faults:
    """What a fake should do wrong: delay before its first output, per-chunk delay, or fail."""

    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    fail_before_first: bool = False
    fail_after_chunks: int | None = None


class FakeVad:
    """Calls a frame speech when its peak amplitude exceeds ``level`` (PCM16 units).

    Deterministic and free of models: for tests that need exact frame-level control (a frame
    of zeros is silence, a frame with any loud sample is speech).
    """

    name = "fake"

    def __init__(self, level: int = 1000) -> None:
        self.level = level

    def open_stream(self) -> FakeVadStream:
        """Create the per-session state."""
        return FakeVadStream(self.level)


class FakeVadStream:
    """Frames of 768 session samples (32 ms at 24 kHz), probability 1.0 or 0.0."""

    frame_samples = 768

    def __init__(self, level: int) -> None:
        self.level = level
        self._pending = b""

    def feed(self, pcm16_24k: bytes) -> list[float]:
        """Return one probability per completed frame."""
        data = self._pending + pcm16_24k
        step = self.frame_samples * 2
        whole = len(data) - len(data) % step
        self._pending = data[whole:]
        if not whole:
            return []
        frames = np.frombuffer(data[:whole], dtype="<i2").reshape(-1, self.frame_samples)
        peaks = np.abs(frames.astype(np.int32)).max(axis=1)
        return [1.0 if peak > self.level else 0.0 for peak in peaks]

    def close(self) -> None:
        """Nothing to release."""


class FakeTurnDetector:
    """Says a turn is complete with a fixed probability (semantic_vad tests)."""

    name = "fake"
    sample_rate = 16000

    def __init__(self, probability: float = 1.0) -> None:
        self.probability = probability

    async def completion_probability(self, pcm16: bytes) -> float:
        """Return the configured probability, whatever the audio."""
        return self.probability


class FakeSpeechToText:
    """Answers every item with ``transcript`` if set, else a description of the audio length."""

    name = "fake"
    sample_rate = 16000

    def __init__(self, transcript: str | None = None, faults: Faults | None = None) -> None:
        self.transcript = transcript
        self.faults = faults or Faults()
        self.requests: list[TranscriptionRequest] = []

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionEvent]:
        """Yield the transcript word by word, then the final text."""
        _record(self.requests, request)
        seconds = len(request.pcm16) / 2 / request.sample_rate
        text = self.transcript or f"I spoke for {seconds:.1f} seconds."
        await _fault_start(self.faults)
        words = text.split(" ")
        for i, word in enumerate(words):
            await _fault_chunk(self.faults, i)
            yield TranscriptDelta(word if i == 0 else " " + word)
        yield TranscriptFinal(text, seconds)


class FakeLanguageModel:
    """Replies ``You said: <last user text>``, or calls a tool when the request demands one.

    Tool arguments are built from the tool's JSON schema (each required property gets a sample
    value of its type), so forced calls validate against the schema.
    """

    name = "fake"

    def __init__(self, reply: str | None = None, faults: Faults | None = None) -> None:
        self.reply = reply
        self.faults = faults or Faults()
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the reply word by word (one token per word), or a function call."""
        _record(self.requests, request)
        input_tokens = sum(len(m.content.split()) + 4 for m in request.messages)
        await _fault_start(self.faults)
        tool = _forced_tool(request)
        if tool is not None:
            yield ToolCallStart(0, tool.name)
            arguments = json.dumps(sample_arguments(tool.parameters))
            for i, start in enumerate(range(0, len(arguments), 8)):
                await _fault_chunk(self.faults, i)
                yield ToolCallArguments(0, arguments[start : start + 8])
            yield GenerationDone("tool_calls", input_tokens, math.ceil(len(arguments) / 4))
            return
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        last_tool = request.messages[-1] if request.messages else None
        if self.reply is not None:
            text = self.reply
        elif last_tool is not None and last_tool.role == "tool":
            text = f"The tool returned {last_tool.content}"
        else:
            text = f"You said: {last_user}" if last_user else "Hello! How can I help?"
        words = text.split(" ")
        limit = request.max_output_tokens
        for i, word in enumerate(words):
            if limit is not None and i >= limit:
                yield GenerationDone("length", input_tokens, limit)
                return
            await _fault_chunk(self.faults, i)
            yield TextChunk(word if i == 0 else " " + word)
        yield GenerationDone("stop", input_tokens, len(words))


class FakeTextToSpeech:
    """Speaks a tone whose pitch follows the voice and whose length follows the text.

    ``ms_per_char`` sets how long each character lasts (divided by ``speed``); audio comes in
    ``chunk_ms`` pieces, like a streaming engine.
    """

    name = "fake"

    def __init__(
        self,
        sample_rate: int = 24000,
        ms_per_char: float = 60.0,
        chunk_ms: int = 40,
        faults: Faults | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.faults = faults or Faults()
        self.requests: list[SynthesisRequest] = []

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Yield PCM16 chunks of a sine tone."""
        _record(self.requests, request)
        await _fault_start(self.faults)
        seconds = len(request.text.strip()) * self.ms_per_char / 1000 / max(request.speed, 0.25)
        total = int(seconds * self.sample_rate)
        pitch = 180 + 20 * (sum(request.voice.encode()) % 10)
        t = np.arange(total, dtype=np.float64) / self.sample_rate
        wave = (0.3 * np.sin(2 * np.pi * pitch * t) * 32767).astype("<i2").tobytes()
        step = self.sample_rate * self.chunk_ms // 1000 * 2
        for i, start in enumerate(range(0, len(wave), step)):
            await _fault_chunk(self.faults, i)
            yield wave[start : start + step]


def _forced_tool(request: GenerationRequest) -> ToolSpec | None:
    if not request.tools or request.tool_choice in ("auto", "none"):
        return None
    if request.tool_choice == "required":
        return request.tools[0]
    return next((t for t in request.tools if t.name == request.tool_choice), None)


def sample_arguments(schema: dict[str, object]) -> object:
    """A value that satisfies a simple JSON schema (objects, arrays, scalars, enums)."""
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(props)
        names = [name for name in names if isinstance(name, str)]  # a schema may be nonsense
        return {
            name: sample_arguments(props[name] if isinstance(props.get(name), dict) else {})
            for name in names
        }
    if kind == "array":
        items = schema.get("items")
        return [sample_arguments(items)] if isinstance(items, dict) else []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "Paris"


async def _fault_start(faults: Faults) -> None:
    if faults.first_delay_s:
        await asyncio.sleep(faults.first_delay_s)
    if faults.fail_before_first:
        raise BackendError("fake engine failed before its first output", code="engine_error")


async def _fault_chunk(faults: Faults, index: int) -> None:
    if faults.fail_after_chunks is not None and index >= faults.fail_after_chunks:
        raise BackendError("fake engine failed mid-stream", code="engine_error")
    if faults.chunk_delay_s:
        await asyncio.sleep(faults.chunk_delay_s)
