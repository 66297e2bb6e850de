"""A spoken question, answered in speech, over a real socket with the official SDK.

The question is real speech (flite, voice ``rms``) streamed into a ``server_vad`` session that
creates the response itself, as a voice app would. The server runs the embedded engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest_asyncio

from tests.conformance.conftest import BYTES_PER_MS, Speech, sdk_client, silence, stream_audio
from tests.e2e.conftest import EmbeddedServer, audio_of, of_type, transcribe

QUESTION = "What is the capital of France?"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def spoken_turn(
    embedded: EmbeddedServer, speak: Callable[[str], Speech]
) -> list[dict[str, Any]]:
    """Every event of one spoken turn, up to the answer's ``response.done`` (then 0.3 s more)."""
    speech = speak(QUESTION)
    async with sdk_client(embedded.base) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "create_response": True},
                        }
                    },
                },
            }
        )
        await client.expect("session.updated")
        audio = silence(300) + speech.pcm + silence(1000)
        sender = asyncio.create_task(stream_audio(client, audio, speedup=4))
        try:
            events: list[dict[str, Any]] = await client.collect_until("response.done", wait_s=20)
        finally:
            await sender
        events += await client.drain(0.3)
    return events


def test_user_transcript_is_the_question(spoken_turn: list[dict[str, Any]]) -> None:
    (committed,) = of_type(spoken_turn, "input_audio_buffer.committed")
    (completed,) = of_type(spoken_turn, "conversation.item.input_audio_transcription.completed")
    assert completed["item_id"] == committed["item_id"]
    words = completed["transcript"].lower()
    assert "capital" in words and "france" in words, completed["transcript"]


def test_response_is_spoken_with_a_transcript(spoken_turn: list[dict[str, Any]]) -> None:
    (created,) = of_type(spoken_turn, "response.created")
    done = of_type(spoken_turn, "response.done")[0]["response"]
    assert done["id"] == created["response"]["id"]
    assert done["status"] == "completed", done
    audio = audio_of(spoken_turn, done["id"])
    assert len(audio) > 300 * BYTES_PER_MS, f"only {len(audio) / BYTES_PER_MS:.0f} ms of audio"
    (transcript_done,) = of_type(spoken_turn, "response.output_audio_transcript.done")
    transcript = transcript_done["transcript"]
    assert transcript.strip(), transcript_done
    deltas = of_type(spoken_turn, "response.output_audio_transcript.delta")
    assert "".join(d["delta"] for d in deltas) == transcript
    (message,) = done["output"]
    assert message["role"] == "assistant"
    assert message["content"][0]["type"] == "output_audio"
    assert message["content"][0]["transcript"] == transcript
    kinds = [e["type"] for e in spoken_turn]
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("response.created")
    assert kinds.index("response.output_audio.delta") < kinds.index("response.done")


async def test_response_audio_is_speech(
    spoken_turn: list[dict[str, Any]], embedded: EmbeddedServer
) -> None:
    audio = audio_of(spoken_turn)
    heard = await transcribe(embedded.engines, audio)
    assert heard.split(), "the answer's audio transcribes to nothing"
