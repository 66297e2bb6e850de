"""Id factories: randomness is an input of the core (design.md house rule 1)."""

from __future__ import annotations

import secrets
import string
from typing import Protocol

_ALPHABET = string.ascii_letters + string.digits


class IdFactory(Protocol):
    """Makes ids like ``event_…``, ``item_…``, ``resp_…`` (spec §2.1)."""

    def new(self, prefix: str) -> str:
        """Return a fresh id starting with ``prefix`` and ``_``."""
        ...


def random_base62(length: int = 21) -> str:
    """``length`` uniformly random base62 characters from the OS's randomness.

    One ``os.urandom`` call per id (``secrets.choice`` made one per character: ~2 % of the
    event loop under load); bytes of 248 and up are dropped so ``% 62`` stays unbiased.
    """
    out = ""
    while len(out) < length:
        out += "".join(_ALPHABET[b % 62] for b in secrets.token_bytes(length + 8) if b < 248)
    return out[:length]


class RandomIds:
    """Live-shaped ids: a prefix and 21 base62 characters (spec §2.1)."""

    def new(self, prefix: str) -> str:
        """Return ``prefix_`` plus 21 random base62 characters."""
        return f"{prefix}_{random_base62()}"


class SequentialIds:
    """Deterministic ids for tests: ``item_1``, ``item_2``, ``event_1`` … per prefix."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    def new(self, prefix: str) -> str:
        """Return ``prefix_N`` with N counting from 1 per prefix."""
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}_{n}"
