"""Writing a response's output: items, content parts and deltas in the live order (spec §5).

The session decides *when* (which response is active, when it ends); this module decides *what*
goes on the wire for each piece of output and keeps the conversation's copy of the items in
step, including which transcript text describes which span of audio (for truncation).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Literal

from openrealtime.audio.formats import OutputEncoder
from openrealtime.core import backend_events as be
from openrealtime.core.conversation import Conversation, Entry, SpokenSegment
from openrealtime.core.ids import IdFactory
from openrealtime.core.responses import OpenCall, OpenMessage, ResponseRun
from openrealtime.protocol import server_events as se
from openrealtime.protocol.items import (
    AnyItem,
    AssistantMessage,
    FunctionCall,
    OutputAudio,
    OutputText,
    item_payload,
)

Emit = Callable[..., None]


class ResponseWriter:
    """Emits the output events of responses through the session's ``emit``."""

    def __init__(self, ids: IdFactory, conversation: Conversation, emit: Emit) -> None:
        self.ids = ids
        self.conversation = conversation
        self._emit = emit
        self.audio_produced = False
        """Whether any assistant audio was sent (the voice is then fixed, spec §3.1)."""
        self._encoders: dict[str, OutputEncoder] = {}
        """Per open audio message: session audio -> the response's output format."""
        self.play: Callable[[str, str, bytes], None] | None = None
        """``play(response_id, item_id, pcm16)``: set when the transport plays the audio itself
        (WebRTC, spec §1.3); it then replaces the ``response.output_audio.delta`` events."""

    def open_message(self, run: ResponseRun) -> OpenMessage:
        """The assistant message receiving output, opened (item + content part) if needed."""
        if run.message is not None:
            return run.message
        item_id = self.ids.new("item")
        msg = OpenMessage(item_id=item_id, output_index=len(run.output), modality=run.modality)
        run.message = msg
        item = AssistantMessage(
            id=item_id, type="message", role="assistant", status="in_progress", content=[]
        )
        self.add_output_item(run, item)
        part = (
            {"type": "audio", "transcript": ""}
            if run.modality == "audio"
            else {"type": "text", "text": ""}
        )
        self._emit(
            se.ResponseContentPartAdded,
            response_id=run.id,
            item_id=item_id,
            output_index=msg.output_index,
            content_index=0,
            part=part,
        )
        return msg

    def add_output_item(self, run: ResponseRun, item: AnyItem) -> None:
        """A new output item: ``response.output_item.added`` (+ ``conversation.item.added``)."""
        output_index = len(run.output)
        run.output.append(item)
        payload = item_payload(item)
        self._emit(
            se.ResponseOutputItemAdded, response_id=run.id, output_index=output_index, item=payload
        )
        if run.in_conversation:
            previous = self.conversation.insert(Entry(item=item), None)
            self._emit(se.ConversationItemAdded, item=payload, previous_item_id=previous)

    def text(self, run: ResponseRun, event: be.ResponseText) -> None:
        """Assistant text: a text delta, or in audio mode the transcript of the next audio."""
        if not event.text:
            return
        msg = self.open_message(run)
        where = msg.part(run.id)
        if msg.modality == "audio":
            entry = self.conversation.get(msg.item_id) if run.in_conversation else None
            if entry is not None:
                entry.segments.append(SpokenSegment(event.text, msg.audio_bytes, msg.audio_bytes))
            self._emit(se.ResponseOutputAudioTranscriptDelta, **where, delta=event.text)
        else:
            self._emit(se.ResponseOutputTextDelta, **where, delta=event.text)
        msg.text += event.text

    def audio(self, run: ResponseRun, event: be.ResponseAudio) -> None:
        """Assistant audio: an audio delta, recorded on the conversation item."""
        if not event.pcm16 or run.modality != "audio":
            return
        msg = self.open_message(run)
        msg.audio_bytes += len(event.pcm16)
        self.audio_produced = True
        entry = self.conversation.get(msg.item_id) if run.in_conversation else None
        if entry is not None:
            self.conversation.add_audio(entry, 0, event.pcm16)
            if entry.segments:
                entry.segments[-1].end_byte = msg.audio_bytes
        if self.play is not None:
            self.play(run.id, msg.item_id, event.pcm16)
            return
        encoder = self._encoders.get(msg.item_id)
        if encoder is None:
            encoder = self._encoders[msg.item_id] = OutputEncoder(run.output_format["type"])
        self._audio_delta(run, msg, encoder.process(event.pcm16))

    def _audio_delta(self, run: ResponseRun, msg: OpenMessage, wire: bytes) -> None:
        """``response.output_audio.delta`` with audio in the response's format (spec §3.1)."""
        if not wire:
            return  # the resampler is still filling
        self._emit(
            se.ResponseOutputAudioDelta,
            **msg.part(run.id),
            delta=base64.b64encode(wire).decode("ascii"),
        )

    def tool_call(self, run: ResponseRun, event: be.ResponseToolCall) -> None:
        """A function call starts: the open message (if any) ends, a function_call item opens."""
        if event.index in run.calls:
            return
        self.close_message(run, "completed")
        call = OpenCall(
            item_id=self.ids.new("item"),
            output_index=len(run.output),
            call_id=self.ids.new("call"),
            name=event.name,
        )
        run.calls[event.index] = call
        item = FunctionCall(
            id=call.item_id,
            type="function_call",
            status="in_progress",
            name=call.name,
            call_id=call.call_id,
            arguments="",
        )
        self.add_output_item(run, item)

    def tool_arguments(self, run: ResponseRun, event: be.ResponseToolArguments) -> None:
        """Arguments of an open function call."""
        if event.index not in run.calls or not event.delta:
            return
        call = run.calls[event.index]
        call.arguments += event.delta
        self._emit(
            se.ResponseFunctionCallArgumentsDelta,
            response_id=run.id,
            item_id=call.item_id,
            output_index=call.output_index,
            call_id=call.call_id,
            delta=event.delta,
        )

    def close_message(self, run: ResponseRun, status: Literal["completed", "incomplete"]) -> None:
        """End the open message: the done events of its part and item."""
        msg = run.message
        if msg is None:
            return
        run.message = None
        where = msg.part(run.id)
        content: list[OutputAudio | OutputText]
        if msg.modality == "audio":
            encoder = self._encoders.pop(msg.item_id, None)
            if encoder is not None and status == "completed":
                self._audio_delta(run, msg, encoder.flush())  # what the resampler held back
            self._emit(se.ResponseOutputAudioDone, **where)
            self._emit(se.ResponseOutputAudioTranscriptDone, **where, transcript=msg.text)
            self._emit(
                se.ResponseContentPartDone, **where, part={"type": "audio", "transcript": msg.text}
            )
            content = [OutputAudio(type="output_audio", transcript=msg.text)]
        else:
            self._emit(se.ResponseOutputTextDone, **where, text=msg.text)
            self._emit(se.ResponseContentPartDone, **where, part={"type": "text", "text": msg.text})
            content = [OutputText(type="output_text", text=msg.text)]
        item = AssistantMessage(
            id=msg.item_id, type="message", role="assistant", status=status, content=content
        )
        self.finish_item(run, msg.output_index, item)

    def close_calls(self, run: ResponseRun, status: Literal["completed", "incomplete"]) -> None:
        """End every open function call: ``arguments.done`` and the item's done events."""
        for index in sorted(run.calls):
            call = run.calls[index]
            self._emit(
                se.ResponseFunctionCallArgumentsDone,
                response_id=run.id,
                item_id=call.item_id,
                output_index=call.output_index,
                call_id=call.call_id,
                name=call.name,
                arguments=call.arguments,
            )
            item = FunctionCall(
                id=call.item_id,
                type="function_call",
                status=status,
                name=call.name,
                call_id=call.call_id,
                arguments=call.arguments,
            )
            self.finish_item(run, call.output_index, item)
        run.calls.clear()

    def finish_item(self, run: ResponseRun, output_index: int, item: AnyItem) -> None:
        """Store the final item; ``conversation.item.done`` (+) ``response.output_item.done``."""
        run.output[output_index] = item
        if run.in_conversation and item.id is not None and item.id in self.conversation:
            self.conversation.replace(item.id, item)
            self._emit(
                se.ConversationItemDone,
                item=item_payload(item),
                previous_item_id=self.conversation.previous_id(item.id),
            )
        self._emit(
            se.ResponseOutputItemDone,
            response_id=run.id,
            output_index=output_index,
            item=item_payload(item),
        )
