"""Hostile frames over a real socket: each gets one ``error`` and the session lives on.

Issue 8, defects 2 (lone surrogates), 3 (huge integers, deep nesting), 9 (NaN) and 11 (error
size). Before the fixes a lone surrogate killed the writer silently, a 5,000-digit integer or a
300-deep ``tracing.metadata`` closed the session with 1011, a NaN in tracing made every later
``session.update`` fail, and a 10 MB key name came back as a 20 MB error event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from openrealtime.protocol.codec import MAX_JSON_DEPTH
from tests.conformance._error_helpers import alive, raw_session, serve

BAD_JSON = "Invalid event: failed to parse JSON value. Please check your payload."


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _session_update(inner: str) -> str:
    return (
        '{"type":"session.update","event_id":"evt_x","session":{"type":"realtime",' + inner + "}}"
    )


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ('{"type":"bogus","event_id":"\\udc00"}', "surrogate"),
        (_session_update('"instructions":"a\\ud800b"'), "surrogate"),
        (_session_update('"instructions":"\\ud83d"'), "surrogate"),  # a high half, no pair
        ('{"type":"session.update","\\udfff":1}', "surrogate"),  # in a key
        (_session_update('"max_output_tokens":' + "7" * 5000), "4300 digits"),
        ('{"type":"input_audio_buffer.commit","event_id":' + "1" * 4301 + "}", "4300 digits"),
        (_session_update('"tracing":{"metadata":' + _deep(300) + "}"), "nested deeper"),
        (
            _session_update(
                '"tools":[{"type":"function","name":"f","parameters":' + _deep(251) + "}]"
            ),
            "nested deeper",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested deeper"),
        (_session_update('"tracing":{"metadata":{"x":NaN}}'), "NaN"),
        (_session_update('"tracing":{"metadata":{"x":-Infinity}}'), "Infinity"),
        (_session_update('"tracing":{"metadata":{"x":1e999}}'), "out of range"),
    ],
    ids=[
        "lone-low-surrogate-event-id",
        "lone-high-surrogate-instructions",
        "unpaired-high-half",
        "surrogate-in-a-key",
        "5000-digit-integer",
        "4301-digit-event-id",
        "tracing-300-deep",
        "tool-parameters-251-deep",
        "array-100k-deep",
        "nan",
        "minus-infinity",
        "overflow-to-infinity",
    ],
)
async def test_a_hostile_frame_gets_one_invalid_json_error_and_the_session_lives(
    frame: str, detail: str
) -> None:
    async with serve() as base, raw_session(base) as session:
        await session.send(frame)
        event = await session.recv()
        assert event["type"] == "error", event
        error = event["error"]
        assert error["code"] == "invalid_json"
        assert error["message"].startswith(BAD_JSON) and detail in error["message"]
        assert error["event_id"] is None  # nothing unreadable is echoed
        json.dumps(event).encode("utf-8")  # the frame was valid text
        await alive(session)


async def test_nesting_up_to_the_limit_is_accepted_and_echoed() -> None:
    """Free-form fields may nest as deep as the limit allows, and come back in session.updated."""
    depth = MAX_JSON_DEPTH - 6  # frame, session, tracing, metadata take the first levels
    async with serve() as base, raw_session(base) as session:
        await session.send(_session_update('"tracing":{"metadata":' + _deep(depth) + "}"))
        updated, before = await session.recv_until("session.updated")
        assert before == []
        node: Any = updated["session"]["tracing"]["metadata"]
        for _ in range(depth):
            node = node["a"]
        assert node == 1
        await alive(session)


async def test_tracing_stays_changeable_after_a_refused_nan() -> None:
    """A NaN never reaches the config, so tracing equality (NaN != NaN) cannot stick."""
    async with serve() as base, raw_session(base) as session:
        await session.send(_session_update('"tracing":{"metadata":{"x":NaN}}'))
        assert (await session.recv())["error"]["code"] == "invalid_json"
        await session.send(_session_update('"tracing":{"workflow_name":"w"}'))
        updated, before = await session.recv_until("session.updated")
        assert before == [] and updated["session"]["tracing"]["workflow_name"] == "w"
        # The same tracing again is no modification: accepted.
        await session.send(_session_update('"tracing":{"workflow_name":"w"}'))
        await session.recv_until("session.updated")


async def test_valid_unicode_passes_untouched() -> None:
    """Surrogate *pairs*, astral characters, NUL and RTL marks are valid text and are kept."""
    text = "emoji \U0001f600 rtl \u200f nul \x00 bom \ufeff combining e\u0301"
    async with serve() as base, raw_session(base) as session:
        await session.send(
            json.dumps(  # ensure_ascii: the emoji goes as a \ud83d\ude00 pair
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "instructions": text},
                }
            )
        )
        updated, before = await session.recv_until("session.updated")
        assert before == [] and updated["session"]["instructions"] == text


async def test_a_10_mb_key_name_gets_a_small_error() -> None:
    key = "k" * (10 * 1024 * 1024)
    async with serve() as base, raw_session(base) as session:
        await session.send(_session_update(json.dumps(key) + ":1"))
        raw = await session.ws.recv() if session.ws is not None else ""
        assert isinstance(raw, str) and len(raw) < 4096, len(raw)
        error = json.loads(raw)["error"]
        assert error["code"] == "unknown_parameter"
        assert error["param"].startswith("session.kkk") and len(error["param"]) <= 256
        assert error["message"].startswith("Unknown parameter: 'session.kkk")
        assert len(error["message"]) <= 1024
        await alive(session)


async def test_a_long_event_id_is_not_echoed_from_an_unparsable_event() -> None:
    async with serve() as base, raw_session(base) as session:
        long_id = "e" * 100_000
        await session.send(json.dumps({"type": "nope", "event_id": long_id}))
        error = (await session.recv())["error"]
        assert error["code"] == "invalid_value" and error["event_id"] is None
        await session.send(json.dumps({"type": "nope", "event_id": "evt_short"}))
        assert (await session.recv())["error"]["event_id"] == "evt_short"
        await alive(session)


async def test_an_engine_answer_with_a_lone_surrogate_is_repaired_and_the_session_goes_on() -> None:
    """Before: the engine's "\\ud800" killed the writer silently, then poisoned the next request."""
    from openrealtime.backends.registry import build_engines, close_engines
    from tests.backends.test_remote_engine_faults import (
        FaultServer,
        Writer,
        head,
        remote_config,
        sse,
    )

    chunk = '{"choices":[{"index":0,"delta":{"content":"bad \\ud800 half"}}]}'
    done = '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'

    async def answer(path: str, body: bytes, reader: Any, writer: Writer) -> None:
        writer.write(head("text/event-stream") + sse(chunk) + sse(done) + sse("[DONE]"))
        await writer.drain()

    async with FaultServer(answer) as server:
        config = remote_config(server.url)
        engines = build_engines(config)
        try:
            async with serve(config, engines) as base, raw_session(base) as session:
                for _ in range(2):  # the second request carries the first answer as context
                    await session.send(
                        {"type": "response.create", "response": {"output_modalities": ["text"]}}
                    )
                    finished, events = await session.recv_until("response.done")
                    assert finished["response"]["status"] == "completed", finished
                    text = "".join(
                        e["delta"] for e in events if e["type"] == "response.output_text.delta"
                    )
                    assert text == "bad \ufffd half"
                sent = json.loads(server.requests[-1][1])["messages"]
                assert sent[-1] == {"role": "assistant", "content": "bad \ufffd half"}
                await alive(session)
        finally:
            await close_engines(engines)


async def test_any_engine_text_reaches_the_session_as_valid_unicode() -> None:
    """An in-process engine (no JSON on the way) is repaired at the runtime's boundary."""
    from openrealtime.backends.fake import FakeLanguageModel
    from tests.conformance._error_helpers import fake_engines

    llm = FakeLanguageModel(reply="bad \ud800 half")
    async with serve(engines=fake_engines(llm=llm)) as base, raw_session(base) as session:
        await session.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        finished, events = await session.recv_until("response.done")
        assert finished["response"]["status"] == "completed", finished
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "bad \ufffd half"
        await alive(session)
