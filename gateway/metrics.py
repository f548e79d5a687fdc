"""Every Prometheus metric the gateway exports, defined in this one module.

Labels are bounded: never a call id, a number, a URI or a free-form string. Label values
that come from the outside world (SIP methods, Realtime event types, error codes) go through
`bounded()` first, which maps anything unknown to `other`.
Protocol cores never import this module; the asyncio adapters and the call bridge count.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

from gateway import __version__

_float_to_go = cast(Callable[[float], str], _untyped_float_to_go)  # the `le` label's spelling

__all__ = ["CONTENT_TYPE_LATEST", "MediaHistogram", "bounded", "render"]


class MediaHistogram(Collector):
    """A Prometheus histogram for the per-packet media path.

    `prometheus_client.Histogram.observe` takes a lock per bucket walk, about 2 µs; at 50
    packets per second per call that is a few percent of a core. This one is a list increment
    after a bisect, `observe(amount, count)` records `count` equal values at once (every packet of
    one media-clock slot leaves at the same loop time), and it is exported as an ordinary
    histogram (`_bucket`/`_count`/`_sum`) by a registry collector. Called on the loop thread
    only; `collect()` may run on the exposition thread and copies under a lock.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _MediaHistogramChild] = {}
        self._lock = threading.Lock()
        if not labelnames:
            self._children[()] = _MediaHistogramChild(self._bounds)
        if registry is not None:
            registry.register(self)

    def labels(self, **labels: str) -> _MediaHistogramChild:
        """The child for these label values (look it up once, outside the hot path)."""
        key = tuple(labels[name] for name in self._labelnames)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = _MediaHistogramChild(self._bounds)
        return child

    def observe(self, amount: float, count: int = 1) -> None:
        """Record `count` observations of `amount` (unlabelled histograms only)."""
        self._children[()].observe(amount, count)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self._labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            counts, total = child.snapshot()
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_float_to_go(bound), cumulative))
            family.add_metric(list(key), buckets, total)
        yield family


class _MediaHistogramChild:
    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, amount: float, count: int = 1) -> None:
        # le buckets: a value equal to a bound belongs to that bound's bucket
        self._counts[bisect_left(self._bounds, amount)] += count
        self._sum += amount * count

    def snapshot(self) -> tuple[list[int], float]:
        return list(self._counts), self._sum


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
_FINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
_SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- calls
CALLS_ACTIVE = Gauge("gateway_calls_active", "Calls in progress.", ["leg"])
CALLS_TOTAL = Counter(
    "gateway_calls", "Calls ended, by leg, direction and outcome.", ["leg", "direction", "outcome"]
)
CALL_DURATION = Histogram(
    "gateway_call_duration_seconds",
    "Duration of answered calls.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)
STATE_ERRORS = Counter(
    "gateway_state_errors",
    "Inputs a state table had no transition for (a bug), by machine, state and input.",
    ["machine", "state", "input"],
)
CALL_SETUP = Histogram(
    "gateway_call_setup_seconds",
    "From INVITE or WebRTC offer to the first audio sent to the caller.",
    buckets=_SETUP_BUCKETS,
)
# --- SIP
SIP_REQUESTS = Counter("gateway_sip_requests", "SIP requests received, by method.", ["method"])
SIP_RESPONSES = Counter("gateway_sip_responses", "SIP responses sent, by class.", ["code_class"])
SIP_REJECTED = Counter(
    "gateway_sip_rejected", "SIP requests refused before a call existed, by reason.", ["reason"]
)
SIP_UNEXPECTED_INPUTS = Counter(
    "gateway_sip_unexpected_inputs",
    "Inputs a SIP state table had no entry for (a core bug), by machine and input.",
    ["machine", "input"],
)
SIP_KEEPALIVES = Counter(
    "gateway_sip_keepalives",
    "Keep-alives towards trunks, by result: ok, error (a 5xx/6xx answer), timeout, or sent "
    "(a CRLF ping, which gets no answer).",
    ["result"],
)
SIP_SEND_ERRORS = Counter(
    "gateway_sip_send_errors",
    "SIP messages that could not be sent, by transport and reason (resolve/connect/send, "
    "tls_verify: the peer's certificate was refused, tls_handshake: any other TLS failure).",
    ["transport", "reason"],
)
SIP_DNS_QUERIES = Counter(
    "gateway_sip_dns_queries",
    "DNS queries for SIP targets (RFC 3263), by record type and result "
    "(ok/nxdomain/nodata/timeout/error); answers from the cache are not counted.",
    ["type", "result"],
)
SIP_FAILOVERS = Counter(
    "gateway_sip_failovers",
    "Outbound INVITEs moved to the next DNS target (RFC 3263 §4.3), by reason "
    "(timeout/503/transport).",
    ["reason"],
)
SIP_REGISTRATION_STATE = Gauge(
    "gateway_sip_registration_state",
    "Outbound registration of each trunk with register = true: 1 for its current state "
    "(registering/registered/failed/unregistering/unregistered), 0 for the others.",
    ["trunk", "state"],
)
SIP_REGISTRATIONS = Counter(
    "gateway_sip_registrations",
    "REGISTER transactions of outbound registrations, by result (registered/unregistered/"
    "interval_too_brief/rejected/timeout).",
    ["result"],
)
# --- RTP
RTP_PACKETS = Counter("gateway_rtp_packets", "RTP packets, by direction (in/out).", ["direction"])
RTP_LOST = Counter("gateway_rtp_packets_lost", "Inbound RTP packets lost (sequence gaps).")
RTP_DROPPED = Counter("gateway_rtp_dropped", "Inbound RTP packets dropped, by reason.", ["reason"])
RTP_JITTER = Histogram(
    "gateway_rtp_jitter_seconds",
    "RFC 3550 interarrival jitter per call, sampled every RTCP interval.",
    buckets=_FINE_BUCKETS,
)
RTP_SEND_LATENESS = MediaHistogram(
    "gateway_rtp_send_lateness_seconds",
    "How late each outgoing media packet left against its deadline.",
    buckets=_FINE_BUCKETS,
)
# issue 20: graceful overload (gateway.media.overload)
MEDIA_LATENESS_P99 = Gauge(
    "gateway_media_lateness_p99_seconds",
    "Send lateness p99 over the last 2 s, as the overload gate estimates it.",
)
OVERLOADED = Gauge(
    "gateway_overloaded",
    "1 while new calls are refused because the media clock runs late or the core is busy.",
)
PROCESS_CPU_SHARE = Gauge(
    "gateway_process_cpu_share",
    "Share of one core the process used over the last 2 s, as the overload gate estimates it "
    "(0 while overload_cpu_pct is off).",
)
PROCESS_CPU_PROJECTED = Gauge(
    "gateway_process_cpu_projected",
    "The CPU share with the calls admitted within its 2 s window counted at their whole cost: "
    "what the overload gate compares with overload_cpu_pct.",
)

# --- Realtime
REALTIME_SESSIONS = Gauge("gateway_realtime_sessions_active", "Open Realtime sessions.")
REALTIME_CONNECT = Histogram(
    "gateway_realtime_connect_seconds",
    "From WebSocket connect to session.updated.",
    buckets=_SETUP_BUCKETS,
)
REALTIME_EVENTS = Counter(
    "gateway_realtime_events", "Realtime server events received, by type.", ["type"]
)
REALTIME_ERRORS = Counter(
    "gateway_realtime_errors", "Realtime error events and failures, by code.", ["code"]
)
REALTIME_RECONNECTS = Counter("gateway_realtime_reconnects", "Realtime sessions re-opened.")
PROVIDER_AVAILABLE = Gauge(
    "gateway_provider_available",
    "1 while new calls may connect to the provider; 0 after consecutive connect failures.",
)
REALTIME_SEND_OVERFLOW = Counter(
    "gateway_realtime_send_overflow", "Client events dropped because the send queue was full."
)
REALTIME_STALLS = Counter(
    "gateway_realtime_stalls",
    "Provider stalls: no event for the stall timeout while a response was awaited, by what was "
    "awaited (response.created/response.done).",
    ["awaited"],
)
REALTIME_RESPONSES_FAILED = Counter(
    "gateway_realtime_responses_failed",
    "Responses that ended failed or incomplete, by status and reason (cancelled ones are not "
    "counted).",
    ["status", "reason"],
)
REALTIME_SESSIONS_LOST = Counter(
    "gateway_realtime_sessions_lost",
    "Realtime sessions given up mid-call, by reason (reconnect failed, stalled, reconnect limit "
    "or rate).",
    ["reason"],
)
# --- conversation
RESPONSE_LATENCY = Histogram(
    "gateway_response_latency_seconds",
    "From the caller's speech stopping to the first bot audio sent.",
    buckets=_SETUP_BUCKETS,
)
BARGE_IN = Counter("gateway_barge_in", "Barge-ins: caller speech interrupting bot audio.")
BARGE_IN_REACTION = Histogram(
    "gateway_barge_in_reaction_seconds",
    "From speech_started received to the last bot packet sent.",
    buckets=_LATENCY_BUCKETS,
)
MEDIA_ADDED_LATENCY = MediaHistogram(
    "gateway_media_added_latency_seconds",
    "The gateway's own share of media latency, by direction (to_model/to_caller).",
    labelnames=["direction"],
    buckets=_FINE_BUCKETS,
)
DTMF_DIGITS = Counter("gateway_dtmf_digits", "DTMF digits received, by source.", ["source"])
TOOL_CALLS = Counter(
    "gateway_tool_calls", "Function tool calls from the model.", ["name", "outcome"]
)
TOOL_CALL_DURATION = Histogram(
    "gateway_tool_call_duration_seconds",
    "From a function call's arguments to its output (a timeout counts its limit), by tool.",
    labelnames=["name"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0),
)
HTTP_ERRORS = Counter("gateway_http_errors", "HTTP requests refused, by reason.", ["reason"])
DRAINING = Gauge("gateway_draining", "1 while the instance drains.")
GC_PAUSE = MediaHistogram(
    "gateway_gc_pause_seconds",
    "Passes of the cyclic garbage collector (the loop stops meanwhile), by generation.",
    labelnames=["generation"],
    buckets=_FINE_BUCKETS,
)
# --- the OpenAI-SIP-compatible control plane (issue 18) ---
CALL_WEBHOOK_OUTCOMES = ("accepted", "rejected", "fallback_default", "fallback_reject", "cancelled")
CALL_WEBHOOKS = Counter(
    "gateway_call_webhooks",
    "Calls announced by the call webhook, by how their wait ended (accepted, rejected by the "
    "app, fallback_default / fallback_reject after the timeout, cancelled by the caller).",
    ["outcome"],
)
CALL_WEBHOOK_DELIVERY_RESULTS = ("delivered", "refused", "timeout", "error")
CALL_WEBHOOK_DELIVERIES = Counter(
    "gateway_call_webhook_deliveries",
    "POSTs of the realtime.call.incoming event, by result (2xx delivered, non-2xx refused, "
    "timeout, connection error).",
    ["result"],
)
CALL_WEBHOOK_LATENCY = Histogram(
    "gateway_call_webhook_delivery_seconds",
    "From a call's first webhook POST to the app's 2xx (retries included).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SIDEBANDS_LIVE = Gauge("gateway_sidebands_live", "Sideband WebSockets attached to calls now.")
SIDEBANDS = Counter("gateway_sidebands", "Sideband WebSockets attached to calls.")
SIDEBAND_CLIENT_EVENTS = Counter(
    "gateway_sideband_client_events",
    "Client events apps sent on sidebands, by type (the accepted types; anything else "
    "`other`, a frame that is no JSON object `invalid`).",
    ["type"],
)
BUILD_INFO = Info("gateway_build", "Gateway build information.")
BUILD_INFO.info({"version": __version__})


def bounded(value: str, known: Collection[str], other: str = "other") -> str:
    """`value` if it is one of `known`, else `other`: keeps label cardinality fixed."""
    return value if value in known else other


def render() -> bytes:
    """The exposition text of the default registry (includes the process collector)."""
    return generate_latest()
