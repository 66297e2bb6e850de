"""semantic_vad on real speech with the real Smart Turn model, over a real socket.

A finished sentence ends the turn soon after the voice stops; a phrase left hanging ("My
favourite colour is um") holds the turn open until the eagerness level's max wait (high: 2 s).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from openrealtime.backends.turn_smart import SmartTurnDetector
from tests.conformance.conftest import (
    ServerFactory,
    Speech,
    sdk_client,
    silence,
    stream_audio,
)

SEMANTIC_HIGH = {
    "type": "realtime",
    "audio": {
        "input": {
            "turn_detection": {
                "type": "semantic_vad",
                "eagerness": "high",
                "create_response": False,
            }
        }
    },
}


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurnDetector:
    return SmartTurnDetector.from_cache()


async def _turn_end_after_voice(
    start_server: ServerFactory, smart_turn: SmartTurnDetector, speech: Speech
) -> float:
    base = await start_server(turn=smart_turn)
    async with sdk_client(base) as client:
        client.wait_s = 10.0
        await client.send({"type": "session.update", "session": SEMANTIC_HIGH})
        await client.expect("session.updated")
        audio = silence(500) + speech.pcm + silence(3000)
        await stream_audio(client, audio, speedup=2.0)
        started = await client.wait_for("input_audio_buffer.speech_started")
        stopped = await client.wait_for("input_audio_buffer.speech_stopped")
        assert stopped["item_id"] == started["item_id"]
        return float(stopped["audio_end_ms"]) - (500 + speech.end_ms)


async def test_a_finished_sentence_ends_the_turn_quickly(
    start_server: ServerFactory,
    smart_turn: SmartTurnDetector,
    speak: Callable[[str], Speech],
) -> None:
    waited = await _turn_end_after_voice(
        start_server, smart_turn, speak("My favourite colour is um, probably blue.")
    )
    assert 150 <= waited < 1500, waited


async def test_an_unfinished_phrase_waits_for_the_max_wait(
    start_server: ServerFactory,
    smart_turn: SmartTurnDetector,
    speak: Callable[[str], Speech],
) -> None:
    waited = await _turn_end_after_voice(
        start_server, smart_turn, speak("My favourite colour is um")
    )
    assert 1900 <= waited <= 2400, waited
