"""No credential reaches a log in any form (issue 8, defect 10; reliability check 13).

Before the fix a key passed in the query string was logged in full at INFO (uvicorn's
"WebSocket /v1/realtime?...&api_key=..." line and its access log), and ``Authorization: Token
<key>`` in full at DEBUG (websockets' header dump). Checked on the real command's own output
(``openrealtime serve`` with uvicorn's log handlers), at the most verbose level.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from openrealtime.logging_setup import install_secret_redaction, mask_secrets, register_secrets
from tests.helpers.cli_server import FAKE_ENGINES, cli_server

CANARY = "sk-canary-q7W2e9R4t1Y6u3I8o5P0"
PLAIN = "plain-canary-secret-4f8a2c9e1b7d"
"""A key with no recognisable shape: only its configuration tells it is one."""
ENGINE = "engine-canary-9d3b7a1f5c2e"


async def _hostile_client_calls(base: str, ws_base: str) -> None:
    """Every place a careless client puts a key."""
    for key in (CANARY, PLAIN):
        for query in (f"api_key={key}", f"key={key}", f"token={key}", f"x={key}"):
            try:
                async with connect(
                    f"{ws_base}/v1/realtime?model=gpt-realtime&{query}",
                    additional_headers={"Authorization": f"Bearer {key}"},
                ) as ws:
                    await ws.recv()
            except InvalidStatus:
                pass
        for header in (
            {"Authorization": f"Token {key}"},
            {"Authorization": f"Bearer {key}"},
            {"Authorization": key},
            {"X-Api-Key": key},
            {"Api-Key": key},
            {"Cookie": f"session={key}"},
        ):
            async with connect(
                f"{ws_base}/v1/realtime?model=gpt-realtime", additional_headers=header
            ) as ws:
                await ws.recv()
        async with connect(
            f"{ws_base}/v1/realtime?model=gpt-realtime",
            subprotocols=["realtime", f"openai-insecure-api-key.{key}"],  # type: ignore[list-item]
        ) as ws:
            await ws.recv()
        async with httpx.AsyncClient() as client:
            await client.get(f"{base}/v1/models?api_key={key}")
            await client.get(f"{base}/v1/models", headers={"Authorization": f"Token {key}"})
            await client.post(f"{base}/v1/chat/completions?key={key}", content=b"{")


@pytest.mark.parametrize("level", ["info", "trace"])
def test_keys_never_reach_the_server_log(tmp_path: Path, level: str) -> None:
    args = (*FAKE_ENGINES, "--api-key", CANARY, "--api-key", PLAIN, "--log-level", level)
    env = {"OPENREALTIME_LLM_API_KEY": ENGINE}
    with cli_server(*args, env=env, log_dir=tmp_path) as server:
        ws_base = server.base.replace("http://", "ws://")
        asyncio.run(_hostile_client_calls(server.base, ws_base))
        server.stop()
        log = server.log_text()
    assert "WebSocket /v1/realtime" in log  # the lines that used to carry the key are there
    for secret in (CANARY, PLAIN, ENGINE):
        assert secret[:-4] not in log, f"{secret} leaked:\n" + "\n".join(
            line for line in log.splitlines() if secret[:-4] in line
        )


def test_every_record_is_masked_whoever_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    """The masking happens when a record is made: any logger, any handler, tracebacks too."""
    register_secrets(PLAIN)
    caplog.set_level(logging.DEBUG)
    install_secret_redaction()
    logger = logging.getLogger("some.library")
    logger.debug("< Authorization: Token %s", PLAIN)
    logger.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/x?api_key={CANARY}", "1.1", 200)
    try:
        raise RuntimeError(f"engine said no to {CANARY}")
    except RuntimeError:
        logger.exception("failed with %s", PLAIN)
    text = caplog.text
    assert PLAIN[:-4] not in text and CANARY[:-4] not in text
    access = caplog.records[1]
    assert isinstance(access.args, tuple) and len(access.args) == 5  # uvicorn's shape kept
    assert mask_secrets("Authorization: Basic dXNlcjpodW50ZXIy") == "Authorization: Basic …ZXIy"
