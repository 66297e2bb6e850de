"""The SIP call's receive buffer: in order at once, reordering within a packet, loss counted."""

from __future__ import annotations

from aiortp.packet import RtpPacket

from openrealtime.transports.sip.media import G711, InOrder


def packet(seq: int) -> RtpPacket:
    return RtpPacket(
        payload_type=0,
        sequence_number=seq & 0xFFFF,
        timestamp=160 * seq,
        payload=bytes([seq & 255]),
    )


def feed(buffer: InOrder, seq: int) -> list[tuple[int, int]]:
    """(first payload byte, lost) of every frame one packet releases."""
    _, first = buffer.add(packet(seq))
    frames = ([first] if first is not None else []) + buffer.extra
    buffer.extra.clear()
    return [(f.data[0], f.lost) for f in frames]


def test_packets_in_order_go_at_once() -> None:
    buffer = InOrder()
    assert [feed(buffer, s) for s in range(5)] == [[(s, 0)] for s in range(5)]


def test_a_reordered_packet_waits_for_its_predecessor_only() -> None:
    buffer = InOrder(reorder=1)
    assert feed(buffer, 10) == [(10, 0)]
    assert feed(buffer, 12) == []  # 11 may still come
    assert feed(buffer, 11) == [(11, 0), (12, 0)]
    assert feed(buffer, 11) == []  # a duplicate, too late


def test_a_lost_packet_is_given_up_after_one_more_and_counted() -> None:
    buffer = InOrder(reorder=1)
    feed(buffer, 1)
    assert feed(buffer, 3) == []
    assert feed(buffer, 4) == [(3, 1), (4, 0)]  # 2 is lost: the frame after it says so
    assert feed(buffer, 2) == []  # came too late


def test_telephone_events_take_their_sequence_numbers() -> None:
    buffer = InOrder()
    feed(buffer, 1)
    assert buffer.mark_non_media(2) is None
    assert feed(buffer, 3) == [(3, 0)]


def test_wraparound_and_big_jumps_restart() -> None:
    buffer = InOrder()
    assert feed(buffer, 0xFFFF) == [(0xFF, 0)]
    assert feed(buffer, 0x10000) == [(0, 0)]  # 65535 -> 0
    assert feed(buffer, 500) == [(500 & 255, 0)]  # a new stream, not 499 lost packets


def test_g711_round_trip() -> None:
    pcm = bytes(range(0, 256, 2)) * 5
    for payload_type in (0, 8):
        codec = G711(payload_type)
        assert codec.samples_per_frame == 160 and codec.sample_rate == 8000
        decoded = codec.decode(codec.encode(pcm))
        assert len(decoded) == len(pcm)
