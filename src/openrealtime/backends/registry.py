"""Engine names to engine objects: the one place the server chooses implementations.

Heavy imports happen inside each branch, so a server that does not use an engine never imports
its dependencies (house rule 4).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from openrealtime.backends._http import OpenAICompatClient
from openrealtime.backends.base import (
    ChatMessage,
    Engines,
    GenerationRequest,
    LanguageModel,
    SpeechToText,
    TextToSpeech,
    TurnDetector,
    VoiceActivityDetector,
)
from openrealtime.backends.errors import BackendError
from openrealtime.config import LLM_CHOICES as LLM_ENGINES
from openrealtime.config import STT_CHOICES as STT_ENGINES
from openrealtime.config import TTS_CHOICES as TTS_ENGINES
from openrealtime.config import TURN_CHOICES, Config
from openrealtime.config import VAD_CHOICES as VAD_ENGINES
from openrealtime.protocol.session_config import DEFAULT_INSTRUCTIONS

PINNED_WHISPER = ("whisper-tiny-en", "whisper-base")
"""The embedded Whisper models ``--stt-model-path`` can name; the first is the default:
tiny.en (English, 75 MB) and base (99 languages, 145 MB, about three times the decode time)."""


def _cache(config: Config) -> Path | None:
    """The model cache the embedded engines resolve their files in (None: the default)."""
    return Path(config.cache_dir) if config.cache_dir else None


def build_vad(config: Config) -> VoiceActivityDetector:
    """Create the VAD; Silero's model file is resolved (and fetched once) from the cache."""
    if config.vad == "silero":
        from openrealtime.backends.vad_silero import SileroVad

        return SileroVad.from_cache(cache_dir=_cache(config), local_path=config.vad_model_path)
    if config.vad == "energy":
        from openrealtime.backends.vad_energy import EnergyVad

        return EnergyVad()
    raise ValueError(f"unknown VAD engine {config.vad!r}; choose one of {VAD_ENGINES}")


def build_stt(config: Config) -> SpeechToText:
    """Create the speech-to-text engine."""
    if config.stt == "pocketsphinx":
        from openrealtime.backends.stt_pocketsphinx import PocketsphinxSpeechToText

        return PocketsphinxSpeechToText()
    if config.stt == "faster-whisper":
        from openrealtime.backends.stt_faster_whisper import FasterWhisperSpeechToText
        from openrealtime.models import resolve_model

        model = config.stt_model_path or PINNED_WHISPER[0]
        if model in PINNED_WHISPER and not Path(model).exists():  # an embedded Whisper
            model = str(resolve_model(model, cache_dir=_cache(config)).parent)
        return FasterWhisperSpeechToText(model)
    if config.stt == "fake":
        from openrealtime.backends.fake import FakeSpeechToText

        return FakeSpeechToText()
    if config.stt == "openai-compatible":
        from openrealtime.backends.stt_openai_compat import OpenAICompatibleSTT

        assert config.stt_base_url is not None  # Config checks it
        return OpenAICompatibleSTT(
            config.stt_base_url,
            config.stt_model or "whisper-1",
            config.stt_api_key,
            timeout=config.engine_timeout,
            idle_timeout=config.engine_idle_timeout,
        )
    raise ValueError(f"unknown STT engine {config.stt!r}; choose one of {STT_ENGINES}")


def build_llm(config: Config) -> LanguageModel:
    """Create the language model engine.

    ``config.max_output_tokens`` is the cap of requests that set none (a Realtime response's
    ``"inf"``, a ``/v1/chat/completions`` request without ``max_tokens``): the engines apply it,
    so it holds on every path that reaches them; the remote engine also enforces it on its side
    against a server that ignores ``max_tokens``.
    """
    if config.llm == "llamacpp":
        from openrealtime.backends.llm_llamacpp import (
            DEFAULT_MAX_OUTPUT_TOKENS,
            LlamaCppLanguageModel,
        )

        return LlamaCppLanguageModel.from_cache(
            cache_dir=_cache(config),
            local_path=config.llm_model_path,
            n_threads=config.llm_threads,
            # the embedded model keeps its short spoken answers; a lower cap still applies
            default_max_output_tokens=min(config.max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS),
        )
    if config.llm == "fake":
        from openrealtime.backends.fake import FakeLanguageModel

        return FakeLanguageModel()
    if config.llm == "openai-compatible":
        from openrealtime.backends.llm_openai_compat import OpenAICompatibleLLM

        assert config.llm_base_url is not None and config.llm_model is not None
        return OpenAICompatibleLLM(
            config.llm_base_url,
            config.llm_model,
            config.llm_api_key,
            timeout=config.engine_timeout,
            idle_timeout=config.engine_idle_timeout,
            max_output_tokens=config.max_output_tokens,
        )
    raise ValueError(f"unknown LLM engine {config.llm!r}; choose one of {LLM_ENGINES}")


def build_tts(config: Config) -> TextToSpeech:
    """Create the text-to-speech engine; the Piper voice comes from the cache (fetched once)."""
    if config.tts == "espeak":
        from openrealtime.backends.tts_espeak import EspeakTextToSpeech

        return EspeakTextToSpeech()
    if config.tts in ("flite", "piper"):  # English voices: espeak-ng speaks the rest
        from openrealtime.backends.tts_espeak import EspeakTextToSpeech
        from openrealtime.backends.tts_languages import EnglishVoice, WithOtherLanguages

        english: EnglishVoice
        if config.tts == "flite":
            from openrealtime.backends.tts_flite import FliteTextToSpeech

            english = FliteTextToSpeech()
        else:
            from openrealtime.backends.tts_piper import PiperTextToSpeech

            english = PiperTextToSpeech(cache_dir=_cache(config))
        return WithOtherLanguages(english, EspeakTextToSpeech())
    if config.tts == "fake":
        from openrealtime.backends.fake import FakeTextToSpeech

        return FakeTextToSpeech()
    if config.tts == "openai-compatible":
        from openrealtime.backends.tts_openai_compat import OpenAICompatibleTTS

        assert config.tts_base_url is not None
        return OpenAICompatibleTTS(
            config.tts_base_url,
            config.tts_model or "tts-1",
            config.tts_api_key,
            timeout=config.engine_timeout,
            idle_timeout=config.engine_idle_timeout,
        )
    raise ValueError(f"unknown TTS engine {config.tts!r}; choose one of {TTS_ENGINES}")


def build_turn(config: Config) -> TurnDetector | None:
    """Create the semantic_vad turn model, or None (turns then end on silence)."""
    if config.turn == "none":
        return None
    if config.turn == "smart-turn":
        from openrealtime.backends.turn_smart import SmartTurnDetector

        return SmartTurnDetector.from_cache(
            cache_dir=_cache(config), local_path=config.turn_model_path
        )
    raise ValueError(f"unknown turn model {config.turn!r}; choose one of {TURN_CHOICES}")


def build_engines(config: Config) -> Engines:
    """Create every engine the config names; call once at server start-up."""
    return Engines(
        vad=build_vad(config),
        stt=build_stt(config),
        llm=build_llm(config),
        tts=build_tts(config),
        turn=build_turn(config),
    )


async def warm_up_engines(engines: Engines) -> None:
    """Pay start-up costs before the first user does; call once after :func:`build_engines`.

    Starts STT decoders that are created lazily, and lets every LLM instance read the default
    instructions, so a session's first turn reuses them from the KV cache instead of
    spending ~0.5 s on them (measured with the embedded stack).
    """
    stt_warm_up = getattr(engines.stt, "warm_up", None)
    if stt_warm_up is not None:
        await asyncio.to_thread(stt_warm_up, 2)
    instances = int(getattr(engines.llm, "instances", 1) or 1)

    async def prime(index: int) -> None:
        request = GenerationRequest(
            messages=(ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", "Hi")),
            max_output_tokens=1,
            session_key=f"warm-up-{index}",
        )
        async for _ in engines.llm.generate(request):
            pass
        forget = getattr(engines.llm, "forget", None)
        if forget is not None:
            forget(request.session_key)

    if engines.llm.name != "fake":
        await asyncio.gather(*(prime(i) for i in range(instances)))


async def probe_engines(engines: Engines) -> dict[str, str | None]:
    """Ask each remote engine whether its server answers; ``{label: problem or None}``.

    Engines in this process have nothing to probe and are left out. Used by the readiness
    check (``runtime/lifecycle.py``), every few seconds.
    """
    remote: dict[str, object] = {"STT": engines.stt, "LLM": engines.llm, "TTS": engines.tts}
    results: dict[str, str | None] = {}
    for label, engine in remote.items():
        http = getattr(engine, "http", None)
        if not isinstance(http, OpenAICompatClient):
            continue
        key = f"{label} engine at {http.server}"
        try:
            await http.probe()
        except BackendError as exc:
            results[key] = exc.code
        else:
            results[key] = None
    return results


async def close_engines(engines: Engines) -> None:
    """Release engines that hold resources (connection pools, decoder processes, models).

    Call at shutdown. Engines close through ``aclose()`` when they have one, else ``close()``.
    """
    for engine in (engines.vad, engines.stt, engines.llm, engines.tts, engines.turn):
        aclose = getattr(engine, "aclose", None)
        close = getattr(engine, "close", None)
        if aclose is not None:
            await aclose()
        elif close is not None:
            await asyncio.to_thread(close)
