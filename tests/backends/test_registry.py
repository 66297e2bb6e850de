"""The config names engines; the registry builds exactly those (and only imports what it uses)."""

from __future__ import annotations

import pytest

from openrealtime.backends.fake import FakeLanguageModel
from openrealtime.backends.llm_openai_compat import OpenAICompatibleLLM
from openrealtime.backends.registry import build_engines, close_engines
from openrealtime.backends.stt_openai_compat import OpenAICompatibleSTT
from openrealtime.backends.tts_openai_compat import OpenAICompatibleTTS
from openrealtime.config import Config


async def test_remote_engines_from_config() -> None:
    config = Config(
        vad="energy",
        stt="openai-compatible",
        stt_base_url="http://127.0.0.1:9/v1",
        llm="openai-compatible",
        llm_base_url="http://127.0.0.1:9/v1",
        llm_model="qwen2.5:7b",
        tts="openai-compatible",
        tts_base_url="http://127.0.0.1:9/v1",
        turn="none",
    )
    engines = build_engines(config)
    assert isinstance(engines.stt, OpenAICompatibleSTT)
    assert isinstance(engines.llm, OpenAICompatibleLLM)
    assert isinstance(engines.tts, OpenAICompatibleTTS)
    assert engines.turn is None
    await close_engines(engines)


def test_embedded_engines_are_the_default() -> None:
    config = Config()
    assert (config.vad, config.stt, config.llm, config.tts, config.turn) == (
        "silero",
        "pocketsphinx",
        "llamacpp",
        "espeak",
        "smart-turn",
    )


def test_fakes_on_request_and_remote_needs_a_url() -> None:
    engines = build_engines(Config(vad="energy", stt="fake", llm="fake", tts="fake", turn="none"))
    assert isinstance(engines.llm, FakeLanguageModel)
    with pytest.raises(ValueError, match="llm_base_url"):
        Config(llm="openai-compatible", llm_model="m")
    with pytest.raises(ValueError, match="llm_model"):
        Config(llm="openai-compatible", llm_base_url="http://x/v1")
