"""The sans-I/O Realtime session (design.md; websockets ``protocol.py`` style).

Inputs are recorded by ``receive_*`` and ``advance_time``; outputs are collected with
:meth:`RealtimeSession.drain`, which returns the server events to send and the commands to run,
in order. Nothing here awaits, sleeps, reads a clock or calls a model.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from openrealtime.audio.formats import InputDecoder, decode_clip, encode_clip
from openrealtime.chat import ChatMessage, GenerationRequest, ToolChoice, ToolSpec
from openrealtime.core import backend_events as be
from openrealtime.core.commands import (
    CancelResponse,
    CloseSession,
    Command,
    Generate,
    Transcribe,
)
from openrealtime.core.conversation import (
    Conversation,
    Entry,
    entry_message,
)
from openrealtime.core.ids import IdFactory
from openrealtime.core.input_buffer import (
    BYTES_PER_MS,
    InputAudioBuffer,
    decode_base64_audio,
)
from openrealtime.core.input_processing import InputProcessor
from openrealtime.core.latency import TurnLatency
from openrealtime.core.output import ResponseWriter
from openrealtime.core.playback import OutputAudioBuffer
from openrealtime.core.responses import ResponseRun, Usage
from openrealtime.core.state import (
    SESSION_TRANSITIONS,
    InvalidTransition,
    ResponseState,
    SessionState,
    advance,
)
from openrealtime.core.turn_taking import INTERRUPT_AT_ONCE, TurnOptions, TurnTaking
from openrealtime.protocol import client_events as ce
from openrealtime.protocol import errors
from openrealtime.protocol import server_events as se
from openrealtime.protocol.base import to_wire
from openrealtime.protocol.codec import validate
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.items import (
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    OutputAudio,
    UserMessage,
    item_payload,
)
from openrealtime.protocol.session_config import (
    RealtimeAudio,
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

    Turn-taking (speech, pauses, barge-in, false interruptions, the idle timer) is decided by
    :class:`~openrealtime.core.turn_taking.TurnTaking`; this class feeds it its inputs and
    carries out what it asks (commit a turn, answer it, cut off an answer). ``playback``: the
    transport plays the audio itself (WebRTC); ``turn_options``: the server's options (None:
    every barge-in interrupts at once).
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
        self._writer = ResponseWriter(ids, self.conversation, self._emit)
        self._playback: OutputAudioBuffer | None = None
        """The transport's output audio buffer when it plays audio itself (WebRTC, spec §1.3)."""
        if playback:
            self._playback = OutputAudioBuffer(self.conversation, self._emit, self._command)
            self._writer.play = self._playback.play
        self._out = Output()
        # input audio buffer: absolute sample positions in the session's audio stream
        self._buffer = InputAudioBuffer(self.limits.max_buffer_bytes)
        self._decoder: InputDecoder | None = None
        """Wire input format -> session audio; kept across appends (the resampler's state)."""
        self._processor = input_processor
        """Echo cancellation and noise reduction of all input, before anything else sees it."""
        self._turn_latency: dict[str, TurnLatency] = {}
        """Latency records of answered turns, by response id."""
        # responses
        self._responses: dict[str, ResponseRun] = {}
        self._default_response: str | None = None
        self._tokens_used = 0
        self._turns = TurnTaking(
            _Host(self),
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
                self._on_transcription_delta(event)
            case be.TranscriptionCompleted():
                self._on_transcription_completed(event)
            case be.TranscriptionFailed():
                self._on_transcription_failed(event)
            case be.ResponseFirstToken():
                self._on_first_token(event)
            case be.ResponseText():
                self._on_response_text(event)
            case be.ResponseAudio():
                self._on_response_audio(event)
            case be.ResponseToolCall():
                self._on_tool_call(event)
            case be.ResponseToolArguments():
                self._on_tool_arguments(event)
            case be.ResponseGenerated():
                self._on_generated(event)
            case be.ResponseFailed():
                self._on_response_failed(event)
            case be.PlaybackStarted() if self._playback is not None:
                self._playback.on_started(event)
            case be.PlaybackDrained() if self._playback is not None:
                self._playback.on_drained(event)
                self._turns.drained(event.response_id)
            case be.PlaybackCleared() if self._playback is not None:
                self._playback.on_cleared(event)
            case be.PlaybackStarted() | be.PlaybackDrained() | be.PlaybackCleared():
                pass  # no output audio buffer in this session
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
                self._item_create(event)
            case ce.ConversationItemRetrieve():
                item = self.conversation.retrieve(event.item_id, self._wire_audio)
                self._emit(se.ConversationItemRetrieved, item=item)
            case ce.ConversationItemTruncate():
                if self._processor is not None and self._playback is None:
                    self._processor.drop_far_end()  # the client stopped playing (spec §5.7)
                self.conversation.truncate(event.item_id, event.content_index, event.audio_end_ms)
                self._emit(
                    se.ConversationItemTruncated,
                    item_id=event.item_id,
                    content_index=event.content_index,
                    audio_end_ms=event.audio_end_ms,
                )
            case ce.ConversationItemDelete():
                self.conversation.delete(event.item_id)
                self._emit(se.ConversationItemDeleted, item_id=event.item_id)
            case ce.ResponseCreate():
                self._require_realtime("response.create")
                self._create_response(event.response or ce.ResponseCreateParams())
            case ce.ResponseCancel():
                self._cancel_event(event)
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
                self._writer.audio_produced
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
        for run in list(self._responses.values()):
            self._out.commands.append(CancelResponse(run.id))
        self._responses.clear()
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

    def _commit_audio(self, item_id: str, pcm: bytes) -> None:
        """Turn audio into a user item: committed, item added/done, transcription started."""
        previous = self.conversation.last_id
        self._emit(se.InputAudioBufferCommitted, item_id=item_id, previous_item_id=previous)
        item = UserMessage(
            id=item_id,
            type="message",
            role="user",
            status="completed",
            content=[InputAudio(type="input_audio", transcript=None)],
        )
        entry = Entry(item=item, audio={0: bytearray(pcm)}, transcription_pending=True)
        self._add_item(entry, None)
        self._transcribe(item_id, pcm)

    def _transcribe(self, item_id: str, pcm: bytes) -> None:
        self._out.commands.append(self._transcription(item_id, pcm))

    def _transcription(self, item_id: str, pcm: bytes) -> Transcribe:
        tr = self.config.audio.input.transcription
        return Transcribe(
            item_id=item_id,
            content_index=0,
            pcm16=pcm,
            model=tr.model if tr else None,
            language=tr.language if tr else None,
            prompt=tr.prompt if tr else None,
        )

    def speech_so_far(self, item_id: str) -> Transcribe | None:
        """A transcription request for the speech of the turn still being spoken, if ``item_id``.

        For the runtime's :class:`Speculate` work with an STT engine that cannot stream: it
        transcribes this audio once, during the pause. Pure read; emits nothing.
        """
        pcm = self._turns.speech_audio(item_id)
        return None if pcm is None else self._transcription(item_id, pcm)

    def take_latency(self, response_id: str) -> TurnLatency | None:
        """The latency record of the turn this response answers, once its first output is out.

        The driver calls it when it queues a response's first audio (or text) delta, stamps
        ``first_sent_ms`` when the frame is written, and logs it. Returns None otherwise.
        """
        record = self._turn_latency.get(response_id)
        if record is None or record.tts_first_ms is None:
            return None
        del self._turn_latency[response_id]
        return record

    # ------------------------------------------------------------------ transcription

    def _transcription_enabled(self) -> bool:
        return self.config.audio.input.transcription is not None

    def _on_transcription_delta(self, event: be.TranscriptionDelta) -> None:
        if self._transcription_enabled() and event.item_id in self.conversation and event.text:
            self._emit(
                se.ConversationItemInputAudioTranscriptionDelta,
                item_id=event.item_id,
                content_index=0,
                delta=event.text,
            )

    def _on_transcription_completed(self, event: be.TranscriptionCompleted) -> None:
        for record in self._turn_latency.values():
            if record.item_id == event.item_id:
                record.stt_final_ms = self.now_ms
        entry = self.conversation.get(event.item_id)
        if entry is not None:
            entry.heard_text = event.transcript
            entry.transcription_pending = False
            if self._transcription_enabled() and isinstance(entry.item, UserMessage):
                content = [
                    p.model_copy(update={"transcript": event.transcript})
                    if isinstance(p, InputAudio)
                    else p
                    for p in entry.item.content
                ]
                entry.item = entry.item.model_copy(update={"content": content})
                audio_tokens = math.ceil(event.audio_seconds * 10)
                text_tokens = len(event.transcript.split())
                self._emit(
                    se.ConversationItemInputAudioTranscriptionCompleted,
                    item_id=event.item_id,
                    content_index=0,
                    transcript=event.transcript,
                    usage={
                        "type": "tokens",
                        "input_tokens": audio_tokens,
                        "output_tokens": text_tokens,
                        "total_tokens": audio_tokens + text_tokens,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    },
                )
        self._input_ready(event.item_id)
        self._turns.transcribed(event.item_id, event.transcript)

    def _on_transcription_failed(self, event: be.TranscriptionFailed) -> None:
        entry = self.conversation.get(event.item_id)
        if entry is not None:
            entry.transcription_pending = False
            if self._transcription_enabled():
                self._emit(
                    se.ConversationItemInputAudioTranscriptionFailed,
                    item_id=event.item_id,
                    content_index=0,
                    error={
                        "type": "transcription_error",
                        "code": event.code,
                        "message": event.message,
                    },
                )
        self._input_ready(event.item_id)
        self._turns.transcribed(event.item_id, None)

    def _input_ready(self, item_id: str) -> None:
        for run in list(self._responses.values()):
            if item_id in run.waiting_for:
                run.waiting_for.discard(item_id)
                if not run.waiting_for:
                    self._start_generation(run)

    # ------------------------------------------------------------------ items

    def _add_item(self, entry: Entry, previous_item_id: str | None) -> None:
        previous = self.conversation.insert(entry, previous_item_id)
        payload = item_payload(entry.item)
        self._emit(se.ConversationItemAdded, item=payload, previous_item_id=previous)
        self._emit(se.ConversationItemDone, item=payload, previous_item_id=previous)

    def _item_create(self, event: ce.ConversationItemCreate) -> None:
        self._require_realtime("conversation.item.create")
        item = event.item
        audio: dict[int, bytearray] = {}
        needs_transcript = False
        if isinstance(item, UserMessage):
            content = []
            for index, part in enumerate(item.content):
                if isinstance(part, InputAudio) and part.audio is not None:
                    try:
                        data = base64.b64decode(part.audio, validate=True)
                    except (binascii.Error, ValueError):
                        raise ProtocolError(
                            "invalid_value",
                            "Invalid 'audio': expected base64-encoded audio.",
                            param=f"item.content[{index}].audio",
                        ) from None
                    # Stored as session audio, like appended audio (spec §3.1 input format).
                    fmt = self.config.audio.input.format.type
                    audio[index] = bytearray(decode_clip(data, fmt))
                    needs_transcript = part.transcript is None
                    part = part.model_copy(update={"audio": None})
                content.append(part)
            item = item.model_copy(update={"content": content})
        if isinstance(item, AssistantMessage):
            for index, apart in enumerate(item.content):
                if isinstance(apart, OutputAudio) and apart.audio is not None:
                    raise ProtocolError(
                        "invalid_value",
                        "Assistant messages cannot be created with audio content.",
                        param=f"item.content[{index}].audio",
                    )
        if isinstance(item, FunctionCallOutput) and not self._known_call(item.call_id):
            raise ProtocolError(
                "invalid_value",
                f"No tool call found for function call output with call_id '{item.call_id}'.",
                param="item.call_id",
            )
        if item.id is None:
            item = item.model_copy(update={"id": self.ids.new("item")})
        if isinstance(item, FunctionCall) and item.call_id is None:
            item = item.model_copy(update={"call_id": self.ids.new("call")})
        if item.status is None:
            item = item.model_copy(update={"status": "completed"})
        text = self.conversation.check_text(item)
        self.conversation.check_audio(sum(len(pcm) for pcm in audio.values()))
        entry = Entry(
            item=item, audio=audio, transcription_pending=needs_transcript, client_text_bytes=text
        )
        self._add_item(entry, event.previous_item_id)
        if needs_transcript and item.id is not None:
            self._transcribe(item.id, bytes(audio[min(audio)]))

    def _wire_audio(self, part_type: str, pcm: bytes) -> bytes:
        """Stored audio -> the session's format for its direction (``conversation.item.retrieve``).

        ``output_audio`` parts come back in ``audio.output.format``, others in
        ``audio.input.format`` (spec §3.1).
        """
        audio = self.config.audio
        if part_type == "output_audio" and isinstance(audio, RealtimeAudio):
            return encode_clip(pcm, audio.output.format.type)
        return encode_clip(pcm, audio.input.format.type)

    def _output_format(self, params: ce.ResponseCreateParams) -> dict[str, Any]:
        """A response's ``audio.output.format`` (its own, else the session's), spec-shaped."""
        out = params.audio.output if params.audio is not None else None
        if out is not None and out.format is not None:
            return to_wire(out.format)
        return to_wire(self._realtime_config().audio.output.format)

    def _known_call(self, call_id: str) -> bool:
        return any(
            isinstance(e.item, FunctionCall) and e.item.call_id == call_id
            for e in self.conversation.entries()
        )

    # ------------------------------------------------------------------ responses

    def _create_response(self, params: ce.ResponseCreateParams) -> str:
        in_conversation = params.conversation != "none"
        if in_conversation and self._default_response is not None:
            raise errors.active_response(self._default_response)
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
        self._responses[run.id] = run
        if in_conversation:
            self._default_response = run.id
        self._turns.response_created()
        self._emit(se.ResponseCreated, response=run.payload())
        if not run.waiting_for:
            self._start_generation(run)
        return run.id

    def _realtime_config(self) -> RealtimeSessionConfig:
        config = self.config
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
            session_key=self.id if in_conversation and params.input is None else None,
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

    def _start_generation(self, run: ResponseRun) -> None:
        if run.state is not run.state.WAITING_INPUT:
            return
        run.move("input_ready")
        command, context = run.pending_generate, run.pending_context
        if command is not None and context is not None:
            # Called once nothing is awaited: rebuild the context with every transcript known.
            head, entries = context
            if entries is None:
                body = self.conversation.chat_messages()
            else:
                body = [m for e in entries if (m := entry_message(e)) is not None]
            command = command.with_messages(tuple(head + body))
            self._out.commands.append(command)
        run.pending_generate = None
        run.pending_context = None

    def _active(self, response_id: str) -> ResponseRun | None:
        run = self._responses.get(response_id)
        return run if run is not None and run.active else None

    def _on_response_text(self, event: be.ResponseText) -> None:
        if (run := self._active(event.response_id)) is not None:
            if run.modality == "text":
                self._stamp_first_output(run.id)
            self._writer.text(run, event)

    def _on_response_audio(self, event: be.ResponseAudio) -> None:
        if (run := self._active(event.response_id)) is not None:
            self._stamp_first_output(run.id)
            self._writer.audio(run, event)
            if self._playback is None and self._processor is not None and run.modality == "audio":
                self._processor.far_end(event.pcm16, self.now_ms)  # what the client will play

    def _on_first_token(self, event: be.ResponseFirstToken) -> None:
        record = self._turn_latency.get(event.response_id)
        if record is not None and record.llm_first_ms is None:
            record.llm_first_ms = self.now_ms

    def _stamp_first_output(self, response_id: str) -> None:
        record = self._turn_latency.get(response_id)
        if record is not None and record.tts_first_ms is None:
            record.tts_first_ms = self.now_ms

    def _on_tool_call(self, event: be.ResponseToolCall) -> None:
        if (run := self._active(event.response_id)) is not None:
            self._writer.tool_call(run, event)

    def _on_tool_arguments(self, event: be.ResponseToolArguments) -> None:
        if (run := self._active(event.response_id)) is not None:
            self._writer.tool_arguments(run, event)

    def _close_output(self, run: ResponseRun, status: Literal["completed", "incomplete"]) -> None:
        self._writer.close_message(run, status)
        self._writer.close_calls(run, status)

    def _on_generated(self, event: be.ResponseGenerated) -> None:
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

    def _on_response_failed(self, event: be.ResponseFailed) -> None:
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

    def shut_down(self, message: str) -> None:
        """End the session because the server is stopping (``Lifecycle.drain``).

        Every response in flight gets its ``response.done`` (``failed``,
        ``server_shutting_down``), then one ``error`` says why, then close 1001.
        """
        if self.state is SessionState.CLOSED:
            return
        self._turns.shut_down()
        for run in [r for r in self._responses.values() if r.active]:
            self._out.commands.append(CancelResponse(run.id))
            self._fail(run, "server_shutting_down", message)
        error = ProtocolError("server_shutting_down", message, type="server_error")
        self._emit(se.Error, error=error.payload())
        self._close(1001, "server shutting down")

    def _cancel_event(self, event: ce.ResponseCancel) -> None:
        run_id = event.response_id or self._default_response
        run = self._active(run_id) if run_id is not None else None
        if run is None:
            raise errors.cancel_not_active()
        self._cancel(run, "client_cancelled")

    def _cancel(self, run: ResponseRun, reason: str) -> None:
        self._out.commands.append(CancelResponse(run.id))
        self._close_output(run, "incomplete")
        run.move("cancel")
        run.status_details = {"type": "cancelled", "reason": reason}
        run.usage = run.usage or Usage()
        self._finish_response(run)

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
        del self._responses[run.id]
        if self._playback is not None:
            self._playback.response_over(run.id)
        record = self._turn_latency.get(run.id)
        if record is not None and record.tts_first_ms is None:
            del self._turn_latency[run.id]  # no output: nothing to measure
        if self._default_response == run.id:
            self._default_response = None
            audio_ms = sum(
                len(e.audio.get(0, b"")) // BYTES_PER_MS
                for item in run.output
                if item.id is not None and (e := self.conversation.get(item.id)) is not None
            )
            played_out = run.state in (ResponseState.COMPLETED, ResponseState.INCOMPLETE)
            self._turns.answer_done(run.id, audio_ms=audio_ms, played_out=played_out)

    # ------------------------------------------------------------------ turn-taking's host

    def _answer(self, latency: TurnLatency | None) -> None:
        response_id = self._create_response(ce.ResponseCreateParams())
        if latency is not None:
            self._turn_latency[response_id] = latency

    def _interrupt(self) -> None:
        if self._default_response is not None:
            self._cancel(self._responses[self._default_response], "turn_detected")
        if self._playback is not None:  # barge-in: cut what is playing (spec §5.7)
            self._playback.clear()
        elif self._processor is not None:
            self._processor.drop_far_end()  # the client stops its playback on this event

    def _speculation(self) -> Generate | None:
        params = ce.ResponseCreateParams()
        messages = self._instructions(params) + self.conversation.chat_messages()
        try:
            return self._generate(params, "", messages)
        except ProtocolError:
            return None

    # ------------------------------------------------------------------ output

    def _emit(self, cls: type[se.ServerEvent], **fields: Any) -> None:
        self._out.events.append(cls(event_id=self.ids.new("event"), **fields))

    def _command(self, command: Command) -> None:
        self._out.commands.append(command)


class _Host:
    """A session as :class:`~openrealtime.core.turn_taking.TurnHost` (kept off its public API)."""

    def __init__(self, session: RealtimeSession) -> None:
        self._session = session

    @property
    def now_ms(self) -> int:
        return self._session.now_ms

    @property
    def responding(self) -> bool:
        return self._session._default_response is not None

    def commit_turn(self, item_id: str, pcm16: bytes) -> None:
        self._session._commit_audio(item_id, pcm16)

    def answer(self, latency: TurnLatency | None) -> None:
        self._session._answer(latency)

    def interrupt(self) -> None:
        self._session._interrupt()

    def speculation(self) -> Generate | None:
        return self._session._speculation()
