"""TTS engine for any OpenAI-compatible ``/audio/speech`` server (design.md decision 9).

Reaches Kokoro-FastAPI, speaches (Kokoro/Piper), another openrealtime, or OpenAI. It asks for
``response_format: "pcm"`` (raw PCM16 little-endian mono; 24 kHz on OpenAI and Kokoro) and
yields the body's chunks as they arrive, so speech starts before synthesis ends.

A 2xx answer that is not audio (``text/html`` from a proxy, a JSON error with status 200, any
``text/*``) is refused with ``engine_bad_response`` and an excerpt of the body, never played;
a missing ``Content-Type`` is taken as audio. Audio bytes are the only content: a server that
sends nothing for ``idle_timeout`` seconds fails with ``engine_timeout``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from openrealtime.backends._http import OpenAICompatClient, StreamedBody
from openrealtime.backends.base import SynthesisRequest

__all__ = ["OpenAICompatibleTTS"]


class OpenAICompatibleTTS:
    """Synthesizes through ``POST {base_url}/audio/speech``, streaming the PCM body.

    Args:
        base_url: the API root, e.g. ``http://localhost:8880/v1``.
        model: the speech model the server knows (``tts-1``, ``kokoro``...).
        api_key: Bearer key, if the server wants one.
        sample_rate: the rate of the server's ``pcm`` output (24000 for OpenAI's format).
        timeout: seconds to wait for each read (the first audio included).
        connect_timeout: seconds to wait for the connection; defaults to ``timeout``.
        idle_timeout: seconds the body may go without audio (``Config.engine_idle_timeout``).
        extra_body: more request fields (e.g. ``{"instructions": "..."}``), sent as given.
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str = "tts-1",
        api_key: str | None = None,
        *,
        sample_rate: int = 24000,
        timeout: float = 30.0,
        connect_timeout: float | None = 5.0,
        idle_timeout: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.sample_rate = sample_rate
        self.extra_body = dict(extra_body or {})
        self.http = OpenAICompatClient(
            "TTS",
            base_url,
            api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.http.aclose()

    def payload(self, request: SynthesisRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""
        return {
            **self.extra_body,
            "model": self.model,
            "input": request.text,
            "voice": request.voice,
            "speed": request.speed,
            "response_format": "pcm",
        }

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Yield PCM16 chunks (even byte counts) at ``sample_rate`` as the server sends them."""
        if not request.text.strip():
            return
        carry = b""
        async with self.http.stream("audio/speech", json_body=self.payload(request)) as body:
            await self._check_audio(body)
            async for chunk in body.iter_bytes():
                data = carry + chunk
                whole = len(data) - len(data) % 2
                carry = data[whole:]
                if whole:
                    yield data[:whole]

    async def _check_audio(self, body: StreamedBody) -> None:
        """Refuse a 2xx answer whose ``Content-Type`` says it is not audio."""
        kind = body.content_type
        if not kind or kind.startswith("audio/") or kind == "application/octet-stream":
            return
        shown = await body.excerpt()
        raise self.http.error(f"answered {kind} instead of audio: {shown}", "engine_bad_response")
