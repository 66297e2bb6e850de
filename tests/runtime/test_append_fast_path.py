"""The per-append fast paths decide exactly what the general paths decide (issue 9, item 3).

``parse_client_event`` recognises a plain ``input_audio_buffer.append`` frame without the
generic JSON decoder; ``decode_base64_audio`` decodes strictly first. Each is compared with the
general path on the same input: same event, or the same error. The driver's one deadline timer
(instead of a timeout around every wait) still fires a deadline that moves mid-session.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrealtime.config import Config
from openrealtime.core.input_buffer import decode_base64_audio
from openrealtime.protocol import codec
from openrealtime.protocol.client_events import WEBSOCKET_EVENT_TYPES, InputAudioBufferAppend
from openrealtime.protocol.errors import ProtocolError
from tests.conformance._error_helpers import KEY, raw_session, serve

APPEND = "input_audio_buffer.append"
AUDIO = base64.b64encode(bytes(range(256)) * 4).decode("ascii")


def _outcome(frame: str, allowed: tuple[str, ...] = WEBSOCKET_EVENT_TYPES) -> Any:
    try:
        event = codec.parse_client_event(frame, allowed_types=allowed)
    except ProtocolError as exc:
        return ("error", exc.code, exc.message, exc.param)
    return ("event", type(event), event.model_dump(), event.model_fields_set)


def _both(frame: str, allowed: tuple[str, ...] = WEBSOCKET_EVENT_TYPES) -> tuple[Any, Any]:
    """(fast path allowed, general path only) outcomes of one frame."""
    fast = _outcome(frame, allowed)
    saved = codec._PLAIN_APPEND
    codec._PLAIN_APPEND = re.compile(r"(?!)")  # matches nothing: every frame goes the long way
    try:
        slow = _outcome(frame, allowed)
    finally:
        codec._PLAIN_APPEND = saved
    return fast, slow


def _taken(frame: str) -> bool:
    return codec._PLAIN_APPEND.fullmatch(frame) is not None


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"type": APPEND, "audio": AUDIO}, separators=(",", ":")),  # openai-node
        json.dumps({"type": APPEND, "audio": AUDIO}),  # openai-python
        json.dumps({"type": APPEND, "audio": AUDIO, "event_id": "evt_1"}),
        json.dumps({"type": APPEND, "audio": AUDIO, "event_id": "é✓"}, ensure_ascii=False),
        json.dumps({"type": APPEND, "audio": ""}),
        f' \n{{ "type" :\t"{APPEND}" ,\r"audio" : "{AUDIO}" }}\n ',
    ],
)
def test_plain_appends_take_the_fast_path_with_the_same_event(frame: str) -> None:
    assert _taken(frame)
    fast, slow = _both(frame)
    assert fast == slow
    assert fast[0] == "event" and fast[1] is InputAudioBufferAppend


@pytest.mark.parametrize(
    "frame",
    [
        # escapes, control characters and surrogates are the generic decoder's to judge
        f'{{"type":"{APPEND}","audio":"QU\\u0042"}}',
        f'{{"type":"{APPEND}","audio":"QUJD","event_id":"a\\"b"}}',
        f'{{"type":"{APPEND}","audio":"QUJD","event_id":"a\\ud800"}}',
        f'{{"type":"{APPEND}","audio":"QUJD","event_id":"tab\there"}}',
        f'{{"type":"{APPEND}","audio":"QUJD"}}\x0b',  # not JSON whitespace
        f'{{"type":"{APPEND}","audio":"QUJD"}}x',
        f'{{"type":"{APPEND}","audio":"QUJD","audio":"QUJD"}}',
        f'{{"type":"{APPEND}","audio":"QUJD","extra":1}}',
        f'{{"type":"{APPEND}","audio":"QUJD","event_id":null}}',
        f'{{"audio":"QUJD","type":"{APPEND}"}}',
        f'{{"type":"{APPEND}","audio":12}}',
        f'{{"type":"{APPEND}","audio":"QUJD","event_id":"{"x" * 513}"}}',
        f'[{{"type":"{APPEND}","audio":"QUJD"}}]',
    ],
)
def test_other_frames_get_exactly_the_general_paths_answer(frame: str) -> None:
    fast, slow = _both(frame)
    assert fast == slow


def test_an_overlong_event_id_is_refused_on_the_fast_path_too() -> None:
    frame = json.dumps({"type": APPEND, "audio": "QUJD", "event_id": "x" * 513})
    fast, slow = _both(frame)
    assert fast == slow and fast[0] == "error"


def test_a_transport_without_appends_refuses_them_on_the_fast_path_too() -> None:
    frame = json.dumps({"type": APPEND, "audio": "QUJD"})
    allowed = tuple(t for t in WEBSOCKET_EVENT_TYPES if t != APPEND)
    fast, slow = _both(frame, allowed)
    assert fast == slow and fast[0] == "error"


_PIECES = st.sampled_from(
    ["QUJD", "=", "==", "a", "+", "/", "\\", '"', "\\u0041", "\\ud800", "\t", "\x00", "é", " "]
)


@settings(max_examples=300, deadline=None)
@given(
    audio=st.lists(_PIECES, max_size=8).map("".join),
    event_id=st.none() | st.lists(_PIECES, max_size=4).map("".join),
    spaced=st.booleans(),
)
def test_any_append_shaped_frame_gets_the_general_paths_answer(
    audio: str, event_id: str | None, spaced: bool
) -> None:
    sep = ", " if spaced else ","
    col = ": " if spaced else ":"
    frame = f'{{"type"{col}"{APPEND}"{sep}"audio"{col}"{audio}"'
    if event_id is not None:
        frame += f'{sep}"event_id"{col}"{event_id}"'
    frame += "}"
    fast, slow = _both(frame)
    assert fast == slow


# --------------------------------------------------------------------------- base64


def _reference(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["QUJD", "QQ", "Q", "=", "==", "+/", " ", "\n", "é", "*"])))
def test_base64_audio_decodes_exactly_like_validate_true(pieces: list[str]) -> None:
    text = "".join(pieces)
    expected = _reference(text)
    if expected is None:
        with pytest.raises(ProtocolError) as caught:
            decode_base64_audio(text)
        assert caught.value.code == "invalid_value" and caught.value.param == "audio"
    else:
        assert decode_base64_audio(text) == expected


@pytest.mark.parametrize("text", ["", "=", "==", "QQ", "QQ=", "QQ==", "QUJD====", "QU JD"])
def test_base64_edge_cases(text: str) -> None:
    expected = _reference(text)
    if expected is None:
        with pytest.raises(ProtocolError):
            decode_base64_audio(text)
    else:
        assert decode_base64_audio(text) == expected


# --------------------------------------------------------------------------- driver deadline


async def test_a_deadline_set_mid_session_fires_without_client_traffic() -> None:
    """The idle timeout is armed by ``response.done`` while the driver waits: its timer moves."""
    config = Config(api_keys=(KEY,), vad="energy")
    async with serve(config) as base, raw_session(base) as session:
        await session.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "audio": {
                        "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 300}}
                    },
                },
            }
        )
        await session.recv_until("session.updated")
        await session.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello"}],
                },
            }
        )
        await session.send({"type": "response.create"})
        await session.recv_until("response.done")
        done_at = time.monotonic()
        event, _ = await session.recv_until("input_audio_buffer.timeout_triggered", wait_s=5)
        waited = time.monotonic() - done_at
        assert 0.2 <= waited <= 2.0, waited
        assert event["type"] == "input_audio_buffer.timeout_triggered"
