"""The start-up banner and the stop notices, for a person at a terminal (issue 19).

On a terminal (stderr a tty, log format not json) the gateway prints a short block: what to
dial, what to open, the provider and model, and the warnings a first run needs. Elsewhere the
same facts go into the one `gateway_started` JSON log line (`StartupFacts.log_fields`).

The page link carries the API token (`#token=`): the token is a secret, so it appears only in
the block printed on the operator's own terminal, never in a log line, JSON or otherwise.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from gateway.secret import Secret

_ANY = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class StartupFacts:
    """What the banner says; built by the wiring once everything listens."""

    sip_host: str  #: the address put in Contact (public, or the listen address)
    sip_port: int
    tls_port: int = 0
    http_host: str = "127.0.0.1"
    http_port: int = 0
    token: Secret = field(default_factory=lambda: Secret(""))
    provider: str = "local"
    provider_reason: str = ""
    model: str = ""
    warnings: Sequence[str] = ()

    def dial(self) -> list[str]:
        """The SIP URIs a softphone dials, one per listener and transport."""
        host = _uri_host(self.sip_host)
        uris = [
            f"sip:agent@{host}:{self.sip_port}",
            f"sip:agent@{host}:{self.sip_port};transport=tcp",
        ]
        if self.tls_port:
            uris.append(f"sip:agent@{host}:{self.tls_port};transport=tls")
        return uris

    def page(self) -> str:
        """The browser page's URL, without the token."""
        host = "127.0.0.1" if self.http_host in _ANY else self.http_host
        return f"http://{_uri_host(host)}:{self.http_port}/"

    def lines(self) -> list[str]:
        """The block for the terminal; the page link carries the token when one is set."""
        link = self.page() + (f"#token={self.token.reveal()}" if self.token else "")
        model = f", model {self.model}" if self.model else ""
        out = ["gateway is ready", *(f"  dial      {uri}" for uri in self.dial())]
        out.append(f"  open      {link}")
        out.append(f"  provider  {self.provider}{model} ({self.provider_reason})")
        out += [f"  warning   {warning}" for warning in self.warnings]
        out.append("  stop      Ctrl-C (drains live calls; a second Ctrl-C ends them now)")
        return out

    def log_fields(self) -> dict[str, Any]:
        """The same facts for the `gateway_started` log line: never the token."""
        return {
            "dial": self.dial(),
            "open": self.page(),
            "token_required": bool(self.token),
            "provider": self.provider,
            "provider_reason": self.provider_reason,
            "model": self.model or None,
            "warnings": list(self.warnings),
        }


def first_run_warnings(
    *,
    provider: str,
    provider_setting: str,
    metrics_listen: str,
    sip_allow: Sequence[str],
    inbound_trunks: bool,
) -> list[str]:
    """What a first-time operator should know before dialling."""
    out = []
    if provider == "local" and provider_setting == "auto":
        out.append(
            "the local echo provider answers (no OPENAI_API_KEY or YANDEX key set): you hear "
            "your own words back"
        )
    if metrics_listen:
        host = metrics_listen.rpartition(":")[0].strip("[]")
        if not _loopback(host):
            out.append(f"/metrics on {metrics_listen} is open to anyone who reaches it (no auth)")
    if not inbound_trunks and sip_allow and all(_loopback(net) for net in sip_allow):
        out.append(
            "only this machine may call: sip_allow is loopback only (add your phone's network, "
            "e.g. --sip-allow 127.0.0.0/8,192.168.1.0/24)"
        )
    return out


def is_human(log_format: str, stream: TextIO | None = None) -> bool:
    """A person is watching: the stream is a terminal and the log format is not json."""
    stream = sys.stderr if stream is None else stream
    return log_format != "json" and stream.isatty()


def show(lines: Sequence[str], stream: TextIO | None = None) -> None:
    """Print a block for the person at the terminal."""
    stream = sys.stderr if stream is None else stream
    print("\n".join(["", *lines, ""]), file=stream, flush=True)


def drain_notice(live_calls: int, drain_timeout: float) -> str:
    """What the first Ctrl-C prints."""
    calls = "1 call is" if live_calls == 1 else f"{live_calls} calls are"
    return (
        f"Stopping: {calls} draining (up to {drain_timeout:g} s). "
        "Press Ctrl-C again to end them now."
    )


def stop_now_notice(live_calls: int) -> str:
    """What the second Ctrl-C prints."""
    calls = "1 call" if live_calls == 1 else f"{live_calls} calls"
    return f"Ending {calls} now."


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback(text: str) -> bool:
    try:
        return ipaddress.ip_network(text, strict=False).is_loopback
    except ValueError:
        return text == "localhost"
