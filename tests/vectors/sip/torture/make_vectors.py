"""Write the SIP torture vectors in this directory: `NAME.sip`, one per RFC 4475 case.

Run `python tests/vectors/sip/torture/make_vectors.py` after editing; the .sip files are
committed, and `tests/sip/test_sip_torture.py` checks they are exactly what this script writes.

Each file is named after the RFC 4475 case whose property it exercises (wsinv, intmeth, esc01 ...),
but the messages are the project's own, written from RFC 3261's grammar (§7, §20, §25.1): own
hosts (RFC 2606/5737 example names and addresses), users, tags, Call-IDs, branches and bodies.
They are written from Python so that what a text editor would hide is explicit: CRLF line ends,
quoted-pair control bytes (NUL, BEL, DEL), UTF-8, binary bodies with bare LFs, lines thousands of
octets long; and so that Content-Length is counted, except where a wrong one is the point.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
CRLF = "\r\n"


def sip(*lines: str, body: bytes = b"") -> bytes:
    """A message: the start line and header lines joined by CRLF (a line may hold its own
    CRLF + whitespace, i.e. folding), the empty line, then `body`."""
    return (CRLF.join(lines) + CRLF + CRLF).encode() + body


def sdp(address: str, port: int, session: int, *extra: str) -> bytes:
    """A small audio offer from `address` (RFC 4566), CRLF line ends."""
    lines = [
        "v=0",
        f"o=- {session} {session} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        *extra,
    ]
    return (CRLF.join(lines) + CRLF).encode()


# --- RFC 4475 §3.1.1: valid messages


def wsinv() -> bytes:
    """§3.1.1.1: LWS and folding around every separator, compact and odd-case header names,
    leading zeros, quoted-pairs in display names, unknown headers/parameters, a pre-3261 branch."""
    body = sdp("198.51.100.20", 49170, 3917264510)
    return sip(
        "INVITE sip:agent@voice.example.net;flavour SIP/2.0",
        "TO :\r\n sip:agent@voice.example.net ;   tag    = 7bq2k0x",
        'from   : "5\\" screen \\\\ desk"\r\n  <sip:ann@caller.example.org>'
        "\r\n  ;\r\n  tag = a93k1",
        "MaX-fOrWaRdS: 0042",
        "Call-ID: 5kq9z.wsinv@198.51.100.20",
        "Content-Length   : " + str(len(body)),
        "cseq: 0017\r\n  INVITE",
        "Via  : SIP  /   2.0\r\n /UDP\r\n    198.51.100.20;branch=legacy-7731",
        "s :",
        "X-Pleasantly-Odd:   first part of the value\r\n\t and its continuation",
        "X-Separators-Only: ,;;,;,,;",
        "c\t:  application/sdp",
        "Route:\r\n <sip:relay.example.com;lr;flavour=mint;bare-flag>",
        "v:  SIP  / 2.0  / TCP     relay.example.com   ;\r\n  branch  =   z9hG4bK-r3lay1  ,"
        "\r\n SIP  /    2.0   / UDP  203.0.113.9   ; branch=\r\n z9hG4bK-edge42",
        'm:"Desk \\"Main\\" line" <sip:agent@203.0.113.9>\r\n ; extparam =\r\n      extvalue ;'
        "\r\n  flagparam ; q = 0.5",
        body=body,
    )


# token characters other than alphanumerics (§25.1): - . ! % * _ + ` ' ~
INTMETH_METHOD = "odd-Method.0123456789!%*_+`'~"
# user: unreserved (with every mark) and user-unreserved; password: unreserved and & = + $ ,
INTMETH_USER = "odd.user~(with)!marks*'_-&=+$,;?/"
INTMETH_PASSWORD = "p4ss&w=rd+$,~*'()!._-"
# word characters (§25.1) on both sides of the Call-ID's "@"
INTMETH_CALL_ID = "w0rd-.!%*_+`'~()<>:\\\"/[]?{}@intmeth.word-(2)<>:\\/[]?{}"
INTMETH_HEADER = "X-Odd~Name'+*_!.%"
INTMETH_UTF8 = "¿Qué tal? ☺ — ünïcödé, 漢字"
INTMETH_PARAM_UTF8 = "grüße καλημέρα こんにちは"


def intmeth() -> bytes:
    """§3.1.1.2: every token character in the method, branch, tag and parameter names; a URI
    whose user part holds ; ? / and a password; quoted-pairs escaping BEL, NUL and DEL; word
    characters in the Call-ID; UTF-8 in a quoted parameter and in a header value."""
    uri = f"sip:{INTMETH_USER}:{INTMETH_PASSWORD}@example.net"
    return sip(
        f"{INTMETH_METHOD} {uri} SIP/2.0",
        "Via: SIP/2.0/TCP 198.51.100.61;branch=z9hG4bK-~.!%*_+`'token",
        'To: "bell:\\\x07 nul:\\\x00 del:\\\x7f" <sip:' + INTMETH_USER + "@example.net>",
        "From: tok~en1 tok'en2+ `tok*en3%!.- <sip:caller@example.org>"
        f";tag=_tag~1'+`*%!-.;odd~Param'+*_!.-%=\"{INTMETH_PARAM_UTF8}\"",
        f"Call-ID: {INTMETH_CALL_ID}",
        f"CSeq: 2147483647 {INTMETH_METHOD}",
        "Max-Forwards: 255",
        f"{INTMETH_HEADER}: {INTMETH_UTF8}",
        "Content-Length: 0",
    )


def esc01() -> bytes:
    """§3.1.1.3: %-escapes that stay escaped: an escaped ':' and '@' in a user part, escaped
    letters (upper and lower case hex), escaped spaces; compact `i:` and `C:`; a folded Contact."""
    body = sdp("203.0.113.14", 50010, 1289054733)
    return sip(
        "INVITE sip:sip%3Aoperator%40pbx.example.org@gw.example.net SIP/2.0",
        "To: <sip:%61g%65nt@gw.example.net>",
        "From: <sip:My%20Phone%20Line@example.org>;tag=e01f4",
        "Max-Forwards: 70",
        "i: esc01.4b1d09e2aa1c",
        "CSeq: 3 INVITE",
        "Via: SIP/2.0/UDP 203.0.113.14;branch=z9hG4bK-esc01a",
        "C: application/sdp",
        "Contact:\r\n  <sip:d%65%73k@host.example.org>",
        f"Content-Length: {len(body)}",
        body=body,
    )


def escnull() -> bytes:
    """§3.1.1.4: `%00` in URI user parts: legal, and not a NUL octet."""
    return sip(
        "REGISTER sip:registrar.example.net SIP/2.0",
        "To: sip:zero-%00-byte@example.net",
        "From: sip:zero-%00-byte@example.net;tag=n0ll7",
        "Call-ID: escnull.77c0e3",
        "Max-Forwards: 70",
        "CSeq: 40961 REGISTER",
        "Via: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bK-escnull",
        "Contact: <sip:%00@192.0.2.30>",
        "Contact: <sip:%00%00@192.0.2.31>",
        "L:0",
    )


def esc02() -> bytes:
    """§3.1.1.5: `%` where it is no escape: an unknown method that merely looks like an escaped
    REGISTER, `%` in display names and a branch, a header whose name escapes "Contact"."""
    return sip(
        "REGIST%45R sip:registrar.example.net SIP/2.0",
        'To: "%ZZ%41 percent" <sip:desk@example.net>',
        'From: "%ZZ%41 percent" <sip:desk@example.net>;tag=pc7',
        "Max-Forwards: 70",
        "Call-ID: esc02.f0e1d2c3",
        "Via: SIP/2.0/UDP 198.51.100.71;branch=z9hG4bK-%41%ZZ1",
        "CSeq: 5 REGIST%45R",
        "Contact: <sip:first@198.51.100.71>",
        "Cont%61ct: <sip:second@198.51.100.72>",
        "Contact: <sip:third@198.51.100.73>",
        "l: 0",
    )


def lwsdisp() -> bytes:
    """§3.1.1.6: no whitespace between a token display name and `<`."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: operator<sip:operator@example.org>;tag=5521",
        "Max-Forwards: 70",
        "Call-ID: lwsdisp.20a9f7",
        "Via: SIP/2.0/UDP 192.0.2.44;branch=z9hG4bK-lwsd",
        "CSeq: 11 OPTIONS",
        "l: 0",
    )


LONGREQ_DISPLAY = "A display name that goes on " + "and on " * 40 + "until it stops"
LONGREQ_CALLER = "longcaller" * 8
LONGREQ_TAG = "7" + "431" * 60 + "9"
LONGREQ_PARAM = "unknownparam" + "verylong" * 25
LONGREQ_FLAG = "valuelessflag" + "evenlonger" * 12
LONGREQ_CALL_ID = "longreq." + "extended" * 30 + ".id"
LONGREQ_HEADER = "X-" + "-".join(["Lengthy"] * 40) + "-Name"
LONGREQ_HOPS = 36  # Via values; the last one is the originator's, with received=
VIA_SPELLINGS = ("Via", "v", "VIA", "via ", "V", "vIa   ")


def longreq_vias() -> list[str]:
    """LONGREQ_HOPS Via values over lines of 1, 2 or 3 values, in every spelling (§7.3.3)."""
    values = [f"SIP/2.0/TCP hop{n}.example.org;branch=z9hG4bK-lr{n}" for n in range(35, 0, -1)]
    values.append("SIP/2.0/TCP origin.example.org;branch=z9hG4bK-lr0;received=203.0.113.77")
    assert len(values) == LONGREQ_HOPS
    lines, i, size = [], 0, 1
    while i < len(values):
        spelling = VIA_SPELLINGS[len(lines) % len(VIA_SPELLINGS)]
        lines.append(f"{spelling}: " + ", ".join(values[i : i + size]))
        i, size = i + size, size % 3 + 1
    return lines


def longreq() -> bytes:
    """§3.1.1.7: very long display name, user, tag, parameters, Call-ID and header name, and
    36 Vias spread over lines in every spelling, some with spaces before the colon."""
    body = sdp("203.0.113.77", 51000, 1234509876)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        f'To: "{LONGREQ_DISPLAY}" <sip:desk@example.net:5080;{LONGREQ_PARAM}=x;{LONGREQ_FLAG};'
        "another-param=two>",
        f"From: sip:{LONGREQ_CALLER}@origin.example.org;tag={LONGREQ_TAG};"
        f"{LONGREQ_PARAM}={LONGREQ_TAG};{LONGREQ_FLAG}",
        f"Call-ID: {LONGREQ_CALL_ID}",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
        *longreq_vias(),
        f"Contact: <sip:{LONGREQ_CALLER}@origin.example.org;transport=tcp>",
        f"{LONGREQ_HEADER}: {'a long value ' * 20}end",
        "Content-Type: application/sdp",
        f"l: {len(body)}",
        body=body,
    )


DBLREQ_SECOND = sip(
    "INVITE sip:desk@example.net SIP/2.0",
    "To: sip:desk@example.net",
    "From: sip:front@example.org;tag=2nd",
    "Call-ID: dblreq.second.61d2",
    "CSeq: 1 INVITE",
    "Via: SIP/2.0/UDP 198.51.100.52;branch=z9hG4bK-dbl2",
    "Max-Forwards: 70",
    "Content-Length: 0",
)


def dblreq() -> bytes:
    """§3.1.1.8: Content-Length 0, then a whole second request in the same datagram: octets
    after the body are not part of the message (§18.3)."""
    first = sip(
        "REGISTER sip:registrar.example.net SIP/2.0",
        "To: sip:front@example.org",
        "From: sip:front@example.org;tag=1st",
        "I: dblreq.first.61d1",
        "CSeq: 12 REGISTER",
        "Via: SIP/2.0/UDP 198.51.100.52;branch=z9hG4bK-dbl1",
        "Max-Forwards: 70",
        "Contact: <sip:front@198.51.100.52>",
        "L:0",
    )
    return first + DBLREQ_SECOND


def semiuri() -> bytes:
    """§3.1.1.9: a ';' in a URI user part is the user's, not a parameter; Accept repeated."""
    return sip(
        "OPTIONS sip:desk;room=4%2F12@example.net SIP/2.0",
        "To: <sip:desk;room=4%2F12@example.net>",  # §20.10: a ";" in the URI needs <>
        "From: <sip:caller@example.org>;tag=se3",
        "Call-ID: semiuri.0c9b",
        "CSeq: 8 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.88;branch=z9hG4bK-semi",
        "Max-Forwards: 70",
        "Accept: application/sdp, text/plain",
        "Accept: message/sipfrag",
        "Accept: application/json,multipart/mixed",
        "l: 0",
    )


TRANSPORTS = ("UDP", "SCTP", "TLS-SCTP", "WSS", "CARRIER-PIGEON", "TCP")


def transports() -> bytes:
    """§3.1.1.10: usual, unusual but reasonable, and unknown transports in Via."""
    hosts = ("192.0.2.5", "relay1.example.org", "relay2.example.org", "relay3.example.org:8443")
    hosts += ("198.51.100.200", "origin.example.org")
    vias = [
        f"Via: SIP/2.0/{t} {h};branch=z9hG4bK-tp{i}"
        for i, (t, h) in enumerate(zip(TRANSPORTS, hosts, strict=True))
    ]
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: <sip:caller@origin.example.org>;tag=tp0",
        "Call-ID: transports.5a5a",
        "CSeq: 2 OPTIONS",
        *vias,
        "Max-Forwards: 64",
        "Content-Length: 0",
    )


MPART_BOUNDARY = "gw-torture-7e21c4"
# an attachment with every octet value: bare LFs and CRs, NUL, 0xFF, and a CRLFCRLF inside
MPART_BINARY = bytes(range(256)) + b"\r\n\r\nnot headers\n\x00" + bytes(range(255, -1, -1))


def mpart01() -> bytes:
    """§3.1.1.11: a multipart/mixed body with a binary part (bare LFs, NULs, a CRLFCRLF): the
    body is framed by Content-Length alone; a valueless `rport` in Via (RFC 3581)."""
    boundary = MPART_BOUNDARY.encode()
    body = (
        b"--" + boundary + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"A short note, then an attachment in raw octets.\r\n"
        b"--" + boundary + b"\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + MPART_BINARY + b"\r\n"
        b"--" + boundary + b"--\r\n"
    )
    return sip(
        "MESSAGE sip:desk@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.15;rport;branch=z9hG4bK-mp01",
        "Max-Forwards: 70",
        "From: <sip:sender@example.org>;tag=mp7",
        "To: <sip:desk@example.net>",
        "Call-ID: mpart01.3e9f5a",
        "CSeq: 4 MESSAGE",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed;boundary="{MPART_BOUNDARY}"',
        f"Content-Length: {len(body)}",
        body=body,
    )


UNREASON_PHRASE = "Bien reçu — всё хорошо — 了解しました"


def unreason() -> bytes:
    """§3.1.1.12: a reason phrase in UTF-8 (§25.1 reason-phrase allows UTF8-NONASCII)."""
    body = sdp("203.0.113.40", 40400, 7736120045)
    return sip(
        f"SIP/2.0 200 {UNREASON_PHRASE}",
        "Via: SIP/2.0/UDP 192.0.2.61;branch=z9hG4bK-unr1",
        "Call-ID: unreason.19b2",
        "CSeq: 21 INVITE",
        "From: <sip:caller@example.org>;tag=ur1",
        "To: <sip:desk@example.net>;tag=ur2",
        "Contact: <sip:desk@203.0.113.40>",
        "Content-Type: application/sdp",
        f"l: {len(body)}",
        body=body,
    )


def noreason() -> bytes:
    """§3.1.1.13: an empty reason phrase (the SP before it is still there)."""
    return sip(
        "SIP/2.0 100 ",
        "Via: SIP/2.0/UDP 192.0.2.62;branch=z9hG4bK-nor1",
        "Call-ID: noreason.88aa",
        "CSeq: 6 INVITE",
        "From: <sip:caller@example.org>;tag=nr1",
        "To: <sip:desk@example.net>",
        "Content-Length: 0",
    )


# --- RFC 4475 §3.1.2: invalid messages


def badinv01() -> bytes:
    """§3.1.2.1: extraneous separators: empty Via values between commas, runs of ';'."""
    body = sdp("198.51.100.4", 40000, 5501)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;;tag=bi1",
        "Max-Forwards: 70",
        "Call-ID: badinv01.7fe2",
        "Via: SIP/2.0/UDP 198.51.100.4;;,;,,",
        "Contact: <sip:caller@198.51.100.4>;;;;",
        "CSeq: 1 INVITE",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


def clerr() -> bytes:
    """§3.1.2.2: Content-Length larger than the datagram's body."""
    body = sdp("198.51.100.5", 40002, 5502)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "Max-Forwards: 70",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=cl1",
        "Call-ID: clerr.4a4a",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 198.51.100.5;branch=z9hG4bK-clerr",
        "Content-Type: application/sdp",
        "Content-Length: 9999",
        body=body,
    )


def ncl() -> bytes:
    """§3.1.2.3: a negative Content-Length."""
    body = sdp("198.51.100.6", 40004, 5503)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "Max-Forwards: 70",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=nc1",
        "Call-ID: ncl.0b0b",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 198.51.100.6;branch=z9hG4bK-ncl",
        "Content-Type: application/sdp",
        "Content-Length: -42",
        body=body,
    )


SCALAR02_CSEQ = "18446744073709551617 REGISTER"  # 2**64 + 1; CSeq must be < 2**31 (§8.1.1.5)


def scalar02() -> bytes:
    """§3.1.2.4: request scalars past their range: CSeq, Max-Forwards (256 > 255, §20.22),
    Expires and a Contact's expires beyond 2**32 - 1."""
    return sip(
        "REGISTER sip:registrar.example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.70;branch=z9hG4bK-sc02",
        "Max-Forwards: 256",
        "From: <sip:desk@example.net>;tag=sc1",
        "To: <sip:desk@example.net>",
        "Call-ID: scalar02.e1e1",
        f"CSeq: {SCALAR02_CSEQ}",
        "Contact: <sip:desk@192.0.2.70>;expires=281474976710656",
        "Expires: 99999999999999999999",
        "Content-Length: 0",
    )


def scalarlg() -> bytes:
    """§3.1.2.5: a response with overlarge scalars: CSeq, Retry-After, a 4-digit warn-code."""
    return sip(
        "SIP/2.0 503 Service Unavailable",
        "Via: SIP/2.0/TCP 192.0.2.71;branch=z9hG4bK-sclg",
        "To: <sip:desk@example.net>;tag=sl2",
        "From: <sip:caller@example.org>;tag=sl1",
        "Call-ID: scalarlg.f2f2",
        "CSeq: 99999999999999999999 OPTIONS",
        "Retry-After: 18446744073709551616",
        'Warning: 1234 gw.example.net "an overlong warn-code"',
        "Content-Length: 0",
    )


def quotbal() -> bytes:
    """§3.1.2.6: a display name whose quoted-string never ends."""
    body = sdp("192.0.2.72", 40006, 5504)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        'To: "Front desk <sip:desk@example.net>',
        "From: sip:caller@example.org;tag=qb1",
        "Max-Forwards: 70",
        "Call-ID: quotbal.3c3c",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.72;branch=z9hG4bK-quot",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


def bad_request_line(case: str, request_line: str, host: str) -> bytes:
    """An INVITE whose only fault is its request line (§3.1.2.7-9)."""
    body = sdp(host, 40008, 5505)
    return sip(
        request_line,
        "To: sip:desk@example.net",
        f"From: sip:caller@example.org;tag={case}1",
        "Max-Forwards: 70",
        f"Call-ID: {case}.5d5d",
        "CSeq: 1 INVITE",
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-{case}",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


def ltgtruri() -> bytes:
    """§3.1.2.7: <> around the Request-URI."""
    return bad_request_line("ltgtruri", "INVITE <sip:desk@example.net> SIP/2.0", "192.0.2.73")


def lwsruri() -> bytes:
    """§3.1.2.8: whitespace inside the Request-URI (before a parameter)."""
    line = "INVITE sip:desk@example.net; maddr=198.51.100.1 SIP/2.0"
    return bad_request_line("lwsruri", line, "192.0.2.74")


def lwsstart() -> bytes:
    """§3.1.2.9: two SPs between the request line's elements."""
    line = "INVITE  sip:desk@example.net  SIP/2.0"
    return bad_request_line("lwsstart", line, "192.0.2.75")


def trws() -> bytes:
    """§3.1.2.10: SPs after the SIP-Version on the request line."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0   ",
        "Via: SIP/2.0/UDP 192.0.2.76;branch=z9hG4bK-trws",
        "Max-Forwards: 70",
        "From: <sip:caller@example.org>;tag=tw1",
        "To: <sip:desk@example.net>",
        "Call-ID: trws.6e6e",
        "CSeq: 1 OPTIONS",
        "l: 0",
    )


def escruri() -> bytes:
    """§3.1.2.11: escaped headers in the Request-URI (a Route and a Priority)."""
    body = sdp("192.0.2.77", 40010, 5506)
    return sip(
        "INVITE sip:desk@example.net?Route=%3Csip:relay.example.org%3E&Priority=urgent SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=er1",
        "Max-Forwards: 70",
        "Call-ID: escruri.7f7f",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.77;branch=z9hG4bK-escr",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


BADDATE = "Mon, 03 Mar 2025 09:30:00 PST"  # §25.1 SIP-date: only GMT


def baddate() -> bytes:
    """§3.1.2.12: a Date whose zone is not GMT."""
    body = sdp("192.0.2.78", 40012, 5507)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=bd1",
        "Max-Forwards: 70",
        "Call-ID: baddate.8a8a",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.78;branch=z9hG4bK-bdat",
        f"Date: {BADDATE}",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


def register(case: str, host: str, *headers: str) -> bytes:
    """A REGISTER from desk@example.net at `host`, with `headers` added."""
    return sip(
        "REGISTER sip:registrar.example.net SIP/2.0",
        "To: sip:desk@example.net",
        f"From: sip:desk@example.net;tag={case}7",
        "Max-Forwards: 70",
        f"Call-ID: {case}.9b9b",
        "CSeq: 2 REGISTER",
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK-{case}",
        *headers,
        "l: 0",
    )


def regbadct() -> bytes:
    """§3.1.2.13: a Contact URI with a '?' (escaped header) not enclosed in <>."""
    contact = "Contact: sip:desk@198.51.100.8?Route=%3Csip:relay.example.org%3E"
    return register("regbadct", "198.51.100.8", contact)


def badaspec() -> bytes:
    """§3.1.2.14: whitespace inside <> around an addr-spec."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.79;branch=z9hG4bK-bads",
        "Max-Forwards: 70",
        'From: "Lobby, North" <sip:lobby@example.org>;tag=ba1',
        'To: "Front Desk" < sip:desk@example.net >',
        "Call-ID: badaspec.0c0c",
        "CSeq: 3 OPTIONS",
        "l: 0",
    )


def baddn() -> bytes:
    """§3.1.2.15: a display name with a non-token character (',') left unquoted."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.80;branch=z9hG4bK-bdn",
        "Max-Forwards: 70",
        "From: Lobby, North <sip:lobby@example.org>;tag=77",
        "To: Desk, Front <sip:desk@example.net>",
        "Call-ID: baddn.1d1d",
        "CSeq: 3 OPTIONS",
        "l: 0",
    )


def badvers() -> bytes:
    """§3.1.2.16: an unknown SIP version, in the request line and in the Via."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/3.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=bv1",
        "Max-Forwards: 70",
        "Call-ID: badvers.2e2e",
        "CSeq: 1 OPTIONS",
        "Via: SIP/3.0/UDP 192.0.2.81;branch=z9hG4bK-bver",
        "l: 0",
    )


def mismatch01() -> bytes:
    """§3.1.2.17: the CSeq method is not the request's."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=mm1",
        "Max-Forwards: 70",
        "Call-ID: mismatch01.3f3f",
        "CSeq: 12 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.82;branch=z9hG4bK-mm01",
        "l: 0",
    )


def mismatch02() -> bytes:
    """§3.1.2.18: an unknown method, with a body, whose CSeq names another method."""
    body = b"opaque payload of an unknown method\r\n"
    return sip(
        "FROBNICATE sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=mm2",
        "Max-Forwards: 70",
        "Call-ID: mismatch02.4a4a",
        "CSeq: 13 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.83;branch=z9hG4bK-mm02",
        "Content-Type: application/octet-stream",
        f"l: {len(body)}",
        body=body,
    )


def bigcode() -> bytes:
    """§3.1.2.19: a status code past 32 bits."""
    return sip(
        "SIP/2.0 4294967297 a status code that overflows 32 bits",
        "Via: SIP/2.0/UDP 192.0.2.84;branch=z9hG4bK-big",
        "To: <sip:desk@example.net>;tag=bc2",
        "From: <sip:caller@example.org>;tag=bc1",
        "Call-ID: bigcode.5b5b",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    )


# --- RFC 4475 §3.2: transaction layer


def badbranch() -> bytes:
    """§3.2.1: a branch that is the magic cookie alone, no transaction identifier after it."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=bb1",
        "Max-Forwards: 70",
        "Call-ID: badbranch.6c6c",
        "CSeq: 1 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.85;branch=z9hG4bK",
        "l: 0",
    )


# --- RFC 4475 §3.3: application layer


def insuf() -> bytes:
    """§3.3.1: To, From and Call-ID missing."""
    body = sdp("192.0.2.86", 40014, 5508)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.86;branch=z9hG4bK-insf",
        "Max-Forwards: 70",
        "Contact: <sip:caller@192.0.2.86>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


UNKSCM_URI = "zzz-unheard-of:anything/at;all?really"


def unkscm() -> bytes:
    """§3.3.2: a Request-URI of an unknown scheme (the UA answers 416)."""
    return sip(
        f"OPTIONS {UNKSCM_URI} SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=us1",
        "Max-Forwards: 70",
        "Call-ID: unkscm.7d7d",
        "CSeq: 1 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.87;branch=z9hG4bK-unks",
        "l: 0",
    )


NOVELSC_URI = "iris.beep://203.0.113.50:702"  # RFC 3983: a scheme with a '.'


def novelsc() -> bytes:
    """§3.3.3: a Request-URI of a known but atypical scheme (the UA answers 416)."""
    return sip(
        f"OPTIONS {NOVELSC_URI} SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=nv1",
        "Max-Forwards: 70",
        "Call-ID: novelsc.8e8e",
        "CSeq: 1 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.89;branch=z9hG4bK-novl",
        "l: 0",
    )


def unksm2() -> bytes:
    """§3.3.4: To and From of schemes that are not sip/sips (a registrar answers 400)."""
    return sip(
        "REGISTER sip:registrar.example.net SIP/2.0",
        "To: urn:uuid:0f8a3c52-7d41-4e9b-a6c2-31d5e8b90a17",
        "From: <mailto:front.desk@example.org>;tag=u2",
        "Max-Forwards: 70",
        "Call-ID: unksm2.9f9f",
        "CSeq: 1 REGISTER",
        "Via: SIP/2.0/UDP 192.0.2.90;branch=z9hG4bK-unk2",
        "Contact: <sip:front.desk@192.0.2.90>",
        "l: 0",
    )


def bext01() -> bytes:
    """§3.3.5: Require and Proxy-Require naming extensions nobody has (the UA answers 420)."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=bx1",
        "Max-Forwards: 70",
        "Call-ID: bext01.0a1a",
        "CSeq: 1 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.91;branch=z9hG4bK-bext",
        "Require: no-such-extension, nor-this-one",
        "Proxy-Require: proxies-lack-it,  and-this-too",
        "l: 0",
    )


INVUT_BODY = b"\x00\x01 a format no one has heard of \xfe\xff\r\n"


def invut() -> bytes:
    """§3.3.6: an INVITE whose body is of an unknown type (the UA answers 415)."""
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "Contact: <sip:caller@192.0.2.92>",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=iu1",
        "Max-Forwards: 70",
        "Call-ID: invut.1b2b",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.92;branch=z9hG4bK-invu",
        "Content-Type: application/x-never-heard-of",
        f"Content-Length: {len(INVUT_BODY)}",
        body=INVUT_BODY,
    )


REGAUT01_CREDENTIALS = 'FancyNewScheme blob="a, b", other=xyz'


def regaut01() -> bytes:
    """§3.3.7: an Authorization of an unknown scheme (a registrar answers 401)."""
    return register("regaut01", "192.0.2.93", f"Authorization: {REGAUT01_CREDENTIALS}")


def multi01() -> bytes:
    """§3.3.8: To, From, Call-ID and CSeq, each given twice."""
    body = sdp("192.0.2.94", 40016, 5509)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.94;branch=z9hG4bK-mul1",
        "Max-Forwards: 70",
        "CSeq: 1 INVITE",
        "Call-ID: multi01.2c3c",
        "Contact: <sip:caller@192.0.2.94>",
        "Call-ID: multi01.other",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=ml1",
        "To: sip:someone-else@example.net",
        "From: sip:impostor@example.org;tag=ml2",
        "CSeq: 2 INVITE",
        "Content-Type: application/sdp",
        f"l: {len(body)}",
        body=body,
    )


def mcl01() -> bytes:
    """§3.3.9: two Content-Length values that disagree."""
    body = b"a message body of 30 octets\r\n."
    assert len(body) == 30
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bK-mcl",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=mc1",
        "Call-ID: mcl01.3d4d",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 3",
        "Content-Type: text/plain",
        "l: 30",
        body=body,
    )


def bcast() -> bytes:
    """§3.3.10: a 200 whose second Via is the broadcast address."""
    return sip(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 198.51.100.33;branch=z9hG4bK-bc1;received=198.51.100.33",
        "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK-bc0",
        "Max-Forwards: 70",
        "To: <sip:desk@example.net>;tag=bk2",
        "From: <sip:caller@example.org>;tag=bk1",
        "Call-ID: bcast.4e5e",
        "CSeq: 1 OPTIONS",
        "l: 0",
    )


def zeromf() -> bytes:
    """§3.3.11: Max-Forwards 0 (an endpoint still processes it; a proxy answers 483)."""
    return sip(
        "OPTIONS sip:desk@example.net SIP/2.0",
        "Max-Forwards: 0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=zm1",
        "Call-ID: zeromf.5f6f",
        "CSeq: 1 OPTIONS",
        "Via: SIP/2.0/UDP 192.0.2.96;branch=z9hG4bK-zmf",
        "l: 0",
    )


def cparam01() -> bytes:
    """§3.3.12: a Contact without <>: its parameter is the header's, not the URI's (§20.10)."""
    return register("cparam01", "192.0.2.97", "Contact: sip:desk@192.0.2.97;novelparam")


def cparam02() -> bytes:
    """§3.3.13: a Contact in <> with a URI parameter."""
    return register("cparam02", "192.0.2.98", "Contact: <sip:desk@192.0.2.98;novelparam>")


def regescrt() -> bytes:
    """§3.3.14: a Contact (compact `m:`) in <> whose URI carries an escaped Route header."""
    contact = "m: <sip:desk@192.0.2.99?Route=%3Csip:relay.example.org%3E>"
    return register("regescrt", "192.0.2.99", contact)


SDP01_ACCEPT = "text/x-nothing-reads-this"


def sdp01() -> bytes:
    """§3.3.15: an offer whose Accept excludes SDP (the UA answers 406)."""
    body = sdp("192.0.2.100", 40018, 5510)
    return sip(
        "INVITE sip:desk@example.net SIP/2.0",
        "To: sip:desk@example.net",
        "From: sip:caller@example.org;tag=sd1",
        "Max-Forwards: 70",
        "Call-ID: sdp01.6a7a",
        "CSeq: 1 INVITE",
        "Via: SIP/2.0/UDP 192.0.2.100;branch=z9hG4bK-sdp1",
        "Contact: <sip:caller@192.0.2.100>",
        f"Accept: {SDP01_ACCEPT}",
        "Content-Type: application/sdp",
        f"l: {len(body)}",
        body=body,
    )


# --- RFC 4475 §3.4: backward compatibility


def inv2543() -> bytes:
    """§3.4.1: RFC 2543 style: no branch, no tags, no Max-Forwards; a To without <> whose
    `;user=phone` is therefore a header parameter, a From in <> where it is the URI's."""
    body = sdp("198.51.100.90", 30000, 2543)
    return sip(
        "INVITE sip:+15550199@example.net;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.90",
        "From: <sip:+15550142@legacy.example.org;user=phone>",
        "To: sip:+15550199@example.net;user=phone",
        "Call-ID: inv2543.7b8b@198.51.100.90",
        "CSeq: 1 INVITE",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
        body=body,
    )


CASES = (
    wsinv,
    intmeth,
    esc01,
    escnull,
    esc02,
    lwsdisp,
    longreq,
    dblreq,
    semiuri,
    transports,
    mpart01,
    unreason,
    noreason,
    badinv01,
    clerr,
    ncl,
    scalar02,
    scalarlg,
    quotbal,
    ltgtruri,
    lwsruri,
    lwsstart,
    trws,
    escruri,
    baddate,
    regbadct,
    badaspec,
    baddn,
    badvers,
    mismatch01,
    mismatch02,
    bigcode,
    badbranch,
    insuf,
    unkscm,
    novelsc,
    unksm2,
    bext01,
    invut,
    regaut01,
    multi01,
    mcl01,
    bcast,
    zeromf,
    cparam01,
    cparam02,
    regescrt,
    sdp01,
    inv2543,
)


def vectors() -> dict[str, bytes]:
    """File name -> content, one per case."""
    return {f"{case.__name__}.sip": case() for case in CASES}


def main() -> None:
    for stale in HERE.glob("*.sip"):
        stale.unlink()
    for name, data in vectors().items():
        (HERE / name).write_bytes(data)
        print(name, len(data), file=sys.stderr)


if __name__ == "__main__":
    main()
