"""A real ``redis-server`` (Debian's) on a free loopback port, for the tests of shared state.

Never a mock: the tests of calls across workers and instances need Redis's own expiry. It
keeps nothing on disk (``--save "" --appendonly no``) and dies with the test::

    with redis_server(tmp_path) as url:   # "redis://127.0.0.1:PORT/0"
        ...
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli_server import free_port

__all__ = ["REDIS_SERVER", "redis_server"]

REDIS_SERVER = shutil.which("redis-server")
"""Debian's redis-server (``apt install redis-server``; ``.ci/run`` installs it)."""


def _answers(port: int) -> bool:
    """Whether a Redis server answers ``PING`` on ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(directory: Path, *, startup_s: float = 10.0) -> Iterator[str]:
    """Start ``redis-server`` on a free port; yield its URL; stop it on exit.

    Fails the test when redis-server is not installed (``.ci/run`` installs it).

    Args:
        directory: its working directory (it writes nothing there but its log).
        startup_s: how long it may take to answer ``PING``.
    """
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed (apt install redis-server)")
    port = free_port()
    log = directory / f"redis-{port}.log"
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + startup_s
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"redis-server did not start: {text[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
