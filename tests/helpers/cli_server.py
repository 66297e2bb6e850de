"""The real ``openrealtime serve`` command in a child process, as a user starts it.

For tests about what only a whole process shows: its exit on SIGTERM, its RSS, its sockets.
The fake engines and the energy VAD keep start-up at a second or two and need no model files::

    with cli_server("--log-level", "info", env={"OPENREALTIME_CLOSE_TIMEOUT": "1"}) as server:
        ...  # server.base == "http://127.0.0.1:PORT", server.process is the Popen
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

__all__ = ["FAKE_ENGINES", "CliServer", "cli_server", "free_port"]

FAKE_ENGINES = (
    "--vad",
    "energy",
    "--stt",
    "fake",
    "--llm",
    "fake",
    "--tts",
    "fake",
    "--turn",
    "none",
)
"""Engine flags that need no model files."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CliServer:
    """A running ``openrealtime serve`` child process."""

    process: subprocess.Popen[bytes]
    base: str
    """``http://127.0.0.1:PORT``."""
    port: int
    log: Path
    """Its stderr, as a file."""

    def stop(self, timeout: float = 30.0) -> float:
        """Send SIGTERM; return the seconds until the process exited (kill after ``timeout``)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return float("inf")
        return time.monotonic() - started

    def log_text(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_until_up(
    process: subprocess.Popen[bytes], url: str, name: str, log: Path, startup_s: float
) -> None:
    """Poll ``url`` until it answers 200; raise with the log's tail if ``process`` exits first
    or ``startup_s`` runs out."""
    deadline = time.monotonic() + startup_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start: {_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-2000:]


@contextlib.contextmanager
def cli_server(
    *args: str,
    env: dict[str, str] | None = None,
    log_dir: Path,
    startup_s: float = 30.0,
    port: int | None = None,
) -> Iterator[CliServer]:
    """Start ``python -m openrealtime serve --port P *args``; kill it on exit.

    Args:
        args: more flags (the fake engines are not implied).
        env: extra environment variables (``OPENREALTIME_*`` settings).
        log_dir: where its stderr goes (``serve.log``).
        startup_s: how long ``/healthz`` may take to answer.
        port: the port to listen on (default: a free one).
    """
    port = port or free_port()
    log = log_dir / f"serve-{port}.log"
    environment = {**os.environ, **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "openrealtime", "serve", "--port", str(port), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = CliServer(process, f"http://127.0.0.1:{port}", port, log)
    try:
        wait_until_up(process, f"{server.base}/healthz", "openrealtime serve", log, startup_s)
        yield server
    finally:
        if process.poll() is None:
            workers = _children(process.pid)
            process.kill()  # first, or the supervisor would restart the workers killed below
            for worker in workers:  # --workers: they outlive a killed parent
                with contextlib.suppress(psutil.Error):
                    worker.kill()
        process.wait()


def _children(pid: int) -> list[psutil.Process]:
    """The processes ``pid`` started (uvicorn's workers with ``--workers``)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
