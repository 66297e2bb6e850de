"""Hypothesis strategies of the client-event fuzzer (``test_fuzz_events.py``).

Events are generated from our own wire models' JSON schemas (``Model.model_json_schema()``)
by a small schema-to-strategy converter (``hypothesis-jsonschema`` breaks with current
hypothesis, reliability-targets.md §0.4), then optionally mutated. Every frame says whether it
is *certainly* invalid (``Frame.bad``: the server must answer exactly one ``error`` and nothing
else) or merely *valid-ish* (state may still make it fail: at most one ``error``).

A mutation is only called certain when the schema proves it: a key the strict object forbids,
a JSON type no branch of the union accepts, a value outside ``enum``/``const``/bounds, a
required key dropped where nothing can fill it in (``session.update`` merges into the current
config, so a key dropped from a nested session object is only valid-ish), invalid base64
audio, or JSON text the server's decoder refuses (``NaN``, ``1e999``, 5000-digit integers,
lone surrogate escapes, nesting past 128 levels, truncated or non-object JSON, binary frames).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import strategies as st

from openrealtime.protocol.client_events import CLIENT_EVENT_MODELS, WEBSOCKET_EVENT_TYPES
from openrealtime.protocol.codec import MAX_ECHOED_EVENT_ID, MAX_INT_DIGITS, MAX_JSON_DEPTH
from openrealtime.protocol.session_config import (
    VOICES,
    RealtimeSessionConfig,
    TranscriptionSessionConfig,
)

Json = Any
Path = tuple[str | int, ...]
SessionKind = Literal["realtime", "transcription"]

# ----------------------------------------------------------------------------- raw JSON text


@dataclass(frozen=True)
class Raw:
    """JSON text that :func:`encode` writes verbatim (``NaN``, 5000-digit integers, nesting)."""

    text: str


_SURROGATE = re.compile("[\ud800-\udfff]")


def _string(text: str, ascii_only: bool) -> str:
    # A str holding a lone surrogate cannot be UTF-8 encoded: it must travel as a \\u escape,
    # which json.dumps(ensure_ascii=True) writes (the wire form of issue 8, defect 2).
    return json.dumps(text, ensure_ascii=ascii_only or _SURROGATE.search(text) is not None)


def encode(value: Json, *, ascii_only: bool = False) -> str:
    """JSON text of ``value``: :class:`Raw` parts verbatim, lone surrogates as escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        parts = (
            f"{_string(k, ascii_only)}:{encode(v, ascii_only=ascii_only)}" for k, v in value.items()
        )
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ascii_only=ascii_only) for v in value) + "]"
    if isinstance(value, str):
        return _string(value, ascii_only)
    assert not isinstance(value, float) or math.isfinite(value), value
    return json.dumps(value)


# ----------------------------------------------------------------------------- the oracle


class _Refused(ValueError):
    pass


def _refuse(_: str) -> Any:
    raise _Refused


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused
    return value


def strict_loads(text: str) -> Json:
    """Decode like a strict JSON parser (serde_json) would, or raise ``ValueError``.

    The rules are the documented ones (codec.py, spec §6.2): no NaN/Infinity and no number
    that overflows to them, integers of at most 4300 digits, at most 128 levels of nesting, no
    lone UTF-16 surrogate.
    """
    try:
        data = json.loads(text, parse_constant=_refuse, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ValueError("too deep") from None
    stack: list[tuple[Json, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise ValueError("lone surrogate")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError("too deep")
        children = list(node.values()) if isinstance(node, dict) else node
        if isinstance(node, dict):
            children += list(node.keys())
        stack.extend((child, depth + 1) for child in children)
    return data


def expected_echo(data: str | bytes) -> str | None:
    """The ``error.event_id`` a client expects for this frame (spec §6.1).

    The frame's own ``event_id`` when the frame is a JSON object and the id a string of at most
    512 characters (the events' own limit); else ``None``.
    """
    if isinstance(data, bytes):
        return None
    try:
        parsed = strict_loads(data)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        value = parsed.get("event_id")
        if isinstance(value, str) and len(value) <= MAX_ECHOED_EVENT_ID:
            return value
    return None


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One WebSocket message and what the fuzzer knows about it."""

    data: str | bytes
    kind: str
    """The client event type it was generated from (``"raw"`` when it is no event)."""
    bad: bool
    """Certainly invalid: the server must answer exactly one ``error`` and nothing else."""
    label: str
    """What was generated or mutated, e.g. ``unknown_key@session.audio.input``."""

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 600 else self.data[:600]
        more = "" if len(self.data) <= 600 else f"... ({len(self.data)} chars)"
        return f"Frame({self.kind}, bad={self.bad}, {self.label}: {shown!r}{more})"


def _site_name(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "<root>"


# ----------------------------------------------------------------------------- leaf strategies

EDGE_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ufeff",
    "\ufeffhello",
    "\u202eevil\u202c",
    "\u200f\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "e\u0301\u0301\u0301\u0301",
    "Z\u0351\u0362\u0336\u0334\u0335\u0358",
    "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0010ffff",
    "\ufffe\uffff",
    "\u2028\u2029",
    "\x7f\x1b[31m",
    '\\"}]',
    "%s%n%x",
    "${jndi:ldap://x}",
    "NaN",
    "null",
    "\ud7ff\ue000",
)
"""Valid Unicode text that breaks naive code: NUL, BOM, bidi controls, combining marks,
astral characters and ZWJ sequences, non-characters, line separators, format strings."""

SURROGATE_STRINGS = ("\udc00", "\ud800", "a\udfffb", "\ud83d", "\ude00\ud83d", "x" * 40 + "\udbff")
"""Lone (or reversed) surrogates: no UTF-8 text can carry them; JSON only as ``\\uD800`` text."""

_plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
text = st.one_of(_plain_text, _plain_text, st.sampled_from(EDGE_STRINGS))
"""Valid-ish strings: any non-surrogate Unicode, and the edge cases above."""


@st.composite
def long_text(draw: st.DrawFn, min_size: int = 10_000, max_size: int = 1_000_000) -> str:
    """A long string, cheap to build: one character (or edge string) repeated."""
    unit = draw(st.sampled_from(("x", "\u00e9", "\U0001f600", "e\u0301", "\u202e", "\x00")))
    sizes = [n for n in (1_000, 10_000, 100_000, 300_000, 1_000_000) if min_size <= n <= max_size]
    size = draw(st.sampled_from(sizes or [min_size])) + draw(st.integers(0, 7))
    return unit * max(1, size // len(unit))


ITEM_IDS = tuple(f"fz_item_{i}" for i in range(6))
"""Client-chosen item ids: creates and references draw from the same few, so retrieve,
truncate, delete and ``previous_item_id`` hit real items as often as unknown ones."""
CALL_IDS = ("fz_call_0", "fz_call_1", "fz_call_2")
TOOL_NAMES = ("fz_tool_a", "fz_tool_b", "lookup-weather_2")

item_ids = st.one_of(st.sampled_from(ITEM_IDS), st.sampled_from(ITEM_IDS), text)
event_ids = st.one_of(
    st.from_regex(r"\Aevt_[A-Za-z0-9]{1,24}\Z"),
    text,
    st.just("e" * MAX_ECHOED_EVENT_ID),
)


@st.composite
def pcm_bytes(draw: st.DrawFn, max_size: int = 9_600) -> bytes:
    """Silence, a loud tone or noise, of any length (odd ones too): 9600 bytes = 200 ms."""
    size = draw(st.integers(0, max_size))
    kind = draw(st.sampled_from(("silence", "tone", "noise")))
    if kind == "silence":
        return bytes(size)
    if kind == "tone":
        return (b"\x00\x70\x00\x90" * (size // 4 + 1))[:size]
    return hashlib.shake_128(draw(st.binary(min_size=1, max_size=8))).digest(size)


audio_b64 = pcm_bytes().map(lambda pcm: base64.b64encode(pcm).decode("ascii"))


@st.composite
def bad_base64(draw: st.DrawFn) -> str:
    """Text ``base64.b64decode(validate=True)`` refuses: bad characters or padding."""
    good = base64.b64encode(draw(pcm_bytes(max_size=600)) + b"abc").decode("ascii")
    how = draw(st.sampled_from(("char", "padding", "lead", "space", "one")))
    if how == "char":
        at = draw(st.integers(0, len(good) - 1))
        return good[:at] + draw(st.sampled_from("!*@#$%\u00e9\x00-_.")) + good[at + 1 :]
    if how == "padding":  # a length that no padding completes, or padding left out
        bare = good.rstrip("=")
        return bare[:-1] if len(bare) % 4 == 0 else bare
    if how == "lead":
        return "====" + good
    if how == "space":
        return good[:4] + " " + good[4:]
    return good + "A"  # 1 more than a multiple of 4


free_json: st.SearchStrategy[Json] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
"""Any valid JSON value, small and shallow (free-form fields: metadata, tool parameters)."""


def _tool_parameters() -> st.SearchStrategy[Json]:
    prop = st.fixed_dictionaries(
        {"type": st.sampled_from(("string", "integer", "number", "boolean", "array", "null"))},
        optional={"description": text, "enum": st.lists(free_json, max_size=2)},
    )
    schema = st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(text, prop, max_size=3)},
        optional={"required": st.lists(text, max_size=2)},
    )
    return st.one_of(schema, schema, st.dictionaries(text, free_json, max_size=3))


# ----------------------------------------------------------------------------- schema walking


@dataclass(frozen=True)
class Site:
    """A place in a generated value that a mutation may target."""

    path: Path
    schema: dict[str, Any]
    """The resolved schema of the value there (the chosen branch of a union)."""
    accepted: frozenset[str] | None
    """JSON types the place accepts, across every branch of its union; ``None``: any."""
    merge: bool
    """Inside a ``session.update`` body, reached through objects only: a key left out is
    filled in from the current config, so dropping one proves nothing."""
    ambiguous: bool
    """Another branch of an enclosing union might accept a changed value."""
    name: str = ""


_JSON_TYPES = ("string", "integer", "number", "boolean", "null", "array", "object")
_WRONG: dict[str, Json] = {
    "string": "wrong",
    "integer": 7,
    "number": 1.5,
    "boolean": True,
    "null": None,
    "array": [],
    "object": {},
}


@dataclass
class _Generated:
    value: Json
    sites: list[Site] = field(default_factory=list)


class SchemaStrategies:
    """Valid-ish values of one wire model's JSON schema, with the sites mutations may target."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.defs: dict[str, dict[str, Any]] = schema.get("$defs", {})

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def branches(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        schema = self.resolve(schema)
        union = schema.get("anyOf") or schema.get("oneOf")
        if not union:
            return [schema]
        return [b for part in union for b in self.branches(part)]

    def types(self, schema: dict[str, Any]) -> frozenset[str] | None:
        """JSON types a schema accepts (``None``: any); ``number`` accepts integers."""
        found: set[str] = set()
        for branch in self.branches(schema):
            kind = branch.get("type")
            if kind is None and "const" in branch:
                kind = _json_type(branch["const"])
            if kind is None:
                return None
            found.add(kind)
        if "number" in found:
            found.add("integer")
        return frozenset(found)

    def _tags(self, branch: dict[str, Any]) -> dict[str, Any]:
        required = set(branch.get("required", ()))
        props = branch.get("properties", {})
        return {
            k: self.resolve(v)["const"]
            for k, v in props.items()
            if k in required and "const" in self.resolve(v)
        }

    def _ambiguous(self, branches: list[dict[str, Any]], chosen: int) -> bool:
        """Whether a changed value of the chosen branch could match another branch."""
        mine = self.types(branches[chosen]) or frozenset(_JSON_TYPES)
        others = [b for i, b in enumerate(branches) if i != chosen]
        rivals = [b for b in others if (self.types(b) or frozenset(_JSON_TYPES)) & mine]
        if not rivals:
            return False
        if mine == {"object"}:  # tagged objects (items, formats, turn detection) are told apart
            tags = self._tags(branches[chosen])
            return not tags or any(
                not any(k in t and t[k] != v for k, v in tags.items())
                for t in map(self._tags, rivals)
            )
        return True

    def value(
        self,
        draw: st.DrawFn,
        schema: dict[str, Any],
        path: Path,
        out: _Generated,
        *,
        merge: bool = False,
        ambiguous: bool = False,
        name: str = "",
        owner: str = "",
    ) -> Json:
        """Draw a valid-ish value of ``schema``; record its site (and its children's) in ``out``."""
        schema = self.resolve(schema)
        branches = self.branches(schema)
        accepted = self.types(schema)
        chosen = 0
        if len(branches) > 1:
            chosen = draw(st.integers(0, len(branches) - 1))
            ambiguous = ambiguous or self._ambiguous(branches, chosen)
        branch = branches[chosen]
        out.sites.append(Site(path, branch, accepted, merge, ambiguous, name))
        special = _special(draw, branch, name, owner)
        if special is not _NO:
            return special
        if "const" in branch:
            return branch["const"]
        if "enum" in branch:
            return draw(st.sampled_from(branch["enum"]))
        kind = branch.get("type")
        if kind == "object" and "properties" in branch:
            obj: dict[str, Json] = {}
            required = set(branch.get("required", ()))
            for key, sub in branch["properties"].items():
                if key in required or draw(st.booleans()):
                    obj[key] = self.value(
                        draw,
                        sub,
                        (*path, key),
                        out,
                        merge=merge,
                        ambiguous=ambiguous,
                        name=key,
                        owner=str(branch.get("title", "")),
                    )
            return obj
        if kind == "object":
            extra = branch.get("additionalProperties", True)
            if isinstance(extra, dict) and extra:  # a typed map: metadata, prompt variables
                size = min(branch.get("maxProperties", 3), 3)
                keys = draw(st.lists(text, max_size=size, unique=True))
                return {
                    key: self.value(
                        draw, extra, (*path, key), out, merge=merge, ambiguous=ambiguous
                    )
                    for key in keys
                }
            return draw(st.dictionaries(text, free_json, max_size=3))
        if kind == "array":
            low = branch.get("minItems", 0)
            high = min(branch.get("maxItems", 3), max(low, 3))
            size = draw(st.integers(low, high))
            return [
                self.value(draw, branch.get("items", {}), (*path, i), out, ambiguous=ambiguous)
                for i in range(size)
            ]
        if kind is None:
            return draw(free_json)
        return draw(_leaf(branch))


_NO = object()


def _json_type(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _leaf(schema: dict[str, Any]) -> st.SearchStrategy[Json]:
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if schema.get("pattern") == "^[a-zA-Z0-9_-]+$":
            return st.one_of(st.sampled_from(TOOL_NAMES), st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z"))
        small = text if high is None or high >= 24 else st.text(max_size=high)
        return small.filter(lambda s: low <= len(s) <= (high if high is not None else len(s)))
    if kind == "integer":
        low = schema.get("minimum", -(2**31))
        high = schema.get("maximum", low + 10**6 if "minimum" in schema else 2**31)
        values = st.integers(low, high)
        return values if "maximum" in schema else st.one_of(values, st.just(2**64))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.one_of(
            st.floats(low, high, allow_nan=False, allow_infinity=False),
            st.integers(
                math.ceil(low) if low is not None else -100,
                math.floor(high) if high is not None else 100,
            ),
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return free_json


def _special(draw: st.DrawFn, schema: dict[str, Any], name: str, owner: str) -> Json:
    """Field-aware values: real audio, ids that exist, tool names that match, voices."""
    if schema.get("type") != "string" and not (name == "parameters" and owner == "FunctionTool"):
        return _NO
    if name == "audio":
        return draw(audio_b64)
    if name == "parameters":
        return draw(_tool_parameters())
    if name in ("item_id", "previous_item_id") or (name == "id" and owner != "PromptReference"):
        if owner == "VoiceId":
            return draw(st.sampled_from(VOICES))
        high = schema.get("maxLength", 10**6)
        ids = st.one_of(item_ids, st.just("root")) if name == "previous_item_id" else item_ids
        return draw(ids.filter(lambda s: schema.get("minLength", 0) <= len(s) <= high))
    if name == "call_id":
        return draw(st.one_of(st.sampled_from(CALL_IDS), st.from_regex(r"\Acall_[a-z0-9]{1,8}\Z")))
    if name == "name" and owner in ("ToolChoiceFunction", "FunctionCall"):
        return draw(st.sampled_from(TOOL_NAMES))
    if name == "voice":  # mostly the default: a voice cannot change once audio was produced
        return draw(
            st.one_of(st.just("alloy"), st.sampled_from(VOICES), st.text(min_size=1, max_size=8))
        )
    return _NO


# ----------------------------------------------------------------------------- events

_EVENT_SCHEMAS = {
    kind: SchemaStrategies(m.model_json_schema()) for kind, m in CLIENT_EVENT_MODELS.items()
}
_SESSION_SCHEMAS: dict[str, SchemaStrategies] = {
    "realtime": SchemaStrategies(RealtimeSessionConfig.model_json_schema()),
    "transcription": SchemaStrategies(TranscriptionSessionConfig.model_json_schema()),
}


def _session_body(draw: st.DrawFn, kind: str, out: _Generated) -> dict[str, Json]:
    """A ``session.update`` body from the session config model (the core validates it so)."""
    gen = _SESSION_SCHEMAS[kind]
    schema = dict(gen.resolve(gen.schema))
    schema["required"] = ["type"]  # the core requires session.type (spec §2.2)
    out.sites.append(Site(("session",), schema, frozenset({"object"}), False, False, "session"))
    out.sites.append(
        Site(
            ("session", "type"),
            {"const": kind, "type": "string"},
            frozenset({"string"}),
            False,
            False,
            "type",
        )
    )
    body: dict[str, Json] = {"type": kind}
    for key, sub in schema["properties"].items():
        if key != "type" and draw(st.integers(0, 2)) == 0:
            body[key] = gen.value(
                draw, sub, ("session", key), out, merge=True, name=key, owner=schema["title"]
            )
    return body


@st.composite
def session_config(draw: st.DrawFn, kind: SessionKind) -> dict[str, Json]:
    """A valid-ish session object of ``kind`` (some of its fields), ``type`` included."""
    return _session_body(draw, kind, _Generated(None))


@st.composite
def generated_event(
    draw: st.DrawFn, kinds: tuple[str, ...], session: SessionKind = "realtime"
) -> tuple[str, _Generated, bool]:
    """A valid-ish event of one of ``kinds``: (type, value with sites, certainly invalid)."""
    kind = draw(st.sampled_from(kinds))
    gen = _EVENT_SCHEMAS[kind]
    out = _Generated(None)
    schema = gen.resolve(gen.schema)
    out.sites.append(Site((), schema, frozenset({"object"}), False, False))
    event: dict[str, Json] = {"type": kind}
    if draw(st.integers(0, 4)):
        event["event_id"] = draw(event_ids)
        out.sites.append(
            Site(
                ("event_id",),
                {"type": "string", "maxLength": MAX_ECHOED_EVENT_ID},
                frozenset({"string", "null"}),
                False,
                False,
                "event_id",
            )
        )
    for key, sub in schema["properties"].items():
        if key in ("type", "event_id"):
            continue
        if key not in schema.get("required", ()) and not draw(st.booleans()):
            continue
        if kind == "session.update" and key == "session":
            body_kind = draw(st.sampled_from((session, session, session, _other(session))))
            event[key] = _session_body(draw, body_kind, out)
            continue
        event[key] = gen.value(draw, sub, (key,), out, name=key, owner=str(schema.get("title", "")))
    out.value = event
    bad = kind not in WEBSOCKET_EVENT_TYPES  # output_audio_buffer.clear: WebRTC only
    if kind == "session.update" and event["session"]["type"] != session:
        bad = True  # a transcription update on a realtime session, or the reverse
    if session == "transcription" and kind in ("response.create", "conversation.item.create"):
        bad = True  # not supported in transcription sessions
    return kind, out, bad


def _other(session: SessionKind) -> SessionKind:
    return "transcription" if session == "realtime" else "realtime"


# ----------------------------------------------------------------------------- mutations

Mutation = Callable[[st.DrawFn, Json, Site], tuple[Json, bool, str] | None]


def _get(value: Json, path: Path) -> Json:
    for part in path:
        value = value[part]
    return value


def _set(root: Json, path: Path, new: Json) -> Json:
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


def _wrong_type(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    if site.accepted is None:
        return None
    choices = [t for t in _JSON_TYPES if t not in site.accepted]
    if not choices:
        return None
    kind = draw(st.sampled_from(choices))
    return _set(root, site.path, _WRONG[kind]), True, f"wrong_type({kind})"


def _unknown_key(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    node = _get(root, site.path)
    if site.schema.get("additionalProperties") is not False or not isinstance(node, dict):
        return None
    key = draw(
        st.one_of(
            st.just("bogus_field"),
            text.filter(lambda k: k not in site.schema.get("properties", {})),
            long_text(1_000, 1_000_000),
        )
    )
    node[key] = draw(st.one_of(free_json, st.just(1)))
    return root, True, f"unknown_key({len(key)} chars)"


def _drop_required(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    node = _get(root, site.path)
    required = [k for k in site.schema.get("required", ()) if isinstance(node, dict) and k in node]
    if not required:
        return None
    key = draw(st.sampled_from(required))
    del node[key]
    return root, not (site.merge or site.ambiguous), f"drop_required({key})"


def _out_of_range(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    schema, node = site.schema, _get(root, site.path)
    kind = schema.get("type")
    options: list[Json] = []
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.5
        if "minimum" in schema:
            options.append(schema["minimum"] - step)
        if "maximum" in schema:
            options += [schema["maximum"] + step, 2**64 + (0 if kind == "integer" else 0.5)]
    elif kind == "string" and isinstance(node, str):
        if schema.get("maxLength", 10**9) <= 100_000:
            options.append("y" * (schema["maxLength"] + 1))
        if schema.get("minLength", 0) > 0:
            options.append("")
    elif kind == "array" and isinstance(node, list):
        if "maxItems" in schema and node:
            options.append(node * (schema["maxItems"] + 1))
        if schema.get("minItems", 0) > 0:
            options.append([])
    if not options:
        return None
    return _set(root, site.path, draw(st.sampled_from(options))), not site.ambiguous, "out_of_range"


def _bad_enum(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    allowed = [site.schema["const"]] if "const" in site.schema else site.schema.get("enum")
    if not allowed or not all(isinstance(a, str) for a in allowed):
        return None
    wrong = draw(st.sampled_from(("nope", "", "AUTO", "audio/wav", "Message", allowed[0] + " ")))
    if wrong in allowed:
        wrong = "nope"
    return _set(root, site.path, wrong), not site.ambiguous, "bad_enum"


def _bad_audio(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    if site.name != "audio" or not isinstance(_get(root, site.path), str):
        return None
    return _set(root, site.path, draw(bad_base64())), True, "bad_base64"


def _unicode(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    if not isinstance(_get(root, site.path), str):
        return None
    lone = draw(st.booleans())
    pool = SURROGATE_STRINGS if lone else EDGE_STRINGS
    new = draw(st.sampled_from(pool))
    if draw(st.booleans()):
        new = "ok " + new + " ok"
    return _set(root, site.path, new), lone, "surrogate" if lone else "unicode"


def _long_string(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    if not isinstance(_get(root, site.path), str) or site.name == "audio":
        return None
    new = draw(long_text(1_000, 300_000))
    limit = site.schema.get("maxLength")
    return (
        _set(root, site.path, new),
        limit is not None and len(new) > limit and not site.ambiguous,
        "long_string",
    )


_NUMBER_BAD = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "-" + "1" * 5000)
_NUMBER_ODD = ("-0", "-0.0", "1e-999", "18446744073709551616", "0.0000000000000000000001", "1E2")


def _number(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    if draw(st.booleans()):
        raw = draw(st.sampled_from(_NUMBER_BAD))
        return _set(root, site.path, Raw(raw)), True, f"number({raw[:12]})"
    if site.accepted is not None and not site.accepted & {"integer", "number"}:
        return None
    raw = draw(st.sampled_from(_NUMBER_ODD))
    return _set(root, site.path, Raw(raw)), False, f"number({raw[:12]})"


def deep_json(depth: int, shape: str) -> Raw:
    """``depth`` levels of arrays, objects or both, as JSON text (no recursion to build)."""
    if shape == "array":
        return Raw("[" * depth + "]" * depth)
    if shape == "object":
        return Raw('{"a":' * depth + "0" + "}" * depth)
    half = depth // 2
    return Raw('[{"k":' * half + "null" + "}]" * half)


def _deep(draw: st.DrawFn, root: Json, site: Site) -> tuple[Json, bool, str] | None:
    shape = draw(st.sampled_from(("array", "object", "mixed")))
    if draw(st.integers(0, 3)) == 0 and site.accepted is None:
        # free-form: nesting the server must accept and echo (within 128 levels in all)
        depth = max(1, MAX_JSON_DEPTH - len(site.path) - 8)
        return (
            _set(root, site.path, deep_json(draw(st.integers(1, depth)), shape)),
            False,
            "deep_ok",
        )
    depth = draw(st.integers(200, 3000))
    return _set(root, site.path, deep_json(depth, shape)), True, f"deep({depth})"


SCHEMA_MUTATIONS: tuple[Mutation, ...] = (
    _wrong_type,
    _unknown_key,
    _drop_required,
    _out_of_range,
    _bad_enum,
    _bad_audio,
)
"""Mutations the schema proves invalid (except where noted on :class:`Site`)."""

LEXICAL_MUTATIONS: tuple[Mutation, ...] = (_unicode, _long_string, _number, _deep, _unknown_key)
"""Text-level edge cases: Unicode, long strings and keys, odd numbers, deep nesting."""


@st.composite
def _site(draw: st.DrawFn, sites: list[Site]) -> Site:
    """A site to mutate: most often a nested one, seldom the event object itself."""
    nested = [s for s in sites if len(s.path) >= 2]
    top = [s for s in sites if len(s.path) == 1 and (s.name != "event_id" or draw(st.booleans()))]
    tier = draw(st.integers(0, 7))
    pool = (nested if tier >= 3 else top if tier >= 1 else []) or top or sites
    return pool[draw(st.integers(0, len(pool) - 1))]


@st.composite
def event_frame(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = tuple(CLIENT_EVENT_MODELS),
    mutations: tuple[Mutation, ...] = (),
    session: SessionKind = "realtime",
) -> Frame:
    """A generated event, mutated once (``mutations`` non-empty) or not, as a text frame."""
    kind, out, bad = draw(generated_event(kinds, session))
    value, label = out.value, "valid"
    if mutations:
        for _ in range(20):
            site = draw(_site(out.sites))
            applied = draw(st.sampled_from(mutations))(draw, value, site)
            if applied is not None:
                value, certain, what = applied
                bad = bad or certain
                label = f"{what}@{_site_name(site.path)}"
                break
    if kind == "session.close" and not bad:  # a valid session.close ends the session
        value = dict(value, bogus_field=True) if isinstance(value, dict) else value
        bad, label = True, label + "+unknown_key"
    data = encode(value, ascii_only=draw(st.booleans()))
    return Frame(data, kind, bad, label)


# ----------------------------------------------------------------------------- deep free-form

_DEPTHS = (1, 60, 110, 120, 122, 123, 124, 125, 126, 127, 128, 129, 130, 200, 1000, 3000)
"""Nesting depths around the server's limit (128 levels in the whole frame) and far past it."""


@st.composite
def deep_free_form_frame(draw: st.DrawFn) -> Frame:
    """Nesting inside the free-form fields (``tools[0].parameters``, ``tracing.metadata``):
    valid up to the limit, then refused with one ``error`` (issue 8, deep nesting)."""
    depth = draw(st.one_of(st.sampled_from(_DEPTHS), st.integers(1, 3000)))
    alternate = draw(st.booleans())  # objects only, or objects and arrays alternating
    levels = ["[" if alternate and k % 2 == 0 else "{" for k in range(1, depth + 1)]
    opening = "".join('{"a":' if c == "{" else "[" for c in levels[:-1])
    closing = "".join("}" if c == "{" else "]" for c in reversed(levels[:-1]))
    nested = Raw(opening + ("{}" if levels[-1] == "{" else "[]") + closing)
    where = draw(st.sampled_from(("tools", "tracing", "response_tools")))
    tool = {"type": "function", "name": "fz_tool_a", "parameters": nested}
    event: dict[str, Json]
    if where == "tools":
        event = {"type": "session.update", "session": {"type": "realtime", "tools": [tool]}}
    elif where == "tracing":
        tracing = {"workflow_name": "fz", "metadata": nested}
        event = {"type": "session.update", "session": {"type": "realtime", "tracing": tracing}}
    else:
        event = {"type": "response.create", "response": {"tools": [tool], "conversation": "none"}}
    event["event_id"] = f"evt_deep_{depth}"
    data = encode(event)
    try:
        strict_loads(data)
        bad = False
    except ValueError:
        bad = True
    return Frame(data, event["type"], bad, f"deep_free_form({where}, {depth} levels)")


# ----------------------------------------------------------------------------- raw frames

_NOT_OBJECTS = (
    "[]",
    "[1,2]",
    "0",
    "-1.5",
    '"session.update"',
    "true",
    "null",
    '[{"type":"session.update"}]',
)
_GARBAGE = ("", " ", "{", "}", "{]", "{'type': 'x'}", "undefined", '{"type"}', "NaN", "{}x", "\x00")


@st.composite
def raw_frame(draw: st.DrawFn, session: SessionKind = "realtime") -> Frame:
    """Frames that are no event: non-objects, garbage, truncated JSON, binary, bad ``type``."""
    how = draw(
        st.sampled_from(("not_object", "garbage", "truncated", "binary", "type", "trailing"))
    )
    if how == "not_object":
        return Frame(draw(st.sampled_from(_NOT_OBJECTS)), "raw", True, how)
    if how == "garbage":
        return Frame(draw(st.sampled_from(_GARBAGE)), "raw", True, how)
    kind, out, _ = draw(generated_event(tuple(WEBSOCKET_EVENT_TYPES), session))
    whole = encode(out.value, ascii_only=draw(st.booleans()))
    if how == "truncated":
        cut = draw(st.integers(0, len(whole) - 1))
        return Frame(whole[:cut], kind, True, f"truncated({cut}/{len(whole)})")
    if how == "binary":
        data = draw(st.one_of(st.just(whole.encode()), st.binary(max_size=64)))
        return Frame(data, kind, True, how)
    if how == "trailing":
        return Frame(whole + draw(st.sampled_from(("x", "}", ",", "{}", "\x00"))), kind, True, how)
    value = out.value
    value["type"] = draw(
        st.one_of(
            st.sampled_from(
                (
                    "nope",
                    "SESSION.UPDATE",
                    "session.update ",
                    "transcription_session.update",
                    "session.input_audio_buffer.append",
                    "response.created",
                    "",
                    None,
                    5,
                    [],
                    {},
                    "session.update\x00",
                    "session.update\udc00",
                )
            ),
            text.filter(lambda t: t not in CLIENT_EVENT_MODELS),
        )
    )
    if draw(st.integers(0, 5)) == 0:
        del value["type"]
    return Frame(encode(value, ascii_only=draw(st.booleans())), kind, True, "bad_type")
