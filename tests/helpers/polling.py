"""Waiting for a condition a test cannot be told about (a server-side count, a log line)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["settled"]


async def settled(check: Callable[[], bool], within: float = 5.0) -> bool:
    """Whether ``check()`` becomes true within ``within`` seconds (polled every 20 ms)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
