"""Preparing the answer during the user's pause (``core.commands.Speculate``).

``server_vad`` waits ``silence_duration_ms`` (200 ms by default) after the last speech before it
ends the turn, and only then do transcription, the LLM and TTS run: on the embedded stack that
is ~240 ms of waiting followed by ~300 ms of work. When the core reports the first quiet frame,
a :class:`Speculation` takes the transcript of the speech so far (a streaming STT's
:meth:`~openrealtime.runtime.listener.Listener.peek`) and runs the whole response pipeline,
holding its results back. When the turn really ends, the core's :class:`Generate` is compared
with the prepared one: same context, same user words, same settings, and the held results are
released under the real response id as if they had just been produced (the pipeline keeps
running for the rest); otherwise the speculation is cancelled and the response runs as usual.
Nothing reaches the wire before the real response exists, so a client cannot tell, except by
the latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from openrealtime.backends.base import ChatMessage, Engines
from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate, Speculate
from openrealtime.core.languages import reply_language
from openrealtime.runtime.pipeline import Emit, Heard, run_response

log = logging.getLogger(__name__)

Peek = Callable[[], Awaitable[Heard | None]]

MAX_HELD_BYTES = 2 * 24_000 * 2
"""Audio held before adoption (2 s at 24 kHz): the pipeline then waits, so a long answer is
not produced in full for a turn that may still go on."""

_ResponseEvent = (
    be.ResponseFirstToken
    | be.ResponseText
    | be.ResponseAudio
    | be.ResponseToolCall
    | be.ResponseToolArguments
    | be.ResponseGenerated
    | be.ResponseFailed
)


class Speculation:
    """One prepared answer for ``command.item_id``; owned by the session driver.

    Call :meth:`adopt` with the turn's real :class:`Generate`, or :meth:`cancel`.
    """

    def __init__(self, command: Speculate, engines: Engines, peek: Peek, forward: Emit) -> None:
        self.item_id = command.item_id
        self.generate: Generate | None = None
        """The request being answered, once the transcript is known (``response_id`` "")."""
        self._template = command.template
        self._engines = engines
        self._peek = peek
        self._forward = forward
        self._held: list[_ResponseEvent] = []
        self._held_bytes = 0
        self._failed = False
        self._response_id: str | None = None
        self._adopted = asyncio.Event()
        self._started = time.perf_counter()
        self._stamps: dict[str, float] = {}
        self._heard: asyncio.Future[Heard | None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run())
        self.task.add_done_callback(lambda _: self._hear(None))

    def progress(self) -> str:
        """What was ready, in ms since the pause began (for the log)."""
        now = (time.perf_counter() - self._started) * 1000
        stamps = " ".join(f"{k}=+{v:.0f}" for k, v in self._stamps.items())
        return f"{len(self._held)} results held, {stamps or 'nothing yet'}, now +{now:.0f} ms"

    def _stamp(self, what: str) -> None:
        if what not in self._stamps:
            self._stamps[what] = (time.perf_counter() - self._started) * 1000

    @property
    def transcript(self) -> str | None:
        """The user's words this speculation answers, once known."""
        return self.generate.messages[-1].content if self.generate is not None else None

    def matches(self, command: Generate) -> bool:
        """Whether this speculation answered exactly what ``command`` asks."""
        return (
            self.generate is not None
            and not self._failed
            and not self.task.cancelled()
            and replace(command, response_id="") == self.generate
        )

    def adopt(self, command: Generate, deliver: Callable[[be.BackendEvent], None]) -> None:
        """Release the held results as ``command``'s, in order, through ``deliver``.

        ``deliver`` must queue synchronously: later results go through ``forward`` and must not
        overtake the held ones. Call only if :meth:`matches`.
        """
        response_id = command.response_id
        for event in self._held:
            deliver(replace(event, response_id=response_id))
        self._held.clear()
        self._response_id = response_id
        self._adopted.set()

    def cancel(self) -> None:
        """Throw the prepared answer away (the engine work stops at once)."""
        self.task.cancel()

    async def heard(self) -> Heard | None:
        """The transcript this speculation takes of the speech, once it has it.

        None if it failed or was dropped first. A turn that ends while it is being taken waits
        for it rather than transcribing the same speech a second time.
        """
        return await asyncio.shield(self._heard)

    def _hear(self, heard: Heard | None) -> None:
        if not self._heard.done():
            self._heard.set_result(heard)

    async def _run(self) -> None:
        heard = await self._peek()
        self._hear(heard)
        self._stamp("transcript")
        if heard is None or not heard.text:
            return
        if heard.language is not None and reply_language(heard.language) != self._template.language:
            # Spoken in another language than the last turn: the answer the turn gets is asked
            # in that language, not this template's (core.languages). Keep the transcript only.
            return
        user = ChatMessage("user", heard.text)
        self.generate = self._template.with_messages((*self._template.messages, user))
        await run_response(self.generate, self._engines, self._emit)

    async def _emit(self, event: be.BackendEvent) -> None:
        assert isinstance(event, _ResponseEvent)
        if self._response_id is not None:
            await self._forward(replace(event, response_id=self._response_id))
            return
        self._held.append(event)
        if isinstance(event, be.ResponseFirstToken):
            self._stamp("first_token")
        elif isinstance(event, be.ResponseFailed):
            self._failed = True
        elif isinstance(event, be.ResponseAudio):
            self._stamp("first_audio")
            self._held_bytes += len(event.pcm16)
            if self._held_bytes >= MAX_HELD_BYTES:
                await self._adopted.wait()
