"""faster-whisper (CTranslate2 Whisper) as an in-process STT engine: the optional ``whisper`` extra.

``pip install 'openrealtime[whisper]'``. The model is a CTranslate2 conversion of Whisper: a
directory with ``model.bin``, ``config.json`` and the tokenizer (``--stt-model-path DIR``), or a
size name (``small``, ``large-v3``…) that faster-whisper fetches from its model hub on first use
(not possible on offline machines: pass a directory). Decoding runs in a worker thread;
CTranslate2 releases the GIL, so the event loop keeps running. Segments stream as deltas.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from openrealtime.backends.base import (
    TranscriptDelta,
    TranscriptFinal,
    TranscriptionEvent,
    TranscriptionRequest,
)
from openrealtime.backends.errors import BackendError, ModelFileError

_REQUIRED_FILES = ("model.bin", "config.json")
TOKENS_PER_SECOND = 12
"""Most tokens a second of speech takes (fast speech in a language Whisper splits finely)."""
MAX_NEW_TOKENS = 220
"""Whisper's text context is 448 tokens, of which a prompt may take up to 224."""


def check_model_dir(path: Path) -> None:
    """Fail early, with an actionable message, when a local model directory is incomplete."""
    if not path.is_dir():
        raise ModelFileError(f"faster-whisper model directory {path} does not exist")
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelFileError(
            f"{path} is not a CTranslate2 Whisper model: missing {', '.join(missing)}. Convert "
            "one with ct2-transformers-converter or download a faster-whisper model directory."
        )


class FasterWhisperSpeechToText:
    """Whisper through faster-whisper; 16 kHz input, any language Whisper knows.

    A multilingual model transcribes in the request's ``language`` when given, else detects it
    (one more encoder pass over the first 30 s) and reports it on the final transcript; an
    English-only model (``.en``) always hears English and reports no language.
    """

    name = "faster-whisper"
    sample_rate = 16000

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ModelFileError(
                "the faster-whisper engine needs the optional extra: "
                "pip install 'openrealtime[whisper]'"
            ) from exc
        local = Path(model).expanduser()
        if local.exists() or "/" in model or model.startswith("."):
            check_model_dir(local)
            model = str(local)
        try:
            self._model: Any = WhisperModel(
                model,
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=local.exists(),
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError with details
            raise ModelFileError(f"cannot load faster-whisper model {model!r}: {exc}") from exc
        self._beam_size = beam_size
        self._multilingual = bool(self._model.model.is_multilingual)
        self._lock = threading.Lock()

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionEvent]:
        """Yield one delta per decoded segment, then the final text."""
        audio = np.frombuffer(request.pcm16, dtype="<i2").astype(np.float32) / 32768.0
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def decode() -> None:
            try:
                with self._lock:
                    if stop.is_set():  # abandoned while an earlier request held the model
                        loop.call_soon_threadsafe(queue.put_nowait, None)
                        return
                    segments, info = self._model.transcribe(
                        audio,
                        language=request.language,
                        initial_prompt=request.prompt,
                        beam_size=self._beam_size,
                        vad_filter=False,
                        # one greedy pass: no temperature fallback (a turn's buffer holds
                        # seconds of silence, on which the fallback re-decoded up to 6 times:
                        # 655 ms instead of 390 for a question after 12 s of silence)
                        temperature=0.0,
                        without_timestamps=True,
                        condition_on_previous_text=False,
                        max_new_tokens=max_new_tokens,
                    )
                    if self._multilingual:
                        language.append(str(info.language))
                    for segment in segments:
                        if stop.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, str(segment.text))
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        seconds = len(audio) / self.sample_rate
        # A cap on the tokens the audio can hold: a greedy decode that falls into a loop
        # ("copy, copy, copy…" for speech in a language the model does not know) stops there
        # instead of running to the end of Whisper's context, seconds later.
        max_new_tokens = min(MAX_NEW_TOKENS, 16 + math.ceil(TOKENS_PER_SECOND * seconds))
        language: list[str] = []
        worker = loop.run_in_executor(None, decode)
        parts: list[str] = []
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise BackendError(
                        f"faster-whisper failed: {item}", code="transcription_failed"
                    )
                parts.append(item)
                yield TranscriptDelta(item)
        finally:
            stop.set()
            await asyncio.shield(worker)
        text = "".join(parts).strip()
        yield TranscriptFinal(text, seconds, language[0] if language else None)
