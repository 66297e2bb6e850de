"""G.711 sessions (``audio/pcmu``, ``audio/pcma``) over a real socket with the official SDK.

Spec §3.1: G.711 is 8 kHz, one byte per sample. The speech is real (flite, voice rms) turned
into G.711 by sox when it is installed (an encoder independent of ours), the VAD is the real
Silero model, and the reply comes from the deterministic fake TTS, so its exact length is known.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from openrealtime.audio.formats import WireFormat, encode_clip
from openrealtime.audio.g711 import alaw_decode, ulaw_decode
from openrealtime.backends.fake import FakeTextToSpeech
from tests.conformance.conftest import Client, ServerFactory, Speech, sdk_client, silence

G711_RATE = 8000
BYTES_PER_MS = G711_RATE // 1000
"""G.711 bytes per millisecond: one byte per sample at 8 kHz."""

VOICE_HZ = 180 + 20 * (sum(b"alloy") % 10)
"""The fake TTS's pitch for the default voice (280 Hz)."""


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def to_g711(pcm24k: bytes, fmt: WireFormat) -> bytes:
    """24 kHz PCM16 -> 8 kHz G.711, with sox when present (else our own converter)."""
    if shutil.which("sox") is None:
        return encode_clip(pcm24k, fmt)
    encoding = "u-law" if fmt == "audio/pcmu" else "a-law"
    raw_in = ["-t", "raw", "-r", "24000", "-e", "signed", "-b", "16", "-c", "1", "-L", "-"]
    raw_out = ["-t", "raw", "-r", "8000", "-e", encoding, "-c", "1", "-"]
    done = subprocess.run(
        ["sox", "-D", "-V1", *raw_in, *raw_out], input=pcm24k, capture_output=True, check=True
    )
    return done.stdout


def g711_decode(data: bytes, fmt: WireFormat) -> np.ndarray:
    pcm = ulaw_decode(data) if fmt == "audio/pcmu" else alaw_decode(data)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


async def stream_g711(
    client: Client, wire: bytes, *, chunk_ms: int = 20, speedup: float = 8.0
) -> None:
    """Append G.711 in ``chunk_ms`` pieces, paced at ``speedup`` times real time."""
    step = chunk_ms * BYTES_PER_MS
    for start in range(0, len(wire), step):
        chunk = base64.b64encode(wire[start : start + step]).decode("ascii")
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})
        await asyncio.sleep(chunk_ms / 1000 / speedup)


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
async def test_g711_voice_turn(
    start_server: ServerFactory, speak: Callable[[str], Speech], fmt: WireFormat
) -> None:
    tts = FakeTextToSpeech()
    base = await start_server(tts=tts)
    speech = speak("What is the capital of France?")
    lead_ms, tail_ms = 500, 1500
    wire = to_g711(silence(lead_ms) + speech.pcm + silence(tail_ms), fmt)
    assert abs(len(wire) / BYTES_PER_MS - (lead_ms + speech.duration_ms + tail_ms)) <= 1
    onset = lead_ms + speech.onset_ms
    end = lead_ms + speech.end_ms

    async with sdk_client(base) as client:
        g711 = {"type": fmt}
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": g711}, "output": {"format": g711}},
                },
            }
        )
        session = (await client.expect("session.updated"))["session"]
        assert session["audio"]["input"]["format"] == {"type": fmt}
        assert session["audio"]["output"]["format"] == {"type": fmt}
        vad = session["audio"]["input"]["turn_detection"]

        sender = asyncio.create_task(stream_g711(client, wire))
        try:
            events = await client.collect_until("response.done")
        finally:
            await sender

        # The turn is found in the G.711 audio, in the client's milliseconds.
        (started,) = of_type(events, "input_audio_buffer.speech_started")
        (stopped,) = of_type(events, "input_audio_buffer.speech_stopped")
        assert onset - 350 <= started["audio_start_ms"] <= onset, (started, onset)
        silence_ms = vad["silence_duration_ms"]
        assert end + silence_ms - 50 <= stopped["audio_end_ms"] <= end + silence_ms + 250, (
            stopped,
            end,
        )

        # The reply: the response says G.711, its deltas are G.711 at 8 kHz of the exact length.
        (created,) = of_type(events, "response.created")
        assert created["response"]["audio"]["output"]["format"] == {"type": fmt}
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert done["audio"]["output"]["format"] == {"type": fmt}
        deltas = of_type(events, "response.output_audio.delta")
        out = b"".join(base64.b64decode(d["delta"]) for d in deltas)
        spoken = sum(
            int(len(r.text.strip()) * tts.ms_per_char / 1000 / max(r.speed, 0.25) * 24000)
            for r in tts.requests
        )
        assert spoken > 0
        assert len(out) == spoken // 3  # 24 kHz samples -> 8 kHz bytes, exactly
        samples = g711_decode(out, fmt)
        spectrum = np.abs(np.fft.rfft(samples - samples.mean()))
        peak_hz = np.argmax(spectrum) * G711_RATE / len(samples)
        assert abs(peak_hz - VOICE_HZ) <= 3, peak_hz  # read at 8 kHz, the voice's pitch
        assert 0.5 * 32767 * 0.3 < np.sqrt(2 * np.mean(samples**2)) < 1.2 * 32767 * 0.3
        await client.expect("rate_limits.updated")

        # The user item comes back in the input format: the detected turn, in G.711 bytes.
        user_id = started["item_id"]
        await client.send({"type": "conversation.item.retrieve", "item_id": user_id})
        item = (await client.expect("conversation.item.retrieved"))["item"]
        turn_ms = len(base64.b64decode(item["content"][0]["audio"])) / BYTES_PER_MS
        expected_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
        assert abs(turn_ms - expected_ms) <= 40, (turn_ms, expected_ms)

        # Truncation counts the milliseconds the client played from those bytes, exactly.
        (assistant,) = done["output"]
        played_ms = len(out) // BYTES_PER_MS
        truncate = {
            "type": "conversation.item.truncate",
            "item_id": assistant["id"],
            "content_index": 0,
        }
        await client.send({**truncate, "audio_end_ms": played_ms + 1})
        error = (await client.expect("error"))["error"]
        assert error["message"] == (
            f"Audio content of {played_ms}ms is already shorter than {played_ms + 1}ms"
        )
        await client.send({**truncate, "audio_end_ms": played_ms - 100})
        truncated = await client.expect("conversation.item.truncated")
        assert truncated["audio_end_ms"] == played_ms - 100
        await client.send({"type": "conversation.item.retrieve", "item_id": assistant["id"]})
        item = (await client.expect("conversation.item.retrieved"))["item"]
        kept = base64.b64decode(item["content"][0]["audio"])
        assert len(kept) == (played_ms - 100) * BYTES_PER_MS


async def test_invalid_format_value_is_refused_and_the_session_goes_on(
    start_server: ServerFactory,
) -> None:
    base = await start_server()
    async with sdk_client(base) as client:
        await client.send(
            {
                "type": "session.update",
                "event_id": "evt_fmt",
                "session": {
                    "type": "realtime",
                    "audio": {"output": {"format": {"type": "audio/g729"}}},
                },
            }
        )
        error = (await client.expect("error"))["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "Invalid value: 'audio/g729'. Supported values are: 'audio/pcm', "
            "'audio/pcmu', and 'audio/pcma'.",
            "param": "session.audio.output.format.type",
            "event_id": "evt_fmt",
        }
        # Nothing changed: the formats are still the default PCM.
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        session = (await client.expect("session.updated"))["session"]
        pcm = {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["format"] == pcm
        assert session["audio"]["output"]["format"] == pcm
