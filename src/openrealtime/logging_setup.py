"""Logging: one setup call, a per-session prefix, and key redaction (keys never reach a log)."""

from __future__ import annotations

import logging
import re
import sys
import traceback
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
    # an Authorization header, any scheme (Bearer, Basic, Token...) or none
    r"(?i)(?P<auth>\b(?:proxy-)?authorization\b[\"']?\s*[:=,]\s*b?[\"']?(?:[a-z][a-z0-9_-]*\s+)?)"
    r"(?P<cred>[^\s,'\"]+)"
    # a browser's key subprotocol
    r"|(?P<proto>openai-insecure-api-key\.)(?P<key>[^\s,'\"]+)"
    # other credential headers (websockets logs every handshake header at DEBUG)
    r"|(?P<hdr>\b(?:x-)?api[-_]?key\b[\"']?\s*:\s*[\"']?|\b(?:set-)?cookie\s*:\s*)"
    r"(?P<hval>[^\r\n,'\"]+)"
    # a query parameter whose name says it holds a credential (?api_key=, &token=, ?key=...)
    r"|(?P<query>[?&;](?:[\w.-]*(?:key|token|secret|passw|auth|sig|credential)[\w.-]*)=)"
    r"(?P<qval>[^&\s'\"#]+)"
    # anything shaped like an OpenAI-style key or one of our client secrets
    r"|(?P<shaped>\b(?:sk-|ek_)[A-Za-z0-9_.\-]{8,})"
)
"""Credentials inside log text, by where they sit or by their shape."""

_known_secrets: set[str] = set()
"""Configured secrets (API keys, signing key, engine keys): masked wherever they appear."""

_MIN_KNOWN_SECRET = 6
"""Shorter configured secrets are not searched for (they would match ordinary words)."""


def register_secrets(*values: str | None) -> None:
    """Mask these configured secrets in every later log record, wherever they appear.

    Call with every credential of the configuration (the app factory does). Values shorter
    than 6 characters are ignored; the shape patterns still cover where they usually appear.
    """
    for value in values:
        if value and len(value) >= _MIN_KNOWN_SECRET:
            _known_secrets.add(value)


def _mask(match: re.Match[str]) -> str:
    if match.group("auth") is not None:
        return match.group("auth") + redact(match.group("cred"))
    if match.group("proto") is not None:
        return match.group("proto") + redact(match.group("key"))
    if match.group("hdr") is not None:
        return match.group("hdr") + redact(match.group("hval").strip())
    if match.group("query") is not None:
        return match.group("query") + redact(match.group("qval"))
    return redact(match.group("shaped"))


def mask_secrets(text: str) -> str:
    """``text`` with every credential it holds shown as :func:`redact` shows keys.

    Covers ``Authorization`` headers of any scheme, key subprotocols, API-key and cookie
    headers, credential-named query parameters, ``sk-``/``ek_`` shaped keys, and every secret
    given to :func:`register_secrets`.
    """
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, redact(secret))
    return _SECRET_PATTERN.sub(_mask, text)


def _redact_record(record: logging.LogRecord) -> None:
    """Mask credentials in a record's message, arguments and traceback, in place."""
    try:
        message = record.getMessage()
    except Exception:  # a broken record is the handler's business, not ours
        return
    masked = mask_secrets(message)
    if masked != message:
        _mask_arguments(record, masked)
    if record.exc_info and record.exc_info[1] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        clean = mask_secrets(text)
        if clean != text:
            record.exc_text = clean


def _mask_arguments(record: logging.LogRecord, masked: str) -> None:
    """Mask a record's arguments one by one, else store the masked message alone.

    Masking the parts keeps the ``msg % args`` shape that uvicorn's access formatter unpacks.
    """
    args = record.args
    if isinstance(args, tuple) and isinstance(record.msg, str):
        parts = tuple(mask_secrets(a) if isinstance(a, str) else a for a in args)
        try:
            if mask_secrets(record.msg) % parts == masked:
                record.msg, record.args = mask_secrets(record.msg), parts
                return
        except (TypeError, ValueError):
            pass
    record.msg, record.args = masked, ()


def install_secret_redaction() -> None:
    """Mask credentials in every log record of the process, whoever logs it (idempotent).

    Installs a log-record factory, so the masking happens when a record is created: every
    logger (uvicorn's access and error logs, websockets' header dumps at DEBUG, httpx, ours)
    and every handler (pytest's included) only ever sees the masked text
    (reliability-targets.md check 13). Called by the app factory.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, _FACTORY_MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    setattr(factory, _FACTORY_MARK, True)
    logging.setLogRecordFactory(factory)


_FACTORY_MARK = "_openrealtime_redacts"


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
