"""Text, manual-audio, server-VAD and transcription-only turns through the official SDK.

Spec §5.2-§5.4 and §1.6. The VAD is the real Silero model, the speech is real (flite).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from tests.conformance.conftest import (
    BYTES_PER_MS,
    Connect,
    Speech,
    silence,
    stream_audio,
    tone,
)
from tests.core.sim import user_text

TEXT_TURN_ORDER_HEAD = [
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
TEXT_TURN_ORDER_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "rate_limits.updated",
]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def audio_ms(deltas: list[dict[str, Any]]) -> float:
    total = sum(len(base64.b64decode(d["delta"])) for d in deltas)
    assert total % 2 == 0, "audio deltas must hold whole PCM16 samples"
    return total / BYTES_PER_MS


async def test_text_turn_event_order_and_text(connect: Connect) -> None:
    async with connect() as client:
        await client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "output_modalities": ["text"]},
            }
        )
        await client.expect("session.updated")
        await client.send(user_text("Hello there"))
        await client.send({"type": "response.create"})
        events = await client.collect_until("rate_limits.updated")

        kinds = [e["type"] for e in events]
        deltas = of_type(events, "response.output_text.delta")
        assert deltas, kinds
        n = len(deltas)
        assert kinds == (
            TEXT_TURN_ORDER_HEAD + ["response.output_text.delta"] * n + TEXT_TURN_ORDER_TAIL
        ), kinds

        user_added, user_done, created = events[0], events[1], events[2]
        user_id = user_added["item"]["id"]
        assert user_added["item"]["role"] == "user"
        assert user_added["item"]["content"] == [{"type": "input_text", "text": "Hello there"}]
        assert user_done["item"]["id"] == user_id
        response = created["response"]
        assert response["status"] == "in_progress"
        assert response["output_modalities"] == ["text"]
        assert response["output"] == []
        assert response["conversation_id"].startswith("conv_")

        item_added, conv_added, part_added = events[3], events[4], events[5]
        assistant_id = item_added["item"]["id"]
        assert item_added["response_id"] == response["id"]
        assert item_added["item"]["status"] == "in_progress"
        assert item_added["item"]["role"] == "assistant"
        assert conv_added["item"]["id"] == assistant_id
        assert conv_added["previous_item_id"] == user_id
        assert part_added["part"] == {"type": "text", "text": ""}

        text = "".join(d["delta"] for d in deltas)
        assert text == "You said: Hello there"
        assert all(d["item_id"] == assistant_id for d in deltas)
        text_done, part_done, conv_done, item_done, done, limits = events[-6:]
        assert text_done["text"] == text
        assert part_done["part"] == {"type": "text", "text": text}
        final_item = {
            "id": assistant_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        }
        for event in (conv_done, item_done):
            assert {k: event["item"].get(k) for k in final_item} == final_item
        assert done["response"]["id"] == response["id"]
        assert done["response"]["status"] == "completed"
        assert done["response"]["status_details"] is None
        assert [o["id"] for o in done["response"]["output"]] == [assistant_id]
        usage = done["response"]["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["output_tokens"] > 0
        assert limits["rate_limits"] and limits["rate_limits"][0]["name"] in ("requests", "tokens")


async def test_manual_audio_turn_with_transcription(connect: Connect) -> None:
    async with connect() as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": None,
                            "transcription": {"model": "gpt-4o-mini-transcribe"},
                        }
                    },
                },
            }
        )
        await client.expect("session.updated")
        spoken = tone(1200)
        await stream_audio(client, spoken, chunk_ms=100, speedup=50)
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.expect("input_audio_buffer.committed")
        user_id = committed["item_id"]
        added = await client.expect("conversation.item.added")
        done = await client.expect("conversation.item.done")
        for event in (added, done):
            assert event["item"]["id"] == user_id
            assert event["item"]["role"] == "user"
            assert event["item"]["status"] == "completed"
            part = event["item"]["content"][0]
            assert part["type"] == "input_audio"
            assert "transcript" in part
        transcribed = await client.wait_for("conversation.item.input_audio_transcription.completed")
        assert transcribed["item_id"] == user_id
        assert transcribed["content_index"] == 0
        assert "1.2 seconds" in transcribed["transcript"], transcribed
        user_deltas = of_type(client.received, "conversation.item.input_audio_transcription.delta")
        if user_deltas:
            assert "".join(d["delta"] for d in user_deltas) == transcribed["transcript"]

        # Committing does not create a response: nothing else until response.create.
        assert not of_type(await client.drain(0.3), "response.created")
        await client.send({"type": "response.create"})
        events = await client.collect_until("response.done")
        response = events[-1]["response"]
        assert response["status"] == "completed"
        assert response["output_modalities"] == ["audio"]
        parts = of_type(events, "response.content_part.added")
        assert parts and parts[0]["part"] == {"type": "audio", "transcript": ""}

        audio = of_type(events, "response.output_audio.delta")
        transcript_deltas = of_type(events, "response.output_audio_transcript.delta")
        (transcript_done,) = of_type(events, "response.output_audio_transcript.done")
        (audio_done,) = of_type(events, "response.output_audio.done")
        transcript = transcript_done["transcript"]
        assert transcript == "".join(d["delta"] for d in transcript_deltas)
        assert transcript.startswith("You said: ") and "seconds" in transcript
        kinds = [e["type"] for e in events]
        assert kinds.index("response.output_audio.done") > max(
            i for i, k in enumerate(kinds) if k == "response.output_audio.delta"
        )
        assert audio_done["item_id"] == audio[0]["item_id"]
        # A plausible length for the spoken transcript: between 30 and 150 ms per character.
        duration = audio_ms(audio)
        assert 30 * len(transcript) <= duration <= 150 * len(transcript), (duration, transcript)
        (final,) = response["output"]
        assert final["content"][0]["type"] == "output_audio"
        assert final["content"][0]["transcript"] == transcript
        assert "audio" not in final["content"][0] or final["content"][0]["audio"] is None
        assert (await client.expect("rate_limits.updated"))["type"] == "rate_limits.updated"


async def test_server_vad_turn_on_real_speech(
    connect: Connect, speak: Callable[[str], Speech]
) -> None:
    speech = speak("What is the capital of France?")
    lead_ms, tail_ms = 500, 1500
    audio = silence(lead_ms) + speech.pcm + silence(tail_ms)
    onset = lead_ms + speech.onset_ms
    end = lead_ms + speech.end_ms
    async with connect() as client:
        session = client.received[0]["session"]
        vad = session["audio"]["input"]["turn_detection"]
        sender = asyncio.create_task(stream_audio(client, audio, chunk_ms=20, speedup=8))
        try:
            events = await client.collect_until("response.done")
        finally:
            await sender
        kinds = [e["type"] for e in events]
        (started,) = of_type(events, "input_audio_buffer.speech_started")
        (stopped,) = of_type(events, "input_audio_buffer.speech_stopped")
        (committed,) = of_type(events, "input_audio_buffer.committed")
        assert onset - 350 <= started["audio_start_ms"] <= onset, (started, onset)
        silence_ms = vad["silence_duration_ms"]
        assert end + silence_ms - 50 <= stopped["audio_end_ms"] <= end + silence_ms + 250, (
            stopped,
            end,
        )
        user_id = started["item_id"]
        assert stopped["item_id"] == user_id and committed["item_id"] == user_id
        order = [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
        ]
        assert [k for k in kinds if k in order][: len(order)] == order, kinds
        added = of_type(events, "conversation.item.added")[0]
        assert added["item"]["id"] == user_id
        assert added["item"]["content"][0]["type"] == "input_audio"
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["content"][0]["type"] == "output_audio"
        assert of_type(events, "response.output_audio.delta")
        await client.expect("rate_limits.updated")

        # The committed item holds the detected turn: from audio_start_ms to audio_end_ms.
        await client.send({"type": "conversation.item.retrieve", "item_id": user_id})
        item = (await client.expect("conversation.item.retrieved"))["item"]
        turn_ms = len(base64.b64decode(item["content"][0]["audio"])) / BYTES_PER_MS
        expected_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
        assert abs(turn_ms - expected_ms) <= 40, (turn_ms, expected_ms)


async def test_transcription_session_transcribes_a_vad_turn(
    connect: Connect, speak: Callable[[str], Speech]
) -> None:
    speech = speak("What is the capital of France?")
    audio = silence(500) + speech.pcm + silence(1200)
    async with connect(model=None, extra_query={"intent": "transcription"}) as client:
        created = client.received[0]["session"]
        assert created["type"] == "transcription"
        assert created["object"] == "realtime.transcription_session"
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
        updated = (await client.expect("session.updated"))["session"]
        assert updated["type"] == "transcription"
        assert updated["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
        sender = asyncio.create_task(stream_audio(client, audio, chunk_ms=20, speedup=8))
        try:
            events = await client.collect_until(
                "conversation.item.input_audio_transcription.completed"
            )
        finally:
            await sender
        events += await client.drain(0.5)
        kinds = [e["type"] for e in events]
        (committed,) = of_type(events, "input_audio_buffer.committed")
        (completed,) = of_type(events, "conversation.item.input_audio_transcription.completed")
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
            "input_audio_buffer.committed"
        )
        assert completed["item_id"] == committed["item_id"]
        assert completed["transcript"].strip(), completed
        assert completed["usage"]["type"] in ("tokens", "duration")
        assert not [k for k in kinds if k.startswith("response.") or k == "rate_limits.updated"], (
            kinds
        )
