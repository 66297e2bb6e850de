"""Phone calls from a real SIP phone (baresip) through the reference service's call flow.

Each test dials the server with Debian's baresip, receives the ``realtime.call.incoming``
webhook in a test application (verified with openai-python), and controls the call with the
official client: ``client.realtime.calls.accept/reject/refer/hangup`` and the sideband
``client.realtime.connect(call_id=…)``. The engines are the real Silero VAD and the
deterministic fakes (the fake voice is a tone whose pitch the test can find in what the phone
recorded); ``tests/e2e/test_sip_conversation.py`` runs the embedded engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import pytest_asyncio
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent
from websockets.exceptions import ConnectionClosed

from openrealtime.audio.wav import read_wav
from openrealtime.backends.fake import FakeLanguageModel, FakeTextToSpeech
from openrealtime.backends.vad_silero import SileroVad
from tests.conformance.conftest import engines_with
from tests.helpers.baresip import Baresip
from tests.helpers.kamailio import Kamailio
from tests.sip.conftest import WAIT_S, PhoneSystem, phone_audio, phone_system, settled
from tests.transports.test_tls import self_signed

pytestmark = pytest.mark.timeout(120)

VOICE = "alloy"
PITCH_HZ = 180 + 20 * (sum(VOICE.encode()) % 10)
"""The fake voice's tone for ``alloy`` (FakeTextToSpeech)."""
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad.from_cache()


@pytest_asyncio.fixture
async def system(vad: SileroVad, tmp_path: Path) -> AsyncIterator[PhoneSystem]:
    async with phone_system(engines_with(vad), tmp_path) as running:
        yield running


async def until(client: Any, kind: str, timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
    """Events from the sideband up to and including the first of type ``kind``."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while not events or events[-1]["type"] != kind:
        events.append(await client.recv(max(0.1, deadline - time.monotonic())))
    return events


def dominant_hz(path: Path, start_s: float = 0.0) -> tuple[float, float]:
    """The strongest frequency of a recording (from ``start_s``) and its RMS."""
    pcm, rate = read_wav(path.read_bytes())
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)[int(start_s * rate) :]
    if samples.size == 0:
        return 0.0, 0.0
    spectrum = np.abs(np.fft.rfft(samples))
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    return float(freqs[int(np.argmax(spectrum[1:])) + 1]), float(np.sqrt(np.mean(samples**2)))


async def answered_call(
    system: PhoneSystem, phone: Baresip, uri: str | None = None, **session: Any
) -> RealtimeCallIncomingWebhookEvent:
    """Dial, take the webhook, accept; the webhook's event."""
    phone.dial(uri or system.uri())
    incoming = await system.incoming()
    await system.api.realtime.calls.accept(incoming.data.call_id, type="realtime", **session)
    assert await settled(phone.call_established), phone.log[-3000:]
    return incoming


async def closes(app: Any, timeout_s: float = WAIT_S) -> bool:
    """Whether the sideband is closed by the server within ``timeout_s`` (events skipped)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await app.recv(timeout_s)
    except ConnectionClosed:
        return True
    except TimeoutError:
        return False


async def digits(app: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` DTMF events of the sideband (other events skipped)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        event = await app.recv(WAIT_S)
        if event["type"] == "input_audio_buffer.dtmf_event_received":
            got.append(event)
    return got


# --------------------------------------------------------------------------- the whole flow


async def test_a_call_is_announced_accepted_answered_keyed_and_hung_up(
    system: PhoneSystem, tmp_path: Path
) -> None:
    phone = system.phone(phone_audio(tmp_path, 1.0, QUESTION, 8.0))
    phone.dial(system.uri("support"))
    incoming = await system.incoming()
    call_id = incoming.data.call_id
    assert call_id.startswith("rtc_") and len(call_id) == 36
    headers = [(h.name, h.value) for h in incoming.data.sip_headers]
    names = [name.lower() for name, _ in headers]
    for wanted in ("via", "from", "to", "call-id", "cseq", "contact", "content-type"):
        assert wanted in names, headers
    assert dict((n.lower(), v) for n, v in headers)["to"].startswith("<sip:support@127.0.0.1")
    assert "authorization" not in names
    assert not phone.call_established()  # ringing until the application answers
    await system.api.realtime.calls.accept(
        call_id, type="realtime", instructions="Answer briefly.", audio={"output": {"voice": VOICE}}
    )
    assert await settled(phone.call_established), phone.log[-3000:]

    async with system.sideband(call_id) as app:
        events = await until(app, "response.done", 20)
        kinds = [e["type"] for e in events]
        for kind in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "response.created",
        ):
            assert kind in kinds, kinds
        assert "response.output_audio.delta" not in kinds  # the audio goes down the phone line
        done = events[-1]["response"]
        assert done["status"] == "completed", done
        events += await until(app, "output_audio_buffer.stopped", 20)
        assert "output_audio_buffer.started" in [e["type"] for e in events]

        phone.press("12#*9")
        got = await digits(app, 5)
        assert [e["event"] for e in got] == list("12#*9")
        assert all("event_id" not in e and abs(e["received_at"] - time.time()) < 30 for e in got)

        await system.api.realtime.calls.hangup(call_id)
        assert await settled(lambda: phone.call_closed_reason() is not None), phone.log[-2000:]
        assert phone.call_closed_reason() == "Connection reset by peer"  # our BYE
        assert await closes(app)  # the sideband ends with the call
    phone.stop()  # baresip completes its recording's WAV header when the call is torn down
    heard = phone.heard()
    assert heard is not None
    hz, rms = dominant_hz(heard)
    assert rms > 300 and abs(hz - PITCH_HZ) < 10, (hz, rms, PITCH_HZ)
    assert await settled(lambda: not system.sip._live)


async def test_the_caller_hanging_up_ends_the_session(system: PhoneSystem) -> None:
    phone = system.phone()
    call_id = (await answered_call(system, phone)).data.call_id
    async with system.sideband(call_id) as app:
        phone.hangup()
        assert await closes(app)
    assert await settled(lambda: not system.sip._live)
    with pytest.raises(openai.NotFoundError):
        await system.api.realtime.calls.hangup(call_id)


# --------------------------------------------------------------------------- declining


@pytest.mark.parametrize(("status", "reason"), [(486, "486 Busy Here"), (None, "603 Decline")])
async def test_reject_answers_the_status_code(
    system: PhoneSystem, status: int | None, reason: str
) -> None:
    phone = system.phone()
    phone.dial(system.uri())
    call_id = (await system.incoming()).data.call_id
    if status is None:
        await system.api.realtime.calls.reject(call_id)
    else:
        await system.api.realtime.calls.reject(call_id, status_code=status)
    assert await settled(lambda: phone.call_closed_reason() is not None), phone.log[-2000:]
    assert phone.call_closed_reason() == reason
    with pytest.raises(openai.NotFoundError):
        await system.api.realtime.calls.accept(call_id, type="realtime")


async def test_a_call_nobody_accepts_is_rejected_after_the_ring_timeout(
    vad: SileroVad, tmp_path: Path
) -> None:
    async with phone_system(engines_with(vad), tmp_path, sip_ring_timeout=1.5) as system:
        phone = system.phone()
        phone.dial(system.uri())
        call_id = (await system.incoming()).data.call_id
        assert await settled(lambda: phone.call_closed_reason() is not None, 6)
        assert phone.call_closed_reason() == "480 Temporarily Unavailable"
        with pytest.raises(openai.NotFoundError) as late:
            await system.api.realtime.calls.accept(call_id, type="realtime")
        assert late.value.code == "call_not_found"


async def test_a_caller_giving_up_while_ringing_cancels_the_call(system: PhoneSystem) -> None:
    phone = system.phone()
    phone.dial(system.uri())
    call_id = (await system.incoming()).data.call_id
    phone.hangup()  # CANCEL while ringing
    assert await settled(lambda: "SIP/2.0 487 Request Terminated" in phone.log), phone.log[-2000:]
    assert await settled(lambda: not system.sip._ringing)
    with pytest.raises(openai.NotFoundError):
        await system.api.realtime.calls.accept(call_id, type="realtime")


# --------------------------------------------------------------------------- transfer


async def test_refer_transfers_the_call_and_ends_ours(system: PhoneSystem) -> None:
    target = system.phone(user="bob")
    target.listen()
    phone = system.phone()
    call_id = (await answered_call(system, phone)).data.call_id
    await system.api.realtime.calls.refer(call_id, target_uri=target.sip_uri)
    assert await settled(lambda: len(target.incoming_calls()) == 1), target.log[-3000:]
    assert "alice" in target.incoming_calls()[0]
    assert await settled(lambda: not system.sip._live)  # transferred: our leg is hung up


async def test_refer_while_ringing_redirects_and_bad_targets_are_refused(
    system: PhoneSystem,
) -> None:
    phone = system.phone()
    phone.dial(system.uri())
    call_id = (await system.incoming()).data.call_id
    with pytest.raises(openai.BadRequestError) as bad:
        await system.api.realtime.calls.refer(call_id, target_uri="http://example.com")
    assert bad.value.param == "target_uri"
    await system.api.realtime.calls.refer(call_id, target_uri="sip:queue@127.0.0.1:9")
    assert await settled(lambda: "302" in phone.log), phone.log[-2000:]


# --------------------------------------------------------------------------- transports


async def test_a_call_over_tcp(system: PhoneSystem) -> None:
    phone = system.phone()
    call_id = (await answered_call(system, phone, system.uri(transport="tcp"))).data.call_id
    async with system.sideband(call_id) as app:
        phone.press("7")
        assert [e["event"] for e in await digits(app, 1)] == ["7"]
    await system.api.realtime.calls.hangup(call_id)
    assert await settled(lambda: phone.call_closed_reason() is not None)


async def test_a_call_over_tls(vad: SileroVad, tmp_path: Path) -> None:
    """SIP over TLS on the next port, with the server's certificate (baresip does not verify
    it; a trunk would)."""
    cert, key = self_signed(tmp_path)
    async with phone_system(
        engines_with(vad), tmp_path, ssl_certfile=str(cert), ssl_keyfile=str(key)
    ) as system:
        assert [s.kind for s in system.sip.stacks] == ["udp", "tcp", "tls"]
        phone = system.phone()
        incoming = await answered_call(system, phone, system.uri(transport="tls"))
        via = next(h.value for h in incoming.data.sip_headers if h.name.lower() == "via")
        assert via.upper().startswith("SIP/2.0/TLS"), via
        call_id = incoming.data.call_id
        async with system.sideband(call_id) as app:
            phone.press("3")
            assert [e["event"] for e in await digits(app, 1)] == ["3"]
            await system.api.realtime.calls.hangup(call_id)
            assert await closes(app)
        assert await settled(lambda: phone.call_closed_reason() is not None)


async def test_hold_and_resume_are_answered_and_the_call_goes_on(system: PhoneSystem) -> None:
    phone = system.phone()
    call_id = (await answered_call(system, phone)).data.call_id
    phone.command("/hold")
    assert await settled(lambda: "a=recvonly" in phone.log), phone.log[-3000:]  # our answer
    phone.command("/resume")
    assert await settled(lambda: phone.log.count("a=sendrecv") >= 4), phone.log[-3000:]
    async with system.sideband(call_id) as app:
        phone.press("0")
        assert [e["event"] for e in await digits(app, 1)] == ["0"]
    assert call_id in system.sip._live
    await system.api.realtime.calls.hangup(call_id)
    assert await settled(lambda: phone.call_closed_reason() is not None)


# --------------------------------------------------------------------------- control API


async def test_call_control_errors_are_openai_shaped(system: PhoneSystem) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await system.api.realtime.calls.accept("rtc_nope", type="realtime")
    assert missing.value.code == "call_not_found"
    phone = system.phone()
    phone.dial(system.uri())
    call_id = (await system.incoming()).data.call_id
    with pytest.raises(openai.BadRequestError) as bad:
        await system.api.realtime.calls.reject(call_id, status_code=200)
    assert bad.value.param == "status_code"
    with pytest.raises(openai.BadRequestError) as config:
        await system.api.realtime.calls.accept(
            call_id,
            type="realtime",
            extra_body={"bogus": 1},
        )
    assert config.value.code == "unknown_parameter"
    stranger = openai.AsyncOpenAI(base_url=f"{system.base}/v1", api_key="sk-wrong")
    try:
        with pytest.raises(openai.AuthenticationError):
            await stranger.realtime.calls.accept(call_id, type="realtime")
    finally:
        await stranger.close()
    await system.api.realtime.calls.accept(call_id, type="realtime")  # still ringing: works
    assert await settled(phone.call_established)
    with pytest.raises(openai.ConflictError):
        await system.api.realtime.calls.accept(call_id, type="realtime")
    await system.api.realtime.calls.hangup(call_id)


# --------------------------------------------------------------------------- security


async def test_digest_authentication(vad: SileroVad, tmp_path: Path) -> None:
    async with phone_system(
        engines_with(vad), tmp_path, sip_username="alice", sip_password="s3cret"
    ) as system:
        intruder = system.phone(account=";auth_pass=wrong")
        intruder.dial(system.uri())
        assert await settled(lambda: intruder.call_closed_reason() is not None)
        assert intruder.call_closed_reason() is not None
        assert "401" in intruder.call_closed_reason() or "403" in intruder.call_closed_reason()
        assert system.webhooks.empty()
        trunk = system.phone(account=";auth_pass=s3cret")
        incoming = await answered_call(system, trunk)
        names = [h.name.lower() for h in incoming.data.sip_headers]
        assert "cseq" in names and "authorization" not in names  # credentials stay with us
        await system.api.realtime.calls.hangup(incoming.data.call_id)


async def test_sources_outside_the_allow_list_are_ignored(vad: SileroVad, tmp_path: Path) -> None:
    async with phone_system(engines_with(vad), tmp_path, sip_allow=("192.0.2.0/24",)) as system:
        phone = system.phone()
        phone.dial(system.uri(), hangup_after_s=3)
        await asyncio.sleep(3.5)
        assert system.webhooks.empty()
        assert not phone.call_established()
        assert sum(stack.dropped for stack in system.sip.stacks) > 0


def mutations(count: int, reply_port: int) -> list[bytes]:
    """Broken and odd INVITEs: cut short, bytes flipped, lines dropped or doubled, huge."""
    rng = random.Random(12)
    out: list[bytes] = []
    for n in range(count):
        lines = [
            "INVITE sip:agent@127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{reply_port};branch=z9hG4bKfuzz{n}",
            f"From: <sip:fuzz@127.0.0.1>;tag={n}",
            "To: <sip:agent@127.0.0.1>",
            f"Call-ID: fuzz-{n}",
            "CSeq: 1 INVITE",
            "Contact: <sip:fuzz@127.0.0.1>",
            "Content-Type: application/sdp",
        ]
        body = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9 RTP/AVP 0\r\n"
        kind = n % 5
        if kind == 0:
            rng.shuffle(lines)
        elif kind == 1:
            del lines[rng.randrange(1, len(lines))]
        elif kind == 2:
            lines.insert(rng.randrange(1, len(lines)), lines[rng.randrange(1, len(lines))])
        elif kind == 3:
            lines.append("X-Huge: " + "a" * rng.choice([100, 5000, 60000]))
        head = "\r\n".join([*lines, f"Content-Length: {len(body)}", "", body]).encode()
        if kind == 4 or rng.random() < 0.3:
            data = bytearray(head)
            for _ in range(rng.randrange(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            head = bytes(data[: rng.randrange(1, len(data) + 1)])
        out.append(head)
    return out


async def test_malformed_sip_and_foreign_rtp_break_nothing(system: PhoneSystem) -> None:
    phone = system.phone()
    call_id = (await answered_call(system, phone)).data.call_id  # a call that must live on
    live = system.sip._live[call_id]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fuzzer:
        fuzzer.bind(("127.0.0.1", 0))
        fuzzer.setblocking(False)  # the server runs in this loop: never block it
        loop = asyncio.get_running_loop()
        bad_cseq = (
            "INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{fuzzer.getsockname()[1]};branch=z9hG4bKbad\r\n"
            "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\n"
            "Call-ID: bad\r\nCSeq: notanumber INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        fuzzer.sendto(bad_cseq.encode(), ("127.0.0.1", system.sip_port))
        answer = await asyncio.wait_for(loop.sock_recv(fuzzer, 65536), 5)
        assert answer.startswith(b"SIP/2.0 400"), answer[:80]
        assert b"Call-ID: bad" in answer and b"CSeq: notanumber INVITE" in answer
        for data in mutations(300, fuzzer.getsockname()[1]):
            await loop.sock_sendto(fuzzer, data[:65000], ("127.0.0.1", system.sip_port))
            await asyncio.sleep(0.002)
        await loop.sock_sendto(fuzzer, b"\x00\xff garbage \r\n\r\n", ("127.0.0.1", system.sip_port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:  # audio from elsewhere
        for seq in range(50):
            packet = bytes([0x80, 0, seq >> 8, seq & 255]) + bytes(8) + bytes(160)
            stranger.sendto(packet, live.media.local)
            stranger.sendto(b"\x80", live.media.local)
    async with system.sideband(call_id) as app:
        phone.press("5")
        assert [e["event"] for e in await digits(app, 1)] == ["5"]
    assert live.media.stats["foreign_packets"] >= 100
    await system.api.realtime.calls.hangup(call_id)
    assert await settled(lambda: phone.call_closed_reason() is not None)
    while not system.webhooks.empty():  # fuzzed INVITEs that were still valid rang too
        system.webhooks.get_nowait()
    second = system.phone(user="bob")
    await answered_call(system, second)  # and the server takes calls as before


# --------------------------------------------------------------------------- barge-in


def loud_ms(path: Path, threshold: float = 1000.0) -> int:
    """How many ms of a recording are loud (20 ms windows): what the phone heard of the tone."""
    pcm, rate = read_wav(path.read_bytes())
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    window = rate // 50
    frames = samples[: samples.size // window * window].reshape(-1, window)
    return int(np.sum(np.sqrt(np.mean(frames**2, axis=1)) > threshold)) * 20


async def test_barge_in_cuts_the_answer_where_the_caller_stopped_hearing_it(
    vad: SileroVad, tmp_path: Path
) -> None:
    """Spec §5.7 over SIP: the server stops playing, and truncates the item at what was heard."""
    reply = "This is a long answer that goes on and on so that the caller can interrupt it. " * 3
    engines = engines_with(vad, llm=FakeLanguageModel(reply=reply), tts=FakeTextToSpeech())
    microphone = phone_audio(
        tmp_path, 1.0, QUESTION, 3.0, "Stop. Wait a moment please, I have another question.", 8.0
    )
    async with phone_system(engines, tmp_path) as system:
        phone = system.phone(microphone)
        call_id = (
            await answered_call(system, phone, audio={"output": {"voice": VOICE}})
        ).data.call_id
        async with system.sideband(call_id) as app:
            events = await until(app, "output_audio_buffer.started", 20)
            events += await until(app, "output_audio_buffer.cleared", 20)
            events += await until(app, "conversation.item.truncated", 10)
            kinds = [e["type"] for e in events]
            assert kinds.index(
                "input_audio_buffer.speech_started", kinds.index("output_audio_buffer.started")
            ) < kinds.index("output_audio_buffer.cleared"), kinds
            truncated = events[-1]
            full_ms = len(reply.strip()) * 60  # FakeTextToSpeech: 60 ms a character
            assert 500 < truncated["audio_end_ms"] < full_ms / 2, truncated
            await system.api.realtime.calls.hangup(call_id)
        assert await settled(lambda: phone.call_closed_reason() is not None)
    phone.stop()  # baresip completes its recording's WAV header when the call is torn down
    heard = phone.heard()
    assert heard is not None
    # the phone heard the answer for as long as the item now says it lasted (20 ms windows,
    # and the last frames sent before the clear)
    assert abs(loud_ms(heard) - truncated["audio_end_ms"]) < 300, (
        loud_ms(heard),
        truncated["audio_end_ms"],
    )


# --------------------------------------------------------------------------- through a trunk


@pytest.mark.parametrize(("proxies", "trunk_transport"), [(1, "udp"), (2, "udp"), (1, "tcp")])
async def test_a_call_through_proxies_as_a_trunk_sends_it(
    system: PhoneSystem, proxies: int, trunk_transport: str
) -> None:
    """kamailio in front (record-routing, one or two in a row; reaching us over UDP or TCP):
    their headers reach the application, and both the caller's requests (ACK) and ours (BYE)
    take the route the proxies set, in its order."""
    with contextlib.ExitStack() as stack:
        hop = next_hop = stack.enter_context(
            Kamailio(system.workdir, server_port=system.sip_port, server_transport=trunk_transport)
        )
        if proxies == 2:
            hop = stack.enter_context(Kamailio(system.workdir, server_port=next_hop.port))
        phone = system.phone()
        incoming = await answered_call(system, phone, hop.uri_for("sales"))
        headers = [(h.name.lower(), h.value) for h in incoming.data.sip_headers]
        assert ("x-trunk", "kamailio") in headers, headers
        assert [n for n, _ in headers].count("via") == 1 + proxies
        assert [n for n, _ in headers].count("record-route") >= proxies  # two from one on TCP
        call_id = incoming.data.call_id
        async with system.sideband(call_id) as app:
            phone.press("42")
            assert [e["event"] for e in await digits(app, 2)] == ["4", "2"]
            await system.api.realtime.calls.hangup(call_id)
            assert await closes(app)
        assert await settled(lambda: phone.call_closed_reason() is not None), hop.log[-3000:]
        assert phone.call_closed_reason() == "Connection reset by peer"  # our BYE got there
        assert "relay ACK" in next_hop.log  # the caller's ACK followed our Record-Route


async def test_a_server_shutting_down_hangs_up_and_declines(vad: SileroVad, tmp_path: Path) -> None:
    async with phone_system(engines_with(vad), tmp_path) as system:
        talking, ringing = system.phone(), system.phone(user="carol")
        await answered_call(system, talking)
        ringing.dial(system.uri())
        await system.incoming()
    assert await settled(lambda: talking.call_closed_reason() is not None)
    assert talking.call_closed_reason() == "Connection reset by peer"  # a BYE, not silence
    assert await settled(lambda: ringing.call_closed_reason() is not None)
    assert ringing.call_closed_reason() == "503 Service Unavailable"
