"""SIP messages over a raw UDP socket, just enough for probes and tests: `sip_request` and
`sip_response` build one, `sip_exchange` sends a request and waits for its final response,
`status_code` reads one. The messages the in-memory endpoints get are in `sip_memory.py`."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Sequence

from tests.support.harness import HarnessError


def _header(message: str, name: str) -> str | None:
    match = re.search(rf"^(?:{name})\s*:\s*(.*?)\r?$", message, re.I | re.M)
    return match.group(1) if match else None


def _headers(message: str, name: str) -> list[str]:
    return re.findall(rf"^(?:{name})\s*:\s*(.*?)\r?$", message, re.I | re.M)


def sip_request(
    method: str,
    uri: str,
    local: tuple[str, int],
    *,
    call_id: str | None = None,
    cseq: int = 1,
    to_tag: str | None = None,
    from_tag: str = "harness",
    routes: Sequence[str] = (),
    body: str = "",
    content_type: str = "application/sdp",
) -> bytes:
    """A minimal RFC 3261 request from a UDP socket bound at `local`."""
    host, port = local
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:harness@{host}:{port}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id or uuid.uuid4().hex}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:harness@{host}:{port}>",
        *(f"Route: {r}" for r in routes),
    ]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sip_response(
    request: str, code: int, reason: str, *, to_tag: str = "", body: str = "", contact: str = ""
) -> bytes:
    """A response to `request` (Via, From, To, Call-ID, CSeq and Record-Route copied)."""
    to = _header(request, "To|t") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in _headers(request, "Via|v")]
    lines += [f"Record-Route: {r}" for r in _headers(request, "Record-Route")]
    lines += [
        f"From: {_header(request, 'From|f')}",
        f"To: {to}",
        f"Call-ID: {_header(request, 'Call-ID|i')}",
        f"CSeq: {_header(request, 'CSeq')}",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sip_exchange(
    sock: socket.socket,
    message: bytes,
    dest: tuple[str, int],
    timeout: float = 5.0,
    final: bool = True,
) -> str:
    """Send `message` to `dest` and return the first final (>=200) response, or the first
    response of any kind when `final` is False. Provisional responses are skipped."""
    sock.sendto(message, dest)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HarnessError(f"no SIP response from {dest} in {timeout}s")
        sock.settimeout(remaining)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            continue
        text = data.decode(errors="replace")
        if not text.startswith("SIP/2.0 "):
            continue
        code = int(text.split(" ", 2)[1])
        if code >= 200 or not final:
            return text


def status_code(response: str) -> int:
    """The status code of a SIP response text."""
    return int(response.split(" ", 2)[1])
