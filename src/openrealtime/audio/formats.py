"""Wire audio formats <-> session audio (design.md decision 2; spec §3.1).

A session's wire format is ``audio/pcm`` (PCM16 24 kHz, the session's own audio), ``audio/pcmu``
or ``audio/pcma`` (G.711 at 8 kHz). Everything inside the server is PCM16 24 kHz; these helpers
convert at the edge where base64 audio enters or leaves a session:

- :class:`InputDecoder`: one per input stream (``input_audio_buffer.append``), stateful.
- :class:`OutputEncoder`: one per streamed output (an assistant message's audio deltas).
- :func:`decode_clip` / :func:`encode_clip`: a whole clip at once (items created or retrieved).

Lengths are exact so that milliseconds mean the same on both sides: ``n`` G.711 bytes become
exactly ``3 n`` session samples, and ``s`` session samples become exactly ``s // 3`` G.711 bytes
once a stream is flushed (``audio_end_ms`` and truncation stay exact, spec §5.6). While a stream
runs, the resampler holds back some audio (see :mod:`openrealtime.audio.resample`; about 13-73 ms
at these rates); ``flush`` releases it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from openrealtime.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler

__all__ = [
    "G711_RATE",
    "InputDecoder",
    "OutputEncoder",
    "WireFormat",
    "decode_clip",
    "encode_clip",
]

WireFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
"""The ``type`` of a session audio format (spec §3.1)."""

G711_RATE = 8000
"""Sample rate of ``audio/pcmu`` and ``audio/pcma``."""

_SLICE_SAMPLES = 10 * G711_RATE
"""Resample at most this many 8 kHz samples at once (bounds the float buffers of a big append)."""

_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "audio/pcmu": ulaw_decode,
    "audio/pcma": alaw_decode,
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "audio/pcmu": ulaw_encode,
    "audio/pcma": alaw_encode,
}


class _ExactResampler:
    """A :class:`StreamResampler` whose total output is exactly ``in * out_rate // in_rate``."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._stream = StreamResampler(in_rate, out_rate)
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._in_bytes = 0
        self._out_bytes = 0

    def _due_bytes(self) -> int:
        return 2 * ((self._in_bytes // 2) * self._out_rate // self._in_rate)

    def process(self, pcm16: bytes) -> bytes:
        self._in_bytes += len(pcm16)
        out = self._stream.process(pcm16)
        room = self._due_bytes() - self._out_bytes
        if len(out) > room:
            out = out[: max(0, room)]
        self._out_bytes += len(out)
        return out

    def flush(self) -> bytes:
        tail = self._stream.flush()
        need = self._due_bytes() - self._out_bytes
        tail = tail[:need] if len(tail) >= need else tail + bytes(need - len(tail))
        self._out_bytes += len(tail)
        return tail


class InputDecoder:
    """Turns one client's input audio, in its wire format, into session PCM16 24 kHz.

    Create one per input stream; feed every append in order with :meth:`process` and call
    :meth:`flush` when the stream is cut (a manual commit, a format change), then drop it.
    For ``audio/pcm`` it only drops a trailing odd byte.

    Args:
        fmt: the wire format of the stream.
    """

    def __init__(self, fmt: WireFormat) -> None:
        self.format: WireFormat = fmt
        self._decode = _DECODERS.get(fmt)
        self._resampler = (
            _ExactResampler(G711_RATE, SESSION_RATE) if self._decode is not None else None
        )

    def process(self, data: bytes) -> bytes:
        """Convert the next chunk of wire audio; the result may trail it (resampler delay).

        Args:
            data: decoded (not base64) audio bytes in :attr:`format`.

        Returns:
            PCM16 24 kHz audio, possibly empty.
        """
        if self._decode is None or self._resampler is None:
            return data[: len(data) - len(data) % 2]
        out = [
            self._resampler.process(self._decode(data[start : start + _SLICE_SAMPLES]))
            for start in range(0, len(data), _SLICE_SAMPLES)
        ]
        return b"".join(out)

    def flush(self) -> bytes:
        """End the stream: the audio the resampler still holds (nothing for ``audio/pcm``).

        After a flush the session has received exactly ``3 n`` samples for ``n`` G.711 bytes.
        """
        return self._resampler.flush() if self._resampler is not None else b""


class OutputEncoder:
    """Turns a stream of session PCM16 24 kHz into audio of a wire format.

    Create one per streamed output (one assistant message's audio deltas); call :meth:`flush`
    once at its end. For ``audio/pcm`` audio passes through unchanged.

    Args:
        fmt: the wire format to produce.
    """

    def __init__(self, fmt: WireFormat) -> None:
        self.format: WireFormat = fmt
        self._encode = _ENCODERS.get(fmt)
        self._resampler = (
            _ExactResampler(SESSION_RATE, G711_RATE) if self._encode is not None else None
        )

    def process(self, pcm16: bytes) -> bytes:
        """Convert the next chunk of session audio; the result may trail it (resampler delay).

        Args:
            pcm16: PCM16 24 kHz mono audio.

        Returns:
            Wire audio, possibly empty.
        """
        if self._encode is None or self._resampler is None:
            return pcm16
        return self._encode(self._resampler.process(pcm16))

    def flush(self) -> bytes:
        """End the stream and return the rest; afterwards ``s`` samples gave ``s // 3`` bytes."""
        if self._encode is None or self._resampler is None:
            return b""
        return self._encode(self._resampler.flush())


def decode_clip(data: bytes, fmt: WireFormat) -> bytes:
    """Convert a whole clip of wire audio to session PCM16 24 kHz (e.g. an item's audio).

    Args:
        data: audio bytes in ``fmt``.
        fmt: the wire format.

    Returns:
        PCM16 24 kHz audio; exactly three samples per G.711 byte.
    """
    decoder = InputDecoder(fmt)
    return decoder.process(data) + decoder.flush()


def encode_clip(pcm16: bytes, fmt: WireFormat) -> bytes:
    """Convert a whole clip of session PCM16 24 kHz to wire audio (e.g. a retrieved item).

    Args:
        pcm16: PCM16 24 kHz mono audio.
        fmt: the wire format.

    Returns:
        Audio in ``fmt``; for G.711, ``samples // 3`` bytes.
    """
    encoder = OutputEncoder(fmt)
    return encoder.process(pcm16) + encoder.flush()
