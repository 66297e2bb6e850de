"""The playground in a real browser: headless Chromium (Selenium) against ``openrealtime serve``.

``test_page_loads_disconnected`` opens the page on a server with the fake engines and checks it
renders without a script error. ``test_spoken_call_with_barge_in`` is the whole product path:
the embedded engines behind ``openrealtime serve``, and Chromium's fake microphone playing a
WAV file of real speech (flite, voice ``rms``, 48 kHz): the page connects over WebRTC
(``POST /v1/realtime/calls``, data channel ``oai-events``), the user's words show in the
transcript, the assistant's audio arrives on the track and is not silent, and speaking over the
answer (barge-in) leaves a truncated assistant item marked in the chat.

Screenshots of each stage are written to :data:`ARTIFACTS` (``artifacts/playground/`` at the
repository root, ignored by git) for people to look at.

Skipped when Chromium, chromedriver or selenium is missing (Debian: ``apt-get install chromium
chromium-driver``; ``pip install selenium``); the spoken test also needs ``flite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from openrealtime.audio.resample import resample

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("OPENREALTIME_ARTIFACTS", REPO / "artifacts")) / "playground"
"""Where the screenshots, the speech WAV and the server log go."""

API_KEY = "sk-playground-browser-test-0123456789"
RATE = 48_000
STORYTELLER = (
    "You are a storyteller. Whatever the user says, answer with a very long and detailed "
    "story of at least twenty sentences."
)
QUESTION = "Tell me a long story about a dragon."
QUESTION_WORDS = ("story", "dragon")
INTERRUPTION = "Stop. What time is it?"

selenium = pytest.importorskip(
    "selenium", reason="selenium is not installed (pip install selenium)"
)
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = next(
    (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))),
    None,
)
CHROMEDRIVER = shutil.which("chromedriver")
if os.environ.get("CI") and (CHROMIUM is None or CHROMEDRIVER is None):
    pytest.fail("CI must run the browser tests: apt-get install chromium chromium-driver")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="Chromium and chromedriver are needed (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.timeout(300),
]


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(*flags: str, log_name: str, ready_s: float = 120.0) -> Iterator[str]:
    """Run ``openrealtime serve`` on a free loopback port; yield its base URL; stop it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    with (ARTIFACTS / log_name).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "openrealtime", "serve", "--port", str(port), *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_s
            while True:
                if process.poll() is not None:
                    pytest.fail(f"openrealtime serve exited ({process.returncode}); see {log.name}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"openrealtime serve did not start in {ready_s} s; see {log.name}")
                time.sleep(0.2)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --------------------------------------------------------------------------- browser


@contextlib.contextmanager
def chromium(*, fake_audio: Path | None = None, dark: bool = False) -> Iterator[Any]:
    """Headless Chromium with a fake microphone (a WAV file, played once) at 1440x900."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    if fake_audio is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        scheme = "dark" if dark else "light"
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def script_errors(driver: Any) -> list[str]:
    """Errors in the browser console (script errors, failed requests)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(driver: Any, what: str, check: Callable[[Any], Any], timeout: float) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(check)
    except TimeoutException:
        screenshot(driver, "failure.png")
        log = driver.execute_script(
            "return [...document.querySelectorAll('.ev')].map(e => e.textContent).join('\\n')"
        )
        (ARTIFACTS / "failure-events.txt").write_text(log)
        pytest.fail(f"timed out after {timeout} s waiting for {what}; see {ARTIFACTS}")


def chat_texts(driver: Any, role: str) -> list[str]:
    return [
        str(text)
        for text in driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(n => n.textContent)",
            f".msg.{role} .body",
        )
    ]


# --------------------------------------------------------------------------- speech


def flite_wav(parts: list[tuple[str | None, float]], path: Path) -> Path:
    """A 48 kHz mono WAV of silences (``(None, seconds)``) and flite speech (``(text, 0)``)."""
    if shutil.which("flite") is None:
        if os.environ.get("CI"):
            pytest.fail("flite is required in CI (apt-get install flite)")
        pytest.skip("flite is not installed (apt-get install flite)")
    pcm = bytearray()
    for i, (text, seconds) in enumerate(parts):
        if text is None:
            pcm += bytes(2 * int(RATE * seconds))
            continue
        raw_path = path.with_name(f"{path.stem}-{i}.raw.wav")
        subprocess.run(["flite", "-voice", "rms", "-t", text, "-o", str(raw_path)], check=True)
        with wave.open(str(raw_path), "rb") as raw:
            rate = raw.getframerate()
            pcm += resample(raw.readframes(raw.getnframes()), rate, RATE)
        raw_path.unlink()
    samples = np.frombuffer(bytes(pcm), dtype="<i2")
    assert np.abs(samples).max() > 1000, "flite produced silence"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(pcm))
    return path


# --------------------------------------------------------------------------- tests


FAKE_ENGINES = (
    "--stt",
    "fake",
    "--llm",
    "fake",
    "--tts",
    "fake",
    "--vad",
    "energy",
    "--turn",
    "none",
)


def sent_types(driver: Any) -> list[str]:
    return [
        str(t)
        for t in driver.execute_script(
            "return [...document.querySelectorAll('.ev[data-dir=out] .ev-type')]"
            ".map(n => n.textContent)"
        )
    ]


def test_page_loads_disconnected() -> None:
    with serve(*FAKE_ENGINES, log_name="server-fake.log") as base, chromium() as driver:
        driver.get(base + "/")
        wait_for(
            driver,
            "the page script",
            lambda d: d.execute_script("return !!window.__playground"),
            15,
        )
        assert driver.title.startswith("openrealtime")
        assert driver.find_element(By.ID, "conn-text").text == "Disconnected"
        assert driver.find_element(By.ID, "connect-btn").is_enabled()
        assert not driver.find_element(By.ID, "send-btn").is_enabled()
        # the settings build a valid session; invalid tools are caught before anything is sent
        tools = driver.find_element(By.ID, "tools")
        tools.clear()
        tools.send_keys('[{"type": "function", "name": "bad name"}]')
        status = driver.find_element(By.ID, "tools-status")
        assert status.get_attribute("data-ok") == "false", status.text
        screenshot(driver, "00-invalid-tools.png")
        driver.find_element(By.ID, "tools-example").click()
        assert status.get_attribute("data-ok") == "true", status.text
        driver.find_element(By.ID, "reset-btn").click()
        screenshot(driver, "01-disconnected-light.png")
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        time.sleep(0.3)
        screenshot(driver, "01-disconnected-dark.png")
        assert script_errors(driver) == []


def test_spoken_call_with_barge_in(tmp_path: Path) -> None:
    wav = flite_wav(
        [
            (None, 4.0),  # the call is set up meanwhile (the file starts with getUserMedia)
            (QUESTION, 0),
            (None, 6.0),  # the answer starts and is still being spoken...
            (INTERRUPTION, 0),  # ...when the user talks over it
            (None, 30.0),
        ],
        ARTIFACTS / "speech-48k.wav",
    )
    with (
        serve("--api-key", API_KEY, log_name="server-embedded.log", ready_s=240) as base,
        chromium(fake_audio=wav) as driver,
    ):
        driver.get(base + "/")
        wait_for(
            driver,
            "the page script",
            lambda d: d.execute_script("return !!window.__playground"),
            15,
        )
        driver.find_element(By.ID, "api-key").send_keys(API_KEY)
        instructions = driver.find_element(By.ID, "instructions")
        instructions.send_keys(STORYTELLER)
        # raw microphone: the browser's echo canceller would duck the barge-in under the answer
        driver.find_element(By.CSS_SELECTOR, "#session-form details summary").click()
        for box in ("echo_cancellation", "noise_suppression", "auto_gain_control"):
            element = driver.find_element(By.ID, box)
            if element.is_selected():
                element.click()
        driver.find_element(By.ID, "connect-btn").click()

        wait_for(
            driver,
            "the call",
            lambda d: d.execute_script("return window.__playground.phase === 'connected'"),
            30,
        )
        call_id = driver.execute_script("return window.__playground.callId")
        assert str(call_id).startswith("rtc_"), call_id
        session = driver.execute_script("return window.__playground.effectiveSession")
        assert session is not None and session["instructions"] == STORYTELLER, session
        assert session["audio"]["input"]["transcription"] is not None

        # the user's words appear in the transcript
        def heard_question(d: Any) -> bool:
            texts = [t.lower() for t in chat_texts(d, "user")]
            return any(all(word in t for word in QUESTION_WORDS) for t in texts)

        wait_for(driver, "the question in the user transcript", heard_question, 45)

        # the assistant's audio arrives on the WebRTC track and is not silent
        def audible(d: Any) -> bool:
            stats = d.execute_script("return window.__playground.audioStats()")
            return bool(stats["outputPeakRms"] > 0.01)  # louder than -40 dBFS

        wait_for(driver, "audible assistant audio", audible, 45)
        wait_for(
            driver,
            "assistant transcript text",
            lambda d: any(t.strip() for t in chat_texts(d, "assistant")),
            20,
        )
        screenshot(driver, "02-answer.png")

        # barge-in: the interruption cuts the answer, which is marked truncated
        wait_for(
            driver,
            "a truncated assistant item",
            lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant.truncated .tag.truncated"),
            60,
        )
        tag = driver.find_element(By.CSS_SELECTOR, ".msg.assistant.truncated .tag.truncated").text
        assert "truncated" in tag.lower(), tag
        events = driver.execute_script(
            "return [...document.querySelectorAll('.ev .ev-type')].map(n => n.textContent)"
        )
        assert "output_audio_buffer.cleared" in events, events[-40:]
        assert "conversation.item.truncated" in events, events[-40:]
        time.sleep(2.0)  # the interruption's own transcript, for the picture
        screenshot(driver, "03-barge-in.png")

        turns = driver.execute_script("return window.__playground.turns")
        assert any(t["heard"] is not None for t in turns), turns
        driver.find_element(By.ID, "tab-turns").click()
        screenshot(driver, "04-latency.png")

        driver.find_element(By.ID, "connect-btn").click()  # hang up
        wait_for(
            driver,
            "the hang-up",
            lambda d: d.execute_script("return window.__playground.phase === 'idle'"),
            10,
        )
        time.sleep(0.3)  # let the colour transitions settle, for the picture
        screenshot(driver, "05-hung-up.png")
        assert not driver.find_elements(By.CSS_SELECTOR, ".msg.live"), (
            "still streaming after hang-up"
        )
        assert script_errors(driver) == []


def test_ephemeral_key_text_message_and_push_to_talk() -> None:
    """The fake engines answer "You said: …"; Chromium's fake microphone beeps."""
    with (
        serve(*FAKE_ENGINES, "--api-key", API_KEY, log_name="server-fake-auth.log") as base,
        chromium() as driver,
    ):
        driver.get(base + "/")
        wait_for(
            driver,
            "the page script",
            lambda d: d.execute_script("return !!window.__playground"),
            15,
        )
        driver.find_element(By.CSS_SELECTOR, 'input[name="auth"][value="ephemeral"]').click()
        driver.find_element(By.ID, "api-key").send_keys(API_KEY)
        driver.find_element(By.ID, "connect-btn").click()
        wait_for(
            driver,
            "the call",
            lambda d: d.execute_script("return window.__playground.phase === 'connected'"),
            30,
        )
        notes = driver.execute_script(
            "return [...document.querySelectorAll('.ev[data-family=note] .ev-sum')]"
            ".map(n => n.textContent)"
        )
        assert any(n.startswith("client secret ek_") for n in notes), notes

        # a text message: conversation.item.create + response.create
        message = driver.find_element(By.ID, "message")
        message.send_keys("hello there", Keys.ENTER)
        wait_for(
            driver,
            "the answer to the text",
            lambda d: any("You said: hello there" in t for t in chat_texts(d, "assistant")),
            20,
        )
        assert sent_types(driver)[-2:] == ["conversation.item.create", "response.create"]

        # P switches push-to-talk on (session.update with turn_detection null)...
        message.send_keys(Keys.ESCAPE)  # leave the text box: shortcuts are off while typing
        ActionChains(driver).send_keys("p").perform()
        wait_for(
            driver,
            "push-to-talk mode",
            lambda d: d.find_element(By.ID, "ptt-btn").is_displayed(),
            10,
        )
        session = driver.execute_script("return window.__playground.effectiveSession")
        assert session["audio"]["input"]["turn_detection"] is None, session
        # ...and holding Space talks: clear on press, commit + response.create on release
        answers = len(chat_texts(driver, "assistant"))
        ActionChains(driver).key_down(Keys.SPACE).pause(1.5).key_up(Keys.SPACE).perform()
        wait_for(
            driver,
            "the push-to-talk answer",
            lambda d: (
                len(chat_texts(d, "assistant")) > answers
                and "You said" in chat_texts(d, "assistant")[-1]
            ),
            20,
        )
        sent = sent_types(driver)
        start = sent.index("input_audio_buffer.clear")
        assert sent[start:] == [
            "input_audio_buffer.clear",
            "input_audio_buffer.commit",
            "response.create",
        ], sent
        turns = driver.execute_script("return window.__playground.turns")
        assert [t["trigger"] for t in turns] == ["text", "ptt"], turns
        assert turns[-1]["response"] is not None, turns
        screenshot(driver, "06-push-to-talk.png")
        assert script_errors(driver) == []
