"""``faster-whisper-server`` (PyPI, an OpenAI-compatible transcription server), as users run it.

Started on a free loopback port with the pinned Whisper tiny.en directory (the embedded
``whisper-tiny-en`` model, so nothing comes from a model hub)::

    with whisper_server(tmp_path) as url:   # "http://127.0.0.1:PORT/v1"
        ...
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from openrealtime.models import resolve_model
from tests.helpers.cli_server import free_port

__all__ = ["whisper_server"]


@contextlib.contextmanager
def whisper_server(directory: Path, *, startup_s: float = 60.0) -> Iterator[str]:
    """Start the server on a free port; yield its ``/v1`` URL; stop it on exit."""
    port = free_port()
    log = directory / f"faster-whisper-server-{port}.log"
    model = resolve_model("whisper-tiny-en").parent
    command = [sys.executable, "-m", "faster_whisper_server", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"faster-whisper-server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"faster-whisper-server not up: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
