"""Running a blocking engine call on a worker thread and streaming its output to asyncio.

Used by the engines whose libraries block (pocketsphinx, espeak-ng, flite): ``produce`` runs on
the engine's executor and calls ``emit(item)`` for each piece; the event loop gets each piece as
soon as it is emitted. When the consumer stops early, ``emit`` starts returning ``False`` so the
worker can stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from openrealtime.backends.errors import BackendError

T = TypeVar("T")


class Emitter(Generic[T]):
    """Hands items from a worker thread to the event loop; ``alive`` until the consumer left."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.alive = True

    def __call__(self, item: T) -> bool:
        """Send one item (worker thread); ``False`` once nobody is listening."""
        return self.post("item", item)

    def post(self, kind: str, value: object) -> bool:
        """Send an item, the end (``"end"``) or a failure (``"error"``)."""
        if not self.alive:
            return False
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed
            self.alive = False
        return self.alive


async def iterate_in_thread(
    executor: ThreadPoolExecutor,
    produce: Callable[[Emitter[T]], None],
    *,
    engine: str,
    code: str,
    not_started: Callable[[], None] | None = None,
) -> AsyncIterator[T]:
    """Run ``produce(emit)`` on ``executor`` and yield what it emits, as it emits it.

    Errors raised by ``produce`` are re-raised as :class:`BackendError` with ``code`` (a
    ``BackendError`` passes through). If ``produce`` cannot be scheduled because the engine was
    closed, ``not_started`` is called and a ``BackendError`` is raised.
    """
    emit: Emitter[T] = Emitter(asyncio.get_running_loop())

    def job() -> None:
        try:
            produce(emit)
        except BaseException as exc:
            emit.post("error", exc)
        else:
            emit.post("end", None)

    try:
        executor.submit(job)
    except RuntimeError as exc:  # the engine was closed
        if not_started is not None:
            not_started()
        raise BackendError(f"{engine} engine is closed: {exc}", code=code) from exc
    try:
        while True:
            kind, value = await emit.queue.get()
            if kind == "end":
                return
            if kind == "error":
                if isinstance(value, BackendError):
                    raise value
                raise BackendError(f"{engine} failed: {value}", code=code) from value
            yield value
    finally:
        emit.alive = False
