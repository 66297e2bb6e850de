"""STT engine for any OpenAI-compatible ``/audio/transcriptions`` server (design.md decision 9).

Reaches speaches (faster-whisper), whisper.cpp server, vLLM's Whisper, another openrealtime, or
OpenAI. The audio goes up as a WAV file at the engine's ``sample_rate``. The engine asks for a
streamed answer (``stream=true``: SSE ``transcript.text.delta`` / ``transcript.text.done``);
a server that answers with plain JSON gives the final transcript only, and one that rejects
``stream`` with HTTP 400 is asked again without it (and never asked to stream again).

Bounds: an SSE stream without a transcription event for ``idle_timeout`` seconds (comments and
whitespace do not count) and a JSON answer that trickles whitespace fail with
``engine_timeout``; a JSON answer past ``MAX_JSON_BODY`` bytes, an HTML page or any other body
that is not the transcription's JSON fail with ``engine_bad_response`` and a short excerpt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from openrealtime.audio.wav import wav_bytes
from openrealtime.backends._http import (
    MAX_JSON_BODY,
    OpenAICompatClient,
    excerpt,
    incomplete,
    iter_sse,
    parse_json,
)
from openrealtime.backends.base import (
    TranscriptDelta,
    TranscriptFinal,
    TranscriptionEvent,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError

__all__ = ["OpenAICompatibleSTT"]


class OpenAICompatibleSTT:
    """Transcribes through ``POST {base_url}/audio/transcriptions``.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        model: the transcription model the server knows (it wins over the session's
            ``audio.input.transcription.model``, which names an OpenAI model).
        api_key: Bearer key, if the server wants one.
        sample_rate: the rate the audio is uploaded at (the runtime resamples to it).
        timeout: seconds to wait for each read.
        connect_timeout: seconds to wait for the connection; defaults to ``timeout``.
        idle_timeout: seconds the answer may go without content (``Config.engine_idle_timeout``).
        stream: ask for SSE deltas (``stream=true``) first.
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str = "whisper-1",
        api_key: str | None = None,
        *,
        sample_rate: int = 16000,
        timeout: float = 30.0,
        connect_timeout: float | None = 5.0,
        idle_timeout: float = 30.0,
        stream: bool = True,
    ) -> None:
        self.model = model
        self.sample_rate = sample_rate
        self.stream = stream
        self.http = OpenAICompatClient(
            "STT",
            base_url,
            api_key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.http.aclose()

    def form(self, request: TranscriptionRequest, *, stream: bool) -> dict[str, str]:
        """The multipart form fields (besides ``file``) for ``request``."""
        fields = {"model": self.model, "response_format": "json"}
        if request.language:
            fields["language"] = request.language
        if request.prompt:
            fields["prompt"] = request.prompt
        if stream:
            fields["stream"] = "true"
        return fields

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionEvent]:
        """Yield the server's deltas (when it streams), then the final transcript."""
        seconds = len(request.pcm16) / 2 / request.sample_rate
        files = {"file": ("audio.wav", wav_bytes(request.pcm16, request.sample_rate), "audio/wav")}
        stream = self.stream
        while True:
            try:
                async with self.http.stream(
                    "audio/transcriptions", data=self.form(request, stream=stream), files=files
                ) as body:
                    media = body.content_type
                    if media == "text/html":
                        shown = await body.excerpt()
                        message = f"answered {media} instead of a transcription: {shown}"
                        raise self.http.error(message, "engine_bad_response")
                    if media != "text/event-stream":
                        data = await body.read(MAX_JSON_BODY)
                        yield TranscriptFinal(self._final_text(data), seconds)
                        return
                    text: str | None = None
                    async for sse in iter_sse(body):
                        event = parse_json(self.http, sse.data, "a transcription event")
                        kind = event.get("type") if isinstance(event, dict) else None
                        if kind == "transcript.text.delta":
                            yield TranscriptDelta(str(event.get("delta", "")))
                        elif kind == "transcript.text.done":
                            text = str(event.get("text", ""))
                            break
                        elif isinstance(event, dict) and event.get("error"):
                            message = f"failed mid-stream: {excerpt(self.http.scrub(str(event)))}"
                            raise self.http.error(message, "engine_error")
                    if text is None:
                        raise incomplete(self.http, "the transcription stream")
                    yield TranscriptFinal(text, seconds)
                    return
            except BackendError as exc:
                if not (stream and exc.code == "engine_http_400"):
                    raise
                self.stream = stream = False  # this server does not stream transcriptions

    def _final_text(self, body: bytes) -> str:
        data = parse_json(self.http, body, "the transcription")
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            shown = excerpt(self.http.scrub(str(data)), 80)
            raise self.http.error(f"no text in {shown!r}", "engine_bad_response")
        return str(data["text"])
