"""What sending a media clock slot's packets back to back saves over one send per leg's work.

Two processes: a uvloop receiver on core 1 with 300 UDP sockets (a phone, an SBC or the load
generator), and a sender on core 0 that sends one 172-byte datagram to each of 75 sockets per
5 ms slot (300 calls over four slots), with 10 µs of busy work per packet standing in for a
leg's tick. `interleaved`: work, send, work, send...; `burst`: all the work, then all the sends
(the media clock's Outbox). Prints the sender's CPU and the time inside `sendto` per packet.
On loopback the sender pays for waking the receiver; a burst wakes it once per slot.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

CALLS = 300
SLOT = CALLS // 4
WORK_US = 10.0
SECONDS = 4.0
_CORES = sorted(os.sched_getaffinity(0))  # sender on the first, receiver on the last


def _receiver(ports_fd: int) -> None:
    import uvloop

    os.sched_setaffinity(0, {_CORES[-1]})

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports = []
        for _ in range(CALLS):
            transport, _p = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
            ports.append(transport.get_extra_info("sockname")[1])
        os.write(ports_fd, (",".join(map(str, ports)) + "\n").encode())
        await asyncio.sleep(3600)

    uvloop.run(main())


def _work(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def main() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _receiver(w)
        os._exit(0)
    try:
        with os.fdopen(r) as pipe:
            ports = [int(p) for p in pipe.readline().split(",")]
        os.sched_setaffinity(0, {_CORES[0]})
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SLOT)]
        data = b"x" * 172
        for mode in ("interleaved", "burst") * 3:
            cpu0 = time.process_time()
            end = time.monotonic() + SECONDS
            packets, in_send = 0, 0.0
            while time.monotonic() < end:
                start = time.monotonic()
                if mode == "interleaved":
                    for i in range(SLOT):
                        _work(WORK_US)
                        t = time.perf_counter()
                        socks[i].sendto(data, ("127.0.0.1", ports[i]))
                        in_send += time.perf_counter() - t
                else:
                    for _ in range(SLOT):
                        _work(WORK_US)
                    t = time.perf_counter()
                    for i in range(SLOT):
                        socks[i].sendto(data, ("127.0.0.1", ports[i]))
                    in_send += time.perf_counter() - t
                packets += SLOT
                time.sleep(max(0.0, 0.005 - (time.monotonic() - start)))
            cpu = time.process_time() - cpu0
            print(
                f"{mode:12s} cpu {cpu / packets * 1e6:5.2f} µs/packet (incl. {WORK_US:.0f} µs work)"
                f"  in sendto {in_send / packets * 1e6:4.2f} µs/packet"
            )
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
