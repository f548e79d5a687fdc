"""The DNS adapter (gateway/sip/resolver.py) against a real DNS server: dnsmasq on a loopback
port serving NAPTR, SRV and A records for `trunk.test`, on uvloop and the default loop
(tests/conftest.py). `sips:` and `transport=tls` are resolved here (the TLS connection itself is
the transport's)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway.sip.locate import Target
from gateway.sip.message import SipUri
from gateway.sip.resolver import SipResolver
from tests.support.dnsmasq import Dnsmasq


def where(targets: Sequence[Target]) -> list[tuple[str, str, int]]:
    return [(t.transport, t.host, t.port) for t in targets]


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(
        tmp_path,
        hosts=[("a.trunk.test", "127.0.0.1"), ("b.trunk.test", "127.0.0.2")],
        srv=[
            ("_sip._udp.trunk.test", "b.trunk.test", 5071, 20, 0),
            ("_sip._udp.trunk.test", "a.trunk.test", 5070, 10, 0),
            ("_sip._tcp.trunk.test", "a.trunk.test", 5080, 10, 0),
            ("_sips._tcp.trunk.test", "a.trunk.test", 5081, 10, 0),
        ],
        naptr=[
            ("naptr.test", 20, 10, "s", "SIP+D2U", "", "_sip._udp.trunk.test"),
            ("naptr.test", 10, 10, "s", "SIP+D2T", "", "_sip._tcp.trunk.test"),
        ],
    ).start()
    yield server
    server.stop()


async def test_srv_naptr_and_a_from_a_real_server(dns: Dnsmasq) -> None:
    resolver = SipResolver([("127.0.0.1", dns.port)], address_types=("A",))

    async def locate(uri: str) -> list[tuple[str, str, int]]:
        return where(await resolver.locate(SipUri.parse(uri)))

    # no NAPTR for trunk.test: SRV for each transport; udp first, by priority
    assert (await locate("sip:trunk.test"))[:2] == [
        ("udp", "127.0.0.1", 5070),
        ("udp", "127.0.0.2", 5071),
    ]
    assert await locate("sip:trunk.test;transport=tcp") == [("tcp", "127.0.0.1", 5080)]
    targets = await resolver.locate(SipUri.parse("sips:trunk.test"))
    assert where(targets) == [("tls", "127.0.0.1", 5081)]
    assert targets[0].server_name == "trunk.test"  # what TLS verifies (RFC 5922 §4)
    assert await locate("sip:trunk.test;transport=tls") == [("tls", "127.0.0.1", 5081)]
    # NAPTR: order 10 (TCP) first
    assert (await locate("sip:naptr.test"))[0] == ("tcp", "127.0.0.1", 5080)
    assert await locate("sip:a.trunk.test:5999") == [("udp", "127.0.0.1", 5999)]
    assert await locate("sip:nowhere.test") == []
    asked = dns.queries()
    assert "NAPTR trunk.test" in asked and "SRV _sip._udp.trunk.test" in asked
    assert "NAPTR naptr.test" in asked and "A a.trunk.test" in asked


async def test_answers_are_cached_for_their_ttl_and_shared(dns: Dnsmasq) -> None:
    """Within the TTL (60 s here) a second lookup asks nothing; calls resolving the same name at
    once share one query."""
    resolver = SipResolver([("127.0.0.1", dns.port)], address_types=("A",))
    uri = SipUri.parse("sip:trunk.test;transport=udp")
    before = len(dns.queries())
    results = await asyncio.gather(*(resolver.locate(uri) for _ in range(5)))
    assert all(where(r) == where(results[0]) for r in results) and results[0]
    first = dns.queries()[before:]
    assert sorted(first) == ["A a.trunk.test", "A b.trunk.test", "SRV _sip._udp.trunk.test"]
    await resolver.locate(uri)
    assert dns.queries()[before:] == first  # nothing asked again


async def test_a_server_that_does_not_answer_is_a_counted_timeout(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        resolver = SipResolver([("127.0.0.1", silent.getsockname()[1])], address_types=("A",))
        labels = {"type": "A", "result": "timeout"}
        before = REGISTRY.get_sample_value("gateway_sip_dns_queries_total", labels) or 0
        assert await resolver.locate(SipUri.parse("sip:x.test:5060")) == []
        after = REGISTRY.get_sample_value("gateway_sip_dns_queries_total", labels) or 0
        assert after == before + 1
        assert resolver.cache.get("x.test", "A", 0) is None  # a timeout is not cached
    finally:
        silent.close()


async def test_the_system_mode_reads_the_hosts_file_first(tmp_path: Path) -> None:
    """Without `sip_dns_servers`, a name the hosts file gives is never asked of the DNS (as the
    C library's `files dns` order), and `localhost` is loopback (RFC 6761)."""
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.7 pbx.local pbx\n::1 pbx.local\n")
    resolver = SipResolver(hosts_file=str(hosts))
    got = await resolver.addresses("udp", "PBX.local", 5070)
    assert where(got) == [("udp", "127.0.0.7", 5070), ("udp", "::1", 5070)]
    assert where(await resolver.addresses("tcp", "localhost", 5060))[0] == (
        "tcp",
        "127.0.0.1",
        5060,
    )
