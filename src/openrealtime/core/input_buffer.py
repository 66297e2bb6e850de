"""The input audio buffer, counted in samples (spec §2.2 ``input_audio_buffer.*``).

Positions are absolute sample indexes in the session's audio stream (PCM16, 24 kHz), so the
``audio_start_ms``/``audio_end_ms`` of VAD events are "milliseconds since the start of all audio
written to the buffer in this session" (spec §5.2).
"""

from __future__ import annotations

import base64
import binascii

from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.protocol.errors import ProtocolError

BYTES_PER_SAMPLE = 2
BYTES_PER_MS = SESSION_RATE * BYTES_PER_SAMPLE // 1000


class InputAudioBuffer:
    """Uncommitted audio; older audio is dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data = bytearray()
        self.start = 0
        """Absolute sample index of the first buffered sample."""
        self.written = 0
        """Samples written in the session so far (the absolute end of the buffer)."""

    def __len__(self) -> int:
        return len(self._data)

    @property
    def ms(self) -> float:
        """Buffered audio in milliseconds."""
        return len(self._data) / BYTES_PER_MS

    def append(self, pcm: bytes) -> int:
        """Add audio; return how many bytes of the oldest audio were dropped to stay in bounds."""
        self._data += pcm
        self.written += len(pcm) // BYTES_PER_SAMPLE
        overflow = len(self._data) - self.max_bytes
        if overflow <= 0:
            return 0
        overflow += overflow % BYTES_PER_SAMPLE
        del self._data[:overflow]
        self.start += overflow // BYTES_PER_SAMPLE
        return overflow

    def peek(self, start: int, end: int) -> bytes:
        """Return a copy of the audio between samples ``start`` and ``end`` (clamped)."""
        start = max(start, self.start)
        end = min(max(end, start), self.written)
        lo = (start - self.start) * BYTES_PER_SAMPLE
        hi = (end - self.start) * BYTES_PER_SAMPLE
        return bytes(self._data[lo:hi])

    def take(self, start: int, end: int) -> bytes:
        """Remove audio up to sample ``end`` and return the part from sample ``start``."""
        pcm = self.peek(start, end)
        end = min(max(end, start, self.start), self.written)
        del self._data[: (end - self.start) * BYTES_PER_SAMPLE]
        self.start = end
        return pcm

    def drop_before(self, sample: int) -> None:
        """Forget the audio before sample ``sample`` (no copy of it is made)."""
        end = min(sample, self.written)
        if end > self.start:
            del self._data[: (end - self.start) * BYTES_PER_SAMPLE]
            self.start = end

    def take_all(self) -> bytes:
        """Remove and return everything buffered."""
        return self.take(self.start, self.written)

    def clear(self) -> None:
        """Drop everything buffered."""
        self._data.clear()
        self.start = self.written


def decode_base64_audio(text: str) -> bytes:
    """Decode an append's base64 ``audio`` exactly as ``base64.b64decode(validate=True)``.

    Call for every ``input_audio_buffer.append`` (spec §2.2); strict decoding takes the usual
    case in one C call, the general one decides only what it refuses.

    Raises:
        ProtocolError: ``invalid_value`` on ``audio`` when it is not base64.
    """
    try:  # accepts a subset of what validate=True accepts, giving the same bytes
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_value", "Invalid 'audio': expected base64-encoded audio.", param="audio"
        ) from None
