"""The per-call output audio buffer: exact play positions and reports (runtime/playback.py)."""

from __future__ import annotations

from openrealtime.core import backend_events as be
from openrealtime.runtime.playback import PlaybackBuffer


def recording() -> tuple[PlaybackBuffer, list[be.BackendEvent]]:
    reports: list[be.BackendEvent] = []
    return PlaybackBuffer(reports.append), reports


def test_reads_are_exact_frames_padded_with_silence() -> None:
    buffer, reports = recording()
    assert buffer.read(4) == b"\0\0\0\0"
    assert buffer.idle
    buffer.play("r1", "i1", b"\x01\x00\x02\x00\x03\x00")
    assert buffer.queued_bytes == 6
    assert buffer.read(4) == b"\x01\x00\x02\x00"
    assert reports == [be.PlaybackStarted("r1")]
    assert buffer.read(4) == b"\x03\x00\0\0"
    assert buffer.idle and buffer.queued_bytes == 0
    assert reports == [be.PlaybackStarted("r1")]  # not drained: the response may go on


def test_drained_when_the_end_marker_is_reached() -> None:
    buffer, reports = recording()
    buffer.play("r1", "i1", b"\x01\x00" * 2)
    buffer.end("r1")
    buffer.play("r2", "i2", b"\x02\x00" * 2)
    buffer.end("r2")
    assert buffer.read(4) == b"\x01\x00" * 2
    # The marker right after a full frame is consumed with it: stopped is not a frame late.
    assert reports == [be.PlaybackStarted("r1"), be.PlaybackDrained("r1")]
    assert buffer.read(8) == b"\x02\x00" * 2 + b"\0" * 4
    assert reports[2:] == [be.PlaybackStarted("r2"), be.PlaybackDrained("r2")]


def test_end_of_a_response_with_no_audio_reports_nothing() -> None:
    buffer, reports = recording()
    buffer.end("r1")
    buffer.read(4)
    assert reports == []


def test_clear_reports_the_played_bytes_of_each_cut_item() -> None:
    buffer, reports = recording()
    buffer.play("r1", "i1", b"\x01\x00" * 5)
    buffer.play("r1", "i2", b"\x02\x00" * 5)
    buffer.end("r1")
    buffer.play("r2", "i3", b"\x03\x00" * 5)
    buffer.read(14)  # all of i1 (10 bytes) and 4 bytes of i2
    cleared = buffer.clear()
    assert cleared == [
        be.PlaybackCleared("r1", True, (("i2", 4),)),
        be.PlaybackCleared("r2", False, (("i3", 0),)),
    ]
    assert buffer.idle and buffer.queued_bytes == 0
    assert buffer.read(4) == b"\0" * 4
    assert reports == [be.PlaybackStarted("r1")]  # no drain after a clear


def test_clear_of_a_fully_played_but_unfinished_response_names_it_without_items() -> None:
    buffer, _ = recording()
    buffer.play("r1", "i1", b"\x01\x00")
    buffer.read(2)
    assert buffer.clear() == [be.PlaybackCleared("r1", True, ())]
    assert buffer.clear() == []


def test_a_paused_buffer_reads_silence_and_consumes_nothing() -> None:
    buffer, reports = recording()
    frames: list[bytes] = []
    buffer.on_played = frames.append
    buffer.play("r1", "i1", b"\x01\x00" * 6)
    assert buffer.read(4) == b"\x01\x00" * 2
    buffer.pause()
    assert buffer.paused
    buffer.play("r1", "i1", b"\x02\x00" * 2)  # generated during the pause: queued behind
    buffer.end("r1")
    for _ in range(3):
        assert buffer.read(4) == b"\0" * 4
    assert buffer.queued_bytes == 12
    assert reports == [be.PlaybackStarted("r1")]
    assert frames == [b"\x01\x00" * 2]  # silent frames never reach the echo canceller
    buffer.resume()
    assert not buffer.paused
    assert buffer.read(4) == b"\x01\x00" * 2
    assert buffer.read(4) == b"\x01\x00" * 2
    assert buffer.read(8) == b"\x02\x00" * 2 + b"\0" * 4
    # Every byte played exactly once, across the pause; drained only after it.
    assert b"".join(frames) == b"\x01\x00" * 6 + b"\x02\x00" * 2 + b"\0" * 4
    assert reports == [be.PlaybackStarted("r1"), be.PlaybackDrained("r1")]


def test_a_pause_holds_the_end_marker_too() -> None:
    buffer, reports = recording()
    buffer.play("r1", "i1", b"\x01\x00" * 2)
    buffer.end("r1")
    buffer.pause()
    buffer.read(4)
    assert reports == []  # not started, not drained: nothing was heard
    buffer.resume()
    buffer.read(4)
    assert reports == [be.PlaybackStarted("r1"), be.PlaybackDrained("r1")]


def test_clear_while_paused_reports_where_the_pause_began_and_unpauses() -> None:
    buffer, reports = recording()
    buffer.play("r1", "i1", b"\x01\x00" * 10)
    buffer.read(6)
    buffer.pause()
    for _ in range(5):
        buffer.read(6)
    buffer.play("r1", "i1", b"\x02\x00" * 10)
    assert buffer.clear() == [be.PlaybackCleared("r1", True, (("i1", 6),))]
    assert not buffer.paused
    buffer.play("r2", "i2", b"\x03\x00")
    assert buffer.read(2) == b"\x03\x00"  # the next answer plays at once
    assert reports == [be.PlaybackStarted("r1"), be.PlaybackStarted("r2")]
