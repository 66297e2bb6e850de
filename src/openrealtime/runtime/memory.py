"""Give freed memory back to the operating system (issue 8, defect 6).

A session may hold tens of megabytes (a 15 MiB append, its base64 frame, a conversation's
audio). Python frees them, but glibc's allocator keeps freed memory in its heaps: once a large
block is freed, glibc raises its ``mmap`` threshold to that block's size (up to 32 MiB), so the
next large blocks come from the heap and stay there after they are freed. A server that held a
few big sessions then keeps their size in RSS forever (measured: 1.3 GB after 20 x 15 MiB
appends, items deleted and the session closed).

:func:`tune_allocator` fixes the threshold at :data:`MMAP_THRESHOLD`, so every large block gets
its own mapping and goes back to the system when freed; :func:`release_memory` asks glibc to
return what its heaps hold free (``malloc_trim``), which the driver calls when a session that
held much ends. Both do nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache

__all__ = ["MMAP_THRESHOLD", "release_memory", "tune_allocator"]

_log = logging.getLogger(__name__)

MMAP_THRESHOLD = 256 * 1024
"""Blocks at least this large are mapped on their own (and unmapped when freed)."""

_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the mmap threshold (``malloc.h``)."""


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # musl and others have no mallopt/malloc_trim
        return None
    return libc


@cache
def tune_allocator() -> bool:
    """Fix glibc's mmap threshold so large freed blocks go back to the system (idempotent).

    Call once at start-up (the app factory does). Returns whether it applied.
    """
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not applied:
        _log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    return applied


def release_memory() -> None:
    """Return the free memory of glibc's heaps to the system (``malloc_trim(0)``).

    Takes about a millisecond on a server heap; call it after a session that held much data.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
