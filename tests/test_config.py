"""Config parsing and validation; key redaction; the session log prefix."""

from __future__ import annotations

import logging

import pytest

from openrealtime.config import DEFAULT_MODELS, Config
from openrealtime.logging_setup import SessionLogger, configure_logging, redact


def test_defaults() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert (config.host, config.port, config.api_keys) == ("127.0.0.1", 8000, ())
    assert config.ws_max_size == 24 * 1024 * 1024
    assert config.models == DEFAULT_MODELS
    assert not config.auth_enabled
    assert config.accept_any_model


def test_env_parsing_and_overrides() -> None:
    env = {
        "OPENREALTIME_API_KEYS": " sk-a , sk-b,, ",
        "OPENREALTIME_PORT": "9001",
        "OPENREALTIME_WS_PING_INTERVAL": "5.5",
        "OPENREALTIME_ACCEPT_ANY_MODEL": "false",
        "OPENREALTIME_MODELS": "m1,m2",
        "OPENREALTIME_VAD_MODEL_PATH": "",
        "OPENREALTIME_VAD": "energy",
        "OPENAI_API_KEY": "ignored",
    }
    config = Config.from_env(env, port=None, vad="silero", log_level="debug")
    assert config.api_keys == ("sk-a", "sk-b")
    assert config.port == 9001  # a None override falls back to the environment
    assert config.ws_ping_interval == 5.5
    assert config.accept_any_model is False
    assert config.models == ("m1", "m2")
    assert config.vad_model_path is None
    assert config.vad == "silero"  # overrides win
    assert config.log_level == "debug"
    assert config.is_valid_key("sk-b") and not config.is_valid_key("sk-c")
    assert config.model_allowed("m1") and not config.model_allowed("gpt-realtime")


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"OPENREALTIME_PORT": "http"}, {}, "OPENREALTIME_PORT"),
        ({"OPENREALTIME_ACCEPT_ANY_MODEL": "maybe"}, {}, "OPENREALTIME_ACCEPT_ANY_MODEL"),
        ({}, {"vad": "webrtc"}, "vad must be one of silero, energy"),
        ({}, {"stt": "whisper"}, "stt must be one of"),
        ({}, {"port": 70000}, "port"),
        ({}, {"ws_max_size": 0}, "ws_max_size"),
        ({}, {"ssl_keyfile": "k.pem"}, "ssl_certfile and ssl_keyfile"),
        ({}, {"bogus": 1}, "unknown config field 'bogus'"),
        ({}, {"models": ()}, "models"),
    ],
)
def test_invalid_values_name_the_field(
    env: dict[str, str], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Config.from_env(env, **overrides)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("sk-proj-abcdefghijklmnopAAAA", "sk-…AAAA"),
        ("ek_68af0123456789abcdefBBBB", "ek_…BBBB"),
        ("my-own-long-secret-CCCC", "…CCCC"),
        ("sk-short", "sk-…"),
        ("tiny", "…"),
        ("", "<none>"),
        (None, "<none>"),
    ],
)
def test_redact(key: str | None, shown: str) -> None:
    assert redact(key) == shown


def test_session_logger_prefixes_the_label(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openrealtime.test")
    log = SessionLogger(logging.getLogger("openrealtime.test"), "sess_abc")
    log.info("hello %s", "world")
    assert caplog.messages == ["[sess_abc] hello world"]


def test_configure_logging_is_idempotent() -> None:
    logger = logging.getLogger("openrealtime")
    before = (list(logger.handlers), logger.level, logger.propagate)
    try:
        configure_logging("debug")
        configure_logging("trace")
        added = [h for h in logger.handlers if h not in before[0]]
        assert len(added) == 1
        assert logger.level == 5
        with pytest.raises(ValueError, match="unknown log level"):
            configure_logging("loud")
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])
        logger.propagate = before[2]


def test_ice_servers_for_webrtc_from_the_environment() -> None:
    from openrealtime.transports.webrtc import ice_configuration

    config = Config.from_env(
        {
            "OPENREALTIME_ICE_SERVERS": "stun:stun.example.org:3478, turn:turn.example.org:3478",
            "OPENREALTIME_ICE_USERNAME": "u",
            "OPENREALTIME_ICE_CREDENTIAL": "p4ss",
        }
    )
    assert config.ice_servers == ("stun:stun.example.org:3478", "turn:turn.example.org:3478")
    assert "p4ss" not in repr(config)
    stun, turn = ice_configuration(config).iceServers or []
    assert (stun.urls, stun.username, stun.credential) == ("stun:stun.example.org:3478", None, None)
    assert (turn.urls, turn.username, turn.credential) == (
        "turn:turn.example.org:3478",
        "u",
        "p4ss",
    )
    assert ice_configuration(Config()).iceServers == []


def test_an_ice_server_must_be_a_stun_or_turn_url() -> None:
    with pytest.raises(ValueError, match="ice_servers"):
        Config(ice_servers=("http://example.org",))
