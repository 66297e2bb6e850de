"""The output audio buffer of a transport that plays audio itself (WebRTC; spec §1.3, §5.7).

Over WebRTC the assistant's audio is not sent as ``response.output_audio.delta`` events: the
transport plays it on the call's audio track, paced in real time, from a per-session buffer
whose play position it knows. This module is the session's side of that buffer, sans-I/O:

* audio goes out as :class:`~openrealtime.core.commands.PlayAudio` commands, and a finished
  response's end as :class:`~openrealtime.core.commands.EndPlayback`;
* the runtime reports :class:`~openrealtime.core.backend_events.PlaybackStarted` (first sample
  played: ``output_audio_buffer.started``) and
  :class:`~openrealtime.core.backend_events.PlaybackDrained` (everything played after the end
  marker: ``output_audio_buffer.stopped``);
* ``output_audio_buffer.clear`` and barge-in issue
  :class:`~openrealtime.core.commands.ClearPlayback`; the runtime answers with one
  :class:`~openrealtime.core.backend_events.PlaybackCleared` per response cut off, carrying the
  exact number of bytes played of each item. The session then emits
  ``output_audio_buffer.cleared`` and truncates each item where the user stopped hearing it
  (``conversation.item.truncated``), so the conversation holds only what was heard.

A response cut off while still generating is *muted*: its later audio is recorded on its item
but never played, and its items are truncated at the heard position once the response ends.

While the user may be interrupting (:mod:`openrealtime.core.turn_taking`), playback is *paused*
(:class:`~openrealtime.core.commands.PausePlayback`): nothing more is heard and nothing is lost;
a :class:`~openrealtime.core.commands.ResumePlayback` goes on from the same sample, a clear
cuts there (so the truncation reports where the pause began).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from openrealtime.core import backend_events as be
from openrealtime.core.commands import (
    ClearPlayback,
    Command,
    EndPlayback,
    PausePlayback,
    PlayAudio,
    ResumePlayback,
)
from openrealtime.core.conversation import Conversation
from openrealtime.core.input_buffer import BYTES_PER_MS
from openrealtime.protocol import server_events as se
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.items import AssistantMessage

Emit = Callable[..., None]


@dataclass
class _Playback:
    """What the session knows of one response's audio on the transport's buffer."""

    response_id: str
    started: bool = False
    """``output_audio_buffer.started`` was emitted."""
    ended: bool = False
    """The response is over; ``EndPlayback`` was sent if it had audio to play."""
    muted: bool = False
    """Cut off by a clear: later audio is not played."""
    sent: dict[str, int] = field(default_factory=dict)
    """Bytes of each item's audio sent for playing."""
    truncate_at: dict[str, int] = field(default_factory=dict)
    """Items to truncate (bytes heard) once the response is over."""


class OutputAudioBuffer:
    """The session's bookkeeping of the transport's output audio buffer (WebRTC only).

    Created by :class:`~openrealtime.core.session.RealtimeSession` when the transport plays the
    audio itself; the session calls :meth:`play`, :meth:`response_over`, :meth:`clear` and the
    ``on_*`` methods, and this object emits the ``output_audio_buffer.*`` and
    ``conversation.item.truncated`` events and the playback commands.

    Args:
        conversation: the session's conversation (items are truncated in it).
        emit: the session's event emitter (``emit(EventClass, **fields)``).
        command: appends a command to the session's output.
    """

    def __init__(
        self, conversation: Conversation, emit: Emit, command: Callable[[Command], None]
    ) -> None:
        self._conversation = conversation
        self._emit = emit
        self._command = command
        self._responses: dict[str, _Playback] = {}
        """Responses with audio sent for playing and not yet drained, cleared or forgotten."""
        self.paused = False
        """A ``PausePlayback`` was issued and neither resumed nor cleared since."""

    @property
    def playing(self) -> bool:
        """Whether audio sent for playing may still be unplayed (a clear would cut it off)."""
        return any(not p.muted for p in self._responses.values())

    def play(self, response_id: str, item_id: str, pcm16: bytes) -> None:
        """Assistant audio of an item: queue it for playing (or drop it if the response is muted).

        Call for every audio chunk a response produces, in order (spec §1.3: audio goes over
        RTP, not as ``response.output_audio.delta``).
        """
        playback = self._responses.get(response_id)
        if playback is None:
            playback = self._responses[response_id] = _Playback(response_id)
        if playback.muted:
            # Generated after the cut: never heard. The item keeps what was sent before it.
            playback.truncate_at.setdefault(item_id, playback.sent.get(item_id, 0))
            return
        playback.sent[item_id] = playback.sent.get(item_id, 0) + len(pcm16)
        self._command(PlayAudio(response_id, item_id, pcm16))

    def response_over(self, response_id: str) -> None:
        """The response sent ``response.done``: mark the end of its audio, or apply its cuts."""
        playback = self._responses.get(response_id)
        if playback is None or playback.ended:
            return
        playback.ended = True
        if playback.muted:
            self._apply_truncations(playback)
            del self._responses[response_id]
        else:
            self._command(EndPlayback(response_id))

    def clear(self) -> bool:
        """Cut off every unplayed sample (``output_audio_buffer.clear`` or barge-in, spec §5.7).

        A clear also ends a pause (the runtime's buffer plays again, with nothing in it).

        Returns:
            Whether anything could still be playing or was paused (a ``ClearPlayback`` was
            issued).
        """
        if not self.playing and not self.paused:
            return False
        for playback in self._responses.values():
            playback.muted = True
        self.paused = False
        self._command(ClearPlayback())
        return True

    def pause(self) -> None:
        """Hold every unplayed sample where it is (the user may be interrupting).

        Call when speech starts over audio that is playing; end with :meth:`resume` (a false
        interruption) or :meth:`clear` (a real one).
        """
        if not self.paused:
            self.paused = True
            self._command(PausePlayback())

    def resume(self) -> None:
        """Play on from where :meth:`pause` held the audio (nothing happens if not paused)."""
        if self.paused:
            self.paused = False
            self._command(ResumePlayback())

    def on_started(self, event: be.PlaybackStarted) -> None:
        """The response's first sample played: ``output_audio_buffer.started``."""
        playback = self._responses.get(event.response_id)
        if playback is None or playback.started or playback.muted:
            return  # a late report for audio already cut off or forgotten
        playback.started = True
        self._emit(se.OutputAudioBufferStarted, response_id=event.response_id)

    def on_drained(self, event: be.PlaybackDrained) -> None:
        """The response's audio fully played: ``output_audio_buffer.stopped``."""
        # Also after a clear that found nothing left of it: it had fully played by then.
        playback = self._responses.pop(event.response_id, None)
        if playback is None:
            return
        if not playback.started:  # the start report is still on its way: keep the pair
            self._emit(se.OutputAudioBufferStarted, response_id=event.response_id)
        self._emit(se.OutputAudioBufferStopped, response_id=event.response_id)

    def on_cleared(self, event: be.PlaybackCleared) -> None:
        """A response's audio was cut off: ``output_audio_buffer.cleared`` and truncation."""
        playback = self._responses.get(event.response_id)
        if playback is None:
            return
        if event.started and not playback.started:
            self._emit(se.OutputAudioBufferStarted, response_id=event.response_id)
            playback.started = True
        if playback.started:
            self._emit(se.OutputAudioBufferCleared, response_id=event.response_id)
        for item_id, played in event.played:
            playback.truncate_at[item_id] = played
        if playback.ended:
            self._apply_truncations(playback)
            del self._responses[event.response_id]

    def _apply_truncations(self, playback: _Playback) -> None:
        for item_id, played in playback.truncate_at.items():
            self._truncate(item_id, played)
        playback.truncate_at.clear()

    def _truncate(self, item_id: str, played_bytes: int) -> None:
        """Cut an item at the heard position (``conversation.item.truncated``, spec §5.7)."""
        entry = self._conversation.get(item_id)
        if entry is None or not isinstance(entry.item, AssistantMessage):
            return  # out-of-band response or deleted item: nothing kept to cut
        audio_end_ms = played_bytes // BYTES_PER_MS
        try:
            self._conversation.truncate(item_id, 0, audio_end_ms)
        except ProtocolError:
            return  # not an audio message (any more): nothing to cut
        self._emit(
            se.ConversationItemTruncated,
            item_id=item_id,
            content_index=0,
            audio_end_ms=audio_end_ms,
        )
