"""Full sessions with ``faster-whisper-server`` as the remote STT (issue 11, item 1).

The official SDK talks to openrealtime; openrealtime's ``openai-compatible`` STT engine posts
each committed turn over real HTTP to ``faster-whisper-server`` (a third-party PyPI server),
which runs the pinned Whisper tiny.en. Differences from OpenAI's API met on the way are in
docs/engines.md ("faster-whisper-server").
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from openrealtime.backends.fake import FakeLanguageModel
from openrealtime.backends.stt_openai_compat import OpenAICompatibleSTT
from tests.conformance.conftest import ServerFactory, Speech, sdk_client, stream_audio
from tests.helpers.third_party import whisper_server

COMPLETED = "conversation.item.input_audio_transcription.completed"
SENTENCES = ("What do bees make?", "Please turn off the kitchen lights.")


@pytest.fixture(scope="module")
def stt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with whisper_server(tmp_path_factory.mktemp("fws")) as url:
        yield url


@pytest.fixture
async def base(start_server: ServerFactory, stt_url: str) -> AsyncIterator[str]:
    stt = OpenAICompatibleSTT(stt_url, "whisper-1")
    yield await start_server(stt=stt, llm=FakeLanguageModel())
    await stt.aclose()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def test_a_transcription_session(base: str, speak: Callable[[str], Speech]) -> None:
    async with sdk_client(base, model=None, extra_query={"intent": "transcription"}) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": None,
                        }
                    },
                },
            }
        )
        await client.expect("session.updated")
        for text in SENTENCES:
            await stream_audio(client, bytes(9600) + speak(text).pcm + bytes(9600), speedup=8)
            await client.send({"type": "input_audio_buffer.commit"})
            events = await client.collect_until(COMPLETED, wait_s=30)
            assert words(events[-1]["transcript"]) == words(text), events[-1]


async def test_a_spoken_turn_is_heard_and_answered(
    base: str, speak: Callable[[str], Speech]
) -> None:
    """Input transcription in a realtime session: the answer (the echoing fake model) gets
    the words the third-party server heard."""
    async with sdk_client(base) as client:
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": None,
                        }
                    },
                },
            }
        )
        await client.expect("session.updated")
        await stream_audio(client, bytes(9600) + speak(SENTENCES[0]).pcm + bytes(9600), speedup=8)
        await client.send({"type": "input_audio_buffer.commit"})
        await client.send({"type": "response.create"})
        events = await client.collect_until("response.done", wait_s=30)
        while not any(e["type"] == COMPLETED for e in events):
            events.append(await client.recv(30))
    (completed,) = [e for e in events if e["type"] == COMPLETED]
    assert words(completed["transcript"]) == words(SENTENCES[0])
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed", done
