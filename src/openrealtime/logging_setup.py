"""Logging: one setup call, a per-session prefix, and key redaction (keys never reach a log)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

LOGGER_NAME = "openrealtime"
"""Root of every logger in this package."""

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_MARK = "_openrealtime_handler"
_TRACE = 5
"""uvicorn's ``trace`` level, below ``DEBUG``."""

_KNOWN_PREFIXES = ("sk-", "ek_")
"""Key prefixes that carry no secret and help a user recognise which kind of key was sent."""

_MIN_LEN_FOR_TAIL = 12
"""Keys shorter than this show no characters at all (the tail would be too much of the key)."""


def redact(key: str | None) -> str:
    """Render an API key for logs and error messages, showing only its last 4 characters.

    Use wherever a key would be printed (spec §1.1's ``invalid_api_key`` message shows
    ``sk-…AAAA``). A known non-secret prefix (``sk-``, ``ek_``) is kept; short keys are fully
    hidden.

    Args:
        key: the key, or ``None``.

    Returns:
        E.g. ``"sk-…AAAA"``; ``"…"`` for a short key; ``"<none>"`` for ``None`` or ``""``.
    """
    if not key:
        return "<none>"
    prefix = next((p for p in _KNOWN_PREFIXES if key.startswith(p)), "")
    if len(key) < _MIN_LEN_FOR_TAIL:
        return f"{prefix}…"
    return f"{prefix}…{key[-4:]}"


_SECRET_PATTERN = re.compile(
    r"(?i)(?P<auth>authorization:\s*(?:bearer|basic)\s+)(?P<cred>[^\s,'\"]+)"
    r"|(?P<proto>openai-insecure-api-key\.)(?P<key>[^\s,'\"]+)"
)
"""Credentials inside log text: an ``Authorization`` header or a key subprotocol."""

SECRET_LOGGERS: tuple[str, ...] = ("uvicorn.error", "uvicorn.access", "websockets.server")
"""Loggers that third-party code writes handshake headers to (websockets logs every request
header at DEBUG through the logger uvicorn gives it, ``uvicorn.error``)."""


def _mask(match: re.Match[str]) -> str:
    if match.group("auth") is not None:
        return match.group("auth") + redact(match.group("cred"))
    return match.group("proto") + redact(match.group("key"))


class RedactSecrets(logging.Filter):
    """Masks credentials in log records (reliability-targets.md check 13: keys never logged).

    Attach it to a logger with :func:`install_secret_redaction`; a logger's filters see only
    records created on that logger, so each logger that may carry headers needs its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with keys redacted; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's business, not ours
            return True
        masked = _SECRET_PATTERN.sub(_mask, message)
        if masked != message:
            record.msg = masked
            record.args = ()
        return True


def install_secret_redaction(names: tuple[str, ...] = SECRET_LOGGERS) -> None:
    """Attach :class:`RedactSecrets` to each named logger once (idempotent).

    Called by the app factory, so every way of serving the app (CLI, tests, embedding) has it.

    Args:
        names: logger names.
    """
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def configure_logging(level: str | int = "info") -> logging.Logger:
    """Send this package's logs to stderr at ``level``; call once at start-up (idempotent).

    uvicorn configures its own loggers; this only touches the ``openrealtime`` logger: its level
    and one stderr handler. Records still propagate to the root logger (which has no handler
    unless the embedding application added one).

    Args:
        level: a level name (``"info"``, ``"debug"``, ``"trace"``...) or number.

    Returns:
        The package's root logger.

    Raises:
        ValueError: an unknown level name.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_level_number(level))
    if not any(getattr(h, _HANDLER_MARK, False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    return logger


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time (survives stream swaps in tests)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name == "TRACE":
        return _TRACE
    number = logging.getLevelName(name)
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that prefixes every message with the session label, e.g. ``[sess_abc] ...``.

    Create one per connection with the label from :class:`~openrealtime.transports.base.
    SessionRequest` so a session's lines can be grepped together. Never log a key through it:
    pass keys through :func:`redact` first.
    """

    def __init__(self, logger: logging.Logger, label: str) -> None:
        super().__init__(logger, {"session": label})
        self.label = label

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix ``msg`` with ``[label]``; called by :class:`logging.LoggerAdapter`."""
        return f"[{self.label}] {msg}", kwargs
