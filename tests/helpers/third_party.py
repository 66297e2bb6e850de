"""Third-party OpenAI-compatible servers from PyPI, started as users run them.

Each runs on a free loopback port with a pinned model file (nothing comes from a model hub)::

    with llama_cpp_server(tmp_path) as url:   # "http://127.0.0.1:PORT/v1"
        ...
    with whisper_server(tmp_path) as url:
        ...

* ``llama_cpp_server``: llama-cpp-python's own server (``python -m llama_cpp.server``) with the
  embedded SmolLM2 GGUF and ``--chat_format chatml-function-calling``, the format of that
  server that does tool calls. One thing is added to what a user types: the PyPI build of
  llama-cpp-python turns on ggml's AMX backend, which segfaults on the first decode on CPUs
  with AMX such as this one (llama.cpp#20824, docs/embedded-stack.md §0); the launcher applies
  openrealtime's workaround (``use_extra_bufts = False``) before the server loads the model,
  exactly as docs/engines.md tells users on such CPUs to do.
* ``whisper_server``: ``faster-whisper-server`` with the pinned Whisper tiny.en directory (the
  embedded ``whisper-tiny-en`` model).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from openrealtime.models import resolve_model
from tests.helpers.cli_server import free_port, wait_until_up

__all__ = ["LAUNCHER", "llama_cpp_server", "whisper_server"]

LAUNCHER = (
    "import runpy, sys\n"
    "from openrealtime.backends.llm_llamacpp import apply_amx_workaround\n"
    "apply_amx_workaround()\n"
    "sys.argv[0] = 'llama_cpp.server'\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)
"""``python -m llama_cpp.server`` with the AMX workaround applied first."""


@contextlib.contextmanager
def _serving(
    name: str, command: Sequence[str], ready_url: str, log: Path, startup_s: float
) -> Iterator[None]:
    """Run ``command`` until ``ready_url`` answers 200; stop it on exit (kill after 10 s)."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(process, ready_url, name, log, startup_s)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def llama_cpp_server(directory: Path, *extra: str, startup_s: float = 60.0) -> Iterator[str]:
    """Start llama-cpp-python's server; yield its ``/v1`` URL."""
    port = free_port()
    command = [sys.executable, "-c", LAUNCHER, "--model", str(resolve_model("smollm2"))]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", "4096", "--n_threads", "1"]
    command += ["--chat_format", "chatml-function-calling", *extra]
    url = f"http://127.0.0.1:{port}/v1"
    log = directory / f"llama-cpp-server-{port}.log"
    with _serving("llama_cpp.server", command, f"{url}/models", log, startup_s):
        yield url


@contextlib.contextmanager
def whisper_server(directory: Path, *, startup_s: float = 60.0) -> Iterator[str]:
    """Start ``faster-whisper-server``; yield its ``/v1`` URL."""
    port = free_port()
    model = resolve_model("whisper-tiny-en").parent
    command = [sys.executable, "-m", "faster_whisper_server", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    base = f"http://127.0.0.1:{port}"
    log = directory / f"faster-whisper-server-{port}.log"
    with _serving("faster-whisper-server", command, f"{base}/health", log, startup_s):
        yield f"{base}/v1"
