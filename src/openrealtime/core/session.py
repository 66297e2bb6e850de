"""The sans-I/O Realtime session (design.md; websockets ``protocol.py`` style).

Inputs are recorded by ``receive_*`` and ``advance_time``; outputs are collected with
:meth:`RealtimeSession.drain`, which returns the server events to send and the commands to run,
in order. Nothing here awaits, sleeps, reads a clock or calls a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from openrealtime.audio.formats import InputDecoder
from openrealtime.core import backend_events as be
from openrealtime.core.commands import CloseSession, Command, Generate, Transcribe
from openrealtime.core.conversation import Conversation
from openrealtime.core.ids import IdFactory
from openrealtime.core.input_buffer import InputAudioBuffer, decode_base64_audio
from openrealtime.core.input_processing import InputProcessor
from openrealtime.core.item_flow import Items
from openrealtime.core.latency import TurnLatency
from openrealtime.core.playback import OutputAudioBuffer
from openrealtime.core.response_flow import Responses
from openrealtime.core.state import SESSION_TRANSITIONS, InvalidTransition, SessionState, advance
from openrealtime.core.turn_taking import INTERRUPT_AT_ONCE, TurnOptions, TurnTaking
from openrealtime.protocol import client_events as ce
from openrealtime.protocol import errors
from openrealtime.protocol import server_events as se
from openrealtime.protocol.codec import validate
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.session_config import (
    RealtimeSessionConfig,
    SessionConfig,
    TranscriptionSessionConfig,
    merge_update,
    session_payload,
)

MIN_COMMIT_MS = 100


@dataclass(frozen=True)
class Limits:
    """Server-side limits of one session (spec §7; reliability-targets.md §3 check 10)."""

    max_duration_ms: int = 3_600_000
    max_append_bytes: int = 15 * 1024 * 1024
    max_buffer_bytes: int = 15 * 1024 * 1024
    """Uncommitted audio kept at most; older audio is dropped with an error."""
    max_conversation_text_bytes: int | None = None
    """Client text the conversation holds at most (``None``: unbounded)."""
    max_conversation_audio_bytes: int | None = None
    """Audio the conversation keeps at most; the oldest items' audio goes first."""


@dataclass
class Output:
    """What :meth:`RealtimeSession.drain` hands the driver."""

    events: list[se.ServerEvent] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)


class RealtimeSession:
    """One Realtime session: conversation, input buffer, turn detection and responses.

    Call order: construct (emits ``session.created``), then any ``receive_*`` or
    ``advance_time`` call, each followed by :meth:`drain`.

    This class keeps the session's config, its input audio and its lifetime, and dispatches
    everything else to its parts: turn-taking (speech, pauses, barge-in, false interruptions,
    the idle timer) to :class:`~openrealtime.core.turn_taking.TurnTaking`, conversation items
    and their transcription to :class:`~openrealtime.core.item_flow.Items`, responses (created,
    generated, cancelled, done; token and latency accounting) to
    :class:`~openrealtime.core.response_flow.Responses`. The parts ask each other through the
    session (``_Host``). ``playback``: the transport plays the audio itself (WebRTC);
    ``turn_options``: the server's options (None: every barge-in interrupts at once).
    """

    def __init__(
        self,
        kind: Literal["realtime", "transcription"],
        model: str,
        *,
        ids: IdFactory,
        now_ms: int,
        limits: Limits | None = None,
        defaults: dict[str, Any] | None = None,
        session_id: str | None = None,
        turn_model: bool = False,
        playback: bool = False,
        input_processor: InputProcessor | None = None,
        turn_options: TurnOptions | None = None,
    ) -> None:
        self.kind = kind
        self.ids = ids
        self.limits = limits or Limits()
        self.id = session_id or ids.new("sess")
        self.conversation_id = ids.new("conv")
        self.state = SessionState.OPEN
        self.now_ms = now_ms
        self.created_ms = now_ms
        self.config: SessionConfig
        if kind == "realtime":
            self.config = RealtimeSessionConfig(model=model)
        else:
            self.config = TranscriptionSessionConfig()
        if defaults:
            self.config = self._merged(defaults)
        self.conversation = Conversation(
            max_text_bytes=self.limits.max_conversation_text_bytes,
            max_audio_bytes=self.limits.max_conversation_audio_bytes,
        )
        self._playback: OutputAudioBuffer | None = None
        """The transport's output audio buffer when it plays audio itself (WebRTC, spec §1.3)."""
        if playback:
            self._playback = OutputAudioBuffer(self.conversation, self._emit, self._command)
        self._out = Output()
        # input audio buffer: absolute sample positions in the session's audio stream
        self._buffer = InputAudioBuffer(self.limits.max_buffer_bytes)
        self._decoder: InputDecoder | None = None
        """Wire input format -> session audio; kept across appends (the resampler's state)."""
        self._processor = input_processor
        """Echo cancellation and noise reduction of all input, before anything else sees it."""
        host = _Host(self)
        self._items = Items(
            host, ids=ids, conversation=self.conversation, emit=self._emit, command=self._command
        )
        """Conversation items: client-created, committed turns, transcripts (core/item_flow.py)."""
        self._responses = Responses(
            host,
            ids=ids,
            conversation=self.conversation,
            conversation_id=self.conversation_id,
            session_id=self.id,
            playback=self._playback,
            processor=input_processor,
            emit=self._emit,
            command=self._command,
        )
        """Responses from creation to ``response.done`` (core/response_flow.py)."""
        self._turns = TurnTaking(
            host,
            ids=ids,
            buffer=self._buffer,
            playback=self._playback,
            emit=self._emit,
            command=self._command,
            answers=kind == "realtime",
            turn_model=turn_model,
            options=turn_options or INTERRUPT_AT_ONCE,
        )
        """Who has the floor: speech, pauses, barge-in, idle timer (core/turn_taking.py)."""
        self._configure_vad()
        self._configure_input()
        self._emit(se.SessionCreated, session=self._session_payload())

    # ------------------------------------------------------------------ public API

    def drain(self) -> Output:
        """Return and forget the events and commands produced since the last call."""
        out, self._out = self._out, Output()
        return out

    def has_output(self) -> bool:
        """Whether :meth:`drain` would return any event or command (a pure read)."""
        out = self._out
        return bool(out.events or out.commands)

    def session_created(self) -> se.SessionCreated:
        """A ``session.created`` with the current config, for a connection joining mid-session.

        The sideband WebSocket of a WebRTC call (spec §1.4) gets one when it attaches; it is
        not queued for the session's other connections.
        """
        return se.SessionCreated(event_id=self.ids.new("event"), session=self._session_payload())

    @property
    def expires_at(self) -> int:
        """Unix seconds when the session ends (spec §1.7)."""
        return (self.created_ms + self.limits.max_duration_ms) // 1000

    def next_deadline_ms(self) -> int | None:
        """The earliest wall time at which :meth:`advance_time` has something to do."""
        if self.state is SessionState.CLOSED:
            return None
        deadline = self.created_ms + self.limits.max_duration_ms
        turns = self._turns.next_deadline_ms()
        return deadline if turns is None else min(deadline, turns)

    def advance_time(self, now_ms: int) -> None:
        """Tell the session the wall time (unix ms); fires timers and expiry."""
        self.now_ms = now_ms
        if self.state is SessionState.CLOSED:
            return
        if now_ms >= self.created_ms + self.limits.max_duration_ms:
            self._expire()
            return
        self._turns.advance_time()

    def speech_so_far(self, item_id: str) -> Transcribe | None:
        """A transcription request for the speech of the turn still being spoken, if ``item_id``.

        For the runtime's :class:`Speculate` work with an STT engine that cannot stream: it
        transcribes this audio once, during the pause. Pure read; emits nothing.
        """
        pcm = self._turns.speech_audio(item_id)
        return None if pcm is None else self._items.transcription(item_id, pcm)

    def take_latency(self, response_id: str) -> TurnLatency | None:
        """The latency record of the turn this response answers, once its first output is out.

        The driver calls it when it queues a response's first audio (or text) delta, stamps
        ``first_sent_ms`` when the frame is written, and logs it. Returns None otherwise.
        """
        return self._responses.take_latency(response_id)

    def shut_down(self, message: str) -> None:
        """End the session because the server is stopping (``Lifecycle.drain``).

        Every response in flight gets its ``response.done`` (``failed``,
        ``server_shutting_down``), then one ``error`` says why, then close 1001.
        """
        if self.state is SessionState.CLOSED:
            return
        self._turns.shut_down()
        self._responses.shut_down(message)
        error = ProtocolError("server_shutting_down", message, type="server_error")
        self._emit(se.Error, error=error.payload())
        self._close(1001, "server shutting down")

    def receive_error(self, error: ProtocolError, event_id: str | None = None) -> None:
        """Report a client mistake found before the core (bad JSON, unknown type...)."""
        self._emit(se.Error, error=error.payload(event_id))

    def receive_client_event(self, event: ce.ClientEvent) -> None:
        """Handle one parsed client event (spec §2.2); mistakes become ``error`` events."""
        if self.state is SessionState.CLOSED:
            return
        try:
            self._dispatch(event)
        except ProtocolError as exc:
            self._emit(se.Error, error=exc.payload(event.event_id))
        except InvalidTransition as exc:
            self._emit(se.Error, error=errors.server_error(str(exc)).payload(event.event_id))

    def receive_audio(self, pcm16: bytes) -> None:
        """Append session audio (PCM16 24 kHz) that arrived outside events (WebRTC track)."""
        if self.state is SessionState.OPEN:
            self._append_audio(pcm16)

    def receive_backend_event(self, event: be.BackendEvent) -> None:
        """Feed back the result of a command."""
        if self.state is SessionState.CLOSED:
            return
        match event:
            case be.SpeechProbabilities():
                self._turns.speech_probabilities(event.probabilities, event.frame_samples)
            case be.TurnEvaluated():
                self._turns.turn_evaluated(event.item_id, event.probability)
            case be.TranscriptionDelta():
                self._items.on_transcription_delta(event)
            case be.TranscriptionCompleted():
                self._responses.transcribed(event.item_id)
                self._items.on_transcription_completed(event)
                self._responses.input_ready(event.item_id)
                self._turns.transcribed(event.item_id, event.transcript)
            case be.TranscriptionFailed():
                self._items.on_transcription_failed(event)
                self._responses.input_ready(event.item_id)
                self._turns.transcribed(event.item_id, None)
            case be.ResponseFirstToken():
                self._responses.on_first_token(event)
            case be.ResponseText():
                self._responses.on_text(event)
            case be.ResponseAudio():
                self._responses.on_audio(event)
            case be.ResponseToolCall():
                self._responses.on_tool_call(event)
            case be.ResponseToolArguments():
                self._responses.on_tool_arguments(event)
            case be.ResponseGenerated():
                self._responses.on_generated(event)
            case be.ResponseFailed():
                self._responses.on_failed(event)
            case be.PlaybackStarted() if self._playback is not None:
                self._playback.on_started(event)
            case be.PlaybackDrained() if self._playback is not None:
                self._playback.on_drained(event)
                self._turns.drained(event.response_id)
            case be.PlaybackCleared() if self._playback is not None:
                self._playback.on_cleared(event)
            case be.PlaybackStarted() | be.PlaybackDrained() | be.PlaybackCleared():
                pass  # no output audio buffer in this session
            case be.DtmfReceived():
                self._out.events.append(
                    se.InputAudioBufferDtmfEventReceived(
                        event=event.digit, received_at=event.received_at_s
                    )
                )
            case _:
                assert_never(event)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, event: ce.ClientEvent) -> None:
        match event:
            case ce.SessionUpdate():
                self._session_update(event)
            case ce.SessionClose():
                self._close(1000, "session closed by client")
            case ce.InputAudioBufferAppend():
                self._append_event(event)
            case ce.InputAudioBufferCommit():
                self._commit_event()
            case ce.InputAudioBufferClear():
                self._clear_buffer()
            case ce.OutputAudioBufferClear():
                if self._playback is None:  # WebRTC/SIP only (spec §2.2)
                    raise errors.invalid_value(event.type, ce.WEBSOCKET_EVENT_TYPES, "type")
                self._playback.clear()
            case ce.ConversationItemCreate():
                self._require_realtime("conversation.item.create")
                self._items.create(event)
            case ce.ConversationItemRetrieve():
                self._items.retrieve(event)
            case ce.ConversationItemTruncate():
                if self._processor is not None and self._playback is None:
                    self._processor.drop_far_end()  # the client stopped playing (spec §5.7)
                self._items.truncate(event)
            case ce.ConversationItemDelete():
                self._items.delete(event)
            case ce.ResponseCreate():
                self._require_realtime("response.create")
                self._responses.create(event.response or ce.ResponseCreateParams())
            case ce.ResponseCancel():
                self._responses.cancel_event(event)
            case _:
                assert_never(event)

    # ------------------------------------------------------------------ session

    def _session_payload(self) -> dict[str, Any]:
        return session_payload(self.config, session_id=self.id, expires_at=self.expires_at)

    def _merged(self, update: dict[str, Any]) -> SessionConfig:
        current = self.config.model_dump(mode="json")
        model: type[SessionConfig] = type(self.config)
        return validate(model, merge_update(current, update), prefix="session")

    def _session_update(self, event: ce.SessionUpdate) -> None:
        body = event.session
        kind = body.get("type")
        if kind is None:
            raise errors.missing_parameter("session.type")
        if kind not in ("realtime", "transcription"):
            raise errors.invalid_value(kind, ["realtime", "transcription"], "session.type")
        if kind != self.kind:
            raise ProtocolError(
                "invalid_value",
                f"Passing a {kind} session update event to a {self.kind} session is not allowed.",
                param="session.type",
            )
        new = self._merged(body)
        if isinstance(new, RealtimeSessionConfig) and isinstance(
            self.config, RealtimeSessionConfig
        ):
            if (
                self._responses.audio_produced
                and new.audio.output.voice != self.config.audio.output.voice
            ):
                raise ProtocolError(
                    "cannot_update_voice",
                    "Cannot update a conversation's voice if assistant audio is present.",
                    param="session.audio.output.voice",
                )
            if self.config.tracing is not None and new.tracing != self.config.tracing:
                raise ProtocolError(
                    "invalid_value",
                    "Tracing cannot be modified once it has been enabled.",
                    param="session.tracing",
                )
        self.config = new
        self._configure_vad()
        self._configure_input()
        self._emit(se.SessionUpdated, session=self._session_payload())

    def _turn_detection(self) -> Any:
        return self.config.audio.input.turn_detection

    def _configure_vad(self) -> None:
        self._turns.configure(self._turn_detection())

    def _configure_input(self) -> None:
        if self._processor is not None:
            nr = self.config.audio.input.noise_reduction
            self._processor.set_noise_reduction(nr.type if nr is not None else None)

    def _require_realtime(self, what: str) -> None:
        if self.kind != "realtime":
            raise ProtocolError(
                "invalid_request_error",
                f"'{what}' is not supported in transcription sessions.",
                param="type",
            )

    def _close(self, code: int, reason: str) -> None:
        self._responses.close()
        self.state = advance("session", SESSION_TRANSITIONS, self.state, "close")
        self._out.commands.append(CloseSession(code, reason))

    def _expire(self) -> None:
        minutes = self.limits.max_duration_ms / 60_000
        self._emit(se.Error, error=errors.session_expired(minutes).payload())
        self._close(1001, "session expired")

    # ------------------------------------------------------------------ input audio

    def _append_event(self, event: ce.InputAudioBufferAppend) -> None:
        if len(event.audio) > self.limits.max_append_bytes * 4 // 3 + 4:
            raise self._too_big()
        pcm = decode_base64_audio(event.audio)
        if len(pcm) > self.limits.max_append_bytes:
            raise self._too_big()
        self._append_audio(self._decode_input(pcm), event.event_id)

    def _decode_input(self, data: bytes) -> bytes:
        """Appended audio in the input format -> PCM16 24 kHz (spec §3.1; design decision 2).

        One decoder serves the stream; a format change flushes the old one (its held-back audio
        goes first) and starts afresh.
        """
        fmt = self.config.audio.input.format.type
        head = b""
        if self._decoder is None or self._decoder.format != fmt:
            head = self._decoder.flush() if self._decoder is not None else b""
            self._decoder = InputDecoder(fmt)
        return head + self._decoder.process(data)

    def _flush_input(self) -> None:
        """A manual commit cuts the stream: append the audio the decoder still holds."""
        if self._decoder is not None:
            tail, self._decoder = self._decoder.flush(), None
            self._append_audio(tail)
        if self._processor is not None:
            self._store_audio(self._processor.flush())

    def _too_big(self) -> ProtocolError:
        mib = self.limits.max_append_bytes / (1024 * 1024)
        return ProtocolError(
            "input_audio_buffer_append_too_large",
            f"Invalid 'audio': each input_audio_buffer.append may carry at most {mib:g} MiB.",
            param="audio",
        )

    def _append_audio(self, pcm: bytes, event_id: str | None = None) -> None:
        if self._processor is not None:
            pcm = self._processor.process(pcm, self.now_ms)
        self._store_audio(pcm, event_id)

    def _store_audio(self, pcm: bytes, event_id: str | None = None) -> None:
        if not pcm:
            return
        if self._buffer.append(pcm):
            self._emit(
                se.Error,
                error=ProtocolError(
                    "input_audio_buffer_full",
                    "The input audio buffer is full; the oldest audio was dropped. Commit or "
                    "clear the buffer.",
                ).payload(event_id),
            )
        self._turns.audio(pcm)

    def _commit_event(self) -> None:
        self._flush_input()
        if self._buffer.ms < MIN_COMMIT_MS:
            raise errors.commit_empty(self._buffer.ms)
        self._turns.commit()

    def _clear_buffer(self) -> None:
        self._decoder = None  # what it holds was appended before the clear
        self._buffer.clear()
        self._turns.clear()
        self._emit(se.InputAudioBufferCleared)

    # ------------------------------------------------------------------ output

    def _emit(self, cls: type[se.ServerEvent], **fields: Any) -> None:
        self._out.events.append(cls(event_id=self.ids.new("event"), **fields))

    def _command(self, command: Command) -> None:
        self._out.commands.append(command)


class _Host:
    """A session as the host of its parts (kept off its public API).

    :class:`~openrealtime.core.turn_taking.TurnHost`,
    :class:`~openrealtime.core.response_flow.ResponseHost` and
    :class:`~openrealtime.core.item_flow.ItemHost`: each asks the others through the session.
    """

    def __init__(self, session: RealtimeSession) -> None:
        self._session = session

    @property
    def now_ms(self) -> int:
        return self._session.now_ms

    @property
    def config(self) -> SessionConfig:
        return self._session.config

    # turn-taking asks the items and the responses

    @property
    def responding(self) -> bool:
        return self._session._responses.responding

    def commit_turn(self, item_id: str, pcm16: bytes) -> None:
        self._session._items.commit_audio(item_id, pcm16)

    def answer(self, latency: TurnLatency | None) -> None:
        self._session._responses.answer(latency)

    def interrupt(self) -> None:
        self._session._responses.interrupt()

    def speculation(self) -> Generate | None:
        return self._session._responses.speculation()

    # the responses tell turn-taking (its idle timer, a turn queued behind an answer)

    def response_created(self) -> None:
        self._session._turns.response_created()

    def answer_done(self, response_id: str, *, audio_ms: int, played_out: bool) -> None:
        self._session._turns.answer_done(response_id, audio_ms=audio_ms, played_out=played_out)
