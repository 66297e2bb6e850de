"""Other languages for an English-only voice: espeak-ng speaks what it cannot.

Flite and the embedded Piper voice (``en_US-joe-medium``) speak English only. A response in
another language (``SynthesisRequest.language``, set by ``core.languages``) is spoken by
espeak-ng in that language instead, resampled to the English voice's rate so the stream keeps
one rate. English requests go to the English voice as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from openrealtime.audio.resample import StreamResampler
from openrealtime.backends.base import SynthesisRequest, TextToSpeech
from openrealtime.backends.tts_espeak import EspeakTextToSpeech


class EnglishVoice(TextToSpeech, Protocol):
    """An in-process English engine (Flite, Piper) that is closed at shutdown."""

    def close(self) -> None:
        """Release the engine's resources."""
        ...


class WithOtherLanguages:
    """``english`` for English text, espeak-ng for the rest (implements ``TextToSpeech``).

    Args:
        english: an English-only engine; its name and rate are this engine's.
        other: the espeak-ng engine that speaks the other languages.
    """

    def __init__(self, english: EnglishVoice, other: EspeakTextToSpeech) -> None:
        self.english = english
        self.other = other
        self.name = english.name
        self.sample_rate = english.sample_rate

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        """Speak ``request`` with the engine that speaks its language."""
        if request.language is None or request.language == "en":
            async for pcm in self.english.synthesize(request):
                yield pcm
            return
        resampler = StreamResampler(self.other.sample_rate, self.sample_rate)
        async for pcm in self.other.synthesize(request):
            if out := resampler.process(pcm):
                yield out
        if tail := resampler.flush():
            yield tail

    def close(self) -> None:
        """Close both engines (at shutdown)."""
        self.english.close()
        self.other.close()
