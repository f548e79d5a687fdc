"""RFC 4733: sipp's real captures give one digit per event, with and without marker and end."""

from __future__ import annotations

import pytest

from gateway.errors import DtmfError, RtpParseError
from gateway.rtp.dtmf import DtmfReceiver, DtmfSender, TelephoneEvent
from gateway.rtp.packet import RtpPacket
from tests.support.pcap import read_pcap_udp, sipp_capture
from tests.support.rtp import vector

CAPTURES = {str(d): f"dtmf_2833_{d}.pcap" for d in range(10)}
CAPTURES |= {"*": "dtmf_2833_star.pcap", "#": "dtmf_2833_pound.pcap"}


def capture_packets(digit: str) -> list[tuple[float, RtpPacket]]:
    pcap = read_pcap_udp(sipp_capture(CAPTURES[digit]))
    return [(p.time, RtpPacket.parse(p.payload)) for p in pcap]


def feed(receiver: DtmfReceiver, packets: list[tuple[float, RtpPacket]]) -> list[str]:
    digits = []
    last = 0.0
    for t, packet in packets:
        event = TelephoneEvent.parse(packet.payload)
        digits += [d.digit for d in receiver.receive(packet.timestamp, event, t)]
        last = t
    timer = receiver.get_timer()
    if timer is not None:
        assert timer > last
        digits += [d.digit for d in receiver.handle_timer(timer)]
    return digits


def test_event_payload_round_trips() -> None:
    for name in ("rtp_event_start.bin", "rtp_event_end.bin"):
        payload = RtpPacket.parse(vector(name)).payload
        assert TelephoneEvent.parse(payload).serialize() == payload
    end = TelephoneEvent.parse(RtpPacket.parse(vector("rtp_event_end.bin")).payload)
    assert (end.event, end.end, end.duration, end.digit) == (1, True, 2240, "1")
    with pytest.raises(RtpParseError):
        TelephoneEvent.parse(b"\x01\x80")


@pytest.mark.parametrize("digit", sorted(CAPTURES))
def test_sipp_capture_gives_exactly_one_digit(digit: str) -> None:
    packets = capture_packets(digit)
    ends = [p for _, p in packets if TelephoneEvent.parse(p.payload).end]
    assert len(ends) == 3  # the capture carries the three redundant end packets
    receiver = DtmfReceiver()
    assert feed(receiver, packets) == [digit]


@pytest.mark.parametrize("digit", ["1", "#"])
def test_marker_bit_cleared_changes_nothing(digit: str) -> None:
    packets = capture_packets(digit)
    for _, packet in packets:
        packet.marker = False
    assert feed(DtmfReceiver(), packets) == [digit]


@pytest.mark.parametrize("digit", ["5", "*"])
def test_end_packets_lost_ends_by_timeout(digit: str) -> None:
    packets = [(t, p) for t, p in capture_packets(digit) if not TelephoneEvent.parse(p.payload).end]
    receiver = DtmfReceiver(timeout=0.2)
    got = []
    for t, packet in packets:
        got += receiver.receive(packet.timestamp, TelephoneEvent.parse(packet.payload), t)
    assert got == []
    last = packets[-1][0]
    assert receiver.handle_timer(last + 0.1) == []  # not yet
    (result,) = receiver.handle_timer(last + 0.2)
    assert result.digit == digit and result.ended_by == "timeout"
    assert result.duration_ms == TelephoneEvent.parse(packets[-1][1].payload).duration // 8


def test_late_end_packet_after_timeout_gives_no_second_digit() -> None:
    packets = capture_packets("7")
    receiver = DtmfReceiver(timeout=0.05)
    got = []
    for t, packet in packets[:-3]:
        got += receiver.receive(packet.timestamp, TelephoneEvent.parse(packet.payload), t)
        got += receiver.handle_timer(t)
    got += receiver.handle_timer(packets[-4][0] + 0.06)
    for t, packet in packets[-3:]:
        got += receiver.receive(packet.timestamp, TelephoneEvent.parse(packet.payload), t + 0.1)
    assert [d.digit for d in got] == ["7"]


def test_new_event_without_end_finishes_the_previous_one() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(1000, TelephoneEvent(3, False, 10, 160), 0.0) == []
    (first,) = receiver.receive(3000, TelephoneEvent(4, False, 10, 160), 0.05)
    assert (first.digit, first.ended_by) == ("3", "next")
    (second,) = receiver.receive(3000, TelephoneEvent(4, True, 10, 800), 0.1)
    assert second.digit == "4" and second.duration_ms == 100


def test_non_digit_events_are_ignored() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(1, TelephoneEvent(16, True, 10, 800), 0.0) == []  # flash
    assert receiver.ignored == 1 and receiver.get_timer() is None


def test_sender_packet_sequence() -> None:
    sender = DtmfSender(ptime_ms=20)
    sender.queue("9", 100)
    packets = []
    ts = 5000
    while sender.active:
        packets.append(sender.next_packet(ts))
        ts += 160
    events = [p for p in packets if p is not None]
    assert [p[2] for p in events] == [5000] * len(events)  # one timestamp per event
    assert [p[1] for p in events] == [True] + [False] * (len(events) - 1)
    parsed = [TelephoneEvent.parse(p[0]) for p in events]
    assert [e.event for e in parsed] == [9] * len(parsed)
    assert [e.duration for e in parsed] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in parsed] == [False] * 4 + [True] * 3
    assert packets[len(events) :] == [None] * (len(packets) - len(events))  # the gap


def test_sender_to_receiver_gives_each_queued_digit_once() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    for digit in "12#A":
        sender.queue(digit, 80)
    got = []
    ts, now = 0, 0.0
    while sender.active:
        packet = sender.next_packet(ts)
        if packet is not None:
            got += receiver.receive(packet[2], TelephoneEvent.parse(packet[0]), now)
        ts += 160
        now += 0.02
    assert [d.digit for d in got] == list("12#A")
    assert all(d.duration_ms == 80 for d in got)


def test_sender_refuses_non_digits() -> None:
    with pytest.raises(DtmfError):
        DtmfSender().queue("x")
    with pytest.raises(DtmfError):
        DtmfSender().queue("12")
