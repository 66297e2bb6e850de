"""The audio of a WebRTC call (spec §1.3): the remote track in, a paced track out.

aiortc decodes the caller's Opus into frames (48 kHz stereo); :class:`CallMedia` turns them into
session audio (PCM16 mono 24 kHz) for the driver. Output audio is the call's
:class:`~openrealtime.runtime.playback.PlaybackBuffer`, read by :class:`PlaybackTrack` one 20 ms
frame at a time in real time (paced by the frames' pts like aiortc's ``AudioStreamTrack``) and
encoded to Opus by aiortc; the buffer knows exactly what has been played (design.md decision 5).

Latency (docs/benchmarks.md, "WebRTC calls"): both directions convert 24 <-> 48 kHz with the
halfband filters of :mod:`openrealtime.audio.halfband` (0.65 ms of delay, no frame held back),
so aiortc's encoder gets 48 kHz frames and does not resample; and the caller's audio goes
through :class:`AudioJitterBuffer` instead of aiortc's (which holds every packet for 80 ms).

This module is a shell (house rule 3): it converts and paces audio, it decides nothing.
"""

from __future__ import annotations

import asyncio
import fractions
import logging

import aiortc
import numpy as np
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtpPacket
from av import AudioFrame

from openrealtime.audio.halfband import HalfbandDownsampler, HalfbandUpsampler
from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.resample import StreamResampler
from openrealtime.runtime.playback import PlaybackBuffer

__all__ = [
    "FRAME_MS",
    "TRACK_RATE",
    "AudioJitterBuffer",
    "CallMedia",
    "PlaybackTrack",
    "frame_to_pcm16",
    "use_audio_jitter_buffer",
]

_log = logging.getLogger(__name__)

FRAME_MS = 20
"""Output frame duration: WebRTC's usual Opus packetization (``a=ptime:20``)."""

TRACK_RATE = 48000
"""Sample rate of the frames :class:`PlaybackTrack` hands to aiortc: Opus's own rate, so that
aiortc's encoder does not resample them (its resampler would hold back one frame)."""

_READ_BYTES = SESSION_RATE * FRAME_MS // 1000 * 2
"""One frame of the (24 kHz) output buffer."""
_FRAME_SAMPLES = TRACK_RATE * FRAME_MS // 1000
_TIME_BASE = fractions.Fraction(1, TRACK_RATE)
_MAX_LAG_S = 0.2
"""If the event loop falls this far behind, restart the clock instead of sending a burst."""


class PlaybackTrack(MediaStreamTrack):
    """The call's outgoing audio track: the output buffer, one 20 ms frame per 20 ms.

    Silence is sent while the buffer is empty, so the receiver's clock keeps running and a new
    response starts playing within one frame. Frames are 48 kHz mono (:data:`TRACK_RATE`),
    upsampled from the buffer's 24 kHz as they are read: audio read for frame ``k`` is sent in
    frame ``k``, 0.65 ms later within it.

    Args:
        buffer: the call's output audio buffer (PCM16 mono 24 kHz).
    """

    kind = "audio"

    def __init__(self, buffer: PlaybackBuffer) -> None:
        super().__init__()
        self._buffer = buffer
        self._upsampler = HalfbandUpsampler()
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
            wait = self._start + self._pts / TRACK_RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing, not synchronization (design.md decision 5)
            elif wait < -_MAX_LAG_S:
                self._start = loop.time() - self._pts / TRACK_RATE
        pcm16 = self._upsampler.process(self._buffer.read(_READ_BYTES))
        frame = AudioFrame(format="s16", layout="mono", samples=_FRAME_SAMPLES)
        frame.planes[0].update(pcm16)
        frame.sample_rate = TRACK_RATE
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

    kind = "webrtc"

    def __init__(self) -> None:
        self._playback = PlaybackBuffer()
        self.track = PlaybackTrack(self._playback)
        """The track added to the peer connection (its answer carries ``a=msid``)."""
        self.remote: MediaStreamTrack | None = None
        self._resampler: HalfbandDownsampler | StreamResampler | None = None
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
                self._resampler = _input_resampler(rate)
            out = self._resampler.process(pcm16)
            if out:
                return out
        return None


def _input_resampler(rate: int) -> HalfbandDownsampler | StreamResampler:
    """48 kHz (Opus, always): the halfband filter (0.65 ms); another rate (G.711's 8 kHz): soxr."""
    if rate == 2 * SESSION_RATE:
        return HalfbandDownsampler()
    return StreamResampler(rate, SESSION_RATE)


class AudioJitterBuffer(JitterBuffer):
    """The receive buffer for the caller's audio: packets in sequence order, held only at a gap.

    aiortc's audio receiver uses ``JitterBuffer(capacity=16, prefetch=4)``: it releases a packet
    only once the 4th packet after it has arrived (80 ms on every packet), and at a lost packet
    it stalls for 14 packets, drops the 4 it held, and then keeps 14 packets (280 ms) held for
    the rest of the call, because the receiver takes at most one packet out per packet in.
    The server does not play this audio out (VAD and STT take it in bursts as well as paced),
    and aiortc sends no NACKs for audio, so a missing packet is either reordered (it comes
    within a packet or two) or gone.

    This buffer releases the next packet in sequence as soon as it is there. At a gap it waits
    for at most ``reorder`` later packets; when one more arrives the missing packet counts as
    lost (a 20 ms gap in the input audio) and arrives too late if it comes at all. So at most
    ``reorder`` packets are ever held: none on a clean network, ``reorder`` after the first
    reordered or lost packet (one in, one out from then on). A jump of ``capacity`` or more
    packets forward, or of 100 or more back, restarts the buffer at the new packet.

    Audio packets are whole frames (one Opus, G.711 or G.722 frame each), so every packet is
    released as a frame of its own; aiortc's ``JitterBuffer`` is the base class only so that
    the receiver's attribute keeps its type.

    Args:
        capacity: the largest forward jump that is still taken as loss (16 packets: 320 ms).
        reorder: how many later packets may overtake a packet that is still used (>= 1).
    """

    _MAX_MISORDER = 100  # as aiortc's JitterBuffer

    def __init__(self, capacity: int = 16, reorder: int = 1) -> None:
        super().__init__(capacity=capacity)
        if reorder < 1:
            raise ValueError(f"reorder must be at least 1, got {reorder}")
        self.reorder = reorder
        self._next: int | None = None
        self._pending: dict[int, RtpPacket] = {}

    @property
    def held(self) -> int:
        """How many packets are waiting (at most ``reorder``)."""
        return len(self._pending)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Take one received packet; give back the next one in sequence if it may go now.

        Returns:
            ``(False, frame or None)``, as aiortc's receiver expects (the flag asks for a
            picture loss indication: video only).
        """
        seq = packet.sequence_number
        if self._next is None:
            self._next = seq
        ahead = (seq - self._next) & 0xFFFF
        behind = (self._next - seq) & 0xFFFF
        if behind and behind < ahead:  # before the next one: late, or already released
            if behind < self._MAX_MISORDER:
                return False, None
            self._restart(seq)
        elif ahead >= self.capacity:
            self._restart(seq)
        if seq in self._pending:
            return False, None  # a duplicate
        self._pending[seq] = packet
        if self._next not in self._pending:
            if len(self._pending) <= self.reorder:
                return False, None  # wait: the missing packet may still come
            nxt = self._next  # give it up: go on from the oldest packet that came
            self._next = min(self._pending, key=lambda s: (s - nxt) & 0xFFFF)
        out = self._pending.pop(self._next)
        self._next = (self._next + 1) & 0xFFFF
        return False, JitterFrame(data=out._data, timestamp=out.timestamp)  # type: ignore[attr-defined]

    def _restart(self, seq: int) -> None:
        self._pending.clear()
        self._next = seq


_RECEIVER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
"""aiortc's private attribute for the receiver's jitter buffer (aiortc 1.x, checked on 1.16)."""


def use_audio_jitter_buffer(transceiver: RTCRtpTransceiver) -> bool:
    """Give an audio transceiver's receiver an :class:`AudioJitterBuffer`, before any packet.

    aiortc has no public way to configure the receiver's jitter buffer: it is created in
    ``RTCRtpReceiver.__init__`` (``JitterBuffer(capacity=16, prefetch=4)`` for audio) and kept in
    a private attribute. This replaces that attribute, which is the one private thing this
    module touches. If the aiortc version is not 1.x or the attribute is not an aiortc
    ``JitterBuffer`` any more, it changes nothing and logs a warning: the call then works with
    aiortc's own buffer (80 ms more latency on the caller's audio).

    Args:
        transceiver: a transceiver of the call, after ``setRemoteDescription`` and before the
            connection starts (``setLocalDescription``); a video one is left alone.

    Returns:
        Whether the buffer was replaced.
    """
    if transceiver.kind != "audio":
        return False
    receiver = transceiver.receiver
    current = getattr(receiver, _RECEIVER_BUFFER_ATTR, None)
    if not aiortc.__version__.startswith("1.") or type(current) is not JitterBuffer:
        _log.warning(
            "aiortc %s: not replacing the audio receiver's jitter buffer (%s); "
            "the caller's audio keeps aiortc's default 80 ms buffer",
            aiortc.__version__,
            type(current).__name__,
        )
        return False
    setattr(receiver, _RECEIVER_BUFFER_ATTR, AudioJitterBuffer(capacity=current.capacity))
    return True
