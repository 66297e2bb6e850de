"""Which process holds each WebRTC call, shared by every worker and instance through Redis.

A call lives in the process that answered its offer (its peer connection, media and session
cannot move). With several workers or instances behind one address, a sideband
(``/v1/realtime?call_id=…``) or a hangup may land on another process; that process asks the
directory who owns the call and relays the request there (docs/deployment.md "Calls across
workers and instances").

What Redis holds: one key per live call, ``openrealtime:call:<call_id>`` → the owner's private
URL (``http://host:port``, the listener each process opens with ``--redis-url``), written with
a :data:`TTL_S` expiry and rewritten every :data:`HEARTBEAT_S` by the owner while the call
lives; deleted when the call ends. A dead owner stops rewriting, so its calls vanish from the
directory within :data:`TTL_S` and are then ``call_not_found`` everywhere.

Without ``--redis-url`` there is no directory: the in-process :class:`CallRegistry` of
:mod:`openrealtime.transports.webrtc_calls` is all there is, as before. ``redis`` is imported
only when a directory is made. This module is a shell (house rule 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "FORWARDED_HEADER",
    "HEARTBEAT_S",
    "KEY_PREFIX",
    "TTL_S",
    "CallDirectory",
    "DirectoryUnavailable",
    "RedisCallDirectory",
    "call_directory",
]

_log = logging.getLogger(__name__)

KEY_PREFIX = "openrealtime:call:"
"""Prefix of the directory's keys; the call id follows."""

TTL_S = 3.0
"""Seconds a call's key lives without its owner's heartbeat: how soon a dead owner's calls
are ``call_not_found`` everywhere."""

HEARTBEAT_S = 1.0
"""Seconds between two rewrites of the owner's keys (a third of :data:`TTL_S`, so one lost
beat costs nothing)."""

REDIS_TIMEOUT_S = 2.0
"""Most seconds one Redis command (or connection) may take before it counts as failed."""

FORWARDED_HEADER = "X-OpenRealtime-Forwarded"
"""Marks a request one process relayed to a call's owner: the owner serves it from its own
calls only and never relays it again (no loops, even with a stale directory entry)."""


class DirectoryUnavailable(Exception):
    """Redis did not answer: who owns a call is unknown for now."""


class CallDirectory(Protocol):
    """Where each live call is owned: the small interface the call routes use."""

    @property
    def url(self) -> str:
        """This process's private URL, as the other processes reach it."""
        ...

    async def claim(self, call_id: str) -> None:
        """Record that this process owns ``call_id`` (before its answer is sent).

        Raises:
            DirectoryUnavailable: Redis did not answer; the call must not start.
        """
        ...

    async def release(self, call_id: str) -> None:
        """The call ended here: forget it (never raises; the key expires anyway)."""
        ...

    async def owner(self, call_id: str) -> str | None:
        """The private URL of the process owning ``call_id``; ``None`` for an unknown call.

        Raises:
            DirectoryUnavailable: Redis did not answer.
        """
        ...


class RedisCallDirectory:
    """A :class:`CallDirectory` in Redis, with a heartbeat that keeps this process's calls.

    Create with the Redis URL and this process's private URL; :meth:`start` in the app's
    lifespan, :meth:`close` at its end.

    Args:
        redis_url: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix://`` for a socket).
        url: this process's private URL (``http://host:port``).
        on_problem: told ``"…why"`` when Redis stops answering and ``None`` when it answers
            again (the app feeds readiness with it).
        ttl_s: expiry of each key (:data:`TTL_S`).
        heartbeat_s: interval of the rewrites (:data:`HEARTBEAT_S`).
    """

    def __init__(
        self,
        redis_url: str,
        url: str,
        *,
        on_problem: Callable[[str | None], None] | None = None,
        ttl_s: float = TTL_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(
            redis_url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            decode_responses=True,
        )
        self._url = url
        self._ttl_ms = int(ttl_s * 1000)
        self._heartbeat_s = heartbeat_s
        self._on_problem = on_problem
        self._owned: set[str] = set()
        self._beat: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def url(self) -> str:
        """This process's private URL, as stored for the calls it owns."""
        return self._url

    async def start(self) -> None:
        """Check that Redis answers (readiness says so if not) and start the heartbeat."""
        try:
            await self._call(self._redis.ping())
        except DirectoryUnavailable as exc:
            self._problem(str(exc))
        else:
            self._problem(None)
        self._beat = asyncio.create_task(self._heartbeat(), name="call-directory-heartbeat")

    async def close(self) -> None:
        """Stop the heartbeat, forget the calls still owned, close the connections."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
        owned, self._owned = list(self._owned), set()
        if owned:
            with contextlib.suppress(DirectoryUnavailable):
                await self._call(self._redis.delete(*(KEY_PREFIX + c for c in owned)))
        await self._redis.aclose()

    async def claim(self, call_id: str) -> None:
        """Record that this process owns ``call_id``; see :meth:`CallDirectory.claim`."""
        await self._call(self._redis.set(KEY_PREFIX + call_id, self._url, px=self._ttl_ms))
        self._owned.add(call_id)

    async def release(self, call_id: str) -> None:
        """Forget ``call_id``; see :meth:`CallDirectory.release`."""
        if call_id not in self._owned:
            return
        self._owned.discard(call_id)
        try:
            await self._call(self._redis.delete(KEY_PREFIX + call_id))
        except DirectoryUnavailable as exc:
            _log.warning("could not remove call %s from the directory (%s)", call_id, exc)

    async def owner(self, call_id: str) -> str | None:
        """Who owns ``call_id``; see :meth:`CallDirectory.owner`."""
        value = await self._call(self._redis.get(KEY_PREFIX + call_id))
        return value if isinstance(value, str) and value else None

    async def _call(self, command: Any) -> Any:
        """Await one Redis command; any failure becomes :class:`DirectoryUnavailable`."""
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
                return await command
        except (RedisError, OSError, TimeoutError) as exc:
            raise DirectoryUnavailable(
                f"Redis did not answer ({str(exc)[:160] or type(exc).__name__})"
            ) from None

    async def _heartbeat(self) -> None:
        """Rewrite every owned key with a fresh expiry, every :attr:`_heartbeat_s` seconds."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._refresh()
            except DirectoryUnavailable as exc:
                self._problem(str(exc))
            else:
                self._problem(None)

    async def _refresh(self) -> None:
        owned = list(self._owned)
        if not owned:
            await self._call(self._redis.ping())
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for call_id in owned:
                pipe.set(KEY_PREFIX + call_id, self._url, px=self._ttl_ms)
            await self._call(pipe.execute())

    def _problem(self, reason: str | None) -> None:
        failing = reason is not None
        if failing and not self._failing:
            _log.warning("call directory: %s; calls here cannot be reached from elsewhere", reason)
        elif not failing and self._failing:
            _log.info("call directory: Redis answers again")
        self._failing = failing
        if self._on_problem is not None:
            self._on_problem(reason)


def call_directory(app: Any) -> CallDirectory | None:
    """The app's call directory (``app.state.call_directory``); ``None`` without Redis."""
    directory: CallDirectory | None = getattr(app.state, "call_directory", None)
    return directory
