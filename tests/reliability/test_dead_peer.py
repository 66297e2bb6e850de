"""Reliability check 5: a dead peer is detected, its session ends and its work is cancelled.

reliability-targets.md §3 check 5. A real client talks to the real app (fake engines) through
``tests/helpers/fault_proxy.py``. While a long audio response streams (the fake LLM and TTS are
slowed with ``Faults(chunk_delay_s=...)``), the proxy

* blackholes the connection (no FIN, no RST, no pong): the server's keepalive must end the
  session within ``ws_ping_interval + ws_ping_timeout + 2 s``; once with the proxy dropping what
  it reads (the server's last bytes must then be the 1011 close frame) and once with the proxy
  no longer reading (a half-open connection);
* resets it (RST both ways): the session must end within 2 s.

Either way, the engines' streams must stop within 1 s of the moment the session saw the
transport end (``receive`` returned ``None`` or ``send_text`` raised), and the event loop's
tasks and the process's open fds must come back to their baseline (±2).

Server-side observation: a session runner wraps the real ``run_session`` and its transport and
records when the transport ended and when the driver returned; the fake engines are subclassed
to record when each stream stopped and whether it was cancelled or ran to completion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil
import pytest

from openrealtime.backends.base import GenerationEvent, GenerationRequest, SynthesisRequest
from openrealtime.backends.fake import FakeLanguageModel, FakeTextToSpeech, Faults
from openrealtime.config import Config
from openrealtime.runtime.driver import run_session
from openrealtime.transports.base import SessionRequest, Transport, TransportClosed
from tests.conformance._error_helpers import KEY, fake_engines, raw_session, serve
from tests.helpers.fault_proxy import FaultProxy

PING_INTERVAL = 0.5
PING_TIMEOUT = 0.5
DETECT_BUDGET_S = PING_INTERVAL + PING_TIMEOUT + 2.0
"""Check 5: the server closes within ping_interval + ping_timeout + 2 s of the peer vanishing."""
RESET_BUDGET_S = 2.0
CANCEL_BUDGET_S = 1.0
"""Check 5: engine streams stop within 1 s of the session seeing its transport end."""
SLACK = 2
"""Check 5: tasks and fds return to baseline ±2."""

CHUNK_DELAY_S = 0.05
REPLY = " ".join(f"This is sentence number {i} of a long answer." for i in range(200))
"""About 25 s of LLM streaming and minutes of TTS at CHUNK_DELAY_S: still running at the fault."""

KEEPALIVE_CLOSE = b"\x88\x18\x03\xf3keepalive ping timeout"
"""An unmasked close frame, code 1011, reason "keepalive ping timeout" (RFC 6455 §5.5.1)."""


def _config(**overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "api_keys": (KEY,),
        "vad": "energy",
        "ws_ping_interval": PING_INTERVAL,
        "ws_ping_timeout": PING_TIMEOUT,
    }
    settings.update(overrides)
    return Config(**settings)


class Probe:
    """What the server did, with ``time.monotonic()`` stamps."""

    def __init__(self) -> None:
        self.transport_ended_at: float | None = None
        self.session_ended_at: float | None = None
        self.ended = asyncio.Event()
        self.sessions = 0
        self.streams: dict[str, dict[str, Any]] = {}
        """``"llm#1"`` -> {"started": t, "stopped": t | None, "how": "cancelled" | ...}."""

    def active(self, kind: str) -> list[str]:
        return [
            name
            for name, s in self.streams.items()
            if name.startswith(kind) and s["stopped"] is None
        ]

    def transport_ended(self) -> None:
        if self.transport_ended_at is None:
            self.transport_ended_at = time.monotonic()

    async def track(self, kind: str, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Re-yield an engine stream; record when and how it stopped."""
        name = f"{kind}#{sum(n.startswith(kind) for n in self.streams) + 1}"
        record: dict[str, Any] = {"started": time.monotonic(), "stopped": None, "how": None}
        self.streams[name] = record
        how = "completed"
        try:
            async for item in stream:
                yield item
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        except GeneratorExit:
            how = "closed"
            raise
        except BaseException as exc:
            how = f"failed: {exc!r}"
            raise
        finally:
            record["stopped"] = time.monotonic()
            record["how"] = how

    async def runner(self, transport: Transport, request: SessionRequest, services: Any) -> None:
        """The app's session runner: the real driver over a watched transport."""
        self.sessions += 1
        try:
            await run_session(_WatchedTransport(transport, self), request, services)
        finally:
            self.session_ended_at = time.monotonic()
            self.ended.set()


class _WatchedTransport:
    """Delegates to the real transport; tells the probe when the peer is found gone."""

    def __init__(self, inner: Transport, probe: Probe) -> None:
        self._inner = inner
        self._probe = probe

    async def receive(self) -> str | bytes | None:
        data = await self._inner.receive()
        if data is None:
            self._probe.transport_ended()
        return data

    def push_to(self, deliver: Callable[[str | bytes | None], None]) -> bool:
        """The driver's way in under the server's own protocol: watched like ``receive``."""

        def watched(frame: str | bytes | None) -> None:
            if frame is None:
                self._probe.transport_ended()
            deliver(frame)

        return bool(self._inner.push_to(watched))  # type: ignore[attr-defined]

    async def send_text(self, text: str) -> None:
        try:
            await self._inner.send_text(text)
        except TransportClosed:
            self._probe.transport_ended()
            raise

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.close(code, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TrackedLLM(FakeLanguageModel):
    def __init__(self, probe: Probe) -> None:
        super().__init__(reply=REPLY, faults=Faults(chunk_delay_s=CHUNK_DELAY_S))
        self.probe = probe

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self.probe.track("llm", super().generate(request))


class _TrackedTTS(FakeTextToSpeech):
    def __init__(self, probe: Probe) -> None:
        super().__init__(faults=Faults(chunk_delay_s=CHUNK_DELAY_S))
        self.probe = probe

    def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        return self.probe.track("tts", super().synthesize(request))


def _counts() -> tuple[int, int]:
    return len(asyncio.all_tasks()), psutil.Process().num_fds()


async def _settled(baseline: tuple[int, int], wait_s: float = 3.0) -> tuple[int, int]:
    """Tasks and fds once they are back within SLACK of ``baseline`` (or after ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        now = _counts()
        if all(n <= b + SLACK for n, b in zip(now, baseline, strict=True)):
            return now
        if time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.02)  # polling a count with a deadline, not synchronizing


def _check_streams(probe: Probe) -> None:
    assert probe.transport_ended_at is not None, "the session never saw its transport end"
    assert probe.session_ended_at is not None
    for name, stream in probe.streams.items():
        stopped = stream["stopped"]
        assert stopped is not None, f"{name} still running after the session ended"
        lag = stopped - probe.transport_ended_at
        assert lag <= CANCEL_BUDGET_S, (
            f"{name} stopped {lag:.2f} s after the session saw its transport end "
            f"(budget {CANCEL_BUDGET_S} s)"
        )
        if stopped >= probe.transport_ended_at:
            assert stream["how"] != "completed", f"{name} ran to completion: {stream}"


def _report(fault: str, probe: Probe, fault_at: float) -> None:
    """Print the timeline (shown with ``pytest -s``)."""
    assert probe.transport_ended_at is not None and probe.session_ended_at is not None
    stops = ", ".join(
        f"{name} {s['how']} at +{s['stopped'] - fault_at:.2f} s"
        for name, s in probe.streams.items()
        if s["stopped"] is not None and s["stopped"] >= fault_at
    )
    print(
        f"\n{fault}: transport ended at +{probe.transport_ended_at - fault_at:.2f} s, "
        f"session ended at +{probe.session_ended_at - fault_at:.2f} s; {stops}"
    )


async def _start_long_response(session: Any, probe: Probe) -> None:
    """Ask for a response and wait until its audio streams (the LLM and TTS are mid-stream)."""
    await session.send({"type": "response.create"})
    await session.recv_until("response.output_audio.delta")
    assert probe.active("llm"), f"the LLM is not streaming: {probe.streams}"
    assert probe.active("tts"), f"the TTS is not streaming: {probe.streams}"


@pytest.mark.parametrize("drain", [True, False], ids=["dropping", "half-open"])
async def test_a_blackholed_peer_is_closed_by_keepalive_and_its_work_cancelled(
    drain: bool,
) -> None:
    probe = Probe()
    engines = fake_engines(llm=_TrackedLLM(probe), tts=_TrackedTTS(probe))
    async with (
        serve(_config(), engines, session_runner=probe.runner) as base,
        FaultProxy("127.0.0.1", int(base.rsplit(":", 1)[1])) as proxy,
    ):
        baseline = _counts()
        async with raw_session(proxy.base_url, ping_interval=None, close_timeout=0.5) as session:
            await _start_long_response(session, probe)
            vanished_at = time.monotonic()
            proxy.blackhole(drain=drain)
            try:
                async with asyncio.timeout(DETECT_BUDGET_S + 5):
                    await probe.ended.wait()
            except TimeoutError:
                pytest.fail(
                    f"the server kept the blackholed session open for {DETECT_BUDGET_S + 5} s "
                    f"(budget {DETECT_BUDGET_S} s); streams: {probe.streams}"
                )
            assert probe.session_ended_at is not None
            took = probe.session_ended_at - vanished_at
            _report("blackhole " + ("dropping" if drain else "half-open"), probe, vanished_at)
            assert took <= DETECT_BUDGET_S, (
                f"the session ended {took:.2f} s after the peer vanished "
                f"(budget ping {PING_INTERVAL} + pong {PING_TIMEOUT} + 2 = {DETECT_BUDGET_S} s)"
            )
            _check_streams(probe)
            if drain:  # the server's last bytes: its keepalive close (1011)
                (link,) = proxy.links
                tail = bytes(link.dropped_to_client[-len(KEEPALIVE_CLOSE) :])
                assert tail == KEEPALIVE_CLOSE, f"the server's last bytes were {tail!r}"
            proxy.reset()  # let the client go now rather than after its close timeout
        after = await _settled(baseline)
    assert probe.sessions == 1
    assert after[0] <= baseline[0] + SLACK, f"asyncio tasks {baseline[0]} -> {after[0]}"
    assert after[1] <= baseline[1] + SLACK, f"open fds {baseline[1]} -> {after[1]}"


async def test_a_reset_mid_response_ends_the_session_promptly() -> None:
    probe = Probe()
    engines = fake_engines(llm=_TrackedLLM(probe), tts=_TrackedTTS(probe))
    async with (
        serve(_config(), engines, session_runner=probe.runner) as base,
        FaultProxy("127.0.0.1", int(base.rsplit(":", 1)[1])) as proxy,
    ):
        baseline = _counts()
        async with raw_session(proxy.base_url, ping_interval=None, close_timeout=0.5) as session:
            await _start_long_response(session, probe)
            reset_at = time.monotonic()
            proxy.reset()
            try:
                async with asyncio.timeout(RESET_BUDGET_S + 5):
                    await probe.ended.wait()
            except TimeoutError:
                pytest.fail(f"the session outlived an RST by {RESET_BUDGET_S + 5} s")
            assert probe.session_ended_at is not None
            took = probe.session_ended_at - reset_at
            _report("reset", probe, reset_at)
            assert took <= RESET_BUDGET_S, f"the session ended {took:.2f} s after the RST"
            _check_streams(probe)
        after = await _settled(baseline)
    assert probe.sessions == 1
    assert after[0] <= baseline[0] + SLACK, f"asyncio tasks {baseline[0]} -> {after[0]}"
    assert after[1] <= baseline[1] + SLACK, f"open fds {baseline[1]} -> {after[1]}"
