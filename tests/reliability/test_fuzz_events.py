"""Bad input never kills a session: a property-based fuzzer of every client event type.

reliability-targets.md §3, check 3. The real app (``create_app``, the real session driver,
uvicorn with the CLI's WebSocket settings) runs on its own event loop in a background thread
with the fake engines; the test talks to it over a real WebSocket with the synchronous
``websockets`` client, one connection reused across examples (a failed example closes it, so
the next one, and every shrinking step, starts afresh and the reported example is minimal).
Each example starts from a quiet session (a ``session.update`` turning off turn detection,
transcription and tools), sends its frames, then a marker ``session.update`` and reads
everything up to the marker's ``session.updated`` and to the end of any response under way.

Frames come from ``_fuzz_strategies.py``: events generated from our own wire models' JSON
schemas (``CLIENT_EVENT_MODELS``, ``RealtimeSessionConfig``, ``TranscriptionSessionConfig``,
the items), then mutated: wrong JSON types, unknown keys (names up to 1 MB), missing keys,
bad enum values and bounds, invalid base64 audio, Unicode edge cases in every string (lone
surrogate escapes, NUL, BOM, bidi marks, combining marks, astral emoji, strings up to 1 MB),
odd numbers (5000-digit integers, 2**64, -0, 1e999, 1e-999, NaN, Infinity), deep nesting (200
to 3000 levels anywhere, and around the 128-level limit in ``tools[0].parameters`` and
``tracing.metadata``), truncated, trailing and non-object JSON, unknown ``type`` values and
binary frames; alone, in bursts of up to six, and on a transcription session.

What a client checks, for every frame (spec §6.1):

* a certainly-invalid frame gets exactly one ``error`` and nothing else; a valid-ish one gets
  at most one ``error`` and only the events its type can produce (plus the tail of responses,
  turns and transcriptions already under way);
* each ``error`` is an ``invalid_request_error`` with a non-empty ``code``, a ``message`` of at
  most 1024 characters, a ``param`` of at most 256 (or null), and ``event_id`` echoing the
  client's ``event_id`` when it was a string of at most 512 characters in a decodable object;
* every server frame is a UTF-8 text frame of strict JSON (no NaN, no lone surrogate) that the
  official SDK's ``RealtimeServerEvent`` union accepts, with a fresh ``event_`` id;
* the server never closes the connection, and after every example the session still works: a
  ``session.update`` with a marker gets its ``session.updated``;
* nothing is logged at ERROR by ``openrealtime``, ``uvicorn.error`` or ``asyncio``, and the
  server's API key (a canary) never appears in any frame.

The REST endpoints get the same treatment (``test_rest_bodies``): never a 5xx, a 4xx in the
OpenAI error shape. The server bugs the fuzzer found are kept below as regression tests.

The default run is bounded (about 1,600 examples, under 30 s on 2 cores) and reproducible
(``derandomize=True``, no example database). A long run on demand sets N examples per
strategy family (and lifts the per-test timeout); ``OPENREALTIME_FUZZ_SEED=<int>`` makes it a
random but replayable search instead of the fixed one::

    OPENREALTIME_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest \\
        tests/reliability/test_fuzz_events.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import (
    HealthCheck,
    currently_in_test_context,
    given,
    note,
    seed,
    settings,
)
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from openrealtime.backends.fake import FakeLanguageModel, FakeTextToSpeech
from openrealtime.config import Config
from openrealtime.protocol.client_events import CLIENT_EVENT_MODELS, WEBSOCKET_EVENT_TYPES
from tests.conformance._error_helpers import EVENT_ID, NOT_OVER_WEBSOCKET, fake_engines, serve
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import ws_url
from tests.reliability._fuzz_strategies import (
    EDGE_STRINGS,
    LEXICAL_MUTATIONS,
    SCHEMA_MUTATIONS,
    SURROGATE_STRINGS,
    Frame,
    Json,
    Raw,
    SessionKind,
    deep_free_form_frame,
    deep_json,
    encode,
    event_frame,
    expected_echo,
    free_json,
    long_text,
    raw_frame,
    session_config,
    text,
)

CANARY = "sk-fuzz-canary-4b1d9e07c3a25f68"
"""The server's only API key: it must never appear in a frame the server sends."""

ENV_EXAMPLES = "OPENREALTIME_FUZZ_EXAMPLES"
ENV_SEED = "OPENREALTIME_FUZZ_SEED"
WAIT_S = 10.0
"""Longest wait for any one server event (a loaded 2-core CI machine)."""

MAX_MESSAGE = 1024
MAX_PARAM = 256

_WATCHED_LOGGERS = ("openrealtime", "uvicorn.error", "asyncio")

RESPONSE_TYPES = frozenset(
    {
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "conversation.item.added",
        "conversation.item.done",
        "rate_limits.updated",
    }
)
"""What a response sends, from ``response.created`` to ``rate_limits.updated`` (spec §5.3)."""

TRANSCRIPTION_TYPES = frozenset(
    {
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
    }
)

TURN_TYPES = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.added",
        "conversation.item.done",
    }
)
"""What turn detection may send on its own (speech, silence, idle timeout), spec §5.2/§5.10."""

ANSWERS: dict[str, frozenset[str]] = {
    "session.update": frozenset({"session.updated"}),
    "input_audio_buffer.append": frozenset(),
    "input_audio_buffer.commit": frozenset(
        {"input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"}
    ),
    "input_audio_buffer.clear": frozenset({"input_audio_buffer.cleared"}),
    "conversation.item.create": frozenset({"conversation.item.added", "conversation.item.done"}),
    "conversation.item.retrieve": frozenset({"conversation.item.retrieved"}),
    "conversation.item.truncate": frozenset({"conversation.item.truncated"}),
    "conversation.item.delete": frozenset({"conversation.item.deleted"}),
    "response.create": RESPONSE_TYPES,
    "response.cancel": RESPONSE_TYPES,
}
"""The events each valid client event can produce by itself (spec §2.2 "Server response")."""

ONE_EACH: dict[str, dict[str, int]] = {
    kind: dict.fromkeys(answers, 1) for kind, answers in ANSWERS.items() if "response" not in kind
}
ONE_EACH["response.create"] = {"response.created": 1}
"""At most how many of each event one valid client event produces (a response aside)."""
COUNTED = frozenset(t for counts in ONE_EACH.values() for t in counts)


def fuzz_settings(examples: int) -> settings:
    """Bounded, reproducible settings; ``OPENREALTIME_FUZZ_EXAMPLES`` sets the count."""
    wanted = os.environ.get(ENV_EXAMPLES)
    return settings(
        max_examples=int(wanted) if wanted else examples,
        deadline=None,
        derandomize=os.environ.get(ENV_SEED) is None,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


if os.environ.get(ENV_EXAMPLES):  # a long run is bounded by its example count, not by time
    pytestmark = pytest.mark.timeout(0)


def seeded(test: Callable[..., None]) -> Callable[..., None]:
    """Apply ``OPENREALTIME_FUZZ_SEED`` (a random but replayable long run), if set."""
    value = os.environ.get(ENV_SEED)
    return seed(int(value))(test) if value else test


def _note(message: str) -> None:
    if currently_in_test_context():
        note(message)


def _event(label: str) -> None:
    if currently_in_test_context():
        hypothesis_event(label)


# ----------------------------------------------------------------------------- the server


class ErrorRecords(logging.Handler):
    """Collects ERROR (and worse) records of the watched loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        found = [f"{r.name}: {r.getMessage()}\n{r.exc_text or ''}" for r in self.records]
        self.records.clear()
        return found


class ServerThread:
    """The real app on its own event loop in a daemon thread; ``base`` is its URL."""

    def __init__(self) -> None:
        self.base = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(30), "the server did not start within 30 s"
        if self._failure is not None:
            raise RuntimeError("the server failed to start") from self._failure

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server did not stop within 30 s"
        if self._failure is not None:
            raise RuntimeError("the server failed") from self._failure

    def sync(self) -> None:
        """Let the server's loop finish what it was doing (a request that ends by logging its
        failure does so just after its response went out)."""
        assert self._loop is not None

        async def turns() -> None:
            for _ in range(10):
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(turns(), self._loop).result(WAIT_S)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()/stop(), never lost in the thread
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Keepalive pings (tested elsewhere, check 5) would draw their payloads from the global
        # `random` from another thread while hypothesis draws an example, which it reports as a
        # strategy using `random`: none while the fuzzers run.
        config = Config(api_keys=(CANARY,), vad="energy", ws_ping_interval=86_400.0)
        engines = fake_engines(
            # short, fixed answers keep a response to a few events whatever the conversation
            llm=FakeLanguageModel(reply="Sure thing."),
            tts=FakeTextToSpeech(ms_per_char=2.0),
        )
        async with serve(config, engines) as base:
            self.base = base
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def errors_logged() -> Iterator[ErrorRecords]:
    handler = ErrorRecords()
    for name in _WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in _WATCHED_LOGGERS:
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture(scope="module")
def server_thread(errors_logged: ErrorRecords) -> Iterator[ServerThread]:
    thread = ServerThread()
    thread.start()
    yield thread
    thread.stop()
    assert not errors_logged.take(), "errors logged while the server stopped"


@pytest.fixture(scope="module")
def server(server_thread: ServerThread) -> str:
    return server_thread.base


# ----------------------------------------------------------------------------- the checks


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise AssertionError(f"the server sent the non-JSON number {name}")


def check_server_frame(raw: str | bytes, seen_ids: set[str]) -> dict[str, Any]:
    """One server frame as a client sees it: text, strict JSON, the SDK's union, fresh id."""
    assert isinstance(raw, str), f"the server sent a binary frame: {raw[:200]!r}"
    assert CANARY not in raw, "the server's API key appears in a frame it sent"
    event = json.loads(raw, parse_constant=_no_constant)
    assert isinstance(event, dict), f"server event is not an object: {raw[:300]}"
    stack: list[Any] = [event]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            assert not _LONE_SURROGATE.search(node), f"lone surrogate in {raw[:300]}"
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    SERVER_EVENT.validate_python(event)
    assert event["type"] not in NOT_OVER_WEBSOCKET, event["type"]
    assert EVENT_ID.match(event["event_id"]), event["event_id"]
    assert event["event_id"] not in seen_ids, f"duplicate event_id {event['event_id']}"
    seen_ids.add(event["event_id"])
    return event


def check_error(event: dict[str, Any]) -> None:
    """The shape of an ``error`` answering a client mistake (spec §6.1)."""
    error = event["error"]
    assert error["type"] == "invalid_request_error", f"not a client error: {error}"
    assert isinstance(error["code"], str) and error["code"], f"no code: {error}"
    assert isinstance(error["message"], str) and len(error["message"]) <= MAX_MESSAGE, (
        f"message of {len(error['message'])} characters"
    )
    param = error["param"]
    assert param is None or (isinstance(param, str) and len(param) <= MAX_PARAM), (
        f"param of {len(param)} characters"
    )


@dataclass
class Window:
    """What the server sent between a batch of frames and the marker's ``session.updated``."""

    frames: list[Frame]
    events: list[dict[str, Any]]
    tail: frozenset[str]
    """Event types already allowed before the batch (responses and turns under way)."""
    transcribing: set[str] = field(default_factory=set)
    """Items whose transcription was started; their transcription events may come any time."""


def _shown(window: Window) -> str:
    lines = [repr(f) for f in window.frames]
    for event in window.events:
        text_ = json.dumps(event)
        lines.append("  <- " + (text_ if len(text_) < 700 else text_[:700] + "..."))
    return "\n".join(lines)


def check_window(window: Window, *, vad_possible: bool) -> None:
    """The per-frame properties (see the module docstring) over one batch of frames."""
    frames, events = window.frames, window.events
    errors = [e for e in events if e["type"] == "error"]
    for error in errors:
        try:
            check_error(error)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_shown(window)}") from None
    expected = Counter(expected_echo(f.data) for f in frames)
    expected_bad = Counter(expected_echo(f.data) for f in frames if f.bad)
    got = Counter(e["error"]["event_id"] for e in errors)
    for echo, count in got.items():
        assert count <= expected[echo], (
            f"{count} error(s) with event_id {echo!r} for {expected[echo]} frame(s) that echo "
            f"it\n{_shown(window)}"
        )
    for echo, count in expected_bad.items():
        assert got[echo] >= count, (
            f"{count} bad frame(s) echoing {echo!r} got {got[echo]} error(s)\n{_shown(window)}"
        )
    allowed = set(window.tail)
    for frame in frames:
        if not frame.bad:
            allowed |= ANSWERS.get(frame.kind, frozenset())
            if vad_possible:
                allowed |= TURN_TYPES | RESPONSE_TYPES
    for event in events:
        kind = event["type"]
        if kind == "error":
            continue
        if kind in TRANSCRIPTION_TYPES:
            assert event["item_id"] in window.transcribing, (
                f"transcription event for an item never committed\n{_shown(window)}"
            )
            continue
        assert kind in allowed, f"unexpected {kind}\n{_shown(window)}"
    if window.tail or vad_possible:
        return  # events of earlier work may add to the counts
    budget: Counter[str] = Counter()
    for frame in frames:
        if not frame.bad:
            budget.update(ONE_EACH.get(frame.kind, {}))
    counted = set(COUNTED)
    if any(f.kind in ("response.create", "response.cancel") and not f.bad for f in frames):
        counted -= {"conversation.item.added", "conversation.item.done"}  # output items too
    seen = Counter(e["type"] for e in events if e["type"] in counted)
    for kind, count in seen.items():
        assert count <= budget[kind], (
            f"{count} {kind} for {budget[kind]} frame(s) that may cause one\n{_shown(window)}"
        )


class FuzzSession:
    """One reused connection, the state a client tracks, and the marker round trip."""

    def __init__(self, base: str, kind: SessionKind, logged: ErrorRecords) -> None:
        self.base = base
        self.kind = kind
        self.logged = logged
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self.seen_ids: set[str] = set()
        self.session: dict[str, Any] = {}
        self.active: set[str] = set()
        self.transcribing: set[str] = set()
        self.markers = 0
        self.connects = 0
        self.frames_sent = 0

    # -- connection

    def connect(self) -> None:
        query = "model=gpt-realtime" if self.kind == "realtime" else "intent=transcription"
        self.close()
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(
                ws_url(self.base, f"/v1/realtime?{query}"),
                additional_headers={"Authorization": f"Bearer {CANARY}"},
                max_size=None,
                proxy=None,
                ping_interval=None,
                open_timeout=WAIT_S,
                close_timeout=2,
            )
        )
        self.connects += 1
        self.active.clear()
        created = self.recv()
        assert created["type"] == "session.created", created

    def close(self) -> None:
        self.ws = None
        self._stack.close()

    def send(self, data: str | bytes) -> None:
        assert self.ws is not None
        try:
            self.ws.send(data)
        except ConnectionClosed as closed:
            self.ws = None  # the next example reconnects; this one fails
            raise AssertionError(f"the server closed the connection: {closed}") from None

    def recv(self) -> dict[str, Any]:
        assert self.ws is not None
        try:
            raw = self.ws.recv(timeout=WAIT_S)
        except TimeoutError:
            raise AssertionError(f"the server sent nothing for {WAIT_S} s") from None
        except ConnectionClosed as closed:
            self.ws = None  # the next example reconnects; this one fails
            raise AssertionError(f"the server closed the connection: {closed}") from None
        event = check_server_frame(raw, self.seen_ids)
        self._track(event)
        return event

    def _track(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind in ("session.created", "session.updated"):
            self.session = event["session"]
        elif kind == "response.created":
            self.active.add(event["response"]["id"])
        elif kind == "response.done":
            self.active.discard(event["response"]["id"])
        elif kind == "input_audio_buffer.committed":
            self.transcribing.add(event["item_id"])
        elif kind == "conversation.item.added":
            item = event["item"]
            if item.get("role") == "user" and any(
                p.get("type") == "input_audio" for p in item.get("content", ())
            ):
                self.transcribing.add(item["id"])

    @property
    def vad_on(self) -> bool:
        return self.session.get("audio", {}).get("input", {}).get("turn_detection") is not None

    # -- the marker round trip

    def _marker_body(self, marker: str, *, reset: bool) -> dict[str, Any]:
        if self.kind == "realtime":
            body: dict[str, Any] = {"type": "realtime", "instructions": marker}
            if reset:  # no turn detection, no transcription, no tools: a quiet session
                body.update(tools=[], tool_choice="auto")
                body["audio"] = {"input": {"turn_detection": None, "transcription": None}}
            return body
        audio_input: dict[str, Any] = {"transcription": {"model": "fz-stt", "prompt": marker}}
        if reset:
            audio_input["turn_detection"] = None
        return {"type": "transcription", "audio": {"input": audio_input}}

    def _is_marker(self, event: dict[str, Any], marker: str) -> bool:
        if event["type"] != "session.updated":
            return False
        session = event["session"]
        if self.kind == "realtime":
            return bool(session.get("instructions") == marker)
        transcription = session["audio"]["input"].get("transcription") or {}
        return bool(transcription.get("prompt") == marker)

    def round_trip(self, *, reset: bool = False) -> list[dict[str, Any]]:
        """Send a marker ``session.update``; return every event before its ``session.updated``
        and, after it, until every response under way is done."""
        self.markers += 1
        marker = f"fz-marker-{self.markers}"
        marker_id = f"fz_marker_{self.markers}"
        body = self._marker_body(marker, reset=reset)
        self.send(json.dumps({"type": "session.update", "event_id": marker_id, "session": body}))
        events: list[dict[str, Any]] = []
        while not self._is_marker(event := self.recv(), marker):
            events.append(event)
        while self.active:
            events.append(self.recv())
        for event in events:
            if event["type"] == "error":
                assert event["error"]["event_id"] != marker_id, (
                    f"the marker session.update failed: {event['error']}"
                )
        return events

    # -- one example

    def begin(self) -> None:
        """Start an example from a quiet, working session (reconnecting after a failure)."""
        if self.ws is None:
            self.connect()
        self.logged.take()
        quiet = self.round_trip(reset=True)
        errors = [e["error"] for e in quiet if e["type"] == "error"]
        assert not errors, f"errors while resetting the session: {errors}"

    def exchange(self, frames: list[Frame]) -> Window:
        """Send ``frames`` back to back, then the marker; check everything that came back."""
        for frame in frames:
            _note(repr(frame))
            _event(
                f"{frame.kind} {'bad' if frame.bad else 'valid-ish'} {frame.label.split('(')[0]}"
            )
        tail: set[str] = set()
        if self.active:
            tail |= RESPONSE_TYPES
        # turn detection may act on its own: already on, or turned on by a frame of the batch
        # for the frames after it
        vad_possible = self.vad_on
        if vad_possible:
            tail |= TURN_TYPES | RESPONSE_TYPES
        for frame in frames:
            self.send(frame.data)
            self.frames_sent += 1
        if any(f.kind == "session.update" and not f.bad for f in frames[:-1]):
            vad_possible = True
        events = self.round_trip()
        window = Window(frames, events, frozenset(tail), set(self.transcribing))
        check_window(window, vad_possible=vad_possible)
        for answer in events:
            if answer["type"] == "error":
                _event(
                    f"error {answer['error']['code']} ({'bad' if frames[0].bad else 'valid-ish'})"
                )
            else:
                _event(f"answer {answer['type']}")
        logged = self.logged.take()
        assert not logged, "server errors logged:\n" + "\n".join(logged)
        return window


@pytest.fixture(scope="module")
def realtime(server: str, errors_logged: ErrorRecords) -> Iterator[FuzzSession]:
    session = FuzzSession(server, "realtime", errors_logged)
    session.connect()
    yield session
    session.close()


@pytest.fixture(scope="module")
def transcription(server: str, errors_logged: ErrorRecords) -> Iterator[FuzzSession]:
    session = FuzzSession(server, "transcription", errors_logged)
    session.connect()
    yield session
    session.close()


def _run(session: FuzzSession, frames: list[Frame]) -> Window:
    try:
        session.begin()
        return session.exchange(frames)
    except BaseException:
        # A failed example leaves the session in an unknown state: the next one (and every
        # shrinking step) starts on a fresh connection, so the reported example is minimal.
        session.close()
        session.logged.take()
        raise


# ----------------------------------------------------------------------------- the fuzzers

_RICH = ("session.update",) * 3 + ("conversation.item.create", "response.create") * 2
"""The events with deep schemas are drawn more often than those with one or two fields."""
WS_KINDS = tuple(WEBSOCKET_EVENT_TYPES) + _RICH
ALL_KINDS = tuple(CLIENT_EVENT_MODELS) + _RICH


@seeded
@fuzz_settings(250)
@given(frame=event_frame(ALL_KINDS))
def test_generated_events(realtime: FuzzSession, frame: Frame) -> None:
    """Valid-ish events of every client type, straight from the models' schemas."""
    _run(realtime, [frame])


@seeded
@fuzz_settings(400)
@given(frame=event_frame(ALL_KINDS, SCHEMA_MUTATIONS))
def test_schema_mutations(realtime: FuzzSession, frame: Frame) -> None:
    """Wrong types, unknown and missing keys, bad enums and bounds, bad base64, anywhere."""
    _run(realtime, [frame])


@seeded
@fuzz_settings(300)
@given(frame=event_frame(ALL_KINDS, LEXICAL_MUTATIONS))
def test_text_mutations(realtime: FuzzSession, frame: Frame) -> None:
    """Unicode edge cases, long strings and keys, odd numbers and deep nesting, anywhere."""
    _run(realtime, [frame])


@seeded
@fuzz_settings(150)
@given(frame=raw_frame())
def test_raw_frames(realtime: FuzzSession, frame: Frame) -> None:
    """Frames that are no event: binary, truncated, trailing data, non-objects, bad types."""
    _run(realtime, [frame])


@seeded
@fuzz_settings(60)
@given(frame=deep_free_form_frame())
def test_deep_free_form_fields(realtime: FuzzSession, frame: Frame) -> None:
    """Nesting in ``tools[0].parameters`` and ``tracing.metadata``, around the limit and far
    past it: accepted and echoed, or refused with one error; the session lives on."""
    _run(realtime, [frame])


_any_frame = st.one_of(
    event_frame(WS_KINDS),
    event_frame(WS_KINDS),
    event_frame(ALL_KINDS, SCHEMA_MUTATIONS),
    event_frame(ALL_KINDS, LEXICAL_MUTATIONS),
    raw_frame(),
)


@seeded
@fuzz_settings(120)
@given(frames=st.lists(_any_frame, min_size=2, max_size=6))
def test_bursts(realtime: FuzzSession, frames: list[Frame]) -> None:
    """Several frames back to back (a cancel during a response, appends under turn detection):
    each bad one still gets its own error, and nothing else breaks."""
    _run(realtime, frames)


@seeded
@fuzz_settings(120)
@given(
    frames=st.lists(
        st.one_of(
            event_frame(WS_KINDS, session="transcription"),
            event_frame(WS_KINDS, SCHEMA_MUTATIONS, session="transcription"),
            event_frame(WS_KINDS, LEXICAL_MUTATIONS, session="transcription"),
            raw_frame(session="transcription"),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_transcription_sessions(transcription: FuzzSession, frames: list[Frame]) -> None:
    """The same on a transcription session (``?intent=transcription``, spec §1.6)."""
    _run(transcription, frames)


# ----------------------------------------------------------------------------- regressions
#
# Server bugs this fuzzer found (fixed in 5711c3b), each as its minimal frame.


def test_regression_prompt_variables(realtime: FuzzSession) -> None:
    """``session.prompt.variables`` values the SDK does not type were accepted and echoed, so
    that ``session.updated`` (and every later one) failed the SDK's validation."""
    body = '{"type":"realtime","prompt":{"id":"p","variables":{"k":null}}}'
    frame = Frame(f'{{"type":"session.update","session":{body}}}', "session.update", True, "")
    _run(realtime, [frame])


def test_regression_transcription_delay(realtime: FuzzSession) -> None:
    """Any string was accepted and echoed as ``audio.input.transcription.delay``; the SDK allows
    only minimal, low, medium, high and xhigh."""
    body = '{"type":"realtime","audio":{"input":{"transcription":{"delay":""}}}}'
    frame = Frame(f'{{"type":"session.update","session":{body}}}', "session.update", True, "")
    _run(realtime, [frame])


def test_regression_fake_llm_tool_schema(realtime: FuzzSession) -> None:
    """The fake LLM crashed on a tool schema whose ``required`` held a non-string: an ERROR
    log, a failed response and a ``server_error`` quoting the Python exception."""
    tools = '[{"type":"function","name":"f","parameters":{"type":"object","required":[[1]]}}]'
    session = f'{{"type":"realtime","tools":{tools},"tool_choice":"required"}}'
    update = Frame(f'{{"type":"session.update","session":{session}}}', "session.update", False, "")
    create = Frame('{"type":"response.create"}', "response.create", False, "")
    window = _run(realtime, [update, create])
    done = [e for e in window.events if e["type"] == "response.done"]
    assert done and done[0]["response"]["status"] == "completed", window.events


# ----------------------------------------------------------------------------- the fuzzer can fail


def test_session_close_is_the_one_valid_close(server: str, errors_logged: ErrorRecords) -> None:
    """Why the fuzzer never sends a valid ``session.close``: it ends the session (close 1000).

    It also shows that a connection the server closes is reported as a failure.
    """
    session = FuzzSession(server, "realtime", errors_logged)
    session.connect()
    try:
        frame = Frame('{"type":"session.close"}', "session.close", False, "valid")
        with pytest.raises(AssertionError, match="closed the connection"):
            session.exchange([frame])
    finally:
        session.close()


def test_a_missing_error_is_caught(realtime: FuzzSession) -> None:
    """A frame claimed bad that the server accepts silently fails the property."""
    audio = Frame('{"type":"input_audio_buffer.append","audio":"AAAA"}', "x", True, "claimed bad")
    with pytest.raises(AssertionError, match="bad frame"):
        _run(realtime, [audio])
    # and the real bad twin passes
    _run(realtime, [Frame('{"type":"input_audio_buffer.append","audio":"AAA"}', "x", True, "b64")])


def test_an_unexpected_answer_is_caught(realtime: FuzzSession) -> None:
    """A valid event whose answer is not among the events its type produces fails."""
    clear = Frame('{"type":"input_audio_buffer.clear"}', "input_audio_buffer.append", False, "")
    with pytest.raises(AssertionError, match="unexpected input_audio_buffer.cleared"):
        _run(realtime, [clear])


def _error(event_id: str | None, **changes: Any) -> dict[str, Any]:
    error = {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Invalid value.",
        "param": None,
        "event_id": event_id,
    }
    error.update(changes)
    return {"type": "error", "event_id": "event_" + "A" * 21, "error": error}


@pytest.mark.parametrize(
    ("events", "match"),
    [
        ([], "bad frame"),
        ([_error("e1"), _error("e1")], "2 error"),
        ([_error(None)], "error"),
        ([_error("e1", type="server_error")], "not a client error"),
        ([_error("e1", code="")], "no code"),
        ([_error("e1", message="m" * 1025)], "message of 1025"),
        ([_error("e1", param="p" * 257)], "param of 257"),
        ([_error("e1"), {"type": "session.updated", "event_id": "x", "session": {}}], "unexpected"),
    ],
)
def test_the_property_fails_on_bad_answers(events: list[dict[str, Any]], match: str) -> None:
    """The checker rejects every way an answer to a bad frame can be wrong."""
    frame = Frame('{"type":"nope","event_id":"e1"}', "raw", True, "bad_type")
    with pytest.raises(AssertionError, match=match):
        check_window(Window([frame], events, frozenset()), vad_possible=False)


def test_the_property_fails_on_too_many_answers() -> None:
    """A valid event answered twice fails, as does an answer a bad frame cannot have."""
    update = Frame('{"type":"session.update","session":{}}', "session.update", False, "")
    once = {"type": "session.updated", "event_id": "x", "session": {}}
    check_window(Window([update], [once], frozenset()), vad_possible=False)
    with pytest.raises(AssertionError, match="2 session.updated for 1 frame"):
        check_window(Window([update], [once, once], frozenset()), vad_possible=False)
    bad = Frame('{"type":"session.update"}', "session.update", True, "")
    with pytest.raises(AssertionError, match="unexpected session.updated"):
        check_window(Window([bad], [_error(None), once], frozenset()), vad_possible=False)


def test_the_frame_check_fails_on_bad_frames() -> None:
    """Binary frames, NaN, the canary, lone surrogates and unknown events are all caught."""
    good = {"type": "input_audio_buffer.cleared", "event_id": "event_" + "B" * 21}
    check_server_frame(json.dumps(good), set())
    cases: list[tuple[str | bytes, str]] = [
        (b"{}", "binary"),
        (json.dumps(dict(good, extra=CANARY)), "API key"),
        ('{"type":"input_audio_buffer.cleared","event_id":"x","n":NaN}', "NaN"),
        (json.dumps(dict(good, extra="\udc00")), "lone surrogate"),
    ]
    for raw, match in cases:
        with pytest.raises(AssertionError, match=match):
            check_server_frame(raw, set())
    with pytest.raises(Exception, match="union_tag_invalid|does not match"):
        check_server_frame(json.dumps(dict(good, type="nope")), set())
    ids = {good["event_id"]}
    with pytest.raises(AssertionError, match="duplicate"):
        check_server_frame(json.dumps(good), ids)


def test_expected_echo() -> None:
    """The oracle of ``error.event_id``: echoed only from a decodable object, ≤ 512 chars."""
    assert expected_echo('{"event_id":"a"}') == "a"
    assert expected_echo('{"event_id":"' + "a" * 512 + '"}') == "a" * 512
    assert expected_echo('{"event_id":"' + "a" * 513 + '"}') is None
    assert expected_echo('{"event_id":5}') is None
    assert expected_echo('{"event_id":"a","x":NaN}') is None
    assert expected_echo('{"event_id":"a","x":1e999}') is None
    assert expected_echo('{"event_id":"a","x":' + "9" * 5000 + "}") is None
    assert expected_echo(encode({"event_id": "a", "x": "\udc00"})) is None
    assert expected_echo(encode({"event_id": "\U0001f600"}, ascii_only=True)) == "\U0001f600"
    assert expected_echo(encode({"event_id": "a", "x": deep_json(300, "array")})) is None
    assert expected_echo(encode({"event_id": "a", "x": deep_json(100, "array")})) == "a"
    assert expected_echo(b'{"event_id":"a"}') is None
    assert expected_echo('{"event_id":"a"') is None


# ----------------------------------------------------------------------------- REST


_chat_body = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(("system", "user", "assistant", "tool", "developer")),
                    "content": st.one_of(
                        text,
                        st.lists(
                            st.fixed_dictionaries({"type": st.just("text"), "text": text}),
                            max_size=2,
                        ),
                    ),
                },
                optional={"tool_call_id": text, "name": text},
            ),
            max_size=3,
        )
    },
    optional={
        "model": text,
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "max_tokens": st.integers(-5, 5000),
        "max_completion_tokens": st.integers(-5, 5000),
        "temperature": st.floats(-1, 3),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": text}, optional={"parameters": free_json, "description": text}
                    ),
                }
            ),
            max_size=2,
        ),
        "tool_choice": st.one_of(st.sampled_from(("auto", "none", "required")), free_json),
    },
)

_speech_body = st.fixed_dictionaries(
    {"input": text},
    optional={
        "model": text,
        "voice": st.one_of(text, st.fixed_dictionaries({"id": text})),
        "speed": st.one_of(st.floats(0, 5), st.integers(-1, 5)),
        "response_format": st.sampled_from(("pcm", "wav", "mp3", "")),
        "stream_format": st.sampled_from(("audio", "sse")),
        "instructions": text,
    },
)


@st.composite
def _secret_body(draw: st.DrawFn) -> Json:
    kinds: tuple[SessionKind, ...] = ("realtime", "transcription")
    body: dict[str, Json] = {"session": draw(session_config(draw(st.sampled_from(kinds))))}
    if draw(st.booleans()):
        body["expires_after"] = {
            "anchor": draw(st.sampled_from(("created_at", "now"))),
            "seconds": draw(st.integers(0, 8000)),
        }
    return body


def _paths(value: Json, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


@st.composite
def _mutated_json(draw: st.DrawFn, body: Json) -> str:
    """``body`` with one blind mutation anywhere, as JSON text (or a broken text)."""
    how = draw(
        st.sampled_from(
            ("none", "replace", "replace", "key", "drop", "truncate", "not_object", "empty")
        )
    )
    if how == "truncate":
        whole = encode(body)
        return whole[: draw(st.integers(0, len(whole) - 1))]
    if how == "not_object":
        return draw(st.sampled_from(("[]", "1", '"x"', "null", "[{}]")))
    if how == "empty":
        return draw(st.sampled_from(("", " ", "{", "\x00")))
    path = draw(st.sampled_from(_paths(body)))
    if how in ("key", "drop"):
        parents = [p for p in _paths(body) if isinstance(_at(body, p), dict)]
        parent = _at(body, draw(st.sampled_from(parents)))
        if how == "drop" and parent:
            del parent[draw(st.sampled_from(sorted(parent)))]
        elif how == "key":
            parent[
                draw(st.one_of(text, st.sampled_from(SURROGATE_STRINGS), long_text(1_000, 300_000)))
            ] = 1
        return encode(body, ascii_only=draw(st.booleans()))
    if how == "replace":
        new: Json = draw(
            st.one_of(
                st.sampled_from(
                    (
                        Raw("NaN"),
                        Raw("-Infinity"),
                        Raw("1e999"),
                        Raw("9" * 5000),
                        Raw("-0"),
                        Raw("1e-999"),
                        2**64,
                        -(2**63),
                        None,
                        True,
                        [],
                        {},
                        "",
                    )
                ),
                st.sampled_from(EDGE_STRINGS + SURROGATE_STRINGS),
                st.integers(1, 3000).map(lambda n: deep_json(n, "mixed")),
                free_json,
            )
        )
        if path:
            _at(body, path[:-1])[path[-1]] = new
        else:
            body = new
    return encode(body, ascii_only=draw(st.booleans()))


def _at(value: Json, path: tuple[Any, ...]) -> Json:
    for part in path:
        value = value[part]
    return value


@st.composite
def rest_request(draw: st.DrawFn) -> tuple[str, str]:
    route, body = draw(
        st.one_of(
            st.tuples(st.just("/v1/chat/completions"), _chat_body),
            st.tuples(st.just("/v1/audio/speech"), _speech_body),
            st.tuples(st.just("/v1/realtime/client_secrets"), _secret_body()),
        )
    )
    return route, draw(_mutated_json(body))


def test_regression_chat_tool_parameters(
    server_thread: ServerThread, errors_logged: ErrorRecords
) -> None:
    """``tools[].function.parameters`` that is not an object reached the engine, which crashed:
    a 500 (with ``stream``, a body cut off mid-stream) and an ERROR log."""
    for stream in ("false", "true"):
        body = (
            '{"messages":[{"role":"user","content":"hi"}],"tool_choice":"required",'
            f'"stream":{stream},'
            '"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]}'
        )
        check_rest(server_thread, errors_logged, "/v1/chat/completions", body)


@seeded
@fuzz_settings(200)
@given(request=rest_request())
def test_rest_bodies(
    server_thread: ServerThread, errors_logged: ErrorRecords, request: tuple[str, str]
) -> None:
    """The OpenAI-compatible REST endpoints: never a 5xx; a 4xx has the OpenAI error shape."""
    route, body = request
    note(f"POST {route} {body[:600]!r}{'...' if len(body) > 600 else ''} ({len(body)} chars)")
    check_rest(server_thread, errors_logged, route, body)


def check_rest(server: ServerThread, errors_logged: ErrorRecords, route: str, body: str) -> None:
    """POST ``body``: never a 5xx; a 4xx has the OpenAI error shape; nothing logged at ERROR."""
    errors_logged.take()
    try:
        _post(server.base, route, body)
    finally:  # what this request logged (reported below, or dropped with its failure)
        server.sync()
        logged = errors_logged.take()
    assert not logged, "server errors logged:\n" + "\n".join(logged)


def _post(server: str, route: str, body: str) -> None:
    payload = body.encode("utf-8", "surrogatepass")
    with httpx.Client(base_url=server, timeout=WAIT_S, trust_env=False) as client:
        try:
            response = client.post(
                route,
                content=payload,
                headers={"Authorization": f"Bearer {CANARY}", "Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:  # e.g. a streamed body cut off by a crash
            raise AssertionError(f"the response broke off: {exc!r}") from None
    _event(f"{route} {response.status_code}")
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert CANARY.encode() not in response.content, "the API key appears in a response"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and isinstance(error["type"], str), error
        assert error["param"] is None or isinstance(error["param"], str), error
        assert error["code"] is None or isinstance(error["code"], str), error
