"""G.711 sessions (``audio/pcmu``, ``audio/pcma``; spec §3.1, design decision 2) as transcripts.

The core keeps PCM16 24 kHz inside: appended and created audio is decoded at the event, audio
deltas and retrieved audio are encoded, and every millisecond figure is the same on both sides.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from openrealtime.audio.formats import WireFormat, decode_clip, encode_clip
from openrealtime.audio.g711 import alaw_encode, ulaw_encode
from openrealtime.core import backend_events as be
from openrealtime.core.commands import DetectSpeech, Generate, Transcribe
from openrealtime.core.session import Limits
from tests.core.sim import FRAME, Sim, add_user_text, b64, types

G711: list[WireFormat] = ["audio/pcmu", "audio/pcma"]


def session(fmt: WireFormat, out: WireFormat | None = None, vad: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "instructions": "",
        "audio": {"input": {"format": {"type": fmt}}, "output": {"format": {"type": out or fmt}}},
    }
    if not vad:
        body["audio"]["input"]["turn_detection"] = None
    return body


def g711(fmt: WireFormat, ms: int, hz: float = 440.0) -> bytes:
    """``ms`` of a tone as 8 kHz G.711 bytes (8 per millisecond)."""
    t = np.arange(8 * ms) / 8000
    pcm = np.rint(6000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()
    return ulaw_encode(pcm) if fmt == "audio/pcmu" else alaw_encode(pcm)


def speech_pcm(ms: int) -> bytes:
    """``ms`` of a 24 kHz PCM16 tone (what an engine produces)."""
    t = np.arange(24 * ms) / 24000
    return np.rint(6000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def detected(sim: Sim) -> bytes:
    """The session audio handed to the VAD since the last call."""
    return b"".join(c.pcm16 for c in sim.commands(speech=True) if isinstance(c, DetectSpeech))


def transcribed(sim: Sim) -> bytes:
    (command,) = [c for c in sim.commands() if isinstance(c, Transcribe)]
    return command.pcm16


def audio_response(sim: Sim, chunks: list[bytes], **response: Any) -> list[dict[str, Any]]:
    add_user_text(sim, "hello")
    sim.send({"type": "response.create", **({"response": response} if response else {})})
    (command,) = sim.commands()
    assert isinstance(command, Generate)
    sim.backend(be.ResponseText(command.response_id, "Hello there."))
    for chunk in chunks:
        sim.backend(be.ResponseAudio(command.response_id, chunk))
    sim.backend(be.ResponseGenerated(command.response_id, "stop", 5, 5))
    return sim.events()


# ------------------------------------------------------------------ session object


@pytest.mark.parametrize("fmt", G711)
def test_session_shows_g711_formats_without_a_rate(fmt: WireFormat) -> None:
    sim = Sim(session=None)
    sim.send({"type": "session.update", "session": {"type": "realtime", **session(fmt)}})
    (updated,) = sim.events()
    audio = updated["session"]["audio"]
    assert audio["input"]["format"] == {"type": fmt}
    assert audio["output"]["format"] == {"type": fmt}
    # Back to PCM: the rate is shown again (the live default shape).
    sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm"}}}},
        }
    )
    (updated,) = sim.events()
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_unknown_format_is_refused_with_the_supported_values() -> None:
    sim = Sim()
    sim.send(
        {
            "type": "session.update",
            "event_id": "evt_fmt",
            "session": {
                "type": "realtime",
                "audio": {"output": {"format": {"type": "audio/g729"}}},
            },
        }
    )
    assert sim.error() == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Invalid value: 'audio/g729'. Supported values are: 'audio/pcm', "
        "'audio/pcmu', and 'audio/pcma'.",
        "param": "session.audio.output.format.type",
        "event_id": "evt_fmt",
    }


def test_transcription_session_takes_g711_input() -> None:
    sim = Sim("transcription", session={"audio": {"input": {"format": {"type": "audio/pcma"}}}})
    sim.audio(g711("audio/pcma", 200))
    sim.send({"type": "input_audio_buffer.commit"})
    assert types(sim.events())[0] == "input_audio_buffer.committed"
    assert len(transcribed(sim)) == 200 * 48


# ------------------------------------------------------------------ input


@pytest.mark.parametrize("fmt", G711)
def test_appended_g711_becomes_session_audio_exactly(fmt: WireFormat) -> None:
    """Chunks go through one stateful decoder; the commit flushes it: 3 samples per byte."""
    sim = Sim(session=session(fmt))
    wire = g711(fmt, 300)
    for start in range(0, len(wire), 160):  # 20 ms appends
        sim.audio(wire[start : start + 160])
    assert sim.events() == []  # appends are not acknowledged
    streamed = detected(sim)
    assert 0 < len(streamed) < len(wire) * 6  # the resampler holds some back while streaming
    sim.send({"type": "input_audio_buffer.commit"})
    assert types(sim.events()) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    # Streaming then flushing gives exactly the whole clip's conversion.
    assert transcribed(sim) == decode_clip(wire, fmt)


@pytest.mark.parametrize("fmt", G711)
def test_commit_of_exactly_100_ms_of_g711(fmt: WireFormat) -> None:
    sim = Sim(session=session(fmt))
    sim.audio(g711(fmt, 99))
    sim.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
    assert sim.error()["message"].endswith("but buffer only has 99.00ms of audio.")
    sim.audio(g711(fmt, 1))  # the buffer kept the 99 ms: now 100 ms
    sim.send({"type": "input_audio_buffer.commit"})
    assert types(sim.events())[0] == "input_audio_buffer.committed"
    assert len(transcribed(sim)) == 100 * 48


def test_limit_applies_to_the_appended_payload() -> None:
    """15 MiB per append counts wire bytes: G.711 that decodes to more PCM is still one append."""
    sim = Sim(limits=Limits(max_append_bytes=1000), session=session("audio/pcmu"))
    sim.audio(bytes(1000))
    assert sim.events() == []
    sim.audio(bytes(1001), event_id="evt_big")
    error = sim.error()
    assert error["code"] == "input_audio_buffer_append_too_large"
    assert error["event_id"] == "evt_big"


def test_clear_drops_what_the_decoder_holds() -> None:
    sim = Sim(session=session("audio/pcmu"))
    sim.audio(g711("audio/pcmu", 150, hz=900.0))
    sim.send({"type": "input_audio_buffer.clear"})
    assert sim.types() == ["input_audio_buffer.cleared"]
    sim.commands(speech=True)
    wire = g711("audio/pcmu", 120)
    sim.audio(wire)
    sim.send({"type": "input_audio_buffer.commit"})
    assert transcribed(sim) == decode_clip(wire, "audio/pcmu")


def test_changing_the_input_format_restarts_the_decoder() -> None:
    """The old format's held-back audio is appended first; the new one starts afresh."""
    sim = Sim(session=session("audio/pcmu"))
    first = g711("audio/pcmu", 60)
    sim.audio(first)
    sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcma"}}}},
        }
    )
    assert sim.types() == ["session.updated"]
    second = g711("audio/pcma", 60, hz=700.0)
    sim.audio(second)
    sim.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm"}}}},
        }
    )
    third = speech_pcm(40)
    sim.audio(third)
    sim.send({"type": "input_audio_buffer.commit"})
    expected = decode_clip(first, "audio/pcmu") + decode_clip(second, "audio/pcma") + third
    assert transcribed(sim) == expected


def test_server_vad_turn_in_a_g711_session() -> None:
    """VAD positions are session samples: speech events carry the same ms as a PCM session."""
    seen = []
    cases: list[tuple[WireFormat, bytes]] = [
        ("audio/pcmu", g711("audio/pcmu", 32 * 40)),
        ("audio/pcm", speech_pcm(32 * 40)),
    ]
    for fmt, audio in cases:
        sim = Sim(session=session(fmt, vad=True))
        sim.audio(audio)
        assert len(detected(sim)) >= FRAME * 30
        sim.vad([0.0] * 10 + [0.9] * 10 + [0.0] * 10)
        events = sim.events()
        assert types(events)[:2] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
        ]
        seen.append((events[0]["audio_start_ms"], events[1]["audio_end_ms"]))
    assert seen[0] == seen[1]
    assert seen[0][0] == 10 * 32 - 300  # prefix padding 300 ms


# ------------------------------------------------------------------ output


@pytest.mark.parametrize("fmt", G711)
def test_audio_deltas_are_g711_at_8_khz(fmt: WireFormat) -> None:
    sim = Sim(session=session(fmt))
    pcm = speech_pcm(1000)
    chunks = [pcm[i : i + 4800] for i in range(0, len(pcm), 4800)]  # 100 ms chunks
    events = audio_response(sim, chunks)
    created = events[0]
    assert created["response"]["audio"]["output"]["format"] == {"type": fmt}
    kinds = types(events)
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    last_delta = max(i for i, k in enumerate(kinds) if k == "response.output_audio.delta")
    assert kinds[last_delta + 1] == "response.output_audio.done"  # the flushed tail comes first
    wire = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert len(wire) == 8 * 1000  # 1 s at 8 kHz, one byte per sample: exact
    assert wire == encode_clip(pcm, fmt)
    assert events[-2]["response"]["audio"]["output"]["format"] == {"type": fmt}


def test_response_can_choose_its_own_output_format() -> None:
    sim = Sim(session=session("audio/pcmu"))
    pcm = speech_pcm(300)
    events = audio_response(sim, [pcm], audio={"output": {"format": {"type": "audio/pcma"}}})
    assert events[0]["response"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert b"".join(base64.b64decode(d["delta"]) for d in deltas) == encode_clip(pcm, "audio/pcma")


def test_pcm_output_is_unchanged_in_a_g711_input_session() -> None:
    sim = Sim(session=session("audio/pcmu", out="audio/pcm"))
    pcm = speech_pcm(100)
    events = audio_response(sim, [pcm])
    assert events[0]["response"]["audio"]["output"]["format"] == {
        "type": "audio/pcm",
        "rate": 24000,
    }
    deltas = [e["delta"] for e in events if e["type"] == "response.output_audio.delta"]
    assert deltas == [b64(pcm)]


def test_cancelled_response_sends_no_tail_after_cancel() -> None:
    sim = Sim(session=session("audio/pcmu"))
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    sim.commands()
    sim.backend(be.ResponseAudio("resp_1", speech_pcm(200)))
    sim.events()
    sim.send({"type": "response.cancel"})
    kinds = sim.types()
    assert "response.output_audio.delta" not in kinds
    assert kinds[0] == "response.output_audio.done"


@pytest.mark.parametrize("fmt", G711)
def test_truncation_stays_in_milliseconds(fmt: WireFormat) -> None:
    """A client that played n G.711 bytes truncates at n / 8 ms; the server agrees exactly."""
    sim = Sim(session=session(fmt))
    events = audio_response(sim, [speech_pcm(1000)])
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    played_ms = sum(len(base64.b64decode(d["delta"])) for d in deltas) // 8
    assert played_ms == 1000
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_2",
            "content_index": 0,
            "audio_end_ms": played_ms + 1,
        }
    )
    assert sim.error()["message"] == "Audio content of 1000ms is already shorter than 1001ms"
    sim.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_2",
            "content_index": 0,
            "audio_end_ms": 250,
        }
    )
    (truncated,) = sim.events()
    assert truncated["audio_end_ms"] == 250
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_2"})
    (retrieved,) = sim.events()
    audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
    assert len(audio) == 250 * 8


# ------------------------------------------------------------------ items


def test_retrieve_gives_each_part_in_its_direction_s_format() -> None:
    """User audio in ``audio.input.format``, assistant audio in ``audio.output.format``."""
    sim = Sim(session=session("audio/pcma", out="audio/pcmu"))
    wire = g711("audio/pcma", 200)
    sim.audio(wire)
    sim.send({"type": "input_audio_buffer.commit"})
    sim.events()
    stored = transcribed(sim)
    sim.backend(be.TranscriptionCompleted("item_1", "hi", 0.2))
    sim.events()
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_1"})
    (retrieved,) = sim.events()
    user_audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
    assert user_audio == encode_clip(stored, "audio/pcma")
    assert len(user_audio) == len(wire)

    pcm = speech_pcm(400)
    audio_response(sim, [pcm])
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_3"})
    (retrieved,) = sim.events()
    assert retrieved["item"]["role"] == "assistant"
    assistant_audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
    assert assistant_audio == encode_clip(pcm, "audio/pcmu")


@pytest.mark.parametrize("fmt", G711)
def test_item_create_with_g711_audio(fmt: WireFormat) -> None:
    sim = Sim(session=session(fmt))
    wire = g711(fmt, 250)
    sim.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": b64(wire)}],
            },
        }
    )
    assert sim.types() == ["conversation.item.added", "conversation.item.done"]
    assert transcribed(sim) == decode_clip(wire, fmt)
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_1"})
    (retrieved,) = sim.events()
    assert len(base64.b64decode(retrieved["item"]["content"][0]["audio"])) == len(wire)
