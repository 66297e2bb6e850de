"""WebRTC calls that any instance or worker can reach (issue 9, item 2).

Two ``openrealtime serve`` processes on two ports sharing one real Redis stand in for two
machines behind a load balancer: a call is answered by A (an aiortc caller, as in
tests/transports/test_webrtc.py), then steered, watched and hung up through B, whose sideband
is relayed to A frame by frame. Killing A (SIGKILL) must end B's relayed sideband with a clear
error within seconds, and make the call ``call_not_found`` everywhere. Then one instance with
two workers on one port: sidebands and hangups landing on either worker reach the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis
from aiortc import RTCConfiguration, RTCPeerConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openrealtime.transports.call_directory import KEY_PREFIX, TTL_S
from tests.deploy.test_workers import holder, workers_of
from tests.helpers.cli_server import FAKE_ENGINES, CliServer, cli_server
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.redis_server import redis_server
from tests.transports.test_webrtc import API_KEY, NO_VAD, PcmTrack, call, post_offer

WAIT_S = 10.0
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ARGS = (*FAKE_ENGINES, "--api-key", API_KEY)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url


@dataclass
class Sideband:
    """A sideband WebSocket (``/v1/realtime?call_id=…``) and every event it received."""

    ws: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)

    async def recv(self, wait_s: float = WAIT_S) -> dict[str, Any]:
        async with asyncio.timeout(wait_s):
            event = json.loads(await self.ws.recv())
        SERVER_EVENT.validate_python(event)
        self.received.append(event)
        return dict(event)

    async def until(self, kind: str) -> list[dict[str, Any]]:
        out = [await self.recv()]
        while out[-1]["type"] != kind:
            assert out[-1]["type"] != "error", out[-1]
            out.append(await self.recv())
        return out

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def end(self, wait_s: float = WAIT_S) -> tuple[list[dict[str, Any]], int, float]:
        """Events until the server closes, its close code, and how long that took."""
        started = time.monotonic()
        events: list[dict[str, Any]] = []
        try:
            while True:
                events.append(await self.recv(wait_s))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return events, closed.rcvd.code, time.monotonic() - started


@contextlib.asynccontextmanager
async def sideband(base: str, call_id: str) -> AsyncIterator[Sideband]:
    url = base.replace("http://", "ws://") + f"/v1/realtime?call_id={call_id}"
    async with connect(url, additional_headers=AUTH) as ws:
        yield Sideband(ws)


async def refused_sideband(base: str, call_id: str) -> tuple[dict[str, Any], int]:
    """The error and close code a sideband for a call nobody holds gets."""
    async with sideband(base, call_id) as side:
        events, code, _ = await side.end()
    (error,) = events
    return error, code


async def hangup(base: str, call_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
        return await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers=AUTH)


def owner_in_redis(url: str, call_id: str) -> str | None:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        value = client.get(KEY_PREFIX + call_id)
    return value if isinstance(value, str) else None


async def offer_only(base: str) -> tuple[str, RTCPeerConnection]:
    """A call answered but never connected (enough for hangups): its id and the offerer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(PcmTrack(), direction="sendrecv")
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    _, call_id = await post_offer(base, pc.localDescription.sdp)
    return call_id, pc


@contextlib.contextmanager
def two_instances(tmp_path: Path, redis_url: str) -> Iterator[tuple[CliServer, CliServer]]:
    with (
        cli_server(*ARGS, "--redis-url", redis_url, log_dir=tmp_path) as a,
        cli_server(*ARGS, "--redis-url", redis_url, log_dir=tmp_path) as b,
    ):
        yield a, b


async def test_a_call_answered_by_one_instance_is_steered_and_hung_up_through_the_other(
    tmp_path: Path, redis_url: str
) -> None:
    with two_instances(tmp_path, redis_url) as (a, b):
        async with call(a.base, session=NO_VAD) as caller:
            owner = owner_in_redis(redis_url, caller.call_id)
            assert owner is not None and owner.startswith("http://127.0.0.1:")
            # The owner's heartbeat keeps its key past the TTL while the call lives.
            outlived = time.monotonic() + TTL_S + 0.5
            while time.monotonic() < outlived:
                assert owner_in_redis(redis_url, caller.call_id) == owner
                await asyncio.sleep(0.25)
            async with sideband(b.base, caller.call_id) as side:
                created = await side.recv()
                assert created["type"] == "session.created"
                assert created["session"]["id"] == caller.received[0]["session"]["id"]
                # session.update through B is answered through B, and takes effect in A's call.
                await side.send(
                    {"type": "session.update", "session": {"type": "realtime", "instructions": "B"}}
                )
                assert (await side.recv())["type"] == "session.updated"
                updated = await caller.wait_for("session.updated")
                assert updated["session"]["instructions"] == "B"
                # The call's events reach B in the order the caller gets them, none missing.
                caller.send({"type": "response.create"})
                on_channel = await caller.collect_until("response.done")
                on_sideband = await side.until("response.done")
                assert [e["event_id"] for e in on_sideband] == [e["event_id"] for e in on_channel]
                assert len(on_sideband) > 5
                # Hung up through B: the caller's channel and B's sideband both end.
                closed = asyncio.Event()
                caller.channel.on("close", closed.set)
                answer = await hangup(b.base, caller.call_id)
                assert answer.status_code == 200 and answer.content == b""
                events, code, _ = await side.end()
                assert code == 1000, (code, events)
                async with asyncio.timeout(WAIT_S):
                    await closed.wait()
            # Gone from the directory at once, and call_not_found through either instance.
            assert owner_in_redis(redis_url, caller.call_id) is None
            for base in (a.base, b.base):
                again = await hangup(base, caller.call_id)
                assert again.status_code == 404
                assert again.json()["error"]["code"] == "call_not_found"
                error, code = await refused_sideband(base, caller.call_id)
                assert error["error"]["code"] == "call_not_found" and code == 4000
        assert "relayed to" in b.log_text()


async def test_the_owner_killed_ends_relayed_sidebands_and_the_call_within_seconds(
    tmp_path: Path, redis_url: str
) -> None:
    with two_instances(tmp_path, redis_url) as (a, b):
        async with call(a.base, session=NO_VAD) as caller:
            async with sideband(b.base, caller.call_id) as side:
                assert (await side.recv())["type"] == "session.created"
                a.process.kill()  # SIGKILL: no drain, no goodbye, its Redis keys stay behind
                killed = time.monotonic()
                events, code, _ = await side.end(wait_s=10)
                lost_after = time.monotonic() - killed
            assert code == 1014, (code, events)
            (error,) = events
            assert error["error"]["code"] == "call_owner_lost"
            assert error["error"]["type"] == "server_error"
            assert caller.call_id in error["error"]["message"]
            assert lost_after < 3, lost_after
            # A new sideband or hangup through B: call_not_found, never a hang.
            error, code = await refused_sideband(b.base, caller.call_id)
            assert error["error"]["code"] == "call_not_found" and code == 4000
            answer = await hangup(b.base, caller.call_id)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "call_not_found"
            assert time.monotonic() - killed < 5
            # The dead owner's key expires within its TTL.
            while owner_in_redis(redis_url, caller.call_id) is not None:
                assert time.monotonic() - killed < TTL_S + 1.5
                await asyncio.sleep(0.1)
        assert "lost its owner" in b.log_text()


async def test_with_two_workers_sidebands_and_hangups_reach_the_call_from_either(
    tmp_path: Path, redis_url: str
) -> None:
    args = (*ARGS, "--workers", "2", "--redis-url", redis_url)
    with cli_server(*args, log_dir=tmp_path) as server:
        workers = workers_of(server, 2)
        async with call(server.base, session=NO_VAD) as caller:
            owner_url = owner_in_redis(redis_url, caller.call_id)
            assert owner_url is not None
            owner_port = int(owner_url.rsplit(":", 1)[1])
            (owner,) = [
                w.pid
                for w in workers
                if any(c.laddr.port == owner_port for c in w.net_connections(kind="tcp"))
            ]
            # Sidebands until both workers hold one; every one sees and steers the call.
            seen: set[int] = set()
            async with contextlib.AsyncExitStack() as stack:
                for attempt in range(30):
                    side = await stack.enter_async_context(sideband(server.base, caller.call_id))
                    created = await side.recv()
                    assert created["session"]["id"] == caller.received[0]["session"]["id"]
                    held_by = holder(workers, side.ws)
                    if held_by not in seen:
                        seen.add(held_by)
                        text = f"via {'owner' if held_by == owner else 'other'} {attempt}"
                        await side.send(
                            {
                                "type": "session.update",
                                "session": {"type": "realtime", "instructions": text},
                            }
                        )
                        updated = await side.until("session.updated")
                        assert updated[-1]["session"]["instructions"] == text
                    if len(seen) == 2:
                        break
                assert seen == {w.pid for w in workers}, seen
            answer = await hangup(server.base, caller.call_id)
            assert answer.status_code == 200
        # Hangups landing on either worker: the owner's own, and ones relayed to it.
        offerers: list[RTCPeerConnection] = []
        try:
            for _ in range(30):
                call_id, pc = await offer_only(server.base)
                offerers.append(pc)
                answer = await hangup(server.base, call_id)
                assert answer.status_code == 200, answer.text
                log = server.log_text()
                relayed = len(re.findall(r"hangup of rtc_\w+ relayed to .*: 200", log))
                if 0 < relayed < len(offerers):  # some relayed, some served by their owner
                    break
            else:
                raise AssertionError("every hangup landed on the same kind of worker")
        finally:
            for pc in offerers:
                await pc.close()
    _, alive = psutil.wait_procs(workers, timeout=5)  # no worker outlives the test
    assert not alive, alive
