"""A phone call that any instance can control (issue 12: calls live in the shared registry).

Two ``openrealtime serve`` processes share one real Redis, as two machines behind a load
balancer: A takes the phone calls (``--sip-port``), B does not. The application gets A's
webhook and then talks only to B, with the official client: accept, the sideband (relayed to
A frame by frame), DTMF, hangup. Each request reaches A over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conformance.conftest import Client
from tests.deploy.test_calls_across_instances import owner_in_redis
from tests.helpers.baresip import Baresip, free_sip_port
from tests.helpers.cli_server import FAKE_ENGINES, cli_server
from tests.helpers.redis_server import redis_server
from tests.helpers.server import running_server
from tests.sip.conftest import API_KEY, SECRET, application, settled

ARGS = (*FAKE_ENGINES, "--api-key", API_KEY)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


async def test_a_phone_call_taken_by_one_instance_is_controlled_through_another(
    tmp_path: Path, redis_url: str
) -> None:
    inbox: asyncio.Queue[tuple[object, dict[str, str]]] = asyncio.Queue()
    sip_port = free_sip_port()
    async with running_server(application(inbox)) as hook:
        sip = (
            "--sip-port",
            str(sip_port),
            "--sip-host",
            "127.0.0.1",
            "--webhook-url",
            f"{hook}/hook",
        )
        env = {"OPENREALTIME_WEBHOOK_SECRET": SECRET}
        with (
            cli_server(*ARGS, "--redis-url", redis_url, *sip, env=env, log_dir=tmp_path) as a,
            cli_server(*ARGS, "--redis-url", redis_url, log_dir=tmp_path) as b,
        ):
            phone = Baresip(tmp_path)
            api = openai.AsyncOpenAI(base_url=f"{b.base}/v1", api_key=API_KEY)
            try:
                phone.dial(f"sip:agent@127.0.0.1:{sip_port}")
                async with asyncio.timeout(15):
                    event, _ = await inbox.get()
                call_id = event.data.call_id  # type: ignore[attr-defined]
                owner = owner_in_redis(redis_url, call_id)
                assert owner is not None and owner != b.base  # A's private listener
                await api.realtime.calls.accept(call_id, type="realtime")  # through B
                assert await settled(phone.call_established), phone.log[-3000:]
                async with api.realtime.connect(call_id=call_id) as conn:  # B relays to A
                    side = Client(conn)
                    assert (await side.recv())["type"] == "session.created"
                    phone.press("86")
                    got: list[str] = []
                    while len(got) < 2:
                        received = await side.recv(15)
                        if received["type"] == "input_audio_buffer.dtmf_event_received":
                            got.append(received["event"])
                    assert got == ["8", "6"]
                    await api.realtime.calls.hangup(call_id)  # through B
                assert await settled(lambda: phone.call_closed_reason() is not None)
                assert phone.call_closed_reason() == "Connection reset by peer"
                assert await settled(lambda: owner_in_redis(redis_url, call_id) is None)
                with pytest.raises(openai.NotFoundError):
                    await api.realtime.calls.hangup(call_id)
                assert "relayed" in b.log_text()
                assert "SIP call ended" in a.log_text()
            finally:
                phone.stop()
                await api.close()
