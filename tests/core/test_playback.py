"""The output audio buffer of a WebRTC session (spec §1.3, §5.2 WebRTC notes, §5.7).

Transcripts against the core in playback mode: audio leaves as ``PlayAudio`` commands instead of
``response.output_audio.delta`` events, the runtime reports what it played, and the core emits
``output_audio_buffer.*`` and truncates what the user did not hear.
"""

from __future__ import annotations

from typing import Any

from openrealtime.core import backend_events as be
from openrealtime.core.commands import (
    CancelResponse,
    ClearPlayback,
    Command,
    EndPlayback,
    Generate,
    PlayAudio,
)
from openrealtime.core.ids import SequentialIds
from openrealtime.core.input_buffer import BYTES_PER_MS
from openrealtime.core.session import RealtimeSession
from openrealtime.protocol.client_events import CLIENT_EVENT_MODELS
from openrealtime.protocol.codec import client_event_id, parse_client_event
from openrealtime.protocol.errors import ProtocolError
from tests.core.sim import T0, Sim, add_user_text, pcm, speak, types

NO_VAD: dict[str, Any] = {"instructions": "", "audio": {"input": {"turn_detection": None}}}


class RtcSim(Sim):
    """A Sim whose session plays audio through the transport, as a WebRTC call's does.

    Client frames are parsed as the WebRTC driver parses them (``output_audio_buffer.clear``
    is a client event there).
    """

    def __init__(self) -> None:
        super().__init__()
        self.session = RealtimeSession(
            "realtime", "gpt-realtime", ids=SequentialIds(), now_ms=T0, playback=True
        )
        self._collect()

    def send_raw(self, frame: str | bytes) -> None:
        try:
            parsed = parse_client_event(frame, allowed_types=tuple(CLIENT_EVENT_MODELS))
        except ProtocolError as exc:
            self.session.receive_error(exc, client_event_id(frame))
        else:
            self.session.receive_client_event(parsed)
        self._collect()


def rtc_sim(session: dict[str, Any] | None = None) -> Sim:
    """A playback-mode Sim, ``session.created`` read, ``session`` applied."""
    sim = RtcSim()
    assert sim.types() == ["session.created"]
    if session is not None:
        sim.send({"type": "session.update", "session": {"type": "realtime", **session}})
        assert sim.types() == ["session.updated"]
    sim.commands()
    return sim


def start_audio_response(sim: Sim) -> None:
    """A user text item and a response.create; the Generate is taken."""
    add_user_text(sim, "hello")
    sim.send({"type": "response.create"})
    (command,) = sim.commands()
    assert isinstance(command, Generate)


def played(commands: list[Command]) -> list[tuple[str, str, int]]:
    return [(c.response_id, c.item_id, len(c.pcm16)) for c in commands if isinstance(c, PlayAudio)]


def test_audio_goes_to_the_buffer_and_started_stopped_frame_the_playback() -> None:
    """Spec §5.2 (WebRTC): no audio deltas; started after the part is added, stopped at drain."""
    sim = rtc_sim(NO_VAD)
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "Hi. "))
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 1)))
    assert played(sim.commands()) == [("resp_1", "item_2", 100 * BYTES_PER_MS)]
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 2)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 10, 20))
    events = sim.events()
    assert types(events) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "output_audio_buffer.started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[5] == {
        "type": "output_audio_buffer.started",
        "event_id": events[5]["event_id"],
        "response_id": "resp_1",
    }
    commands = sim.commands()
    assert played(commands) == [("resp_1", "item_2", 100 * BYTES_PER_MS)]
    assert commands[-1] == EndPlayback("resp_1")
    sim.backend(be.PlaybackDrained("resp_1"))
    events = sim.events()
    assert types(events) == ["output_audio_buffer.stopped"]
    assert events[0]["response_id"] == "resp_1"
    # The item keeps the whole audio: everything was heard.
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_2"})
    (retrieved,) = sim.events()
    assert retrieved["item"]["content"][0]["transcript"] == "Hi. "


def test_text_responses_use_no_buffer() -> None:
    sim = rtc_sim({**NO_VAD, "output_modalities": ["text"]})
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "Hi"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    assert "output_audio_buffer.started" not in sim.types()
    assert sim.commands() == []


def test_output_audio_buffer_clear_is_refused_over_websocket() -> None:
    """Spec §2.2: not in the live service's list of WebSocket client events."""
    sim = Sim(session=NO_VAD)
    sim.send({"type": "output_audio_buffer.clear", "event_id": "e1"})
    error = sim.error()
    assert error["code"] == "invalid_value"
    assert error["event_id"] == "e1"


def test_clear_after_the_response_cuts_and_truncates_at_the_played_position() -> None:
    """Spec §5.7 manual cut-off: cleared, then the item holds only what was heard."""
    sim = rtc_sim(NO_VAD)
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "one two three four"))
    sim.backend(be.ResponseAudio("resp_1", pcm(400, 1)))
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    sim.send({"type": "output_audio_buffer.clear"})
    assert sim.events() == []
    assert sim.commands() == [ClearPlayback()]
    sim.backend(be.PlaybackCleared("resp_1", True, (("item_2", 200 * BYTES_PER_MS + 7),)))
    events = sim.events()
    assert types(events) == ["output_audio_buffer.cleared", "conversation.item.truncated"]
    assert events[0]["response_id"] == "resp_1"
    assert {k: v for k, v in events[1].items() if k != "event_id"} == {
        "type": "conversation.item.truncated",
        "item_id": "item_2",
        "content_index": 0,
        "audio_end_ms": 200,
    }
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_2"})
    part = sim.events()[0]["item"]["content"][0]
    assert part["transcript"] == "one two"
    # A stale drain report changes nothing: the audio never finished.
    sim.backend(be.PlaybackDrained("resp_1"))
    assert sim.events() == []


def test_clear_with_nothing_playing_does_nothing() -> None:
    sim = rtc_sim(NO_VAD)
    sim.send({"type": "output_audio_buffer.clear"})
    assert sim.events() == []
    assert sim.commands() == []


def test_barge_in_while_generating_cancels_then_clears_then_truncates() -> None:
    """Spec §5.7: speech_started, response.done (turn_detected), cleared, truncated."""
    sim = rtc_sim({"instructions": ""})
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "alpha beta gamma delta"))
    sim.backend(be.ResponseAudio("resp_1", pcm(1000, 1)))
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.events()
    sim.commands()
    speak(sim, 0, 5, 0)
    events = sim.events()
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    assert events[6]["response"]["status_details"]["reason"] == "turn_detected"
    commands = [c for c in sim.commands() if not isinstance(c, PlayAudio)]
    assert commands == [CancelResponse("resp_1"), EndPlayback("resp_1"), ClearPlayback()]
    sim.backend(be.PlaybackCleared("resp_1", True, (("item_2", 500 * BYTES_PER_MS),)))
    events = sim.events()
    assert types(events) == ["output_audio_buffer.cleared", "conversation.item.truncated"]
    assert events[1]["audio_end_ms"] == 500
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_2"})
    part = sim.events()[0]["item"]["content"][0]
    assert part["transcript"] == "alpha beta"
    assert len(part["audio"]) * 3 // 4 == 500 * BYTES_PER_MS


def test_barge_in_after_response_done_still_cuts_the_playing_audio() -> None:
    """The response finished long before its audio did: barge-in still truncates."""
    sim = rtc_sim({"instructions": ""})
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "alpha beta"))
    sim.backend(be.ResponseAudio("resp_1", pcm(1000, 1)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    speak(sim, 0, 5, 0)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    assert sim.commands() == [ClearPlayback()]
    # The start report was still in flight when the buffer was cleared: started comes first.
    sim.backend(be.PlaybackCleared("resp_1", True, (("item_2", 100 * BYTES_PER_MS),)))
    assert sim.types() == [
        "output_audio_buffer.started",
        "output_audio_buffer.cleared",
        "conversation.item.truncated",
    ]
    sim.backend(be.PlaybackStarted("resp_1"))  # the late report is dropped
    assert sim.events() == []


def test_barge_in_without_interrupt_response_keeps_playing() -> None:
    sim = rtc_sim(
        {
            "instructions": "",
            "audio": {
                "input": {
                    "turn_detection": {
                        "type": "server_vad",
                        "interrupt_response": False,
                        "create_response": False,
                    }
                }
            },
        }
    )
    start_audio_response(sim)
    sim.backend(be.ResponseAudio("resp_1", pcm(1000, 1)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    speak(sim, 0, 5, 0)
    assert sim.types() == ["input_audio_buffer.speech_started"]
    assert sim.commands() == []


def test_clear_while_generating_mutes_the_rest_and_truncates_at_the_end() -> None:
    """A clear without response.cancel: later audio is never played; the item is cut at the end."""
    sim = rtc_sim(NO_VAD)
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "one two "))
    sim.backend(be.ResponseAudio("resp_1", pcm(200, 1)))
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.events()
    sim.commands()
    sim.send({"type": "output_audio_buffer.clear"})
    assert sim.commands() == [ClearPlayback()]
    sim.backend(be.PlaybackCleared("resp_1", True, (("item_2", 100 * BYTES_PER_MS),)))
    assert sim.types() == ["output_audio_buffer.cleared"]
    sim.backend(be.ResponseText("resp_1", "three four"))
    sim.backend(be.ResponseAudio("resp_1", pcm(200, 1)))
    assert sim.commands() == []  # muted
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    events = sim.events()
    assert types(events)[-3:] == [
        "response.done",
        "rate_limits.updated",
        "conversation.item.truncated",
    ]
    assert events[-1]["audio_end_ms"] == 100
    assert sim.commands() == []  # no EndPlayback: nothing of it is left to play
    sim.send({"type": "conversation.item.retrieve", "item_id": "item_2"})
    assert sim.events()[0]["item"]["content"][0]["transcript"] == "one"


def test_clear_that_found_the_audio_already_played_still_ends_with_stopped() -> None:
    sim = rtc_sim(NO_VAD)
    start_audio_response(sim)
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 1)))
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    sim.send({"type": "output_audio_buffer.clear"})
    assert sim.commands() == [ClearPlayback()]
    assert sim.events() == []  # the runtime reported no response cut off
    sim.backend(be.PlaybackDrained("resp_1"))  # the drain report was on its way
    assert sim.types() == ["output_audio_buffer.stopped"]


def test_drain_reported_before_start_keeps_the_pair_in_order() -> None:
    sim = rtc_sim(NO_VAD)
    start_audio_response(sim)
    sim.backend(be.ResponseAudio("resp_1", pcm(20, 1)))
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    sim.backend(be.PlaybackDrained("resp_1"))
    assert sim.types() == ["output_audio_buffer.started", "output_audio_buffer.stopped"]
    sim.backend(be.PlaybackStarted("resp_1"))
    assert sim.events() == []


def test_out_of_band_audio_is_played_but_never_truncated() -> None:
    sim = rtc_sim(NO_VAD)
    sim.send({"type": "response.create", "response": {"conversation": "none", "input": []}})
    sim.events()
    sim.commands()
    sim.backend(be.ResponseAudio("resp_1", pcm(100, 1)))
    assert played(sim.commands()) == [("resp_1", "item_1", 100 * BYTES_PER_MS)]
    sim.backend(be.ResponseGenerated("resp_1", "stop", 1, 1))
    sim.events()
    sim.commands()
    sim.send({"type": "output_audio_buffer.clear"})
    sim.backend(be.PlaybackCleared("resp_1", True, (("item_1", 0),)))
    assert sim.types() == ["output_audio_buffer.started", "output_audio_buffer.cleared"]


def test_idle_timeout_counts_from_the_end_of_playback() -> None:
    """Spec §5.10: the idle timer starts once the assistant's audio has finished playing; over
    WebRTC the transport says when that is (PlaybackDrained), however long playback took."""
    td = {"type": "server_vad", "idle_timeout_ms": 5000, "create_response": False}
    sim = rtc_sim({"instructions": "", "audio": {"input": {"turn_detection": td}}})
    start_audio_response(sim)
    sim.backend(be.ResponseText("resp_1", "Hi. "))
    sim.backend(be.ResponseAudio("resp_1", pcm(1000, 1)))
    sim.backend(be.PlaybackStarted("resp_1"))
    sim.time(500)
    sim.backend(be.ResponseGenerated("resp_1", "stop", 10, 20))
    sim.events()
    sim.commands()
    # Playback lags (the 1 s of audio ends 3 s after response.done): not armed before the drain.
    sim.time(8000)
    assert "input_audio_buffer.timeout_triggered" not in sim.types()
    assert sim.session.next_deadline_ms() != sim.session.created_ms + 500 + 1000 + 5000
    sim.time(8500)
    sim.backend(be.PlaybackDrained("resp_1"))
    assert sim.types() == ["output_audio_buffer.stopped"]
    assert sim.session.next_deadline_ms() == sim.session.created_ms + 8500 + 5000
    sim.time(8500 + 4999)
    assert sim.events() == []
    sim.time(8500 + 5000)
    assert sim.types()[0] == "input_audio_buffer.timeout_triggered"


def test_each_dtmf_digit_is_one_event_without_an_event_id() -> None:
    """Spec §1.5: a SIP caller's keypad digits, in order, shaped as the SDK's model."""
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    sim = rtc_sim(NO_VAD)
    for digit in "1#9":
        sim.backend(be.DtmfReceived(digit, 1_765_000_000))
    events = sim.events()
    assert events == [
        {"type": "input_audio_buffer.dtmf_event_received", "event": d, "received_at": 1_765_000_000}
        for d in "1#9"
    ]
    parsed = TypeAdapter(RealtimeServerEvent).validate_python(events[0])
    assert type(parsed).__name__ == "InputAudioBufferDtmfEventReceivedEvent"
    assert sim.commands() == []
