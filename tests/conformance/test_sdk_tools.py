"""Function calling round trip through the official SDK (spec §5.5)."""

from __future__ import annotations

import json
from typing import Any

from tests.conformance.conftest import Connect

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city name."}},
    "required": ["city"],
    "additionalProperties": False,
}

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": WEATHER_SCHEMA,
}


def validate_against_schema(value: Any, schema: dict[str, Any]) -> None:
    """Validate with ``jsonschema`` when installed, else check required keys and types."""
    try:
        import jsonschema
    except ImportError:
        assert isinstance(value, dict), value
        for name in schema["required"]:
            assert name in value, f"missing required {name!r} in {value}"
        types = {"string": str, "number": (int, float), "integer": int, "boolean": bool}
        for name, given in value.items():
            assert name in schema["properties"], f"unexpected argument {name!r}"
            expected = schema["properties"][name]["type"]
            assert isinstance(given, types[expected]), (name, given, expected)
    else:
        jsonschema.validate(value, schema)


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_forced_function_call_and_tool_result_answer(connect: Connect) -> None:
    async with connect() as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "tools": [WEATHER_TOOL],
                    "tool_choice": {"type": "function", "name": "get_weather"},
                },
            }
        )
        updated = (await client.expect("session.updated"))["session"]
        assert updated["tools"][0]["name"] == "get_weather"
        assert updated["tool_choice"] == {"type": "function", "name": "get_weather"}

        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "What's the weather in Paris?"}],
                },
            }
        )
        await client.send({"type": "response.create"})
        events = await client.collect_until("response.done")

        (added,) = of_type(events, "response.output_item.added")
        call = added["item"]
        assert call["type"] == "function_call"
        assert call["name"] == "get_weather"
        assert call["call_id"]
        assert call["arguments"] == ""
        assert call["status"] == "in_progress"
        deltas = of_type(events, "response.function_call_arguments.delta")
        assert deltas
        assert all(d["item_id"] == call["id"] and d["call_id"] == call["call_id"] for d in deltas)
        (args_done,) = of_type(events, "response.function_call_arguments.done")
        assert args_done["name"] == "get_weather"
        assert args_done["call_id"] == call["call_id"]
        assert args_done["arguments"] == "".join(d["delta"] for d in deltas)
        arguments = json.loads(args_done["arguments"])
        validate_against_schema(arguments, WEATHER_SCHEMA)

        (item_done,) = of_type(events, "response.output_item.done")
        assert item_done["item"]["id"] == call["id"]
        assert item_done["item"]["status"] == "completed"
        assert item_done["item"]["arguments"] == args_done["arguments"]
        kinds = [e["type"] for e in events]
        assert kinds.index("response.function_call_arguments.done") < kinds.index(
            "response.output_item.done"
        )
        response = events[-1]["response"]
        assert response["status"] == "completed"
        assert [o["id"] for o in response["output"]] == [call["id"]]
        await client.expect("rate_limits.updated")

        # The client runs the tool and hands the result back.
        result = json.dumps({"city": arguments["city"], "forecast": "sunny", "celsius": 21})
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": result,
                },
            }
        )
        output_added = await client.expect("conversation.item.added")
        assert output_added["item"]["type"] == "function_call_output"
        assert output_added["item"]["call_id"] == call["call_id"]
        assert output_added["previous_item_id"] == call["id"]
        await client.expect("conversation.item.done")

        await client.send({"type": "response.create", "response": {"tool_choice": "auto"}})
        events = await client.collect_until("response.done")
        answer = events[-1]["response"]
        assert answer["status"] == "completed"
        (message,) = answer["output"]
        assert message["type"] == "message" and message["role"] == "assistant"
        text = message["content"][0]["text"]
        assert "sunny" in text and "21" in text, text
        assert not of_type(events, "response.function_call_arguments.delta")
