"""Running the app under uvicorn: one process or several, each draining before it stops.

:class:`Server` is uvicorn's server with two changes:

* on SIGTERM (or Ctrl-C) it first drains the app (``Lifecycle.drain``: readiness fails, new
  sessions and calls are refused, the open ones go on for up to ``drain_seconds``, then each
  is ended with a ``server_shutting_down`` error and a close) and only then lets uvicorn close
  connections and run the lifespan's shutdown (issue 9, item 6);
* with ``--redis-url`` it also listens on a private address of its own
  (``Config.internal_host``/``internal_port``), plain HTTP, serving the same app: where the
  other workers and instances relay sidebands and hangups for the WebRTC calls this process
  holds. Its URL is put on ``app.state.internal_url`` before the lifespan starts, so the call
  directory can advertise it (docs/deployment.md "Calls across workers and instances").

:func:`run_workers` runs several of them with uvicorn's own multiprocess supervisor
(``--workers N``): the parent binds the public port once and spawns the workers, which share
it and build their app from ``OPENREALTIME_*`` variables (``app.create_app_from_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
import uvicorn.supervisors.multiprocess as _multiprocess
from uvicorn.config import STARTUP_FAILURE

from openrealtime.config import Config
from openrealtime.runtime.lifecycle import Lifecycle

__all__ = [
    "FACTORY",
    "Server",
    "Supervisor",
    "WorkerProcess",
    "bind_internal_socket",
    "find_app",
    "find_lifecycle",
    "run_workers",
]

_log = logging.getLogger(__name__)

FACTORY = "openrealtime.app:create_app_from_env"
"""The app factory uvicorn's worker processes import (``factory=True``)."""

_METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client's workers share their metrics (one directory for all of them)."""


def find_app(app: Any) -> Any | None:
    """The app carrying our :class:`Config` (``app.state.config``), through uvicorn's wrappers."""
    seen = 0
    while app is not None and seen < 16:
        state = getattr(app, "state", None)
        if isinstance(getattr(state, "config", None), Config):
            return app
        app = getattr(app, "app", None)
        seen += 1
    return None


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


def bind_internal_socket(config: Config, backlog: int = 2048) -> tuple[socket.socket, str]:
    """Bind and listen on this process's private address; return the socket and its URL.

    The port is the first free one of ``internal_port`` .. ``internal_port + workers - 1``
    (any free port when ``internal_port`` is 0), so the workers of one instance take one port
    each. The URL names ``advertise_host`` (else ``internal_host``).

    Raises:
        OSError: no port of the range could be bound.
    """
    host = config.internal_host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = (
        range(config.internal_port, min(config.internal_port + config.worker_count, 65536))
        if config.internal_port
        else range(0, 1)
    )
    error: OSError | None = None
    for port in ports:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)  # at once: another worker's bind of this port then fails
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.setblocking(False)
        advertised = config.advertise_host or config.internal_host
        if ":" in advertised and not advertised.startswith("["):
            advertised = f"[{advertised}]"
        return sock, f"http://{advertised}:{sock.getsockname()[1]}"
    assert error is not None
    raise error


class Server(uvicorn.Server):
    """uvicorn's server, draining the app before it shuts down; with Redis, a private listener.

    Args:
        config: uvicorn's config.
        drain_seconds: how long open sessions may go on after the signal; ``None`` reads the
            app's ``Config.drain_seconds`` (the workers of :func:`run_workers` do).
    """

    def __init__(self, config: uvicorn.Config, *, drain_seconds: float | None = None) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.internal_url: str | None = None
        """This process's private URL, once it listens there (only with ``--redis-url``)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Bind the private listener (with Redis), start the app, then serve both addresses."""
        app = find_app(self.config.loaded_app)
        app_config: Config | None = app.state.config if app is not None else None
        internal: socket.socket | None = None
        if app is not None and app_config is not None and app_config.redis_url:
            try:
                internal, self.internal_url = bind_internal_socket(app_config, self.config.backlog)
            except OSError as exc:
                _log.error(
                    "cannot listen on the private address %s (port %d and up): %s",
                    app_config.internal_host,
                    app_config.internal_port,
                    exc,
                )
                raise SystemExit(STARTUP_FAILURE) from None
            app.state.internal_url = self.internal_url  # before the lifespan reads it
        try:
            await super().startup(sockets)
        except BaseException:
            if internal is not None:
                internal.close()
            raise
        if internal is None:
            return
        if not self.started:
            internal.close()
            return
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._create_protocol, sock=internal, ssl=None, backlog=self.config.backlog
        )
        self.servers.append(server)  # closed by uvicorn's shutdown, after the drain
        _log.info("calls of this process are reachable at %s (private listener)", self.internal_url)

    def _create_protocol(self, _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        """A connection on the private listener: the same protocol uvicorn builds for the port."""
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            _loop=_loop,
        )
        return protocol

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain the app's sessions, then uvicorn's own shutdown (connections, lifespan)."""
        lifecycle = find_lifecycle(self.config.loaded_app)
        if lifecycle is not None and not self.force_exit:
            seconds = self.drain_seconds
            if seconds is None:
                app = find_app(self.config.loaded_app)
                seconds = app.state.config.drain_seconds if app is not None else 0.0
            await lifecycle.drain(seconds)
        await super().shutdown(sockets)


class WorkerProcess(_multiprocess.Process):
    """One of uvicorn's worker processes, running our draining :class:`Server`."""

    @property
    def server(self) -> uvicorn.Server:
        """The worker's server (built in the child, from the unpickled uvicorn config)."""
        if self._server is None:
            self._server = Server(config=self.config)
        return self._server


@contextlib.contextmanager
def _workers_are_ours() -> Iterator[None]:
    """Make uvicorn's supervisor start (and restart) :class:`WorkerProcess` workers.

    uvicorn builds each worker with the module-level name ``Process`` and offers no hook for
    another server class; this parent process is the supervisor and nothing else, so the name
    is swapped for the supervisor's lifetime. A uvicorn without that name fails here, loudly,
    rather than running workers that would not drain.
    """
    original = getattr(_multiprocess, "Process", None)
    if not (isinstance(original, type) and issubclass(WorkerProcess, original)):
        raise RuntimeError("uvicorn's multiprocess supervisor changed: cannot run workers")
    setattr(_multiprocess, "Process", WorkerProcess)  # noqa: B010 - a module global, on purpose
    try:
        yield
    finally:
        setattr(_multiprocess, "Process", original)  # noqa: B010


class Supervisor(_multiprocess.Multiprocess):
    """uvicorn's multiprocess supervisor whose workers are :class:`WorkerProcess` (draining).

    It restarts a worker that dies, replaces all of them on SIGHUP, and on SIGTERM/SIGINT
    sends SIGTERM to each and waits for their drains.
    """

    def run(self) -> None:
        """Spawn the workers and supervise them until a signal stops them."""
        with _workers_are_ours():
            super().run()

    @property
    def failed_to_start(self) -> bool:
        """Whether a worker failed before it served (bad app, engines, socket)."""
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set variables for the workers to inherit; restore the parent's afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _metrics_directory() -> Iterator[None]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers (unless the operator set one)."""
    if os.environ.get(_METRICS_DIR_VARIABLE):
        yield
        return
    path = tempfile.mkdtemp(prefix="openrealtime-metrics-")
    try:
        with _environment({_METRICS_DIR_VARIABLE: path}):
            yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_workers(config: Config, settings: dict[str, Any]) -> int:
    """Serve ``config`` with ``config.worker_count`` processes sharing one port; block until done.

    The parent binds the port, hands ``config`` to the workers as ``OPENREALTIME_*``
    variables (:meth:`Config.to_env`) and a fresh ``PROMETHEUS_MULTIPROC_DIR``, then
    supervises them with uvicorn's :class:`~uvicorn.supervisors.Multiprocess`.

    Args:
        config: the server config (its secrets travel in the workers' environment).
        settings: the uvicorn settings (``cli.uvicorn_settings``).

    Returns:
        0 after a normal stop, 1 when a worker failed to start.
    """
    uvicorn_config = uvicorn.Config(
        FACTORY,
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.worker_count,
        **settings,
    )
    with _environment(config.to_env()), _metrics_directory():
        sock = uvicorn_config.bind_socket()
        supervisor = Supervisor(uvicorn_config, sockets=[sock])
        try:
            supervisor.run()
        finally:
            sock.close()
    return 1 if supervisor.failed_to_start else 0
