"""conversation.item.create / retrieve / delete / truncate (spec §2.2, §5.6, §5.11, §6.2)."""

from __future__ import annotations

import pytest

from openrealtime.backends.base import ChatMessage
from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate, Transcribe
from tests.core.sim import Sim, add_user_text, b64, pcm, types, user_text

BYTES_PER_MS = 48


def no_vad() -> Sim:
    return Sim(session={"instructions": "", "audio": {"input": {"turn_detection": None}}})


def context(sim: Sim) -> tuple[ChatMessage, ...]:
    """Run a response.create and return the messages of its Generate command."""
    sim.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    assert sim.types() == ["response.created"]
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    return command.messages


def test_create_appends() -> None:
    sim = Sim()
    sim.send(user_text("one"))
    events = sim.events()
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    item = {
        "id": "item_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "one"}],
    }
    for event in events:
        assert event["item"] == item
        assert event["previous_item_id"] is None
    sim.send(user_text("two"))
    events = sim.events()
    assert [e["item"]["id"] for e in events] == ["item_2", "item_2"]
    assert [e["previous_item_id"] for e in events] == ["item_1", "item_1"]
    assert sim.commands(speech=True) == []


def test_create_with_previous_item_id_and_root() -> None:
    sim = no_vad()
    add_user_text(sim, "A", "a")
    add_user_text(sim, "B", "b")
    sim.send({**user_text("C", "c"), "previous_item_id": "a"})
    events = sim.events()
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    assert [e["previous_item_id"] for e in events] == ["a", "a"]
    sim.send({**user_text("R", "r"), "previous_item_id": "root"})
    events = sim.events()
    assert [e["previous_item_id"] for e in events] == [None, None]
    sim.send(user_text("D", "d"))
    assert [e["previous_item_id"] for e in sim.events()] == ["b", "b"]
    assert [m.content for m in context(sim)] == ["R", "A", "C", "B", "D"]


def test_create_after_unknown_previous_item_is_an_error() -> None:
    sim = Sim()
    sim.send({**user_text("x"), "previous_item_id": "nope", "event_id": "evt_1"})
    error = sim.error()
    assert error["code"] == "previous_item_not_found"
    assert error["param"] == "previous_item_id"
    assert error["event_id"] == "evt_1"
    assert "nope" in error["message"]
    # Nothing was added: the next item still starts the conversation.
    sim.send(user_text("y"))
    assert [e["previous_item_id"] for e in sim.events()] == [None, None]


def test_item_id_longer_than_32() -> None:
    sim = Sim()
    sim.send(user_text("x", "i" * 39))
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "string_above_max_length",
        "message": "Invalid 'item.id': string too long. Expected a string with maximum length "
        "32, but got a string with length 39 instead.",
        "param": "item.id",
        "event_id": None,
    }


def test_client_ids_are_honoured_and_must_be_unique() -> None:
    sim = Sim()
    assert add_user_text(sim, "x", "my_item") == "my_item"
    sim.send(user_text("again", "my_item"))
    error = sim.error()
    assert error["code"] == "item_id_already_exists"
    assert error["param"] == "item.id"


def test_retrieve_includes_audio() -> None:
    sim = no_vad()
    audio = pcm(200, 7)
    sim.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": b64(audio)}],
            },
        }
    )
    events = sim.events()
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    # Audio bytes are never sent in added/done (spec §2.3).
    assert events[0]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert sim.commands() == [Transcribe("item_1", 0, audio, None, None, None)]
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_1"})
    events = sim.events()
    assert types(events) == ["conversation.item.retrieved"]
    assert events[0]["item"] == {
        "id": "item_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "audio": b64(audio), "transcript": None}],
    }


def test_retrieve_text_item_and_unknown_id() -> None:
    sim = Sim()
    add_user_text(sim, "hello")
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_1"})
    events = sim.events()
    assert types(events) == ["conversation.item.retrieved"]
    assert events[0]["item"]["content"] == [{"type": "input_text", "text": "hello"}]
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_9"})
    error = sim.error()
    assert error["code"] == "item_retrieve_invalid_item_id"
    assert error["param"] == "item_id"


def test_delete() -> None:
    sim = no_vad()
    add_user_text(sim, "keep")
    add_user_text(sim, "drop")
    sim.send({"type": "conversation.item.delete", "item_id": "item_2"})
    events = sim.events()
    assert types(events) == ["conversation.item.deleted"]
    assert events[0]["item_id"] == "item_2"
    sim.send({"type": "conversation.item.delete", "item_id": "item_2", "event_id": "evt_d"})
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "item_delete_invalid_item_id",
        "message": "Error deleting item: the item with id 'item_2' does not exist.",
        "param": "item_id",
        "event_id": "evt_d",
    }
    assert [m.content for m in context(sim)] == ["keep"]


def assistant_audio(sim: Sim, pieces: list[tuple[str, int]]) -> str:
    """Run one audio response speaking ``pieces`` (text, then that many ms of audio)."""
    add_user_text(sim, "talk to me")
    sim.send({"type": "response.create"})
    for text, ms in pieces:
        sim.backend(be.ResponseText("resp_1", text))
        sim.backend(be.ResponseAudio("resp_1", pcm(ms, 3)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 5, 5))
    events = sim.events()
    assert events[-2]["type"] == "response.done"
    sim.commands()
    return str(events[-2]["response"]["output"][0]["id"])


def test_truncate_trims_audio_and_transcript_to_what_was_heard() -> None:
    sim = no_vad()
    item_id = assistant_audio(sim, [("Hello there. ", 1000), ("How are you today?", 1000)])
    assert item_id == "item_2"
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 1500,
        }
    )
    events = sim.events()
    assert types(events) == ["conversation.item.truncated"]
    assert {k: v for k, v in events[0].items() if k != "event_id"} == {
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 1500,
    }
    sim.send({"type": "conversation.item.retrieve", "item_id": item_id})
    (retrieved,) = sim.events()
    part = retrieved["item"]["content"][0]
    assert part["transcript"] == "Hello there. How are"
    assert part["audio"] == b64(pcm(1000, 3) + pcm(500, 3))
    # The model's context now holds only the heard words.
    assert context(sim)[-1] == ChatMessage("assistant", "Hello there. How are")


def test_truncate_at_a_segment_boundary_keeps_whole_segments() -> None:
    sim = no_vad()
    item_id = assistant_audio(sim, [("One. ", 400), ("Two. ", 400), ("Three.", 400)])
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 800,
        }
    )
    assert sim.types() == ["conversation.item.truncated"]
    sim.send({"type": "conversation.item.retrieve", "item_id": item_id})
    part = sim.events()[0]["item"]["content"][0]
    assert part["transcript"] == "One. Two."
    assert len(part["audio"]) == len(b64(pcm(800)))


@pytest.mark.parametrize("end_ms", [2001, 5000])
def test_truncate_beyond_the_audio(end_ms: int) -> None:
    sim = no_vad()
    item_id = assistant_audio(sim, [("Hi.", 2000)])
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": end_ms,
        }
    )
    error = sim.error()
    assert error["message"] == f"Audio content of 2000ms is already shorter than {end_ms}ms"
    # The item is untouched.
    sim.send({"type": "conversation.item.retrieve", "item_id": item_id})
    part = sim.events()[0]["item"]["content"][0]
    assert part["transcript"] == "Hi."
    assert part["audio"] == b64(pcm(2000, 3))


def test_truncate_unknown_item() -> None:
    sim = Sim()
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "nope",
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    error = sim.error()
    assert error["code"] == "item_truncate_invalid_item_id"
    assert error["param"] == "item_id"


def test_truncate_a_user_item_is_an_error() -> None:
    sim = Sim()
    add_user_text(sim, "x")
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_1",
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    assert sim.error()["code"] == "invalid_value"


def test_assistant_audio_items_cannot_be_created() -> None:
    sim = Sim()
    sim.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_audio", "audio": b64(pcm(100))}],
            },
        }
    )
    assert sim.error()["code"] == "invalid_value"
