"""Hostile REST bodies get 400 in the OpenAI error shape, never 500 (issue 8, defect 8).

Before the fix, JSON nested 100k deep in ``client_secrets``, ``chat/completions``,
``audio/speech`` or the ``session`` part of ``realtime/calls`` raised RecursionError (500), as
did tool parameters nested 600 deep in ``client_secrets``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance._error_helpers import KEY, serve

DEEP = "[" * 100_000 + "]" * 100_000
ROUTES = ("/v1/realtime/client_secrets", "/v1/chat/completions", "/v1/audio/speech")


def _tools_secret(depth: int) -> str:
    parameters = '{"a":' * depth + "1" + "}" * depth
    tool = '{"type":"function","name":"f","parameters":' + parameters + "}"
    return '{"session":{"type":"realtime","tools":[' + tool + "]}}"


def _assert_openai_400(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    return dict(error)


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        '{"model":"m","messages":[{"role":"user","content":"\\udc00"}],"input":"\\ud800"}',
        '{"model":"m","messages":[{"role":"user","content":"hi"}],"n":' + "9" * 5000 + "}",
        '{"model":"m","input":"hi","speed":NaN,"messages":[]}',
        '{"model":"m","input":"hi","speed":1e999,"messages":[]}',
    ],
    ids=["100k-deep", "lone-surrogate", "5000-digits", "nan", "overflow"],
)
async def test_hostile_json_bodies_get_400(body: str) -> None:
    async with serve() as base, httpx.AsyncClient(base_url=base) as client:
        for route in ROUTES:
            response = await client.post(
                route,
                content=body,
                headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            )
            _assert_openai_400(response)
        # The server still serves.
        models = await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert models.status_code == 200


async def test_deep_tool_parameters_in_a_client_secret_get_400_and_shallow_ones_mint() -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with serve() as base, httpx.AsyncClient(base_url=base, headers=headers) as client:
        error = _assert_openai_400(
            await client.post("/v1/realtime/client_secrets", content=_tools_secret(600))
        )
        assert "nested deeper" in error["message"]
        minted = await client.post("/v1/realtime/client_secrets", content=_tools_secret(60))
        assert minted.status_code == 200, minted.text[:300]
        assert minted.json()["value"].startswith("ek_")


async def test_a_deep_session_part_of_a_webrtc_offer_gets_400() -> None:
    async with serve() as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.post(
            "/v1/realtime/calls",
            headers={"Authorization": f"Bearer {KEY}"},
            files={"sdp": (None, "v=0\r\n"), "session": (None, DEEP)},
        )
        error = _assert_openai_400(response)
        assert error["param"] == "session" and "nested deeper" in error["message"]
