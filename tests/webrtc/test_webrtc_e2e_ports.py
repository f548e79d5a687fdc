"""`--webrtc-ports` bounds the gateway's ICE ports (firewalls, container publishing)."""

from __future__ import annotations

import re

import aiohttp
import numpy as np

from tests.support.gateway import running_gateway
from tests.support.webrtc import Client


async def test_ice_candidates_use_the_configured_port_range() -> None:
    async with running_gateway(webrtc_ports="46100-46199") as gw:
        client = Client(np.zeros(4800, np.int16))
        try:
            offer = await client.offer_sdp()
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{gw.http_port}/webrtc/offer",
                    json={"sdp": offer, "type": "offer"},
                ) as resp,
            ):
                assert resp.status == 201, await resp.text()
                answer = (await resp.json())["sdp"]
            ports = [int(m) for m in re.findall(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+)", answer)]
            assert ports, answer
            assert all(46100 <= p <= 46199 for p in ports), ports
            async with aiohttp.ClientSession() as http:
                call_id = next(iter(gw.manager.calls))
                await http.delete(f"http://127.0.0.1:{gw.http_port}/webrtc/calls/{call_id}")
        finally:
            await client.close()
