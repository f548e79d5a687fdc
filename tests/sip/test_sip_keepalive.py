"""Keep-alives towards trunks (gateway/sip/keepalive.py, issue 15 item 5): the schedule in
simulated time through the sans-I/O endpoint, and real arrivals at a UDP socket and a TCP
server from the whole gateway."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from gateway import metrics
from gateway.sip.events import KeepAliveResult, SipEvent
from gateway.sip.keepalive import CRLF_PING, KeepAliveTarget
from gateway.sip.message import SipRequest, make_response, parse
from gateway.sip.transaction import Address
from gateway.sip.ua import SipEndpoint
from gateway.sip.ua_core import EndpointConfig
from tests.support.gateway import running_gateway

TRUNK = Address("udp", "198.51.100.1", 5060)
TCP_TRUNK = Address("tcp", "198.51.100.2", 5060)


def drain(ep: SipEndpoint) -> list[SipEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def run_until(ep: SipEndpoint, end: float) -> list[tuple[float, bytes, Address]]:
    """Fire the endpoint's timers up to `end`; what it sent, with the time."""
    sent: list[tuple[float, bytes, Address]] = []
    while (at := ep.get_timer()) is not None and at <= end:
        ep.handle_timer(at)
        sent += [(at, data, addr) for data, addr in ep.messages_to_send()]
    return sent


def test_options_pings_on_schedule_answered_then_timing_out() -> None:
    ep = SipEndpoint(EndpointConfig("192.0.2.10", 5060))
    ep.set_keepalives([KeepAliveTarget("carrier", "options", 5.0, TRUNK, "sip:198.51.100.1")], 0)
    sent = run_until(ep, 0.0)
    [(t0, first, addr)] = sent
    assert (t0, addr) == (0.0, TRUNK)
    request = parse(first)
    assert isinstance(request, SipRequest) and request.method == "OPTIONS"
    assert request.uri == "sip:198.51.100.1"
    ep.receive(make_response(request, 200, "OK", to_tag="t").serialize(), TRUNK, 0.05)
    assert drain(ep) == [KeepAliveResult("carrier", "ok", 200, False)]
    # then every 5 s on the grid; unanswered ones time out (timer F, 32 s) and are reported
    # once as a change, then counted; the schedule goes on regardless
    first_sends: dict[
        bytes, tuple[float, bytes]
    ] = {}  # by CSeq: retransmissions (timer E) left out
    for t, d, _ in run_until(ep, 60.0):
        cseq = re.search(rb"CSeq: (\d+)", d)
        assert cseq is not None
        first_sends.setdefault(cseq.group(1), (t, d))
    pings = [t for t, _ in first_sends.values()]
    assert pings == [5.0 * i for i in range(1, 13)]
    events = drain(ep)
    timeouts = [e for e in events if isinstance(e, KeepAliveResult)]
    assert timeouts[0] == KeepAliveResult("carrier", "timeout", 0, True)
    assert all(e.result == "timeout" and not e.changed for e in timeouts[1:])
    # a 503 is an answer, but a failing one
    last = parse(list(first_sends.values())[-1][1])
    assert isinstance(last, SipRequest)
    ep.receive(make_response(last, 503, "Unavailable", to_tag="t").serialize(), TRUNK, 60.1)
    assert drain(ep) == [KeepAliveResult("carrier", "error", 503, False)]


def test_crlf_pings_and_a_late_loop_skips_missed_ones() -> None:
    ep = SipEndpoint(EndpointConfig("192.0.2.10", 5060))
    ep.set_keepalives([KeepAliveTarget("pbx", "crlf", 10.0, TCP_TRUNK, "sip:pbx;transport=tcp")], 0)
    sent = run_until(ep, 20.0)
    assert sent == [(t, CRLF_PING, TCP_TRUNK) for t in (0.0, 10.0, 20.0)]
    ep.handle_timer(55.0)  # the loop was stalled: one ping now, the next on the grid
    assert ep.messages_to_send() == [(CRLF_PING, TCP_TRUNK)]
    assert ep.get_timer() == 60.0
    assert [e.result for e in drain(ep) if isinstance(e, KeepAliveResult)] == ["sent"] * 4


def _counted(result: str) -> float:
    value = metrics.SIP_KEEPALIVES.labels(result=result)._value.get()
    return float(value)


async def test_a_gateway_pings_a_udp_and_a_tcp_trunk(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[tuple[bytes, tuple[str, int], float]] = asyncio.Queue()

    class Trunk(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.put_nowait((data, addr, loop.time()))  # stamped on arrival

    udp, _ = await loop.create_datagram_endpoint(Trunk, local_addr=("127.0.0.1", 0))
    udp_port = udp.get_extra_info("sockname")[1]
    arrivals: dict[str, list[float]] = {"udp": [], "tcp": []}

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            arrivals["tcp"] += [loop.time()] * data.count(b"\r\n\r\n")

    server = await asyncio.start_server(on_tcp, "127.0.0.1", 0)
    tcp_port = server.sockets[0].getsockname()[1]
    trunks = {
        "udp": {
            "uri": f"sip:127.0.0.1:{udp_port}",
            "keepalive": "options",
            "keepalive_interval": 5,
        },
        "tcp": {
            "uri": f"sip:127.0.0.1:{tcp_port};transport=tcp",
            "keepalive": "crlf",
            "keepalive_interval": 5,
        },
    }
    ok_before = _counted("ok")
    try:
        async with running_gateway(trunks=trunks):
            while len(arrivals["udp"]) < 2 or len(arrivals["tcp"]) < 2:
                try:
                    data, peer, arrived = await asyncio.wait_for(received.get(), 12)
                except TimeoutError:
                    break
                request = parse(data)
                assert isinstance(request, SipRequest) and request.method == "OPTIONS"
                if request.cseq.seq == len(arrivals["udp"]):
                    continue  # a retransmission of one already answered
                arrivals["udp"].append(arrived)
                udp.sendto(make_response(request, 200, "OK", to_tag="k").serialize(), peer)
            await asyncio.sleep(0.2)
    finally:
        udp.close()
        server.close()
        await server.wait_closed()
    for kind, times in arrivals.items():
        assert len(times) >= 2, (kind, arrivals)
        assert 4.5 <= times[1] - times[0] <= 7.0, (kind, times)  # 5 s, on a loaded machine
    assert _counted("ok") - ok_before >= 2
    assert re.match(r"^\d", str(ok_before))  # the counter exists (bounded label)
