"""A phone system for the SIP tests: the server, the application, the phones.

:class:`PhoneSystem` is what a deployment has: ``openrealtime`` with ``--sip-port`` (real
sockets, in the test's loop), an application that receives the ``realtime.call.incoming``
webhook (verified with openai-python's ``client.webhooks.unwrap``) and controls calls with the
official client (``client.realtime.calls.accept`` …, ``client.realtime.connect(call_id=…)``),
and real SIP phones (:class:`tests.helpers.baresip.Baresip`) that dial in.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from fastapi import FastAPI, Request
from fastapi.responses import Response
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from openrealtime.app import create_app
from openrealtime.audio.resample import resample
from openrealtime.audio.wav import read_wav, wav_bytes
from openrealtime.backends.base import Engines
from openrealtime.config import Config
from tests.conformance.conftest import Client
from tests.helpers import polling
from tests.helpers.baresip import Baresip, free_sip_port
from tests.helpers.server import running_server

API_KEY = "sk-sip-test-0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
WAIT_S = 15.0


async def settled(check: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """:func:`tests.helpers.polling.settled`, with the SIP tests' longer default wait."""
    return await polling.settled(check, timeout_s)


@dataclass
class PhoneSystem:
    """The server, the application's webhook inbox and its official client."""

    base: str
    sip_port: int
    api: openai.AsyncOpenAI
    app: Any
    workdir: Path
    webhooks: asyncio.Queue[tuple[RealtimeCallIncomingWebhookEvent, dict[str, str]]] = field(
        default_factory=asyncio.Queue
    )
    phones: list[Baresip] = field(default_factory=list)

    def phone(self, audio: Path | None = None, **kwargs: Any) -> Baresip:
        """A new phone (stopped at the end of the test)."""
        phone = Baresip(self.workdir, audio, **kwargs)
        self.phones.append(phone)
        return phone

    def uri(self, user: str = "agent", transport: str = "udp") -> str:
        """The server's SIP URI."""
        suffix = "" if transport == "udp" else f";transport={transport}"
        port = self.sip_port + 1 if transport == "tls" else self.sip_port
        return f"sip:{user}@127.0.0.1:{port}{suffix}"

    async def incoming(self, timeout_s: float = WAIT_S) -> RealtimeCallIncomingWebhookEvent:
        """The next call announced to the application (already verified)."""
        async with asyncio.timeout(timeout_s):
            event, _ = await self.webhooks.get()
        return event

    def sideband(self, call_id: str) -> AbstractAsyncContextManager[Client]:
        """The application's control connection to a call (``session.created`` read)."""
        return _sideband(self.api, call_id)

    @property
    def sip(self) -> Any:
        """The server's SIP endpoint (for what only the server can tell)."""
        return self.app.state.sip


@asynccontextmanager
async def _sideband(api: openai.AsyncOpenAI, call_id: str) -> AsyncIterator[Client]:
    async with api.realtime.connect(call_id=call_id) as conn:
        client = Client(conn)
        created = await client.recv()
        assert created["type"] == "session.created", created
        yield client


def application(inbox: asyncio.Queue[Any]) -> FastAPI:
    """The application's webhook endpoint: verifies each delivery as the docs say."""
    app = FastAPI()
    verifier = openai.OpenAI(api_key="unused", webhook_secret=SECRET)

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        event = verifier.webhooks.unwrap(body, request.headers)  # raises if not signed by us
        inbox.put_nowait((event, dict(request.headers)))
        return Response(status_code=200)

    return app


@asynccontextmanager
async def phone_system(
    engines: Engines, workdir: Path, **config_fields: Any
) -> AsyncIterator[PhoneSystem]:
    """The server with SIP on a free port, its application, and the official client.

    The phones outlive the server (stopped last), so they see its shutdown as callers would.
    """
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    phones: list[Baresip] = []
    try:
        async with running_server(application(inbox)) as hook_base:
            sip_port = free_sip_port()
            fields: dict[str, Any] = {
                "api_keys": (API_KEY,),
                "sip_port": sip_port,
                "sip_host": "127.0.0.1",
                "webhook_url": f"{hook_base}/hook",
                "webhook_secret": SECRET,
                **config_fields,
            }
            app = create_app(Config(**fields), engines)
            # HTTP stays plain even when the config has a certificate (for SIP over TLS)
            async with running_server(app, config=Config()) as base:
                api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY)
                try:
                    yield PhoneSystem(base, sip_port, api, app, workdir, inbox, phones)
                finally:
                    await api.close()
    finally:
        for phone in phones:
            phone.stop()


def phone_audio(folder: Path, *parts: str | float) -> Path:
    """A WAV for a phone's microphone: flite speech for text, silence for seconds, in order."""
    pcm = bytearray()
    rate = 16000
    for index, part in enumerate(parts):
        if isinstance(part, str):
            path = folder / f"part-{index}.wav"
            subprocess.run(["flite", "-voice", "rms", "-t", part, "-o", str(path)], check=True)
            speech, speech_rate = read_wav(path.read_bytes())
            pcm += resample(speech, speech_rate, rate)
        else:
            pcm += bytes(int(part * rate) * 2)
    out = folder / "microphone.wav"
    out.write_bytes(wav_bytes(bytes(pcm), rate))
    return out
