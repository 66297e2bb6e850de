"""Fixtures of the end-to-end tests: the embedded engines behind one real server.

The engines are the defaults of ``openrealtime serve`` (``build_engines(Config())``: Silero VAD,
PocketSphinx, SmolLM2-135M on llama.cpp, espeak-ng, Smart Turn). Loading them takes seconds,
so one server is built for the whole test session and every async test in this directory runs
in the session's event loop (:func:`pytest_collection_modifyitems`) and opens its own SDK
connection to it. Clients, speech and audio helpers come from
``tests.conformance.conftest``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

# llama_cpp opens two /dev/null files at import and never closes them; imported for the first
# time inside a test (by build_engines), they end up finalised at exit under pytest's "error"
# warning filter ("Exception ignored ... ResourceWarning"). Importing it at collection is quiet.
import openrealtime.backends.llama_library  # noqa: F401  (loads llama_cpp)
from openrealtime.app import create_app
from openrealtime.audio.resample import resample
from openrealtime.backends.base import Engines, TranscriptFinal, TranscriptionRequest
from openrealtime.backends.registry import build_engines, close_engines
from openrealtime.config import Config
from tests.conformance.conftest import API_KEY, RATE, speak  # noqa: F401  (fixture re-export)
from tests.helpers.server import running_server

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run this directory's async tests in the session loop, where the shared server lives."""
    in_session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if E2E_DIR in Path(item.path).parents and pytest_asyncio.is_async_test(item):
            item.add_marker(in_session_loop, append=False)
        if E2E_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


@dataclass(frozen=True)
class EmbeddedServer:
    """The running server and the engines it serves with."""

    base: str
    engines: Engines


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[EmbeddedServer]:
    """A real server on the engines ``config`` names, closed with them on exit."""
    engines = await asyncio.to_thread(build_engines, config)
    try:
        async with running_server(create_app(config, engines)) as base:
            yield EmbeddedServer(base, engines)
    finally:
        await close_engines(engines)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def embedded() -> AsyncIterator[EmbeddedServer]:
    """One real server on the embedded default engines, for every e2e test."""
    async with serving(Config(api_keys=(API_KEY,))) as server:
        yield server


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The events of one type, in order."""
    return [e for e in events if e["type"] == kind]


def audio_of(events: list[dict[str, Any]], response_id: str | None = None) -> bytes:
    """The decoded ``response.output_audio.delta`` bytes (of one response, if given)."""
    return b"".join(
        base64.b64decode(e["delta"])
        for e in of_type(events, "response.output_audio.delta")
        if response_id is None or e["response_id"] == response_id
    )


async def transcribe(engines: Engines, pcm24k: bytes) -> str:
    """Transcribe 24 kHz PCM16 with the server's own speech-to-text engine."""
    stt = engines.stt
    pcm = resample(pcm24k, RATE, stt.sample_rate)
    final = ""
    async for event in stt.transcribe(TranscriptionRequest(pcm16=pcm, sample_rate=stt.sample_rate)):
        if isinstance(event, TranscriptFinal):
            final = event.text
    return final


def validate_arguments(value: Any, schema: dict[str, Any]) -> None:
    """Check a decoded arguments object against a flat object schema (jsonschema if present)."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        assert isinstance(value, dict), value
        for name in schema.get("required", ()):
            assert name in value, f"missing required {name!r} in {value}"
        types: dict[str, type | tuple[type, ...]] = {
            "string": str,
            "number": (int, float),
            "integer": int,
            "boolean": bool,
        }
        for name, given in value.items():
            assert name in schema["properties"], f"unexpected argument {name!r} in {value}"
            spec = schema["properties"][name]
            assert isinstance(given, types[spec["type"]]), (name, given, spec)
            if "enum" in spec:
                assert given in spec["enum"], (name, given, spec["enum"])
    else:
        jsonschema.validate(value, schema)


__all__ = [
    "EmbeddedServer",
    "audio_of",
    "embedded",
    "of_type",
    "speak",
    "transcribe",
    "validate_arguments",
]
