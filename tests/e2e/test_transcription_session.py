"""A transcription-only session (``?intent=transcription``) transcribes two spoken turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conformance.conftest import Speech, sdk_client, silence, stream_audio
from tests.e2e.conftest import EmbeddedServer, of_type

COMPLETED = "conversation.item.input_audio_transcription.completed"


async def test_transcription_session_transcribes_two_turns(
    embedded: EmbeddedServer, speak: Callable[[str], Speech]
) -> None:
    first = speak("How many people live in New York City?")
    second = speak("Please turn off the lights in the kitchen.")
    async with sdk_client(
        embedded.base, model=None, extra_query={"intent": "transcription"}
    ) as client:
        assert client.received[0]["session"]["type"] == "transcription"
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "transcription": {"model": "gpt-4o-mini-transcribe"},
                            "turn_detection": {"type": "server_vad"},
                        }
                    },
                },
            }
        )
        await client.expect("session.updated")
        audio = silence(300) + first.pcm + silence(1000) + second.pcm + silence(1000)
        sender = asyncio.create_task(stream_audio(client, audio, speedup=4))
        try:
            events = await client.collect_until(COMPLETED, wait_s=10)
            events += await client.collect_until(COMPLETED, wait_s=10)
        finally:
            await sender
        events += await client.drain(0.5)

    committed = of_type(events, "input_audio_buffer.committed")
    completed = of_type(events, COMPLETED)
    assert len(committed) == 2 and len(completed) == 2, [e["type"] for e in events]
    assert [c["item_id"] for c in completed] == [c["item_id"] for c in committed]
    one, two = (c["transcript"].lower() for c in completed)
    assert "new york" in one and "people" in one, one
    assert "lights" in two and "kitchen" in two, two
    assert not [e["type"] for e in events if e["type"].startswith("response.")]
