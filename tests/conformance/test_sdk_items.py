"""Item management and out-of-band responses through the official SDK (spec §5.9, §5.11)."""

from __future__ import annotations

import base64
from typing import Any

from tests.conformance.conftest import Connect, b64, tone
from tests.core.sim import user_text


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_item_delete_and_retrieve(connect: Connect) -> None:
    async with connect() as client:
        await client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await client.expect("session.updated")

        # A committed audio item is retrievable with its audio as base64.
        spoken = tone(500, hz=300)
        await client.send({"type": "input_audio_buffer.append", "audio": b64(spoken)})
        await client.send({"type": "input_audio_buffer.commit"})
        audio_id = (await client.expect("input_audio_buffer.committed"))["item_id"]
        await client.expect("conversation.item.added")
        await client.expect("conversation.item.done")
        await client.send({"type": "conversation.item.retrieve", "item_id": audio_id})
        retrieved = (await client.expect("conversation.item.retrieved"))["item"]
        assert retrieved["id"] == audio_id
        assert retrieved["role"] == "user"
        part = retrieved["content"][0]
        assert part["type"] == "input_audio"
        assert "transcript" in part
        assert base64.b64decode(part["audio"]) == spoken

        # A text item with a client id: create, retrieve, delete, then it is gone.
        await client.send(user_text("Forget me", item_id="item_client_0001"))
        added = await client.expect("conversation.item.added")
        assert added["item"]["id"] == "item_client_0001"
        assert added["previous_item_id"] == audio_id
        await client.expect("conversation.item.done")
        await client.send({"type": "conversation.item.retrieve", "item_id": "item_client_0001"})
        text_item = (await client.expect("conversation.item.retrieved"))["item"]
        assert text_item["content"] == [{"type": "input_text", "text": "Forget me"}]
        await client.send({"type": "conversation.item.delete", "item_id": "item_client_0001"})
        deleted = await client.expect("conversation.item.deleted")
        assert deleted["item_id"] == "item_client_0001"

        await client.send(
            {
                "type": "conversation.item.retrieve",
                "item_id": "item_client_0001",
                "event_id": "evt_retrieve_deleted",
            }
        )
        gone = (await client.expect("error"))["error"]
        assert gone["type"] == "invalid_request_error"
        assert gone["event_id"] == "evt_retrieve_deleted"
        assert "item_client_0001" in gone["message"]

        await client.send(
            {"type": "conversation.item.retrieve", "item_id": "item_nope", "event_id": "evt_r2"}
        )
        unknown = (await client.expect("error"))["error"]
        assert unknown["type"] == "invalid_request_error"
        assert unknown["code"] == "item_retrieve_invalid_item_id"
        assert unknown["event_id"] == "evt_r2"
        assert "item_nope" in unknown["message"]

        await client.send({"type": "conversation.item.delete", "item_id": "item_nope"})
        bad_delete = (await client.expect("error"))["error"]
        assert bad_delete["code"] == "item_delete_invalid_item_id"

        # The session lives on: the audio item is still there; new items follow it.
        await client.send(user_text("Still here"))
        assert (await client.expect("conversation.item.added"))["previous_item_id"] == audio_id


async def test_out_of_band_response(connect: Connect) -> None:
    async with connect() as client:
        await client.send(user_text("The sky is green.", item_id="item_context_01"))
        await client.expect("conversation.item.added")
        await client.expect("conversation.item.done")

        await client.send(
            {
                "type": "response.create",
                "response": {
                    "conversation": "none",
                    "metadata": {"topic": "classification"},
                    "output_modalities": ["text"],
                    "instructions": "Classify the user's statement as true or false.",
                    # The reference comes last, so the fake model (which echoes the last user
                    # text) answers with the referenced item's text: proof it was resolved.
                    "input": [
                        {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "Classify this:"}],
                        },
                        {"type": "item_reference", "id": "item_context_01"},
                    ],
                },
            }
        )
        events = await client.collect_until("response.done")
        events += await client.drain(0.3)
        kinds = [e["type"] for e in events]
        assert not [k for k in kinds if k.startswith("conversation.item.")], kinds
        created = of_type(events, "response.created")[0]["response"]
        done = of_type(events, "response.done")[0]["response"]
        for response in (created, done):
            assert response["conversation_id"] is None
            assert response["metadata"] == {"topic": "classification"}
            assert response["output_modalities"] == ["text"]
        assert done["status"] == "completed"
        (message,) = done["output"]
        assert message["content"][0]["type"] == "output_text"
        assert message["content"][0]["text"] == "You said: The sky is green."
        deltas = of_type(events, "response.output_text.delta")
        assert "".join(d["delta"] for d in deltas) == message["content"][0]["text"]

        # The out-of-band output never joined the default conversation.
        await client.send({"type": "conversation.item.retrieve", "item_id": message["id"]})
        assert (await client.expect("error"))["error"]["code"] == "item_retrieve_invalid_item_id"
        await client.send(user_text("Next"))
        added = await client.expect("conversation.item.added")
        assert added["previous_item_id"] == "item_context_01"
