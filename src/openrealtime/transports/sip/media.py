"""The audio of a SIP call: G.711 over RTP, with aiortp (pinned) for the RTP itself.

aiortp keeps the RTP session (sequence numbers, timestamps, SSRC, RTCP reports, a reordering
jitter buffer, RFC 4733 ``telephone-event`` digits); this module decides what goes in and out:

- **in**: the caller's PCMU/PCMA, put in order by :class:`InOrder` (no wait unless a packet
  is missing), decoded by :class:`G711` (``audio/g711.py``, the one G.711 of the project),
  resampled 8 → 24 kHz (``audio/thirdband.py``: 2 ms, no block), is the session's input
  (``MediaPort``); every digit pressed is handed to ``on_digit``;
- **out**: every 20 ms, on an absolute clock, one frame is read from the call's output buffer
  (``runtime.playback.PlaybackBuffer``, which knows what has been played, design.md decision
  5), resampled 24 → 8 kHz, encoded and sent. Silence is sent while nothing plays: a trunk
  that hears nothing may hang up, and the receiver's clock keeps running;
- **who may send**: only the address the SDP named (its IP; the port is learnt from the first
  packet, as symmetric RTP behind a NAT needs). Packets from anywhere else are dropped: aiortp
  alone would follow any new source, letting a stranger take over the call's audio.

This module is a shell (house rule 3): it converts and paces audio, it decides nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortp import RTPSession
from aiortp.codecs.base import Codec
from aiortp.jitterbuffer import JitterFrame
from aiortp.packet import RtpPacket

from openrealtime.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from openrealtime.audio.pcm import SESSION_RATE
from openrealtime.audio.thirdband import ThirdbandDownsampler, ThirdbandUpsampler
from openrealtime.runtime.playback import PlaybackBuffer

__all__ = ["FRAME_MS", "G711", "PAYLOAD_TYPES", "RATE", "SipMedia"]

_log = logging.getLogger(__name__)

RATE = 8000
"""G.711's sample rate."""
FRAME_MS = 20
"""Packetization (``a=ptime:20``)."""
PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA"}
"""The static payload types answered, in the order of the offer."""

_FRAME_SAMPLES = RATE * FRAME_MS // 1000
_FRAME_BYTES = _FRAME_SAMPLES * 2
_READ_BYTES = SESSION_RATE * FRAME_MS // 1000 * 2
_MAX_LAG_S = 0.2
"""The most the sender catches up on at once when the loop fell behind: past it, the clock
moves on (those frames are sent late rather than in one burst, and none is dropped); a
restart instead sent one frame per wake-up and collapsed to a tenth of real time under
overload (``bench/sip.py``)."""
_INPUT_QUEUE = 250
"""Input chunks (20 ms each) kept for a session that lags: 5 s, then the oldest go."""


class G711(Codec):
    """PCMU or PCMA for aiortp, on the project's own G.711 tables."""

    def __init__(self, payload_type: int) -> None:
        if payload_type not in PAYLOAD_TYPES:
            raise ValueError(f"not a G.711 payload type: {payload_type}")
        self._mu = payload_type == 0

    @property
    def name(self) -> str:
        """``PCMU`` or ``PCMA``."""
        return "PCMU" if self._mu else "PCMA"

    @property
    def sample_rate(self) -> int:
        """8000."""
        return RATE

    @property
    def samples_per_frame(self) -> int:
        """160 (20 ms)."""
        return _FRAME_SAMPLES

    def encode(self, pcm: bytes) -> bytes:
        """PCM16 → G.711."""
        return ulaw_encode(pcm) if self._mu else alaw_encode(pcm)

    def decode(self, payload: bytes) -> bytes:
        """G.711 → PCM16."""
        return ulaw_decode(payload) if self._mu else alaw_decode(payload)


class InOrder:
    """The receive buffer of a call's audio, in place of aiortp's ``JitterBuffer``.

    Each packet is a frame, released in sequence order as soon as it is next.
    aiortp's buffer completes a frame only when a packet with the next timestamp arrives (it
    assembles video frames too), so every audio frame waited one packet (20 ms) even with no
    prefetch. Here, at a gap, at most ``reorder`` later packets wait for the missing one; one
    more and it counts as lost (the frame after it says how many, for concealment). A jump of
    ``capacity`` packets or more restarts the buffer, as does one of 100 or more back.
    Telephone-event and comfort-noise packets mark their sequence number as taken.

    Implements what aiortp's session calls: ``add``, ``mark_non_media``, ``reset``,
    ``capacity``; frames beyond the first that one packet releases wait in :attr:`extra`.
    """

    _MAX_MISORDER = 100

    def __init__(self, capacity: int = 16, reorder: int = 1) -> None:
        self.capacity = capacity
        self.reorder = reorder
        self._next: int | None = None
        self._held: dict[int, RtpPacket | None] = {}
        self.extra: list[JitterFrame] = []

    def reset(self) -> None:
        """Forget everything (a new SSRC)."""
        self._next = None
        self._held.clear()

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Take an audio packet; the first frame it releases (``False``: no picture loss)."""
        return False, self._take(packet.sequence_number, packet)

    def mark_non_media(self, sequence_number: int) -> JitterFrame | None:
        """A sequence number used by a telephone-event or comfort-noise packet."""
        return self._take(sequence_number, None)

    def _take(self, seq: int, packet: RtpPacket | None) -> JitterFrame | None:
        if self._next is None:
            self._next = seq
        ahead = (seq - self._next) & 0xFFFF
        behind = (self._next - seq) & 0xFFFF
        if behind and behind < ahead:  # late, or already released
            if behind < self._MAX_MISORDER:
                return None
            self.reset()
            self._next = seq
        elif ahead >= self.capacity:
            self.reset()
            self._next = seq
        if seq in self._held:
            return None  # a duplicate
        self._held[seq] = packet
        frames: list[JitterFrame] = []
        lost = 0
        while self._held:
            if self._next in self._held:
                got = self._held.pop(self._next)
                if got is not None:
                    frames.append(JitterFrame(got.payload, got.timestamp, lost))
                    lost = 0
            elif len(self._held) > self.reorder:
                lost += 1  # give up on the missing packet
            else:
                break
            self._next = (self._next + 1) & 0xFFFF
        if not frames:
            return None
        self.extra.extend(frames[1:])
        return frames[0]


class _GuardedRtp(RTPSession):
    """aiortp's session, taking packets from one source only and never raising out of them."""

    expected_host: str = ""
    latched: tuple[str, int] | None = None
    foreign = 0
    """Packets dropped for their source."""
    broken = 0
    """Packets whose handling failed (a short ``telephone-event``, say)."""

    def _handle_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._from_caller(addr):
            return
        try:
            super()._handle_rtp(data, addr)
            buffer = self._jitter_buffer
            if isinstance(buffer, InOrder):
                while buffer.extra:  # frames a late packet released behind the first
                    self._deliver_audio_frame(buffer.extra.pop(0))
        except Exception:  # aiortp's DTMF parser raises on short payloads
            self.broken += 1

    def _handle_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.expected_host:
            self.foreign += 1
            return
        try:
            super()._handle_rtcp(data, addr)
        except Exception:
            self.broken += 1

    def _from_caller(self, addr: tuple[str, int]) -> bool:
        if self.latched is None and addr[0] == self.expected_host:
            self.latched = addr
            self._remote_addr = addr  # symmetric RTP: answer where the caller sends from
        if addr != self.latched:
            self.foreign += 1
            return False
        return True


class SipMedia:
    """The audio side of a SIP call, as the session driver sees it (``MediaPort``).

    Create with :meth:`open`; :meth:`end` stops both directions and closes the sockets.

    Args:
        rtp: the bound RTP session.
        on_digit: called with each DTMF digit the caller pressed.
    """

    kind = "sip"

    def __init__(self, rtp: _GuardedRtp, on_digit: Callable[[str], None]) -> None:
        self._rtp = rtp
        self._playback = PlaybackBuffer()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._upsampler = ThirdbandUpsampler()  # 2 ms each way; soxr's stream held ~60 ms
        self._downsampler = ThirdbandDownsampler()
        self._out = bytearray()
        self._ended = False
        self._on_digit = on_digit
        rtp.on_audio = self._on_audio
        rtp.on_dtmf = lambda digit, _duration: self._digit(digit)
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self.sent_frames = 0
        self.local: tuple[str, int] = ("", 0)
        """Our RTP address (the SDP answer's)."""

    @classmethod
    async def open(
        cls,
        *,
        local: tuple[str, int],
        remote: tuple[str, int],
        payload_type: int,
        dtmf_payload_type: int,
        on_digit: Callable[[str], None],
    ) -> SipMedia:
        """Bind the RTP (and RTCP, port + 1) sockets and start sending.

        Args:
            local: our address and (even) RTP port.
            remote: the caller's RTP address from its SDP.
            payload_type: 0 (PCMU) or 8 (PCMA).
            dtmf_payload_type: the ``telephone-event`` payload type of the answer.
            on_digit: told of each digit.
        """
        rtp = await _GuardedRtp.create(
            local_addr=local,
            remote_addr=remote,
            payload_type=payload_type,
            codec=G711(payload_type),
            dtmf_payload_type=dtmf_payload_type,
            cname="openrealtime",
        )
        assert isinstance(rtp, _GuardedRtp)
        rtp._jitter_buffer = InOrder()  # type: ignore[assignment]  # see InOrder
        rtp.expected_host = remote[0]
        media = cls(rtp, on_digit)
        media.local = local
        return media

    @property
    def playback(self) -> PlaybackBuffer:
        """The call's output audio buffer."""
        return self._playback

    @property
    def stats(self) -> dict[str, object]:
        """The RTP counters (aiortp's), with the packets dropped here."""
        stats = dict(self._rtp.stats)
        stats["foreign_packets"] = self._rtp.foreign
        stats["broken_packets"] = self._rtp.broken
        stats["sent_frames"] = self.sent_frames
        return stats

    def update_remote(self, remote: tuple[str, int]) -> None:
        """A re-INVITE moved the caller's media: take packets from there from now on."""
        self._rtp.expected_host = remote[0]
        self._rtp.latched = None
        self._rtp._remote_addr = remote

    async def end(self) -> None:
        """Stop both directions and close the sockets."""
        if self._ended:
            return
        self._ended = True
        self._queue.put_nowait(None)
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        await self._rtp.close()

    async def receive_audio(self) -> bytes | None:
        """The caller's next audio as session audio (PCM16 mono 24 kHz); ``None`` at the end."""
        return await self._queue.get()

    def _on_audio(self, pcm16: bytes, _timestamp: int) -> None:
        if self._ended:
            return
        out = self._upsampler.process(pcm16)
        if not out:
            return
        if self._queue.qsize() >= _INPUT_QUEUE:
            self._queue.get_nowait()  # a session this far behind loses the oldest audio
        self._queue.put_nowait(out)

    def _digit(self, digit: str) -> None:
        if not self._ended:
            self._on_digit(digit)

    async def _send_loop(self) -> None:
        """One frame every 20 ms on an absolute clock (silence when nothing plays)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        frames = 0
        while True:
            wait = start + frames * FRAME_MS / 1000 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -_MAX_LAG_S:  # an overloaded loop: catch up on at most 200 ms at once
                start -= wait + _MAX_LAG_S
            frames += 1
            self._out += self._downsampler.process(self._playback.read(_READ_BYTES))
            if len(self._out) >= _FRAME_BYTES:
                frame = bytes(self._out[:_FRAME_BYTES])
                del self._out[:_FRAME_BYTES]
            else:  # the resampler's first few milliseconds
                frame = bytes(_FRAME_BYTES)
            self._rtp.send_audio_pcm_auto(frame)
            self.sent_frames += 1
