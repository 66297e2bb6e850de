"""Fixtures of the end-to-end conformance tests: the real server, the official SDK client.

Every test starts the real app (``create_app`` + the real session driver) on a free loopback
port and drives it with ``openai.AsyncOpenAI(...).realtime.connect(...)``. Every server event a
test receives goes through :class:`Client`, which validates it with the SDK's own
``RealtimeServerEvent`` union (spec §8.2) before the test sees it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from openrealtime.app import create_app
from openrealtime.audio.resample import resample
from openrealtime.backends.base import Engines, SpeechToText, TurnDetector
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.config import Config
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server

API_KEY = "sk-conformance-e2e-0123456789abcdef"
"""The key every conformance server accepts."""

RATE = 24000
"""Session audio rate (PCM16 mono, spec §3.1)."""

BYTES_PER_MS = RATE * 2 // 1000
"""PCM16 bytes per millisecond of 24 kHz audio."""

WAIT_S = 5.0
"""Longest any single expected event may take."""


EVENT_ID = re.compile(r"^event_[0-9A-Za-z]{21}$")
"""Server event ids: ``event_`` and 21 base62 characters (spec §2.1)."""


# --------------------------------------------------------------------------- client


class Client:
    """One SDK connection whose every received event is validated and recorded.

    ``received`` keeps every event (as the raw JSON dict) in arrival order.
    """

    def __init__(self, conn: Any, *, wait_s: float = WAIT_S) -> None:
        self.conn = conn
        self.wait_s = wait_s
        self.received: list[dict[str, Any]] = []
        self._event_ids: set[str] = set()

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event through the SDK (``conn.send``)."""
        await self.conn.send(event)

    async def recv(self, wait_s: float | None = None) -> dict[str, Any]:
        """The next server event, validated by the SDK's discriminated union."""
        async with asyncio.timeout(self.wait_s if wait_s is None else wait_s):
            raw = await self.conn.recv_bytes()
        event = json.loads(raw)
        assert isinstance(event, dict), f"server event is not an object: {raw!r}"
        SERVER_EVENT.validate_python(event)
        if event["type"] != "input_audio_buffer.dtmf_event_received":  # the one without an id
            event_id = event.get("event_id")
            assert isinstance(event_id, str) and EVENT_ID.match(event_id), event
            assert event_id not in self._event_ids, f"duplicate event_id: {event}"
            self._event_ids.add(event_id)
        self.received.append(event)
        return event

    async def expect(self, kind: str, wait_s: float | None = None) -> dict[str, Any]:
        """The next event, which must be of type ``kind``."""
        event = await self.recv(wait_s)
        assert event["type"] == kind, f"expected {kind}, got {event}"
        return event

    async def collect_until(
        self, kind: str, wait_s: float | None = None, *, allow_errors: bool = False
    ) -> list[dict[str, Any]]:
        """Every event up to and including the first of type ``kind``.

        ``wait_s`` bounds each wait (not the whole collection). An ``error`` event fails the
        test unless ``allow_errors`` (or ``kind == "error"``).
        """
        events: list[dict[str, Any]] = []
        while True:
            try:
                event = await self.recv(wait_s)
            except TimeoutError:
                seen = [e["type"] for e in events]
                raise AssertionError(f"no {kind} within the wait; got {seen}") from None
            events.append(event)
            if event["type"] == kind:
                return events
            if event["type"] == "error" and not allow_errors:
                raise AssertionError(f"unexpected error while waiting for {kind}: {event}")

    async def wait_for(self, kind: str, wait_s: float | None = None) -> dict[str, Any]:
        """The first event of type ``kind`` (others are skipped but still validated)."""
        return (await self.collect_until(kind, wait_s))[-1]

    async def drain(self, quiet_s: float = 0.3) -> list[dict[str, Any]]:
        """Every event until the server has been quiet for ``quiet_s``."""
        events: list[dict[str, Any]] = []
        while True:
            try:
                events.append(await self.recv(quiet_s))
            except TimeoutError:
                return events


Connect = Callable[..., AbstractAsyncContextManager[Client]]


@asynccontextmanager
async def sdk_client(base: str, *, read_created: bool = True, **connect_kwargs: Any) -> Any:
    """Open ``AsyncOpenAI(base_url=base/v1).realtime.connect(**connect_kwargs)`` as a Client."""
    connect_kwargs.setdefault("model", "gpt-realtime")
    if connect_kwargs["model"] is None:
        del connect_kwargs["model"]
    api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY)
    try:
        async with api.realtime.connect(**connect_kwargs) as conn:
            client = Client(conn)
            if read_created:
                created = await client.recv()
                assert created["type"] == "session.created", created
            yield client
    finally:
        await api.close()


# --------------------------------------------------------------------------- engines, server


@pytest.fixture(scope="session")
def silero() -> SileroVad:
    """The real Silero VAD (the pinned model, fetched once into the cache)."""
    return SileroVad.from_cache()


def engines_with(
    vad: SileroVad,
    *,
    stt: SpeechToText | None = None,
    llm: FakeLanguageModel | None = None,
    tts: FakeTextToSpeech | None = None,
    turn: TurnDetector | None = None,
) -> Engines:
    """Real Silero VAD plus the deterministic fakes (each overridable)."""
    return Engines(
        vad=vad,
        stt=stt or FakeSpeechToText(),
        llm=llm or FakeLanguageModel(),
        tts=tts or FakeTextToSpeech(),
        turn=turn,
    )


ServerFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_server(silero: SileroVad) -> AsyncIterator[ServerFactory]:
    """``await start_server(stt=..., llm=..., tts=...)`` -> base URL of a fresh real server."""
    stack: list[AbstractAsyncContextManager[str]] = []

    async def start(**engine_overrides: Any) -> str:
        config = Config(api_keys=(API_KEY,))
        app = create_app(config, engines_with(silero, **engine_overrides))
        cm = running_server(app)
        base = await cm.__aenter__()
        stack.append(cm)
        return base

    yield start
    while stack:
        await stack.pop().__aexit__(None, None, None)


@pytest.fixture
async def server(start_server: ServerFactory) -> str:
    """A real server with the default fake engines."""
    return await start_server()


@pytest.fixture
def connect(server: str) -> Connect:
    """``async with connect(**kw) as client`` on the default server (session.created read)."""

    def _connect(**kwargs: Any) -> AbstractAsyncContextManager[Client]:
        return sdk_client(server, **kwargs)  # type: ignore[no-any-return]

    return _connect


# --------------------------------------------------------------------------- audio


def b64(pcm: bytes) -> str:
    """Base64 text of audio bytes."""
    return base64.b64encode(pcm).decode("ascii")


def silence(ms: int) -> bytes:
    """``ms`` of 24 kHz PCM16 silence."""
    return bytes(ms * BYTES_PER_MS)


def tone(ms: int, hz: float = 440.0, amplitude: float = 0.3) -> bytes:
    """``ms`` of a 24 kHz PCM16 sine."""
    t = np.arange(ms * RATE // 1000) / RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


async def stream_audio(
    client: Client, pcm: bytes, *, chunk_ms: int = 20, speedup: float = 8.0
) -> None:
    """Append ``pcm`` in ``chunk_ms`` pieces, paced at ``speedup`` times real time."""
    step = chunk_ms * BYTES_PER_MS
    for start in range(0, len(pcm), step):
        await client.send(
            {"type": "input_audio_buffer.append", "audio": b64(pcm[start : start + step])}
        )
        await asyncio.sleep(chunk_ms / 1000 / speedup)


@dataclass(frozen=True)
class Speech:
    """Real synthesized speech at 24 kHz, with where the voice is (from the signal's energy)."""

    text: str
    pcm: bytes
    onset_ms: float
    end_ms: float

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / BYTES_PER_MS


def _energy_bounds(pcm: bytes, frame_ms: int = 10) -> tuple[float, float]:
    """First and last 10 ms frame whose RMS is within 35 dB of the loudest frame."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    step = RATE * frame_ms // 1000
    frames = samples[: len(samples) - len(samples) % step].reshape(-1, step)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > max(rms.max() * 10 ** (-35 / 20), 100.0))[0]
    assert loud.size, "synthesized speech is silent"
    return float(loud[0] * frame_ms), float((loud[-1] + 1) * frame_ms)


_SPEECH_CACHE: dict[str, Speech] = {}


def flite_speech(text: str, tmp_dir: Path) -> Speech:
    """Speak ``text`` with Debian's ``flite`` (voice rms), resampled to 24 kHz PCM16."""
    if text in _SPEECH_CACHE:
        return _SPEECH_CACHE[text]
    if shutil.which("flite") is None:
        if os.environ.get("CI"):
            pytest.fail("flite is required in CI (apt-get install flite)")
        pytest.skip("flite is not installed (apt-get install flite); the speech tests need it")
    path = tmp_dir / f"speech-{len(_SPEECH_CACHE)}.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    pcm = resample(raw, rate, RATE)
    onset, end = _energy_bounds(pcm)
    speech = Speech(text, pcm, onset, end)
    _SPEECH_CACHE[text] = speech
    return speech


@pytest.fixture(scope="session")
def speak(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Speech]:
    """``speak(text)`` -> :class:`Speech` (skips/fails per the flite policy)."""
    tmp = tmp_path_factory.mktemp("flite")
    return lambda text: flite_speech(text, tmp)
