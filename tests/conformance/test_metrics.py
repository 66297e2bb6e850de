"""``GET /metrics`` after real sessions, read with Prometheus' own parser (issue 9, item 4).

A spoken turn (real Silero, flite speech, fake STT/LLM/TTS) and a few text events go through
the official SDK; the scrape before and after is parsed with
``prometheus_client.parser.text_string_to_metric_families`` and the differences are what a
dashboard would show for that traffic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conformance.conftest import API_KEY, Connect, Speech, silence, stream_audio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_after_real_sessions(
    connect: Connect, server: str, speak: Callable[[str], Speech]
) -> None:
    before = await scrape(server)
    speech = speak("What is the capital of France?")
    audio = silence(300) + speech.pcm + silence(1500)
    async with connect() as client:
        sender = asyncio.create_task(stream_audio(client, audio, chunk_ms=20, speedup=8))
        try:
            await client.collect_until("response.done")
        finally:
            await sender
        opened = await scrape(server)
        assert value(opened, "openrealtime_sessions_open", transport="websocket") >= 1
        await client.send({"type": "nope"})
        await client.collect_until("error", allow_errors=True)
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.collect_until("response.done")
    await asyncio.sleep(0.6)  # the loop-lag sampler runs every 0.5 s
    after = await scrape(server)

    assert grew(before, after, "openrealtime_sessions_total", transport="websocket") == 1
    assert value(after, "openrealtime_sessions_open", transport="websocket") == value(
        before, "openrealtime_sessions_open", transport="websocket"
    )
    appends = grew(
        before, after, "openrealtime_client_events_total", type="input_audio_buffer.append"
    )
    assert appends == len(audio) // 960 + (1 if len(audio) % 960 else 0)
    assert grew(before, after, "openrealtime_client_events_total", type="invalid") == 1
    assert grew(before, after, "openrealtime_errors_total", code="invalid_value") == 1
    assert grew(before, after, "openrealtime_responses_total", status="completed") == 2
    for kind in ("input_audio_buffer.speech_stopped", "response.done", "error"):
        assert grew(before, after, "openrealtime_server_events_total", type=kind) >= 1, kind
    for stage in ("vad_end", "turn_decision", "stt_final", "llm_first_token", "first_delta_sent"):
        count = grew(before, after, "openrealtime_turn_stage_seconds_count", stage=stage)
        assert count == 1, (stage, count)
    assert (
        grew(before, after, "openrealtime_engine_seconds_count", engine="llm", stage="first") == 2
    )
    assert (
        grew(before, after, "openrealtime_engine_seconds_count", engine="stt", stage="total") == 1
    )
    assert grew(before, after, "openrealtime_vad_batch_size_count") > 0
    assert grew(before, after, "openrealtime_event_loop_lag_seconds_count") > 0


async def test_metrics_need_a_key_when_keys_are_set(server: str) -> None:
    async with httpx.AsyncClient() as http:
        refused = await http.get(f"{server}/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "invalid_request_error"
