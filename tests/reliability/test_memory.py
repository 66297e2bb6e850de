"""A session's memory is bounded and given back (issue 8, defect 6).

Before the fix 30 x 20 MB ``conversation.item.create`` added 770 MB, and 20 x (15 MiB append +
commit) added 1.2 GB that stayed after the items were deleted and the session closed. Now text
fields have the live API's 10 MiB limit, a conversation holds at most
``max_conversation_text_bytes`` of client text and ``max_conversation_audio_seconds`` of audio,
and freed memory goes back to the system.
"""

from __future__ import annotations

import base64
import gc
import os
from typing import Any

import psutil

from openrealtime.backends.fake import FakeSpeechToText
from openrealtime.config import Config
from tests.conformance._error_helpers import KEY, Session, alive, fake_engines, raw_session, serve

MIB = 1024 * 1024
BYTES_PER_S = 48_000


def _text_item(item_id: str, size: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "w" * size}],
        },
    }


async def _no_vad(session: Session) -> None:
    await session.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    await session.recv_until("session.updated")


async def test_a_text_over_10_mib_gets_the_live_error() -> None:
    async with serve() as base, raw_session(base) as session:
        await session.send(_text_item("big", 10_485_761))
        error = (await session.recv(wait_s=30))["error"]
        assert error == {
            "type": "invalid_request_error",
            "code": "string_above_max_length",
            "message": "Invalid 'item.content[0].text': string too long. Expected a string with "
            "maximum length 10485760, but got a string with length 10485761 instead.",
            "param": "item.content[0].text",
            "event_id": None,
        }
        await alive(session)


async def test_the_conversation_text_budget_refuses_then_makes_room_on_delete() -> None:
    config = Config(api_keys=(KEY,), vad="energy", max_conversation_text_bytes=1_000_000)
    async with serve(config) as base, raw_session(base) as session:
        for i in range(3):
            await session.send(_text_item(f"t{i}", 300_000))
            await session.recv_until("conversation.item.done")
        await session.send({**_text_item("t3", 300_000), "event_id": "evt_over"})
        error = (await session.recv())["error"]
        assert error["code"] == "conversation_text_limit_exceeded"
        assert error["param"] == "item" and error["event_id"] == "evt_over"
        assert "1000000 bytes" in error["message"]
        await session.send({"type": "conversation.item.delete", "item_id": "t0"})
        await session.recv_until("conversation.item.deleted")
        await session.send(_text_item("t3", 300_000))
        done, before = await session.recv_until("conversation.item.done")
        assert done["item"]["id"] == "t3" and before[0]["type"] == "conversation.item.added"


async def test_the_audio_budget_drops_the_oldest_audio_and_keeps_transcripts() -> None:
    config = Config(api_keys=(KEY,), vad="energy", max_conversation_audio_seconds=2.0)
    chunk = base64.b64encode(os.urandom(BYTES_PER_S * 3 // 2)).decode()  # 1.5 s each
    async with serve(config) as base, raw_session(base) as session:
        await _no_vad(session)
        ids = []
        for _ in range(3):
            await session.send({"type": "input_audio_buffer.append", "audio": chunk})
            await session.send({"type": "input_audio_buffer.commit"})
            committed, _ = await session.recv_until("input_audio_buffer.committed")
            ids.append(committed["item_id"])
            await session.recv_until("conversation.item.done")
        kept = []
        for item_id in ids:
            await session.send({"type": "conversation.item.retrieve", "item_id": item_id})
            item = (await session.recv_until("conversation.item.retrieved"))[0]["item"]
            kept.append(len(base64.b64decode(item["content"][0].get("audio", ""))))
        assert kept == [0, 0, BYTES_PER_S * 3 // 2], kept  # 2 s budget: only the newest fits
        # A single item with more audio than the whole budget is refused.
        await session.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_audio", "audio": chunk + chunk}],
                },
            }
        )
        error = (await session.recv_until("error"))[0]["error"]
        assert error["code"] == "conversation_audio_limit_exceeded"
        await alive(session)


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def test_big_appends_and_items_are_bounded_and_given_back() -> None:
    """The defect's own load: RSS after the session is within a few tens of MB of before."""
    stt = FakeSpeechToText()
    engines = fake_engines(stt=stt)
    audio = base64.b64encode(os.urandom(15 * MIB)).decode()
    async with serve(engines=engines) as base:
        async with raw_session(base) as warm:  # first-use allocations are not the session's
            await alive(warm)
        before = _rss()
        async with raw_session(base) as session:
            await _no_vad(session)
            for i in range(30):
                await session.send(_text_item(f"t{i}", 9 * MIB))
            for _ in range(20):
                await session.send({"type": "input_audio_buffer.append", "audio": audio})
                await session.send({"type": "input_audio_buffer.commit"})
            before_updated = await alive(session, "loaded", errors_before=29)
            done = [
                e["item"]["id"] for e in before_updated if e["type"] == "conversation.item.done"
            ]
            errors = [e["error"]["code"] for e in before_updated if e["type"] == "error"]
            # 16 MiB of client text: the first item fits, the others are refused.
            assert errors == ["conversation_text_limit_exceeded"] * 29, errors
            assert len(done) == 1 + 20
            peak = _rss()
            for item_id in done:
                await session.send({"type": "conversation.item.delete", "item_id": item_id})
            await alive(session, "deleted")
        stt.requests.clear()  # the fake's own record of what it heard is not the server's
        del audio
        after = _rss()
    grown_mb = (after - before) / MIB
    print(f"RSS: before {before / MIB:.0f} MiB, peak {peak / MIB:.0f}, after {after / MIB:.0f}")
    assert (peak - before) / MIB < 400, "the bounds did not hold while the session lived"
    assert grown_mb < 80, f"RSS grew by {grown_mb:.0f} MiB and stayed"
