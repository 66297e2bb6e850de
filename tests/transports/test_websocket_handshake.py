"""The /v1/realtime handshake (spec §1.1) over real sockets, with real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from openrealtime import cli
from openrealtime.app import Services, create_app
from openrealtime.backends.base import Engines
from openrealtime.config import Config
from openrealtime.transports.base import SessionRequest, Transport, TransportClosed
from tests.helpers.server import running_server, ws_url

KEY = "sk-test-0123456789abcdefGOOD"
OTHER_KEY = "sk-other-9876543210fedcbaOTHR"
WRONG_KEY = "sk-wrong-0123456789abcdefZZZZ"
EVENT_ID = re.compile(r"^event_[A-Za-z0-9]{21}$")
SESSION_LABEL = re.compile(r"^sess_[A-Za-z0-9]{21}$")


def stub_engines() -> Engines:
    def engine(name: str) -> Any:
        return SimpleNamespace(name=name, sample_rate=24000)

    return Engines(vad=engine("vad"), stt=engine("stt"), llm=engine("llm"), tts=engine("tts"))


async def echo_runner(transport: Transport, request: SessionRequest, services: Services) -> None:
    """Say hello with the request, then echo text and report binary frames, until the end."""
    hello = {
        "type": "test.hello",
        "kind": request.kind,
        "model": request.model,
        "label": request.session_label,
        "auth": services.config.auth_enabled,
    }
    await transport.send_text(json.dumps(hello))
    while (message := await transport.receive()) is not None:
        if isinstance(message, bytes):
            await transport.send_text(json.dumps({"type": "test.binary", "size": len(message)}))
        else:
            await transport.send_text(message)


@asynccontextmanager
async def serve(
    config: Config | None = None, runner: Callable[..., Any] = echo_runner
) -> AsyncIterator[str]:
    config = config if config is not None else Config(api_keys=(KEY, OTHER_KEY))
    app = create_app(config, stub_engines(), session_runner=runner)
    async with running_server(app) as base:
        yield base


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def expect_rejection(ws: ClientConnection) -> tuple[dict[str, Any], int, str]:
    """Read the one error event, then the close; return (error event, close code, reason)."""
    event = json.loads(await ws.recv())
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    return event, closed.value.rcvd.code, closed.value.rcvd.reason


def assert_error_shape(event: dict[str, Any], code: str | None) -> dict[str, Any]:
    assert event["type"] == "error"
    assert EVENT_ID.match(event["event_id"])
    error = event["error"]
    assert set(error) == {"type", "code", "message", "param", "event_id"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["event_id"] is None
    return error


# --------------------------------------------------------------------------- accepted


async def test_bearer_key_opens_a_realtime_session() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(KEY)) as ws:
            hello = json.loads(await ws.recv())
            assert hello["kind"] == "realtime"
            assert hello["model"] == "gpt-realtime"
            assert SESSION_LABEL.match(hello["label"])
            assert ws.subprotocol is None
            await ws.send('{"type":"session.update"}')
            assert await ws.recv() == '{"type":"session.update"}'
            await ws.send(b"\x00\x01\x02")
            assert json.loads(await ws.recv()) == {"type": "test.binary", "size": 3}
        assert ws.close_code == 1000


async def test_second_configured_key_is_accepted() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(OTHER_KEY)) as ws:
            assert json.loads(await ws.recv())["type"] == "test.hello"


async def test_subprotocol_key_is_accepted_and_only_realtime_is_echoed() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime-mini")
        offered = ["realtime", f"openai-insecure-api-key.{KEY}", "openai-agents-sdk.0.17.0"]
        async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "realtime"
            assert ws.response is not None
            assert ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["realtime"]
            assert all(KEY not in value for value in ws.response.headers.values())
            hello = json.loads(await ws.recv())
            assert hello["model"] == "gpt-realtime-mini"


async def test_key_subprotocol_without_realtime_selects_nothing() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        offered = [f"openai-insecure-api-key.{KEY}"]
        async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol is None
            assert json.loads(await ws.recv())["type"] == "test.hello"


async def test_basic_auth_with_key_as_password_is_accepted() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        token = httpx.BasicAuth("", KEY)._auth_header
        async with connect(url, additional_headers={"Authorization": token}) as ws:
            assert json.loads(await ws.recv())["type"] == "test.hello"


async def test_transcription_intent_opens_a_transcription_session() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?intent=transcription")
        async with connect(url, additional_headers=bearer(KEY)) as ws:
            hello = json.loads(await ws.recv())
            assert (hello["kind"], hello["model"]) == ("transcription", "")


async def test_without_configured_keys_anyone_connects() -> None:
    async with serve(Config()) as base:
        async with connect(ws_url(base, "/v1/realtime?model=anything-goes")) as ws:
            hello = json.loads(await ws.recv())
            assert (hello["model"], hello["auth"]) == ("anything-goes", False)


# --------------------------------------------------------------------------- rejected


async def test_wrong_bearer_key_gets_invalid_api_key_and_close_3000() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=bearer(WRONG_KEY)) as ws:
            event, code, reason = await expect_rejection(ws)
    error = assert_error_shape(event, "invalid_api_key")
    assert error["message"] == (
        "Incorrect API key provided: sk-…ZZZZ. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    assert error["param"] is None
    assert WRONG_KEY not in json.dumps(event, ensure_ascii=False)
    assert (code, reason) == (3000, "invalid_request_error.invalid_api_key")


async def test_wrong_subprotocol_key_gets_invalid_api_key() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        offered = ["realtime", f"openai-insecure-api-key.{WRONG_KEY}"]
        async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "realtime"
            event, code, reason = await expect_rejection(ws)
    assert_error_shape(event, "invalid_api_key")
    assert (code, reason) == (3000, "invalid_request_error.invalid_api_key")


async def test_missing_auth_gets_null_code_and_close_3000() -> None:
    async with serve() as base:
        async with connect(ws_url(base, "/v1/realtime?model=gpt-realtime")) as ws:
            event, code, reason = await expect_rejection(ws)
    error = assert_error_shape(event, None)
    assert error["message"] == "Missing bearer or basic authentication in header"
    assert (code, reason) == (3000, "invalid_request_error")


@pytest.mark.parametrize(
    ("headers", "subprotocols"),
    [
        ({"OpenAI-Beta": "realtime=v1"}, None),
        ({"OpenAI-Beta": "assistants=v2, realtime=v1"}, None),
        ({}, ["realtime", "openai-beta.realtime-v1"]),
    ],
)
async def test_beta_shape_gets_close_4000_before_auth(
    headers: dict[str, str], subprotocols: list[str] | None
) -> None:
    async with serve() as base:  # no key sent: the beta check comes first
        url = ws_url(base, "/v1/realtime?model=gpt-realtime")
        async with connect(url, additional_headers=headers, subprotocols=subprotocols) as ws:  # type: ignore[arg-type]
            event, code, reason = await expect_rejection(ws)
    assert_error_shape(event, "beta_api_shape_disabled")
    assert (code, reason) == (4000, "invalid_request_error.beta_api_shape_disabled")


@pytest.mark.parametrize("query", ["", "?model=", "?foo=bar"])
async def test_no_model_gets_missing_model_and_close_4000(query: str) -> None:
    async with serve() as base:
        async with connect(
            ws_url(base, "/v1/realtime" + query), additional_headers=bearer(KEY)
        ) as ws:
            event, code, reason = await expect_rejection(ws)
    error = assert_error_shape(event, "missing_model")
    assert error["message"] == (
        "You must provide a model parameter, for example "
        "wss://api.openai.com/v1/realtime?model=gpt-realtime-1.5"
    )
    assert (code, reason) == (4000, "invalid_request_error.missing_model")


async def test_auth_is_checked_before_the_query() -> None:
    async with serve() as base:
        async with connect(ws_url(base, "/v1/realtime")) as ws:
            event, code, _ = await expect_rejection(ws)
    assert (event["error"]["code"], code) == (None, 3000)


@pytest.mark.parametrize(
    "query",
    [
        "?model=gpt-realtime&intent=transcription",
        "?model=gpt-realtime&call_id=rtc_123",
        "?model=gpt-realtime&model=gpt-realtime-mini",
    ],
)
async def test_more_than_one_selector_gets_close_4000(query: str) -> None:
    async with serve() as base:
        async with connect(
            ws_url(base, "/v1/realtime" + query), additional_headers=bearer(KEY)
        ) as ws:
            event, code, reason = await expect_rejection(ws)
    error = assert_error_shape(event, "invalid_value")
    assert "exactly one" in error["message"]
    assert (code, reason) == (4000, "invalid_request_error.invalid_value")


async def test_unknown_intent_gets_invalid_value() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?intent=translation")
        async with connect(url, additional_headers=bearer(KEY)) as ws:
            event, code, _ = await expect_rejection(ws)
    error = assert_error_shape(event, "invalid_value")
    assert error["param"] == "intent"
    assert (
        error["message"] == "Invalid value: 'translation'. Supported values are: 'transcription'."
    )
    assert code == 4000


async def test_call_id_gets_call_not_found() -> None:
    async with serve() as base:
        url = ws_url(base, "/v1/realtime?call_id=rtc_abc")
        async with connect(url, additional_headers=bearer(KEY)) as ws:
            event, code, reason = await expect_rejection(ws)
    error = assert_error_shape(event, "call_not_found")
    assert error["message"] == "No active call with id 'rtc_abc'."
    assert (code, reason) == (4000, "invalid_request_error.call_not_found")


async def test_unlisted_model_is_refused_only_when_configured() -> None:
    config = Config(api_keys=(KEY,), accept_any_model=False)
    async with serve(config) as base:
        url = ws_url(base, "/v1/realtime?model=gpt-nope")
        async with connect(url, additional_headers=bearer(KEY)) as ws:
            event, code, reason = await expect_rejection(ws)
        error = assert_error_shape(event, "invalid_model")
        assert error["message"].startswith('Model "gpt-nope" is not supported in realtime mode.')
        assert (code, reason) == (4000, "invalid_request_error.invalid_model")
        url = ws_url(base, "/v1/realtime?model=gpt-realtime-2")
        async with connect(url, additional_headers=bearer(KEY)) as ws:
            assert json.loads(await ws.recv())["model"] == "gpt-realtime-2"


# --------------------------------------------------------------------------- openai SDK


async def test_openai_sdk_with_bad_key_receives_the_error_event() -> None:
    async with serve() as base:
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=WRONG_KEY)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            event = await conn.recv()
            assert event.type == "error"
            assert event.error.code == "invalid_api_key"
            assert event.error.type == "invalid_request_error"
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 3000
        await client.close()


async def test_openai_sdk_with_good_key_reaches_the_session() -> None:
    async with serve() as base:
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            hello = json.loads(await conn.recv_bytes())
            assert (hello["type"], hello["model"]) == ("test.hello", "gpt-realtime")
            await conn.send({"type": "response.cancel"})
            assert json.loads(await conn.recv_bytes()) == {"type": "response.cancel"}
        await client.close()


# --------------------------------------------------------------------------- transport


async def test_transport_after_client_close() -> None:
    outcome: asyncio.Future[tuple[object, object]] = asyncio.get_running_loop().create_future()

    async def runner(transport: Any, request: SessionRequest, services: Services) -> None:
        first = await transport.receive()
        assert await transport.receive() is None
        assert await transport.receive() is None  # stays None
        try:
            await transport.send_text("{}")
        except TransportClosed as exc:
            outcome.set_result((first, exc))
        await transport.close()
        await transport.close()

    async with serve(Config(), runner) as base:
        async with connect(ws_url(base, "/v1/realtime?model=m")) as ws:
            await ws.send("hi")
        first, exc = await asyncio.wait_for(outcome, 5)
    assert first == "hi"
    assert isinstance(exc, TransportClosed)


async def test_server_close_is_idempotent_and_send_after_close_raises() -> None:
    outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def runner(transport: Any, request: SessionRequest, services: Services) -> None:
        await transport.close(1000, "bye")
        await transport.close(4000, "again")
        try:
            await transport.send_text("{}")
        except TransportClosed as exc:
            outcome.set_result(exc)

    async with serve(Config(), runner) as base:
        async with connect(ws_url(base, "/v1/realtime?model=m")) as ws:
            await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1000, "bye")
        assert isinstance(await asyncio.wait_for(outcome, 5), TransportClosed)


async def test_failing_runner_closes_with_1011() -> None:
    async def runner(transport: Any, request: SessionRequest, services: Services) -> None:
        raise ValueError("boom")

    async with serve(Config(), runner) as base:
        async with connect(ws_url(base, "/v1/realtime?model=m")) as ws:
            await ws.wait_closed()
        assert ws.close_code == 1011


async def test_client_that_stops_reading_is_dropped() -> None:
    outcome: asyncio.Future[tuple[float, int | None]] = asyncio.get_running_loop().create_future()
    chunk = "x" * (256 * 1024)

    async def runner(transport: Any, request: SessionRequest, services: Services) -> None:
        started = time.monotonic()
        try:
            for _ in range(10_000):  # at most 2.5 GB: the stall must come long before
                await transport.send_text(chunk)
        except TransportClosed:
            outcome.set_result((time.monotonic() - started, transport.close_code))

    config = Config(outbound_stall_seconds=0.5)
    async with serve(config, runner) as base:
        url = ws_url(base, "/v1/realtime?model=m")
        async with connect(url, max_size=None, max_queue=1, compression=None) as ws:
            elapsed, code = await asyncio.wait_for(outcome, 30)
            assert code == 1008
            assert elapsed < 20
            # The close frame could not be written past the full buffers, so once the client
            # drains what was sent the server has simply dropped the connection.
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(10):
                    async for _ in ws:
                        pass
        assert ws.close_code in (1006, 1008)


async def test_open_sessions_do_not_block_server_shutdown() -> None:
    async with serve(Config()) as base:
        ws = await connect(ws_url(base, "/v1/realtime?model=m"))
        await ws.recv()
    await ws.wait_closed()
    assert ws.close_code == 1012  # uvicorn: service restart


# --------------------------------------------------------------------------- HTTP


async def test_healthz_and_models_need_no_key_when_auth_is_off() -> None:
    async with serve(Config()) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        body = (await http.get("/v1/models")).json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == list(Config().models)
        assert body["data"][0] == {
            "id": "gpt-realtime",
            "object": "model",
            "created": 0,
            "owned_by": "openrealtime",
        }


async def test_models_requires_a_key_when_keys_are_set() -> None:
    async with serve() as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        missing = await http.get("/v1/models")
        assert missing.status_code == 401
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        wrong = await http.get("/v1/models", headers=bearer(WRONG_KEY))
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert "sk-…ZZZZ" in wrong.json()["error"]["message"]
        assert WRONG_KEY not in wrong.text
        ok = await http.get("/v1/models", headers=bearer(KEY))
        assert ok.status_code == 200
        assert "gpt-realtime" in {m["id"] for m in ok.json()["data"]}
        one = await http.get("/v1/models/gpt-realtime-mini", headers=bearer(KEY))
        assert one.json()["id"] == "gpt-realtime-mini"
        unknown = await http.get("/v1/models/nope", headers=bearer(KEY))
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"


async def test_openai_sdk_lists_models() -> None:
    async with serve() as base:
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY) as client:
            page = await client.models.list()
            assert "gpt-realtime" in [m.id for m in page.data]
        async with openai.AsyncOpenAI(
            base_url=f"{base}/v1", api_key=WRONG_KEY, max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()


# --------------------------------------------------------------------------- CLI


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENREALTIME_")}


def test_serve_help_lists_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "openrealtime", "serve", "--help"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=True,
    )
    for flag in [
        "--host",
        "--port",
        "--api-key",
        "--insecure-no-auth",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--vad",
        "--vad-model",
        "--stt",
        "--llm",
        "--tts",
        "--cache-dir",
        "--session-max-seconds",
        "--log-level",
        "OPENREALTIME_API_KEYS",
        "silero",
        "energy",
    ]:
        assert flag in result.stdout, flag


def test_serve_refuses_public_host_without_a_key() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "openrealtime", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0 without an API key" in result.stderr
    assert "--insecure-no-auth" in result.stderr


@pytest.fixture(autouse=False)
def no_global_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep cli.main from reconfiguring the process's loggers during tests."""
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)


@pytest.mark.usefixtures("no_global_logging")
def test_serve_maps_flags_and_env_to_config(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openrealtime")
    seen: list[Config] = []
    monkeypatch.setattr(cli, "_run_server", lambda config: seen.append(config) or 0)
    for name in list(os.environ):
        if name.startswith("OPENREALTIME_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPENREALTIME_SESSION_MAX_SECONDS", "120")
    monkeypatch.setenv("OPENREALTIME_API_KEYS", f"{OTHER_KEY}, {WRONG_KEY}")
    argv = ["serve", "--host", "0.0.0.0", "--port", "9000", "--api-key", KEY]
    argv += ["--api-key", OTHER_KEY, "--vad", "energy", "--vad-model", "/tmp/v.onnx"]
    argv += ["--log-level", "debug", "--cache-dir", "/tmp/c"]
    assert cli.main(argv) == 0
    (config,) = seen
    assert config.host == "0.0.0.0"
    assert config.port == 9000
    assert config.api_keys == (KEY, OTHER_KEY)  # flags replace the env list
    assert (config.vad, config.vad_model_path) == ("energy", "/tmp/v.onnx")
    assert (config.log_level, config.cache_dir) == ("debug", "/tmp/c")
    assert config.session_max_seconds == 120  # from the environment
    assert KEY not in caplog.text
    assert "sk-…GOOD" in caplog.text


@pytest.mark.usefixtures("no_global_logging")
def test_serve_on_loopback_without_key_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Config] = []
    monkeypatch.setattr(cli, "_run_server", lambda config: seen.append(config) or 0)
    monkeypatch.delenv("OPENREALTIME_API_KEYS", raising=False)
    assert cli.main(["serve"]) == 0
    assert seen[0].api_keys == ()
    assert cli.main(["serve", "--host", "0.0.0.0", "--insecure-no-auth"]) == 0
    assert "authentication is DISABLED" in caplog.text


@pytest.mark.usefixtures("no_global_logging")
def test_serve_rejects_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--ssl-certfile", "/tmp/cert.pem"]) == 2
    assert "ssl_certfile and ssl_keyfile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--vad", "webrtc"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert cli.is_loopback(host) is loopback
