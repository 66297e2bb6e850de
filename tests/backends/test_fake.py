"""The fake engines behave as documented: deterministic, streaming, schema-valid tool calls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openrealtime.backends.base import (
    ChatMessage,
    Engines,
    GenerationDone,
    GenerationRequest,
    SynthesisRequest,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    ToolSpec,
    TranscriptFinal,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError
from openrealtime.backends.fake import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    FakeTurnDetector,
    FakeVad,
    Faults,
)

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)


def test_fakes_satisfy_the_engine_protocols() -> None:
    engines = Engines(
        vad=FakeVad(),
        stt=FakeSpeechToText(),
        llm=FakeLanguageModel(),
        tts=FakeTextToSpeech(),
        turn=FakeTurnDetector(),
    )
    assert engines.vad.name == "fake"


def test_fake_vad_frames_loud_audio_as_speech() -> None:
    stream = FakeVad().open_stream()
    silence = np.zeros(768, dtype="<i2").tobytes()
    loud = np.full(768, 5000, dtype="<i2").tobytes()
    assert stream.feed(silence + loud[:100]) == [0.0]
    assert stream.feed(loud[100:] + silence) == [1.0, 0.0]


async def test_fake_llm_echoes_the_user_and_counts_tokens() -> None:
    llm = FakeLanguageModel()
    request = GenerationRequest(messages=[ChatMessage("user", "hello there")])
    events = [e async for e in llm.generate(request)]
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert text == "You said: hello there"
    done = events[-1]
    assert isinstance(done, GenerationDone) and done.output_tokens == 4


async def test_fake_llm_stops_at_max_output_tokens() -> None:
    request = GenerationRequest(messages=[ChatMessage("user", "a b c d e")], max_output_tokens=2)
    events = [e async for e in FakeLanguageModel().generate(request)]
    assert isinstance(events[-1], GenerationDone) and events[-1].finish_reason == "length"
    assert sum(isinstance(e, TextChunk) for e in events) == 2


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_fake_llm_forced_tool_call_matches_the_schema(choice: str) -> None:
    request = GenerationRequest(
        messages=[ChatMessage("user", "weather?")], tools=[WEATHER], tool_choice=choice
    )
    events = [e async for e in FakeLanguageModel().generate(request)]
    assert isinstance(events[0], ToolCallStart) and events[0].name == "get_weather"
    args = json.loads("".join(e.delta for e in events if isinstance(e, ToolCallArguments)))
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    assert isinstance(events[-1], GenerationDone) and events[-1].finish_reason == "tool_calls"


async def test_fake_stt_and_tts_stream() -> None:
    stt = FakeSpeechToText()
    pcm = np.zeros(16000, dtype="<i2").tobytes()
    events = [e async for e in stt.transcribe(TranscriptionRequest(pcm, 16000))]
    assert isinstance(events[-1], TranscriptFinal)
    assert events[-1].text == "I spoke for 1.0 seconds."
    tts = FakeTextToSpeech()
    chunks = [c async for c in tts.synthesize(SynthesisRequest("hello world", speed=1.0))]
    assert len(chunks) > 1
    assert abs(sum(len(c) for c in chunks) - 11 * 60 * 24 * 2) <= 2  # 60 ms per character


async def test_faults_raise_backend_errors() -> None:
    llm = FakeLanguageModel(faults=Faults(fail_after_chunks=1))
    request = GenerationRequest(messages=[ChatMessage("user", "one two three")])
    with pytest.raises(BackendError):
        _ = [e async for e in llm.generate(request)]
