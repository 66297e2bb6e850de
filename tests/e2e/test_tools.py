"""Function calling from a spoken question, ending in a spoken answer (embedded engines).

The session names the one tool the model must call (``tool_choice: {"type": "function"}``);
the spoken question then yields a ``function_call`` whose arguments match the tool's schema
(the llama.cpp engine constrains them with a grammar built from that schema). The client
runs the tool, returns its output, and the next response answers in speech.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from tests.conformance.conftest import BYTES_PER_MS, Speech, sdk_client, silence, stream_audio
from tests.e2e.conftest import EmbeddedServer, audio_of, of_type, validate_arguments

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city name, e.g. Paris."},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": WEATHER_SCHEMA,
}


async def test_named_tool_call_then_spoken_answer(
    embedded: EmbeddedServer, speak: Callable[[str], Speech]
) -> None:
    speech = speak("What is the weather like in Paris today?")
    async with sdk_client(embedded.base) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "tools": [WEATHER_TOOL],
                    "tool_choice": {"type": "function", "name": "get_weather"},
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "create_response": True},
                        }
                    },
                },
            }
        )
        updated = (await client.expect("session.updated"))["session"]
        assert updated["tool_choice"] == {"type": "function", "name": "get_weather"}

        sender = asyncio.create_task(
            stream_audio(client, silence(300) + speech.pcm + silence(1000), speedup=4)
        )
        try:
            events = await client.collect_until("response.done", wait_s=20)
        finally:
            await sender
        response = events[-1]["response"]
        assert response["status"] == "completed", response
        (call,) = response["output"]
        assert call["type"] == "function_call", call
        assert call["name"] == "get_weather"
        arguments = json.loads(call["arguments"])
        validate_arguments(arguments, WEATHER_SCHEMA)
        (args_done,) = of_type(events, "response.function_call_arguments.done")
        assert args_done["call_id"] == call["call_id"]
        assert args_done["arguments"] == call["arguments"]
        assert not audio_of(events), "a forced tool call is not spoken"

        # The client runs the tool and hands the result back; the answer is spoken.
        result = {"city": arguments["city"], "forecast": "sunny", "temperature": 21}
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": json.dumps(result),
                },
            }
        )
        await client.wait_for("conversation.item.done")
        await client.send({"type": "response.create", "response": {"tool_choice": "none"}})
        events = await client.collect_until("response.done", wait_s=20)
        answer = events[-1]["response"]
        assert answer["status"] == "completed", answer
        (message,) = answer["output"]
        assert message["type"] == "message" and message["role"] == "assistant"
        assert message["content"][0]["type"] == "output_audio"
        spoken = message["content"][0]["transcript"]
        assert spoken.strip(), message
        # The answer is grounded on the tool's output (greedy decoding: deterministic).
        assert "sunny" in spoken.lower() or "21" in spoken, spoken
        assert len(audio_of(events, answer["id"])) > 300 * BYTES_PER_MS
        assert not of_type(events, "response.function_call_arguments.delta")
