"""The audio of a WebRTC call (spec §1.3): the remote track in, a paced track out.

aiortc decodes the caller's Opus into frames (48 kHz stereo); :class:`CallMedia` turns them into
session audio (PCM16 mono 24 kHz, resampled with :mod:`openrealtime.audio.resample`) for the
driver. Output audio is the call's :class:`~openrealtime.runtime.playback.PlaybackBuffer`, read
by :class:`PlaybackTrack` one 20 ms frame at a time in real time (paced by the frames' pts like
aiortc's ``AudioStreamTrack``) and encoded to Opus by aiortc; the buffer knows exactly what has
been played (design.md decision 5).

This module is a shell (house rule 3): it converts and paces audio, it decides nothing.
"""

from __future__ import annotations

import asyncio
import fractions
import logging

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler
from openrealtime.runtime.playback import PlaybackBuffer

__all__ = ["FRAME_MS", "CallMedia", "PlaybackTrack", "frame_to_pcm16"]

_log = logging.getLogger(__name__)

FRAME_MS = 20
"""Output frame duration: WebRTC's usual Opus packetization (``a=ptime:20``)."""

_FRAME_SAMPLES = SESSION_RATE * FRAME_MS // 1000
_FRAME_BYTES = _FRAME_SAMPLES * 2
_TIME_BASE = fractions.Fraction(1, SESSION_RATE)
_MAX_LAG_S = 0.2
"""If the event loop falls this far behind, restart the clock instead of sending a burst."""


class PlaybackTrack(MediaStreamTrack):
    """The call's outgoing audio track: the output buffer, one 20 ms frame per 20 ms.

    Silence is sent while the buffer is empty, so the receiver's clock keeps running and a new
    response starts playing within one frame.

    Args:
        buffer: the call's output audio buffer (PCM16 mono 24 kHz).
    """

    kind = "audio"

    def __init__(self, buffer: PlaybackBuffer) -> None:
        super().__init__()
        self._buffer = buffer
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        """The next frame, at its real-time deadline (called by aiortc's RTP sender)."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += _FRAME_SAMPLES
            wait = self._start + self._pts / SESSION_RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing, not synchronization (design.md decision 5)
            elif wait < -_MAX_LAG_S:
                self._start = loop.time() - self._pts / SESSION_RATE
        pcm16 = self._buffer.read(_FRAME_BYTES)
        frame = AudioFrame(format="s16", layout="mono", samples=_FRAME_SAMPLES)
        frame.planes[0].update(pcm16)
        frame.sample_rate = SESSION_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame


def frame_to_pcm16(frame: AudioFrame) -> tuple[bytes, int]:
    """Mix a decoded frame down to PCM16 mono bytes at the frame's own rate.

    Args:
        frame: a decoded audio frame (any channel count; ``s16``/``flt``, packed or planar).

    Returns:
        ``(pcm16, sample_rate)``.
    """
    data = frame.to_ndarray()
    channels = max(1, len(frame.layout.channels))
    if frame.format.is_planar:
        mono = data.astype(np.float32).mean(axis=0)
    else:
        mono = data.reshape(-1, channels).astype(np.float32).mean(axis=1)
    if data.dtype.kind == "f":
        mono *= 32767.0
    pcm = np.clip(np.rint(mono), -32768, 32767).astype("<i2")
    return pcm.tobytes(), int(frame.sample_rate)


class CallMedia:
    """The audio side of a call, as the session driver sees it (``runtime.playback.MediaPort``).

    Set :attr:`remote` when aiortc reports the caller's audio track (``pc.on("track")``); until
    then, and after :meth:`end`, :meth:`receive_audio` has nothing to give.
    """

    def __init__(self) -> None:
        self._playback = PlaybackBuffer()
        self.track = PlaybackTrack(self._playback)
        """The track added to the peer connection (its answer carries ``a=msid``)."""
        self.remote: MediaStreamTrack | None = None
        self._resampler: StreamResampler | None = None
        self._ended = asyncio.Event()

    @property
    def playback(self) -> PlaybackBuffer:
        """The call's output audio buffer."""
        return self._playback

    def end(self) -> None:
        """Stop both directions (the call is over)."""
        self._ended.set()
        self.track.stop()
        if self.remote is not None:
            self.remote.stop()

    async def receive_audio(self) -> bytes | None:
        """The caller's next audio as session audio (PCM16 mono 24 kHz).

        Returns:
            The next non-empty chunk, or ``None`` once the track ended or the call is over.
        """
        remote = self.remote
        if remote is None:
            await self._ended.wait()  # a call without a microphone track: nothing will come
            return None
        while not self._ended.is_set():
            try:
                frame = await remote.recv()
            except MediaStreamError:
                return None
            if not isinstance(frame, AudioFrame):
                continue
            pcm16, rate = frame_to_pcm16(frame)
            if self._resampler is None or self._resampler.in_rate != rate:
                self._resampler = StreamResampler(rate, SESSION_RATE)
            out = self._resampler.process(pcm16)
            if out:
                return out
        return None
