"""Shared helpers of the error and limit conformance tests (spec §6, §7).

Every test runs the real app (``create_app`` + the real session driver) on a free loopback port
and talks to it with a real client: the official ``openai`` SDK where it can send the frame,
else the ``websockets`` client with the same Bearer header. Every frame the server sends is
validated against the SDK's own ``RealtimeServerEvent`` union (spec §8.2).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openrealtime.app import create_app
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from openrealtime.backends.vad_energy import EnergyVad
from openrealtime.config import Config
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server, ws_url

__all__ = [
    "EVENT_ID",
    "KEY",
    "NOT_OVER_WEBSOCKET",
    "SERVER_EVENT",
    "Session",
    "alive",
    "check_event",
    "fake_engines",
    "raw_session",
    "sdk_session",
    "serve",
]

KEY = "sk-conformance-0123456789abcdefKEY1"
"""The API key every conformance server accepts."""

RECV_TIMEOUT = 10.0
"""Seconds any single expected event may take (generous for a loaded CI machine)."""


EVENT_ID = re.compile(r"^event_[A-Za-z0-9]{21}$")
"""Server event ids: ``event_`` plus 21 base62 characters (spec §2.1)."""

NOT_OVER_WEBSOCKET = frozenset(
    {
        "conversation.created",  # in the SDK union, not sent by the GA service (spec §1.1)
        "conversation.item.created",  # beta name; GA sends conversation.item.added/.done
        "output_audio_buffer.started",  # WebRTC/SIP only
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "input_audio_buffer.dtmf_event_received",  # SIP only
        "conversation.item.input_audio_transcription.segment",  # diarization models only
        "mcp_list_tools.in_progress",  # no remote MCP tools on this server
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)
"""SDK server-event types this server never sends over a WebSocket (docs/conformance.md)."""


def check_event(raw: str | bytes) -> dict[str, Any]:
    """Decode one server frame and validate it with the SDK's models; return the JSON.

    Also checks the ``event_id`` shape and that the type is one a WebSocket session may carry.
    """
    assert isinstance(raw, str | bytes), f"unexpected frame {raw!r}"
    data = json.loads(raw)
    assert isinstance(data, dict), f"server event is not an object: {raw!r}"
    SERVER_EVENT.validate_python(data)
    assert data["type"] not in NOT_OVER_WEBSOCKET, data
    assert EVENT_ID.match(data["event_id"]), data
    return data


def fake_engines(
    *,
    llm: FakeLanguageModel | None = None,
    tts: FakeTextToSpeech | None = None,
    stt: FakeSpeechToText | None = None,
) -> Engines:
    """The energy VAD and the fake STT/LLM/TTS (overridable one by one)."""
    return Engines(
        vad=EnergyVad(),
        stt=stt or FakeSpeechToText(),
        llm=llm or FakeLanguageModel(),
        tts=tts or FakeTextToSpeech(),
    )


@asynccontextmanager
async def serve(
    config: Config | None = None,
    engines: Engines | None = None,
    *,
    session_runner: Any = None,
) -> AsyncIterator[str]:
    """Run the real app on a free port; yield its base URL (``http://127.0.0.1:PORT``)."""
    config = config if config is not None else Config(api_keys=(KEY,), vad="energy")
    app = create_app(config, engines or fake_engines(), session_runner=session_runner)
    async with running_server(app) as base:
        yield base


class Session:
    """One client connection: send JSON (or raw frames), receive validated events.

    Every received event is kept in :attr:`received`, in order.
    """

    def __init__(
        self,
        send: Callable[[Any], Awaitable[None]],
        recv: Callable[[], Awaitable[str | bytes]],
        *,
        send_raw: Callable[[str | bytes], Awaitable[None]] | None = None,
        ws: ClientConnection | None = None,
    ) -> None:
        self._send = send
        self._recv = recv
        self._send_raw = send_raw
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._event_ids: set[str] = set()

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        """Send a client event: a dict as JSON; ``str``/``bytes`` as a raw text/binary frame."""
        if isinstance(event, dict):
            await self._send(event)
        else:
            assert self._send_raw is not None, "raw frames need a raw_session"
            await self._send_raw(event)

    async def recv(self, wait_s: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next server event, validated by the SDK's models."""
        async with asyncio.timeout(wait_s):
            event = check_event(await self._recv())
        assert event["event_id"] not in self._event_ids, f"duplicate event_id: {event}"
        self._event_ids.add(event["event_id"])
        self.received.append(event)
        return event

    async def recv_until(
        self, kind: str, wait_s: float = RECV_TIMEOUT
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read until an event of type ``kind``; return it and the events read before it."""
        skipped: list[dict[str, Any]] = []
        async with asyncio.timeout(wait_s):
            while (event := await self.recv(wait_s)).get("type") != kind:
                skipped.append(event)
        return event, skipped

    async def expect_closed(self, wait_s: float = RECV_TIMEOUT) -> ConnectionClosed:
        """Read (validating) until the server closes; return the close exception."""
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    await self.recv(wait_s)
        except ConnectionClosed as closed:
            return closed
        raise AssertionError("unreachable")


@asynccontextmanager
async def sdk_session(base: str, *, api_key: str = KEY) -> AsyncIterator[Session]:
    """A session through ``AsyncOpenAI(...).realtime.connect(model="gpt-realtime")``.

    Yields after ``session.created`` was received (it is the first event in ``received``).
    """
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=api_key)
    try:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            session = Session(conn.send, conn.recv_bytes)  # type: ignore[arg-type]
            created = await session.recv()
            assert created["type"] == "session.created", created
            yield session
    finally:
        await client.close()


@asynccontextmanager
async def raw_session(
    base: str, *, api_key: str | None = KEY, wait_created: bool = True, **connect_kwargs: Any
) -> AsyncIterator[Session]:
    """A session through the ``websockets`` client (binary, invalid JSON, oversize frames).

    ``api_key=None`` sends no ``Authorization`` header (e.g. to use a key subprotocol).
    """
    connect_kwargs.setdefault("max_size", None)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    async with connect(
        ws_url(base, "/v1/realtime?model=gpt-realtime"),
        additional_headers=headers,
        **connect_kwargs,
    ) as ws:

        async def send_json(event: dict[str, Any]) -> None:
            await ws.send(json.dumps(event))

        session = Session(send_json, ws.recv, send_raw=ws.send, ws=ws)
        if wait_created:
            created = await session.recv()
            assert created["type"] == "session.created", created
        yield session


async def alive(
    session: Session, marker: str = "still alive", *, errors_before: int = 0
) -> list[dict[str, Any]]:
    """Prove the session still works: a ``session.update`` gets its ``session.updated``.

    Returns the events that arrived before ``session.updated``, of which exactly
    ``errors_before`` are ``error`` events.
    """
    await session.send(
        {
            "type": "session.update",
            "event_id": "evt_alive",
            "session": {"type": "realtime", "instructions": marker},
        }
    )
    updated, before = await session.recv_until("session.updated")
    assert updated["session"]["instructions"] == marker
    errors = [e["error"] for e in before if e["type"] == "error"]
    assert len(errors) == errors_before, (
        f"{len(errors)} errors before session.updated: {errors[:5]}"
    )
    return before
