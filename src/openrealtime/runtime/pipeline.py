"""What the driver runs for commands: transcription and the LLM -> clause -> TTS pipeline.

Each function streams results into ``emit`` as backend events; the session decides what they
become on the wire. Engine failures are mapped to ``*Failed`` events here, at one boundary.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from openrealtime import metrics
from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler, resample
from openrealtime.backends.base import (
    Engines,
    GenerationDone,
    SynthesisRequest,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    TranscriptDelta,
    TranscriptFinal,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError
from openrealtime.core import backend_events as be
from openrealtime.core.commands import EvaluateTurn, Generate, Transcribe
from openrealtime.core.languages import with_language
from openrealtime.metrics import elapsed_since
from openrealtime.protocol.codec import valid_text

log = logging.getLogger(__name__)

Emit = Callable[[be.BackendEvent], Awaitable[None]]

_T = TypeVar("_T")


@contextlib.asynccontextmanager
async def closing(stream: AsyncIterator[_T]) -> AsyncIterator[AsyncIterator[_T]]:
    """Iterate an engine's stream; close it on exit (a cancelled response stops it now).

    Every engine stream the runtime opens goes through it (responses, transcriptions, peeks),
    so it is closed on every path: done, failed, cancelled, disconnect, session close. Without
    it, a generator abandoned by a cancelled task is closed only when collected, holding its
    engine (a remote engine's connection) until then.
    """
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


_CLAUSE_END = re.compile(r"[.!?;:,\n](?=\s)")
_WORD_END = re.compile(r"\S\s")


class ClauseChunker:
    """Splits streamed text at clause ends, so speech can start before the sentence is done.

    A clause is cut at ``. ! ? ; : ,`` followed by whitespace, once it holds at least
    ``min_chars`` characters (short fragments like "Hi," would sound choppy on their own). The
    *first* chunk of an answer is cut sooner, at its first clause end or after ``first_words``
    words, because the user is waiting for it: each word is ~1.5 tokens of decoding before any
    sound (bench/voice_latency.py: 5 -> 3 words took the TTS stage from ~125 to ~75 ms p50).

    Text that runs ``max_chars`` without a clause end is cut at its last space (or at
    ``max_chars`` if it has none), and each push scans only the text not yet scanned: an answer
    without punctuation or spaces (a long number, a URL, base64) costs linear time and is spoken
    in pieces. (Before, every push rescanned all the pending text with a backtracking pattern:
    a 200,000-character word froze the event loop for minutes.)
    """

    def __init__(self, min_chars: int = 12, first_words: int = 3, max_chars: int = 400) -> None:
        self.min_chars = min_chars
        self.first_words = first_words
        self.max_chars = max_chars
        self._pending = ""
        self._started = False
        self._scanned = 0
        """Clause ends before this index of ``_pending`` were looked for already."""
        self._word_ends: list[int] = []
        """Where the first words of the answer end (until the first chunk is cut)."""

    def push(self, text: str) -> list[str]:
        """Add text; return the clauses now complete."""
        self._pending += text
        out: list[str] = []
        if not self._started:
            first = self._first_chunk()
            if first is None:
                return self._bounded(out)
            out.append(first)
            self._started = True
            self._scanned = 0
        pending = self._pending
        start = 0
        # A clause end that was the last character can match now that more text came.
        for match in _CLAUSE_END.finditer(pending, max(0, self._scanned - 1)):
            end = match.end()
            if len(pending[start:end].strip()) >= self.min_chars:
                out.append(pending[start:end])
                start = end
        self._pending = pending[start:]
        self._scanned = len(self._pending)
        return self._bounded(out)

    def _first_chunk(self) -> str | None:
        pending = self._pending
        clause = _CLAUSE_END.search(pending, max(0, self._scanned - 1))
        if len(self._word_ends) < self.first_words:
            start = max(0, self._scanned - 1)
            for match in _WORD_END.finditer(pending, start):
                self._word_ends.append(match.end())
                if len(self._word_ends) == self.first_words:
                    break
        self._scanned = len(pending)
        cut: int | None = clause.end() if clause is not None else None
        if len(self._word_ends) >= self.first_words:
            word_cut = self._word_ends[self.first_words - 1]
            cut = word_cut if cut is None else min(cut, word_cut)
        if cut is None:
            return None
        chunk, self._pending = pending[:cut], pending[cut:]
        self._word_ends = []
        return chunk

    def _bounded(self, out: list[str]) -> list[str]:
        """Cut pending text longer than ``max_chars`` at its last space before the limit."""
        while len(self._pending) > self.max_chars:
            head = self._pending[: self.max_chars]
            space = max(head.rfind(" "), head.rfind("\n"))
            cut = space + 1 if space > 0 else self.max_chars
            out.append(self._pending[:cut])
            self._pending = self._pending[cut:]
            self._started = True
            self._word_ends = []
            self._scanned = 0
        return out

    def flush(self) -> list[str]:
        """Return whatever is left as a last clause."""
        rest, self._pending = self._pending, ""
        self._started = True
        self._scanned = 0
        return [rest] if rest.strip() else []


async def run_turn_evaluation(command: EvaluateTurn, engines: Engines, emit: Emit) -> None:
    """Ask the turn model whether the user's speech is a finished turn (semantic_vad).

    A failing model must not leave the user hanging: the turn is then taken as complete.
    """
    probability = 1.0
    if engines.turn is not None:
        try:
            pcm = resample(command.pcm16, SESSION_RATE, engines.turn.sample_rate)
            started = time.perf_counter()
            probability = await engines.turn.completion_probability(pcm)
            metrics.ENGINE_SECONDS.labels("turn", "total").observe(elapsed_since(started))
        except Exception:
            log.exception("turn model failed; ending the turn")
            metrics.ENGINE_FAILURES.labels("turn", "server_error").inc()
    await emit(be.TurnEvaluated(command.item_id, probability))


async def run_transcription(command: Transcribe, engines: Engines, emit: Emit) -> None:
    """Transcribe one user item; always ends with Completed or Failed."""
    stt = engines.stt
    request = _transcription_request(command, engines)
    started = time.perf_counter()
    try:
        final: TranscriptFinal | None = None
        async with closing(stt.transcribe(request)) as events:
            async for event in events:
                if isinstance(event, TranscriptDelta):
                    await emit(be.TranscriptionDelta(command.item_id, valid_text(event.text)))
                else:
                    final = event
        if final is None:
            raise BackendError("the STT engine returned no final transcript")
        text = valid_text(final.text)
        metrics.ENGINE_SECONDS.labels("stt", "total").observe(elapsed_since(started))
        await emit(
            be.TranscriptionCompleted(command.item_id, text, final.audio_seconds, final.language)
        )
    except BackendError as exc:
        metrics.ENGINE_FAILURES.labels("stt", exc.code).inc()
        await emit(be.TranscriptionFailed(command.item_id, exc.code, exc.message))
    except Exception as exc:  # an engine bug must not kill the session
        log.exception("transcription engine crashed")
        metrics.ENGINE_FAILURES.labels("stt", "server_error").inc()
        await emit(be.TranscriptionFailed(command.item_id, "server_error", str(exc) or repr(exc)))


@dataclass(frozen=True)
class Heard:
    """A transcript taken ahead of the turn's end, with the language the engine heard."""

    text: str
    language: str | None = None


async def transcript_of(command: Transcribe, engines: Engines) -> Heard | None:
    """The final transcript of ``command``'s audio, emitting nothing; None if it failed."""
    stt = engines.stt
    request = _transcription_request(command, engines)
    started = time.perf_counter()
    try:
        async with closing(stt.transcribe(request)) as events:
            finals = [event async for event in events if isinstance(event, TranscriptFinal)]
    except BackendError as exc:  # a failed peek only means no prepared answer
        metrics.ENGINE_FAILURES.labels("stt", exc.code).inc()
        log.debug("transcribing the speech so far failed", exc_info=True)
        return None
    except Exception:
        metrics.ENGINE_FAILURES.labels("stt", "server_error").inc()
        log.debug("transcribing the speech so far failed", exc_info=True)
        return None
    metrics.ENGINE_SECONDS.labels("stt", "total").observe(elapsed_since(started))
    return Heard(finals[-1].text.strip(), finals[-1].language) if finals else None


async def run_known_transcription(command: Transcribe, heard: Heard, emit: Emit) -> None:
    """Report an already known transcript for ``command`` as the engine would have."""
    seconds = len(command.pcm16) / 2 / SESSION_RATE
    await report_transcript(command.item_id, heard.text, seconds, emit, heard.language)


async def report_transcript(
    item_id: str, text: str, audio_seconds: float, emit: Emit, language: str | None = None
) -> None:
    """A whole final transcript as events: one delta with the text (if any), then completed."""
    text = valid_text(text)
    if text:
        await emit(be.TranscriptionDelta(item_id, text))
    await emit(be.TranscriptionCompleted(item_id, text, audio_seconds, language))


def _transcription_request(command: Transcribe, engines: Engines) -> TranscriptionRequest:
    """``command``'s audio at the STT engine's rate, with its transcription options."""
    stt = engines.stt
    return TranscriptionRequest(
        pcm16=resample(command.pcm16, SESSION_RATE, stt.sample_rate),
        sample_rate=stt.sample_rate,
        model=command.model,
        language=command.language,
        prompt=command.prompt,
    )


async def run_response(command: Generate, engines: Engines, emit: Emit) -> None:
    """Generate one response: LLM text (spoken clause by clause in audio mode) and tool calls.

    Always ends with :class:`~openrealtime.core.backend_events.ResponseGenerated` or
    :class:`~openrealtime.core.backend_events.ResponseFailed`, unless cancelled.
    """
    rid = command.response_id
    request = command.request
    if command.language is not None:  # the model is told the language (core.languages)
        request = replace(request, messages=with_language(request.messages, command.language))
    chunker = ClauseChunker()
    speak = command.modality == "audio"
    engine = "llm"  # the engine at work if a failure comes (for the failure metric)
    started = time.perf_counter()

    async def say(clauses: list[str]) -> None:
        nonlocal engine
        for clause in clauses:
            await emit(be.ResponseText(rid, clause))
            engine = "tts"
            await _synthesize(clause, command, engines, emit)
            engine = "llm"

    try:
        done: GenerationDone | None = None
        first = True
        async with closing(engines.llm.generate(request)) as events:
            async for event in events:
                if first:
                    first = False
                    metrics.ENGINE_SECONDS.labels("llm", "first").observe(elapsed_since(started))
                    await emit(be.ResponseFirstToken(rid))
                match event:  # engine text made valid Unicode here, whatever the engine
                    case TextChunk():
                        if speak:
                            await say(chunker.push(valid_text(event.text)))
                        else:
                            await emit(be.ResponseText(rid, valid_text(event.text)))
                    case ToolCallStart():
                        await say(chunker.flush())
                        await emit(be.ResponseToolCall(rid, event.index, valid_text(event.name)))
                    case ToolCallArguments():
                        delta = valid_text(event.delta)
                        await emit(be.ResponseToolArguments(rid, event.index, delta))
                    case GenerationDone():
                        done = event
        if done is None:
            raise BackendError("the LLM engine ended without finishing its answer")
        metrics.ENGINE_SECONDS.labels("llm", "total").observe(elapsed_since(started))
        await say(chunker.flush())
        await emit(
            be.ResponseGenerated(
                rid, done.finish_reason, done.input_tokens, done.output_tokens, done.cached_tokens
            )
        )
    except BackendError as exc:
        metrics.ENGINE_FAILURES.labels(engine, exc.code).inc()
        await emit(be.ResponseFailed(rid, exc.code, exc.message))
    except Exception as exc:  # an engine bug must not kill the session
        log.exception("response engine crashed")
        metrics.ENGINE_FAILURES.labels(engine, "server_error").inc()
        await emit(be.ResponseFailed(rid, "server_error", str(exc) or repr(exc)))


async def _synthesize(text: str, command: Generate, engines: Engines, emit: Emit) -> None:
    tts = engines.tts
    resampler = StreamResampler(tts.sample_rate, SESSION_RATE)
    request = SynthesisRequest(
        text=text.strip(), voice=command.voice, speed=command.speed, language=command.language
    )
    started = time.perf_counter()
    first = True
    async with closing(tts.synthesize(request)) as chunks:
        async for pcm in chunks:
            if first:
                first = False
                metrics.ENGINE_SECONDS.labels("tts", "first").observe(elapsed_since(started))
            out = resampler.process(pcm)
            if out:
                await emit(be.ResponseAudio(command.response_id, out))
    metrics.ENGINE_SECONDS.labels("tts", "total").observe(elapsed_since(started))
    tail = resampler.flush()
    if tail:
        await emit(be.ResponseAudio(command.response_id, tail))
