"""A transcript harness around the sans-I/O core (design.md house rule 6).

``Sim`` feeds a :class:`RealtimeSession` exactly as the driver does (client JSON through the
codec, ``ProtocolError`` to ``receive_error`` with the frame's ``event_id``) and collects what it
drains. Every event is serialized with ``codec.dump_event`` and validated with the official SDK
oracle (spec §8.2) before a test sees it.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from openrealtime.core import backend_events as be
from openrealtime.core.commands import (
    Command,
    DetectSpeech,
    DropSpeculation,
    Listen,
    Speculate,
    StopListening,
)
from openrealtime.core.ids import SequentialIds
from openrealtime.core.session import Limits, RealtimeSession
from openrealtime.core.turn_taking import TurnOptions
from openrealtime.protocol.client_events import CLIENT_EVENT_MODELS
from openrealtime.protocol.codec import client_event_id, dump_event, parse_client_event
from openrealtime.protocol.errors import ProtocolError
from tests.helpers.oracle import SERVER_EVENT

T0 = 1_760_000_000_000
"""Wall time (unix ms) at which every simulated session is created."""

RATE = 24_000
FRAME = 768
"""Samples per VAD probability (Silero's 32 ms frame at 24 kHz)."""

AUDIO_PLUMBING = (DetectSpeech, Listen, StopListening)
SPECULATION = (Speculate, DropSpeculation)


def check_event(event: dict[str, Any]) -> None:
    """Validate one server event with the openai SDK's own models (what openai-agents does)."""
    SERVER_EVENT.validate_python(event)


def pcm(ms: int, value: int = 0) -> bytes:
    """``ms`` milliseconds of constant PCM16 24 kHz audio."""
    return value.to_bytes(2, "little", signed=True) * (RATE * ms // 1000)


def frames_pcm(n: int) -> bytes:
    """Audio covering ``n`` VAD frames."""
    return b"\x01\x00" * (FRAME * n)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


class Sim:
    """One simulated session: inputs in, validated JSON events and commands out."""

    def __init__(
        self,
        kind: Literal["realtime", "transcription"] = "realtime",
        model: str = "gpt-realtime",
        *,
        limits: Limits | None = None,
        session: dict[str, Any] | None = None,
        keep_created: bool = False,
        turn_model: bool = False,
        playback: bool = False,
        turn_options: TurnOptions | None = None,
    ) -> None:
        self.session = RealtimeSession(
            kind,
            model,
            ids=SequentialIds(),
            now_ms=T0,
            limits=limits or Limits(),
            turn_model=turn_model,
            playback=playback,
            turn_options=turn_options,
        )
        self._allowed = tuple(CLIENT_EVENT_MODELS) if playback else None
        """With ``playback`` the session is a WebRTC call's: its client events are allowed."""
        self._events: list[dict[str, Any]] = []
        self._commands: list[Command] = []
        self._collect()
        if not keep_created:
            self.events()
        if session is not None:
            self.send({"type": "session.update", "session": {"type": kind, **session}})
            updated = self.events()
            assert types(updated) == ["session.updated"], updated
            self.commands()

    # ---------------------------------------------------------------- inputs

    def send(self, event: dict[str, Any]) -> None:
        """A client text frame holding this JSON object."""
        self.send_raw(json.dumps(event))

    def send_raw(self, frame: str | bytes) -> None:
        """A raw WebSocket frame, routed as ``runtime/driver.py`` routes it."""
        try:
            parsed = (
                parse_client_event(frame)
                if self._allowed is None
                else parse_client_event(frame, allowed_types=self._allowed)
            )
        except ProtocolError as exc:
            self.session.receive_error(exc, client_event_id(frame))
        else:
            self.session.receive_client_event(parsed)
        self._collect()

    def audio(self, data: bytes, event_id: str | None = None) -> None:
        """``input_audio_buffer.append`` with this PCM16."""
        event: dict[str, Any] = {"type": "input_audio_buffer.append", "audio": b64(data)}
        if event_id is not None:
            event["event_id"] = event_id
        self.send(event)

    def backend(self, event: be.BackendEvent) -> None:
        self.session.receive_backend_event(event)
        self._collect()

    def vad(self, probs: list[float]) -> None:
        """VAD results for the next ``len(probs)`` frames of the audio stream."""
        self.backend(be.SpeechProbabilities(tuple(probs), FRAME))

    def time(self, ms: int) -> None:
        """Advance the wall clock to ``ms`` after the session was created."""
        assert T0 + ms >= self.session.now_ms, "time goes forward"
        self.session.advance_time(T0 + ms)
        self._collect()

    # ---------------------------------------------------------------- outputs

    def _collect(self) -> None:
        out = self.session.drain()
        for event in out.events:
            data = json.loads(dump_event(event))
            check_event(data)
            self._events.append(data)
        self._commands.extend(out.commands)

    def events(self) -> list[dict[str, Any]]:
        """The events emitted since the last call, as JSON objects."""
        out, self._events = self._events, []
        return out

    def commands(self, *, speech: bool = False, speculation: bool = False) -> list[Command]:
        """The commands emitted since the last call.

        Audio plumbing (``DetectSpeech``, ``Listen``, ``StopListening``) is included only if
        ``speech``; ``Speculate``/``DropSpeculation`` hints only if ``speculation``.
        """
        out, self._commands = self._commands, []
        return [
            c
            for c in out
            if (speech or not isinstance(c, AUDIO_PLUMBING))
            and (speculation or not isinstance(c, SPECULATION))
        ]

    def types(self) -> list[str]:
        """The types of the events emitted since the last call."""
        return types(self.events())

    def error(self) -> dict[str, Any]:
        """The single event emitted since the last call, which must be an ``error``."""
        events = self.events()
        assert types(events) == ["error"], events
        return dict(events[0]["error"])


# -------------------------------------------------------------------- common steps


def user_text(text: str, item_id: str | None = None) -> dict[str, Any]:
    """A ``conversation.item.create`` event for a user text message."""
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id is not None:
        item["id"] = item_id
    return {"type": "conversation.item.create", "item": item}


def add_user_text(sim: Sim, text: str, item_id: str | None = None) -> str:
    """Create a user text item and return its id (its events are checked and dropped)."""
    sim.send(user_text(text, item_id))
    events = sim.events()
    assert types(events) == ["conversation.item.added", "conversation.item.done"], events
    return str(events[0]["item"]["id"])


def speak(sim: Sim, silence_before: int, speech: int, silence_after: int) -> None:
    """Append audio for these VAD frames, then feed their probabilities (0.0 / 0.9)."""
    total = silence_before + speech + silence_after
    sim.audio(frames_pcm(total))
    sim.vad([0.0] * silence_before + [0.9] * speech + [0.0] * silence_after)
