"""The OpenAI-compatible HTTP engines against a real openrealtime, and under faults.

Instance A is the real app (fake engines, an API key) on a loopback port; it serves
``/v1/audio/transcriptions``, ``/v1/chat/completions`` and ``/v1/audio/speech``. The remote
engines and the official ``openai`` SDK talk to A over real HTTP. Faults come from a tiny
scripted HTTP/1.1 server on loopback (reliability-targets.md §3 check 9). Instance B runs the
remote engines pointed at A (or at a faulty server) and is driven through a realtime session
with the official SDK.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from openrealtime.app import create_app
from openrealtime.audio.wav import wav_bytes
from openrealtime.backends.base import (
    ChatMessage,
    ChatToolCall,
    Engines,
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
from openrealtime.backends.errors import BackendError, BackendTimeout
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from openrealtime.backends.llm_openai_compat import OpenAICompatibleLLM
from openrealtime.backends.stt_openai_compat import OpenAICompatibleSTT
from openrealtime.backends.tts_openai_compat import OpenAICompatibleTTS
from openrealtime.backends.vad_energy import EnergyVad
from openrealtime.config import Config
from tests.conformance._error_helpers import KEY as B_KEY
from tests.conformance._error_helpers import Session, sdk_session, serve
from tests.core.sim import user_text
from tests.helpers.server import running_server

A_KEY = "sk-remote-canary-A-0123456789abcdefXYZW"
"""A's API key: the remote engines send it; it must never show in an error message."""

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
)
TIME = ToolSpec("get_time", "The time", {"type": "object", "properties": {}})


def tone(ms: int, rate: int, hz: float = 440.0) -> bytes:
    t = np.arange(ms * rate // 1000) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def fake_tts_bytes(text: str, speed: float = 1.0, rate: int = 24000) -> int:
    """What FakeTextToSpeech produces for ``text``, in bytes."""
    return int(len(text.strip()) * 60.0 / 1000 / max(speed, 0.25) * rate) * 2


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in stream]


class ServerA:
    """Instance A: the real app with fake engines, reachable at ``url`` (``.../v1``)."""

    def __init__(self, base: str, engines: Engines) -> None:
        self.base = base
        self.url = f"{base}/v1"
        self.engines = engines

    @property
    def stt(self) -> FakeSpeechToText:
        assert isinstance(self.engines.stt, FakeSpeechToText)
        return self.engines.stt

    @property
    def llm(self) -> FakeLanguageModel:
        assert isinstance(self.engines.llm, FakeLanguageModel)
        return self.engines.llm

    @property
    def tts(self) -> FakeTextToSpeech:
        assert isinstance(self.engines.tts, FakeTextToSpeech)
        return self.engines.tts


@pytest.fixture
async def server_a() -> AsyncIterator[ServerA]:
    engines = Engines(
        vad=EnergyVad(), stt=FakeSpeechToText(), llm=FakeLanguageModel(), tts=FakeTextToSpeech()
    )
    app = create_app(Config(api_keys=(A_KEY,), vad="energy"), engines)
    async with running_server(app) as base:
        yield ServerA(base, engines)


# --------------------------------------------------------------------------- remote engines -> A


async def test_stt_streams_a_transcript(server_a: ServerA) -> None:
    stt = OpenAICompatibleSTT(server_a.url, model="whisper-1", api_key=A_KEY)
    pcm = tone(1200, 16000)
    events = await collect(stt.transcribe(TranscriptionRequest(pcm, 16000, language="en")))
    *deltas, final = events
    assert final == TranscriptFinal("I spoke for 1.2 seconds.", 1.2)
    assert len(deltas) > 1 and all(isinstance(d, TranscriptDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == final.text
    (seen,) = server_a.stt.requests
    assert seen.pcm16 == pcm and seen.sample_rate == 16000  # same rate: bytes arrive untouched
    assert seen.language == "en" and seen.model == "whisper-1"
    await stt.aclose()


async def test_stt_without_streaming_and_at_another_rate(server_a: ServerA) -> None:
    stt = OpenAICompatibleSTT(server_a.url, api_key=A_KEY, sample_rate=8000, stream=False)
    events = await collect(stt.transcribe(TranscriptionRequest(tone(2000, 8000), 8000)))
    assert events == [TranscriptFinal("I spoke for 2.0 seconds.", 2.0)]
    assert server_a.stt.requests[0].sample_rate == 16000  # A resampled the WAV to its STT rate
    await stt.aclose()


async def test_llm_streams_text_with_usage(server_a: ServerA) -> None:
    llm = OpenAICompatibleLLM(server_a.url, "gpt-test", api_key=A_KEY)
    request = GenerationRequest(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "hello there")]
    )
    events = await collect(llm.generate(request))
    *chunks, done = events
    assert all(isinstance(c, TextChunk) for c in chunks) and len(chunks) == 4
    assert "".join(c.text for c in chunks) == "You said: hello there"
    assert isinstance(done, GenerationDone)
    assert done.finish_reason == "stop" and done.output_tokens == 4 and done.input_tokens > 0
    assert tuple(server_a.llm.requests[0].messages) == tuple(request.messages)

    limited = await collect(llm.generate(GenerationRequest(request.messages, max_output_tokens=2)))
    assert limited[-1] == GenerationDone("length", done.input_tokens, 2)
    assert server_a.llm.requests[1].max_output_tokens == 2
    await llm.aclose()


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_llm_forced_tool_call_and_tool_result(server_a: ServerA, choice: str) -> None:
    llm = OpenAICompatibleLLM(server_a.url, "gpt-test", api_key=A_KEY)
    messages = [ChatMessage("user", "Weather in Paris?")]
    events = await collect(llm.generate(GenerationRequest(messages, [WEATHER, TIME], choice)))
    start, *pieces, done = events
    assert isinstance(start, ToolCallStart) and start.index == 0 and start.name == "get_weather"
    assert start.call_id is not None and start.call_id.startswith("call_")
    assert all(isinstance(p, ToolCallArguments) and p.index == 0 for p in pieces)
    arguments = "".join(p.delta for p in pieces if isinstance(p, ToolCallArguments))
    assert json.loads(arguments) == {"city": "Paris", "days": 1}
    assert isinstance(done, GenerationDone) and done.finish_reason == "tool_calls"
    assert done.output_tokens > 0
    assert server_a.llm.requests[0].tool_choice == choice
    assert server_a.llm.requests[0].tools == (WEATHER, TIME)

    # The call and its result go back in the OpenAI message format and round-trip intact.
    follow_up = [
        *messages,
        ChatMessage("assistant", "", (ChatToolCall(start.call_id, "get_weather", arguments),)),
        ChatMessage("tool", '{"sky": "clear"}', tool_call_id=start.call_id),
    ]
    events = await collect(llm.generate(GenerationRequest(follow_up, [WEATHER], "auto")))
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == (
        'The tool returned {"sky": "clear"}'
    )
    assert tuple(server_a.llm.requests[1].messages) == tuple(follow_up)
    await llm.aclose()


async def test_tts_streams_the_fakes_audio(server_a: ServerA) -> None:
    tts = OpenAICompatibleTTS(server_a.url, "tts-1", api_key=A_KEY)
    text = "Hello from the other side."
    chunks = await collect(tts.synthesize(SynthesisRequest(text, voice="verse")))
    assert len(chunks) > 1 and all(len(c) % 2 == 0 for c in chunks)
    assert sum(len(c) for c in chunks) == fake_tts_bytes(text)
    fast = await collect(tts.synthesize(SynthesisRequest(text, speed=2.0)))
    assert sum(len(c) for c in fast) == fake_tts_bytes(text, 2.0)
    assert [(r.voice, r.speed) for r in server_a.tts.requests] == [("verse", 1.0), ("alloy", 2.0)]
    assert await collect(tts.synthesize(SynthesisRequest("  "))) == []
    await tts.aclose()


# --------------------------------------------------------------------------- official SDK -> A


async def test_openai_sdk_against_a(server_a: ServerA) -> None:
    client = openai.AsyncOpenAI(base_url=server_a.url, api_key=A_KEY)
    try:
        # Transcriptions: WAV at 48 kHz stereo, json, text and streamed.
        stereo = np.repeat(np.frombuffer(tone(1500, 48000), "<i2"), 2).tobytes()
        upload = ("speech.wav", wav_bytes(stereo, 48000, channels=2), "audio/wav")
        result = await client.audio.transcriptions.create(file=upload, model="whisper-1")
        assert result.text == "I spoke for 1.5 seconds."
        assert server_a.stt.requests[-1].sample_rate == 16000
        text = await client.audio.transcriptions.create(
            file=upload, model="whisper-1", response_format="text"
        )
        assert text.strip() == "I spoke for 1.5 seconds."
        verbose = await client.audio.transcriptions.create(
            file=upload, model="whisper-1", response_format="verbose_json"
        )
        assert verbose.text == "I spoke for 1.5 seconds." and verbose.duration == 1.5
        stream = await client.audio.transcriptions.create(
            file=upload, model="gpt-4o-transcribe", stream=True
        )
        kinds, deltas, final = [], [], None
        async for event in stream:
            kinds.append(event.type)
            if event.type == "transcript.text.delta":
                deltas.append(event.delta)
            elif event.type == "transcript.text.done":
                final = event.text
        assert kinds[-1] == "transcript.text.done" and len(deltas) > 1
        assert final == "".join(deltas) == "I spoke for 1.5 seconds."

        # Speech: streamed pcm (24 kHz) and wav.
        spoken = "Streaming speech works."
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=spoken, response_format="pcm"
        ) as response:
            assert response.headers["content-type"].startswith("audio/pcm")
            pcm = b"".join([chunk async for chunk in response.iter_bytes()])
        assert len(pcm) == fake_tts_bytes(spoken)
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=spoken, response_format="wav"
        ) as response:
            data = await response.read()
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[44:] == pcm

        # Chat completions: streamed text with usage, a streamed forced tool call, non-streamed.
        chunks = await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        content, finish, usage = [], None, None
        async for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                content.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        assert "".join(content) == "You said: stream me" and finish == "stop"
        assert usage is not None and usage.completion_tokens == 4 and usage.total_tokens > 4

        weather = {
            "type": "function",
            "function": {
                "name": WEATHER.name,
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        }
        chunks = await client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[weather],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
        names, arguments, ids = [], [], []
        async for chunk in chunks:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    assert call.index == 0
                    ids += [call.id] if call.id else []
                    if call.function and call.function.name:
                        names.append(call.function.name)
                    if call.function and call.function.arguments:
                        arguments.append(call.function.arguments)
                finish = choice.finish_reason or finish
        assert names == ["get_weather"] and len(ids) == 1 and finish == "tool_calls"
        assert json.loads("".join(arguments)) == {"city": "Paris", "days": 1}

        completion = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "whole"}], max_tokens=2
        )
        assert completion.choices[0].message.content == "You said:"
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 2
    finally:
        await client.close()


async def test_auth_and_validation_errors(server_a: ServerA) -> None:
    auth = {"Authorization": f"Bearer {A_KEY}"}
    async with httpx.AsyncClient(base_url=server_a.url) as http:
        for path in ("/chat/completions", "/audio/speech", "/audio/transcriptions"):
            missing = await http.post(path, json={})
            assert missing.status_code == 401, path
            assert missing.json()["error"]["type"] == "invalid_request_error"
            wrong = await http.post(path, json={}, headers={"Authorization": "Bearer sk-nope"})
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"

        cases: list[tuple[str, dict[str, Any], str | None]] = [
            ("/audio/speech", {"json": {"model": "tts-1", "voice": "alloy"}}, "input"),
            ("/audio/speech", {"json": {"input": "hi", "response_format": "mp3"}}, None),
            ("/audio/speech", {"json": {"input": "hi", "speed": 9}}, "speed"),
            ("/audio/speech", {"content": b"{not json", "headers": auth}, None),
            ("/chat/completions", {"json": {"model": "m"}}, "messages"),
            (
                "/chat/completions",
                {"json": {"messages": [{"role": "user", "content": "x"}], "tool_choice": "z"}},
                "tool_choice",
            ),
            ("/audio/transcriptions", {"data": {"model": "whisper-1"}}, "file"),
            (
                "/audio/transcriptions",
                {"files": {"file": ("a.mp3", b"ID3\x03" + b"\x00" * 64, "audio/mpeg")}},
                "file",
            ),
        ]
        for path, kwargs, param in cases:
            kwargs.setdefault("headers", auth)
            response = await http.post(path, **kwargs)
            assert response.status_code == 400, (path, kwargs, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"]
            if param is not None:
                assert error["param"] == param, error

        # Raw PCM16 is accepted too (audio/pcm with its rate).
        raw = {"file": ("a.pcm", tone(1000, 24000), "audio/pcm;rate=24000")}
        response = await http.post("/audio/transcriptions", files=raw, headers=auth)
        assert response.status_code == 200 and response.json()["text"] == "I spoke for 1.0 seconds."


async def test_engine_failure_is_a_502_with_the_openai_body(server_a: ServerA) -> None:
    server_a.llm.faults.fail_before_first = True
    llm = OpenAICompatibleLLM(server_a.url, "m", api_key=A_KEY)
    with pytest.raises(BackendError) as caught:
        await collect(llm.generate(GenerationRequest([ChatMessage("user", "hi")])))
    assert caught.value.code == "engine_http_502" and caught.value.retriable
    assert "failed before its first output" in caught.value.message
    server_a.llm.faults.fail_before_first = False
    server_a.llm.faults.fail_after_chunks = 1
    with pytest.raises(BackendError) as caught:  # mid-stream: an SSE error event, no [DONE]
        await collect(llm.generate(GenerationRequest([ChatMessage("user", "hi")])))
    assert caught.value.code == "engine_error" and "mid-stream" in caught.value.message
    await llm.aclose()


# --------------------------------------------------------------------------- fault injection

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes, bytes], Awaitable[None]]


class ScriptedServer:
    """A tiny HTTP/1.1 server on loopback that answers every request as ``mode`` says.

    Modes: ``hang`` (reads the request, never answers), ``500`` (an OpenAI error body that
    echoes the caller's key), ``cut`` (a stream or body that stops before its end, then the
    connection closes), ``chat_ok`` (a whole chat-completion stream), ``parallel_tools``,
    ``stt_no_stream`` (400 when asked to stream, else JSON). ``requests`` keeps
    ``(head, body)`` of each request.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[tuple[str, bytes]] = []
        self._release = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in head.split("\r\n")
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length)
            self.requests.append((head, body))
            await self._answer(writer, head, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, head: str, body: bytes) -> None:
        path = head.split(" ", 2)[1]
        mode = self.mode
        if mode == "hang":
            await self._release.wait()
            return
        if mode == "500":
            key = next(
                (ln.split("Bearer ", 1)[1] for ln in head.split("\r\n") if "Bearer " in ln), ""
            )
            error = {"error": {"message": f"boom for {key}", "type": "server_error", "code": None}}
            writer.write(_http(500, "application/json", json.dumps(error).encode()))
        elif mode == "cut":
            if path.endswith("/audio/speech"):  # declares 48000 bytes, sends 1000
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: audio/pcm\r\nContent-Length: 48000\r\n\r\n"
                    + b"\x01\x00" * 500
                )
            else:
                writer.write(_sse_head())
                if path.endswith("/chat/completions"):
                    writer.write(_sse({"choices": [{"index": 0, "delta": {"content": "Half"}}]}))
                else:
                    writer.write(_sse({"type": "transcript.text.delta", "delta": "Half"}))
        elif mode == "chat_ok":
            writer.write(_sse_head())
            for data in _chat_stream("Recovered after the fault."):
                writer.write(_sse(data))
        elif mode == "parallel_tools":
            writer.write(_sse_head())
            for data in _parallel_tool_stream():
                writer.write(_sse(data))
        elif mode == "stt_no_stream":
            if b'name="stream"' in body:
                error = {"error": {"message": "stream is not supported", "code": "bad"}}
                writer.write(_http(400, "application/json", json.dumps(error).encode()))
            else:
                writer.write(_http(200, "application/json", b'{"text": "plain answer"}'))
        await writer.drain()


def _http(status: int, content_type: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def _chat_stream(text: str) -> list[dict[str, Any] | str]:
    words = text.split(" ")
    out: list[dict[str, Any] | str] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        out.append({"choices": [{"index": 0, "delta": {"content": piece}}]})
    out.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
    out += [{"choices": [], "usage": usage | {"prompt_tokens_details": {"cached_tokens": 3}}}]
    return [*out, "[DONE]"]


def _parallel_tool_stream() -> list[dict[str, Any] | str]:
    def delta(calls: list[dict[str, Any]]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": calls}}]}

    return [
        delta([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_time"}}]),
        delta([{"index": 1, "id": "call_b", "function": {"name": "get_weather", "arguments": ""}}]),
        delta([{"index": 1, "function": {"arguments": '{"city": '}}]),
        delta([{"index": 0, "function": {"arguments": "{}"}}]),
        delta([{"index": 1, "function": {"arguments": '"Oslo", "days": 2}'}}]),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}},
        "[DONE]",
    ]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def engine_call(
    kind: str, url: str, engine_timeout: float = 5.0, received: list[Any] | None = None
) -> None:
    """Run one call of a remote engine of ``kind`` against ``url`` with the canary key."""
    events: AsyncIterator[Any]
    engine: OpenAICompatibleSTT | OpenAICompatibleLLM | OpenAICompatibleTTS
    if kind == "stt":
        engine = OpenAICompatibleSTT(url, api_key=A_KEY, timeout=engine_timeout)
        events = engine.transcribe(TranscriptionRequest(tone(500, 16000), 16000))
    elif kind == "llm":
        engine = OpenAICompatibleLLM(url, "m", api_key=A_KEY, timeout=engine_timeout)
        events = engine.generate(GenerationRequest([ChatMessage("user", "hi")]))
    else:
        engine = OpenAICompatibleTTS(url, api_key=A_KEY, timeout=engine_timeout)
        events = engine.synthesize(SynthesisRequest("Say something long enough."))
    try:
        async for event in events:
            if received is not None:
                received.append(event)
    finally:
        await engine.aclose()


def assert_clean(exc: BackendError) -> None:
    assert A_KEY not in exc.message and A_KEY not in str(exc) and "pw" not in exc.message


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_connection_refused(kind: str) -> None:
    with pytest.raises(BackendError) as caught:
        await engine_call(kind, f"http://user:pw@127.0.0.1:{unused_port()}/v1?k=pw")
    assert caught.value.code == "engine_unavailable" and caught.value.retriable
    assert "cannot connect" in caught.value.message
    assert_clean(caught.value)


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_timeout_when_the_server_never_answers(kind: str) -> None:
    async with ScriptedServer("hang") as server:
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as caught:
            await engine_call(kind, server.url, engine_timeout=0.5)
        assert time.monotonic() - started < 3.0
    assert caught.value.code == "engine_timeout" and "0.5 s" in caught.value.message
    assert_clean(caught.value)
    assert f"Authorization: Bearer {A_KEY}" in server.requests[0][0]


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_http_500_with_an_error_body(kind: str) -> None:
    async with ScriptedServer("500") as server:
        with pytest.raises(BackendError) as caught:
            await engine_call(kind, server.url)
    assert caught.value.code == "engine_http_500" and caught.value.retriable
    assert "boom for ***" in caught.value.message  # the server echoed the key; it is scrubbed
    assert_clean(caught.value)


@pytest.mark.parametrize("kind", ["stt", "llm", "tts"])
async def test_stream_cut_mid_answer(kind: str) -> None:
    received: list[Any] = []
    async with ScriptedServer("cut") as server:
        with pytest.raises(BackendError) as caught:
            await engine_call(kind, server.url, received=received)
    assert caught.value.code == "engine_stream_incomplete", caught.value.message
    assert received, "the part before the cut was streamed"
    assert_clean(caught.value)


async def test_parallel_tool_calls_and_request_shape() -> None:
    async with ScriptedServer("parallel_tools") as server:
        llm = OpenAICompatibleLLM(server.url, "qwen", extra_body={"temperature": 0.2})
        history = [
            ChatMessage("system", "sys"),
            ChatMessage("user", "u"),
            ChatMessage("assistant", "", (ChatToolCall("call_0", "get_time", "{}"),)),
            ChatMessage("tool", "noon", tool_call_id="call_0"),
        ]
        request = GenerationRequest(history, [TIME, WEATHER], "get_weather", max_output_tokens=50)
        events: list[GenerationEvent] = await collect(llm.generate(request))
        await llm.aclose()
    assert events == [
        ToolCallStart(0, "get_time", "call_a"),
        ToolCallStart(1, "get_weather", "call_b"),
        ToolCallArguments(1, '{"city": '),
        ToolCallArguments(0, "{}"),
        ToolCallArguments(1, '"Oslo", "days": 2}'),
        GenerationDone("tool_calls", 20, 9, 0),
    ]
    head, body = server.requests[0]
    assert head.startswith("POST /v1/chat/completions ") and "Authorization" not in head
    payload = json.loads(body)
    assert payload["model"] == "qwen" and payload["temperature"] == 0.2
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}
    assert payload["max_tokens"] == 50
    assert payload["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert payload["tools"][1] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": WEATHER.parameters,
            "description": WEATHER.description,
        },
    }
    assert payload["messages"][2:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "content": "noon", "tool_call_id": "call_0"},
    ]


def test_required_with_one_tool_is_sent_as_that_tool() -> None:
    """The same demand in the form every server knows (llama-cpp-python's has no "required")."""
    llm = OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m")
    one = llm.payload(GenerationRequest([ChatMessage("user", "u")], [WEATHER], "required"))
    two = llm.payload(GenerationRequest([ChatMessage("user", "u")], [TIME, WEATHER], "required"))
    assert one["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert two["tool_choice"] == "required"


async def test_llm_usage_and_cached_tokens_from_the_stream() -> None:
    async with ScriptedServer("chat_ok") as server:
        llm = OpenAICompatibleLLM(server.url, "m")
        events = await collect(llm.generate(GenerationRequest([ChatMessage("user", "x")])))
        await llm.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == (
        "Recovered after the fault."
    )
    assert events[-1] == GenerationDone("stop", 7, 4, 3)


async def test_stt_falls_back_when_the_server_cannot_stream() -> None:
    async with ScriptedServer("stt_no_stream") as server:
        stt = OpenAICompatibleSTT(server.url, model="Systran/faster-whisper-small")
        request = TranscriptionRequest(tone(300, 16000), 16000, prompt="names")
        first: list[TranscriptionEvent] = await collect(stt.transcribe(request))
        second: list[TranscriptionEvent] = await collect(stt.transcribe(request))
        await stt.aclose()
    assert first == second == [TranscriptFinal("plain answer", 0.3)]
    assert len(server.requests) == 3  # streamed try, plain retry, then plain only
    body = server.requests[2][1]
    assert b'name="stream"' not in body and b"faster-whisper-small" in body
    assert b'name="prompt"\r\n\r\nnames' in body
    assert wav_bytes(request.pcm16, 16000) in body


# --------------------------------------------------------------------------- end to end: B -> A


@contextlib.asynccontextmanager
async def remote_engines(
    a_url: str, *, llm_url: str | None = None, engine_timeout: float = 5.0
) -> AsyncIterator[Engines]:
    """B's engines: the remote engines pointed at A (the LLM optionally elsewhere)."""
    stt = OpenAICompatibleSTT(a_url, api_key=A_KEY, timeout=engine_timeout)
    llm = OpenAICompatibleLLM(llm_url or a_url, "gpt-test", api_key=A_KEY, timeout=engine_timeout)
    tts = OpenAICompatibleTTS(a_url, api_key=A_KEY, timeout=engine_timeout)
    try:
        yield Engines(vad=EnergyVad(), stt=stt, llm=llm, tts=tts)
    finally:
        for engine in (stt, llm, tts):
            await engine.aclose()


async def _text_response(session: Session) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    await session.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    return await session.recv_until("response.done")


async def test_b_serves_realtime_through_a(server_a: ServerA) -> None:
    config = Config(api_keys=(B_KEY,), vad="energy")
    async with (
        remote_engines(server_a.url) as engines,
        serve(config, engines) as b,
        sdk_session(b) as session,
    ):
        # A text turn.
        await session.send(user_text("ping over http"))
        done, events = await _text_response(session)
        assert done["response"]["status"] == "completed", done
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "You said: ping over http"
        assert done["response"]["usage"]["output_tokens"] == 5

        # An audio turn with manual commit: B's STT, LLM and TTS all run on A.
        await session.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": None,
                            "transcription": {"model": "gpt-4o-mini-transcribe"},
                        }
                    },
                },
            }
        )
        await session.recv_until("session.updated")
        pcm = tone(1200, 24000)
        for start in range(0, len(pcm), 4800):
            chunk = base64.b64encode(pcm[start : start + 4800]).decode("ascii")
            await session.send({"type": "input_audio_buffer.append", "audio": chunk})
        await session.send({"type": "input_audio_buffer.commit"})
        transcribed, _ = await session.recv_until(
            "conversation.item.input_audio_transcription.completed"
        )
        assert transcribed["transcript"] == "I spoke for 1.2 seconds."
        await session.send({"type": "response.create"})
        done, events = await session.recv_until("response.done")
        assert done["response"]["status"] == "completed", done
        (spoken,) = [e for e in events if e["type"] == "response.output_audio_transcript.done"]
        assert spoken["transcript"] == "You said: I spoke for 1.2 seconds."
        audio = b"".join(
            base64.b64decode(e["delta"])
            for e in events
            if e["type"] == "response.output_audio.delta"
        )
        # B's TTS (on A) spoke the transcript clause by clause: the fake's length per clause.
        assert abs(len(audio) - fake_tts_bytes(spoken["transcript"])) <= 4 * 2 * 24000 // 1000 * 60
    assert len(server_a.stt.requests) == 1 and len(server_a.llm.requests) == 2


@pytest.mark.parametrize("fault", ["cut", "hang", "500"])
async def test_b_survives_a_faulty_llm_server(server_a: ServerA, fault: str) -> None:
    config = Config(api_keys=(B_KEY,), vad="energy")
    async with ScriptedServer(fault) as faulty:
        async with (
            remote_engines(server_a.url, llm_url=faulty.url, engine_timeout=0.5) as engines,
            serve(config, engines) as b,
            sdk_session(b) as session,
        ):
            await session.send(user_text("are you there?"))
            started = time.monotonic()
            done, events = await _text_response(session)
            assert time.monotonic() - started < 3.0
            response = done["response"]
            assert response["status"] == "failed", response
            code = {"cut": "engine_stream_incomplete", "hang": "engine_timeout"}.get(
                fault, "engine_http_500"
            )
            assert response["status_details"]["error"]["code"] == code
            error, _ = await session.recv_until("error")
            assert error["error"]["code"] == code and error["error"]["type"] == "server_error"
            assert A_KEY not in json.dumps(session.received)
            if fault == "cut":  # what streamed before the cut was shown, then marked incomplete
                deltas = [e for e in events if e["type"] == "response.output_text.delta"]
                assert [d["delta"] for d in deltas] == ["Half"]

            # The fault is removed: the next response.create on the same session works.
            faulty.mode = "chat_ok"
            done, events = await _text_response(session)
            assert done["response"]["status"] == "completed", done
            text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
            assert text == "Recovered after the fault."
            assert not [e for e in events if e["type"] == "error"]


async def test_remote_engines_close_cleanly() -> None:
    stt = OpenAICompatibleSTT("http://127.0.0.1:9/v1")
    with contextlib.suppress(BackendError):
        await collect(stt.transcribe(TranscriptionRequest(b"\x00\x00" * 160, 16000)))
    await stt.aclose()
    await stt.aclose()


async def test_mid_stream_failures_on_a_reach_the_remote_engines(server_a: ServerA) -> None:
    server_a.tts.faults.fail_after_chunks = 2
    tts = OpenAICompatibleTTS(server_a.url, api_key=A_KEY)
    received: list[bytes] = []
    with pytest.raises(BackendError) as caught:
        async for chunk in tts.synthesize(SynthesisRequest("A sentence long enough to stream.")):
            received.append(chunk)
    assert caught.value.code == "engine_stream_incomplete" and received
    await tts.aclose()

    server_a.stt.faults.fail_after_chunks = 1
    stt = OpenAICompatibleSTT(server_a.url, api_key=A_KEY)
    events: list[TranscriptionEvent] = []
    with pytest.raises(BackendError) as caught:
        async for event in stt.transcribe(TranscriptionRequest(tone(900, 16000), 16000)):
            events.append(event)
    assert caught.value.code == "engine_error" and events == [TranscriptDelta("I")]
    assert "mid-stream" in caught.value.message
    await stt.aclose()
