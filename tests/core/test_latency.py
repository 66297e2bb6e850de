"""Per-turn latency stamps, measured from when the last speech audio arrived."""

from __future__ import annotations

from openrealtime.core import backend_events as be
from openrealtime.core.commands import Generate
from tests.core.sim import FRAME, Sim, frames_pcm


def test_stages_are_stamped_from_the_end_of_speech() -> None:
    sim = Sim()
    # 10 speech frames arrive at t=1000 ms, then silence frame by frame, 32 ms apart.
    sim.time(1000)
    sim.audio(frames_pcm(10))
    sim.vad([0.9] * 10)
    t = 1000
    while "input_audio_buffer.speech_stopped" not in sim.types():
        t += 32
        sim.time(t)
        sim.audio(frames_pcm(1))
        sim.vad([0.0])
    vad_end = t
    item_id = next(c for c in sim.commands() if not isinstance(c, Generate)).item_id  # type: ignore[union-attr]
    sim.time(t + 40)
    sim.backend(be.TranscriptionCompleted(item_id, "hello", 0.3))
    generate = next(c for c in sim.commands() if isinstance(c, Generate))
    rid = generate.response_id
    sim.time(t + 60)
    sim.backend(be.ResponseFirstToken(rid))
    sim.time(t + 70)
    sim.backend(be.ResponseText(rid, "Hi there."))
    assert sim.session.take_latency(rid) is None  # no audio yet
    sim.time(t + 75)
    sim.backend(be.ResponseAudio(rid, b"\x00\x01" * FRAME))
    record = sim.session.take_latency(rid)
    assert record is not None
    assert record.stages() == {
        "vad_end": vad_end - 1000,
        "turn_decision": vad_end - 1000,
        "stt_final": vad_end + 40 - 1000,
        "llm_first_token": vad_end + 60 - 1000,
        "tts_first_audio": vad_end + 75 - 1000,
        "first_delta_sent": None,
    }
    assert sim.session.take_latency(rid) is None  # handed out once
    assert "latency from end of speech" in record.describe()
