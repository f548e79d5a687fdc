"""The gateway's ICE gathering: loopback candidate, UDP port range, NAT 1:1, explicit servers."""

from __future__ import annotations

import random
import socket
from types import SimpleNamespace

import pytest
from aioice.candidate import Candidate, candidate_priority
from aiortc import RTCPeerConnection

from gateway.errors import NoFreePort
from gateway.secret import Secret
from gateway.webrtc.ice import IcePolicy, _nat_candidates, pregather


def _free_range(width: int) -> tuple[int, int]:
    """A run of `width` consecutive UDP ports on 127.0.0.1 that were free a moment ago."""
    for _ in range(50):
        lo = random.randrange(40000, 60000 - width)
        socks = []
        try:
            for port in range(lo, lo + width):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return lo, lo + width - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range found")


def _candidates(pc: RTCPeerConnection) -> list[Candidate]:
    out: list[Candidate] = []
    for t in pc.getTransceivers():
        out += t.receiver.transport.transport.iceGatherer._connection.local_candidates
    return out


async def _offer(policy: IcePolicy) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(policy.configuration())
    pc.addTransceiver("audio")
    await pregather(pc, policy)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, str(pc.localDescription.sdp)


async def test_loopback_candidate_in_port_range() -> None:
    lo, hi = _free_range(4)
    policy = IcePolicy(include_loopback=True, host_addresses=(), port_range=(lo, hi))
    pc, sdp = await _offer(policy)
    try:
        (candidate,) = _candidates(pc)
        assert candidate.host == "127.0.0.1" and candidate.type == "host"
        assert lo <= candidate.port <= hi
        assert f"127.0.0.1 {candidate.port} typ host" in sdp
    finally:
        await pc.close()


async def test_full_port_range_is_an_error() -> None:
    lo, hi = _free_range(2)
    held = []
    try:
        for port in (lo, hi):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            held.append(s)
        policy = IcePolicy(host_addresses=("127.0.0.1",), port_range=(lo, hi))
        pc = RTCPeerConnection(policy.configuration())
        pc.addTransceiver("audio")
        with pytest.raises(NoFreePort):
            await pregather(pc, policy)
        await pc.close()
    finally:
        for s in held:
            s.close()


def test_nat_1to1_adds_srflx_twins() -> None:
    def protocol(host: str, port: int) -> SimpleNamespace:
        cand = Candidate("f", 1, "udp", 1, host, port, "host")
        return SimpleNamespace(local_candidate=cand)

    protocols = [protocol("10.1.2.3", 40002), protocol("127.0.0.1", 40004), protocol("fd00::2", 9)]
    (twin,) = _nat_candidates(protocols, "203.0.113.5")  # type: ignore[arg-type]
    assert (twin.host, twin.port, twin.type) == ("203.0.113.5", 40002, "srflx")
    assert (twin.related_address, twin.related_port) == ("10.1.2.3", 40002)
    assert twin.priority == candidate_priority(1, "srflx") < candidate_priority(1, "host")
    assert "203.0.113.5 40002 typ srflx raddr 10.1.2.3 rport 40002" in twin.to_sdp()
    assert _nat_candidates(protocols, "") == []  # type: ignore[arg-type]


def test_configuration_is_explicit_and_carries_turn_credentials() -> None:
    assert IcePolicy().configuration().iceServers == []  # never aiortc's public STUN default
    policy = IcePolicy(
        servers=("stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"),
        username="alice",
        credential=Secret("s3cret"),
    )
    stun, turn = policy.configuration().iceServers
    assert stun.urls == "stun:stun.example.org:3478" and stun.username is None
    assert turn.username == "alice" and turn.credential == "s3cret"
    assert "s3cret" not in repr(policy)
