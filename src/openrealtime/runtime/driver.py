"""The asyncio shell of one session (design.md data flow; websockets ``connection.py``).

One inbox carries client frames and backend results in arrival order; the driver feeds each to
the core, sends the events it drains, and runs its commands. Every engine task is owned by the
driver, keyed by what it works for, and cancelled on ``CancelResponse``, on close and on
disconnect (house rule 8). Outbound events go through a bounded queue; a client that stops
reading is closed with 1008 after ``outbound_stall_seconds`` (reliability-targets.md check 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from openrealtime import metrics
from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.processing import VoiceProcessor
from openrealtime.backends.base import Engines, StreamingSpeechToText, VadStream
from openrealtime.core import backend_events as be
from openrealtime.core.commands import (
    CancelResponse,
    ClearPlayback,
    CloseSession,
    Command,
    DetectSpeech,
    DropSpeculation,
    EndPlayback,
    EvaluateTurn,
    Generate,
    Listen,
    PausePlayback,
    PlayAudio,
    ResumePlayback,
    Speculate,
    StopListening,
    Transcribe,
)
from openrealtime.core.ids import IdFactory, RandomIds
from openrealtime.core.latency import TurnLatency
from openrealtime.core.session import Limits, RealtimeSession
from openrealtime.core.turn_taking import TurnOptions
from openrealtime.logging_setup import SessionLogger
from openrealtime.protocol.client_events import CLIENT_EVENT_MODELS, WEBSOCKET_EVENT_TYPES
from openrealtime.protocol.codec import client_event_id, dump_event, parse_client_event
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.server_events import (
    Error,
    ResponseDone,
    ResponseOutputAudioDelta,
    ResponseOutputTextDelta,
)
from openrealtime.runtime.lifecycle import Lifecycle
from openrealtime.runtime.listener import Listener
from openrealtime.runtime.memory import release_memory
from openrealtime.runtime.outbox import Frame, Outbox
from openrealtime.runtime.pipeline import (
    run_known_transcription,
    run_response,
    run_transcription,
    run_turn_evaluation,
    transcript_of,
)
from openrealtime.runtime.playback import MediaPort
from openrealtime.runtime.speculation import Peek, Speculation
from openrealtime.runtime.vad_batcher import batcher_for
from openrealtime.transports.base import (
    PushTransport,
    SessionRequest,
    Transport,
    TransportClosed,
)

log = logging.getLogger(__name__)

PUSH_PAUSE_AT = 256
"""Unread pushed client frames at which the socket stops being read (the pull path's bound)."""

PUSH_RESUME_AT = 64
"""Unread pushed client frames at which the socket is read again."""

RELEASE_AFTER_BYTES = 4 * 1024 * 1024
"""A session that received this much gives its memory back to the system when it ends."""


class DriverConfig(Protocol):
    """The settings the driver reads (satisfied by :class:`openrealtime.config.Config`)."""

    session_max_seconds: int
    outbound_queue_max: int
    outbound_stall_seconds: float
    max_conversation_text_bytes: int
    max_conversation_audio_seconds: float
    echo_cancellation: bool
    resume_false_interruptions: bool
    min_interruption_ms: int
    false_interruption_timeout_ms: int


class ServicesLike(Protocol):
    """Server-wide services shared by sessions."""

    @property
    def config(self) -> Any:
        """The server config (reads the :class:`DriverConfig` fields)."""
        ...

    @property
    def engines(self) -> Engines:
        """The loaded engines."""
        ...


@dataclass(frozen=True)
class _Disconnected:
    pass


@dataclass(frozen=True)
class _ShutDown:
    """The server is stopping (``Lifecycle.drain``): end the session now."""

    message: str


@dataclass(frozen=True)
class _Audio:
    """Input audio that arrived outside events (WebRTC track), PCM16 24 kHz."""

    pcm16: bytes


@dataclass(frozen=True)
class _Backend:
    """A result from an engine task (counted against the backend backpressure)."""

    event: be.BackendEvent


_Inbox = str | bytes | _Disconnected | _ShutDown | _Audio | _Backend | be.BackendEvent | None
"""A client frame (text or binary, as received), a result, or ``None``: a deadline passed, or
the core has output from VAD results applied outside the inbox (``_deliver_vad``)."""


class _Stalled(Exception):
    """The client has not read its events for too long."""


def wall_ms() -> int:
    """Wall-clock unix time in ms: the only clock the driver gives the core."""
    return int(time.time() * 1000)


class SessionDriver:
    """Runs one :class:`RealtimeSession` over one :class:`Transport` until either ends."""

    def __init__(
        self,
        transport: Transport,
        request: SessionRequest,
        services: ServicesLike,
        *,
        ids: IdFactory | None = None,
        defaults: dict[str, Any] | None = None,
        media: MediaPort | None = None,
    ) -> None:
        config = services.config
        self.transport = transport
        self.request = request
        self.engines = services.engines
        self._processor = VoiceProcessor(echo_cancellation=config.echo_cancellation)
        """Echo cancellation and noise reduction of the input (in the core, before its VAD)."""
        self.session = RealtimeSession(
            request.kind,
            request.model,
            ids=ids or RandomIds(),
            now_ms=wall_ms(),
            limits=Limits(
                max_duration_ms=int(config.session_max_seconds * 1000),
                max_conversation_text_bytes=config.max_conversation_text_bytes,
                max_conversation_audio_bytes=int(
                    config.max_conversation_audio_seconds * SESSION_RATE * 2
                ),
            ),
            defaults=defaults if defaults is not None else request.session_defaults,
            session_id=request.session_label or None,
            turn_model=self.engines.turn is not None,
            playback=media is not None,
            input_processor=self._processor,
            turn_options=TurnOptions(
                resume_false_interruptions=config.resume_false_interruptions,
                min_interruption_ms=config.min_interruption_ms,
                false_interruption_timeout_ms=config.false_interruption_timeout_ms,
            ),
        )
        self.log = SessionLogger(log, self.session.id)
        self._media = media
        """Audio outside events (WebRTC): input from the call's track, output to its buffer."""
        self._client_types = WEBSOCKET_EVENT_TYPES if media is None else tuple(CLIENT_EVENT_MODELS)
        self._play_latency: dict[str, TurnLatency] = {}
        """Latency records of responses whose first audio is queued but not yet played."""
        if media is not None:
            media.playback.notify = self._deliver_playback
            processor = self._processor
            media.playback.on_played = lambda frame: processor.far_end(frame, wall_ms())
        self._vad: VadStream = self.engines.vad.open_stream()
        self._inbox: asyncio.Queue[_Inbox] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ms: int | None = None
        """The core deadline (unix ms) the timer is set for: one timer, moved when it changes."""
        # Backpressure per producer, so VAD results (delivered from a callback) never block:
        self._frame_room = asyncio.Semaphore(PUSH_PAUSE_AT)
        self._push: PushTransport | None = None
        """The transport, when it pushes client frames (``_pushed``; no reader task)."""
        self._unread = 0
        self._read_paused = False
        self._backend_room = asyncio.Semaphore(256)
        self._batcher = batcher_for(self.engines.vad)
        self._outbox = Outbox(config.outbound_queue_max)
        self._stall_s = float(config.outbound_stall_seconds)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._listeners: dict[str, Listener] = {}
        self._speculation: Speculation | None = None
        self._stt_streams = isinstance(self.engines.stt, StreamingSpeechToText)
        """Checked once: a Protocol isinstance check costs too much per audio chunk."""
        self._close: CloseSession | None = None
        self._received_bytes = 0
        self._lifecycle: Lifecycle | None = getattr(services, "lifecycle", None)
        self.latencies: list[TurnLatency] = []
        """Latency of each answered turn, in order (also logged at info level)."""

    async def run(self) -> None:
        """Serve the session; returns after the client left or the session closed."""
        self.log.info("session started (%s, model=%s)", self.request.kind, self.request.model)
        readers = []
        transport = self.transport
        if isinstance(transport, PushTransport) and transport.push_to(self._pushed):
            self._push = transport
        else:
            readers.append(asyncio.create_task(self._read()))
        if self._media is not None:
            readers.append(asyncio.create_task(self._read_audio(self._media)))
        writer = asyncio.create_task(self._write())
        if self._lifecycle is not None:
            self._lifecycle.add(self)
        transport_label = "websocket" if self._media is None else self._media.kind
        metrics.SESSIONS_TOTAL.labels(transport_label).inc()
        metrics.SESSIONS_OPEN.labels(transport_label).inc()
        try:
            await self._flush()
            while self._close is None:
                item = await self._next()
                self.session.advance_time(wall_ms())
                if isinstance(item, (str, bytes)):  # the common case: a client frame
                    self._frame_taken()
                    self._received_bytes += len(item)
                    self._on_frame(item)
                elif isinstance(item, be.SpeechProbabilities):  # next most common
                    self.session.receive_backend_event(item)
                elif isinstance(item, _Disconnected):
                    break
                elif isinstance(item, _Audio):
                    self._frame_room.release()
                    self.session.receive_audio(item.pcm16)
                elif isinstance(item, _Backend):
                    self._backend_room.release()
                    self.session.receive_backend_event(item.event)
                elif isinstance(item, _ShutDown):
                    self.session.shut_down(item.message)
                elif item is not None:
                    self.session.receive_backend_event(item)
                await self._flush()
        except _Stalled:
            self.log.warning("client stopped reading its events; closing with 1008")
            self._close = CloseSession(1008, "client is not reading events")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for reader in readers:
                reader.cancel()
            tasks = [*self._tasks.values(), *(lis.task for lis in self._listeners.values())]
            if self._speculation is not None:
                tasks.append(self._speculation.task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*readers, *tasks, return_exceptions=True)
            self._listeners.clear()
            self._tasks.clear()
            if self._batcher is not None:
                # The worker may be scoring this stream right now: stop delivering and let it
                # go with the driver instead of closing it under the worker's feet.
                self._batcher.forget(self._vad)  # type: ignore[arg-type]
            else:
                self._vad.close()
            forget = getattr(self.engines.llm, "forget", None)
            if forget is not None:  # the session's saved KV cache is no longer needed
                forget(self.session.id)
            self._outbox.end()
            if self._received_bytes >= RELEASE_AFTER_BYTES:
                release_memory()  # what this session held goes back to the system
            if self._close is not None:
                # Let queued events reach the client before the close frame.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), timeout=2.0)
                await self.transport.close(self._close.code, self._close.reason)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if self._lifecycle is not None:
                self._lifecycle.discard(self)
            metrics.SESSIONS_OPEN.labels(transport_label).dec()
            self.log.info("session ended")

    def dtmf(self, digit: str) -> None:
        """The caller pressed a keypad digit (a SIP call): the session reports it (spec §1.5)."""
        self._inbox.put_nowait(be.DtmfReceived(digit, int(time.time())))

    def shut_down(self, message: str) -> None:
        """End the session now (server shutdown): responses done, an error, close 1001."""
        self._inbox.put_nowait(_ShutDown(message))

    # ---------------------------------------------------------------- input

    async def _next(self) -> _Inbox:
        """The next inbox item; ``None`` when the core's next deadline has come.

        The deadline is watched by one timer that moves only when the deadline does, not by a
        timeout around every wait (which cost a timer per message).
        """
        if not self._inbox.empty():
            return self._inbox.get_nowait()
        deadline = self.session.next_deadline_ms()
        if deadline != self._timer_ms:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_ms = deadline
            if deadline is not None:
                delay = max(0.0, (deadline - wall_ms()) / 1000)
                self._timer = asyncio.get_running_loop().call_later(delay, self._deadline_came)
        return await self._inbox.get()

    def _deadline_came(self) -> None:
        self._timer = None
        self._timer_ms = None  # set it again for whatever the core's next deadline is then
        self._inbox.put_nowait(None)

    def _pushed(self, frame: str | bytes | None) -> None:
        """A client frame pushed by the transport as it arrived (``None``: the peer left)."""
        if frame is None:
            self._inbox.put_nowait(_Disconnected())
            return
        self._inbox.put_nowait(frame)
        self._unread += 1
        if self._unread == PUSH_PAUSE_AT:
            self._read_paused = True
            assert self._push is not None
            self._push.pause_reading()

    def _frame_taken(self) -> None:
        """A client frame left the inbox: room for the next one."""
        push = self._push
        if push is None:
            self._frame_room.release()
            return
        self._unread -= 1
        if self._read_paused and self._unread <= PUSH_RESUME_AT:
            self._read_paused = False
            push.resume_reading()

    async def _read(self) -> None:
        receive = self.transport.receive
        room = self._frame_room
        put = self._inbox.put_nowait  # the inbox is unbounded; the semaphore bounds frames
        while True:
            data = await receive()
            if data is None:
                put(_Disconnected())
                return
            await room.acquire()
            put(data)

    async def _read_audio(self, media: MediaPort) -> None:
        while (pcm16 := await media.receive_audio()) is not None:
            await self._frame_room.acquire()
            await self._inbox.put(_Audio(pcm16))

    def _on_frame(self, data: str | bytes) -> None:
        try:
            event = parse_client_event(data, allowed_types=self._client_types)
        except ProtocolError as exc:
            metrics.client_event("invalid")
            self.session.receive_error(exc, client_event_id(data))
            return
        metrics.client_event(event.type)
        self.session.receive_client_event(event)

    async def _emit_backend(self, event: be.BackendEvent) -> None:
        await self._backend_room.acquire()
        await self._inbox.put(_Backend(event))

    # ---------------------------------------------------------------- output

    async def _flush(self) -> None:
        """Send drained events and run drained commands until the core has nothing more."""
        while True:
            out = self.session.drain()
            if not out.events and not out.commands:
                return
            for event in out.events:
                metrics.server_event(event.type)
                if isinstance(event, Error):
                    metrics.ERRORS.labels(event.error.get("code") or "none").inc()
                elif isinstance(event, ResponseDone):
                    metrics.RESPONSES.labels(event.response.get("status", "unknown")).inc()
                audio_of = None
                latency = None
                if isinstance(event, ResponseOutputAudioDelta):
                    audio_of = event.response_id
                if isinstance(event, (ResponseOutputAudioDelta, ResponseOutputTextDelta)):
                    latency = self.session.take_latency(event.response_id)
                await self._send(Frame(dump_event(event), audio_of, latency))
            for command in out.commands:
                self._run(command)

    async def _send(self, frame: Frame) -> None:
        try:
            if len(self._outbox) < self._outbox.capacity:
                await self._outbox.put(frame)  # room: no timer needed
            else:
                async with asyncio.timeout(self._stall_s):
                    await self._outbox.put(frame)
        except TimeoutError:
            raise _Stalled() from None

    async def _write(self) -> None:
        """Send queued frames in order until the outbox ends or the transport fails.

        The writer never ends silently: a transport that closed, and any unexpected failure
        (logged with its traceback, the connection then closed with 1011), wake the main loop
        so the session ends instead of living on with nobody writing its events.
        """
        while True:
            frame = await self._outbox.get()
            if frame is None:
                return
            try:
                await self.transport.send_text(frame.text)
                if frame.latency is not None:
                    frame.latency.first_sent_ms = wall_ms()
                    self._turn_answered(frame.latency)
            except TransportClosed:
                # The main loop may be blocked on a full outbox; it learns of the close from
                # the reader or the stall timeout, so never block here.
                self._writer_gone()
                return
            except Exception:
                self.log.exception("sending an event failed; closing the session with 1011")
                self._writer_gone()
                await self.transport.close(1011, "internal error")
                return

    def _turn_answered(self, latency: TurnLatency) -> None:
        """The first output of a turn's answer left: log and record its stages."""
        self.log.info("%s", latency.describe())
        self.latencies.append(latency)
        metrics.observe_turn(latency.stages().items())

    def _writer_gone(self) -> None:
        """Tell the main loop that nothing is written any more (it must not wait on it)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(_Disconnected())
        self._outbox.close()

    def _run(self, command: Command) -> None:
        match command:
            case DetectSpeech():
                if self._batcher is not None:
                    self._batcher.submit(self._vad, command.pcm16, self._deliver_vad)  # type: ignore[arg-type]
                    return
                probs = self._vad.feed(command.pcm16)
                if probs:
                    self.session.receive_backend_event(
                        be.SpeechProbabilities(tuple(probs), self._vad.frame_samples)
                    )
            case EvaluateTurn():
                self._spawn(
                    f"turn:{command.item_id}",
                    run_turn_evaluation(command, self.engines, self._emit_backend),
                )
            case Listen():
                self._listen(command)
            case StopListening():
                listener = self._listeners.pop(command.item_id, None)
                if listener is not None:
                    listener.task.cancel()
            case Transcribe() if command.item_id in self._listeners:
                # Decoded while it was spoken: only the final text is left to get.
                listener = self._listeners.pop(command.item_id)
                listener.finish(self._prepared_transcript(command.item_id))
                self._own(f"stt:{command.item_id}", listener.task)
            case Transcribe():
                spec = self._speculation
                if spec is not None and spec.item_id == command.item_id:
                    work = self._transcribe_after(spec, command)
                else:
                    work = run_transcription(command, self.engines, self._emit_backend)
                self._spawn(f"stt:{command.item_id}", work)
            case Speculate():
                self._speculate(command)
            case DropSpeculation():
                if self._speculation is not None and self._speculation.item_id == command.item_id:
                    self._speculation.cancel()
                    self._speculation = None
            case Generate():
                if self._adopt(command):
                    return
                self._spawn(
                    command.response_id, run_response(command, self.engines, self._emit_backend)
                )
            case CancelResponse():
                dropped = self._outbox.discard_audio(command.response_id)
                task = self._tasks.pop(command.response_id, None)
                if task is not None and not task.done():
                    task.cancel()
                    task.add_done_callback(
                        functools.partial(
                            self._log_stopped, command.response_id, time.perf_counter(), dropped
                        )
                    )
            case CloseSession():
                self._close = command
            case PlayAudio() | EndPlayback() | ClearPlayback() | PausePlayback() | ResumePlayback():
                self._playback(command)

    def _log_stopped(
        self, response_id: str, since: float, dropped: int, _task: asyncio.Task[None]
    ) -> None:
        self.log.info(
            "cancelled %s: its engine tasks stopped %.1f ms later; %d queued audio frames dropped",
            response_id,
            (time.perf_counter() - since) * 1000,
            dropped,
        )

    def _speculate(self, command: Speculate) -> None:
        """Prepare the answer of a paused turn from the transcript its listener has so far."""
        if self._speculation is not None:
            self._speculation.cancel()
            self._speculation = None
        listener = self._listeners.get(command.item_id)
        if listener is not None:
            peek: Peek = listener.peek
        else:  # an STT engine that cannot stream: transcribe the speech so far, once
            request = self.session.speech_so_far(command.item_id)
            if request is None:
                return
            peek = functools.partial(transcript_of, request, self.engines)
        self._speculation = Speculation(command, self.engines, peek, self._emit_backend)

    async def _transcribe_after(self, spec: Speculation, command: Transcribe) -> None:
        """The turn's transcript from its speculation (at once if it has it), else a new one.

        An STT engine that cannot stream is asked once, when the user goes quiet; the turn
        that ends before the answer comes waits for it instead of queueing a second decode of
        the same speech behind the first (Whisper on 2 cores: the final came ~1 s after the
        turn ended, against ~0.45 s for the one decode). A speculation that heard nothing
        leaves the turn to a transcription of its own.
        """
        heard = await spec.heard()
        if heard is not None and heard.text:
            await run_known_transcription(command, heard, self._emit_backend)
        else:
            await run_transcription(command, self.engines, self._emit_backend)

    def _prepared_transcript(self, item_id: str) -> str | None:
        """The transcript a live speculation took of ``item_id``'s speech, if any.

        The core drops a speculation when speech comes back, so one still alive at the commit
        heard everything the turn said: its transcript is the turn's final one.
        """
        spec = self._speculation
        return spec.transcript if spec is not None and spec.item_id == item_id else None

    def _adopt(self, command: Generate) -> bool:
        """Use the prepared answer for ``command`` if it answered exactly that; else drop it."""
        spec, self._speculation = self._speculation, None
        if spec is None:
            return False
        if not spec.matches(command):
            spec.cancel()
            return False
        progress = spec.progress()
        spec.adopt(command, self._inbox.put_nowait)
        self._own(command.response_id, spec.task)
        rid = command.response_id
        self.log.info("%s: using the answer prepared during the pause (%s)", rid, progress)
        return True

    def _playback(
        self, command: PlayAudio | EndPlayback | ClearPlayback | PausePlayback | ResumePlayback
    ) -> None:
        """Run a command on the output audio buffer (WebRTC, spec §5.7)."""
        if self._media is None:
            return
        buffer = self._media.playback
        match command:
            case PlayAudio():
                if command.response_id not in self._play_latency:
                    latency = self.session.take_latency(command.response_id)
                    if latency is not None:
                        self._play_latency[command.response_id] = latency
                buffer.play(command.response_id, command.item_id, command.pcm16)
            case EndPlayback():
                buffer.end(command.response_id)
            case ClearPlayback():
                for report in buffer.clear():
                    self._play_latency.pop(report.response_id, None)
                    self.session.receive_backend_event(report)
            case PausePlayback():
                buffer.pause()
            case ResumePlayback():
                buffer.resume()

    def _deliver_playback(self, event: be.BackendEvent) -> None:
        """The output buffer reports (from the audio track): queued like any backend result."""
        if isinstance(event, be.PlaybackStarted):
            latency = self._play_latency.pop(event.response_id, None)
            if latency is not None:
                latency.first_sent_ms = wall_ms()
                self._turn_answered(latency)
        self._inbox.put_nowait(event)

    def _deliver_vad(self, probs: list[float]) -> None:
        """Batched VAD results, applied on arrival (on the loop, between the driver's steps).

        Most results change nothing the driver must act on (a frame more of speech or of
        silence), so they do not go through the inbox and wake the driver (issue 9: a task
        step per 32 ms frame per session); it is woken only when the core has something to
        send or run, or a new deadline. Nothing is reordered: the probabilities are for audio
        the core already received, and events they cause are drained after those already
        drained.
        """
        session = self.session
        session.advance_time(wall_ms())
        session.receive_backend_event(be.SpeechProbabilities(tuple(probs), self._vad.frame_samples))
        if session.has_output() or session.next_deadline_ms() != self._timer_ms:
            self._inbox.put_nowait(None)  # flush, and set the timer again

    def _listen(self, command: Listen) -> None:
        listener = self._listeners.get(command.item_id)
        if listener is None:
            stt = self.engines.stt
            if not self._stt_streams or not isinstance(stt, StreamingSpeechToText):
                return
            listener = Listener(stt, command.item_id, self._emit_backend)
            self._listeners[command.item_id] = listener
        listener.feed(command.pcm16)

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        self._own(key, asyncio.create_task(coro))

    def _own(self, key: str, task: asyncio.Task[None]) -> None:
        """Keep ``task`` under ``key`` (cancelled on close) until it finishes."""
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]


async def run_session(
    transport: Transport, request: SessionRequest, services: ServicesLike
) -> None:
    """Serve one Realtime session on an accepted transport (called by each transport)."""
    await SessionDriver(transport, request, services).run()
