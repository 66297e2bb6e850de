"""llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``), as run.

Started on a free loopback port with the embedded SmolLM2 GGUF (the pinned file the embedded
engine uses, so nothing comes from a model hub) and ``--chat_format chatml-function-calling``,
the format of that server that does tool calls. One thing is added to what a user types: the
PyPI build of llama-cpp-python turns on ggml's AMX backend, which segfaults on the first decode
on CPUs with AMX such as this one (llama.cpp#20824, docs/embedded-stack.md §0); the launcher
applies openrealtime's workaround (``use_extra_bufts = False``) before the server loads the
model, exactly as docs/engines.md tells users on such CPUs to do::

    with llama_cpp_server(tmp_path) as url:   # "http://127.0.0.1:PORT/v1"
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

__all__ = ["LAUNCHER", "llama_cpp_server"]

LAUNCHER = (
    "import runpy, sys\n"
    "from openrealtime.backends.llm_llamacpp import apply_amx_workaround\n"
    "apply_amx_workaround()\n"
    "sys.argv[0] = 'llama_cpp.server'\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)
"""``python -m llama_cpp.server`` with the AMX workaround applied first."""


@contextlib.contextmanager
def llama_cpp_server(directory: Path, *extra: str, startup_s: float = 60.0) -> Iterator[str]:
    """Start the server on a free port; yield its ``/v1`` URL; stop it on exit."""
    port = free_port()
    log = directory / f"llama-cpp-server-{port}.log"
    model = resolve_model("smollm2")
    command = [
        sys.executable,
        "-c",
        LAUNCHER,
        "--model",
        str(model),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--n_threads",
        "1",
        "--chat_format",
        "chatml-function-calling",
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"llama_cpp.server not up: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
