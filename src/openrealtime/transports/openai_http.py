"""The OpenAI HTTP endpoints served from this server's own engines (design.md decision 9).

``POST /v1/audio/transcriptions`` (STT), ``POST /v1/chat/completions`` (LLM) and
``POST /v1/audio/speech`` (TTS), in the shapes the official ``openai`` SDK sends and parses, so
one openrealtime can serve another's ``*_openai_compat`` engines and any OpenAI client can use
the engines directly. Auth is the same as ``/v1/models``; bad input gets a 400 with the OpenAI
error body; an engine failure gets a 502 (504 on a timeout) before the body starts, and after it
an SSE error event (chat, transcription) or an aborted body (speech).

This shell only translates: requests to engine calls, engine events to the wire.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, assert_never

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler, resample
from openrealtime.audio.wav import read_wav, wav_stream_header
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
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError
from openrealtime.protocol.codec import JsonInputError, loads
from openrealtime.protocol.errors import rest_error_body
from openrealtime.transports.rest import http_auth_error

__all__ = ["register_openai_http_routes"]

_log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""Largest audio file ``/v1/audio/transcriptions`` accepts (OpenAI's limit, 25 MB)."""

MAX_SPEECH_INPUT = 4096
"""Longest ``input`` ``/v1/audio/speech`` accepts, in characters (OpenAI's limit)."""

_T = TypeVar("_T")
_ALNUM = string.ascii_letters + string.digits
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _Invalid(Exception):
    """A request that fails validation: becomes a 400 ``invalid_request_error``."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return rest_error_body(message, type=type_, param=param, code=code)


def _bad_request(exc: _Invalid) -> JSONResponse:
    body = _error_body(exc.message, "invalid_request_error", exc.param, exc.code)
    return JSONResponse(body, status_code=400)


def _engine_failed(exc: BackendError) -> JSONResponse:
    status = 504 if exc.code == "engine_timeout" else 502
    return JSONResponse(_error_body(exc.message, "server_error", None, exc.code), status)


def _sse(data: Mapping[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close: Callable[[], Any] | None = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


async def _prime(iterator: AsyncIterator[_T]) -> AsyncIterator[_T]:
    """Pull the first item now (so an early failure can still be an HTTP status), then all."""
    try:
        head = [await anext(iterator)]
    except StopAsyncIteration:
        head = []
    except BaseException:
        await _aclose(iterator)
        raise

    async def chained() -> AsyncIterator[_T]:
        try:
            for item in head:
                yield item
            async for item in iterator:
                yield item
        finally:
            await _aclose(iterator)

    return chained()


# --------------------------------------------------------------------------- parsing


def _field(body: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise _Invalid(f"Invalid type for '{name}'.", name, "invalid_type")
    if not isinstance(value, kinds):
        raise _Invalid(f"Invalid type for '{name}'.", name, "invalid_type")
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = loads(await request.body())
    except JsonInputError as exc:
        raise _Invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            f"aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.) "
            f"({exc})",
            None,
            "invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise _Invalid("The request body must be a JSON object.", None, "invalid_type")
    return body


def decode_audio(data: bytes, filename: str, content_type: str) -> tuple[bytes, int]:
    """Decode an uploaded file to PCM16 mono and its rate: WAV (PCM), or raw PCM16.

    Raw PCM16 mono is taken from ``audio/pcm`` / ``audio/L16`` content types (rate from a
    ``rate=`` parameter, else 24 kHz) and from ``.pcm``/``.raw`` file names.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            return read_wav(data)
        except ValueError as exc:
            raise _Invalid(f"{str(exc).capitalize()}.", "file") from None
    kind, *params = [p.strip() for p in content_type.lower().split(";")]
    if kind in ("audio/pcm", "audio/l16") or filename.lower().endswith((".pcm", ".raw")):
        rate = SESSION_RATE
        for param in params:
            if param.startswith("rate="):
                try:
                    rate = int(param[5:])
                except ValueError:
                    raise _Invalid(f"Invalid rate in {content_type!r}.", "file") from None
        return data[: len(data) - len(data) % 2], rate
    raise _Invalid(
        "Unsupported file format; this server accepts WAV (PCM) and raw PCM16 "
        "(Content-Type audio/pcm;rate=N).",
        "file",
        "unsupported_format",
    )


def _text_content(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                raise _Invalid("Only text content parts are supported.", where)
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise _Invalid(f"Invalid type for '{where}'.", where, "invalid_type")


def _chat_message(raw: Any, i: int) -> ChatMessage:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _Invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    role = raw.get("role")
    content = _text_content(raw.get("content"), f"{where}.content")
    if role in ("system", "developer"):
        return ChatMessage("system", content)
    if role == "user":
        return ChatMessage("user", content)
    if role == "tool":
        call_id = raw.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _Invalid(f"Missing '{where}.tool_call_id'.", f"{where}.tool_call_id")
        return ChatMessage("tool", content, tool_call_id=call_id)
    if role == "assistant":
        calls: list[ChatToolCall] = []
        for j, call in enumerate(raw.get("tool_calls") or []):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _Invalid("Invalid tool call.", f"{where}.tool_calls[{j}]")
            arguments = function.get("arguments", "")
            calls.append(
                ChatToolCall(
                    str(call.get("id", "")),
                    function["name"],
                    arguments if isinstance(arguments, str) else json.dumps(arguments),
                )
            )
        return ChatMessage("assistant", content, tool_calls=tuple(calls))
    raise _Invalid(f"Invalid value for '{where}.role': {role!r}.", f"{where}.role")


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _Invalid("Invalid type for 'tools'.", "tools", "invalid_type")
    tools: list[ToolSpec] = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _Invalid(f"Missing 'tools[{i}].function.name'.", f"tools[{i}].function")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            where = f"tools[{i}].function.parameters"
            raise _Invalid(
                f"Invalid type for '{where}': expected an object.", where, "invalid_type"
            )
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            where = f"tools[{i}].function.description"
            raise _Invalid(f"Invalid type for '{where}': expected a string.", where, "invalid_type")
        tools.append(ToolSpec(function["name"], description or "", parameters))
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> str:
    if raw is None:
        return "auto" if tools else "none"
    if raw in ("auto", "none", "required"):
        return str(raw)
    function = raw.get("function") if isinstance(raw, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise _Invalid("Invalid value for 'tool_choice'.", "tool_choice")
    if all(tool.name != name for tool in tools):
        raise _Invalid(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice")
    return name


def _generation_request(body: Mapping[str, Any]) -> GenerationRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("Missing required parameter: 'messages'.", "messages", "missing_required")
    n = _field(body, "n", int, 1)
    if n != 1:
        raise _Invalid("Only n=1 is supported.", "n")
    tools = _tools(body.get("tools"))
    limit = _field(body, "max_completion_tokens", int, None)
    limit = _field(body, "max_tokens", int, None) if limit is None else limit
    if limit is not None and limit < 1:
        raise _Invalid("'max_tokens' must be at least 1.", "max_tokens")
    return GenerationRequest(
        messages=tuple(_chat_message(m, i) for i, m in enumerate(messages)),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        max_output_tokens=limit,
    )


# --------------------------------------------------------------------------- chat


def _usage(done: GenerationDone) -> dict[str, Any]:
    return {
        "prompt_tokens": done.input_tokens,
        "completion_tokens": done.output_tokens,
        "total_tokens": done.input_tokens + done.output_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


class _ChatShaper:
    """Turns generation events into chat-completion chunks (and a whole completion)."""

    def __init__(self, model: str) -> None:
        self.base = {
            "id": _random_id("chatcmpl-", 29),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.done: GenerationDone | None = None

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self.base, "choices": [choice]}

    def feed(self, event: GenerationEvent) -> dict[str, Any] | None:
        """Record ``event``; return its stream chunk (``None`` for the final event)."""
        match event:
            case TextChunk():
                self.text.append(event.text)
                return self.chunk({"content": event.text})
            case ToolCallStart():
                call_id = event.call_id or _random_id("call_")
                function = {"name": event.name, "arguments": ""}
                self.calls[event.index] = {"id": call_id, "type": "function", "function": function}
                piece = {"index": event.index, "id": call_id, "type": "function"}
                return self.chunk({"tool_calls": [piece | {"function": dict(function)}]})
            case ToolCallArguments():
                call = self.calls.get(event.index)
                if call is not None:
                    call["function"]["arguments"] += event.delta
                piece = {"index": event.index, "function": {"arguments": event.delta}}
                return self.chunk({"tool_calls": [piece]})
            case GenerationDone():
                self.done = event
                return None
            case _:
                assert_never(event)

    def completion(self) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        if self.done is None:
            raise BackendError("the LLM engine ended without finishing its answer")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) if self.text or not self.calls else None,
            "refusal": None,
        }
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": self.done.finish_reason,
            "logprobs": None,
        }
        return {
            **self.base,
            "object": "chat.completion",
            "choices": [choice],
            "usage": _usage(self.done),
        }


async def _chat_completions(request: Request, engines: Engines) -> Response:
    body = await _json_body(request)
    generation = _generation_request(body)
    model = _field(body, "model", str, "openrealtime")
    stream = _field(body, "stream", bool, False)
    options = _field(body, "stream_options", dict, {})
    include_usage = bool(options.get("include_usage"))
    shaper = _ChatShaper(model)
    try:
        events = await _prime(engines.llm.generate(generation))
        if not stream:
            async for event in events:
                shaper.feed(event)
            return JSONResponse(shaper.completion())
    except BackendError as exc:
        return _engine_failed(exc)

    async def chunks() -> AsyncIterator[bytes]:
        yield _sse(shaper.chunk({"role": "assistant", "content": "", "refusal": None}))
        try:
            async for event in events:
                chunk = shaper.feed(event)
                if chunk is not None:
                    yield _sse(chunk)
            if shaper.done is None:
                raise BackendError("the LLM engine ended without finishing its answer")
        except BackendError as exc:
            _log.warning("chat completion failed mid-stream: %s", exc.message)
            yield _sse(_error_body(exc.message, "server_error", None, exc.code))
            return
        yield _sse(shaper.chunk({}, shaper.done.finish_reason))
        if include_usage:
            yield _sse({**shaper.base, "choices": [], "usage": _usage(shaper.done)})
        yield _sse("[DONE]")

    return StreamingResponse(chunks(), media_type="text/event-stream", headers=_SSE_HEADERS)


# --------------------------------------------------------------------------- transcription


def _form_text(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, str):
        return value or None
    raise _Invalid(f"Invalid type for '{name}'.", name, "invalid_type")


def _transcription_body(text: str, fmt: str, seconds: float, language: str | None) -> Response:
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    segment: dict[str, Any] = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": seconds,
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": 0.0,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.0,
    }
    verbose = {
        "task": "transcribe",
        "language": language or "english",
        "duration": seconds,
        "text": text,
        "segments": [segment],
        "usage": usage,
    }
    return JSONResponse(verbose)


async def _transcriptions(request: Request, engines: Engines) -> Response:
    if int(request.headers.get("content-length") or 0) > MAX_UPLOAD_BYTES + 65536:
        raise _Invalid(f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded.", "file")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except (HTTPException, MultiPartException) as exc:  # a malformed multipart body
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise _Invalid(f"Could not parse the multipart form ({detail}).") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _Invalid("Missing required parameter: 'file'.", "file", "missing_required")
        data = await upload.read()
        if len(data) > MAX_UPLOAD_BYTES:
            raise _Invalid(f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded.", "file")
        pcm, rate = decode_audio(data, upload.filename or "", upload.content_type or "")
        fmt = _form_text(form, "response_format") or "json"
        if fmt not in ("json", "text", "verbose_json"):
            raise _Invalid(
                f"Unsupported response_format {fmt!r}; use json, text or verbose_json.",
                "response_format",
            )
        stream = (_form_text(form, "stream") or "false").lower() == "true"
        language = _form_text(form, "language")
        stt = engines.stt
        transcription = TranscriptionRequest(
            pcm16=resample(pcm, rate, stt.sample_rate),
            sample_rate=stt.sample_rate,
            model=_form_text(form, "model"),
            language=language,
            prompt=_form_text(form, "prompt"),
        )
    finally:
        await form.close()
    seconds = len(pcm) / 2 / rate if rate else 0.0
    try:
        events = await _prime(stt.transcribe(transcription))
        if not stream:
            final: TranscriptFinal | None = None
            async for event in events:
                final = event if isinstance(event, TranscriptFinal) else final
            if final is None:
                raise BackendError("the STT engine returned no final transcript")
            return _transcription_body(final.text, fmt, seconds, language)
    except BackendError as exc:
        return _engine_failed(exc)

    async def sse() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                if isinstance(event, TranscriptDelta):
                    yield _sse({"type": "transcript.text.delta", "delta": event.text})
                else:
                    yield _sse({"type": "transcript.text.done", "text": event.text})
                    return
            raise BackendError("the STT engine returned no final transcript")
        except BackendError as exc:
            _log.warning("transcription failed mid-stream: %s", exc.message)
            yield _sse(_error_body(exc.message, "server_error", None, exc.code))

    return StreamingResponse(sse(), media_type="text/event-stream", headers=_SSE_HEADERS)


# --------------------------------------------------------------------------- speech


async def _speech(request: Request, engines: Engines) -> Response:
    body = await _json_body(request)
    text = _field(body, "input", str, None)
    if not text or not text.strip():
        raise _Invalid("Missing required parameter: 'input'.", "input", "missing_required")
    if len(text) > MAX_SPEECH_INPUT:
        raise _Invalid(
            f"'input' is longer than {MAX_SPEECH_INPUT} characters.", "input", "string_above_max"
        )
    voice = body.get("voice") or "alloy"
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(voice, str):
        raise _Invalid("Invalid type for 'voice'.", "voice", "invalid_type")
    speed = float(_field(body, "speed", (int, float), 1.0))
    if not 0.25 <= speed <= 4.0:
        raise _Invalid("'speed' must be between 0.25 and 4.0.", "speed")
    fmt = _field(body, "response_format", str, "pcm")
    if fmt not in ("pcm", "wav"):
        raise _Invalid(
            f"Unsupported response_format {fmt!r}; this server speaks pcm and wav.",
            "response_format",
        )
    if _field(body, "stream_format", str, "audio") != "audio":
        raise _Invalid("Only stream_format 'audio' is supported.", "stream_format")
    tts = engines.tts
    try:
        chunks = await _prime(tts.synthesize(SynthesisRequest(text, voice, speed)))
    except BackendError as exc:
        return _engine_failed(exc)

    async def audio() -> AsyncIterator[bytes]:
        if fmt == "wav":
            yield wav_stream_header(SESSION_RATE)
        resampler = StreamResampler(tts.sample_rate, SESSION_RATE)
        try:
            async for pcm in chunks:
                out = resampler.process(pcm)
                if out:
                    yield out
        except BackendError as exc:
            _log.warning("speech failed mid-stream, aborting the body: %s", exc.message)
            raise
        tail = resampler.flush()
        if tail:
            yield tail

    media = "audio/wav" if fmt == "wav" else f"audio/pcm;rate={SESSION_RATE}"
    return StreamingResponse(audio(), media_type=media)


# --------------------------------------------------------------------------- routes

_Handler = Callable[[Request, Engines], Any]


def register_openai_http_routes(app: FastAPI) -> None:
    """Add ``/v1/audio/transcriptions``, ``/v1/audio/speech`` and ``/v1/chat/completions``.

    Call once from ``create_app``; the routes use ``app.state.config`` for auth and the
    engines on ``app.state.services``.
    """

    def route(handler: _Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            denied = http_auth_error(request.app.state.config, request)
            if denied is not None:
                return denied
            try:
                response: Response = await handler(request, request.app.state.services.engines)
            except _Invalid as exc:
                return _bad_request(exc)
            except ClientDisconnect:  # the caller left mid-upload: nobody reads an answer
                _log.info("%s: the client left before its request ended", request.url.path)
                return Response(status_code=400)
            return response

        endpoint.__doc__ = handler.__doc__
        return endpoint

    for path, handler in (
        ("/v1/audio/transcriptions", _transcriptions),
        ("/v1/audio/speech", _speech),
        ("/v1/chat/completions", _chat_completions),
    ):
        app.add_api_route(path, route(handler), methods=["POST"], response_model=None)
