"""Remote engines against servers that never finish or answer the wrong thing (defect 11).

A small HTTP/1.1 server on loopback plays the faulty engine server: SSE keep-alive comments
forever, whitespace forever, an HTML or JSON page with status 200 for speech, a token stream
that ignores ``max_tokens`` and never ends, oversized error bodies. The real engines are
driven directly, and through a real Realtime session on instance B (WebSocket, the
conformance helpers) to check what a user sees: ``response.done`` failed with
``engine_timeout`` / ``engine_bad_response``, or ``incomplete`` with ``max_output_tokens``, no
audio made of HTML, and a session that goes on working.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from openrealtime.backends._http import MAX_MESSAGE_CHARS
from openrealtime.backends.base import (
    ChatMessage,
    Engines,
    GenerationDone,
    GenerationRequest,
    SynthesisRequest,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError, BackendTimeout
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText
from openrealtime.backends.llm_openai_compat import OpenAICompatibleLLM
from openrealtime.backends.registry import build_engines, close_engines
from openrealtime.backends.stt_openai_compat import OpenAICompatibleSTT
from openrealtime.backends.tts_openai_compat import OpenAICompatibleTTS
from openrealtime.backends.vad_energy import EnergyVad
from openrealtime.config import Config
from tests.conformance._error_helpers import KEY, Session, raw_session, serve
from tests.helpers.polling import settled

Writer = asyncio.StreamWriter
Handler = Callable[[str, bytes, asyncio.StreamReader, Writer], Awaitable[None]]

IDLE = 0.5
"""The idle-content timeout of every engine here, in seconds."""


class FaultServer:
    """An HTTP/1.1 server on loopback; ``handler`` answers each request (swap it any time).

    ``requests`` keeps ``(path, body)`` of each request; ``open`` counts connections whose
    client has not gone yet (a handler that streams forever stops when its client leaves).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, bytes]] = []
        self.open = 0
        self.stopping = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[Writer] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.url = ""

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)  # they see the close
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        self.open += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
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
            path = head.split(" ", 2)[1]
            self.requests.append((path, body))
            await self.handler(path, body, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def forever(
        self, reader: asyncio.StreamReader, writer: Writer, piece: bytes, every: float
    ) -> None:
        """Send ``piece`` every ``every`` seconds until the client leaves."""
        while not (reader.at_eof() or writer.is_closing() or self.stopping.is_set()):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)


def head(content_type: str | None, *, length: int | None = None) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(status: int, content_type: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def chat_chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def chat_ok(text: str = "Back to normal.") -> bytes:
    stop = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return b"".join([sse(chat_chunk(text)), sse(stop), sse("[DONE]")])


async def answer_chat_ok(path: str, body: bytes, reader: Any, writer: Writer) -> None:
    writer.write(head("text/event-stream") + chat_ok())


async def answer_audio(path: str, body: bytes, reader: Any, writer: Writer) -> None:
    pcm = b"\x10\x00" * 24000  # one second at 24 kHz
    writer.write(head("audio/pcm", length=len(pcm)) + pcm)


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in stream]


def llm(url: str, **options: Any) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(url, "m", idle_timeout=IDLE, timeout=5.0, **options)


def stt(url: str, **options: Any) -> OpenAICompatibleSTT:
    return OpenAICompatibleSTT(url, idle_timeout=IDLE, timeout=5.0, **options)


def tts(url: str) -> OpenAICompatibleTTS:
    return OpenAICompatibleTTS(url, idle_timeout=IDLE, timeout=5.0)


HI = GenerationRequest([ChatMessage("user", "hi")])
SPEECH = TranscriptionRequest(b"\x01\x00" * 8000, 16000)


def call(engine: OpenAICompatibleLLM | OpenAICompatibleSTT) -> AsyncIterator[Any]:
    """One request of ``engine``: a chat answer to "hi", or a transcription of half a second."""
    if isinstance(engine, OpenAICompatibleLLM):
        return engine.generate(HI)
    return engine.transcribe(SPEECH)


# --------------------------------------------------------------------------- idle content


@pytest.mark.parametrize(
    ("kind", "piece"),
    [
        ("llm", b": keep-alive\n\n"),
        ("llm", b"   \n\n"),
        ("llm", b"event: ping\n\n"),
        ("stt", b": keep-alive\n\n"),
        ("stt", b"\n"),
    ],
)
async def test_an_event_stream_of_keepalives_times_out(kind: str, piece: bytes) -> None:
    async def keepalives(path: str, body: bytes, reader: Any, writer: Writer) -> None:
        writer.write(head("text/event-stream"))
        if kind == "llm":  # some content first: the timer counts from the last content
            writer.write(sse(chat_chunk("Hello")))
        await server.forever(reader, writer, piece, 0.05)

    async with FaultServer(keepalives) as server:
        engine = llm(server.url) if kind == "llm" else stt(server.url)
        stream = call(engine)
        received: list[Any] = []
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as caught:
            async for event in stream:
                received.append(event)
        took = time.monotonic() - started
        assert IDLE <= took < IDLE + 1.5, took
        assert caught.value.code == "engine_timeout"
        assert "no content for 0.5 s" in caught.value.message
        assert received == ([TextChunk("Hello")] if kind == "llm" else [])
        assert await settled(lambda: server.open == 0), "the engine left the stream open"
        await engine.aclose()


async def test_a_json_answer_trickling_whitespace_times_out() -> None:
    async def trickle(path: str, body: bytes, reader: Any, writer: Writer) -> None:
        writer.write(head("application/json"))
        await server.forever(reader, writer, b" ", 0.05)

    async with FaultServer(trickle) as server:
        engine = stt(server.url, stream=False)
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            await collect(engine.transcribe(SPEECH))
        assert time.monotonic() - started < IDLE + 1.5
        assert await settled(lambda: server.open == 0)
        await engine.aclose()


async def test_time_spent_by_the_consumer_does_not_count() -> None:
    """Content every 0.3 s with keep-alives between: never idle for 0.8 s of waiting, even
    though the consumer takes 1 s over each piece (as the LLM's consumer waits on TTS)."""

    async def slow(path: str, body: bytes, reader: Any, writer: Writer) -> None:
        writer.write(head("text/event-stream"))
        for word in ["One", " two", " three"]:
            for _ in range(3):
                writer.write(b": still thinking\n\n")
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.write(sse(chat_chunk(word)))
        writer.write(chat_ok(""))

    async with FaultServer(slow) as server:
        engine = OpenAICompatibleLLM(server.url, "m", idle_timeout=0.8, timeout=5.0)
        texts = []
        async for event in engine.generate(HI):
            if isinstance(event, TextChunk):
                texts.append(event.text)
                await asyncio.sleep(1.0)
        assert "".join(texts) == "One two three"
        await engine.aclose()


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", b"<html><body>" + b"Bad gateway " * 5000 + b"</body></html>"),
        ("application/json", b'{"error": {"message": "quota exceeded"}}'),
        ("text/plain", b"Service temporarily unavailable"),
    ],
)
async def test_tts_refuses_an_answer_that_is_not_audio(content_type: str, body: bytes) -> None:
    async def page(path: str, request: bytes, reader: Any, writer: Writer) -> None:
        writer.write(whole(200, content_type, body))

    async with FaultServer(page) as server:
        engine = tts(server.url)
        chunks: list[bytes] = []
        with pytest.raises(BackendError) as caught:
            async for chunk in engine.synthesize(SynthesisRequest("Say this.")):
                chunks.append(chunk)
        await engine.aclose()
    assert chunks == []
    assert caught.value.code == "engine_bad_response"
    assert content_type.split(";")[0] in caught.value.message
    assert body[:12].decode() in caught.value.message  # an excerpt...
    assert len(caught.value.message) <= MAX_MESSAGE_CHARS  # ...not the page


@pytest.mark.parametrize("content_type", ["audio/pcm;rate=24000", "application/octet-stream", None])
async def test_tts_plays_audio_and_untyped_answers(content_type: str | None) -> None:
    async def audio(path: str, request: bytes, reader: Any, writer: Writer) -> None:
        writer.write(head(content_type, length=4800) + b"\x01\x00" * 2400)

    async with FaultServer(audio) as server:
        engine = tts(server.url)
        chunks = await collect(engine.synthesize(SynthesisRequest("Say this.")))
        await engine.aclose()
    assert b"".join(chunks) == b"\x01\x00" * 2400


async def test_llm_reads_a_whole_json_completion_when_the_server_does_not_stream() -> None:
    completion = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4},
    }

    async def json_answer(path: str, request: bytes, reader: Any, writer: Writer) -> None:
        writer.write(whole(200, "application/json", json.dumps(completion).encode()))

    async with FaultServer(json_answer) as server:
        engine = llm(server.url)
        events = await collect(engine.generate(HI))
        completion["choices"][0]["message"] = {"role": "assistant", "content": "Plain text."}  # type: ignore[index]
        completion["choices"][0]["finish_reason"] = "stop"  # type: ignore[index]
        text = await collect(engine.generate(HI))
        await engine.aclose()
    assert events == [
        ToolCallStart(0, "get_time", "call_1"),
        ToolCallArguments(0, "{}"),
        GenerationDone("tool_calls", 11, 4),
    ]
    assert text == [TextChunk("Plain text."), GenerationDone("stop", 11, 4)]


async def test_a_stream_broken_before_its_first_chunk_is_asked_again_on_a_new_connection() -> None:
    """llama-cpp-python's server ends a stream it cannot produce with an empty body and closes
    the connection a moment later; the pool still holds it as reusable meanwhile. The engine
    asks again without streaming on a connection of its own, so the close cannot hit it."""
    completion = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }

    async def break_then_answer(path: str, request: bytes, reader: Any, writer: Writer) -> None:
        if json.loads(request)["stream"]:
            # keep-alive, no chunk at all; then the connection is closed 0.3 s later without
            # reading what the client may have sent on it meanwhile
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
            writer.write(b"Content-Length: 0\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.3)
            return
        writer.write(whole(200, "application/json", json.dumps(completion).encode()))

    async with FaultServer(break_then_answer) as server:
        engine = llm(server.url)
        events = await collect(engine.generate(HI))
        await engine.aclose()
    assert events == [TextChunk("Hi."), GenerationDone("stop", 5, 2)]
    assert [json.loads(body)["stream"] for _, body in server.requests] == [True, False]


@pytest.mark.parametrize("kind", ["llm", "stt"])
async def test_an_html_page_is_refused_by_llm_and_stt(kind: str) -> None:
    page = b"<!DOCTYPE html><html><title>502 Bad Gateway</title>" + b" " * 100_000 + b"</html>"

    async def html(path: str, request: bytes, reader: Any, writer: Writer) -> None:
        writer.write(whole(200, "text/html", page))

    async with FaultServer(html) as server:
        engine = llm(server.url) if kind == "llm" else stt(server.url)
        with pytest.raises(BackendError) as caught:
            await collect(call(engine))
        await engine.aclose()
    assert caught.value.code == "engine_bad_response"
    assert "text/html" in caught.value.message and "502 Bad Gateway" in caught.value.message
    assert len(caught.value.message) <= MAX_MESSAGE_CHARS


# --------------------------------------------------------------------------- output cap


async def endless(path: str, body: bytes, reader: Any, writer: Writer) -> None:
    """A chat stream that ignores ``max_tokens`` and never ends (a tiny pause per token)."""
    writer.write(head("text/event-stream"))
    while not (reader.at_eof() or writer.is_closing()):
        writer.write(sse(chat_chunk(" tok")))
        await writer.drain()
        await asyncio.sleep(0.001)


@pytest.mark.parametrize(("asked", "cap"), [(None, 7), (3, 7), (None, None)])
async def test_the_output_cap_stops_a_server_that_ignores_max_tokens(
    asked: int | None, cap: int | None
) -> None:
    async with FaultServer(endless) as server:
        engine = llm(server.url, max_output_tokens=cap)
        request = GenerationRequest([ChatMessage("user", "hi")], max_output_tokens=asked)
        if cap is None and asked is None:  # no cap at all: only the consumer can stop it
            async for event in engine.generate(request):
                if isinstance(event, TextChunk):
                    break
            assert "max_tokens" not in json.loads(server.requests[0][1])
            await engine.aclose()
            return
        events = await collect(engine.generate(request))
        assert await settled(lambda: server.open == 0), "the capped stream was left open"
        await engine.aclose()
    limit = asked or cap
    assert limit is not None
    *chunks, done = events
    assert chunks == [TextChunk(" tok")] * limit
    assert done == GenerationDone("length", 0, limit)
    assert json.loads(server.requests[0][1])["max_tokens"] == limit


# --------------------------------------------------------------------------- bounded messages


@pytest.mark.parametrize("where", ["status", "llm_event", "stt_event", "sse_line", "json_size"])
async def test_error_messages_and_bodies_are_bounded(where: str) -> None:
    huge = "x" * 1_000_000

    async def answer(path: str, request: bytes, reader: Any, writer: Writer) -> None:
        if where == "status":
            writer.write(whole(500, "application/json", json.dumps({"error": huge}).encode()))
        elif where == "llm_event":
            writer.write(head("text/event-stream") + sse({"error": {"message": huge}}))
        elif where == "stt_event":
            writer.write(head("text/event-stream") + sse({"type": "error", "error": huge}))
        elif where == "sse_line":
            writer.write(head("text/event-stream") + b"data: " + b"a" * 1_100_000 + b"\n\n")
        else:
            text = json.dumps({"text": "y" * 9_000_000}).encode()
            writer.write(whole(200, "application/json", text))
        await writer.drain()

    async with FaultServer(answer) as server:
        if where.startswith("llm") or where in ("status", "sse_line"):
            engine: OpenAICompatibleLLM | OpenAICompatibleSTT = llm(server.url)
        else:
            engine = stt(server.url, stream=where != "json_size")
        with pytest.raises(BackendError) as caught:
            await collect(call(engine))
        await engine.aclose()
    assert len(caught.value.message) <= MAX_MESSAGE_CHARS, len(caught.value.message)
    expected = {
        "status": "engine_http_500",
        "llm_event": "engine_error",
        "stt_event": "engine_error",
        "sse_line": "engine_bad_response",
        "json_size": "engine_bad_response",
    }
    assert caught.value.code == expected[where]


# --------------------------------------------------------------------------- through a session


def remote_config(llm_url: str, **overrides: Any) -> Config:
    """B: the remote LLM at ``llm_url``, fake STT/TTS, built by the registry from this config."""
    return Config(
        api_keys=(KEY,),
        vad="energy",
        turn="none",
        stt="fake",
        tts="fake",
        llm="openai-compatible",
        llm_base_url=llm_url,
        llm_model="m",
        engine_timeout=5.0,
        engine_idle_timeout=IDLE,
        **overrides,
    )


async def text_response(session: Session) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    await session.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    return await session.recv_until("response.done")


def deltas(events: list[dict[str, Any]], kind: str) -> list[str]:
    return [e["delta"] for e in events if e["type"] == kind]


async def test_a_session_survives_an_llm_that_only_sends_keepalives() -> None:
    async def keepalives(path: str, body: bytes, reader: Any, writer: Writer) -> None:
        writer.write(head("text/event-stream"))
        await server.forever(reader, writer, b": keep-alive\n\n", 0.05)

    async with FaultServer(keepalives) as server:
        config = remote_config(server.url)
        engines = build_engines(config)
        try:
            async with serve(config, engines) as b, raw_session(b) as session:
                started = time.monotonic()
                done, _ = await text_response(session)
                assert time.monotonic() - started < IDLE + 2.0
                assert done["response"]["status"] == "failed", done
                assert done["response"]["status_details"]["error"]["code"] == "engine_timeout"
                assert await settled(lambda: server.open == 0)

                server.handler = answer_chat_ok
                done, events = await text_response(session)
                assert done["response"]["status"] == "completed", done
                assert deltas(events, "response.output_text.delta") == ["Back to normal."]
        finally:
            await close_engines(engines)


async def test_a_session_caps_an_endless_llm_at_max_output_tokens() -> None:
    async with FaultServer(endless) as server:
        config = remote_config(server.url, max_output_tokens=5)
        engines = build_engines(config)
        try:
            async with serve(config, engines) as b, raw_session(b) as session:
                done, events = await text_response(session)  # max_output_tokens: "inf"
                response = done["response"]
                assert response["status"] == "incomplete", response
                assert response["status_details"]["reason"] == "max_output_tokens"
                assert response["usage"]["output_tokens"] == 5
                assert deltas(events, "response.output_text.delta") == [" tok"] * 5
                assert json.loads(server.requests[-1][1])["max_tokens"] == 5
                assert await settled(lambda: server.open == 0)

                # The same cap holds for B's own /v1/chat/completions without max_tokens.
                async with httpx.AsyncClient(base_url=f"{b}/v1") as http:
                    answer = await http.post(
                        "/chat/completions",
                        json={"messages": [{"role": "user", "content": "hi"}]},
                        headers={"Authorization": f"Bearer {KEY}"},
                    )
                assert answer.status_code == 200, answer.text
                assert answer.json()["choices"][0]["finish_reason"] == "length"
                assert answer.json()["usage"]["completion_tokens"] == 5

                server.handler = answer_chat_ok
                done, _ = await text_response(session)
                assert done["response"]["status"] == "completed", done
        finally:
            await close_engines(engines)


async def test_a_session_never_plays_an_html_page_as_speech() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>" + b"nginx " * 2000 + b"</body></html>"

    async def html(path: str, body: bytes, reader: Any, writer: Writer) -> None:
        writer.write(whole(200, "text/html", page))

    async with FaultServer(html) as server:
        speech = tts(server.url)
        engines = Engines(
            vad=EnergyVad(),
            stt=FakeSpeechToText(),
            llm=FakeLanguageModel(reply="Hello there."),
            tts=speech,
        )
        try:
            async with (
                serve(Config(api_keys=(KEY,), vad="energy"), engines) as b,
                raw_session(b) as session,
            ):
                await session.send({"type": "response.create"})
                done, events = await session.recv_until("response.done")
                assert done["response"]["status"] == "failed", done
                error = done["response"]["status_details"]["error"]
                assert error["code"] == "engine_bad_response" and "text/html" in error["message"]
                assert not deltas(events, "response.output_audio.delta")

                server.handler = answer_audio
                await session.send({"type": "response.create"})
                done, events = await session.recv_until("response.done")
                assert done["response"]["status"] == "completed", done
                audio = b"".join(
                    base64.b64decode(d) for d in deltas(events, "response.output_audio.delta")
                )
                assert len(audio) >= 24000 * 2  # one second per clause
        finally:
            await speech.aclose()


async def test_the_registry_gives_every_remote_engine_the_idle_timeout() -> None:
    config = replace(
        remote_config("http://127.0.0.1:9/v1", max_output_tokens=321),
        stt="openai-compatible",
        stt_base_url="http://127.0.0.1:9/v1",
        tts="openai-compatible",
        tts_base_url="http://127.0.0.1:9/v1",
        engine_idle_timeout=1.25,
    )
    engines = build_engines(config)
    try:
        for engine in (engines.stt, engines.llm, engines.tts):
            assert isinstance(
                engine, OpenAICompatibleSTT | OpenAICompatibleLLM | OpenAICompatibleTTS
            )
            assert engine.http.idle_timeout == 1.25
        assert isinstance(engines.llm, OpenAICompatibleLLM)
        assert engines.llm.max_output_tokens == 321
    finally:
        await close_engines(engines)
