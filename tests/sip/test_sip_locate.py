"""RFC 3263 server location (gateway/sip/locate.py), sans-I/O: a `Lookup` is fed DNS answers by
hand, time is passed in, no event loop. The same core against a real DNS server (dnsmasq) is in
test_sip_resolver.py."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest

from gateway.sip.locate import DnsCache, Lookup, Naptr, Record, Srv, Target, fail_over, srv_order
from gateway.sip.message import SipUri
from gateway.sip.transaction import Address

Zone = Mapping[tuple[str, str], Sequence[Record]]

ZONE: Zone = {
    ("_sip._udp.trunk.test", "SRV"): [
        Srv(10, 60, 5070, "a.trunk.test"),
        Srv(10, 40, 5071, "b.trunk.test"),
        Srv(20, 0, 5072, "c.trunk.test"),
    ],
    ("_sip._tcp.trunk.test", "SRV"): [Srv(10, 0, 5080, "a.trunk.test")],
    ("_sips._tcp.trunk.test", "SRV"): [Srv(10, 0, 5081, "a.trunk.test")],
    ("a.trunk.test", "A"): ["127.0.0.1"],
    ("b.trunk.test", "A"): ["127.0.0.2"],
    ("c.trunk.test", "A"): ["127.0.0.3"],
    ("c.trunk.test", "AAAA"): ["::1"],
    ("plain.test", "A"): ["127.0.0.9", "127.0.0.10"],
    ("n.test", "NAPTR"): [
        Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.trunk.test"),
        Naptr(10, 10, "s", "SIP+D2T", "_sip._tcp.trunk.test"),
        Naptr(5, 10, "s", "SIP+D2X", "_sip._sctp.trunk.test"),  # a transport we lack
        Naptr(1, 10, "u", "E2U+sip", "!^.*$!sip:x@y!"),  # not an SRV name (flag u)
    ],
    ("dot.test", "NAPTR"): [],
    ("_sip._udp.dot.test", "SRV"): [Srv(0, 0, 0, ".")],
}


def run(
    uri: str,
    zone: Zone = ZONE,
    *,
    cache: DnsCache | None = None,
    now: float = 0.0,
    seed: int = 1,
    address_types: Sequence[str] = ("A",),
    ttl: float = 60.0,
) -> tuple[list[Target], list[tuple[str, str]]]:
    """Resolve `uri` against `zone`; the targets and the queries asked (not from the cache)."""
    lookup = Lookup(
        SipUri.parse(uri),
        cache if cache is not None else DnsCache(),
        random.Random(seed),
        address_types=address_types,
    )
    while (query := lookup.next_query(now)) is not None:
        lookup.answer(*query, zone.get(query, []), ttl, now)
    return lookup.targets(), lookup.queries


def where(targets: list[Target]) -> list[tuple[str, str, int]]:
    return [(t.transport, t.host, t.port) for t in targets]


def test_a_numeric_ip_needs_no_query() -> None:
    targets, queries = run("sip:127.0.0.5")
    assert where(targets) == [("udp", "127.0.0.5", 5060)] and queries == []
    targets, queries = run("sips:127.0.0.5:5999")
    assert where(targets) == [("tls", "127.0.0.5", 5999)] and queries == []
    assert where(run("sip:127.0.0.5;transport=tcp")[0]) == [("tcp", "127.0.0.5", 5060)]
    assert where(run("sips:[::1]")[0]) == [("tls", "::1", 5061)]


def test_an_explicit_port_skips_srv() -> None:
    """§4.2: a port in the URI means A/AAAA only."""
    targets, queries = run("sip:trunk.test:5099")
    assert targets == [] and queries == [("trunk.test", "A")]
    targets, queries = run("sip:a.trunk.test:5099;transport=tcp")
    assert where(targets) == [("tcp", "127.0.0.1", 5099)]
    assert queries == [("a.trunk.test", "A")]


def test_transport_and_sips_select_the_srv_service() -> None:
    targets, queries = run("sip:trunk.test;transport=tcp")
    assert where(targets) == [("tcp", "127.0.0.1", 5080)]
    assert queries[0] == ("_sip._tcp.trunk.test", "SRV")
    targets, queries = run("sips:trunk.test")
    assert where(targets) == [("tls", "127.0.0.1", 5081)]
    assert queries[0] == ("_sips._tcp.trunk.test", "SRV")
    # the name TLS verifies is the URI's host, not the SRV target (RFC 5922 §4)
    assert targets[0].server_name == "trunk.test"
    targets, _ = run("sip:trunk.test;transport=tls")
    assert where(targets) == [("tls", "127.0.0.1", 5081)]


def test_srv_by_priority_then_weight_then_a() -> None:
    targets, queries = run("sip:trunk.test;transport=udp", address_types=("A", "AAAA"))
    # priority 10 (a or b, by weight) before priority 20; every address is a target
    assert set(where(targets[:2])) == {("udp", "127.0.0.1", 5070), ("udp", "127.0.0.2", 5071)}
    assert where(targets[2:]) == [("udp", "127.0.0.3", 5072), ("udp", "::1", 5072)]
    assert queries[0] == ("_sip._udp.trunk.test", "SRV")


def test_srv_weights_share_the_first_pick() -> None:
    """RFC 2782: within a priority, a record is first in proportion to its weight."""
    records = [Srv(1, 60, 1, "a"), Srv(1, 40, 2, "b"), Srv(1, 0, 3, "z"), Srv(0, 5, 4, "p")]
    rng = random.Random(7)
    firsts = Counter(srv_order(records, rng)[1].target for _ in range(4000))
    assert srv_order(records, rng)[0].target == "p"  # priority 0 always first
    assert firsts["a"] / 4000 == pytest.approx(0.6, abs=0.04)
    assert firsts["b"] / 4000 == pytest.approx(0.4, abs=0.04)
    assert firsts["z"] < 40  # weight 0: chosen first only when the draw is 0
    assert sorted(r.port for r in srv_order(records, rng)) == [1, 2, 3, 4]


def test_naptr_decides_transport_order() -> None:
    targets, queries = run("sip:n.test")
    # order 10 (TCP) before order 20 (UDP); SCTP and the non-SRV record are skipped
    assert where(targets)[0] == ("tcp", "127.0.0.1", 5080)
    assert {t.transport for t in targets[1:]} == {"udp"}
    assert queries[:2] == [("n.test", "NAPTR"), ("_sip._tcp.trunk.test", "SRV")]
    assert ("_sip._sctp.trunk.test", "SRV") not in queries
    assert all(t.server_name == "n.test" for t in targets)


def test_without_naptr_every_transport_srv_then_a() -> None:
    targets, queries = run("sip:trunk.test")
    assert queries[0] == ("trunk.test", "NAPTR")
    assert {t.transport for t in targets} == {"udp", "tcp", "tls"}
    assert targets[0].transport == "udp"
    targets, queries = run("sip:plain.test")
    assert where(targets) == [("udp", "127.0.0.9", 5060), ("udp", "127.0.0.10", 5060)]
    assert queries == [
        ("plain.test", "NAPTR"),
        ("_sip._udp.plain.test", "SRV"),
        ("_sip._tcp.plain.test", "SRV"),
        ("_sips._tcp.plain.test", "SRV"),
        ("plain.test", "A"),
    ]


def test_srv_dot_means_not_offered() -> None:
    targets, queries = run("sip:dot.test;transport=udp")
    assert targets == [] and ("dot.test", "A") not in queries


def test_ttls_are_honoured_with_simulated_time() -> None:
    """Answers are reused for their TTL and asked again after it; the first lookup's queries
    are not asked by the second while they live."""
    cache = DnsCache()
    _, first = run("sip:trunk.test;transport=udp", cache=cache, now=100.0, ttl=30)
    assert first
    targets, again = run("sip:trunk.test;transport=udp", cache=cache, now=129.9, ttl=30)
    assert again == [] and len(targets) == 3
    _, expired = run("sip:trunk.test;transport=udp", cache=cache, now=130.0, ttl=30)
    assert expired == first
    # a negative answer is cached too (an empty tuple), and expires the same way
    cache.put("gone.test", "A", [], 5, now=0)
    assert cache.get("gone.test", "A", now=4.9) == ()
    assert cache.get("gone.test", "A", now=5.0) is None
    # a failed query (timeout) is not cached
    lookup = Lookup(SipUri.parse("sip:x.test:5060"), cache, address_types=("A",))
    query = lookup.next_query(0)
    assert query == ("x.test", "A")
    lookup.failed(*query)
    assert lookup.next_query(0) is None and lookup.targets() == []
    assert cache.get("x.test", "A", now=0) is None


def test_a_changed_answer_after_expiry_changes_the_targets() -> None:
    cache = DnsCache()
    old, _ = run("sip:plain.test:5060", cache=cache, now=0, ttl=10)
    moved = {("plain.test", "A"): ["127.0.0.77"]}
    still, _ = run("sip:plain.test:5060", moved, cache=cache, now=9)
    new, _ = run("sip:plain.test:5060", moved, cache=cache, now=10)
    assert where(still) == where(old) and where(new) == [("udp", "127.0.0.77", 5060)]


def test_the_cache_is_bounded() -> None:
    cache = DnsCache(max_entries=3)
    for i in range(10):
        cache.put(f"n{i}.test", "A", ["127.0.0.1"], 60, now=0)
    assert len(cache) == 3 and cache.get("n9.test", "A", 0) and cache.get("n0.test", "A", 0) is None


def test_answers_for_another_query_are_refused() -> None:
    lookup = Lookup(SipUri.parse("sip:x.test:5060"), DnsCache())
    assert lookup.next_query(0) == ("x.test", "A")
    with pytest.raises(RuntimeError):
        lookup.answer("y.test", "A", ["127.0.0.1"], 60, 0)
    with pytest.raises(RuntimeError):
        lookup.targets()


def test_fail_over_on_timeout_transport_error_or_503_only() -> None:
    rest = [Address("udp", "127.0.0.2", 5071)]
    assert fail_over(rest, None) == rest[0]  # timer B/F, or a transport error
    assert fail_over(rest, 503) == rest[0]
    assert fail_over(rest, 486) is None  # busy is the callee's answer: final
    assert fail_over([], 503) is None
