"""Cancelling and interrupting spoken responses through the official SDK (spec §5.6, §5.8).

The TTS is slowed down (``Faults(chunk_delay_s=0.05)``: 40 ms of audio every 50 ms) so a
response is still streaming when the client cancels it or speaks over it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from openrealtime.backends.fake import FakeLanguageModel, FakeTextToSpeech, Faults
from tests.conformance.conftest import (
    BYTES_PER_MS,
    ServerFactory,
    Speech,
    sdk_client,
    silence,
    stream_audio,
)
from tests.core.sim import user_text

LONG_REPLY = (
    "Let me tell you a long story about the history of Paris, the capital of France, "
    "which began as a small settlement on an island in the river Seine."
)


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def slow_tts() -> FakeTextToSpeech:
    return FakeTextToSpeech(faults=Faults(chunk_delay_s=0.05))


async def test_response_cancel_mid_response(start_server: ServerFactory) -> None:
    base = await start_server(tts=slow_tts(), llm=FakeLanguageModel(reply=LONG_REPLY))
    async with sdk_client(base) as client:
        await client.send(user_text("Tell me a story."))
        await client.send({"type": "response.create"})
        before = await client.collect_until("response.output_audio.delta")
        response_id = of_type(before, "response.created")[0]["response"]["id"]
        await client.send({"type": "response.cancel"})
        events = await client.collect_until("response.done")
        done = events[-1]["response"]
        assert done["id"] == response_id
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        (item,) = done["output"]
        assert item["status"] == "incomplete"
        item_done = of_type(events, "response.output_item.done")
        assert item_done and item_done[0]["item"]["status"] == "incomplete"
        spoken_ms = (
            sum(
                len(base64.b64decode(d["delta"]))
                for d in of_type(before + events, "response.output_audio.delta")
            )
            / BYTES_PER_MS
        )
        assert spoken_ms < 60 * len(LONG_REPLY) / 2, "the response was not cut short"

        after = await client.drain(0.5)
        late = [e for e in after if e["type"].startswith("response.") and "delta" in e["type"]]
        assert late == [], late
        assert not of_type(after, "response.done")

        # Nothing is active any more; the session still works.
        await client.send({"type": "response.cancel"})
        assert (await client.wait_for("error"))["error"]["code"] == "response_cancel_not_active"


async def test_barge_in_cancels_and_client_truncates(
    start_server: ServerFactory, speak: Callable[[str], Speech]
) -> None:
    speech = speak("What is the capital of France?")
    base = await start_server(tts=slow_tts(), llm=FakeLanguageModel(reply=LONG_REPLY))
    async with sdk_client(base) as client:
        await client.send(user_text("Tell me a story."))
        await client.send({"type": "response.create"})
        events = await client.collect_until("response.created")
        response_id = events[-1]["response"]["id"]

        def audio_of(evts: list[dict[str, Any]]) -> bytes:
            return b"".join(
                base64.b64decode(e["delta"])
                for e in of_type(evts, "response.output_audio.delta")
                if e["response_id"] == response_id
            )

        # Let about half a second of the answer arrive, then talk over it.
        while len(audio_of(events)) < 500 * BYTES_PER_MS:
            events.append(await client.recv())
        assistant_id = of_type(events, "response.output_item.added")[0]["item"]["id"]
        talk = silence(200) + speech.pcm + silence(1000)
        sender = asyncio.create_task(stream_audio(client, talk, chunk_ms=20, speedup=8))
        try:
            events += await client.collect_until("response.done")
        finally:
            await sender
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
        done = events[-1]["response"]
        assert done["id"] == response_id
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        received = audio_of(events)
        received_ms = len(received) / BYTES_PER_MS
        assert received_ms < 60 * len(LONG_REPLY), "the answer was not interrupted"
        full_transcript = LONG_REPLY

        # The client played only part of what it received and truncates there.
        played_ms = int(received_ms // 2)
        await client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": assistant_id,
                "content_index": 0,
                "audio_end_ms": played_ms,
            }
        )
        after = await client.collect_until("conversation.item.truncated")
        truncated = after[-1]
        assert truncated["item_id"] == assistant_id
        assert truncated["content_index"] == 0
        assert truncated["audio_end_ms"] == played_ms

        await client.send({"type": "conversation.item.retrieve", "item_id": assistant_id})
        after += await client.collect_until("conversation.item.retrieved")
        item = after[-1]["item"]
        assert item["id"] == assistant_id
        assert item["status"] == "incomplete"
        part = item["content"][0]
        assert part["type"] == "output_audio"
        audio = base64.b64decode(part["audio"])
        assert abs(len(audio) / BYTES_PER_MS - played_ms) <= 1, (len(audio), played_ms)
        assert audio == received[: len(audio)]
        assert full_transcript.startswith(part["transcript"]), part["transcript"]
        assert len(part["transcript"]) < len(full_transcript)

        # The interruption goes on as a new turn (cut short here to keep the test quick);
        # the cancelled response sends nothing more.
        if not of_type(after, "response.created"):
            after += await client.collect_until("response.created")
        next_id = of_type(after, "response.created")[0]["response"]["id"]
        assert next_id != response_id
        await client.send({"type": "response.cancel"})
        after += await client.collect_until("response.done")
        assert after[-1]["response"]["id"] == next_id
        after += await client.drain(0.3)
        late = [
            e for e in after if e.get("response_id") == response_id and e["type"] != "response.done"
        ]
        assert late == [], [e["type"] for e in late]
        assert of_type(after, "input_audio_buffer.committed")
