"""The only JSON boundary: client text frames in, server events out (design.md decision 3).

Every failure becomes a :class:`ProtocolError` carrying the live service's code, message and
``param`` (spec §6.2), computed from pydantic's validation errors.

Untrusted JSON (client frames, REST bodies, an engine's answers) is decoded by :func:`loads`,
which is stricter than :func:`json.loads` in the ways a strict parser (serde_json, which
refuses the same things) would be: no ``NaN``/``Infinity`` and no number that overflows to
them, no integer of more than :data:`MAX_INT_DIGITS` digits, no nesting deeper than
:data:`MAX_JSON_DEPTH`, and no lone UTF-16 surrogate (a backslash-u escape of D800-DFFF),
which no UTF-8 text can carry and which would fail every later encode (issue 8, defects 2, 3, 8
and 9).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from openrealtime.protocol import errors
from openrealtime.protocol.base import to_wire
from openrealtime.protocol.client_events import (
    CLIENT_EVENT_MODELS,
    WEBSOCKET_EVENT_TYPES,
    ClientEvent,
)
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.items import ITEM_TYPES, MESSAGE_ROLES

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays and objects accepted in untrusted JSON (serde_json's default
recursion limit). Deeper documents fail before they reach a model, an echo or an engine, which
recurse over them (pydantic serializes at most ~250 levels, ``json`` ~1000)."""

MAX_INT_DIGITS = 4300
"""Longest integer literal accepted (CPython's own int/str conversion limit)."""

MAX_ECHOED_EVENT_ID = 512
"""Longest client ``event_id`` echoed in an ``error`` (the events' own ``event_id`` limit)."""

_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape in raw JSON text: the only way a lone surrogate gets in."""

_SURROGATE = re.compile("[\ud800-\udfff]")
"""A surrogate code point in a decoded ``str`` (``json`` joins valid pairs, so any is lone)."""

_APPEND = "input_audio_buffer.append"
_WS = r"[ \t\n\r]*"
"""JSON's whitespace (a regex ``\\s`` would match more)."""
_PLAIN_APPEND = re.compile(
    rf'{_WS}\{{{_WS}"type"{_WS}:{_WS}"input_audio_buffer\.append"{_WS},'
    rf'{_WS}"audio"{_WS}:{_WS}"([A-Za-z0-9+/=]*)"{_WS}'
    rf'(?:,{_WS}"event_id"{_WS}:{_WS}"([^"\\\x00-\x1f\ud800-\udfff]*)"{_WS})?\}}{_WS}'
)
"""An ``input_audio_buffer.append`` frame as SDKs send it (``type``, ``audio``, an optional
``event_id``, in that order; compact or spaced): strings without escapes, control characters or
surrogates, so each value is its raw text and :func:`loads` would return exactly that object
(one level, no numbers). Such a frame skips the generic decoder (issue 9: the per-append path)."""


class JsonInputError(ValueError):
    """Untrusted JSON that :func:`loads` refuses; the message says why (no input echoed)."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonInputError(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"the number {text[:40]} is out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number")


def loads(text: str | bytes, *, peer: Literal["client", "engine"] = "client") -> Any:
    """Decode untrusted JSON strictly; use it for every JSON a peer sends (frames, bodies).

    Args:
        text: the JSON text (``bytes`` are decoded as UTF-8).
        peer: ``"client"`` refuses a lone surrogate escape and non-finite numbers (the client
            must send valid text and numbers); ``"engine"`` (an engine's answer) replaces lone
            surrogates with U+FFFD and lets non-finite numbers through, so one odd field does
            not fail a whole answer, while the text that reaches the session is valid.

    Raises:
        JsonInputError: not JSON, or JSON this server refuses; ``str(exc)`` says why.
    """
    numbers: dict[str, Any] = {"parse_int": _parse_int}
    if peer == "client":
        numbers.update(parse_float=_parse_float, parse_constant=_parse_constant)
    try:
        data = json.loads(text, **numbers)
    except JsonInputError:
        raise
    except RecursionError:
        raise JsonInputError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError of bytes
        raise JsonInputError(str(exc)[:200]) from None
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    fix = "\\u" in raw and _ESCAPED_SURROGATE.search(raw) is not None
    return _checked(data, fix=fix, replace=peer == "engine")


def _checked(data: Any, *, fix: bool, replace: bool) -> Any:
    """Check the depth of decoded JSON; find (or replace) lone surrogates when ``fix``."""
    if not isinstance(data, dict | list):
        return _text(data, replace) if fix and isinstance(data, str) else data
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise JsonInputError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            if fix and any(_SURROGATE.search(key) for key in node):
                if not replace:
                    raise _lone_surrogate()
                fixed = {_text(k, replace): v for k, v in node.items()}
                node.clear()
                node.update(fixed)
            items: Iterable[tuple[Any, Any]] = list(node.items())
        else:
            items = enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))
            elif fix and isinstance(value, str):
                node[key] = _text(value, replace)
    return data


def _text(value: str, replace: bool) -> str:
    if _SURROGATE.search(value) is None:
        return value
    if not replace:
        raise _lone_surrogate()
    return _SURROGATE.sub("\ufffd", value)


def _lone_surrogate() -> JsonInputError:
    return JsonInputError(
        "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
        "valid Unicode text"
    )


def valid_text(value: str) -> str:
    """``value`` with any lone surrogate replaced by U+FFFD, so it encodes as UTF-8."""
    return value if value.isascii() else _text(value, True)


_PRIORITY = {
    "extra_forbidden": 0,
    "union_tag_invalid": 1,
    "union_tag_not_found": 1,
    "missing": 2,
}


def parse_client_event(
    frame: str | bytes, *, allowed_types: Sequence[str] = WEBSOCKET_EVENT_TYPES
) -> ClientEvent:
    """Parse one client frame into its event model (spec §2.2).

    Args:
        frame: a WebSocket text frame (``str``) or a binary frame (``bytes``).
        allowed_types: the event types this transport accepts; others get ``invalid_value``.

    Raises:
        ProtocolError: with the code the live service uses for this mistake (spec §6.2).
    """
    if isinstance(frame, bytes):
        raise errors.binary_frame()
    plain = _PLAIN_APPEND.fullmatch(frame)
    if plain is not None and _APPEND in allowed_types:
        data = {"type": _APPEND, "audio": plain[1]}
        if plain[2] is not None:
            data["event_id"] = plain[2]
        return validate(CLIENT_EVENT_MODELS[_APPEND], data)  # type: ignore[return-value]
    try:
        data = loads(frame)
    except JsonInputError as exc:
        raise errors.invalid_json(str(exc)) from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "The event must be a JSON object.")
    kind = data.get("type")
    if kind is None:
        raise ProtocolError("invalid_event", "The 'type' field is missing.")
    if not isinstance(kind, str) or kind not in allowed_types:
        raise errors.invalid_value(kind, list(allowed_types), "type")
    event: ClientEvent = validate(CLIENT_EVENT_MODELS[kind], data)  # type: ignore[assignment]
    return event


def client_event_id(frame: str | bytes) -> str | None:
    """Best-effort ``event_id`` of a frame that failed to parse, to echo in ``error.event_id``."""
    if isinstance(frame, bytes):
        return None
    try:
        data = loads(frame)
    except JsonInputError:
        return None
    if isinstance(data, dict):
        value = data.get("event_id")
        if isinstance(value, str) and len(value) <= MAX_ECHOED_EVENT_ID:
            return value
    return None


def validate(model: type[M], data: Any, *, prefix: str = "") -> M:
    """Validate ``data`` against ``model``; map the first error to a :class:`ProtocolError`.

    Args:
        model: a strict wire model.
        data: decoded JSON.
        prefix: the path of ``data`` in the client event (``session``, ``item``), for ``param``.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error_from_validation(exc.errors(), data, prefix) from None


def error_from_validation(
    details: Iterable[ErrorDetails], data: Any, prefix: str = ""
) -> ProtocolError:
    """Turn pydantic error details into the live service's error (spec §6.2)."""
    ordered = sorted(details, key=_rank)
    first = ordered[0]
    path, node = _walk(first["loc"], data, first["type"])
    param = _join(prefix, path)
    kind = first["type"]
    value = first.get("input")
    ctx = first.get("ctx") or {}
    if kind == "extra_forbidden":
        return errors.unknown_parameter(param)
    if kind == "missing":
        return errors.missing_parameter(param)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_error(node, param, str(ctx.get("expected_tags", "")))
    if kind in ("literal_error", "enum"):
        return errors.invalid_value(value, _choices(str(ctx.get("expected", ""))), param)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _range_error(kind, value, ctx, param)
    if kind in ("string_too_long", "string_too_short", "too_long", "too_short"):
        return _length_error(kind, value, ctx, param)
    if kind.endswith("_type") or kind in ("model_attributes_type", "is_instance_of"):
        return ProtocolError(
            "invalid_type",
            f"Invalid type for '{param}': expected {_expected(kind, param)}, but got "
            f"{_json_kind(value)} instead.",
            param=param,
        )
    return ProtocolError(
        "invalid_value", f"Invalid value for '{param}': {first['msg']}.", param=param
    )


def _rank(detail: ErrorDetails) -> int:
    """Which error to report first: a wrong ``type`` tag explains the object's other fields."""
    loc = detail["loc"]
    if detail["type"] == "literal_error" and loc and loc[-1] == "type":
        return -1  # e.g. tools[0].type 'mcp': its extra fields follow from the wrong type
    return _PRIORITY.get(detail["type"], 3)


def dump_event(event: BaseModel) -> str:
    """Serialize one server event to a JSON text frame (always valid UTF-8 text).

    Text that reached an event without passing :func:`loads` (an engine's, say) may hold a
    lone surrogate; it goes out as U+FFFD rather than failing the socket's UTF-8 encode.
    """
    return valid_text(json.dumps(to_wire(event), separators=(",", ":"), ensure_ascii=False))


# ----------------------------------------------------------------------------- helpers


def _walk(loc: tuple[int | str, ...], data: Any, kind: str) -> tuple[list[str | int], Any]:
    """Follow ``loc`` through the input, dropping union tags that are not keys of the data."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif last and kind == "missing" and isinstance(part, str):
            path.append(part)
    return path, node


def _join(prefix: str, path: list[str | int]) -> str:
    out = prefix
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


def _tag_error(node: Any, param: str, expected: str = "") -> ProtocolError:
    """An item or tagged object whose ``type`` (or ``role``) is missing or unknown."""
    if not isinstance(node, dict) or "type" not in node:
        return errors.missing_parameter(_join(param, ["type"]))
    kind = node["type"]
    if kind == "message":
        if "role" not in node:
            return errors.missing_parameter(_join(param, ["role"]))
        return errors.invalid_value(node["role"], MESSAGE_ROLES, _join(param, ["role"]))
    if param.endswith("item") or "input[" in param:
        return errors.invalid_value(kind, ITEM_TYPES, _join(param, ["type"]))
    if expected:  # e.g. an audio format or turn detection type: list what is accepted
        return errors.invalid_value(kind, _choices(expected), _join(param, ["type"]))
    return ProtocolError(
        "invalid_value", f"Invalid value: '{errors.shown(kind)}'.", param=_join(param, ["type"])
    )


def _choices(expected: str) -> list[str]:
    """``"'a', 'b' or 'c'"`` (pydantic's wording) into ``["a", "b", "c"]``."""
    text = expected.replace(" or ", ", ")
    return [part.strip().strip("'") for part in text.split(",") if part.strip()]


def _range_error(kind: str, value: Any, ctx: dict[str, Any], param: str) -> ProtocolError:
    number = "integer" if isinstance(value, int) else "decimal"
    below = kind.startswith("greater")
    bound = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
    op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}.get(kind, "<")
    where = "below minimum" if below else "above maximum"
    return ProtocolError(
        f"{number}_{'below_min' if below else 'above_max'}_value",
        f"Invalid '{param}': {number} {where} value. Expected a value {op} {bound}, but got "
        f"{value} instead.",
        param=param,
    )


def _length_error(kind: str, value: Any, ctx: dict[str, Any], param: str) -> ProtocolError:
    is_string = kind.startswith("string")
    longer = kind.endswith("long")
    noun = "string" if is_string else "array"
    limit = ctx.get("max_length") if longer else ctx.get("min_length")
    actual = len(value) if hasattr(value, "__len__") else ctx.get("actual_length")
    unit = "length" if is_string else "length"
    return ProtocolError(
        f"{noun}_{'above_max' if longer else 'below_min'}_length",
        f"Invalid '{param}': {noun} too {'long' if longer else 'short'}. Expected a {noun} with "
        f"{'maximum' if longer else 'minimum'} {unit} {limit}, but got a {noun} with {unit} "
        f"{actual} instead.",
        param=param,
    )


_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


_OBJECT_ARRAYS = frozenset({"content", "input", "output", "tools"})
"""Fields that hold arrays of objects; the live wording says so (spec §6.2 ``item.content``)."""


def _expected(kind: str, param: str = "") -> str:
    if kind == "list_type" and param.rsplit(".", 1)[-1] in _OBJECT_ARRAYS:
        return "an array of objects"
    return _EXPECTED.get(kind, "a different type")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
