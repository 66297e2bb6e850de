"""The official JavaScript clients against a real server, over a real socket (spec §8.1, §8.4).

Node runs the scripts of ``tests/js`` (their npm dependencies pinned by ``package-lock.json``):

* ``agents_realtime.mjs``: ``@openai/agents-realtime``'s ``RealtimeSession`` over its WebSocket
  transport, with an agent that has instructions and one tool; a text turn, then a turn whose
  response must call the tool (the SDK runs it and asks for the answer). Any frame the SDK's zod
  schema rejects, any error it reports or logs, fails the script.
* ``openai_realtime_ws.mjs``: the npm ``openai`` package's ``OpenAIRealtimeWS``; it forces
  ``wss://`` (spec §1.1), so that server serves TLS with a self-signed certificate that node
  trusts through ``NODE_EXTRA_CA_CERTS``.

Each script prints a JSON summary; the assertions are made here. The dependencies are installed
once (``npm ci``) into ``tests/js/node_modules`` and reused while the lockfile is unchanged. No
Node.js, no test: they skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openrealtime.app import create_app
from openrealtime.backends.vad_silero import SileroVad
from openrealtime.config import Config
from tests.conformance.conftest import API_KEY, ServerFactory, engines_with
from tests.conformance.test_sdk_tools import validate_against_schema
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server, ws_url
from tests.transports.test_tls import self_signed

JS_DIR = Path(__file__).resolve().parents[1] / "js"
LOCKFILE = JS_DIR / "package-lock.json"
STAMP = JS_DIR / "node_modules" / ".openrealtime-lockfile.sha256"
"""Written after a successful ``npm ci``: the hash of the lockfile it installed."""

NODE_MAJOR = 20
NPM_CI_TIMEOUT_S = 300.0
SCRIPT_TIMEOUT_S = 45.0
"""The whole node run; each wait inside a script is bounded by ``WAIT_MS``."""
WAIT_MS = 10_000

TEXT = "Hello from Node.js, ça va?"
"""What the scripts say; the fake LLM answers ``You said: <text>``."""


# --------------------------------------------------------------------------- node, npm ci


def _lock_hash() -> str:
    return hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def node() -> str:
    """The installed packages of ``tests/js`` (``npm ci`` once); returns the ``node`` path."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            f"the JavaScript client tests need Node.js {NODE_MAJOR}+ and npm "
            "(apt-get install nodejs npm, or https://nodejs.org/en/download)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    found = version.stdout.strip()
    if int(found.lstrip("v").split(".")[0]) < NODE_MAJOR:
        pytest.skip(f"the JavaScript client tests need Node.js {NODE_MAJOR}+, found {found}")
    with LOCKFILE.open("rb") as lock:
        with contextlib.suppress(ImportError):
            import fcntl  # one npm ci at a time, even across concurrent pytest runs

            fcntl.flock(lock, fcntl.LOCK_EX)
        if not (STAMP.is_file() and STAMP.read_text().strip() == _lock_hash()):
            done = subprocess.run(
                [npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
            )
            if done.returncode != 0:
                pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            STAMP.write_text(_lock_hash() + "\n")
    return node


async def run_script(node: str, script: str, *args: str, **env: str) -> dict[str, Any]:
    """Run ``tests/js/<script>`` (without blocking the server's loop); return its JSON summary.

    The summary is returned whatever the exit status: the caller asserts on it, so a failure
    shows what the SDK reported. Stderr (the SDK's own logs) is attached to it as ``stderr``.
    """
    process = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / script),
        *args,
        "--text",
        TEXT,
        "--timeout-ms",
        str(WAIT_MS),
        cwd=JS_DIR,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT_S):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = (data.decode() for data in await process.communicate())
        pytest.fail(f"{script} ran over {SCRIPT_TIMEOUT_S} s:\n{out}\n{err}")
    lines = stdout.decode().strip().splitlines()
    assert lines, f"{script} printed no summary (exit {process.returncode}):\n{stderr.decode()}"
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["returncode"] = process.returncode
    summary["stderr"] = stderr.decode()
    return summary


def assert_clean(summary: dict[str, Any]) -> None:
    """No SDK-side error of any kind, and the script ended well."""
    report = json.dumps(
        {k: summary[k] for k in ("errors", "logs", "stderr", "events") if k in summary}, indent=1
    )
    assert summary["errors"] == [], report
    assert summary["logs"] == [], report
    assert summary["ok"] is True and summary["returncode"] == 0, report


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# --------------------------------------------------------------------------- agents-realtime


async def test_agents_realtime_session_text_turn_and_tool_round_trip(
    node: str, start_server: ServerFactory
) -> None:
    base = await start_server()
    url = ws_url(base, "/v1/realtime?model=gpt-realtime")
    summary = await run_script(node, "agents_realtime.mjs", "--url", url, "--key", API_KEY)
    assert_clean(summary)
    raw: list[dict[str, Any]] = summary["raw"]
    # Every frame the server sent passed the SDK's zod schema (§8.4) and the Python oracle.
    assert summary["untyped"] == []
    for event in raw:
        SERVER_EVENT.validate_python(event)
    assert summary["events"][0] == "session.created"

    # The agent's configuration reached the session: instructions and the tool's schema.
    (configured, *_) = [
        e["session"] for e in of_type(raw, "session.updated") if e["session"].get("tools")
    ]
    assert configured["instructions"] == "You answer questions about the weather. Be brief."
    (wire_tool,) = configured["tools"]
    assert wire_tool["name"] == "get_weather"
    schema = wire_tool["parameters"]
    assert schema["required"] == ["city"]

    # Turn 1: the answer to the text message (spoken: the transcript carries the text).
    first, tool_call_turn, answer = summary["agentEnds"]
    assert first == f"You said: {TEXT}"

    # Turn 2: the forced call, executed by the SDK with arguments that fit the schema...
    assert summary["toolStarts"] == 1
    (arguments,) = summary["toolCalls"]
    validate_against_schema(arguments, schema)
    (result,) = summary["toolResults"]
    assert summary["toolEnds"] == [result]
    calls = [
        e["item"]
        for e in of_type(raw, "response.output_item.done")
        if e["item"]["type"] == "function_call"
    ]
    (call,) = calls
    assert call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"]) == arguments
    assert tool_call_turn == ""  # that response was only the call
    # ... whose output the SDK sent back (the server's echo of it) ...
    outputs = [
        e["item"]
        for e in of_type(raw, "conversation.item.added")
        if e["item"]["type"] == "function_call_output"
    ]
    assert [(o["call_id"], o["output"]) for o in outputs] == [(call["call_id"], result)]
    # ... and the model then answered from it.
    assert answer == f"The tool returned {result}"
    dones = [e["response"] for e in of_type(raw, "response.done")]
    assert [d["status"] for d in dones] == ["completed"] * 3

    # The SDK's own history of the conversation, built from the server's events.
    history = summary["history"]
    assert [(h["type"], h.get("role")) for h in history] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("function_call", None),
        ("message", "assistant"),
    ]
    assert history[0]["content"] == [{"type": "input_text", "text": TEXT}]
    assert history[1]["content"][0]["transcript"] == f"You said: {TEXT}"
    assert history[3]["name"] == "get_weather" and history[3]["output"] == result
    assert history[4]["content"][0]["transcript"] == answer
    assert all(h["status"] == "completed" for h in history)


# --------------------------------------------------------------------------- openai (npm)


@pytest.fixture
async def tls_server(silero: SileroVad, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A real server with the fake engines serving ``https``/``wss``; yields (base, cert)."""
    certfile, keyfile = self_signed(tmp_path)
    config = Config(api_keys=(API_KEY,), ssl_certfile=str(certfile), ssl_keyfile=str(keyfile))
    async with running_server(create_app(config, engines_with(silero))) as base:
        assert base.startswith("https://")
        yield base, certfile


async def test_openai_realtime_ws_text_response(node: str, tls_server: tuple[str, Path]) -> None:
    base, certfile = tls_server
    summary = await run_script(
        node,
        "openai_realtime_ws.mjs",
        *("--url", f"{base}/v1", "--key", API_KEY),
        NODE_EXTRA_CA_CERTS=str(certfile),
    )
    assert_clean(summary)
    assert summary["url"] == ws_url(base, "/v1/realtime?model=gpt-realtime")
    raw: list[dict[str, Any]] = summary["raw"]
    for event in raw:
        SERVER_EVENT.validate_python(event)
    kinds = summary["events"]
    assert kinds[0] == "session.created"
    assert "error" not in kinds
    (updated,) = of_type(raw, "session.updated")
    assert updated["session"]["instructions"] == "You are a terse assistant."
    assert updated["session"]["output_modalities"] == ["text"]

    expected = f"You said: {TEXT}"
    assert "".join(summary["textDeltas"]) == expected
    (text_done,) = of_type(raw, "response.output_text.done")
    assert text_done["text"] == expected
    (done,) = of_type(raw, "response.done")
    assert kinds.index("response.done") > kinds.index("response.output_text.done")
    response = done["response"]
    assert response["status"] == "completed"
    (message,) = response["output"]
    assert message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": expected}]
