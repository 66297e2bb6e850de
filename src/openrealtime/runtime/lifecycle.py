"""A process's serving state: is it ready, is it draining, which sessions does it hold.

One :class:`Lifecycle` per app (``Services.lifecycle``). The transports ask
:attr:`Lifecycle.accepting` before they start a session or a call; ``GET /readyz`` reports
:meth:`Lifecycle.readiness`; the server calls :meth:`Lifecycle.drain` on SIGTERM before uvicorn
closes its connections (issue 9, items 5 and 6):

1. readiness fails at once and new sessions and calls are refused;
2. the open ones go on for up to ``drain_seconds``;
3. each one left is shut down: every response in flight ends with its ``response.done``
   (``failed``, ``server_shutting_down``), the client gets an ``error`` saying the server is
   shutting down, then a close (1001).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["SHUTDOWN_MESSAGE", "Drainable", "Lifecycle", "watch_engines"]

_log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "The server is shutting down; reconnect to continue."
"""What a session still open at the end of the drain is told."""

_FINAL_WAIT_S = 5.0
"""How long shut-down sessions get to send their last events and close."""


class Drainable(Protocol):
    """A live session or call the lifecycle can end (``SessionDriver`` is one)."""

    def shut_down(self, message: str) -> None:
        """End the session now: responses done, an error event, a close."""
        ...


class Lifecycle:
    """Readiness, draining and the live sessions of one app."""

    def __init__(self) -> None:
        self.draining = False
        self._problems: dict[str, str] = {}
        self._sessions: set[Drainable] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    # ------------------------------------------------------------------ readiness

    @property
    def accepting(self) -> bool:
        """Whether new sessions and calls may start (not draining)."""
        return not self.draining

    def problem(self, what: str, reason: str | None) -> None:
        """Record (or, with ``None``, clear) why ``what`` (an engine, say) is not ready."""
        if reason is None:
            if self._problems.pop(what, None) is not None:
                _log.info("%s is ready again", what)
            return
        if self._problems.get(what) != reason:
            _log.warning("not ready: %s: %s", what, reason)
        self._problems[what] = reason

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)``: not ready while draining or while a problem is recorded."""
        reasons = [f"{what}: {why}" for what, why in sorted(self._problems.items())]
        if self.draining:
            reasons.insert(0, "draining: the server is shutting down")
        return not reasons, reasons

    # ------------------------------------------------------------------ sessions

    @property
    def sessions(self) -> int:
        """How many sessions and calls are live."""
        return len(self._sessions)

    def add(self, session: Drainable) -> None:
        """A session started (call from its runner)."""
        self._sessions.add(session)
        self._empty.clear()

    def discard(self, session: Drainable) -> None:
        """A session ended."""
        self._sessions.discard(session)
        if not self._sessions:
            self._empty.set()

    async def drain(self, seconds: float) -> None:
        """Stop accepting, let sessions go on for ``seconds``, then shut the rest down.

        Returns once every session ended (or a few seconds after they were told to).
        """
        self.draining = True
        if not self._sessions:
            return
        _log.info("draining: %d session(s) may go on for up to %g s", len(self._sessions), seconds)
        try:
            async with asyncio.timeout(seconds):
                await self._empty.wait()
            _log.info("drained: every session ended by itself")
            return
        except TimeoutError:
            pass
        left = list(self._sessions)
        _log.info("drain time is over: shutting down %d session(s)", len(left))
        for session in left:
            session.shut_down(SHUTDOWN_MESSAGE)
        try:
            async with asyncio.timeout(_FINAL_WAIT_S):
                await self._empty.wait()
        except TimeoutError:
            _log.warning("%d session(s) did not close after shutting down", len(self._sessions))


async def watch_engines(
    lifecycle: Lifecycle,
    *,
    warm_up: Callable[[], Awaitable[None]],
    probe: Callable[[], Awaitable[dict[str, str | None]]],
    warmed: bool,
    interval: float = 5.0,
) -> None:
    """Keep readiness true to the engines; run for the app's life (cancel at shutdown).

    Until the engines have warmed up (a remote engine down at start-up), retry the warm-up
    with a growing pause; then probe the remote engines every ``interval`` seconds, so
    readiness fails while one is unreachable and recovers when it answers again.
    """
    pause = 0.5
    while not warmed:
        try:
            await warm_up()
        except Exception as exc:  # any engine failure: report it, try again
            lifecycle.problem("engines", f"warm-up failed ({str(exc)[:160] or type(exc).__name__})")
            await asyncio.sleep(pause)
            pause = min(pause * 2, interval)
            continue
        warmed = True
        lifecycle.problem("engines", None)
    while True:
        await asyncio.sleep(interval)
        for what, problem in (await probe()).items():
            lifecycle.problem(what, None if problem is None else f"unreachable ({problem})")
