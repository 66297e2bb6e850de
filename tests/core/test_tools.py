"""Function calling round trip (spec §5.5)."""

from __future__ import annotations

from typing import Any

from openrealtime.backends.base import ChatMessage, ChatToolCall, ToolSpec
from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate
from tests.core.sim import Sim, add_user_text, types

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {**WEATHER, "name": "get_time", "description": "Time in a city."}
SESSION: dict[str, Any] = {
    "instructions": "",
    "output_modalities": ["text"],
    "tools": [WEATHER, TIME],
    "audio": {"input": {"turn_detection": None}},
}


def generate(sim: Sim) -> Generate:
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    return command


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def test_function_call_round_trip() -> None:
    sim = Sim(session=SESSION)
    add_user_text(sim, "Weather in Tokyo?")
    sim.send({"type": "response.create"})
    assert sim.types() == ["response.created"]
    command = generate(sim)
    assert command.tools == (
        ToolSpec("get_weather", "Weather for a city.", WEATHER["parameters"]),
        ToolSpec("get_time", "Time in a city.", TIME["parameters"]),
    )
    assert command.tool_choice == "auto"

    sim.backend(be.ResponseToolCall("resp_1", 0, "get_weather"))
    events = sim.events()
    assert types(events) == ["response.output_item.added", "conversation.item.added"]
    added = call_item("item_2", "call_1", "get_weather", "", "in_progress")
    assert events[0]["item"] == added
    assert events[0]["output_index"] == 0
    assert events[1]["item"] == added
    assert events[1]["previous_item_id"] == "item_1"

    sim.backend(be.ResponseToolArguments("resp_1", 0, '{"city":'))
    sim.backend(be.ResponseToolArguments("resp_1", 0, '"Tokyo"}'))
    events = sim.events()
    assert types(events) == ["response.function_call_arguments.delta"] * 2
    for event, delta in zip(events, ['{"city":', '"Tokyo"}'], strict=True):
        assert event["item_id"] == "item_2"
        assert event["call_id"] == "call_1"
        assert event["output_index"] == 0
        assert event["response_id"] == "resp_1"
        assert event["delta"] == delta

    sim.backend(be.ResponseGenerated("resp_1", "tool_calls", 20, 8))
    events = sim.events()
    assert types(events) == [
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    args_done = events[0]
    assert args_done["name"] == "get_weather"
    assert args_done["arguments"] == '{"city":"Tokyo"}'
    assert args_done["call_id"] == "call_1"
    assert args_done["item_id"] == "item_2"
    done = call_item("item_2", "call_1", "get_weather", '{"city":"Tokyo"}', "completed")
    assert events[1]["item"] == done
    assert events[2]["item"] == done
    assert events[3]["response"]["status"] == "completed"
    assert events[3]["response"]["output"] == [done]

    sim.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"c":21}'},
        }
    )
    events = sim.events()
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    assert events[0]["item"] == {
        "id": "item_3",
        "type": "function_call_output",
        "status": "completed",
        "call_id": "call_1",
        "output": '{"c":21}',
    }
    assert events[0]["previous_item_id"] == "item_2"
    sim.send({"type": "response.create"})
    assert sim.types() == ["response.created"]
    assert generate(sim).messages == (
        ChatMessage("user", "Weather in Tokyo?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(ChatToolCall("call_1", "get_weather", '{"city":"Tokyo"}'),),
        ),
        ChatMessage("tool", '{"c":21}', tool_call_id="call_1"),
    )


def test_two_calls_and_a_preamble_in_one_response() -> None:
    sim = Sim(session=SESSION)
    add_user_text(sim, "Weather and time in Oslo?")
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    sim.backend(be.ResponseText("resp_1", "Checking."))
    sim.backend(be.ResponseToolCall("resp_1", 0, "get_weather"))
    sim.backend(be.ResponseToolArguments("resp_1", 0, '{"city":"Oslo"}'))
    sim.backend(be.ResponseToolCall("resp_1", 1, "get_time"))
    sim.backend(be.ResponseToolArguments("resp_1", 1, '{"city":"Oslo"}'))
    sim.backend(be.ResponseGenerated("resp_1", "tool_calls", 20, 16))
    events = sim.events()
    assert types(events) == [
        # the spoken preamble, closed when the first call starts
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        # call 0
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        # call 1
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        # both finish
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[7]["output_index"] == 0
    assert events[7]["item"]["status"] == "completed"
    first, second = events[8], events[11]
    assert first["output_index"] == 1
    assert second["output_index"] == 2
    assert first["item"]["call_id"] == "call_1"
    assert second["item"]["call_id"] == "call_2"
    assert first["item"]["id"] != second["item"]["id"]
    assert events[13]["call_id"] == "call_2"
    assert events[13]["output_index"] == 2
    assert [events[14]["name"], events[17]["name"]] == ["get_weather", "get_time"]
    assert events[16]["output_index"] == 1
    assert events[19]["output_index"] == 2
    assert events[12]["previous_item_id"] == first["item"]["id"]
    output = events[20]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call", "function_call"]
    assert [o["status"] for o in output] == ["completed"] * 3


def test_tool_choice_naming_no_tool_is_an_error() -> None:
    sim = Sim(session=SESSION)
    sim.send(
        {
            "type": "response.create",
            "event_id": "evt_tc",
            "response": {"tool_choice": {"type": "function", "name": "nope"}},
        }
    )
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Tool choice 'nope' does not match any of the provided tools.",
        "param": "response.tool_choice",
        "event_id": "evt_tc",
    }
    assert sim.commands() == []


def test_tool_choice_naming_a_tool() -> None:
    sim = Sim(session=SESSION)
    sim.send(
        {
            "type": "response.create",
            "response": {"tool_choice": {"type": "function", "name": "get_time"}},
        }
    )
    assert sim.types() == ["response.created"]
    assert generate(sim).tool_choice == "get_time"


def test_function_call_output_for_an_unknown_call() -> None:
    sim = Sim(session=SESSION)
    sim.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_x", "output": "{}"},
        }
    )
    error = sim.error()
    assert error["code"] == "invalid_value"
    assert error["param"] == "item.call_id"


def test_cancelled_call_is_incomplete() -> None:
    sim = Sim(session=SESSION)
    add_user_text(sim, "Weather?")
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    sim.backend(be.ResponseToolCall("resp_1", 0, "get_weather"))
    sim.backend(be.ResponseToolArguments("resp_1", 0, '{"ci'))
    sim.events()
    sim.send({"type": "response.cancel"})
    events = sim.events()
    assert types(events) == [
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[2]["item"]["status"] == "incomplete"
    assert events[3]["response"]["status_details"]["reason"] == "client_cancelled"
