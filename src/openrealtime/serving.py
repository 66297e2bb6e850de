"""Running the app under uvicorn: one process, with a drain before shutdown (issue 9, item 6).

:class:`Server` is uvicorn's server with one change: on SIGTERM (or Ctrl-C) it first drains the
app (``Lifecycle.drain``: readiness fails, new sessions and calls are refused, the open ones go
on for up to ``drain_seconds``, then each is ended with a ``server_shutting_down`` error and a
close) and only then lets uvicorn close connections and run the lifespan's shutdown.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn

from openrealtime.runtime.lifecycle import Lifecycle

__all__ = ["Server", "find_lifecycle"]

_log = logging.getLogger(__name__)


def find_lifecycle(app: Any) -> Lifecycle | None:
    """The :class:`Lifecycle` of an app, through the middlewares uvicorn wraps around it."""
    seen = 0
    while app is not None and seen < 16:
        state = getattr(app, "state", None)
        services = getattr(state, "services", None) if state is not None else None
        lifecycle = getattr(services, "lifecycle", None)
        if isinstance(lifecycle, Lifecycle):
            return lifecycle
        app = getattr(app, "app", None)
        seen += 1
    return None


class Server(uvicorn.Server):
    """uvicorn's server, draining the app before it shuts down.

    Args:
        config: uvicorn's config.
        drain_seconds: how long open sessions may go on after the signal.
    """

    def __init__(self, config: uvicorn.Config, *, drain_seconds: float = 0.0) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain the app's sessions, then uvicorn's own shutdown (connections, lifespan)."""
        lifecycle = find_lifecycle(self.config.loaded_app)
        if lifecycle is not None and not self.force_exit:
            await lifecycle.drain(self.drain_seconds)
        await super().shutdown(sockets)
