"""The default conversation: an ordered item store (spec §2.2 item events, §5.11).

Audio is kept as PCM16 at 24 kHz beside each item, never as base64 on the item itself. For
assistant audio the store also records which transcript text describes which span of audio, so
that truncation keeps exactly the words the user heard (spec §5.6).

The store is bounded (issue 8, defect 6): the text clients put in is counted against
``max_text_bytes`` (an item create past it is refused), and all the audio it keeps against
``max_audio_bytes`` (past it, the oldest items lose their audio; their transcripts stay, so the
model's context is unchanged).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openrealtime.chat import ChatMessage, ChatToolCall
from openrealtime.core.input_buffer import BYTES_PER_MS
from openrealtime.protocol.errors import ProtocolError
from openrealtime.protocol.items import (
    AnyItem,
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputImage,
    InputText,
    OutputAudio,
    OutputText,
    SystemMessage,
    UserMessage,
    item_payload,
)


@dataclass
class SpokenSegment:
    """A piece of transcript and the audio samples that speak it."""

    text: str
    start_byte: int
    end_byte: int


@dataclass(eq=False)  # identity: list.index must not deep-compare every earlier item
class Entry:
    """An item plus what the wire does not carry: its audio and (hidden) heard text."""

    item: AnyItem
    audio: dict[int, bytearray] = field(default_factory=dict)
    segments: list[SpokenSegment] = field(default_factory=list)
    heard_text: str | None = None
    """Transcript of user audio used for the model's context, even when not sent to clients."""
    heard_language: str | None = None
    """The language the STT engine heard in this item's audio (ISO 639-1), if it said."""
    transcription_pending: bool = False
    client_text_bytes: int = 0
    """UTF-8 bytes of text the client put in this item (counted against the text budget)."""

    @property
    def audio_bytes(self) -> int:
        """PCM bytes of audio kept for this item."""
        return sum(len(pcm) for pcm in self.audio.values())


def _ms(nbytes: int) -> int:
    return nbytes // BYTES_PER_MS


def text_bytes(item: AnyItem) -> int:
    """UTF-8 bytes of the text an item carries (content text, transcripts, arguments, output)."""
    texts: list[str] = []
    if isinstance(item, SystemMessage | UserMessage | AssistantMessage):
        for part in item.content:
            for value in (getattr(part, "text", None), getattr(part, "transcript", None)):
                if isinstance(value, str):
                    texts.append(value)
            if isinstance(part, InputImage):
                texts.append(part.image_url)
    elif isinstance(item, FunctionCall):
        texts += [item.name, item.arguments]
    elif isinstance(item, FunctionCallOutput):
        texts.append(item.output)
    return sum(len(t) if t.isascii() else len(t.encode("utf-8", "surrogatepass")) for t in texts)


class Conversation:
    """Items in order; ids unique; insert after ``previous_item_id`` or at ``"root"``.

    Args:
        max_text_bytes: most client text kept (``None``: unbounded); see :meth:`check_text`.
        max_audio_bytes: most audio PCM kept (``None``: unbounded); see :meth:`add_audio`.
    """

    def __init__(
        self, *, max_text_bytes: int | None = None, max_audio_bytes: int | None = None
    ) -> None:
        self._entries: list[Entry] = []
        self._by_id: dict[str, Entry] = {}
        self.max_text_bytes = max_text_bytes
        self.max_audio_bytes = max_audio_bytes
        self.client_text_bytes = 0
        """Client text held, in UTF-8 bytes."""
        self.audio_bytes = 0
        """Audio held, in PCM bytes."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    @property
    def last_id(self) -> str | None:
        """The id of the last item, the ``previous_item_id`` of an append."""
        return self._entries[-1].item.id if self._entries else None

    def get(self, item_id: str) -> Entry | None:
        """Return the entry with this id, if any."""
        return self._by_id.get(item_id)

    def entries(self) -> list[Entry]:
        """All entries in conversation order."""
        return list(self._entries)

    def insert(self, entry: Entry, previous_item_id: str | None) -> str | None:
        """Insert ``entry`` and return the id of the item now before it (None at the start).

        Raises:
            ProtocolError: the id is taken, or ``previous_item_id`` names no item.
        """
        item_id = entry.item.id
        assert item_id is not None, "items get their id before insertion"
        if item_id in self._by_id:
            raise ProtocolError(
                "item_id_already_exists",
                f"Item with id '{item_id}' already exists in the conversation.",
                param="item.id",
            )
        if previous_item_id is None:
            index = len(self._entries)
        elif previous_item_id == "root":
            index = 0
        else:
            prev = self._by_id.get(previous_item_id)
            if prev is None:
                raise ProtocolError(
                    "previous_item_not_found",
                    f"Previous item with id '{previous_item_id}' does not exist.",
                    param="previous_item_id",
                )
            index = self._entries.index(prev) + 1
        self._entries.insert(index, entry)
        self._by_id[item_id] = entry
        self.client_text_bytes += entry.client_text_bytes
        self.audio_bytes += entry.audio_bytes
        self._trim_audio(keep=entry)
        return self._entries[index - 1].item.id if index > 0 else None

    def check_text(self, item: AnyItem) -> int:
        """The client text of ``item`` in bytes, if the text budget has room for it.

        Raises:
            ProtocolError: ``conversation_text_limit_exceeded`` when it has not.
        """
        size = text_bytes(item)
        limit = self.max_text_bytes
        if limit is not None and self.client_text_bytes + size > limit:
            raise ProtocolError(
                "conversation_text_limit_exceeded",
                f"The conversation may hold at most {limit} bytes of text from the client; it "
                f"holds {self.client_text_bytes} and this item has {size}. Delete items to make "
                "room.",
                param="item",
            )
        return size

    def check_audio(self, nbytes: int) -> None:
        """Refuse one item's audio when it alone is more than the whole audio budget.

        Raises:
            ProtocolError: ``conversation_audio_limit_exceeded``.
        """
        limit = self.max_audio_bytes
        if limit is not None and nbytes > limit:
            raise ProtocolError(
                "conversation_audio_limit_exceeded",
                f"The conversation keeps at most {_ms(limit) / 1000:g} s of audio; this item "
                f"has {_ms(nbytes) / 1000:g} s.",
                param="item",
            )

    def add_audio(self, entry: Entry, index: int, pcm: bytes) -> None:
        """Append audio to a part of ``entry``; older items lose their audio past the budget."""
        entry.audio.setdefault(index, bytearray()).extend(pcm)
        if entry.item.id in self._by_id:
            self.audio_bytes += len(pcm)
            self._trim_audio(keep=entry)

    def _trim_audio(self, keep: Entry) -> None:
        """Drop the audio of the oldest items (never ``keep``'s) until within the budget."""
        limit = self.max_audio_bytes
        if limit is None or self.audio_bytes <= limit:
            return
        for entry in self._entries:
            if self.audio_bytes <= limit:
                return
            if entry is keep or not entry.audio:
                continue
            self.audio_bytes -= entry.audio_bytes
            entry.audio = {}
            entry.segments = []

    def previous_id(self, item_id: str) -> str | None:
        """The id of the item just before ``item_id`` (None at the start)."""
        index = self._entries.index(self._by_id[item_id])
        return self._entries[index - 1].item.id if index > 0 else None

    def replace(self, item_id: str, item: AnyItem) -> None:
        """Swap in an updated copy of an item (items are immutable models)."""
        self._by_id[item_id].item = item

    def delete(self, item_id: str) -> None:
        """Remove an item (spec §2.2 ``conversation.item.delete``); its budget is freed."""
        entry = self._by_id.pop(item_id, None)
        if entry is None:
            raise ProtocolError(
                "item_delete_invalid_item_id",
                f"Error deleting item: the item with id '{item_id}' does not exist.",
                param="item_id",
            )
        self._entries.remove(entry)
        self.client_text_bytes -= entry.client_text_bytes
        self.audio_bytes -= entry.audio_bytes

    def retrieve(
        self, item_id: str, encode: Callable[[str, bytes], bytes] | None = None
    ) -> dict[str, Any]:
        """Return the item's JSON with its audio as base64 (``conversation.item.retrieved``).

        Args:
            item_id: the item.
            encode: turns a part's stored PCM16 24 kHz into wire audio, given the part's
                ``type`` (the session's formats, spec §3.1); the PCM itself when None.
        """
        entry = self._by_id.get(item_id)
        if entry is None:
            raise ProtocolError(
                "item_retrieve_invalid_item_id",
                f"Error retrieving item: the item with id '{item_id}' does not exist.",
                param="item_id",
            )
        data = item_payload(entry.item)
        for index, pcm in entry.audio.items():
            part = data["content"][index]
            audio = bytes(pcm) if encode is None else encode(part["type"], bytes(pcm))
            part["audio"] = base64.b64encode(audio).decode("ascii")
        return data

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        """Cut an assistant audio part at ``audio_end_ms``; keep the transcript that was heard.

        Raises:
            ProtocolError: unknown item, not an assistant audio part, or beyond the audio.
        """
        entry = self._by_id.get(item_id)
        if entry is None:
            raise ProtocolError(
                "item_truncate_invalid_item_id",
                f"Error truncating item: the item with id '{item_id}' does not exist.",
                param="item_id",
            )
        item = entry.item
        if (
            not isinstance(item, AssistantMessage)
            or content_index >= len(item.content)
            or not isinstance(item.content[content_index], OutputAudio)
        ):
            raise ProtocolError(
                "invalid_value",
                "Only assistant messages with audio content can be truncated.",
                param="content_index",
            )
        pcm = entry.audio.setdefault(content_index, bytearray())
        length_ms = _ms(len(pcm))
        if audio_end_ms > length_ms:
            raise ProtocolError(
                "invalid_value",
                f"Audio content of {length_ms}ms is already shorter than {audio_end_ms}ms",
                param="audio_end_ms",
            )
        cut = audio_end_ms * BYTES_PER_MS
        if item_id in self._by_id:
            self.audio_bytes -= max(0, len(pcm) - cut)
        del pcm[cut:]
        entry.segments = heard_segments(entry.segments, cut)
        transcript = "".join(seg.text for seg in entry.segments).strip()
        content = list(item.content)
        part = content[content_index]
        assert isinstance(part, OutputAudio)
        content[content_index] = part.model_copy(update={"transcript": transcript})
        entry.item = item.model_copy(update={"content": content})


def heard_segments(segments: list[SpokenSegment], cut: int) -> list[SpokenSegment]:
    """Keep the text of audio before byte ``cut``; a segment cut midway keeps its heard words."""
    kept: list[SpokenSegment] = []
    for seg in segments:
        if seg.end_byte <= cut:
            kept.append(seg)
        elif seg.start_byte < cut:
            words = seg.text.split(" ")
            share = (cut - seg.start_byte) / max(1, seg.end_byte - seg.start_byte)
            n = int(len(words) * share)
            kept.append(SpokenSegment(" ".join(words[:n]), seg.start_byte, cut))
    return kept


def entry_message(entry: Entry) -> ChatMessage | None:
    """Render one entry as a chat message, or None when it carries nothing for the model."""
    item = entry.item
    if isinstance(item, SystemMessage):
        return ChatMessage("system", " ".join(p.text for p in item.content))
    if isinstance(item, UserMessage):
        parts: list[str] = []
        for part in item.content:
            if isinstance(part, InputText):
                parts.append(part.text)
            elif isinstance(part, InputAudio):
                text = part.transcript if part.transcript is not None else entry.heard_text
                if text:
                    parts.append(text)
            elif isinstance(part, InputImage):
                parts.append("[image]")
        text = " ".join(p for p in parts if p).strip()
        return ChatMessage("user", text) if text else None
    if isinstance(item, AssistantMessage):
        texts = [p.text if isinstance(p, OutputText) else p.transcript for p in item.content]
        text = " ".join(t for t in texts if t).strip()
        return ChatMessage("assistant", text) if text else None
    if isinstance(item, FunctionCall):
        call = ChatToolCall(item.call_id or item.id or "", item.name, item.arguments or "{}")
        return ChatMessage("assistant", "", tool_calls=(call,))
    if isinstance(item, FunctionCallOutput):
        return ChatMessage("tool", item.output, tool_call_id=item.call_id)
    return None
