"""A real browser calls the server over WebRTC (spec §1.3): headless Chromium through selenium.

The page is served from a second origin, so the call exercises CORS (preflight, reading
``Location``), Chromium's own SDP parser on the answer, ``event.streams[0]`` (``a=msid``), ICE
from an offer without candidates, the data channel, and the Opus audio the browser receives.
Skipped when Chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from openrealtime.app import create_app
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import FakeLanguageModel, FakeSpeechToText, FakeTextToSpeech
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.config import Config
from openrealtime.transports.webrtc import call_registry
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server

API_KEY = "sk-webrtc-browser-0123456789abcdef"

PAGE = """<!doctype html><meta charset="utf-8"><title>call</title><script>
window.result = null;
(async () => {
  const out = { events: [] };
  try {
    const pc = new RTCPeerConnection();
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    pc.addTrack(mic.getAudioTracks()[0]);
    const dc = pc.createDataChannel('oai-events');
    dc.onmessage = (e) => out.events.push(JSON.parse(e.data));
    out.peak = 0;
    pc.ontrack = (e) => {
      out.hasStream = !!e.streams[0];
      const audio = new Audio(); audio.muted = true; audio.srcObject = e.streams[0];
      audio.play().catch(() => {});
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      ctx.createMediaStreamSource(e.streams[0]).connect(analyser);
      const buf = new Float32Array(analyser.fftSize);
      setInterval(() => {
        analyser.getFloatTimeDomainData(buf);
        let sum = 0; for (const v of buf) sum += v * v;
        out.peak = Math.max(out.peak, Math.sqrt(sum / buf.length));
      }, 20);
    };
    await pc.setLocalDescription(await pc.createOffer());
    const response = await fetch(SERVER + '/v1/realtime/calls', {
      method: 'POST',
      body: pc.localDescription.sdp,
      headers: {
        'Content-Type': 'application/sdp',
        Authorization: 'Bearer ' + KEY,
        'X-OpenAI-Agents-SDK': 'openai-agents-sdk.test',
      },
    });
    out.status = response.status;
    out.location = response.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    if (dc.readyState !== 'open') await new Promise((r) => { dc.onopen = r; });
    const send = (e) => dc.send(JSON.stringify(e));
    send({ type: 'session.update',
           session: { type: 'realtime', audio: { input: { turn_detection: null } } } });
    send({ type: 'conversation.item.create', item: { type: 'message', role: 'user',
           content: [{ type: 'input_text', text: 'hello browser' }] } });
    send({ type: 'response.create' });
    const deadline = Date.now() + 15000;
    while (!out.events.some((e) => e.type === 'output_audio_buffer.stopped')) {
      if (Date.now() > deadline) throw new Error('no output_audio_buffer.stopped');
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300));
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.packets = s.packetsReceived;
      }
    });
    pc.close();
  } catch (e) {
    out.error = String(e);
  }
  window.result = out;
})();
</script>"""


def _browser_available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


if os.environ.get("CI") and not _browser_available():
    pytest.fail("CI must run the browser tests: apt-get install chromium chromium-driver")
pytestmark = pytest.mark.skipif(not _browser_available(), reason="needs chromium + selenium")


def _run_chromium(url: str, wait_s: float = 40.0) -> dict[str, Any]:
    """Open ``url`` in headless Chromium with a fake microphone; return ``window.result``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            result = driver.execute_script("return window.result")
            if result is not None:
                return dict(result)
            time.sleep(0.1)
        raise AssertionError("the page did not finish")
    finally:
        driver.quit()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, str, Any]]:
    """The API server, and a second origin serving the test page."""
    engines = Engines(
        vad=SileroVad.from_cache(),
        stt=FakeSpeechToText(),
        llm=FakeLanguageModel(),
        tts=FakeTextToSpeech(),
    )
    app = create_app(Config(api_keys=(API_KEY,)), engines)
    async with running_server(app) as api:

        async def page(request: Request) -> HTMLResponse:
            head = f"<script>const SERVER = {json.dumps(api)}; const KEY = {json.dumps(API_KEY)};"
            return HTMLResponse(PAGE.replace("<script>", head + "</script><script>", 1))

        site = Starlette(routes=[Route("/", page)])
        async with running_server(site, config=Config()) as web:
            yield api, web, app


async def test_chromium_calls_across_origins_and_hears_the_answer(
    servers: tuple[str, str, Any],
) -> None:
    api, web, app = servers
    result = await asyncio.to_thread(_run_chromium, web + "/")
    assert "error" not in result, result
    assert result["status"] == 201
    assert result["location"].startswith("/v1/realtime/calls/rtc_")
    assert result["hasStream"] is True  # a=msid: agents-js plays e.streams[0]
    for event in result["events"]:
        SERVER_EVENT.validate_python(event)
    types = [e["type"] for e in result["events"]]
    assert types[0] == "session.created"
    assert "response.output_audio.delta" not in types
    assert types.index("output_audio_buffer.started") < types.index("output_audio_buffer.stopped")
    assert result["packets"] > 50
    assert result["peak"] > 0.08, result["peak"]  # the answer was audible (RMS, full scale 1)
    async with asyncio.timeout(10):
        while len(call_registry(app)):  # noqa: ASYNC110 - the browser closed: the call ends
            await asyncio.sleep(0.05)
