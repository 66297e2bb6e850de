"""A real uvicorn server on a free loopback port, in the test's own event loop.

Use it for every test that needs real clients over real sockets (design.md house rule 6)::

    from tests.helpers.server import running_server, ws_url

    async with running_server(create_app(config, engines)) as base:   # "http://127.0.0.1:PORT"
        async with websockets.asyncio.client.connect(ws_url(base, "/v1/realtime?model=x")):
            ...

The server uses the CLI's WebSocket settings (``openrealtime.cli.uvicorn_settings``) for the
config stored on ``app.state.config`` (or an explicit ``config=``), so tests see the same
limits, ping and compression as production. Signal handlers are left alone and uvicorn does
not reconfigure logging (pytest keeps capturing it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn

from openrealtime.cli import uvicorn_settings
from openrealtime.config import Config

__all__ = ["running_server", "ws_url"]


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def ws_url(base: str, path: str = "/v1/realtime") -> str:
    """Turn ``http(s)://host:port`` into ``ws(s)://host:port`` + ``path``."""
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + path


@contextlib.asynccontextmanager
async def running_server(
    app: Any,
    *,
    config: Config | None = None,
    startup_timeout: float = 15.0,
    shutdown_timeout: float = 10.0,
    **uvicorn_overrides: Any,
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port; yield the base URL; shut down on exit.

    Args:
        app: the ASGI app (its lifespan runs: startup before the yield, shutdown after).
        config: the config whose WebSocket/TLS settings to use; defaults to
            ``app.state.config`` when the app has one, else :class:`Config` defaults.
        startup_timeout: seconds to wait for the server to listen.
        shutdown_timeout: seconds to wait for a graceful stop before forcing it; open
            WebSockets are closed with 1012 by uvicorn.
        **uvicorn_overrides: extra :class:`uvicorn.Config` arguments (they win).

    Yields:
        ``"http://127.0.0.1:PORT"`` (``https`` when the config has TLS files).
    """
    if config is None:
        state = getattr(app, "state", None)
        config = getattr(state, "config", None) or Config()
    settings: dict[str, Any] = uvicorn_settings(config)
    settings.update(
        host="127.0.0.1",
        port=0,
        log_config=None,
        timeout_graceful_shutdown=max(1, int(shutdown_timeout / 2)),
    )
    settings.update(uvicorn_overrides)
    server = _InProcessServer(uvicorn.Config(app, **settings))

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits on a failed startup; keep the loop alive
            raise RuntimeError(f"uvicorn exited during startup (status {exc.code})") from None

    task = asyncio.create_task(serve(), name="uvicorn-test-server")
    try:
        async with asyncio.timeout(startup_timeout):
            while not server.started:
                if task.done():
                    break
                await asyncio.sleep(0.005)
        if task.done():
            task.result()  # raises the startup failure
            raise RuntimeError("uvicorn stopped before it started listening")
        sockname = server.servers[0].sockets[0].getsockname()
        scheme = "https" if settings.get("ssl_certfile") else "http"
        yield f"{scheme}://127.0.0.1:{sockname[1]}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=shutdown_timeout)
        if not done:
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and (failure := task.exception()) is not None:
            raise failure
