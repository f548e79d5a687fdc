"""Receive cost per RTP packet on uvloop (issue 20): the loop's reader vs the clock tick's poll.

N `RtpEndpoint`s on a 20 ms `MediaClock` (one ticker each, as SIP legs are); a sender process
sends each endpoint one 172-octet PCMU packet every 20 ms, the calls spread over the period as
real phones are. The process CPU time of the receiving process over `--seconds`, divided by the
packets received, is the figure: it includes the loop's wake-ups, the sockets' reads, the session
and the clock. `--mode loop`: the loop reads the sockets (the ticks do nothing else); `--mode
poll`: each tick polls its endpoint. On a tree without `RtpEndpoint.poll` (the baseline), only
`loop` runs (there: the datagram transport's callback).

Run: .venv/bin/python benchmarks/bench_rx.py --calls 200 --mode poll
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import uvloop

from gateway.media.clock import MediaClock, Outbox
from gateway.rtp.ports import PortPool
from gateway.rtp.session import RtpSession
from gateway.rtp.transport import RtpEndpoint

SENDER = r"""
import socket, sys, time
from gateway.rtp.session import RtpSession
ports = [int(p) for p in sys.argv[1].split(",")]
seconds = float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sessions = [RtpSession(now=0.0, remote_addr=("127.0.0.1", p), ssrc=p) for p in ports]
payload = bytes(range(160))
start = time.monotonic()
k = 0
n = len(ports)
while time.monotonic() - start < seconds:
    # call i sends at i/n of each 20 ms period
    due = start + 0.02 * (k // n) + 0.02 * (k % n) / n
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s = sessions[k % n]
    sock.sendto(s.packetize(payload, due) or b"", s.remote_addr)
    k += 1
"""


class _Leg:
    def __init__(self, endpoint: RtpEndpoint, poll: bool) -> None:
        self.endpoint = endpoint
        self.poll = poll

    def tick(self, now: float, deadline: float, outbox: Outbox) -> None:
        if self.poll:
            self.endpoint.poll(now)
        self.endpoint.session.read_frame(now)


async def run(calls: int, mode: str, seconds: float, base: int) -> None:
    loop = asyncio.get_running_loop()
    pool = PortPool(base, base + 2 * calls + 40)
    endpoints = [
        await RtpEndpoint.open(
            pool, "127.0.0.1", RtpSession(now=loop.time(), remote_addr=("127.0.0.1", 9))
        )
        for _ in range(calls)
    ]
    clock = MediaClock(loop, 20, slots=4)
    for endpoint in endpoints:
        if mode == "poll":
            endpoint.start_polling()
        clock.add(_Leg(endpoint, mode == "poll"))
    ports = ",".join(str(e.port) for e in endpoints)
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, ports, str(seconds + 2)
    )
    try:
        await asyncio.sleep(1.0)  # latch, warm up
        before = sum(e.session.stats.packets_in for e in endpoints)
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        got = sum(e.session.stats.packets_in for e in endpoints) - before
    finally:
        await sender.wait()
    clock.close()
    for endpoint in endpoints:
        await endpoint.aclose()
    print(
        f"{mode:4s} calls={calls} packets={got} ({got / wall / calls:.1f}/s per call)"
        f" cpu={cpu / wall * 100:5.1f}% of a core  {cpu / got * 1e6:5.2f} µs/packet"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--mode", choices=("loop", "poll"), default="poll")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--base-port", type=int, default=41000)
    args = parser.parse_args()
    if args.mode == "poll" and not hasattr(RtpEndpoint, "poll"):
        sys.exit("this tree has no RtpEndpoint.poll")
    uvloop.run(run(args.calls, args.mode, args.seconds, args.base_port))


if __name__ == "__main__":
    main()
