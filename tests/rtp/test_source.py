"""Which source an RtpSession takes media from (strict source, probation, never switching away
from a source still sending), RTCP under the same rules, and the no-RTP timeout counted from the
answer. Pure sans-I/O, simulated time: every call gets `now`."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rtp.packet import RtpHeaderWriter
from gateway.rtp.rtcp import RtcpReceiverReport, serialize_compound
from gateway.rtp.session import (
    PROBATION_PACKETS,
    Address,
    MediaStarted,
    MediaTimedOut,
    RemoteLatched,
    RtpSession,
)

SDP: Address = ("198.51.100.1", 20000)  # what the far end's SDP names
NAT: Address = ("203.0.113.7", 61000)  # where its media comes from behind NAT
SIGNALLING_IP = NAT[0]  # the INVITE came from the NAT's public address too
STRANGER: Address = ("192.0.2.66", 40000)  # a scanner spraying the RTP range


class Sender:
    """One RTP stream: its own SSRC and sequence numbers; each frame a distinct byte."""

    def __init__(self, ssrc: int, seq: int = 1000, fill: int = 0x10) -> None:
        self.writer = RtpHeaderWriter(ssrc)
        self.seq = seq
        self.ts = 0
        self.fill = fill

    def next(self, pt: int = 0) -> bytes:
        data = self.writer.build(pt, False, self.seq & 0xFFFF, self.ts, bytes([self.fill]) * 160)
        self.seq += 1
        self.ts += 160
        return data


def session(**kwargs: object) -> RtpSession:
    args: dict[str, object] = {"now": 0.0, "remote_addr": SDP, "ssrc": 0xB, **kwargs}
    return RtpSession(**args)  # type: ignore[arg-type]


def drain(s: RtpSession) -> list[object]:
    out = []
    while (event := s.next_event()) is not None:
        out.append(event)
    return out


def played(s: RtpSession, now: float, frames: int = 10) -> set[int]:
    """The first bytes of the frames the session plays next: the senders' fill bytes, their
    concealment (the caller's 0x22 fades to 0x28, 0x31, 0x40), silence (0xFF)."""
    return {frame[0] for k in range(frames) if (frame := s.read_frame(now + 0.02 * k))}


def test_the_sdp_address_is_learned_at_once() -> None:
    s = session()
    s.receive_datagram(Sender(1).next(), SDP, 0.0)
    assert s.latched == SDP and drain(s) == [RemoteLatched(SDP), MediaStarted()]
    assert s.stats.dropped["probation"] == 0


def test_a_stranger_spraying_before_and_during_the_call_never_gets_the_media() -> None:
    s = session(signalling_ip=SIGNALLING_IP)
    attacker, caller = Sender(0xBAD, fill=0xE6), Sender(0xCA11, fill=0x22)
    now = 0.0
    for _ in range(50):  # a well-formed, in-sequence stream, before the caller's first packet
        s.receive_datagram(attacker.next(), STRANGER, now)
        now += 0.02
    assert s.latched is None and s.remote_addr == SDP  # we still send where the SDP says
    for _ in range(50):  # then both at once
        s.receive_datagram(attacker.next(), STRANGER, now)
        s.receive_datagram(caller.next(), SDP, now + 0.001)
        now += 0.02
    assert s.latched == SDP and s.remote_addr == SDP
    assert s.stats.dropped["wrong_source"] == 100 and s.stats.relatches == 0
    heard = played(s, now)
    assert 0x22 in heard and 0xE6 not in heard  # only the caller's audio plays
    assert s.last_refused == STRANGER


def test_behind_nat_the_signalling_ip_is_learned_after_probation() -> None:
    s = session(remote_addr=("10.0.0.5", 4000), signalling_ip=SIGNALLING_IP)
    phone = Sender(0xCA11, fill=0x22)
    for k in range(PROBATION_PACKETS - 1):
        s.receive_datagram(phone.next(), NAT, 0.02 * k)
        assert s.latched is None and s.remote_addr == ("10.0.0.5", 4000)
    s.receive_datagram(phone.next(), NAT, 0.1)
    assert s.latched == NAT and s.remote_addr == NAT  # symmetric RTP: we answer the NAT
    assert s.stats.dropped["probation"] == PROBATION_PACKETS - 1
    assert drain(s) == [RemoteLatched(NAT), MediaStarted()]
    s.receive_datagram(phone.next(), NAT, 0.12)
    assert 0x22 in played(s, 0.2)


def test_probation_needs_one_ssrc_and_consecutive_sequence_numbers() -> None:
    s = session(signalling_ip=SIGNALLING_IP)
    writer = RtpHeaderWriter(5)
    other = RtpHeaderWriter(6)
    # a gap, a repeat, another SSRC each start the count again
    for data in (
        writer.build(0, False, 10, 0, b"\xff" * 160),
        writer.build(0, False, 12, 0, b"\xff" * 160),
        writer.build(0, False, 12, 0, b"\xff" * 160),
        other.build(0, False, 13, 0, b"\xff" * 160),
        writer.build(0, False, 14, 0, b"\xff" * 160),
    ):
        s.receive_datagram(data, NAT, 0.0)
    assert s.latched is None and s.stats.dropped["probation"] == 5
    # two sources interleaved keep resetting each other: neither is learned
    a, b = Sender(7), Sender(8)
    for k in range(10):
        s.receive_datagram(a.next(), NAT, 0.1 + 0.02 * k)
        s.receive_datagram(b.next(), (NAT[0], 1), 0.1 + 0.02 * k)
    assert s.latched is None
    # sequence numbers wrap: 65535 then 0 is consecutive
    c = Sender(9, seq=65535 - PROBATION_PACKETS + 2)
    for k in range(PROBATION_PACKETS):
        s.receive_datagram(c.next(), NAT, 1.0 + 0.02 * k)
    assert s.latched == NAT


def test_never_switch_away_from_a_source_still_sending() -> None:
    s = session(signalling_ip=SIGNALLING_IP, relatch_after=2.0)
    phone, intruder = Sender(1, fill=0x22), Sender(2, fill=0xE6)
    now = 0.0
    for _ in range(PROBATION_PACKETS):
        s.receive_datagram(phone.next(), NAT, now)
        now += 0.02
    assert s.latched == NAT
    for _ in range(200):  # 4 s of a competing in-sequence stream from the same (NAT) IP
        s.receive_datagram(intruder.next(), (NAT[0], 2222), now)
        s.receive_datagram(phone.next(), NAT, now + 0.001)
        now += 0.02
    assert s.latched == NAT and s.stats.dropped["competing_source"] == 200
    assert s.stats.relatches == 0
    # the phone falls silent (its NAT rebinds): only after relatch_after may a new source take
    # over, and then only after probation
    silent_from = now
    while now < silent_from + 2.0:
        s.receive_datagram(intruder.next(), (NAT[0], 2222), now)
        now += 0.02
    assert s.latched == NAT
    for _ in range(PROBATION_PACKETS):
        s.receive_datagram(intruder.next(), (NAT[0], 2222), now)
        now += 0.02
    assert s.latched == (NAT[0], 2222) and s.stats.relatches == 1


def test_the_sdp_address_takes_over_from_a_learned_source() -> None:
    s = session(signalling_ip=SIGNALLING_IP)
    nat = Sender(1)
    for k in range(PROBATION_PACKETS + 5):
        s.receive_datagram(nat.next(), NAT, 0.02 * k)
    assert s.latched == NAT
    s.receive_datagram(Sender(2).next(), SDP, 0.3)  # signalling is the authority
    assert s.latched == SDP and s.stats.relatches == 1


def test_without_strict_source_any_ip_may_be_learned_but_only_after_probation() -> None:
    s = session(strict_source=False)
    far = Sender(1, fill=0x22)
    s.receive_datagram(far.next(), STRANGER, 0.0)
    assert s.latched is None and s.stats.dropped["probation"] == 1
    for k in range(1, PROBATION_PACKETS):
        s.receive_datagram(far.next(), STRANGER, 0.02 * k)
    assert s.latched == STRANGER
    # and it is not taken away while it sends
    other = Sender(2)
    for k in range(10):
        s.receive_datagram(other.next(), ("192.0.2.99", 1), 0.1 + 0.02 * k)
        s.receive_datagram(far.next(), STRANGER, 0.1 + 0.02 * k)
    assert s.latched == STRANGER and s.stats.dropped["competing_source"] == 10


def test_a_new_sdp_address_is_expected_from_then_on_and_a_refresh_keeps_the_source() -> None:
    s = session(signalling_ip=SIGNALLING_IP)
    nat = Sender(1)
    for k in range(PROBATION_PACKETS):
        s.receive_datagram(nat.next(), NAT, 0.02 * k)
    assert s.latched == NAT
    # a session refresh (re-INVITE/UPDATE with the same SDP) keeps the learned source
    s.update_remote(SDP, "pcmu", 101, 20, rtcp_addr=(SDP[0], SDP[1] + 1))
    assert s.latched == NAT and s.remote_addr == NAT
    # the media moved: the new address is expected, the old one's IP is not any more...
    moved: Address = ("198.51.100.200", 30000)
    s.update_remote(moved, "pcmu", 101, 20)
    assert s.latched is None and s.remote_addr == moved
    assert s.expected_ips == {moved[0], SIGNALLING_IP, f"::ffff:{moved[0]}", "::ffff:203.0.113.7"}
    old_ip = Sender(3)
    for k in range(PROBATION_PACKETS):
        s.receive_datagram(old_ip.next(), (SDP[0], 5000), 1.0 + 0.02 * k)
    assert s.latched is None and s.stats.dropped["wrong_source"] == PROBATION_PACKETS
    s.receive_datagram(Sender(4).next(), moved, 1.1)
    assert s.latched == moved


def test_sdp_addresses_compare_in_the_form_sockets_report() -> None:
    s = session(remote_addr=("2001:DB8:0:0::1", 4000), signalling_ip="2001:db8::0:7")
    assert s.expected_ips == {"2001:db8::1", "2001:db8::7"}
    s.receive_datagram(Sender(1).next(), ("2001:db8::7", 1), 0.0)
    assert s.stats.dropped["probation"] == 1  # not "wrong_source"
    s.receive_datagram(Sender(2).next(), ("2001:db8::1", 4000), 0.0)
    assert s.latched == ("2001:db8::1", 4000)  # the SDP's exact address, at once


def rtcp_rr(ssrc: int = 1) -> bytes:
    return serialize_compound([RtcpReceiverReport(ssrc=ssrc, reports=[])])


def test_rtcp_follows_the_same_source_rules() -> None:
    s = session(remote_addr=("10.0.0.5", 4000), signalling_ip=SIGNALLING_IP)
    s.receive_rtcp(rtcp_rr(), (STRANGER[0], STRANGER[1] + 1), 0.0)
    assert s.stats.dropped["rtcp_wrong_source"] == 1 and s.remote_rtcp_addr == ("10.0.0.5", 4001)
    s.receive_rtcp(rtcp_rr(), (NAT[0], 61001), 0.0)  # before a source: the expected IPs
    assert s.remote_rtcp_addr == (NAT[0], 61001)
    phone = Sender(1)
    for k in range(PROBATION_PACKETS):
        s.receive_datagram(phone.next(), NAT, 0.02 * k)
    s.receive_rtcp(rtcp_rr(), ("10.0.0.5", 4001), 0.1)  # once learned: the source's IP only
    s.receive_rtcp(rtcp_rr(), (STRANGER[0], 9), 0.1)
    assert s.stats.dropped["rtcp_wrong_source"] == 3 and s.remote_rtcp_addr == (NAT[0], 61001)
    # RTCP multiplexed on the RTP port (RFC 5761) goes through the same check
    s.receive_datagram(rtcp_rr(), STRANGER, 0.2)
    assert s.stats.dropped["rtcp_wrong_source"] == 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["caller", "stranger", "stranger_seq"]),
            st.integers(0, 0xFFFF),
            st.integers(0, 2**32 - 1),
            st.sampled_from([0, 101, 13]),
        ),
        max_size=80,
    ),
    st.booleans(),
)
def test_a_stranger_never_becomes_the_source_whatever_it_sends(
    steps: list[tuple[str, int, int, int]], nat: bool
) -> None:
    """Any mix of a stranger's packets (random or in-sequence headers, any payload type) with the
    caller's: the stranger is never learned, never sent to, never played."""
    caller_addr = NAT if nat else SDP
    s = session(signalling_ip=SIGNALLING_IP, cn_pt=13)
    caller, stranger = Sender(0xCA11, fill=0x22), Sender(0xBAD, fill=0xE6)
    writer = RtpHeaderWriter(0xBAD)
    for k, (who, seq, ts, pt) in enumerate(steps):
        now = 0.02 * k
        if who == "caller":
            s.receive_datagram(caller.next(), caller_addr, now)
        elif who == "stranger_seq":
            s.receive_datagram(stranger.next(pt), STRANGER, now)
        else:
            s.receive_datagram(writer.build(pt, False, seq, ts, b"\xe6" * 160), STRANGER, now)
        assert s.latched in (None, caller_addr)
        assert s.remote_addr in (SDP, caller_addr)
        frame = s.read_frame(now)
        assert frame is None or 0xE6 not in frame  # the stranger's fill byte


def test_media_timeout_runs_from_the_answer_when_no_packet_ever_comes() -> None:
    s = session(now=100.0, media_timeout=30.0)
    timer = s.get_timer()
    assert timer is not None and timer <= 130.0
    for t in itertools.takewhile(lambda t: t < 130.0, itertools.count(100.0, 5.0)):
        s.handle_timer(t)
    assert MediaTimedOut() not in drain(s)
    s.handle_timer(130.0)
    assert drain(s) == [MediaTimedOut()]
    s.handle_timer(200.0)
    assert drain(s) == []  # once
    # media after the timeout starts again (the leg has ended the call by then)
    s.receive_datagram(Sender(1).next(), SDP, 201.0)
    assert MediaStarted() in drain(s)


def test_media_timeout_from_the_last_packet_once_media_flowed() -> None:
    s = session(now=0.0, media_timeout=5.0)
    s.receive_datagram(Sender(1).next(), SDP, 4.0)
    drain(s)
    s.handle_timer(8.9)
    assert drain(s) == []
    assert s.get_timer() == pytest.approx(9.0)
    s.handle_timer(9.0)
    assert drain(s) == [MediaTimedOut()]


def test_hold_pauses_the_media_timeout_and_resume_restarts_it() -> None:
    s = session(now=0.0, media_timeout=5.0)
    s.timer_dirty = False
    s.set_media_timeout(None, 3.0)  # hold (sendonly/inactive)
    assert s.timer_dirty
    s.handle_timer(100.0)
    assert MediaTimedOut() not in drain(s)
    s.set_media_timeout(5.0, 100.0)  # resume: counted afresh from now
    assert s.get_timer() == pytest.approx(min(105.0, s._next_rtcp))
    s.handle_timer(104.9)
    assert MediaTimedOut() not in drain(s)
    s.handle_timer(105.0)
    assert drain(s) == [MediaTimedOut()]


def test_no_media_timeout_when_disabled() -> None:
    s = session(now=0.0, media_timeout=None)
    s.handle_timer(10_000.0)
    assert MediaTimedOut() not in drain(s)
