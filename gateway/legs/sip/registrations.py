"""The trunks' outbound registrations (RFC 3261 §10), on the running endpoint: each trunk with
`register = true` is registered at start, its binding kept fresh by the endpoint's
registration table (gateway/sip/registration.py), its state counted, logged and reported in
`/readyz`, and removed (REGISTER with Expires: 0) on drain and on shutdown.

The Contact registered has a user part of its own per trunk (the trunk's `register_user`, or
`register_user-NAME` when two trunks would share it), so an INVITE the registrar forwards to
the binding says by its Request-URI which trunk it came through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping

from gateway import metrics
from gateway.logs import get_logger
from gateway.sip.auth import Credentials
from gateway.sip.events import RegistrationUpdated
from gateway.sip.message import SipUri
from gateway.sip.registration import REPORTED_STATES, RESULTS, RegistrationConfig
from gateway.sip.transaction import Address
from gateway.sip.transport import SipTransport
from gateway.sip.trunk import Trunk
from gateway.sip.ua import SipEndpoint

log = get_logger("sip.registration")

#: how long shutdown waits for the registrars to answer our un-REGISTERs
UNREGISTER_WAIT = 2.0
_NOT_USER = re.compile(r"[^A-Za-z0-9_.!~*'()&=+$,;?/-]")  # §25.1 user characters only


def registrar_uri(trunk: Trunk) -> SipUri:
    """The trunk's registrar: `registrar`, else the uri's host, port and transport."""
    uri = SipUri.parse(trunk.registrar or trunk.uri)
    transport = uri.params.get("transport")
    params: dict[str, str | None] = {"transport": transport} if transport else {}
    return dataclasses.replace(uri, user=None, password=None, params=params, headers={})


def registration_configs(trunks: Mapping[str, Trunk]) -> list[RegistrationConfig]:
    """One registration per trunk with `register = true` (checked at load: it has a uri or a
    registrar)."""
    registering = [t for t in trunks.values() if t.register]
    users = [t.auth_user() for t in registering]
    out = []
    for trunk in registering:
        registrar = registrar_uri(trunk)
        transport = str(registrar.params.get("transport") or "").lower()
        if registrar.scheme == "sips":
            transport = "tls"
        transport = transport if transport in ("udp", "tcp", "tls") else "udp"
        default_port = 5061 if transport == "tls" else 5060
        user = trunk.auth_user()
        contact_user = user if users.count(user) == 1 else f"{user}-{trunk.name}"
        host = f"[{registrar.host}]" if ":" in registrar.host else registrar.host
        out.append(
            RegistrationConfig(
                trunk=trunk.name,
                registrar=str(registrar),
                aor=f"{registrar.scheme}:{user}@{host}",
                contact_user=_NOT_USER.sub("-", contact_user),
                destination=Address(transport, registrar.host, registrar.port or default_port),
                expires=trunk.register_expires,
                credentials=Credentials(trunk.username, trunk.password) if trunk.username else None,
            )
        )
    return out


class SipRegistrations:
    """Starts, watches and stops the registrations of the configured trunks."""

    def __init__(self, endpoint: SipEndpoint, trunks: Mapping[str, Trunk]) -> None:
        self.endpoint = endpoint
        self.configs = registration_configs(trunks)
        self.trunks = tuple(c.trunk for c in self.configs)
        self.transport: SipTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._settled = asyncio.Event()  # every registration unregistered (after a stop)
        for name in self.trunks:
            self._set_state(name, "unregistered")

    @property
    def states(self) -> dict[str, str]:
        """Each registering trunk's state, for /readyz."""
        return self.endpoint.registrations

    @property
    def all_failed(self) -> bool:
        """Every trunk that registers has failed (then the gateway is not ready: no call can
        reach it through any of them)."""
        states = self.states
        return bool(states) and all(s == "failed" for s in states.values())

    def start(self) -> None:
        """Register every trunk that asks for it."""
        now = self._loop.time()
        for config in self.configs:
            log.info(
                "sip_registration_started",
                trunk=config.trunk,
                registrar=config.registrar,
                aor=config.aor,
                expires=config.expires,
            )
            self.endpoint.register(config, now)
        self._flush()

    def unregister_all(self) -> None:
        """Remove every binding (drain, shutdown): the registrar stops sending us calls."""
        now = self._loop.time()
        self._settled.clear()
        for name in self.trunks:
            self.endpoint.unregister(name, now)
        self._flush()

    async def aclose(self) -> None:
        """Un-register and wait (UNREGISTER_WAIT at most) for the registrars' answers."""
        if not self.trunks:
            return
        self.unregister_all()
        if self._all_unregistered():
            return
        try:
            await asyncio.wait_for(self._settled.wait(), UNREGISTER_WAIT)
        except TimeoutError:
            log.warning("sip_unregister_unanswered", trunks=sorted(self._pending()))

    def on_event(self, event: RegistrationUpdated) -> None:
        """Count and log one registration update (called from the transport's flush)."""
        trunk = metrics.bounded(event.trunk, self.trunks)
        self._set_state(trunk, event.state)
        if event.result is not None:
            result = metrics.bounded(event.result, RESULTS)
            metrics.SIP_REGISTRATIONS.labels(result=result).inc()
        fields = {
            "trunk": trunk,
            "state": event.state,
            "result": event.result,
            "status": event.status or None,
            "reason": event.reason[:80] or None,
        }
        if event.state == "failed":
            log.warning("sip_registration_failed", retry_in_s=event.retry_in, **fields)
        elif event.result is not None or event.state != "registering":
            log.info("sip_registration_updated", expires=event.expires or None, **fields)
        if self._all_unregistered():
            self._settled.set()

    def _set_state(self, trunk: str, state: str) -> None:
        for name in REPORTED_STATES:
            metrics.SIP_REGISTRATION_STATE.labels(trunk=trunk, state=name).set(
                1 if name == state else 0
            )

    def _pending(self) -> list[str]:
        return [t for t, s in self.states.items() if s != "unregistered"]

    def _all_unregistered(self) -> bool:
        return not self._pending()

    def _flush(self) -> None:
        if self.transport is not None:
            self.transport.flush()
