"""A speakerphone over the WebSocket: the server does not take its own voice for the user.

The client is the official SDK with a simulated loudspeaker and microphone, both in real time:
the answer's audio deltas play from a queue, 20 ms per tick, and the microphone sends, every
tick, the echo of what the loudspeaker played 120 ms earlier at −12 dB through a short room
response, plus quiet room noise (−60 dBFS), plus the user's speech when the scenario says so.
Like the official clients, the loudspeaker stops on ``input_audio_buffer.speech_started``.

Engines: the real Silero VAD, espeak-ng speaking a fixed reply (a long sentence, so the answer
plays for several seconds), the server's real echo canceller (``--echo-cancellation on``, the
default); the same session against a server with it off shows what the test catches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest_asyncio

from openrealtime.app import create_app
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import FakeLanguageModel
from openrealtime.config import Config
from tests.conformance.conftest import API_KEY, Speech, b64, sdk_client
from tests.e2e.conftest import EmbeddedServer
from tests.helpers.server import running_server

TICK_S = 0.02
FRAME = 480 * 2  # 20 ms of PCM16 at 24 kHz
ANSWER = (
    "Here is the forecast for the whole week. Monday and Tuesday stay sunny and warm, with a "
    "light breeze from the west. On Wednesday clouds come in from the sea, and by Thursday "
    "evening there may be some rain in the hills. The weekend looks bright again."
)
SESSION = {
    "type": "realtime",
    "audio": {
        "input": {
            "turn_detection": {
                "type": "server_vad",
                "create_response": True,
                "interrupt_response": True,
            }
        }
    },
}


@dataclass
class Speakerphone:
    """A client's loudspeaker and microphone sharing one 20 ms clock."""

    echo_db: float = -12.0
    delay_ms: int = 120
    speaker: bytearray = field(default_factory=bytearray)
    """Assistant audio waiting to play."""
    played: list[np.ndarray] = field(default_factory=list)
    """What the loudspeaker played, one 20 ms frame per tick (silence included)."""
    user: bytearray = field(default_factory=bytearray)
    """The user's speech waiting to be spoken into the microphone."""
    ticks: int = 0
    speaking_ticks: list[int] = field(default_factory=list)
    """Ticks at which the loudspeaker played assistant audio."""
    user_ticks: list[int] = field(default_factory=list)
    """Ticks at which the user spoke (non-silent speech samples)."""

    def tick(self, rng: np.random.Generator) -> bytes:
        """Play 20 ms and return the 20 ms the microphone heard meanwhile."""
        out = bytes(self.speaker[:FRAME])
        del self.speaker[:FRAME]
        frame = np.zeros(FRAME // 2, np.float32)
        if out:
            frame[: len(out) // 2] = np.frombuffer(out, np.int16) / 32768
            self.speaking_ticks.append(self.ticks)
        self.played.append(frame)
        mic = rng.normal(0, 10 ** (-60 / 20), FRAME // 2).astype(np.float32)
        lag = self.delay_ms // 20
        if len(self.played) > lag:
            room = np.convolve(self.played[-lag - 1], [0.6, 0.25, 0.1, 0.05])[: FRAME // 2]
            mic += room * 10 ** (self.echo_db / 20)
        if self.user:
            said = np.frombuffer(bytes(self.user[:FRAME]), np.int16) / 32768
            del self.user[:FRAME]
            mic[: len(said)] += said
            if np.abs(said).max() > 0.05:
                self.user_ticks.append(self.ticks)
        self.ticks += 1
        return (np.clip(mic, -1, 1) * 32767).astype(np.int16).tobytes()


@dataclass
class Call:
    client: Any
    phone: Speakerphone
    events: list[tuple[int, dict[str, Any]]]
    """Every server event with the tick it arrived at."""

    def of_type(self, kind: str) -> list[tuple[int, dict[str, Any]]]:
        return [(t, e) for t, e in self.events if e["type"] == kind]

    async def wait_for(self, kind: str, after: int = 0, wait_s: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(wait_s):
            while True:
                for i, (_, event) in enumerate(self.events):
                    if i >= after and event["type"] == kind:
                        return event
                await asyncio.sleep(0.05)

    async def quiet_speaker(self, wait_s: float = 60) -> None:
        async with asyncio.timeout(wait_s):
            while self.phone.speaker:  # noqa: ASYNC110 - the speaker is a plain buffer
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def speakerphone_call(base: str, phone: Speakerphone) -> AsyncIterator[Call]:
    async with sdk_client(base) as client:
        await client.send({"type": "session.update", "session": SESSION})
        await client.expect("session.updated")
        call = Call(client, phone, [])
        rng = np.random.default_rng(7)

        async def microphone() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            while True:
                await client.send(
                    {"type": "input_audio_buffer.append", "audio": b64(phone.tick(rng))}
                )
                await asyncio.sleep(max(0.0, start + phone.ticks * TICK_S - loop.time()))

        async def events() -> None:
            while True:
                event = await client.recv(wait_s=3600)
                call.events.append((phone.ticks, event))
                if event["type"] == "response.output_audio.delta":
                    phone.speaker += base64.b64decode(event["delta"])
                elif event["type"] == "input_audio_buffer.speech_started":
                    phone.speaker.clear()  # like the official clients: stop playing

        tasks = [asyncio.create_task(microphone()), asyncio.create_task(events())]
        try:
            yield call
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def echo_servers(embedded: EmbeddedServer) -> AsyncIterator[dict[bool, str]]:
    """Two servers on the embedded VAD/STT/TTS with a fixed reply: canceller on and off."""
    engines = Engines(
        vad=embedded.engines.vad,
        stt=embedded.engines.stt,
        llm=FakeLanguageModel(reply=ANSWER),
        tts=embedded.engines.tts,
    )
    async with contextlib.AsyncExitStack() as stack:
        bases = {}
        for on in (True, False):
            config = Config(api_keys=(API_KEY,), echo_cancellation=on)
            bases[on] = await stack.enter_async_context(running_server(create_app(config, engines)))
        yield bases


async def answer(call: Call) -> tuple[dict[str, Any], list[int]]:
    """Ask for an answer (text item + response.create) and let it play out.

    Returns its ``response.done`` and the ticks of every ``speech_started`` meanwhile.
    """
    mark = len(call.events)
    await call.client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What is the weather this week?"}],
            },
        }
    )
    await call.client.send({"type": "response.create"})
    done = await call.wait_for("response.done", after=mark)
    await call.quiet_speaker()
    await asyncio.sleep(0.6)  # the echo of the last words, and the VAD's reaction
    started = [t for t, e in call.events[mark:] if e["type"] == "input_audio_buffer.speech_started"]
    return done["response"], started


async def test_a_speakerphone_does_not_interrupt_its_own_answers(
    echo_servers: dict[bool, str],
) -> None:
    phone = Speakerphone(echo_db=-12, delay_ms=120)
    async with speakerphone_call(echo_servers[True], phone) as call:
        for _ in range(3):
            response, started = await answer(call)
            assert response["status"] == "completed", response["status_details"]
            assert started == [], f"the server heard its own voice at ticks {started}"
        assert not phone.user_ticks
        assert len(phone.speaking_ticks) > 3 * 5 / TICK_S  # three answers of 5 s or more


async def test_without_the_canceller_the_same_speakerphone_interrupts_itself(
    echo_servers: dict[bool, str],
) -> None:
    """What the test above would catch: the echo alone starts a user turn."""
    phone = Speakerphone(echo_db=-12, delay_ms=120)
    async with speakerphone_call(echo_servers[False], phone) as call:
        response, started = await answer(call)
        assert started, "the echo was expected to be taken for speech without the canceller"
        assert not phone.user_ticks


async def test_the_user_still_interrupts_the_answer_on_a_speakerphone(
    echo_servers: dict[bool, str], speak: Callable[[str], Speech]
) -> None:
    stop = speak("Stop. What time is it?")
    phone = Speakerphone(echo_db=-12, delay_ms=120)
    async with speakerphone_call(echo_servers[True], phone) as call:
        await answer(call)  # a first answer lets the canceller learn the room
        mark = len(call.events)
        await call.client.send({"type": "response.create"})
        await call.wait_for("response.output_audio.delta", after=mark)
        await asyncio.sleep(2.0)  # two seconds into the answer, the user talks over it
        onset_tick = phone.ticks + int(stop.onset_ms / 20)
        phone.user += stop.pcm
        started = await call.wait_for("input_audio_buffer.speech_started", after=mark, wait_s=10)
        tick = next(t for t, e in call.events[mark:] if e is started)
        # Onset to speech_started on the client, in ticks: the VAD's reaction plus transport
        # (about 200-250 ms with no echo at all).
        assert (tick - onset_tick) * 20 < 500, (tick, onset_tick)
        assert not phone.speaker  # the loudspeaker stopped
        # The user's words are the next turn, answered in turn.
        stopped = await call.wait_for("input_audio_buffer.speech_stopped", after=mark)
        after = next(i for i, (_, e) in enumerate(call.events) if e is stopped)
        await call.wait_for("response.created", after=after, wait_s=20)
