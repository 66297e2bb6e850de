"""Bad frames, error shape, event_id echo and session expiry (spec §1.7, §6)."""

from __future__ import annotations

from typing import Any

import pytest

from openrealtime.core import backend_events as be
from openrealtime.core.commands import CancelResponse, CloseSession
from openrealtime.core.session import Limits
from tests.core.sim import Sim, add_user_text, pcm

SUPPORTED = (
    "'session.update', 'session.close', 'input_audio_buffer.append', "
    "'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', "
    "'conversation.item.truncate', 'conversation.item.delete', 'conversation.item.retrieve', "
    "'response.create', and 'response.cancel'"
)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            "{not json",
            {"code": "invalid_json", "param": None, "event_id": None},
        ),
        (
            b"\x00\x01",
            {
                "code": "invalid_event",
                "param": None,
                "event_id": None,
                "message": "Expected a text WebSocket message; binary frames are not supported.",
            },
        ),
        (
            '{"type": "nope", "event_id": "evt_u"}',
            {
                "code": "invalid_value",
                "param": "type",
                "event_id": "evt_u",
                "message": f"Invalid value: 'nope'. Supported values are: {SUPPORTED}.",
            },
        ),
        (
            '{"event_id": "evt_m"}',
            {
                "code": "invalid_event",
                "param": None,
                "event_id": "evt_m",
                "message": "The 'type' field is missing.",
            },
        ),
        (
            '{"type": "conversation.item.delete", "event_id": "evt_p"}',
            {
                "code": "missing_required_parameter",
                "param": "item_id",
                "event_id": "evt_p",
                "message": "Missing required parameter: 'item_id'.",
            },
        ),
        (
            '{"type": "response.create", "response": {"modalities": ["text"]}}',
            {
                "code": "unknown_parameter",
                "param": "response.modalities",
                "event_id": None,
                "message": "Unknown parameter: 'response.modalities'.",
            },
        ),
    ],
)
def test_bad_frame_gets_one_error_and_the_session_goes_on(
    frame: str | bytes, expected: dict[str, Any]
) -> None:
    sim = Sim()
    sim.send_raw(frame)
    error = sim.error()
    assert error["type"] == "invalid_request_error"
    assert {k: error[k] for k in expected} == expected
    if expected["code"] == "invalid_json":
        assert error["message"].startswith("Invalid event: failed to parse JSON value.")
    assert sim.commands(speech=True) == []
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.types() == ["input_audio_buffer.cleared"]


def test_consecutive_bad_inputs_each_get_an_error() -> None:
    sim = Sim()
    for frame in ("x", b"y", '{"type": 1}', "{}"):
        sim.send_raw(frame)
    events = sim.events()
    assert [e["type"] for e in events] == ["error"] * 4
    assert [e["event_id"] for e in events] == ["event_2", "event_3", "event_4", "event_5"]
    add_user_text(sim, "still here")


def test_event_id_is_echoed_only_in_errors() -> None:
    sim = Sim()
    sim.send({"type": "input_audio_buffer.clear", "event_id": "evt_ok"})
    events = sim.events()
    assert "evt_ok" not in str(events)
    sim.send({"type": "response.cancel", "event_id": "evt_42"})
    assert sim.error()["event_id"] == "evt_42"
    sim.send({"type": "response.cancel"})
    assert sim.error()["event_id"] is None


def test_output_audio_buffer_clear_is_not_accepted_over_websocket() -> None:
    sim = Sim()
    sim.send({"type": "output_audio_buffer.clear"})
    error = sim.error()
    assert error["code"] == "invalid_value"
    assert error["param"] == "type"


def test_session_expires() -> None:
    sim = Sim()
    assert sim.session.next_deadline_ms() == sim.session.created_ms + 3_600_000
    sim.time(3_600_000 - 1)
    assert sim.events() == []
    assert sim.commands() == []
    sim.time(3_600_000)
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 60 minutes.",
        "param": None,
        "event_id": None,
    }
    assert sim.commands() == [CloseSession(1001, "session expired")]
    # A closed session ignores everything.
    sim.send({"type": "input_audio_buffer.clear"})
    sim.audio(pcm(200))
    sim.time(4_000_000)
    assert sim.events() == []
    assert sim.commands(speech=True) == []
    assert sim.session.next_deadline_ms() is None


def test_expiry_cancels_running_responses_first() -> None:
    sim = Sim(limits=Limits(max_duration_ms=60_000))
    add_user_text(sim, "hi")
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    sim.time(60_000)
    error = sim.error()
    assert error["code"] == "session_expired"
    assert sim.commands() == [CancelResponse("resp_1"), CloseSession(1001, "session expired")]
    sim.backend(be.ResponseText("resp_1", "late"))
    assert sim.events() == []


def test_session_close() -> None:
    sim = Sim()
    sim.send({"type": "session.close"})
    assert sim.events() == []
    (command,) = sim.commands()
    assert isinstance(command, CloseSession)
    assert command.code == 1000
