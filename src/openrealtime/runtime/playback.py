"""The per-call output audio buffer: assistant audio waiting to be played (design.md decision 5).

The driver queues each response's audio here (``PlayAudio`` commands); the transport's audio
track reads it back in real time, one frame every 20 ms, and sends it (WebRTC: Opus on the
call's track). Because every byte leaves through :meth:`PlaybackBuffer.read`, the buffer knows
exactly how much of each item has been played, which is what makes server-side truncation exact
(spec §5.7). What happens is reported to the session as backend events:

* ``PlaybackStarted`` when a response's first byte is read;
* ``PlaybackDrained`` when its end marker (``EndPlayback``) is reached;
* ``PlaybackCleared`` (returned by :meth:`PlaybackBuffer.clear`) with the bytes played of every
  item that was cut off.

While the user may be interrupting, the session pauses the buffer (``PausePlayback``): reads
return silence and consume nothing, so the play positions stay exact, until ``ResumePlayback``
or a clear.

No asyncio here: the reader and the driver run on the same event loop, and reports go through
the ``notify`` callback the driver installs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from openrealtime.core import backend_events as be

Notify = Callable[[be.BackendEvent], None]


@dataclass
class _Chunk:
    response_id: str
    item_id: str
    pcm16: bytes
    offset: int = 0


@dataclass(frozen=True)
class _End:
    response_id: str


@dataclass
class _Response:
    started: bool = False
    played: dict[str, int] = field(default_factory=dict)
    """Bytes read so far, per item."""
    queued: dict[str, int] = field(default_factory=dict)
    """Bytes still waiting, per item."""


class PlaybackBuffer:
    """FIFO of assistant audio (PCM16 mono 24 kHz) with a known play position per item.

    Args:
        notify: receives ``PlaybackStarted``/``PlaybackDrained`` as they happen (the driver
            sets it to feed its session; may be set after construction).
    """

    def __init__(self, notify: Notify | None = None) -> None:
        self.notify = notify
        self.on_played: Callable[[bytes], None] | None = None
        """Receives every frame that carried assistant audio, as it is read for sending (the
        far end of the session's echo canceller)."""
        self._queue: deque[_Chunk | _End] = deque()
        self._responses: dict[str, _Response] = {}
        self._queued_bytes = 0
        self._paused = False

    @property
    def queued_bytes(self) -> int:
        """Audio bytes waiting to be read."""
        return self._queued_bytes

    @property
    def idle(self) -> bool:
        """Whether nothing is queued (the track sends silence)."""
        return not self._queue

    @property
    def paused(self) -> bool:
        """Whether reads are held (``PausePlayback`` and no resume or clear since)."""
        return self._paused

    def pause(self) -> None:
        """Hold everything queued where it is (run ``PausePlayback``); reads give silence."""
        self._paused = True

    def resume(self) -> None:
        """Play on from where :meth:`pause` held it (run ``ResumePlayback``)."""
        self._paused = False

    def play(self, response_id: str, item_id: str, pcm16: bytes) -> None:
        """Queue audio of ``item_id`` (run ``PlayAudio``)."""
        if not pcm16:
            return
        state = self._responses.setdefault(response_id, _Response())
        state.queued[item_id] = state.queued.get(item_id, 0) + len(pcm16)
        state.played.setdefault(item_id, 0)
        self._queue.append(_Chunk(response_id, item_id, pcm16))
        self._queued_bytes += len(pcm16)

    def end(self, response_id: str) -> None:
        """Mark the end of a response's audio (run ``EndPlayback``); reported when reached."""
        if response_id not in self._responses:
            return  # nothing of it was queued (or it was cleared): nothing to report
        self._queue.append(_End(response_id))

    def clear(self) -> list[be.PlaybackCleared]:
        """Drop everything unplayed (run ``ClearPlayback``); say what each response had played.

        A clear also ends a pause.

        Returns:
            One report per response with audio queued or playing and not yet drained; each
            lists the items that still had unplayed audio, with the bytes played of each.
        """
        reports = [
            be.PlaybackCleared(
                response_id,
                state.started,
                tuple(
                    (item_id, state.played.get(item_id, 0))
                    for item_id, left in state.queued.items()
                    if left > 0
                ),
            )
            for response_id, state in self._responses.items()
        ]
        self._queue.clear()
        self._responses.clear()
        self._queued_bytes = 0
        self._paused = False
        return reports

    def read(self, nbytes: int) -> bytes:
        """The next ``nbytes`` to play, padded with silence; call once per frame, in real time.

        Args:
            nbytes: the frame's size in bytes (even).

        Returns:
            Exactly ``nbytes`` bytes of PCM16: silence while paused (nothing is consumed, and
            ``on_played`` is not called).
        """
        if self._paused:
            return bytes(nbytes)
        out = bytearray()
        while self._queue and (len(out) < nbytes or isinstance(self._queue[0], _End)):
            head = self._queue[0]
            if isinstance(head, _End):
                self._queue.popleft()
                self._responses.pop(head.response_id, None)
                self._report(be.PlaybackDrained(head.response_id))
                continue
            state = self._responses[head.response_id]
            if not state.started:
                state.started = True
                self._report(be.PlaybackStarted(head.response_id))
            take = min(nbytes - len(out), len(head.pcm16) - head.offset)
            out += head.pcm16[head.offset : head.offset + take]
            head.offset += take
            state.played[head.item_id] += take
            state.queued[head.item_id] -= take
            self._queued_bytes -= take
            if head.offset >= len(head.pcm16):
                self._queue.popleft()
        played = len(out)
        if len(out) < nbytes:
            out += bytes(nbytes - len(out))
        frame = bytes(out)
        if played and self.on_played is not None:
            self.on_played(frame)
        return frame

    def _report(self, event: be.BackendEvent) -> None:
        if self.notify is not None:
            self.notify(event)


class MediaPort(Protocol):
    """Audio that travels outside events (WebRTC, SIP): what the driver needs of it."""

    kind: str
    """The transport, for metrics: ``webrtc`` or ``sip``."""

    @property
    def playback(self) -> PlaybackBuffer:
        """The call's output audio buffer, read by its audio track in real time."""
        ...

    async def receive_audio(self) -> bytes | None:
        """The next chunk of input audio (PCM16 mono 24 kHz); ``None`` once the track ended."""
        ...
