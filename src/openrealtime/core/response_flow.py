"""Responses of one session: created, generated, cancelled, done (spec §4.3, §5.2-5.9).

:class:`Responses` carries a response from ``response.create`` (or a turn that ended) to
``response.done``: it renders the model's context and emits ``Generate`` once every transcript
the context needs is known, routes the engine's output through the
:class:`~openrealtime.core.output.ResponseWriter`, ends responses (completed, incomplete,
cancelled, failed), keeps the token count of ``rate_limits.updated`` and the latency records of
answered turns. What it needs of the rest of the session (the wall time, the config, turn-taking's
idle timer and queued answers) it asks a :class:`ResponseHost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, Protocol

from openrealtime.chat import ChatMessage, GenerationRequest, ToolChoice, ToolSpec
from openrealtime.core import backend_events as be
from openrealtime.core.commands import CancelResponse, Command, Generate
from openrealtime.core.conversation import Conversation, Entry, entry_message
from openrealtime.core.ids import IdFactory
from openrealtime.core.input_buffer import BYTES_PER_MS
from openrealtime.core.input_processing import InputProcessor
from openrealtime.core.languages import reply_language
from openrealtime.core.latency import TurnLatency
from openrealtime.core.output import ResponseWriter
from openrealtime.core.playback import OutputAudioBuffer
from openrealtime.core.responses import ResponseRun, Usage
from openrealtime.core.state import ResponseState
from openrealtime.protocol import client_events as ce
from openrealtime.protocol import errors
from openrealtime.protocol import server_events as se
from openrealtime.protocol.base import to_wire
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.session_config import RealtimeSessionConfig, SessionConfig

Emit = Callable[..., None]


class ResponseHost(Protocol):
    """What responses ask of the rest of the session (:class:`RealtimeSession`)."""

    @property
    def now_ms(self) -> int:
        """The wall time the session was last told (unix ms)."""
        ...

    @property
    def config(self) -> SessionConfig:
        """The session's current configuration."""
        ...

    def response_created(self) -> None:
        """Any response was created: the session is not idle (turn-taking's idle timer)."""
        ...

    def answer_done(self, response_id: str, *, audio_ms: int, played_out: bool) -> None:
        """The default response is done: arm the idle timer, answer a queued turn."""
        ...


class Responses:
    """The responses of one session; the session calls the public methods.

    Args:
        host: the session's wall time, config and turn-taking.
        ids: the session's id factory.
        conversation: the session's conversation (context in, output items out).
        conversation_id: the default conversation's id.
        session_id: the session's id (the engine's cache key of the default conversation).
        playback: the output audio buffer when the transport plays audio (WebRTC), else None.
        processor: the input audio processor (it learns the audio the client will play).
        emit: the session's event emitter; command: appends a command to its output.
    """

    def __init__(
        self,
        host: ResponseHost,
        *,
        ids: IdFactory,
        conversation: Conversation,
        conversation_id: str,
        session_id: str,
        playback: OutputAudioBuffer | None,
        processor: InputProcessor | None,
        emit: Emit,
        command: Callable[[Command], None],
    ) -> None:
        self._host = host
        self.ids = ids
        self.conversation = conversation
        self.conversation_id = conversation_id
        self.session_id = session_id
        self._playback = playback
        self._processor = processor
        self._emit = emit
        self._command = command
        self._writer = ResponseWriter(ids, conversation, emit)
        if playback is not None:
            self._writer.play = playback.play
        self._runs: dict[str, ResponseRun] = {}
        self._default: str | None = None
        """The response of the default conversation in progress, if any."""
        self._tokens_used = 0
        self._latency: dict[str, TurnLatency] = {}
        """Latency records of answered turns, by response id."""

    @property
    def responding(self) -> bool:
        """Whether a response of the default conversation is in progress."""
        return self._default is not None

    @property
    def audio_produced(self) -> bool:
        """Whether any assistant audio was sent (the voice is then fixed, spec §3.1)."""
        return self._writer.audio_produced

    # ------------------------------------------------------------------ creating

    def create(self, params: ce.ResponseCreateParams) -> str:
        """``response.create`` (or an answer): ``response.created``, then ``Generate``."""
        in_conversation = params.conversation != "none"
        if in_conversation and self._default is not None:
            raise errors.active_response(self._default)
        entries, waiting = self._response_context(params)
        head = self._instructions(params)
        messages = head + [m for e in entries if (m := entry_message(e)) is not None]
        response_id = self.ids.new("resp")
        generate = self._generate(params, response_id, messages)
        max_tokens = params.max_output_tokens or self._realtime_config().max_output_tokens
        run = ResponseRun(
            id=response_id,
            conversation_id=self.conversation_id if in_conversation else None,
            modality=generate.modality,
            voice=generate.voice,
            output_format=self._output_format(params),
            max_output_tokens=max_tokens,
            metadata=params.metadata,
            waiting_for=waiting,
        )
        # The context is rendered again when generation starts, once transcripts are known:
        # the whole conversation as it is then, or the same explicit input entries.
        run.pending_context = (head, None if in_conversation and params.input is None else entries)
        run.pending_generate = generate
        self._runs[run.id] = run
        if in_conversation:
            self._default = run.id
        self._host.response_created()
        self._emit(se.ResponseCreated, response=run.payload())
        if not run.waiting_for:
            self._start_generation(run)
        return run.id

    def _output_format(self, params: ce.ResponseCreateParams) -> dict[str, Any]:
        """A response's ``audio.output.format`` (its own, else the session's), spec-shaped."""
        out = params.audio.output if params.audio is not None else None
        if out is not None and out.format is not None:
            return to_wire(out.format)
        return to_wire(self._realtime_config().audio.output.format)

    def _realtime_config(self) -> RealtimeSessionConfig:
        config = self._host.config
        assert isinstance(config, RealtimeSessionConfig)
        return config

    def _instructions(self, params: ce.ResponseCreateParams) -> list[ChatMessage]:
        config = self._realtime_config()
        instructions = (
            params.instructions if params.instructions is not None else config.instructions
        )
        return [ChatMessage("system", instructions)] if instructions else []

    def _generate(
        self, params: ce.ResponseCreateParams, response_id: str, messages: list[ChatMessage]
    ) -> Generate:
        """The engine request of a response created with ``params`` (raises on bad tool_choice)."""
        config = self._realtime_config()
        modality = (params.output_modalities or config.output_modalities)[0]
        out_audio = params.audio.output if params.audio and params.audio.output else None
        voice_value = (
            out_audio.voice if out_audio and out_audio.voice else config.audio.output.voice
        )
        voice = voice_value if isinstance(voice_value, str) else voice_value.id
        tools = params.tools if params.tools is not None else config.tools
        tool_choice = params.tool_choice if params.tool_choice is not None else config.tool_choice
        choice: ToolChoice = tool_choice if isinstance(tool_choice, str) else tool_choice.name
        if not isinstance(tool_choice, str) and not any(t.name == tool_choice.name for t in tools):
            raise ProtocolError(
                "invalid_value",
                f"Tool choice '{tool_choice.name}' does not match any of the provided tools.",
                param="response.tool_choice"
                if params.tool_choice is not None
                else "session.tool_choice",
            )
        max_tokens = params.max_output_tokens or config.max_output_tokens
        in_conversation = params.conversation != "none"
        request = GenerationRequest(
            messages=tuple(messages),
            tools=tuple(ToolSpec(t.name, t.description, t.parameters) for t in tools),
            tool_choice=choice,
            max_output_tokens=None if max_tokens == "inf" else max_tokens,
            session_key=self.session_id if in_conversation and params.input is None else None,
        )
        return Generate(
            response_id=response_id,
            request=request,
            modality=modality,
            voice=voice,
            speed=config.audio.output.speed,
        )

    def _response_context(self, params: ce.ResponseCreateParams) -> tuple[list[Entry], set[str]]:
        """The context entries of a response and the user items still being transcribed."""
        if params.input is None:
            entries = self.conversation.entries()
        else:
            entries = []
            for index, ref in enumerate(params.input):
                if isinstance(ref, ce.ItemReference):
                    found = self.conversation.get(ref.id)
                    if found is None:
                        raise ProtocolError(
                            "invalid_value",
                            f"Item with id '{ref.id}' not found in the conversation.",
                            param=f"response.input[{index}].id",
                        )
                    entries.append(found)
                else:
                    entries.append(Entry(item=ref))
        waiting = {e.item.id for e in entries if e.transcription_pending and e.item.id}
        return entries, waiting

    def input_ready(self, item_id: str) -> None:
        """The transcription of ``item_id`` is over: start the responses waiting for it."""
        for run in list(self._runs.values()):
            if item_id in run.waiting_for:
                run.waiting_for.discard(item_id)
                if not run.waiting_for:
                    self._start_generation(run)

    def _start_generation(self, run: ResponseRun) -> None:
        if run.state is not run.state.WAITING_INPUT:
            return
        run.move("input_ready")
        command, context = run.pending_generate, run.pending_context
        if command is not None and context is not None:
            # Called once nothing is awaited: rebuild the context with every transcript known.
            head, entries = context
            if entries is None:
                entries = self.conversation.entries()
            self._command(self._in_context(command, head, entries))
        run.pending_generate = None
        run.pending_context = None

    # ------------------------------------------------------------------ turn-taking's requests

    def answer(self, latency: TurnLatency | None) -> None:
        """Create the default response that answers the turn just over (spec §5.2)."""
        response_id = self.create(ce.ResponseCreateParams())
        if latency is not None:
            self._latency[response_id] = latency

    def interrupt(self) -> None:
        """Barge-in: cancel the default response (``turn_detected``) and cut off its audio."""
        if self._default is not None:
            self._cancel(self._runs[self._default], "turn_detected")
        if self._playback is not None:  # barge-in: cut what is playing (spec §5.7)
            self._playback.clear()
        elif self._processor is not None:
            self._processor.drop_far_end()  # the client stops its playback on this event

    def speculation(self) -> Generate | None:
        """The ``Generate`` a turn would get if it ended now (None if it would fail)."""
        params = ce.ResponseCreateParams()
        head = self._instructions(params)
        try:
            generate = self._generate(params, "", [])
        except ProtocolError:
            return None
        return self._in_context(generate, head, self.conversation.entries())

    def _in_context(
        self, command: Generate, head: list[ChatMessage], entries: list[Entry]
    ) -> Generate:
        """``command`` with its context and the language to answer in (``core.languages``).

        The context: the instructions, then the entries as chat messages.
        """
        body = [m for e in entries if (m := entry_message(e)) is not None]
        command = command.with_messages(tuple(head + body))
        return replace(command, language=self._reply_language(entries))

    def _reply_language(self, entries: list[Entry]) -> str | None:
        """The session's transcription language if set, else the one last heard in ``entries``."""
        transcription = self._realtime_config().audio.input.transcription
        if transcription is not None and transcription.language:
            return reply_language(transcription.language)
        heard = (e.heard_language for e in reversed(entries) if e.heard_language)
        return reply_language(next(heard, None))

    # ------------------------------------------------------------------ the engine's output

    def _active(self, response_id: str) -> ResponseRun | None:
        run = self._runs.get(response_id)
        return run if run is not None and run.active else None

    def on_text(self, event: be.ResponseText) -> None:
        """A text (or transcript) delta of a response."""
        if (run := self._active(event.response_id)) is not None:
            if run.modality == "text":
                self._stamp_first_output(run.id)
            self._writer.text(run, event)

    def on_audio(self, event: be.ResponseAudio) -> None:
        """An audio chunk of a response (the input processor hears it as the far end)."""
        if (run := self._active(event.response_id)) is not None:
            self._stamp_first_output(run.id)
            self._writer.audio(run, event)
            if self._playback is None and self._processor is not None and run.modality == "audio":
                self._processor.far_end(event.pcm16, self._host.now_ms)  # what the client will play

    def on_first_token(self, event: be.ResponseFirstToken) -> None:
        """The model's first token of a response (a latency stamp)."""
        record = self._latency.get(event.response_id)
        if record is not None and record.llm_first_ms is None:
            record.llm_first_ms = self._host.now_ms

    def _stamp_first_output(self, response_id: str) -> None:
        record = self._latency.get(response_id)
        if record is not None and record.tts_first_ms is None:
            record.tts_first_ms = self._host.now_ms

    def on_tool_call(self, event: be.ResponseToolCall) -> None:
        """A function call of a response begins."""
        if (run := self._active(event.response_id)) is not None:
            self._writer.tool_call(run, event)

    def on_tool_arguments(self, event: be.ResponseToolArguments) -> None:
        """A piece of a function call's arguments."""
        if (run := self._active(event.response_id)) is not None:
            self._writer.tool_arguments(run, event)

    def _close_output(self, run: ResponseRun, status: Literal["completed", "incomplete"]) -> None:
        self._writer.close_message(run, status)
        self._writer.close_calls(run, status)

    def on_generated(self, event: be.ResponseGenerated) -> None:
        """The engine finished a response: ``completed`` or ``incomplete`` (max tokens)."""
        run = self._active(event.response_id)
        if run is None:
            return
        incomplete = event.finish_reason == "length"
        status: Literal["completed", "incomplete"] = "incomplete" if incomplete else "completed"
        self._close_output(run, status)
        run.usage = Usage(
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cached_tokens=event.cached_tokens,
        )
        if incomplete:
            run.move("length")
            run.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        else:
            run.move("complete")
        self._finish_response(run)

    def on_failed(self, event: be.ResponseFailed) -> None:
        """The engine failed a response: ``response.done`` ``failed``, then an ``error``."""
        run = self._active(event.response_id)
        if run is None:
            return
        self._fail(run, event.code, event.message)
        self._emit(
            se.Error,
            error=ProtocolError(event.code, event.message, type="server_error").payload(),
        )

    def _fail(self, run: ResponseRun, code: str, message: str) -> None:
        """End ``run`` with ``response.done`` status ``failed`` carrying ``code``."""
        self._close_output(run, "incomplete")
        run.move("fail")
        error = {"type": "server_error", "code": code, "message": message}
        run.status_details = {"type": "failed", "error": error}
        run.usage = run.usage or Usage()
        self._finish_response(run)

    # ------------------------------------------------------------------ ending

    def cancel_event(self, event: ce.ResponseCancel) -> None:
        """``response.cancel``: the named response, else the default one (raises if none)."""
        run_id = event.response_id or self._default
        run = self._active(run_id) if run_id is not None else None
        if run is None:
            raise errors.cancel_not_active()
        self._cancel(run, "client_cancelled")

    def _cancel(self, run: ResponseRun, reason: str) -> None:
        self._command(CancelResponse(run.id))
        self._close_output(run, "incomplete")
        run.move("cancel")
        run.status_details = {"type": "cancelled", "reason": reason}
        run.usage = run.usage or Usage()
        self._finish_response(run)

    def shut_down(self, message: str) -> None:
        """The server is stopping: every response in flight fails (``server_shutting_down``)."""
        for run in [r for r in self._runs.values() if r.active]:
            self._command(CancelResponse(run.id))
            self._fail(run, "server_shutting_down", message)

    def close(self) -> None:
        """The session closes: cancel the engine's work on every response, without events."""
        for run in list(self._runs.values()):
            self._command(CancelResponse(run.id))
        self._runs.clear()

    def _finish_response(self, run: ResponseRun) -> None:
        self._emit(se.ResponseDone, response=run.payload())
        usage = run.usage or Usage()
        self._tokens_used += usage.input_tokens + usage.output_tokens
        self._emit(
            se.RateLimitsUpdated,
            rate_limits=[
                {
                    "name": "tokens",
                    "limit": 15_000_000,
                    "remaining": max(0, 15_000_000 - self._tokens_used),
                    "reset_seconds": 0.001,
                }
            ],
        )
        del self._runs[run.id]
        if self._playback is not None:
            self._playback.response_over(run.id)
        record = self._latency.get(run.id)
        if record is not None and record.tts_first_ms is None:
            del self._latency[run.id]  # no output: nothing to measure
        if self._default == run.id:
            self._default = None
            audio_ms = sum(
                len(e.audio.get(0, b"")) // BYTES_PER_MS
                for item in run.output
                if item.id is not None and (e := self.conversation.get(item.id)) is not None
            )
            played_out = run.state in (ResponseState.COMPLETED, ResponseState.INCOMPLETE)
            self._host.answer_done(run.id, audio_ms=audio_ms, played_out=played_out)

    # ------------------------------------------------------------------ latency

    def transcribed(self, item_id: str) -> None:
        """The final transcript of ``item_id`` is in: stamp the records of the turns it ends."""
        for record in self._latency.values():
            if record.item_id == item_id:
                record.stt_final_ms = self._host.now_ms

    def take_latency(self, response_id: str) -> TurnLatency | None:
        """The latency record of the turn ``response_id`` answers, once its first output is out.

        Returns None otherwise; the record is forgotten once taken.
        """
        record = self._latency.get(response_id)
        if record is None or record.tts_first_ms is None:
            return None
        del self._latency[response_id]
        return record
