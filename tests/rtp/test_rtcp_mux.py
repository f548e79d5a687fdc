"""rtcp-mux (RFC 5761) in RtpEndpoint over real loopback sockets: no RTCP port bound when the
offer has it, the RTCP socket released when an answer agrees, RTCP out of and into the RTP port."""

from __future__ import annotations

import asyncio
import socket

from gateway.rtp.ports import PortPool
from gateway.rtp.rtcp import RtcpBye, RtcpReceiverReport, RtcpSenderReport, parse_compound
from gateway.rtp.session import RtpSession
from gateway.rtp.transport import RtpEndpoint
from tests.support.harness import free_udp_block


def udp_peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def recv_rtcp(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
    """The next RTCP datagram (second octet 200-204) the socket receives."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            if len(data) > 1 and 200 <= data[1] <= 204:
                return data, addr


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_open_with_rtcp_mux_binds_no_rtcp_port_and_rtcp_uses_the_rtp_port() -> None:
    lo = free_udp_block(8)
    pool = PortPool(lo, lo + 7)
    peer = udp_peer()
    peer_addr = peer.getsockname()
    loop = asyncio.get_running_loop()
    session = RtpSession(now=loop.time(), remote_addr=peer_addr, ssrc=77, rtcp_interval=0.2)
    session.update_remote(peer_addr, "pcmu", 101, 20, rtcp_addr=peer_addr)  # muxed
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session, rtcp_mux=True)
    try:
        assert pool.in_use == 1 and endpoint.rtcp_port is None
        assert bindable(endpoint.port + 1)  # nothing of ours holds the port above
        for _ in range(3):
            endpoint.send_frame(b"\x11" * 160, loop.time())
        data, src = await recv_rtcp(peer)
        assert src == ("127.0.0.1", endpoint.port)  # from the RTP port, to the peer's RTP port
        report = parse_compound(data)[0]
        assert isinstance(report, RtcpSenderReport) and report.ssrc == 77
        # the peer's RTCP, sent to our RTP port, is taken as RTCP (RFC 5761 §4)
        before = session.stats.rtcp_in
        peer.sendto(bytes(RtcpReceiverReport(ssrc=5, reports=[])), ("127.0.0.1", endpoint.port))
        async with asyncio.timeout(2):
            while session.stats.rtcp_in == before:
                await asyncio.sleep(0.005)
        assert session.stats.dropped["unknown_pt"] == 0
    finally:
        await endpoint.aclose()
    while not isinstance(parse_compound((await recv_rtcp(peer))[0])[-1], RtcpBye):
        pass
    assert pool.in_use == 0
    peer.close()


async def test_release_rtcp_after_an_answer_with_rtcp_mux() -> None:
    lo = free_udp_block(8)
    pool = PortPool(lo, lo + 7)
    peer = udp_peer()
    peer_addr = peer.getsockname()
    loop = asyncio.get_running_loop()
    session = RtpSession(now=loop.time(), remote_addr=peer_addr, ssrc=78, rtcp_interval=0.2)
    endpoint = await RtpEndpoint.open(pool, "127.0.0.1", session)  # our offer: both ports
    try:
        assert endpoint.rtcp_port == endpoint.port + 1 and not bindable(endpoint.port + 1)
        session.update_remote(peer_addr, "pcmu", 101, 20, rtcp_addr=peer_addr)
        endpoint.release_rtcp()
        endpoint.release_rtcp()  # twice is harmless
        assert endpoint.rtcp_port is None
        async with asyncio.timeout(2):  # the loop closes a transport's socket on its next turn
            while not bindable(endpoint.port + 1):
                await asyncio.sleep(0.005)
        endpoint.send_frame(None, loop.time())
        _, src = await recv_rtcp(peer)
        assert src == ("127.0.0.1", endpoint.port)
    finally:
        await endpoint.aclose()
    assert pool.in_use == 0 and pool.double_releases == 0
    peer.close()
