"""The only JSON boundary: client text frames in, server events out (design.md decision 3).

Every failure becomes a :class:`ProtocolError` carrying the live service's code, message and
``param`` (spec §6.2), computed from pydantic's validation errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

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
    try:
        data = json.loads(frame)
    except (json.JSONDecodeError, RecursionError) as exc:
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
        data = json.loads(frame)
    except (json.JSONDecodeError, RecursionError):
        return None
    if isinstance(data, dict):
        value = data.get("event_id")
        if isinstance(value, str):
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
    """Serialize one server event to a JSON text frame."""
    return json.dumps(to_wire(event), separators=(",", ":"), ensure_ascii=False)


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
    return ProtocolError("invalid_value", f"Invalid value: '{kind}'.", param=_join(param, ["type"]))


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
