"""Response lifecycle, limits, failures, cancel and out-of-band responses (spec §4.3, §5.2-5.9)."""

from __future__ import annotations

from typing import Any

from openrealtime.backends.base import ChatMessage
from openrealtime.core import backend_events as be
from openrealtime.core.commands import CancelResponse, Generate, Transcribe
from tests.core.sim import Sim, add_user_text, b64, pcm, speak, types

NO_VAD: dict[str, Any] = {"instructions": "", "audio": {"input": {"turn_detection": None}}}

TEXT_TURN = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "rate_limits.updated",
]


def generate(sim: Sim) -> Generate:
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    return command


def test_text_turn_in_the_live_order() -> None:
    """Spec §5.3, captured live."""
    sim = Sim(session={**NO_VAD, "output_modalities": ["text"], "instructions": "Be nice."})
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    command = generate(sim)
    assert command.response_id == "resp_1"
    assert command.modality == "text"
    assert command.messages == (ChatMessage("system", "Be nice."), ChatMessage("user", "hello"))
    assert command.max_output_tokens is None
    assert command.session_key == "sess_1"
    sim.backend(be.ResponseText("resp_1", "Hi"))
    sim.backend(be.ResponseText("resp_1", " there!"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 12, 3))
    events = sim.events()
    assert types(events) == TEXT_TURN
    created, item_added, conv_added, part_added, d1, d2, text_done = events[:7]
    part_done, conv_done, item_done, done, limits = events[7:]
    assert created["response"] == {
        "object": "realtime.response",
        "id": "resp_1",
        "status": "in_progress",
        "status_details": None,
        "output": [],
        "conversation_id": "conv_1",
        "output_modalities": ["text"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
        "usage": None,
        "metadata": None,
    }
    in_progress = {
        "id": "item_2",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert item_added["item"] == in_progress
    assert item_added["output_index"] == 0
    assert item_added["response_id"] == "resp_1"
    assert conv_added["item"] == in_progress
    assert conv_added["previous_item_id"] == "item_1"
    where = {"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0}
    assert part_added["part"] == {"type": "text", "text": ""}
    for event in (part_added, d1, d2, text_done, part_done):
        assert {k: event[k] for k in where} == where
    assert [d1["delta"], d2["delta"]] == ["Hi", " there!"]
    assert text_done["text"] == "Hi there!"
    assert part_done["part"] == {"type": "text", "text": "Hi there!"}
    completed = {
        **in_progress,
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hi there!"}],
    }
    assert conv_done["item"] == completed
    assert conv_done["previous_item_id"] == "item_1"
    assert item_done["item"] == completed
    response = done["response"]
    assert response["status"] == "completed"
    assert response["status_details"] is None
    assert response["output"] == [completed]
    assert response["usage"]["input_tokens"] == 12
    assert response["usage"]["output_tokens"] == 3
    assert response["usage"]["total_tokens"] == 15
    assert limits["rate_limits"] == [
        {
            "name": "tokens",
            "limit": 15_000_000,
            "remaining": 15_000_000 - 15,
            "reset_seconds": 0.001,
        }
    ]
    assert sim.commands() == []


def test_audio_turn_in_the_live_order() -> None:
    """Spec §5.2: transcript and audio deltas interleave; audio, transcript, part, item done."""
    sim = Sim(session=NO_VAD)
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    assert generate(sim).modality == "audio"
    sim.backend(be.ResponseText("resp_1", "Hi. "))
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 1)))
    sim.backend(be.ResponseText("resp_1", "Bye."))
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 2)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 10, 20))
    events = sim.events()
    assert types(events) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[3]["part"] == {"type": "audio", "transcript": ""}
    assert events[5]["delta"] == b64(pcm(100, 1))
    assert events[7]["delta"] == b64(pcm(100, 2))
    assert events[9]["transcript"] == "Hi. Bye."
    assert events[10]["part"] == {"type": "audio", "transcript": "Hi. Bye."}
    final = {
        "id": "item_2",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_audio", "transcript": "Hi. Bye."}],
    }
    assert events[11]["item"] == final
    assert events[12]["item"] == final
    response = events[13]["response"]
    assert response["output"] == [final]
    assert response["output_modalities"] == ["audio"]
    assert response["usage"]["total_tokens"] == 30
    # The stored item has the audio for retrieval; events never carry it back.
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_2"})
    part = sim.events()[0]["item"]["content"][0]
    assert part["audio"] == b64(pcm(100, 1) + pcm(100, 2))


def test_response_overrides() -> None:
    sim = Sim(session=NO_VAD)
    add_user_text(sim, "hello")
    sim.send(
        {
            "type": "response.create",
            "response": {
                "instructions": "Answer in French.",
                "output_modalities": ["text"],
                "max_output_tokens": 5,
                "audio": {"output": {"voice": "verse"}},
            },
        }
    )
    created = sim.events()[0]["response"]
    assert created["max_output_tokens"] == 5
    assert created["output_modalities"] == ["text"]
    assert created["audio"]["output"]["voice"] == "verse"
    command = generate(sim)
    assert command.messages[0] == ChatMessage("system", "Answer in French.")
    assert command.max_output_tokens == 5
    assert command.voice == "verse"


def test_max_output_tokens_reached() -> None:
    sim = Sim(session={**NO_VAD, "output_modalities": ["text"]})
    add_user_text(sim, "hello")
    sim.send({"type": "response.create", "response": {"max_output_tokens": 2}})
    assert generate(sim).max_output_tokens == 2
    sim.backend(be.ResponseText("resp_1", "One two"))
    sim.backend(be.ResponseGenerated("resp_1", "length", 4, 2))
    events = sim.events()
    assert types(events) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[8]["item"]["status"] == "incomplete"
    response = events[9]["response"]
    assert response["status"] == "incomplete"
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert response["usage"]["output_tokens"] == 2


def test_backend_failure() -> None:
    sim = Sim(session={**NO_VAD, "output_modalities": ["text"]})
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    sim.commands()
    sim.backend(be.ResponseText("resp_1", "Partial"))
    sim.events()
    sim.backend(be.ResponseFailed("resp_1", "engine_error", "The model crashed."))
    events = sim.events()
    assert types(events) == [
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
        "error",
    ]
    assert events[3]["item"]["status"] == "incomplete"
    response = events[4]["response"]
    assert response["status"] == "failed"
    assert response["status_details"] == {
        "type": "failed",
        "error": {"type": "server_error", "code": "engine_error", "message": "The model crashed."},
    }
    assert response["usage"] is not None
    assert events[6]["error"] == {
        "type": "server_error",
        "code": "engine_error",
        "message": "The model crashed.",
        "param": None,
        "event_id": None,
    }
    # The session goes on.
    sim.send({"type": "response.create"})
    assert sim.events()[0]["response"]["id"] == "resp_2"


def test_one_active_response_per_conversation() -> None:
    sim = Sim(session=NO_VAD)
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    sim.send({"type": "response.create", "event_id": "evt_2"})
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "conversation_already_has_active_response",
        "message": "Conversation already has an active response in progress: resp_1. Wait "
        "until the response is finished before creating a new one.",
        "param": None,
        "event_id": "evt_2",
    }
    assert sim.commands() == []
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 0))
    assert sim.types() == ["response.done", "rate_limits.updated"]
    sim.send({"type": "response.create"})
    assert sim.events()[0]["response"]["id"] == "resp_2"


def test_response_cancel() -> None:
    sim = Sim(session={**NO_VAD, "output_modalities": ["text"]})
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    sim.commands()
    sim.backend(be.ResponseText("resp_1", "Well"))
    sim.events()
    sim.send({"type": "response.cancel"})
    events = sim.events()
    assert types(events) == [
        "response.output_text.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[2]["item"]["status"] == "incomplete"
    assert events[3]["item"]["status"] == "incomplete"
    response = events[4]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert response["output"][0]["status"] == "incomplete"
    assert sim.commands() == [CancelResponse("resp_1")]
    sim.backend(be.ResponseText("resp_1", " then"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    assert sim.events() == []
    # Cancelled: a new response may start.
    sim.send({"type": "response.create"})
    assert sim.events()[0]["response"]["id"] == "resp_2"


def test_cancel_by_id_before_any_output() -> None:
    sim = Sim(session=NO_VAD)
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    sim.send({"type": "response.cancel", "response_id": "resp_1"})
    events = sim.events()
    assert types(events) == ["response.done", "rate_limits.updated"]
    assert events[0]["response"]["output"] == []
    assert events[0]["response"]["status"] == "cancelled"
    assert sim.commands() == [CancelResponse("resp_1")]


def test_cancel_while_waiting_for_a_transcript_never_generates() -> None:
    sim = Sim(session=NO_VAD)
    sim.audio(pcm(200))
    sim.send({"type": "input_audio_buffer.commit"})
    sim.send({"type": "response.create"})
    sim.events()
    assert [type(c) for c in sim.commands()] == [Transcribe]
    sim.send({"type": "response.cancel"})
    assert sim.types() == ["response.done", "rate_limits.updated"]
    assert sim.commands() == [CancelResponse("resp_1")]
    sim.backend(be.TranscriptionCompleted("item_1", "hi", 0.2))
    assert sim.commands() == []


def test_cancel_with_nothing_active() -> None:
    sim = Sim()
    sim.send({"type": "response.cancel", "event_id": "evt_x"})
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "response_cancel_not_active",
        "message": "Cancellation failed: no active response found",
        "param": None,
        "event_id": "evt_x",
    }
    sim.send({"type": "response.cancel", "response_id": "resp_9"})
    assert sim.error()["code"] == "response_cancel_not_active"
    assert sim.commands() == []


def test_out_of_band_response() -> None:
    """Spec §5.9: conversation none, metadata, explicit input; no conversation.item.*."""
    sim = Sim(session={**NO_VAD, "instructions": "Session rules."})
    add_user_text(sim, "I want a refund.")
    sim.send(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "metadata": {"topic": "classification"},
                "output_modalities": ["text"],
                "instructions": "Classify the request.",
                "input": [
                    {"type": "item_reference", "id": "item_1"},
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "One word."}],
                    },
                ],
            },
        }
    )
    events = sim.events()
    assert types(events) == ["response.created"]
    assert events[0]["response"]["conversation_id"] is None
    assert events[0]["response"]["metadata"] == {"topic": "classification"}
    command = generate(sim)
    assert command.messages == (
        ChatMessage("system", "Classify the request."),
        ChatMessage("user", "I want a refund."),
        ChatMessage("user", "One word."),
    )
    assert command.session_key is None
    # A default-conversation response may run beside it.
    sim.send({"type": "response.create"})
    assert sim.events()[0]["response"]["conversation_id"] == "conv_1"
    assert generate(sim).response_id == "resp_2"
    sim.backend(be.ResponseText("resp_1", "refund"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 9, 1))
    events = sim.events()
    assert types(events) == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    done = events[6]["response"]
    assert done["metadata"] == {"topic": "classification"}
    assert done["conversation_id"] is None
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "refund"}]
    # The out-of-band output is not in the conversation.
    sim.send({"type": "conversation.item.retrieve", "item_id": done["output"][0]["id"]})
    assert sim.error()["code"] == "item_retrieve_invalid_item_id"


def test_out_of_band_response_waits_for_a_referenced_transcript() -> None:
    sim = Sim(session=NO_VAD)
    sim.audio(pcm(200))
    sim.send({"type": "input_audio_buffer.commit"})
    sim.events()
    sim.commands()
    sim.send(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "input": [{"type": "item_reference", "id": "item_1"}],
            },
        }
    )
    assert sim.types() == ["response.created"]
    assert sim.commands() == []
    sim.backend(be.TranscriptionCompleted("item_1", "book a table", 0.2))
    command = generate(sim)
    assert command.messages == (ChatMessage("user", "book a table"),)


def test_input_replaces_the_context_of_a_conversation_response() -> None:
    sim = Sim(session=NO_VAD)
    add_user_text(sim, "ignored")
    sim.send({"type": "response.create", "response": {"input": []}})
    created = sim.events()[0]["response"]
    assert created["conversation_id"] == "conv_1"
    assert generate(sim).messages == ()


def test_unknown_item_reference() -> None:
    sim = Sim()
    sim.send(
        {
            "type": "response.create",
            "response": {"input": [{"type": "item_reference", "id": "item_404"}]},
        }
    )
    error = sim.error()
    assert error["code"] == "invalid_value"
    assert error["param"] == "response.input[0].id"
    assert "item_404" in error["message"]
    assert sim.commands() == []
    # Nothing is left active.
    sim.send({"type": "response.create"})
    assert sim.events()[0]["response"]["id"] == "resp_1"


def test_vad_turn_answered_while_waiting_is_not_lost() -> None:
    """A turn ending while a response runs is answered after response.done."""
    sim = Sim(session={"instructions": ""})
    add_user_text(sim, "first")
    sim.send({"type": "response.create"})
    sim.events()
    sim.commands()
    sim.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"interrupt_response": False}}},
            },
        }
    )
    assert sim.types() == ["session.updated"]
    speak(sim, 0, 5, 7)
    assert "response.created" not in sim.types()
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 0))
    events = sim.events()
    assert types(events) == ["response.done", "rate_limits.updated", "response.created"]
    assert events[2]["response"]["id"] == "resp_2"


def test_context_rebuilt_after_a_transcript_keeps_system_items_once() -> None:
    sim = Sim(session=NO_VAD)
    sim.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Rules."}],
            },
        }
    )
    sim.audio(pcm(200))
    sim.send({"type": "input_audio_buffer.commit"})
    sim.send({"type": "response.create"})
    sim.events()
    assert [type(c) for c in sim.commands()] == [Transcribe]
    sim.backend(be.TranscriptionCompleted("item_2", "hi", 0.2))
    assert generate(sim).messages == (ChatMessage("system", "Rules."), ChatMessage("user", "hi"))
