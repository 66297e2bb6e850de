"""Recognising a user turn while it is spoken, for STT engines that can stream.

The core sends the speech of a turn as :class:`~openrealtime.core.commands.Listen` pieces while
the user talks; a :class:`Listener` feeds them, resampled, to the engine's stream in order. When
the turn is committed, :meth:`Listener.finish` asks for the final text, which is then ready
about as fast as the decoder can close the utterance (tens of ms) instead of after a full
decode of the whole item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler
from openrealtime.backends.base import PeekableSpeechStream, SpeechStream, StreamingSpeechToText
from openrealtime.backends.errors import BackendError
from openrealtime.core import backend_events as be
from openrealtime.runtime.pipeline import Emit, Heard, report_transcript

log = logging.getLogger(__name__)

_FINISH = object()


@dataclass(frozen=True)
class _Peek:
    answer: asyncio.Future[str | None]


class Listener:
    """One streaming recognition, owned by the session driver; feed, then finish or cancel."""

    def __init__(self, stt: StreamingSpeechToText, item_id: str, emit: Emit) -> None:
        self.item_id = item_id
        self._stt = stt
        self._emit = emit
        self._queue: deque[bytes | _Peek | object] = deque()
        self._queued = asyncio.Event()
        self._samples = 0
        self._known: str | None = None
        self.task = asyncio.create_task(self._run())

    def feed(self, pcm16: bytes) -> None:
        """Queue more speech (PCM16, 24 kHz); never blocks."""
        self._samples += len(pcm16) // 2
        self._put(pcm16)

    def finish(self, known: str | None = None) -> None:
        """The turn was committed: produce the final transcript (as backend events).

        ``known``: the transcript is already known (a :meth:`peek` made once the speech had
        ended, with no speech since): it is used as is and the rest of the audio, silence by
        the VAD's account, is not decoded.
        """
        self._known = known
        self._put(_FINISH)

    async def peek(self) -> Heard | None:
        """The final transcript of the speech fed so far, the turn left open (None: can't tell).

        Answered in order after the pieces already fed; None when the engine's streams cannot
        peek or the stream failed. Streams report no language.
        """
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._put(_Peek(answer))
        text = await answer
        return Heard(text) if text is not None else None

    def _more_speech(self) -> bytes:
        """Speech already queued behind the current piece, up to the next marker.

        Fed in one call: a decoder that fell behind (each call is a round trip to its
        process) catches up at once, so a peek or the final text is not queued behind
        many 20 ms pieces.
        """
        pieces: list[bytes] = []
        while self._queue and isinstance(head := self._queue[0], bytes) and len(pieces) < 50:
            pieces.append(head)
            self._queue.popleft()
        return b"".join(pieces)

    def _put(self, item: bytes | _Peek | object) -> None:
        self._queue.append(item)
        self._queued.set()

    async def _get(self) -> bytes | _Peek | object:
        while not self._queue:
            self._queued.clear()
            await self._queued.wait()
        return self._queue.popleft()

    @staticmethod
    async def _answer_peek(stream: SpeechStream, answer: asyncio.Future[str | None]) -> None:
        text: str | None = None
        if isinstance(stream, PeekableSpeechStream):
            try:
                text = (await stream.apeek()).strip()
            except BackendError:
                raise
            except Exception:
                log.exception("peeking at the transcript failed")
        if not answer.done():
            answer.set_result(text)

    async def _run(self) -> None:
        stream: SpeechStream | None = None
        try:
            stream = await self._stt.aopen_stream()
            resampler = StreamResampler(SESSION_RATE, self._stt.sample_rate)
            while (piece := await self._get()) is not _FINISH:
                if self._known is not None:
                    break
                if isinstance(piece, _Peek):
                    await self._answer_peek(stream, piece.answer)
                    continue
                assert isinstance(piece, bytes)
                pcm = resampler.process(piece + self._more_speech())
                if pcm:
                    await stream.afeed(pcm)
            if self._known is not None:
                text = self._known
            else:
                tail = resampler.flush()
                if tail:
                    await stream.afeed(tail)
                text = (await stream.afinish()).strip()
            await report_transcript(self.item_id, text, self._samples / SESSION_RATE, self._emit)
        except BackendError as exc:
            await self._emit(be.TranscriptionFailed(self.item_id, exc.code, exc.message))
        except Exception as exc:  # an engine bug must not kill the session
            log.exception("streaming transcription crashed")
            await self._emit(be.TranscriptionFailed(self.item_id, "server_error", repr(exc)))
        finally:
            while self._queue:  # nobody waits forever on a peek
                left = self._queue.popleft()
                if isinstance(left, _Peek) and not left.answer.done():
                    left.answer.set_result(None)
            if stream is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(stream.aclose())
