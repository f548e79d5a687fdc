"""TLS towards trunks: one client `ssl.SSLContext` per trunk, with the name it is verified by.

A trunk whose uri is `sips:` or `;transport=tls` gets a `TlsClient` when the gateway starts
(`client_for_trunk`), so a bad CA bundle or client certificate is a start-up error, not a
failed call. The SIP transport uses it for every connection it makes to that trunk's address:
the certificate is verified against the system CA store or the trunk's `tls_ca_file`, under
the trunk's `tls_server_name` or its uri's host, which is also the SNI (RFC 6066 §3; an IP
literal is verified against the certificate's IP SAN and sends no SNI). Only
`tls_verify = false` turns verification off. `tls_client_cert`/`tls_client_key` are presented
when the trunk asks for a client certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from gateway.errors import StartupError
from gateway.sip.routing import uri_transport
from gateway.sip.trunk import Trunk


@dataclass(frozen=True)
class TlsClient:
    """How to open a TLS connection to one peer: the context and the name verified (and sent
    as SNI when it is not an IP literal); `server_name` None: the address dialled."""

    context: ssl.SSLContext
    server_name: str | None = None

    @property
    def verifies(self) -> bool:
        return self.context.verify_mode != ssl.CERT_NONE


def default_client() -> TlsClient:
    """Any other TLS peer (an in-dialog request to a `sips:` Contact with no trunk): verified
    against the system CA store under the address dialled."""
    return TlsClient(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))


def uses_tls(trunk: Trunk) -> bool:
    """Calls through `trunk` go over TLS (a sips: uri or ;transport=tls)."""
    return trunk.outbound and uri_transport(trunk.parsed_uri()) == "tls"


def client_for_trunk(trunk: Trunk) -> TlsClient:
    """The trunk's TLS client. Raises `StartupError` naming the key whose file does not load
    (the message has the path and OpenSSL's reason, never the key's content)."""
    where = f"trunks.{trunk.name}"
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=trunk.tls_ca_file or None
        )
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"{where}.tls_ca_file: {_why(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not trunk.tls_verify:  # explicit: the trunk's tls_verify = false
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if trunk.tls_client_cert:
        try:
            context.load_cert_chain(trunk.tls_client_cert, trunk.tls_client_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"{where}.tls_client_cert/tls_client_key: {_why(exc)}") from None
    return TlsClient(context, trunk.tls_server_name or trunk.parsed_uri().host)


def _why(exc: OSError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)
