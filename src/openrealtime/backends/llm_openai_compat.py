"""LLM engine for any OpenAI-compatible ``/chat/completions`` server (design.md decision 9).

Reaches vLLM, SGLang, Ollama, llama.cpp server, LM Studio, another openrealtime, or OpenAI. The
request streams (``stream: true`` with ``stream_options.include_usage``); content deltas become
:class:`TextChunk`, ``tool_calls`` deltas (parallel calls too) become :class:`ToolCallStart` and
:class:`ToolCallArguments`, and the finish reason with the usage chunk becomes
:class:`GenerationDone`. A stream that ends with neither ``[DONE]`` nor a finish reason was cut
mid-answer and raises ``engine_stream_incomplete``.

Bounds, so a server cannot hold a response forever: a request without ``max_output_tokens``
(a Realtime response's ``"inf"``) is sent with ``max_tokens`` set to the engine's
``max_output_tokens`` (``Config.max_output_tokens``), and the cap is also enforced here: the
piece past it (text or tool arguments; one per chunk, as servers stream tokens) is not passed
on, the stream is closed and the answer ends with finish reason ``length``, which a Realtime
response reports as ``incomplete`` / ``max_output_tokens``. A server that honours
``max_tokens`` ends first, with its own usage. SSE comments and whitespace are not content: a
stream without an event for ``idle_timeout`` seconds fails with ``engine_timeout``.

A server that ignores ``stream: true`` and answers one JSON completion is read as such (its
message becomes the same events, at once). Any other type of body (``text/html`` from a proxy,
``text/plain``) is refused with ``engine_bad_response`` and a short excerpt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from openrealtime.backends._http import (
    MAX_JSON_BODY,
    OpenAICompatClient,
    StreamedBody,
    excerpt,
    incomplete,
    iter_sse,
    parse_json,
)
from openrealtime.backends.base import (
    ChatMessage,
    GenerationDone,
    GenerationEvent,
    GenerationRequest,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
)
from openrealtime.backends.errors import BackendError

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "OpenAICompatibleLLM",
    "chat_messages",
    "chat_tool_choice",
    "chat_tools",
]

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""The cap for requests that set none (``Config.max_output_tokens``'s default)."""

FinishReason = Literal["stop", "length", "tool_calls"]
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",
}


class OpenAICompatibleLLM:
    """Streams chat completions from an OpenAI-compatible server.

    Args:
        base_url: the API root, e.g. ``http://localhost:11434/v1``.
        model: the model name the server knows.
        api_key: Bearer key, if the server wants one.
        timeout: seconds to wait for each read (the first token included).
        connect_timeout: seconds to wait for the connection; defaults to ``timeout``.
        idle_timeout: seconds the stream may go without an event (``Config.engine_idle_timeout``).
        max_output_tokens: the cap for requests that set none (``Config.max_output_tokens``);
            ``None`` sends none and enforces none.
        extra_body: more request fields (e.g. ``{"temperature": 0.7}``), sent as given.
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float | None = 5.0,
        idle_timeout: float = 30.0,
        max_output_tokens: int | None = DEFAULT_MAX_OUTPUT_TOKENS,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.max_output_tokens = max_output_tokens
        self.extra_body = dict(extra_body or {})
        self.http = OpenAICompatClient(
            "LLM",
            base_url,
            api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.http.aclose()

    def payload(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body for ``request`` (``/v1/chat/completions``, streaming)."""
        body: dict[str, Any] = {
            **self.extra_body,
            "model": self.model,
            "messages": chat_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = chat_tools(request.tools)
            body["tool_choice"] = chat_tool_choice(request.tool_choice, request.tools)
        limit = self.limit(request)
        if limit is not None:
            body["max_tokens"] = limit
        return body

    def limit(self, request: GenerationRequest) -> int | None:
        """The output cap of ``request``: its own, else the engine's."""
        if request.max_output_tokens is not None:
            return request.max_output_tokens
        return self.max_output_tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Yield text and tool-call pieces as the server streams them, then the usage.

        Stops at the output cap (see the module docstring) with finish reason ``length``.
        """
        body_json = self.payload(request)
        received = [0]
        try:
            async with aclosing(self._generate(request, body_json, received)) as events:
                async for event in events:
                    yield event
        except BackendError as error:
            # llama-cpp-python's server cannot stream tool_choice "auto": it answers 200, then
            # breaks the event stream before its first chunk. Asked again without streaming it
            # answers (docs/engines.md); any server that does this gets the same one retry.
            if received[0] or error.code != "engine_stream_incomplete":
                raise
            whole = {k: v for k, v in body_json.items() if k != "stream_options"}
            # on a new connection: the broken one may still be in the pool, about to be closed
            retry = self._generate(request, {**whole, "stream": False}, [0], new_connection=True)
            async with aclosing(retry) as again:
                async for event in again:
                    yield event

    async def _generate(
        self,
        request: GenerationRequest,
        body_json: dict[str, Any],
        received: list[int],
        *,
        new_connection: bool = False,
    ) -> AsyncGenerator[GenerationEvent, None]:
        """One request; ``received`` counts the stream's chunks as they come."""
        state = _StreamState()
        limit = self.limit(request)
        stream = self.http.stream(
            "chat/completions", json_body=body_json, new_connection=new_connection
        )
        async with stream as body:
            kind = body.content_type
            if kind == "application/json":
                for event in await self._whole_completion(body, state):
                    yield event
            elif kind and kind != "text/event-stream":
                shown = await body.excerpt()
                message = f"answered {kind} instead of an event stream: {shown}"
                raise self.http.error(message, "engine_bad_response")
            else:
                async for sse in iter_sse(body):
                    if sse.data.strip() == "[DONE]":
                        state.saw_done = True
                        break
                    chunk = parse_json(self.http, sse.data, "a chat completion chunk")
                    received[0] += 1
                    for event in state.feed(self.http, chunk):
                        if isinstance(event, TextChunk | ToolCallArguments):
                            if limit is not None and state.emitted >= limit:
                                state.cut = True
                                break
                            state.emitted += 1
                        yield event
                    if state.cut:
                        break  # leaving the block closes the stream
        if state.cut:
            yield state.done()
            return
        if state.finish is None and not state.saw_done:
            raise incomplete(self.http, "the chat completion stream")
        for event in state.flush():
            yield event
        yield state.done()

    async def _whole_completion(
        self, body: StreamedBody, state: _StreamState
    ) -> list[GenerationEvent]:
        """The events of a non-streamed completion (a server that ignored ``stream``)."""
        completion = parse_json(self.http, await body.read(MAX_JSON_BODY), "the chat completion")
        if not isinstance(completion, dict):
            shown = excerpt(self.http.scrub(str(completion)), 80)
            raise self.http.error(f"unexpected completion {shown!r}", "engine_bad_response")
        chunk: dict[str, Any] = {"usage": completion.get("usage"), "error": completion.get("error")}
        choices = completion.get("choices") or []
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            delta = message if isinstance(message, dict) else {}
            chunk["choices"] = [{"delta": delta, "finish_reason": choices[0].get("finish_reason")}]
        events = state.feed(self.http, chunk)
        state.saw_done = True
        return events


@dataclass
class _ToolCall:
    index: int
    call_id: str | None = None
    name: str = ""
    pending: list[str] = field(default_factory=list)
    started: bool = False


@dataclass
class _StreamState:
    """Folds chat-completion chunks into generation events."""

    calls: dict[int, _ToolCall] = field(default_factory=dict)
    last_upstream: int | None = None
    finish: str | None = None
    usage: dict[str, Any] | None = None
    chunks: int = 0
    saw_done: bool = False
    emitted: int = 0
    """Text and tool-argument pieces passed on (counted against the output cap)."""
    cut: bool = False
    """The output cap stopped the stream."""

    def feed(self, http: OpenAICompatClient, chunk: Any) -> list[GenerationEvent]:
        if not isinstance(chunk, dict):
            shown = excerpt(http.scrub(str(chunk)), 80)
            raise http.error(f"unexpected chunk {shown!r}", "engine_bad_response")
        error = chunk.get("error")
        if error:  # vLLM, llama.cpp and OpenAI report mid-stream failures this way
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise http.error(f"failed mid-stream: {message}", "engine_error")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        events: list[GenerationEvent] = []
        choices = chunk.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else None
        if choice is None:
            return events
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.chunks += 1
            events.append(TextChunk(content))
        for piece in delta.get("tool_calls") or []:
            if isinstance(piece, dict):
                self.chunks += 1
                events.extend(self._tool_piece(piece))
        if choice.get("finish_reason"):
            self.finish = str(choice["finish_reason"])
        return events

    def _tool_piece(self, piece: dict[str, Any]) -> list[GenerationEvent]:
        upstream = piece.get("index")
        if not isinstance(upstream, int):  # servers that omit the index: a new id is a new call
            new = piece.get("id") and all(c.call_id != piece["id"] for c in self.calls.values())
            upstream = len(self.calls) if new or self.last_upstream is None else self.last_upstream
        self.last_upstream = upstream
        call = self.calls.get(upstream)
        if call is None:
            call = self.calls[upstream] = _ToolCall(index=len(self.calls))
        function = piece.get("function") or {}
        if piece.get("id") and call.call_id is None:
            call.call_id = str(piece["id"])
        if function.get("name") and not call.name:
            call.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the arguments decoded
            arguments = json.dumps(arguments)
        if isinstance(arguments, str) and arguments:
            call.pending.append(arguments)
        return self._release(call)

    def _release(self, call: _ToolCall) -> list[GenerationEvent]:
        events: list[GenerationEvent] = []
        if not call.started and call.name:
            call.started = True
            events.append(ToolCallStart(call.index, call.name, call.call_id))
        if call.started and call.pending:
            events.append(ToolCallArguments(call.index, "".join(call.pending)))
            call.pending.clear()
        return events

    def flush(self) -> list[GenerationEvent]:
        """Events still held back (arguments of a call whose name never came are dropped)."""
        events: list[GenerationEvent] = []
        for call in self.calls.values():
            events.extend(self._release(call))
        return events

    def done(self) -> GenerationDone:
        reason = _FINISH.get(self.finish or "stop", "stop")
        if self.cut:
            reason = "length"
        elif any(call.started for call in self.calls.values()):
            reason = "tool_calls"  # some servers say "stop" after tool calls
        usage = self.usage or {}
        details = usage.get("prompt_tokens_details") or {}
        return GenerationDone(
            reason,
            input_tokens=_int(usage.get("prompt_tokens")),
            output_tokens=self.emitted
            if self.cut
            else _int(usage.get("completion_tokens"), default=self.chunks),
            cached_tokens=_int(details.get("cached_tokens") if isinstance(details, dict) else 0),
        )


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Our :class:`ChatMessage` list in the ``/v1/chat/completions`` message format."""
    out: list[dict[str, Any]] = []
    for message in messages:
        # content stays a string even beside tool calls: llama-cpp-python's server refuses
        # null (HTTP 500) and its templates read the field, so it cannot be left out either
        # (docs/engines.md)
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.role == "assistant" and message.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_id or ""
        out.append(entry)
    return out


def chat_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Our :class:`ToolSpec` list as chat-completions ``tools``."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: ToolChoice, tools: Sequence[ToolSpec] = ()) -> str | dict[str, Any]:
    """``auto``/``none``/``required`` as is; a function name as ``{type: function, ...}``.

    ``required`` with a single tool is sent as that tool by name: the same thing, and the form
    every server knows (llama-cpp-python's server has no ``required``: HTTP 500).
    """
    if choice == "required" and len(tools) == 1:
        choice = tools[0].name
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}
