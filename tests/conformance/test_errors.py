"""The error catalogue over a real server and real clients (spec §6; reliability checks 3, 4, 13).

For every code of spec §6.2 that applies over WebSocket, one case sends the bad event on a live
connection and asserts the ``error`` event (code, param, the live wording, the client's
``event_id`` echoed), then proves the SAME connection still works: a ``session.update`` gets
its ``session.updated``. Dict frames go through the official ``openai`` SDK; raw text and
binary frames through the ``websockets`` client. Every server event is validated against the
SDK's ``RealtimeServerEvent`` union. Handshake errors (auth, model) live in tests/transports.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from openrealtime.backends.fake import FakeLanguageModel, Faults
from openrealtime.config import Config
from tests.conformance._error_helpers import (
    Session,
    alive,
    fake_engines,
    raw_session,
    sdk_session,
    serve,
)

SUPPORTED_TYPES = (
    "'session.update', 'session.close', 'input_audio_buffer.append', "
    "'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', "
    "'conversation.item.truncate', 'conversation.item.delete', 'conversation.item.retrieve', "
    "'response.create', and 'response.cancel'"
)
"""The live "supported values" list (spec §6.2), minus the translation-only event we lack."""

Frame = dict[str, Any] | str | bytes
Context = dict[str, str]


def _user_text(text: str = "hi", **extra: Any) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return item | extra


def _silence(ms: int) -> str:
    return base64.b64encode(b"\x00\x00" * (24 * ms)).decode("ascii")


# --------------------------------------------------------------------------- setups


async def _active_text_response(session: Session) -> Context:
    """Start a (slow) text response and wait until it is in progress."""
    await session.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    created, _ = await session.recv_until("response.created")
    return {"response_id": created["response"]["id"]}


async def _finished_audio_response(session: Session) -> Context:
    """Run one spoken response to the end; return its assistant item id."""
    await session.send({"type": "response.create"})
    done, _ = await session.recv_until("response.done")
    assert done["response"]["status"] == "completed", done
    (item,) = done["response"]["output"]
    return {"item_id": item["id"]}


async def _some_user_item(session: Session) -> Context:
    await session.send({"type": "conversation.item.create", "item": _user_text(id="item_taken")})
    done, _ = await session.recv_until("conversation.item.done")
    return {"item_id": done["item"]["id"]}


async def _buffer_50_ms(session: Session) -> Context:
    await session.send({"type": "input_audio_buffer.append", "audio": _silence(50)})
    return {}


@dataclass(frozen=True)
class Case:
    """One bad client event and the error the live service answers it with."""

    id: str
    frame: Frame | Callable[[Context], Frame]
    code: str
    param: str | None
    message: str
    """The exact message, or a regex when it starts with ``^`` (``{ctx}`` keys substituted)."""
    event_id: str | None = None
    setup: Callable[[Session], Awaitable[Context]] | None = None
    slow_llm: bool = False
    after: Callable[[Session, Context], Awaitable[None]] | None = field(default=None)


async def _active_response_still_completes(session: Session, ctx: Context) -> None:
    done, _ = await session.recv_until("response.done")
    assert done["response"]["id"] == ctx["response_id"]
    assert done["response"]["status"] == "completed"


CASES = [
    # ----- framing (spec §1.1, §6.2)
    Case(
        "invalid_json",
        '{"type": "session.update", "event_id": "evt_json", ',
        "invalid_json",
        None,
        r"^Invalid event: failed to parse JSON value\.",
    ),
    Case(
        "binary_frame",
        b'{"type": "session.update"}',
        "invalid_event",
        None,
        "Expected a text WebSocket message; binary frames are not supported.",
    ),
    Case(
        "missing_type",
        '{"event_id": "evt_notype", "session": {"type": "realtime"}}',
        "invalid_event",
        None,
        "The 'type' field is missing.",
        event_id="evt_notype",
    ),
    Case(
        "unknown_type",
        {"type": "nope", "event_id": "evt_unknown"},
        "invalid_value",
        "type",
        f"Invalid value: 'nope'. Supported values are: {SUPPORTED_TYPES}.",
        event_id="evt_unknown",
    ),
    Case(
        "beta_transcription_session_update",
        {"type": "transcription_session.update", "event_id": "evt_beta", "session": {}},
        "invalid_value",
        "type",
        f"Invalid value: 'transcription_session.update'. Supported values are: {SUPPORTED_TYPES}.",
        event_id="evt_beta",
    ),
    Case(
        "output_audio_buffer_clear_over_websocket",
        {"type": "output_audio_buffer.clear", "event_id": "evt_oabc"},
        "invalid_value",
        "type",
        f"Invalid value: 'output_audio_buffer.clear'. Supported values are: {SUPPORTED_TYPES}.",
        event_id="evt_oabc",
    ),
    # ----- shape errors (spec §6.2)
    Case(
        "unknown_parameter_top_level",
        {
            "type": "session.update",
            "event_id": "evt_bogus",
            "session": {"type": "realtime", "bogus_field": 1},
        },
        "unknown_parameter",
        "session.bogus_field",
        "Unknown parameter: 'session.bogus_field'.",
        event_id="evt_bogus",
    ),
    Case(
        "unknown_parameter_beta_field",
        {
            "type": "session.update",
            "event_id": "evt_modalities",
            "session": {"type": "realtime", "modalities": ["text"]},
        },
        "unknown_parameter",
        "session.modalities",
        "Unknown parameter: 'session.modalities'.",
        event_id="evt_modalities",
    ),
    Case(
        "unknown_parameter_nested",
        {
            "type": "conversation.item.create",
            "event_id": "evt_nested",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi", "bogus": True}],
            },
        },
        "unknown_parameter",
        "item.content[0].bogus",
        "Unknown parameter: 'item.content[0].bogus'.",
        event_id="evt_nested",
    ),
    Case(
        "missing_session_type",
        {"type": "session.update", "event_id": "evt_st", "session": {"instructions": "x"}},
        "missing_required_parameter",
        "session.type",
        "Missing required parameter: 'session.type'.",
        event_id="evt_st",
    ),
    Case(
        "missing_item_type",
        {
            "type": "conversation.item.create",
            "event_id": "evt_it",
            "item": {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        },
        "missing_required_parameter",
        "item.type",
        "Missing required parameter: 'item.type'.",
        event_id="evt_it",
    ),
    Case(
        "missing_item_id",
        {"type": "conversation.item.delete", "event_id": "evt_iid"},
        "missing_required_parameter",
        "item_id",
        "Missing required parameter: 'item_id'.",
        event_id="evt_iid",
    ),
    Case(
        "wrong_enum_session_type",
        {"type": "session.update", "event_id": "evt_enum", "session": {"type": "session"}},
        "invalid_value",
        "session.type",
        "Invalid value: 'session'. Supported values are: 'realtime' and 'transcription'.",
        event_id="evt_enum",
    ),
    Case(
        "wrong_enum_output_modalities",
        {
            "type": "session.update",
            "event_id": "evt_video",
            "session": {"type": "realtime", "output_modalities": ["video"]},
        },
        "invalid_value",
        "session.output_modalities[0]",
        "Invalid value: 'video'. Supported values are: 'audio' and 'text'.",
        event_id="evt_video",
    ),
    Case(
        "wrong_type_audio_end_ms",
        {
            "type": "conversation.item.truncate",
            "event_id": "evt_wt",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": "x",
        },
        "invalid_type",
        "audio_end_ms",
        "Invalid type for 'audio_end_ms': expected an integer, but got a string instead.",
        event_id="evt_wt",
    ),
    Case(
        "wrong_type_item_content",
        {
            "type": "conversation.item.create",
            "event_id": "evt_content",
            "item": {"type": "message", "role": "user", "content": "text"},
        },
        "invalid_type",
        "item.content",
        "Invalid type for 'item.content': expected an array of objects, but got a string instead.",
        event_id="evt_content",
    ),
    Case(
        "integer_below_min_rate",
        {
            "type": "session.update",
            "event_id": "evt_rate",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
            },
        },
        "integer_below_min_value",
        "session.audio.input.format.rate",
        "Invalid 'session.audio.input.format.rate': integer below minimum value. Expected a "
        "value >= 24000, but got 16000 instead.",
        event_id="evt_rate",
    ),
    Case(
        "integer_above_max_output_tokens",
        {
            "type": "session.update",
            "event_id": "evt_tokens",
            "session": {"type": "realtime", "max_output_tokens": 9999},
        },
        "integer_above_max_value",
        "session.max_output_tokens",
        "Invalid 'session.max_output_tokens': integer above maximum value. Expected a value "
        "<= 4096, but got 9999 instead.",
        event_id="evt_tokens",
    ),
    Case(
        "string_above_max_length_item_id",
        {
            "type": "conversation.item.create",
            "event_id": "evt_long",
            "item": _user_text(id="item_" + "x" * 34),
        },
        "string_above_max_length",
        "item.id",
        "Invalid 'item.id': string too long. Expected a string with maximum length 32, but got "
        "a string with length 39 instead.",
        event_id="evt_long",
    ),
    Case(
        "transcription_update_on_realtime_session",
        {"type": "session.update", "event_id": "evt_tr", "session": {"type": "transcription"}},
        "invalid_value",
        "session.type",
        "Passing a transcription session update event to a realtime session is not allowed.",
        event_id="evt_tr",
    ),
    Case(
        "invalid_base64_audio",
        {"type": "input_audio_buffer.append", "event_id": "evt_b64", "audio": "not base64!!"},
        "invalid_value",
        "audio",
        "Invalid 'audio': expected base64-encoded audio.",
        event_id="evt_b64",
    ),
    Case(
        "unknown_audio_format",
        {
            "type": "session.update",
            "event_id": "evt_fmt",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/opus"}}}},
        },
        "invalid_value",
        "session.audio.input.format.type",
        "Invalid value: 'audio/opus'. Supported values are: 'audio/pcm', 'audio/pcmu', and "
        "'audio/pcma'.",
        event_id="evt_fmt",
    ),
    Case(
        "mcp_tool_not_supported",
        {
            "type": "session.update",
            "event_id": "evt_mcp",
            "session": {
                "type": "realtime",
                "tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}],
            },
        },
        "invalid_value",
        "session.tools[0].type",
        "Invalid value: 'mcp'. Supported values are: 'function'.",
        event_id="evt_mcp",
    ),
    # ----- protocol-state errors (spec §6.2; reliability check 4)
    Case(
        "commit_empty_buffer",
        {"type": "input_audio_buffer.commit", "event_id": "evt_commit0"},
        "input_audio_buffer_commit_empty",
        None,
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
        "audio, but buffer only has 0.00ms of audio.",
        event_id="evt_commit0",
    ),
    Case(
        "commit_under_100_ms",
        {"type": "input_audio_buffer.commit", "event_id": "evt_commit50"},
        "input_audio_buffer_commit_empty",
        None,
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
        "audio, but buffer only has 50.00ms of audio.",
        event_id="evt_commit50",
        setup=_buffer_50_ms,
    ),
    Case(
        "response_create_while_active",
        {"type": "response.create", "event_id": "evt_second"},
        "conversation_already_has_active_response",
        None,
        "Conversation already has an active response in progress: {response_id}. Wait until "
        "the response is finished before creating a new one.",
        event_id="evt_second",
        setup=_active_text_response,
        slow_llm=True,
        after=_active_response_still_completes,
    ),
    Case(
        "response_cancel_not_active",
        {"type": "response.cancel", "event_id": "evt_cancel"},
        "response_cancel_not_active",
        None,
        "Cancellation failed: no active response found",
        event_id="evt_cancel",
    ),
    Case(
        "delete_unknown_item",
        {"type": "conversation.item.delete", "event_id": "evt_del", "item_id": "item_nope"},
        "item_delete_invalid_item_id",
        "item_id",
        "Error deleting item: the item with id 'item_nope' does not exist.",
        event_id="evt_del",
    ),
    Case(
        "retrieve_unknown_item",
        {"type": "conversation.item.retrieve", "event_id": "evt_ret", "item_id": "item_nope"},
        "item_retrieve_invalid_item_id",
        "item_id",
        "Error retrieving item: the item with id 'item_nope' does not exist.",
        event_id="evt_ret",
    ),
    Case(
        "truncate_unknown_item",
        {
            "type": "conversation.item.truncate",
            "event_id": "evt_trunc",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 0,
        },
        "item_truncate_invalid_item_id",
        "item_id",
        "Error truncating item: the item with id 'item_nope' does not exist.",
        event_id="evt_trunc",
    ),
    Case(
        "truncate_beyond_audio",
        lambda ctx: {
            "type": "conversation.item.truncate",
            "event_id": "evt_long_cut",
            "item_id": ctx["item_id"],
            "content_index": 0,
            "audio_end_ms": 600_000,
        },
        "invalid_value",
        "audio_end_ms",
        r"^Audio content of \d+ms is already shorter than 600000ms$",
        event_id="evt_long_cut",
        setup=_finished_audio_response,
    ),
    Case(
        "voice_change_after_audio",
        {
            "type": "session.update",
            "event_id": "evt_voice",
            "session": {"type": "realtime", "audio": {"output": {"voice": "ash"}}},
        },
        "cannot_update_voice",
        "session.audio.output.voice",
        "Cannot update a conversation's voice if assistant audio is present.",
        event_id="evt_voice",
        setup=_finished_audio_response,
    ),
    Case(
        "item_id_already_exists",
        {
            "type": "conversation.item.create",
            "event_id": "evt_dup",
            "item": _user_text(id="item_taken"),
        },
        "item_id_already_exists",
        "item.id",
        "Item with id 'item_taken' already exists in the conversation.",
        event_id="evt_dup",
        setup=_some_user_item,
    ),
    Case(
        "previous_item_not_found",
        {
            "type": "conversation.item.create",
            "event_id": "evt_prev",
            "previous_item_id": "item_nope",
            "item": _user_text(),
        },
        "previous_item_not_found",
        "previous_item_id",
        "Previous item with id 'item_nope' does not exist.",
        event_id="evt_prev",
    ),
    Case(
        "function_call_output_unknown_call_id",
        {
            "type": "conversation.item.create",
            "event_id": "evt_call",
            "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"},
        },
        "invalid_value",
        "item.call_id",
        "No tool call found for function call output with call_id 'call_nope'.",
        event_id="evt_call",
    ),
]


def _assert_message(actual: str, expected: str, ctx: Context) -> None:
    expected = expected.format(**ctx)
    if expected.startswith("^"):
        assert re.search(expected, actual), f"{actual!r} does not match {expected!r}"
    else:
        assert actual == expected


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_error_catalogue(case: Case) -> None:
    llm = FakeLanguageModel(faults=Faults(first_delay_s=0.5)) if case.slow_llm else None
    frame_for_sdk = isinstance(case.frame, dict) or callable(case.frame)
    async with serve(engines=fake_engines(llm=llm)) as base:
        opener = sdk_session if frame_for_sdk else raw_session
        async with opener(base) as session:
            ctx = await case.setup(session) if case.setup else {}
            frame = case.frame(ctx) if callable(case.frame) else case.frame
            await session.send(frame)
            event, before = await session.recv_until("error")
            assert [e for e in before if e["type"] == "error"] == []
            error = event["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == case.code
            assert error["param"] == case.param
            assert error["event_id"] == case.event_id
            _assert_message(error["message"], case.message, ctx)
            # The same connection goes on: the next valid event works.
            await alive(session)
            if case.after is not None:
                await case.after(session, ctx)


def test_catalogue_covers_every_client_error_code_of_spec_6_2() -> None:
    codes = {c.code for c in CASES}
    assert {
        "invalid_json",
        "invalid_event",
        "invalid_value",
        "unknown_parameter",
        "missing_required_parameter",
        "invalid_type",
        "integer_below_min_value",
        "integer_above_max_value",
        "string_above_max_length",
        "input_audio_buffer_commit_empty",
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_delete_invalid_item_id",
        "item_retrieve_invalid_item_id",
        "item_truncate_invalid_item_id",
        "cannot_update_voice",
    } <= codes


# --------------------------------------------------------------------------- burst (check 3)

BURST_FRAMES: list[tuple[Frame, str]] = [
    ("{not json", "invalid_json"),
    (b"\x00\x01binary", "invalid_event"),
    ('{"event_id": "evt_burst_{i}"}', "invalid_event"),
    ('{"type": "nope", "event_id": "evt_burst_{i}"}', "invalid_value"),
    (
        '{"type": "session.update", "event_id": "evt_burst_{i}", "session": {}}',
        "missing_required_parameter",
    ),
    (
        '{"type": "session.update", "event_id": "evt_burst_{i}", '
        '"session": {"type": "realtime", "bogus": 1}}',
        "unknown_parameter",
    ),
    (
        '{"type": "input_audio_buffer.commit", "event_id": "evt_burst_{i}"}',
        "input_audio_buffer_commit_empty",
    ),
    ('{"type": "response.cancel", "event_id": "evt_burst_{i}"}', "response_cancel_not_active"),
    (
        '{"type": "conversation.item.delete", "event_id": "evt_burst_{i}", "item_id": "nope"}',
        "item_delete_invalid_item_id",
    ),
    (
        '{"type": "input_audio_buffer.append", "event_id": "evt_burst_{i}", "audio": "@@"}',
        "invalid_value",
    ),
    ("[1, 2, 3]", "invalid_event"),
    (
        '{"type": "conversation.item.truncate", "event_id": "evt_burst_{i}", "item_id": 5, '
        '"content_index": 0, "audio_end_ms": 0}',
        "invalid_type",
    ),
]


async def test_burst_of_200_bad_events_gets_exactly_200_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve() as base, raw_session(base) as session:
        expected: list[tuple[str, str | None]] = []
        for i in range(200):
            template, code = BURST_FRAMES[i % len(BURST_FRAMES)]
            if isinstance(template, str) and "{i}" in template:
                frame: Frame = template.replace("{i}", str(i))
                expected.append((code, f"evt_burst_{i}"))
            else:
                frame = template
                expected.append((code, None))
            await session.send(frame)
        before = await alive(session, errors_before=200)
        errors = [e for e in before if e["type"] == "error"]
        assert len(before) == len(errors) == 200
        assert [(e["error"]["code"], e["error"]["event_id"]) for e in errors] == expected
        assert len({e["event_id"] for e in errors}) == 200
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == [], [r.getMessage() for r in crashes]


# --------------------------------------------------------------------------- secrets (check 13)

CANARY = "sk-canary-7f3b9c2e5d8a1f4b6c0e9d2a"
CANARY_BODY = CANARY[:-4]
"""The canary without its last 4 characters: at most a 4-character suffix may ever show."""


async def test_canary_key_never_appears_in_logs_or_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    config = Config(api_keys=(CANARY,), vad="energy", log_level="debug")
    async with serve(config) as base:
        async with sdk_session(base, api_key=CANARY) as session:
            await session.send({"type": "conversation.item.create", "item": _user_text("hello")})
            await session.send(
                {"type": "response.create", "response": {"output_modalities": ["text"]}}
            )
            await session.recv_until("response.done")
            for bad in ({"type": "nope"}, {"type": "session.update", "session": {"x": CANARY[:3]}}):
                await session.send(bad)
                await session.recv_until("error")
            await alive(session)
            seen += [json.dumps(e) for e in session.received]
        # The browser form: the key as a subprotocol (websockets logs that header too).
        async with raw_session(
            base, api_key=None, subprotocols=["realtime", f"openai-insecure-api-key.{CANARY}"]
        ) as browser:
            await alive(browser)
            seen += [json.dumps(e) for e in browser.received]
        # A wrong key that shares the canary's body is refused without echoing it.
        async with raw_session(base, api_key=CANARY_BODY + "ZZZZ", wait_created=False) as rejected:
            closed = await rejected.expect_closed()
            assert closed.rcvd is not None and closed.rcvd.code == 3000
            seen += [json.dumps(e) for e in rejected.received]
            assert rejected.received[0]["error"]["code"] == "invalid_api_key"
    server_logs = [
        r.getMessage()
        for r in caplog.records
        if not r.name.startswith(("openai", "httpx", "httpcore", "websockets.client"))
    ]
    assert server_logs, "expected the server to log something at DEBUG"
    for text in server_logs + seen:
        assert CANARY_BODY not in text, text
