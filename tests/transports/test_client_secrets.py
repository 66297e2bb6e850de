"""Ephemeral client secrets (spec §1.2): minted over real HTTP, used over real WebSockets.

Every test runs the real app (real session driver, deterministic fake engines) on a free
loopback port. Secrets are minted with httpx or the official ``openai`` SDK and used as the
SDK's ``api_key``; the negative cases craft secrets with :mod:`openrealtime.auth` itself
(another clock, another key) or alter them by hand, following the format in its docstring.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.realtime import ClientSecretCreateResponse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openrealtime import auth
from openrealtime.app import create_app
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    FakeVad,
)
from openrealtime.config import Config
from openrealtime.protocol.errors import ProtocolError
from tests.helpers.oracle import SERVER_EVENT
from tests.helpers.server import running_server, ws_url

KEY = "sk-secrets-0123456789abcdefGOOD"
OTHER_KEY = "sk-secrets-9876543210fedcbaOTHR"
WRONG_KEY = "sk-secrets-0123456789abcdefZZZZ"
SIGNING_KEY = "fleet-signing-key-0123456789abcdefghijklmnop"
SESSION_ID = re.compile(r"^sess_[0-9A-Za-z]{21}$")
WAIT_S = 5.0

PIRATE = {
    "type": "realtime",
    "model": "gpt-realtime-mini",
    "instructions": "Talk like a pirate.",
    "output_modalities": ["text"],
    "audio": {
        "input": {"turn_detection": None},
        "output": {"voice": "cedar", "speed": 1.25},
    },
    "tools": [{"type": "function", "name": "get_weather", "description": "Weather."}],
}
"""A realtime session config whose every value differs from the live defaults."""


def fake_engines() -> Engines:
    return Engines(
        vad=FakeVad(),
        stt=FakeSpeechToText(),
        llm=FakeLanguageModel(reply="Arr, ahoy."),
        tts=FakeTextToSpeech(),
    )


@asynccontextmanager
async def serve(config: Config | None = None) -> AsyncIterator[str]:
    config = config if config is not None else Config(api_keys=(KEY, OTHER_KEY))
    async with running_server(create_app(config, fake_engines())) as base:
        yield base


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def mint(base: str, body: dict[str, Any], key: str = KEY) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
        return await http.post("/v1/realtime/client_secrets", json=body, headers=bearer(key))


async def minted(base: str, body: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    response = await mint(base, body, key)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next server event, validated by the SDK's discriminated union (spec §8.2)."""
    async with asyncio.timeout(WAIT_S):
        event: dict[str, Any] = json.loads(await ws.recv())
    SERVER_EVENT.validate_python(event)
    return event


async def expect_refusal(ws: ClientConnection) -> tuple[dict[str, Any], int, str]:
    """The one ``error`` event, then the close: (error object, close code, reason)."""
    event = json.loads(await ws.recv())
    assert event["type"] == "error", event
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    return event["error"], closed.value.rcvd.code, closed.value.rcvd.reason


def reencode(secret: str, change: Any) -> str:
    """``secret`` with its payload altered by ``change(claims)``, keeping the old tag."""
    payload, _, tag = secret.removeprefix("ek_").partition(".")
    raw = zlib.decompress(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims = json.loads(raw)
    change(claims)
    packed = zlib.compress(json.dumps(claims, separators=(",", ":")).encode(), 9)
    forged = base64.urlsafe_b64encode(packed).rstrip(b"=").decode()
    return f"ek_{forged}.{tag}"


# --------------------------------------------------------------------------- minting


async def test_sdk_mints_a_secret_and_the_sdk_opens_a_session_with_its_config() -> None:
    async with serve() as base:
        api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY)
        before = int(time.time())
        secret = await api.realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": 120},
            session=PIRATE,  # type: ignore[arg-type]
        )
        await api.close()
        assert secret.value.startswith("ek_")
        assert before + 120 <= secret.expires_at <= int(time.time()) + 120
        assert secret.session.type == "realtime"
        shown = secret.session.model_dump(mode="json", exclude_unset=True)
        assert shown["object"] == "realtime.session"
        assert SESSION_ID.match(shown["id"])
        assert shown["instructions"] == "Talk like a pirate."

        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=secret.value)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            created = json.loads(await conn.recv_bytes())
            SERVER_EVENT.validate_python(created)
            session = created["session"]
            assert session["model"] == "gpt-realtime-mini"  # the secret's model wins
            assert session["instructions"] == "Talk like a pirate."
            assert session["output_modalities"] == ["text"]
            assert session["audio"]["input"]["turn_detection"] is None
            assert session["audio"]["output"]["voice"] == "cedar"
            assert session["audio"]["output"]["speed"] == 1.25
            assert [tool["name"] for tool in session["tools"]] == ["get_weather"]
            for key in ("id", "expires_at"):  # the minted object is the same session config
                session.pop(key), shown.pop(key)
            assert session == shown

            await conn.send(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "instructions": "Be brief."},
                }
            )
            updated = json.loads(await conn.recv_bytes())
            SERVER_EVENT.validate_python(updated)
            assert updated["type"] == "session.updated", updated
            assert updated["session"]["instructions"] == "Be brief."
            assert updated["session"]["audio"]["output"]["voice"] == "cedar"

            await conn.send({"type": "response.create"})
            kinds: list[str] = []
            while not kinds or kinds[-1] != "response.done":
                event = json.loads(await conn.recv_bytes())
                SERVER_EVENT.validate_python(event)
                kinds.append(event["type"])
            assert "response.output_text.delta" in kinds
            assert "response.output_audio.delta" not in kinds
        await client.close()


async def test_response_has_the_spec_shape_and_validates_with_the_sdk_model() -> None:
    async with serve() as base:
        before = int(time.time())
        data = await minted(base, {})  # both fields optional: 600 s, a default realtime session
        assert set(data) == {"value", "expires_at", "session"}
        assert re.match(r"^ek_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$", data["value"])
        assert before + 600 <= data["expires_at"] <= int(time.time()) + 600
        session = data["session"]
        assert (session["type"], session["object"]) == ("realtime", "realtime.session")
        assert session["model"] == "gpt-realtime"
        assert SESSION_ID.match(session["id"])
        ClientSecretCreateResponse.model_validate(data, strict=False)

        transcription = await minted(
            base,
            {
                "expires_after": {"anchor": "created_at", "seconds": 10},
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                },
            },
        )
        shown = transcription["session"]
        assert (shown["type"], shown["object"]) == (
            "transcription",
            "realtime.transcription_session",
        )
        assert shown["audio"]["input"]["transcription"]["model"] == "whisper-1"
        assert "create_response" not in shown["audio"]["input"]["turn_detection"]
        ClientSecretCreateResponse.model_validate(transcription)


@pytest.mark.parametrize(
    ("body", "code", "param", "message"),
    [
        (
            {"expires_after": {"anchor": "created_at", "seconds": 9}},
            "integer_below_min_value",
            "expires_after.seconds",
            "Invalid 'expires_after.seconds': integer below minimum value. Expected a value >= "
            "10, but got 9 instead.",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 7201}},
            "integer_above_max_value",
            "expires_after.seconds",
            "Invalid 'expires_after.seconds': integer above maximum value. Expected a value <= "
            "7200, but got 7201 instead.",
        ),
        (
            {"expires_after": {"anchor": "expires_at", "seconds": 60}},
            "invalid_value",
            "expires_after.anchor",
            "Invalid value: 'expires_at'. Supported values are: 'created_at'.",
        ),
        (
            {"expires_after": {"seconds": "60"}},
            "invalid_type",
            "expires_after.seconds",
            None,
        ),
        (
            {"expires_after": {"seconds": 60, "unit": "s"}},
            "unknown_parameter",
            "expires_after.unit",
            "Unknown parameter: 'expires_after.unit'.",
        ),
        ({"bogus": 1}, "unknown_parameter", "bogus", "Unknown parameter: 'bogus'."),
        (
            {"session": {"model": "gpt-realtime"}},
            "missing_required_parameter",
            "session.type",
            "Missing required parameter: 'session.type'.",
        ),
        (
            {"session": {"type": "session"}},
            "invalid_value",
            "session.type",
            "Invalid value: 'session'. Supported values are: 'realtime' and 'transcription'.",
        ),
        (
            {"session": {"type": "realtime", "modalities": ["text"]}},
            "unknown_parameter",
            "session.modalities",
            "Unknown parameter: 'session.modalities'.",
        ),
        (
            {
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                }
            },
            "integer_below_min_value",
            "session.audio.input.format.rate",
            None,
        ),
        (
            {"session": {"type": "transcription", "instructions": "hi"}},
            "unknown_parameter",
            "session.instructions",
            None,
        ),
    ],
    ids=[
        "seconds_below_10",
        "seconds_above_7200",
        "wrong_anchor",
        "seconds_as_string",
        "unknown_expires_after_field",
        "unknown_top_level_field",
        "session_without_type",
        "wrong_session_type",
        "beta_session_field",
        "bad_session_rate",
        "realtime_field_on_transcription",
    ],
)
async def test_invalid_requests_get_openai_style_400s(
    body: dict[str, Any], code: str, param: str, message: str | None
) -> None:
    async with serve() as base:
        response = await mint(base, body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            code,
            param,
        )
        if message is not None:
            assert error["message"] == message
        api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.BadRequestError) as raised:
            await api.realtime.client_secrets.create(extra_body=body)
        assert raised.value.code == code
        await api.close()


async def test_malformed_bodies_get_400s() -> None:
    async with serve() as base, httpx.AsyncClient(base_url=base) as http:
        url = "/v1/realtime/client_secrets"
        broken = await http.post(url, content=b"{not json", headers=bearer(KEY))
        assert broken.status_code == 400
        assert "could not parse the JSON body" in broken.json()["error"]["message"]
        array = await http.post(url, json=[], headers=bearer(KEY))
        assert array.status_code == 400
        assert array.json()["error"]["code"] == "invalid_type"
        too_big = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(6000))
        big = await http.post(
            url,
            json={"session": {"type": "realtime", "instructions": too_big}},
            headers=bearer(KEY),
        )
        assert big.status_code == 400
        assert big.json()["error"]["code"] == "client_secret_too_large"


async def test_unlisted_model_is_refused_when_the_server_lists_models() -> None:
    config = Config(api_keys=(KEY,), accept_any_model=False)
    async with serve(config) as base:
        response = await mint(base, {"session": {"type": "realtime", "model": "gpt-nope"}})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_model"
        assert response.json()["error"]["param"] == "session.model"


async def test_minting_needs_a_real_api_key() -> None:
    async with serve() as base:
        secret = (await minted(base, {}))["value"]
        async with httpx.AsyncClient(base_url=base) as http:
            url = "/v1/realtime/client_secrets"
            missing = await http.post(url, json={})
            assert missing.status_code == 401
            assert missing.json()["error"]["code"] is None
            wrong = await http.post(url, json={}, headers=bearer(WRONG_KEY))
            assert wrong.status_code == 401
            assert wrong.json()["error"]["code"] == "invalid_api_key"
            assert WRONG_KEY not in wrong.text
            by_secret = await http.post(url, json={}, headers=bearer(secret))
            assert by_secret.status_code == 403
            assert "cannot create client secrets" in by_secret.json()["error"]["message"]
            assert secret not in by_secret.text
            models = await http.get("/v1/models", headers=bearer(secret))
            assert models.status_code == 401  # a secret only opens Realtime sessions
            assert secret not in models.text
        api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError):
            await api.realtime.client_secrets.create()
        await api.close()


# --------------------------------------------------------------------------- using secrets


async def test_a_secret_opens_several_sessions_over_bearer_and_subprotocol() -> None:
    async with serve() as base:
        secret = (await minted(base, {"session": PIRATE}))["value"]
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(secret)) as ws:
            first = await recv(ws)
            assert first["session"]["instructions"] == "Talk like a pirate."
        offered = ["realtime", f"openai-insecure-api-key.{secret}", "openai-agents-sdk.0.17.0"]
        async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "realtime"
            assert ws.response is not None
            assert all(secret not in value for value in ws.response.headers.values())
            second = await recv(ws)
            assert second["session"]["instructions"] == "Talk like a pirate."
            assert second["session"]["id"] != first["session"]["id"]


async def test_without_a_query_the_secret_chooses_the_session_type() -> None:
    async with serve() as base:
        realtime = (await minted(base, {"session": PIRATE}))["value"]
        async with connect(ws_url(base, "/v1/realtime"), additional_headers=bearer(realtime)) as ws:
            created = await recv(ws)
            assert created["session"]["model"] == "gpt-realtime-mini"

        body = {
            "session": {
                "type": "transcription",
                "audio": {"input": {"transcription": {"model": "whisper-1", "language": "fr"}}},
            }
        }
        transcription = (await minted(base, body))["value"]
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=transcription)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            created = json.loads(await conn.recv_bytes())
            SERVER_EVENT.validate_python(created)
            session = created["session"]
            assert session["object"] == "realtime.transcription_session"
            assert session["audio"]["input"]["transcription"]["language"] == "fr"
        await client.close()
        async with connect(
            ws_url(base, "/v1/realtime"), additional_headers=bearer(transcription)
        ) as ws:
            assert (await recv(ws))["session"]["type"] == "transcription"


async def test_a_secret_for_the_other_session_type_is_refused_with_4000() -> None:
    async with serve() as base:
        transcription = (await minted(base, {"session": {"type": "transcription"}}))["value"]
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(transcription)) as ws:
            error, code, reason = await expect_refusal(ws)
        assert (error["code"], code, reason) == (
            "invalid_value",
            4000,
            "invalid_request_error.invalid_value",
        )
        realtime = (await minted(base, {}))["value"]
        url = ws_url(base, "/v1/realtime?intent=transcription")
        async with connect(url, additional_headers=bearer(realtime)) as ws:
            error, code, _ = await expect_refusal(ws)
        assert (error["code"], code) == ("invalid_value", 4000)


async def test_a_secret_cannot_attach_a_sideband_to_a_call() -> None:
    async with serve() as base:
        secret = (await minted(base, {}))["value"]
        url = ws_url(base, "/v1/realtime?call_id=rtc_0123456789abcdef")
        async with connect(url, additional_headers=bearer(secret)) as ws:
            error, code, reason = await expect_refusal(ws)
        assert (error["code"], code, reason) == (
            "invalid_api_key",
            3000,
            "invalid_request_error.invalid_api_key",
        )


def _expired(config: Config) -> str:
    then = time.time() - 700
    return auth.mint_client_secret(config, {"session": PIRATE}, api_key=KEY, now=then).value


def _not_yet_valid(config: Config) -> str:
    later = time.time() + 600
    return auth.mint_client_secret(config, {}, api_key=KEY, now=later).value


def _tampered_tag(config: Config) -> str:
    value = auth.mint_client_secret(config, {}, api_key=KEY).value
    return value[:-2] + ("AA" if not value.endswith("AA") else "BB")


def _tampered_payload(config: Config) -> str:
    value = auth.mint_client_secret(config, {"session": PIRATE}, api_key=KEY).value
    return reencode(value, lambda claims: claims["session"].update(instructions="Obey me."))


def _extended_expiry(config: Config) -> str:
    value = _expired(config)
    return reencode(value, lambda claims: claims.update(exp=int(time.time()) + 3600))


def _signed_by_another_server(config: Config) -> str:
    other = Config(api_keys=("sk-another-server-key-0123456789",))
    return auth.mint_client_secret(other, {}, api_key="sk-another-server-key-0123456789").value


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (_expired, "expired at"),
        (_not_yet_valid, "not valid before"),
        (_tampered_tag, "not valid"),
        (_tampered_payload, "not valid"),
        (_extended_expiry, "not valid"),
        (_signed_by_another_server, "not valid"),
        (lambda config: "ek_garbage", "not valid"),
        (lambda config: WRONG_KEY, None),
    ],
    ids=[
        "expired",
        "not_yet_valid",
        "tampered_signature",
        "tampered_payload",
        "tampered_expiry",
        "signed_by_another_server",
        "malformed_secret",
        "api_key_shaped_but_wrong",
    ],
)
async def test_bad_secrets_are_refused_like_a_bad_key(make: Any, detail: str | None) -> None:
    config = Config(api_keys=(KEY, OTHER_KEY))
    token = make(config)
    async with serve(config) as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(token)) as ws:
            error, code, reason = await expect_refusal(ws)
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("Incorrect API key provided: ")
        if detail is not None:
            assert detail in error["message"]
        assert token not in error["message"]
        assert (code, reason) == (3000, "invalid_request_error.invalid_api_key")

        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=token)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            event = await conn.recv()
            assert event.type == "error"
            assert event.error.code == "invalid_api_key"
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 3000
        await client.close()


async def test_a_running_session_outlives_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve() as base:
        data = await minted(base, {"expires_after": {"anchor": "created_at", "seconds": 10}})
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(data["value"])) as running:
            assert (await recv(running))["type"] == "session.created"
            monkeypatch.setattr(auth, "_now", lambda: data["expires_at"] + 1.0)
            async with connect(url, additional_headers=bearer(data["value"])) as late:
                error, code, _ = await expect_refusal(late)
            assert (error["code"], code) == ("invalid_api_key", 3000)
            await running.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"type": "realtime", "instructions": "Still here."},
                    }
                )
            )
            updated = await recv(running)
            assert updated["type"] == "session.updated"
            assert updated["session"]["instructions"] == "Still here."


# --------------------------------------------------------------------------- keys and fleets


async def test_instances_sharing_a_signing_key_accept_each_others_secrets() -> None:
    minter = Config(api_keys=(KEY,), secret_signing_key=SIGNING_KEY)
    peer = Config(api_keys=(OTHER_KEY,), secret_signing_key=SIGNING_KEY)
    stranger = Config(api_keys=(KEY,), secret_signing_key=SIGNING_KEY[::-1])
    async with serve(minter) as base:
        secret = (await minted(base, {"session": PIRATE}))["value"]
    async with serve(peer) as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(secret)) as ws:
            assert (await recv(ws))["session"]["instructions"] == "Talk like a pirate."
    async with serve(stranger) as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(secret)) as ws:
            error, code, _ = await expect_refusal(ws)
        assert (error["code"], code) == ("invalid_api_key", 3000)


def test_without_a_signing_key_secrets_follow_the_api_key_that_minted_them() -> None:
    fleet = Config(api_keys=(KEY, OTHER_KEY))
    secret = auth.mint_client_secret(fleet, {}, api_key=OTHER_KEY).value
    assert auth.authenticate(Config(api_keys=(OTHER_KEY,)), secret).kind == "client_secret"
    with pytest.raises(auth.InvalidClientSecret):  # the minting key was revoked
        auth.authenticate(Config(api_keys=(KEY,)), secret)
    with pytest.raises(ValueError, match="API key"):
        auth.mint_client_secret(fleet, {}, api_key=WRONG_KEY)


async def test_with_authentication_off_secrets_still_carry_and_check_their_config() -> None:
    async with serve(Config()) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/v1/realtime/client_secrets", json={"session": PIRATE})
        assert response.status_code == 200, response.text
        secret = response.json()["value"]
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(secret)) as ws:
            assert (await recv(ws))["session"]["instructions"] == "Talk like a pirate."
        forged = reencode(secret, lambda claims: claims["session"].update(instructions="x"))
        async with connect(url, additional_headers=bearer(forged)) as ws:
            error, code, _ = await expect_refusal(ws)
        assert (error["code"], code) == ("invalid_api_key", 3000)
        async with connect(url, additional_headers=bearer("anything")) as ws:
            assert (await recv(ws))["session"]["instructions"] != "Talk like a pirate."


# --------------------------------------------------------------------------- the module


def test_authenticate_kinds_and_errors() -> None:
    config = Config(api_keys=(KEY,))
    assert auth.authenticate(config, KEY) == auth.Credential("api_key")
    assert auth.authenticate(Config(), None) == auth.Credential("anonymous")
    assert auth.authenticate(Config(), "sk-whatever").kind == "anonymous"
    with pytest.raises(auth.MissingCredential) as missing:
        auth.authenticate(config, "  ")
    assert missing.value.code is None
    with pytest.raises(auth.InvalidApiKey) as wrong:
        auth.authenticate(config, WRONG_KEY)
    assert wrong.value.code == "invalid_api_key"
    assert WRONG_KEY not in wrong.value.message

    minted_at = 1_800_000_000.0
    secret = auth.mint_client_secret(config, {"session": PIRATE}, api_key=KEY, now=minted_at)
    assert secret.expires_at == 1_800_000_600
    credential = auth.authenticate(config, secret.value, now=minted_at + 599)
    assert credential.kind == "client_secret"
    assert credential.session_defaults == PIRATE
    assert credential.session_type == "realtime"
    assert credential.expires_at == 1_800_000_600
    with pytest.raises(auth.ClientSecretExpired):
        auth.authenticate(config, secret.value, now=minted_at + 600)
    leeway = auth.NOT_BEFORE_LEEWAY_SECONDS
    assert auth.authenticate(config, secret.value, now=minted_at - leeway).kind == "client_secret"
    with pytest.raises(auth.ClientSecretNotYetValid):
        auth.authenticate(config, secret.value, now=minted_at - leeway - 1)


def test_token_from_authorization() -> None:
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    assert auth.token_from_authorization(f"Bearer {KEY}") == KEY
    assert auth.token_from_authorization(f"bearer   {KEY} ") == KEY
    assert auth.token_from_authorization(f"Basic {basic}") == KEY
    assert auth.token_from_authorization("Basic !!!") is None
    assert auth.token_from_authorization("Bearer") is None
    assert auth.token_from_authorization(None) is None
    assert auth.token_from_authorization(f"Token {KEY}") is None


def test_signing_key_config_and_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="secret_signing_key must be at least 32"):
        Config(secret_signing_key="short")
    config = Config.from_env({"OPENREALTIME_SECRET_SIGNING_KEY": SIGNING_KEY})
    assert config.secret_signing_key == SIGNING_KEY
    assert SIGNING_KEY not in repr(config)

    from openrealtime import cli

    seen: list[Config] = []
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)
    monkeypatch.setattr(cli, "_run_server", lambda config: seen.append(config) or 0)
    monkeypatch.delenv("OPENREALTIME_SECRET_SIGNING_KEY", raising=False)
    assert cli.main(["serve", "--secret-signing-key", SIGNING_KEY]) == 0
    assert seen[0].secret_signing_key == SIGNING_KEY
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "OPENREALTIME_SECRET_SIGNING_KEY" in capsys.readouterr().out


def _largest_secret(config: Config) -> str:
    """A secret just under the cap, from incompressible (CJK) instructions."""

    def attempt(size: int) -> str | None:
        text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(size))
        body = {"session": {"type": "realtime", "instructions": text}}
        try:
            return auth.mint_client_secret(config, body, api_key=KEY).value
        except ProtocolError:
            return None

    low, high = 1, 20_000
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if attempt(middle) is not None else (low, middle)
    secret = attempt(low - 10)  # the random jti makes the size wobble by a character or two
    assert secret is not None
    return secret


async def test_largest_secret_passes_the_websocket_handshake_both_ways() -> None:
    config = Config(api_keys=(KEY,))
    secret = _largest_secret(config)
    assert len(secret) > auth.MAX_CLIENT_SECRET_LENGTH - 100
    async with serve(config) as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(secret)) as ws:
            assert (await recv(ws))["type"] == "session.created"
        offered = ["realtime", f"openai-insecure-api-key.{secret}", "openai-agents-sdk.0.17.0"]
        async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert (await recv(ws))["type"] == "session.created"
