"""Conversation items of one session: added by the client or by a turn, then transcribed.

:class:`Items` handles ``conversation.item.create``/``retrieve``/``truncate``/``delete``
(spec §2.2, §3.3), makes a committed turn's audio a user item (spec §5.2), asks for the
transcription of user audio and reports its outcome (spec §5.4). Responses and turn-taking also
wait on transcripts; the session passes them the outcome (:mod:`openrealtime.core.session`).
What it needs of the rest of the session (the config) it asks an :class:`ItemHost`.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from typing import Protocol

from openrealtime.audio.formats import decode_clip, encode_clip
from openrealtime.core import backend_events as be
from openrealtime.core.commands import Command, Transcribe
from openrealtime.core.conversation import Conversation, Entry
from openrealtime.core.ids import IdFactory
from openrealtime.protocol import client_events as ce
from openrealtime.protocol import server_events as se
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.items import (
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    OutputAudio,
    UserMessage,
    item_payload,
)
from openrealtime.protocol.session_config import RealtimeAudio, SessionConfig

Emit = Callable[..., None]


class ItemHost(Protocol):
    """What item handling asks of the rest of the session (:class:`RealtimeSession`)."""

    @property
    def config(self) -> SessionConfig:
        """The session's current configuration."""
        ...


class Items:
    """The conversation items of one session; the session calls the public methods.

    Args:
        host: the session's config.
        ids: the session's id factory.
        conversation: the session's conversation.
        emit: the session's event emitter; command: appends a command to its output.
    """

    def __init__(
        self,
        host: ItemHost,
        *,
        ids: IdFactory,
        conversation: Conversation,
        emit: Emit,
        command: Callable[[Command], None],
    ) -> None:
        self._host = host
        self.ids = ids
        self.conversation = conversation
        self._emit = emit
        self._command = command

    # ------------------------------------------------------------------ client events

    def create(self, event: ce.ConversationItemCreate) -> None:
        """``conversation.item.create``: check, store, add (and transcribe its audio)."""
        item = event.item
        audio: dict[int, bytearray] = {}
        needs_transcript = False
        if isinstance(item, UserMessage):
            content = []
            for index, part in enumerate(item.content):
                if isinstance(part, InputAudio) and part.audio is not None:
                    try:
                        data = base64.b64decode(part.audio, validate=True)
                    except (binascii.Error, ValueError):
                        raise ProtocolError(
                            "invalid_value",
                            "Invalid 'audio': expected base64-encoded audio.",
                            param=f"item.content[{index}].audio",
                        ) from None
                    # Stored as session audio, like appended audio (spec §3.1 input format).
                    fmt = self._host.config.audio.input.format.type
                    audio[index] = bytearray(decode_clip(data, fmt))
                    needs_transcript = part.transcript is None
                    part = part.model_copy(update={"audio": None})
                content.append(part)
            item = item.model_copy(update={"content": content})
        if isinstance(item, AssistantMessage):
            for index, apart in enumerate(item.content):
                if isinstance(apart, OutputAudio) and apart.audio is not None:
                    raise ProtocolError(
                        "invalid_value",
                        "Assistant messages cannot be created with audio content.",
                        param=f"item.content[{index}].audio",
                    )
        if isinstance(item, FunctionCallOutput) and not self._known_call(item.call_id):
            raise ProtocolError(
                "invalid_value",
                f"No tool call found for function call output with call_id '{item.call_id}'.",
                param="item.call_id",
            )
        if item.id is None:
            item = item.model_copy(update={"id": self.ids.new("item")})
        if isinstance(item, FunctionCall) and item.call_id is None:
            item = item.model_copy(update={"call_id": self.ids.new("call")})
        if item.status is None:
            item = item.model_copy(update={"status": "completed"})
        text = self.conversation.check_text(item)
        self.conversation.check_audio(sum(len(pcm) for pcm in audio.values()))
        entry = Entry(
            item=item, audio=audio, transcription_pending=needs_transcript, client_text_bytes=text
        )
        self._add(entry, event.previous_item_id)
        if needs_transcript and item.id is not None:
            self._transcribe(item.id, bytes(audio[min(audio)]))

    def _known_call(self, call_id: str) -> bool:
        return any(
            isinstance(e.item, FunctionCall) and e.item.call_id == call_id
            for e in self.conversation.entries()
        )

    def retrieve(self, event: ce.ConversationItemRetrieve) -> None:
        """``conversation.item.retrieve``: the item, its audio in the session's formats."""
        item = self.conversation.retrieve(event.item_id, self._wire_audio)
        self._emit(se.ConversationItemRetrieved, item=item)

    def _wire_audio(self, part_type: str, pcm: bytes) -> bytes:
        """Stored audio -> the session's format for its direction (``conversation.item.retrieve``).

        ``output_audio`` parts come back in ``audio.output.format``, others in
        ``audio.input.format`` (spec §3.1).
        """
        audio = self._host.config.audio
        if part_type == "output_audio" and isinstance(audio, RealtimeAudio):
            return encode_clip(pcm, audio.output.format.type)
        return encode_clip(pcm, audio.input.format.type)

    def truncate(self, event: ce.ConversationItemTruncate) -> None:
        """``conversation.item.truncate``: cut an assistant item's audio (spec §5.7)."""
        self.conversation.truncate(event.item_id, event.content_index, event.audio_end_ms)
        self._emit(
            se.ConversationItemTruncated,
            item_id=event.item_id,
            content_index=event.content_index,
            audio_end_ms=event.audio_end_ms,
        )

    def delete(self, event: ce.ConversationItemDelete) -> None:
        """``conversation.item.delete``."""
        self.conversation.delete(event.item_id)
        self._emit(se.ConversationItemDeleted, item_id=event.item_id)

    def _add(self, entry: Entry, previous_item_id: str | None) -> None:
        previous = self.conversation.insert(entry, previous_item_id)
        payload = item_payload(entry.item)
        self._emit(se.ConversationItemAdded, item=payload, previous_item_id=previous)
        self._emit(se.ConversationItemDone, item=payload, previous_item_id=previous)

    # ------------------------------------------------------------------ committed turns

    def commit_audio(self, item_id: str, pcm: bytes) -> None:
        """Turn audio into a user item: committed, item added/done, transcription started."""
        previous = self.conversation.last_id
        self._emit(se.InputAudioBufferCommitted, item_id=item_id, previous_item_id=previous)
        item = UserMessage(
            id=item_id,
            type="message",
            role="user",
            status="completed",
            content=[InputAudio(type="input_audio", transcript=None)],
        )
        entry = Entry(item=item, audio={0: bytearray(pcm)}, transcription_pending=True)
        self._add(entry, None)
        self._transcribe(item_id, pcm)

    # ------------------------------------------------------------------ transcription

    def _transcribe(self, item_id: str, pcm: bytes) -> None:
        self._command(self.transcription(item_id, pcm))

    def transcription(self, item_id: str, pcm: bytes) -> Transcribe:
        """The ``Transcribe`` command of ``pcm`` for ``item_id`` (the session's settings)."""
        tr = self._host.config.audio.input.transcription
        return Transcribe(
            item_id=item_id,
            content_index=0,
            pcm16=pcm,
            model=tr.model if tr else None,
            language=tr.language if tr else None,
            prompt=tr.prompt if tr else None,
        )

    def _transcription_enabled(self) -> bool:
        return self._host.config.audio.input.transcription is not None

    def on_transcription_delta(self, event: be.TranscriptionDelta) -> None:
        """A partial transcript: its delta event, if transcription is on."""
        if self._transcription_enabled() and event.item_id in self.conversation and event.text:
            self._emit(
                se.ConversationItemInputAudioTranscriptionDelta,
                item_id=event.item_id,
                content_index=0,
                delta=event.text,
            )

    def on_transcription_completed(self, event: be.TranscriptionCompleted) -> None:
        """The final transcript: stored on the item, its completed event if transcription is on."""
        entry = self.conversation.get(event.item_id)
        if entry is not None:
            entry.heard_text = event.transcript
            entry.heard_language = event.language
            entry.transcription_pending = False
            if self._transcription_enabled() and isinstance(entry.item, UserMessage):
                content = [
                    p.model_copy(update={"transcript": event.transcript})
                    if isinstance(p, InputAudio)
                    else p
                    for p in entry.item.content
                ]
                entry.item = entry.item.model_copy(update={"content": content})
                audio_tokens = math.ceil(event.audio_seconds * 10)
                text_tokens = len(event.transcript.split())
                self._emit(
                    se.ConversationItemInputAudioTranscriptionCompleted,
                    item_id=event.item_id,
                    content_index=0,
                    transcript=event.transcript,
                    usage={
                        "type": "tokens",
                        "input_tokens": audio_tokens,
                        "output_tokens": text_tokens,
                        "total_tokens": audio_tokens + text_tokens,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    },
                )

    def on_transcription_failed(self, event: be.TranscriptionFailed) -> None:
        """Transcription failed: the item waits no more; its failed event if transcription is on."""
        entry = self.conversation.get(event.item_id)
        if entry is not None:
            entry.transcription_pending = False
            if self._transcription_enabled():
                self._emit(
                    se.ConversationItemInputAudioTranscriptionFailed,
                    item_id=event.item_id,
                    content_index=0,
                    error={
                        "type": "transcription_error",
                        "code": event.code,
                        "message": event.message,
                    },
                )
