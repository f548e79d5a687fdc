"""RFC 4475's SIP torture cases against the parser (`gateway.sip.message`).

Each case is a vector file `tests/vectors/sip/torture/NAME.sip`, named after the RFC 4475 case
(§3) whose property it exercises. The messages are the project's own, written by
`tests/vectors/sip/torture/make_vectors.py` from RFC 3261's grammar (the first test checks the
files are what it writes); they are not the RFC's messages. One test per case asserts what the
parser makes of it:

* §3.1.1, valid messages: parsed, to the values the case is about (folding, LWS everywhere,
  escapes, quoted-pairs, odd but legal characters, long values, a trailing second request...).
* §3.1.2, invalid messages: refused with `SipParseError` and the status to answer (400, 505),
  with the partial request the user agent routes that answer by. A response (scalarlg, bigcode)
  is refused too; nobody answers a response. Where the RFC lets an element be liberal
  ("it is reasonable to reject ... elements may be liberal"), the parser is, and the test pins
  what it accepts: trws (trailing spaces on the request line), escruri (headers in the
  Request-URI, kept out of the message's headers), baddate (Date not interpreted), regbadct
  (a Contact URI with headers not in <>), badaspec (spaces inside <>), baddn (an unquoted comma
  in a display name).
* §3.2-§3.4 (transaction, application and compatibility semantics): parsed where they are
  syntactically valid, to the fields the user agent decides on. The answers the RFC expects
  there (416 for unkscm and novelsc, 420 for bext01, 415 for invut, 406 for sdp01, 483 for a
  proxy seeing zeromf, a registrar's answers to cparam01/02, regescrt, regaut01) are the user
  agent's business, not the parser's, and are not asserted here.
* unksm2 parses: To and From may hold any absolute URI (RFC 3261 §20.20, §20.39; carriers send
  tel:), so its urn: and mailto: are read; a registrar would refuse the REGISTER (RFC 4475
  §3.3.4), and this gateway answers REGISTER 405 anyway.

Not exercised because the gateway has no such feature: multipart bodies (mpart01's body is
carried opaque, only its framing is checked), RFC 2543 transaction matching for inv2543 (its
parse is checked), and proxy or registrar behaviour.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gateway.errors import SipParseError
from gateway.sip.message import NameAddr, SipRequest, SipResponse, parse
from gateway.sip.policy import SourcePolicy
from gateway.sip.transaction import Address
from gateway.sip.ua import EndpointConfig, SipEndpoint

TORTURE = Path(__file__).parent.parent / "vectors" / "sip" / "torture"

# RFC 4475 §3: every case, by the name the RFC gives its message
RFC4475_CASES = {
    "3.1.1": "wsinv intmeth esc01 escnull esc02 lwsdisp longreq dblreq semiuri transports "
    "mpart01 unreason noreason",
    "3.1.2": "badinv01 clerr ncl scalar02 scalarlg quotbal ltgtruri lwsruri lwsstart trws "
    "escruri baddate regbadct badaspec baddn badvers mismatch01 mismatch02 bigcode",
    "3.2": "badbranch",
    "3.3": "insuf unkscm novelsc unksm2 bext01 invut regaut01 multi01 mcl01 bcast zeromf "
    "cparam01 cparam02 regescrt sdp01",
    "3.4": "inv2543",
}


def message(name: str) -> bytes:
    return (TORTURE / f"{name}.sip").read_bytes()


def request(name: str) -> SipRequest:
    msg = parse(message(name))
    assert isinstance(msg, SipRequest)
    return msg


def response(name: str) -> SipResponse:
    msg = parse(message(name))
    assert isinstance(msg, SipResponse)
    return msg


def declared_length(msg: SipRequest | SipResponse) -> int:
    return int(msg.headers.get("Content-Length") or "-1")


def test_the_vector_files_are_what_make_vectors_writes_one_per_rfc_case() -> None:
    spec = importlib.util.spec_from_file_location("torture_vectors", TORTURE / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written: dict[str, bytes] = module.vectors()
    cases = {f"{name}.sip" for names in RFC4475_CASES.values() for name in names.split()}
    assert len(cases) == 49
    assert set(written) == cases == {p.name for p in TORTURE.glob("*.sip")}
    for name, data in written.items():
        assert (TORTURE / name).read_bytes() == data, f"{name}: run make_vectors.py"
        # CRLF line ends throughout the headers, never a bare LF or CR
        head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"")
        assert b"\n" not in head and b"\r" not in head, name


# --- §3.1.1 valid messages


def test_wsinv_short_tortuous_invite() -> None:
    """§3.1.1.1: folding, LWS around every separator (the Via's slashes too), quoted-pairs in
    display names, compact and odd-case names, unknown headers and parameters, leading zeros."""
    msg = request("wsinv")
    assert msg.method == "INVITE"
    ruri = msg.request_uri
    assert (ruri.user, ruri.host, ruri.params) == ("agent", "voice.example.net", {"flavour": None})
    assert msg.to.display is None and msg.to.tag == "7bq2k0x"
    assert str(msg.to.uri) == "sip:agent@voice.example.net"
    assert msg.from_.display == '5" screen \\ desk'  # "5\" screen \\ desk" unquoted
    assert msg.from_.tag == "a93k1" and str(msg.from_.uri) == "sip:ann@caller.example.org"
    assert NameAddr.parse(str(msg.from_)).display == msg.from_.display  # re-escaped on output
    assert msg.max_forwards == 42  # 0042
    assert msg.call_id == "5kq9z.wsinv@198.51.100.20"
    assert (msg.cseq.seq, msg.cseq.method) == (17, "INVITE")  # 0017, folded
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "198.51.100.20", "legacy-7731"),
        ("TCP", "relay.example.com", "z9hG4bK-r3lay1"),
        ("UDP", "203.0.113.9", "z9hG4bK-edge42"),
    ]
    assert msg.headers.get("Subject") == ""  # `s :` with an empty value
    assert msg.headers.get("X-Pleasantly-Odd") == "first part of the value and its continuation"
    assert msg.headers.get("X-Separators-Only") == ",;;,;,,;"
    (route,) = msg.routes
    assert route.uri.params == {"lr": None, "flavour": "mint", "bare-flag": None}
    (contact,) = msg.contacts  # `m:`
    assert contact.display == 'Desk "Main" line'
    assert contact.params == {"extparam": "extvalue", "flagparam": None, "q": "0.5"}
    assert msg.content_type == "application/sdp"  # `c<TAB>:`
    assert len(msg.body) == declared_length(msg) == 160
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"a=rtpmap:8 PCMA/8000\r\n")


def test_intmeth_wide_range_of_valid_characters() -> None:
    """§3.1.1.2: every token character in the method, a URI user with `;`, `?`, `/` and a
    password, quoted-pairs escaping BEL, NUL and DEL, word characters in the Call-ID, UTF-8."""
    msg = request("intmeth")
    method = "odd-Method.0123456789!%*_+`'~"
    assert msg.method == method and msg.cseq.method == method and msg.cseq.seq == 2**31 - 1
    ruri = msg.request_uri
    user = "odd.user~(with)!marks*'_-&=+$,;?/"
    assert ruri.user == user and ruri.password == "p4ss&w=rd+$,~*'()!._-"
    assert ruri.host == "example.net" and ruri.headers == {} and ruri.params == {}
    assert msg.top_via.branch == "z9hG4bK-~.!%*_+`'token"
    assert msg.to.display == "bell:\x07 nul:\x00 del:\x7f"
    assert msg.to.uri.user == user
    assert msg.from_.display == "tok~en1 tok'en2+ `tok*en3%!.-"
    assert msg.from_.tag == "_tag~1'+`*%!-."
    assert msg.from_.params["odd~param'+*_!.-%"] == "grüße καλημέρα こんにちは"
    assert msg.call_id == "w0rd-.!%*_+`'~()<>:\\\"/[]?{}@intmeth.word-(2)<>:\\/[]?{}"
    assert msg.max_forwards == 255
    assert msg.headers.get("X-Odd~Name'+*_!.%") == "¿Qué tal? ☺ — ünïcödé, 漢字"
    # the NUL goes out again as a quoted-pair (a bare one is refused), and comes back the same
    assert "\\\x00" in str(msg.to) and "\\\x07" in str(msg.to)
    again = NameAddr.parse(str(msg.to))
    assert again.display == msg.to.display and again.uri == msg.to.uri


def test_esc01_valid_use_of_the_percent_escape() -> None:
    """§3.1.1.3: escapes stay escaped (a `%3A` in a user part is not a colon)."""
    msg = request("esc01")
    ruri = msg.request_uri
    assert (ruri.scheme, ruri.user, ruri.host, ruri.password) == (
        "sip",
        "sip%3Aoperator%40pbx.example.org",
        "gw.example.net",
        None,
    )
    assert msg.to.uri.user == "%61g%65nt" and msg.from_.uri.user == "My%20Phone%20Line"
    assert msg.call_id == "esc01.4b1d09e2aa1c"  # `i:` compact form
    assert msg.content_type == "application/sdp"  # `C:` compact form
    (contact,) = msg.contacts  # folded onto the next line
    assert contact.uri.user == "d%65%73k" and contact.uri.host == "host.example.org"
    assert len(msg.body) == declared_length(msg) > 0


def test_escnull_escaped_nulls_in_uris() -> None:
    """§3.1.1.4: `%00` in URI user parts is legal; it is not a NUL byte."""
    msg = request("escnull")
    assert msg.to.uri.user == "zero-%00-byte" and msg.from_.uri.user == "zero-%00-byte"
    assert [c.uri.user for c in msg.contacts] == ["%00", "%00%00"]
    assert msg.cseq.seq == 40961 and msg.body == b""  # `L:0`


def test_esc02_percent_is_not_an_escape_outside_uris() -> None:
    """§3.1.1.5: an unknown method that is not REGISTER, `%` in display names and a branch, a
    header name that is not Contact."""
    msg = request("esc02")
    assert msg.method == "REGIST%45R" != "REGISTER"
    assert msg.cseq.method == "REGIST%45R"
    assert msg.to.display == "%ZZ%41 percent" and msg.from_.display == "%ZZ%41 percent"
    assert msg.top_via.branch == "z9hG4bK-%41%ZZ1"
    assert [str(c.uri) for c in msg.contacts] == [
        "sip:first@198.51.100.71",
        "sip:third@198.51.100.73",
    ]
    assert msg.headers.get("Cont%61ct") == "<sip:second@198.51.100.72>"


def test_lwsdisp_no_space_between_display_name_and_uri() -> None:
    msg = request("lwsdisp")  # §3.1.1.6
    assert msg.from_.display == "operator" and str(msg.from_.uri) == "sip:operator@example.org"
    assert msg.from_.tag == "5521"


def test_longreq_long_values_and_36_vias() -> None:
    """§3.1.1.7: long display name, user, tag, parameters, Call-ID and header name; every
    spelling and compact form of Via, with spaces before the colon."""
    msg = request("longreq")
    assert msg.to.display == f"A display name that goes on {'and on ' * 40}until it stops"
    long_param, flag = "unknownparam" + "verylong" * 25, "valuelessflag" + "evenlonger" * 12
    assert msg.to.uri.port == 5080
    assert msg.to.uri.params == {long_param: "x", flag: None, "another-param": "two"}
    assert msg.from_.uri.user == "longcaller" * 8
    tag = "7" + "431" * 60 + "9"
    assert msg.from_.params == {"tag": tag, long_param: tag, flag: None}
    assert msg.call_id == f"longreq.{'extended' * 30}.id"
    hosts = [v.host for v in msg.vias]
    assert hosts == [f"hop{n}.example.org" for n in range(35, 0, -1)] + ["origin.example.org"]
    assert all(v.transport == "TCP" for v in msg.vias)
    assert msg.vias[-1].received == "203.0.113.77" and msg.max_forwards == 70
    for spelling in (b"\r\nVia: ", b"\r\nv: ", b"\r\nVIA: ", b"\r\nvia : ", b"\r\nV: "):
        assert spelling in message("longreq")
    name = "X-" + "-".join(["Lengthy"] * 40) + "-Name"
    assert msg.headers.get(name) == "a long value " * 20 + "end"
    assert len(msg.body) == declared_length(msg) > 0


def test_dblreq_extra_octets_after_the_body_are_ignored() -> None:
    """§3.1.1.8: Content-Length 0, then a whole second request in the same datagram."""
    msg = request("dblreq")
    assert msg.method == "REGISTER" and msg.body == b""
    assert msg.call_id == "dblreq.first.61d1"  # `I:`
    data = message("dblreq")
    second = parse(data[data.index(b"INVITE sip:") :])  # a request of its own, left unread
    assert isinstance(second, SipRequest) and second.call_id == "dblreq.second.61d2"


def test_semiuri_semicolon_separated_parameters_in_the_user_part() -> None:
    msg = request("semiuri")  # §3.1.1.9
    ruri = msg.request_uri
    assert ruri.user == "desk;room=4%2F12" and ruri.host == "example.net"
    assert ruri.params == {} and msg.to.uri.user == "desk;room=4%2F12"
    assert msg.headers.get_all("Accept") == [
        "application/sdp",
        "text/plain",
        "message/sipfrag",
        "application/json",
        "multipart/mixed",
    ]


def test_transports_unusual_reasonable_and_unknown() -> None:
    msg = request("transports")  # §3.1.1.10
    assert [v.transport for v in msg.vias] == [
        "UDP",
        "SCTP",
        "TLS-SCTP",
        "WSS",
        "CARRIER-PIGEON",
        "TCP",
    ]
    assert msg.vias[3].sent_by == ("relay3.example.org", 8443)
    assert msg.call_id == "transports.5a5a"


def test_mpart01_multipart_body_with_binary_parts() -> None:
    """§3.1.1.11: the body (with bare LFs, NULs and a CRLFCRLF inside a binary part) is framed
    by Content-Length and carried opaque."""
    data = message("mpart01")
    msg = request("mpart01")
    assert msg.method == "MESSAGE" and msg.content_type == "multipart/mixed"
    assert msg.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert len(msg.body) == declared_length(msg)
    assert msg.body.startswith(b"--gw-torture-7e21c4\r\n")
    assert msg.body.endswith(b"\r\n--gw-torture-7e21c4--\r\n")
    assert bytes(range(256)) + b"\r\n\r\nnot headers\n\x00" in msg.body
    assert msg.top_via.rport is None and "rport" in msg.top_via.params


def test_unreason_utf8_reason_phrase() -> None:
    msg = response("unreason")  # §3.1.1.12
    assert msg.status == 200
    assert msg.reason == "Bien reçu — всё хорошо — 了解しました"
    assert msg.to.tag == "ur2" and len(msg.body) == declared_length(msg) > 0


def test_noreason_empty_reason_phrase() -> None:
    msg = response("noreason")  # §3.1.1.13
    assert (msg.status, msg.reason) == (100, "")
    assert msg.cseq.method == "INVITE"


# --- §3.1.2 invalid messages: refused with the status to answer

INVALID = [
    # name, status hint, reason, partial request for routing the answer
    ("badinv01", 400, "bad Via", True),  # §3.1.2.1 extraneous separators (;;,;,,)
    ("clerr", 400, "body shorter than Content-Length", True),  # §3.1.2.2
    ("ncl", 400, "bad Content-Length", True),  # §3.1.2.3 negative
    ("scalar02", 400, "bad CSeq number", True),  # §3.1.2.4 overlarge scalars
    ("scalarlg", 400, "bad CSeq number", False),  # §3.1.2.5 a response: dropped
    ("quotbal", 400, "bad To", True),  # §3.1.2.6 unterminated quoted string
    ("ltgtruri", 400, "bad Request-URI", True),  # §3.1.2.7 <> around the Request-URI
    ("lwsruri", 400, "bad request line", True),  # §3.1.2.8 LWS inside the Request-URI
    ("lwsstart", 400, "bad request line", True),  # §3.1.2.9 several SP in the request line
    ("badvers", 505, "SIP version not supported", True),  # §3.1.2.16 SIP/3.0
    ("mismatch01", 400, "CSeq method does not match", True),  # §3.1.2.17
    ("mismatch02", 400, "CSeq method does not match", True),  # §3.1.2.18
    ("bigcode", 400, "bad status line", False),  # §3.1.2.19 a response: dropped
    ("insuf", 400, "missing From", True),  # §3.3.1 no To, From, Call-ID
    ("multi01", 400, "duplicate From", True),  # §3.3.8 two To, From, Call-ID, CSeq
    ("mcl01", 400, "conflicting Content-Length", True),  # §3.3.9
]


@pytest.mark.parametrize(("name", "status", "reason", "partial"), INVALID)
def test_invalid_messages_are_refused_with_the_status_to_answer(
    name: str, status: int, reason: str, partial: bool
) -> None:
    with pytest.raises(SipParseError) as info:
        parse(message(name))
    assert info.value.status_hint == status
    assert info.value.reason.startswith(reason), info.value.reason
    assert (info.value.request is not None) is partial
    if partial:
        assert info.value.request is not None and info.value.request.headers.get("Via")


def test_scalar02_max_forwards_over_255_is_refused_too() -> None:
    """§3.1.2.4 has several bad scalars; the CSeq is found first. Max-Forwards alone: 0-255,
    leading zeros allowed (§20.22, 1*DIGIT)."""
    data = message("scalar02")
    fixed_cseq = data.replace(b"18446744073709551617 REGISTER", b"1 REGISTER")
    with pytest.raises(SipParseError) as info:
        parse(fixed_cseq)
    assert info.value.reason == "bad Max-Forwards"
    for value, parsed in ((b"255", 255), (b"0000255", 255), (b"000", 0)):
        msg = parse(fixed_cseq.replace(b"Max-Forwards: 256", b"Max-Forwards: " + value))
        assert msg.max_forwards == parsed
    assert request("wsinv").max_forwards == 42  # 0042


def test_multi01_each_duplicated_single_value_header_is_refused() -> None:
    """§3.3.8 repeats To, From, Call-ID and CSeq; each one alone is enough to refuse, in its
    full or compact name."""
    base = message("lwsdisp")
    for line, name in (
        (b"To: sip:someone-else@example.net", "To"),
        (b"f: sip:impostor@example.org;tag=2", "From"),
        (b"Call-ID: lwsdisp.another", "Call-ID"),
        (b"i: lwsdisp.another", "Call-ID"),
        (b"CSeq: 12 OPTIONS", "CSeq"),
    ):
        with pytest.raises(SipParseError) as info:
            parse(base.replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n\r\n", 1))
        assert info.value.reason == f"duplicate {name}" and info.value.status_hint == 400


def test_baddn_unquoted_comma_in_a_display_name_is_accepted_liberally() -> None:
    """§3.1.2.15: non-token characters in an unquoted display name. The RFC allows being
    liberal; the parser is: the name is everything before `<`."""
    msg = request("baddn")
    assert msg.from_.display == "Lobby, North" and msg.from_.tag == "77"
    assert msg.to.display == "Desk, Front" and str(msg.to.uri) == "sip:desk@example.net"


def test_trws_trailing_spaces_on_the_request_line_are_tolerated() -> None:
    msg = request("trws")  # §3.1.2.10: liberal, and never sent on with the spaces
    assert msg.uri == "sip:desk@example.net"
    assert msg.serialize().startswith(b"OPTIONS sip:desk@example.net SIP/2.0\r\n")


def test_escruri_headers_in_the_request_uri_stay_in_the_uri() -> None:
    """§3.1.2.11: liberal; the escaped Route (and Priority) never become the message's."""
    msg = request("escruri")
    assert msg.request_uri.headers == {"Route": "%3Csip:relay.example.org%3E", "Priority": "urgent"}
    assert msg.request_uri.user == "desk" and msg.routes == []
    assert "Priority" not in msg.headers


def test_baddate_is_not_interpreted() -> None:
    msg = request("baddate")  # §3.1.2.12: a Date in PST, carried as text
    assert msg.headers.get("Date") == "Mon, 03 Mar 2025 09:30:00 PST"


def test_regbadct_contact_uri_with_headers_outside_brackets() -> None:
    """§3.1.2.13: liberal; the brackets are inferred (nothing is ambiguous)."""
    (contact,) = request("regbadct").contacts
    assert contact.uri.headers == {"Route": "%3Csip:relay.example.org%3E"}
    assert (contact.uri.user, contact.uri.host) == ("desk", "198.51.100.8")


def test_badaspec_spaces_inside_the_angle_brackets() -> None:
    msg = request("badaspec")  # §3.1.2.14: liberal
    assert str(msg.to.uri) == "sip:desk@example.net" and msg.to.display == "Front Desk"
    assert msg.from_.display == "Lobby, North"


# --- §3.2-§3.4: valid syntax; what the user agent gets to decide on


def test_badbranch_branch_of_just_the_magic_cookie() -> None:
    assert request("badbranch").top_via.branch == "z9hG4bK"  # §3.2.1


def test_unkscm_and_novelsc_non_sip_request_uris_are_parsed_for_a_416() -> None:
    """§3.3.2, §3.3.3: the Request-URI is kept as text; only sip/sips are parsed further."""
    assert request("unkscm").uri == "zzz-unheard-of:anything/at;all?really"
    assert request("novelsc").uri == "iris.beep://203.0.113.50:702"
    for name in ("unkscm", "novelsc"):
        with pytest.raises(SipParseError):
            request(name).request_uri  # noqa: B018


def test_unksm2_to_and_from_of_other_schemes_are_read() -> None:
    """§3.3.4: a To of urn: and a From of mailto: are absolute URIs, which §20.20 and §20.39
    allow; they are kept as text (tel: is the scheme carriers send there)."""
    msg = request("unksm2")
    assert (msg.to.uri.scheme, str(msg.to.uri)) == (
        "urn",
        "urn:uuid:0f8a3c52-7d41-4e9b-a6c2-31d5e8b90a17",
    )
    assert (msg.from_.uri.scheme, msg.from_.tag) == ("mailto", "u2")
    assert str(msg.from_.uri) == "mailto:front.desk@example.org"


def test_bext01_require_and_proxy_require_lists() -> None:
    msg = request("bext01")  # §3.3.5
    assert msg.headers.get_all("Require") == ["no-such-extension", "nor-this-one"]
    assert msg.headers.get_all("Proxy-Require") == ["proxies-lack-it", "and-this-too"]


def test_invut_unknown_content_type() -> None:
    msg = request("invut")  # §3.3.6
    assert msg.content_type == "application/x-never-heard-of"
    assert msg.body == b"\x00\x01 a format no one has heard of \xfe\xff\r\n"


def test_regaut01_unknown_authorization_scheme_kept_whole() -> None:
    msg = request("regaut01")  # §3.3.7: not split at commas or spaces
    assert msg.headers.get_all("Authorization") == ['FancyNewScheme blob="a, b", other=xyz']


def test_bcast_response_with_a_broadcast_via() -> None:
    msg = response("bcast")  # §3.3.10
    assert [v.host for v in msg.vias] == ["198.51.100.33", "255.255.255.255"]


def test_zeromf_max_forwards_zero() -> None:
    assert request("zeromf").max_forwards == 0  # §3.3.11: an endpoint processes it


def test_cparam01_and_cparam02_contact_parameters() -> None:
    """§3.3.12-13: without <> the parameter belongs to the header, within them to the URI."""
    (c1,) = request("cparam01").contacts
    assert c1.params == {"novelparam": None} and c1.uri.params == {}
    (c2,) = request("cparam02").contacts
    assert c2.params == {} and c2.uri.params == {"novelparam": None}


def test_regescrt_contact_uri_with_an_escaped_header() -> None:
    (contact,) = request("regescrt").contacts  # §3.3.14, `m:` compact form
    assert contact.uri.headers == {"Route": "%3Csip:relay.example.org%3E"}


def test_sdp01_accept_of_something_else_than_sdp() -> None:
    msg = request("sdp01")  # §3.3.15: the UA answers 406; the parser keeps Accept
    assert msg.headers.get_all("Accept") == ["text/x-nothing-reads-this"]
    assert msg.content_type == "application/sdp"


def test_inv2543_rfc_2543_syntax() -> None:
    """§3.4.1: no branch, no tags, no Max-Forwards: valid, for backward compatibility."""
    msg = request("inv2543")
    assert msg.top_via.branch is None and msg.from_.tag is None and msg.to.tag is None
    assert msg.max_forwards is None
    # From in <>: a URI parameter; To without <>: a header parameter (§20.10)
    assert msg.from_.uri.params == {"user": "phone"}
    assert msg.to.params == {"user": "phone"} and msg.to.uri.params == {}
    assert msg.request_uri.params == {"user": "phone"} and msg.request_uri.user == "+15550199"
    assert len(msg.body) == declared_length(msg) > 0


# --- the user agent on top: nothing breaks it, refusals reach the wire


@pytest.mark.parametrize("name", sorted(p.stem for p in TORTURE.glob("*.sip")))
def test_the_endpoint_survives_every_message_and_answers_refusals(name: str) -> None:
    """Fed to the SIP endpoint: no exception, at most one response, and a request the parser
    refused (with a Via to route by) is answered with the parser's status hint."""
    endpoint = SipEndpoint(
        EndpointConfig("127.0.0.1", 5060), policy=SourcePolicy(allow=("0.0.0.0/0",))
    )
    endpoint.receive(message(name), Address("udp", "192.0.2.1", 5062), 0.0)
    out = endpoint.messages_to_send()
    assert len(out) <= 1
    try:
        parse(message(name))
    except SipParseError as exc:
        routable = exc.request is not None and name != "badvers"  # its Via says SIP/3.0
        if routable:
            (answer,) = out
            assert answer[0].startswith(f"SIP/2.0 {exc.status_hint} ".encode())
        else:
            assert out == []
