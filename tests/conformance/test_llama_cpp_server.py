"""Full sessions through llama-cpp-python's own server as the remote LLM (issue 11, item 1).

The official SDK talks to openrealtime; openrealtime's ``openai-compatible`` engine talks over
real HTTP to ``python -m llama_cpp.server`` (a third-party server users run), loaded with the
embedded SmolLM2 file and its tool-calling chat format. Where that server differs from OpenAI's
API, openrealtime adapts at its edge (docs/engines.md, "llama-cpp-python's server"): each test
below failed before those adaptations (the tool-call follow-up with HTTP 500, ``required`` and
streamed ``auto`` with a broken stream).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from openrealtime.backends.llm_openai_compat import OpenAICompatibleLLM
from tests.conformance.conftest import Client, ServerFactory, sdk_client
from tests.conformance.test_sdk_tools import WEATHER_SCHEMA, WEATHER_TOOL, validate_against_schema
from tests.core.sim import user_text
from tests.helpers.third_party import llama_cpp_server

WAIT_S = 60.0
"""Per event: a 135M model on one thread, one request at a time."""


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_cpp_server(tmp_path_factory.mktemp("llama")) as url:
        yield url


@pytest.fixture
async def base(start_server: ServerFactory, llama_url: str) -> AsyncIterator[str]:
    llm = OpenAICompatibleLLM(llama_url, "smollm2")
    yield await start_server(llm=llm)
    await llm.aclose()


async def configure(client: Client, **session: Any) -> None:
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "output_modalities": ["text"], **session},
        }
    )
    await client.wait_for("session.updated")


async def respond(client: Client) -> dict[str, Any]:
    """``response.create``; the finished response (an error event fails the test)."""
    await client.send({"type": "response.create"})
    done = await client.wait_for("response.done", WAIT_S)
    response: dict[str, Any] = done["response"]
    return response


def text_of(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


def calls_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


async def answer_calls(client: Client, calls: list[dict[str, Any]]) -> None:
    for call in calls:
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": json.dumps({"temperature_c": 18, "sky": "clear"}),
                },
            }
        )
        await client.wait_for("conversation.item.added")


async def test_a_text_turn(base: str) -> None:
    async with sdk_client(base) as client:
        await configure(client, max_output_tokens=40)
        await client.send(user_text("Name three colours."))
        response = await respond(client)
    assert response["status"] in ("completed", "incomplete"), response  # 40 tokens may cut it
    assert text_of(response).strip()
    # that server streams no usage: output tokens are counted from the stream, input unknown
    assert response["usage"]["output_tokens"] > 0


@pytest.mark.parametrize(
    "choice", [{"type": "function", "name": "get_weather"}, "required"], ids=["named", "required"]
)
async def test_a_forced_tool_call_and_its_follow_up(base: str, choice: Any) -> None:
    """The call's arguments fit the schema (the server constrains them with a grammar), and
    the request after the tool result is answered (it was refused with HTTP 500)."""
    async with sdk_client(base) as client:
        await configure(client, tools=[WEATHER_TOOL], tool_choice=choice, max_output_tokens=40)
        await client.send(user_text("What is the weather in Paris?"))
        first = await respond(client)
        assert first["status"] == "completed", first
        calls = calls_of(first)
        assert [call["name"] for call in calls] == ["get_weather"]
        validate_against_schema(json.loads(calls[0]["arguments"]), WEATHER_SCHEMA)

        await answer_calls(client, calls)
        await configure(client, tool_choice="none")
        follow_up = await respond(client)
        assert follow_up["status"] in ("completed", "incomplete"), follow_up
        assert text_of(follow_up).strip()


async def test_automatic_tool_choice_and_its_follow_up(base: str) -> None:
    """That server cannot stream ``auto``; the engine asks again without streaming."""
    async with sdk_client(base) as client:
        await configure(client, tools=[WEATHER_TOOL], tool_choice="auto", max_output_tokens=40)
        await client.send(user_text("What is the weather in Paris?"))
        first = await respond(client)
        assert first["status"] == "completed", first
        assert first["output"], first
        calls = calls_of(first)
        for call in calls:
            assert call["name"] == "get_weather"
            json.loads(call["arguments"])
        if calls:
            await answer_calls(client, calls)
        else:
            await client.send(user_text("And in Rome?"))
        follow_up = await respond(client)  # still "auto": streamed, refused, asked again
        assert follow_up["status"] == "completed", follow_up
        assert follow_up["output"], follow_up


async def test_a_cancel_mid_stream_then_the_next_answer(base: str) -> None:
    async with sdk_client(base) as client:
        await configure(client, max_output_tokens=300)
        await client.send(user_text("Tell me a long story about a dragon and a knight."))
        await client.send({"type": "response.create"})
        await client.wait_for("response.output_text.delta", WAIT_S)
        await client.send({"type": "response.cancel"})
        done = await client.wait_for("response.done", WAIT_S)
        assert done["response"]["status"] == "cancelled", done
        await configure(client, max_output_tokens=30)
        await client.send(user_text("Say hello."))
        again = await respond(client)
    assert again["status"] in ("completed", "incomplete"), again
    assert text_of(again).strip()


async def conversation_items(client: Client) -> list[dict[str, Any]]:
    """The conversation as the server holds it, item by item (``conversation.item.retrieve``)."""
    ids = [e["item"]["id"] for e in client.received if e["type"] == "conversation.item.added"]
    items = []
    for item_id in ids:
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        items.append((await client.wait_for("conversation.item.retrieved"))["item"])
    return items


async def test_a_long_conversation(base: str) -> None:
    """Twelve turns: the whole conversation goes to the server each time."""
    questions = [
        "Hi, my name is Sam.",
        "What is two plus two?",
        "Name a fruit.",
        "Name a colour.",
        "What is the capital of France?",
        "Name an animal.",
        "What day comes after Monday?",
        "Name a planet.",
        "What is ice made of?",
        "Name a musical instrument.",
        "What do bees make?",
        "Thank you, goodbye.",
    ]
    async with sdk_client(base) as client:
        await configure(client, max_output_tokens=24)
        for question in questions:
            await client.send(user_text(question))
            response = await respond(client)
            assert response["status"] in ("completed", "incomplete"), response
            assert text_of(response).strip(), response
        items = await conversation_items(client)
    assert [item["role"] for item in items] == ["user", "assistant"] * len(questions)
