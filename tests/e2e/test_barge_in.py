"""Barge-in: the user speaks over a spoken answer and the answer stops (embedded engines).

The session asks the model for long stories, and the interrupting speech (flite) starts as
soon as the first audio delta of the answer arrives, streamed in real time, so the answer is
still being generated and sent when the user talks; server_vad's ``interrupt_response`` then
cancels it with reason ``turn_detected`` and nothing more of it is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conformance.conftest import Speech, sdk_client, silence, stream_audio
from tests.e2e.conftest import EmbeddedServer, audio_of, of_type

STORYTELLER = (
    "You are a storyteller. Whatever the user says, answer with a very long and detailed "
    "story of at least twenty sentences."
)


async def test_barge_in_cancels_the_spoken_answer(
    embedded: EmbeddedServer, speak: Callable[[str], Speech]
) -> None:
    question = speak("Tell me a long story about a dragon.")
    interruption = speak("Stop. What time is it?")
    async with sdk_client(embedded.base) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": STORYTELLER,
                    "audio": {
                        "input": {
                            "turn_detection": {
                                "type": "server_vad",
                                "create_response": True,
                                "interrupt_response": True,
                            }
                        }
                    },
                },
            }
        )
        await client.expect("session.updated")
        await stream_audio(client, silence(300) + question.pcm + silence(800), speedup=4)
        events = await client.collect_until("response.output_audio.delta", wait_s=20)
        response_id = of_type(events, "response.created")[0]["response"]["id"]

        # The answer has started: talk over it, in real time.
        sender = asyncio.create_task(
            stream_audio(client, interruption.pcm + silence(800), speedup=1)
        )
        try:
            events += await client.collect_until("response.done", wait_s=20)
            done = events[-1]["response"]
            assert done["id"] == response_id
            assert done["status"] == "cancelled", done
            assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            kinds = [e["type"] for e in events]
            assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
            (message,) = done["output"]
            assert message["status"] == "incomplete"
            assert audio_of(events, response_id), "no audio of the answer before the barge-in"

            # The interruption is the next turn; nothing more of the cancelled answer arrives.
            events += await client.collect_until("input_audio_buffer.committed", wait_s=10)
        finally:
            await sender
        after = await client.collect_until("response.created", wait_s=20)
        await client.send({"type": "response.cancel"})  # the story would take a while
        after += await client.collect_until("response.done", wait_s=20)
        after += await client.drain(0.5)
        late = [
            e["type"]
            for e in events[events.index(of_type(events, "response.done")[0]) + 1 :] + after
            if e.get("response_id") == response_id or e.get("response", {}).get("id") == response_id
        ]
        assert late == [], late
