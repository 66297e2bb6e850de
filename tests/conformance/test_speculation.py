"""Answers prepared during the user's pause, over a real socket (runtime/speculation.py).

Real Silero VAD and real streaming PocketSphinx hear flite speech streamed in real time; the
language model is the fake that repeats what it was told (``You said: …``), so the answer shows
exactly which words it was generated from. What a user must see: the answer to everything they
said, never to the first half of a sentence they paused in, and no more engine work than a turn
without speculation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, Faults
from openrealtime.backends.stt_pocketsphinx import PocketsphinxSpeechToText
from tests.conformance.conftest import (
    BYTES_PER_MS,
    Client,
    ServerFactory,
    Speech,
    sdk_client,
    silence,
    stream_audio,
)

pytestmark = pytest.mark.skipif(
    not PocketsphinxSpeechToText.available(), reason="pocketsphinx is not installed"
)


@pytest.fixture
async def stt() -> AsyncIterator[PocketsphinxSpeechToText]:
    engine = PocketsphinxSpeechToText(max_decoders=2)
    await asyncio.to_thread(engine.warm_up, 1)
    try:
        yield engine
    finally:
        engine.close()


def voiced(speech: Speech) -> bytes:
    """The speech without flite's leading and trailing silence."""
    start = int(speech.onset_ms) * BYTES_PER_MS
    end = int(speech.end_ms) * BYTES_PER_MS
    return speech.pcm[start:end]


async def use_server_vad(client: Client, silence_ms: int) -> None:
    td = {"type": "server_vad", "silence_duration_ms": silence_ms}
    audio = {"input": {"transcription": {"model": "x"}, "turn_detection": td}}
    await client.send({"type": "session.update", "session": {"type": "realtime", "audio": audio}})
    await client.expect("session.updated")


async def spoken_turn(base: str, audio: bytes, silence_ms: int) -> list[dict[str, Any]]:
    """Stream ``audio`` in real time into a server_vad session; every event to response.done."""
    async with sdk_client(base) as client:
        await use_server_vad(client, silence_ms)
        sender = asyncio.create_task(stream_audio(client, audio, speedup=1.0))
        try:
            events = await client.collect_until("response.done", wait_s=15)
        finally:
            await sender
        return events + await client.drain(0.3)


def transcript_of_answer(events: list[dict[str, Any]]) -> str:
    (done,) = [e for e in events if e["type"] == "response.done"]
    assert done["response"]["status"] == "completed", done
    (item,) = done["response"]["output"]
    return str(item["content"][0]["transcript"])


async def turn_counting_requests(
    base: str, speech: bytes, llm: FakeLanguageModel
) -> tuple[list[dict[str, Any]], list[int]]:
    """One turn with 800 ms of server_vad silence; the events, and how many model requests
    had been made when ``speech_stopped`` arrived."""
    requests_at_stop: list[int] = []
    async with sdk_client(base) as client:
        await use_server_vad(client, 800)
        audio = silence(300) + speech + silence(1200)
        sender = asyncio.create_task(stream_audio(client, audio, speedup=1.0))
        try:
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] != "response.done":
                events.append(await client.recv(15))
                if events[-1]["type"] == "input_audio_buffer.speech_stopped":
                    requests_at_stop.append(len(llm.requests))
        finally:
            await sender
    return events, requests_at_stop


def the_transcript(events: list[dict[str, Any]]) -> str:
    (completed,) = [
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    return str(completed["transcript"])


async def test_a_finished_sentence_is_answered_once_from_the_pause(
    start_server: ServerFactory,
    speak: Callable[[str], Speech],
    stt: PocketsphinxSpeechToText,
) -> None:
    llm = FakeLanguageModel()
    base = await start_server(stt=stt, llm=llm)
    question = voiced(speak("What is the capital of France?"))
    events, requests_at_stop = await turn_counting_requests(base, question, llm)
    heard = the_transcript(events)
    assert "capital" in heard and "france" in heard, heard
    assert transcript_of_answer(events) == f"You said: {heard}"
    assert any(e["type"] == "response.output_audio.delta" for e in events)
    # The answer was started in the 800 ms of silence, before the turn ended, and was used:
    # the model was asked once.
    assert requests_at_stop == [1]
    assert len(llm.requests) == 1
    assert llm.requests[0].messages[-1].content == heard


async def test_a_pause_mid_sentence_never_answers_the_first_half(
    start_server: ServerFactory,
    speak: Callable[[str], Speech],
    stt: PocketsphinxSpeechToText,
) -> None:
    llm = FakeLanguageModel()
    base = await start_server(stt=stt, llm=llm)
    first = voiced(speak("What is the capital"))
    second = voiced(speak("of France?"))
    # 400 ms of silence: long enough for the VAD to hear a pause (and a speculative answer to
    # start), shorter than the 700 ms that end the turn.
    audio = silence(300) + first + silence(400) + second + silence(1200)
    events = await spoken_turn(base, audio, silence_ms=700)

    assert [e["type"] for e in events].count("input_audio_buffer.speech_stopped") == 1
    (completed,) = [
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    heard = completed["transcript"]
    assert "capital" in heard and "france" in heard, heard
    answer = transcript_of_answer(events)
    assert answer == f"You said: {heard}"
    spoken = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    assert spoken == answer  # nothing of an answer to "what is the capital" got out
    # A speculative answer to the first half was started, then thrown away.
    firsts = [r.messages[-1].content for r in llm.requests]
    assert firsts[-1] == heard
    assert any("capital" in t and "france" not in t for t in firsts[:-1]), firsts


async def test_an_stt_engine_that_cannot_stream_transcribes_once_during_the_pause(
    start_server: ServerFactory, speak: Callable[[str], Speech]
) -> None:
    """A non-streaming STT (here the fake, as a remote or faster-whisper engine would be):
    the speech so far is transcribed once in the pause, and that transcript both drives the
    prepared answer and is the turn's final transcript (no second transcription)."""
    stt = FakeSpeechToText()  # "I spoke for N.N seconds."
    llm = FakeLanguageModel()
    base = await start_server(stt=stt, llm=llm)
    question = voiced(speak("What is the capital of France?"))
    events, requests_at_stop = await turn_counting_requests(base, question, llm)
    heard = the_transcript(events)
    assert heard.startswith("I spoke for ") and heard.endswith(" seconds."), heard
    spoken_s = float(heard.split()[3])
    # The speech so far: prefix padding + the question (+ the VAD's hang-over), not the tail.
    assert len(question) / 48_000 <= spoken_s <= len(question) / 48_000 + 0.9, heard  # turn: +1.1
    assert transcript_of_answer(events) == f"You said: {heard}"
    assert requests_at_stop == [1]
    assert len(llm.requests) == 1
    assert len(stt.requests) == 1


async def test_a_slow_stt_that_cannot_stream_is_still_asked_only_once(
    start_server: ServerFactory, speak: Callable[[str], Speech]
) -> None:
    """Its transcript of the speech so far comes after the turn has ended (1.2 s against a
    0.8 s pause, as Whisper on a busy CPU): the turn waits for it instead of sending the same
    speech again and queueing behind the first request."""
    stt = FakeSpeechToText(faults=Faults(first_delay_s=1.2))
    llm = FakeLanguageModel()
    base = await start_server(stt=stt, llm=llm)
    events, _ = await turn_counting_requests(base, voiced(speak("What do bees make?")), llm)
    heard = the_transcript(events)
    assert heard.startswith("I spoke for "), heard
    assert transcript_of_answer(events) == f"You said: {heard}"
    assert len(stt.requests) == 1
    assert len(llm.requests) == 1
