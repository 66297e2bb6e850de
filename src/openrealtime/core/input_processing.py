"""What the session asks of the processing that cleans its input audio (echo, noise).

The session runs every sample of input audio through an :class:`InputProcessor` before it
stores it, detects speech in it or transcribes it, so the VAD, the turn model, the STT and the
conversation all see the same cleaned signal. The processor learns what the assistant played
(the far end) from the session over the WebSocket (the audio deltas it sent) and from the
runtime over WebRTC (the frames the call's track actually sent). The implementation
(``openrealtime.audio.processing``) is injected: the core stays free of native libraries, and
its unit tests run with none (``None``: the audio is taken as it comes).
"""

from __future__ import annotations

from typing import Literal, Protocol

NoiseReductionType = Literal["near_field", "far_field"] | None


class InputProcessor(Protocol):
    """Per-session input audio cleaning; all audio is PCM16 mono 24 kHz (the session's)."""

    def process(self, pcm16: bytes, now_ms: int) -> bytes:
        """Clean input audio; may hold back less than one processing frame (10 ms)."""
        ...

    def flush(self) -> bytes:
        """Return the audio held back (a manual commit cuts the stream)."""
        ...

    def far_end(self, pcm16: bytes, now_ms: int) -> None:
        """Audio the client is about to hear (or, over WebRTC, has just been sent)."""
        ...

    def drop_far_end(self) -> None:
        """The client stopped playing what it had (barge-in, truncation): forget it."""
        ...

    def set_noise_reduction(self, kind: NoiseReductionType) -> None:
        """``audio.input.noise_reduction.type``: which suppressor runs, or none."""
        ...
