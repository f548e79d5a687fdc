"""Session timers (RFC 4028) and digest on in-dialog requests (issue 15, items 3 and 9), with
sipp as the far end of an outbound call placed by `POST /calls` through a trunk.

- A 2xx with `Session-Expires: 90;refresher=uac`: our refresh arrives 45 s after the answer,
  an UPDATE when sipp's Allow lists it, else a re-INVITE with the offer unchanged, and names us
  (its UAC) the refresher.
- A refresh answered 481: our BYE follows.
- A 422 with Min-SE to our INVITE: the retry carries it.
- A 401/407 to our refresh (UPDATE, re-INVITE) and to our BYE: the retry carries credentials
  whose digest the test recomputes from the trunk's password.

The refresh of the short cases comes early because sipp's 2xx asks a 4 s interval (below the
RFC's 90 s floor, which a UAC follows rather than cut the call).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.secret import Secret
from gateway.sip.auth import digest_response, parse_digest
from tests.support.gateway import assert_nothing_leaked, running_gateway
from tests.support.harness import free_udp_tcp_port
from tests.support.ops_peers import Kamailio
from tests.support.scenarios import CallLog
from tests.support.sipp import Sipp, TracedMessage
from tests.support.waiting import wait_for

TOKEN = "test-api-token-session-timers"
USER, PASSWORD = "trunkuser", "s3cret-Pw"
ALLOW_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
ALLOW_NO_UPDATE = "INVITE, ACK, CANCEL, BYE, OPTIONS"
NONCE = "d41d8cd98f00b204e9800998ecf8427e"

_HEAD = """
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>"""
_SDP = """
      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
"""


def _send(status: str, *headers: str, sdp: bool = False, retrans: bool = False) -> str:
    lines = "".join(f"\n      {h}" for h in headers)
    body = _SDP if sdp else ""
    ctype = "\n      Content-Type: application/sdp" if sdp else ""
    attr = ' retrans="500"' if retrans else ""
    return f"""  <send{attr}>
    <![CDATA[
      SIP/2.0 {status}{_HEAD}{lines}{ctype}
      Content-Length: [len]
{body}
    ]]>
  </send>
"""


def _recv(method: str, timeout_ms: int = 0, optional: bool = False) -> str:
    t = f' timeout="{timeout_ms}"' if timeout_ms else ""
    o = ' optional="true"' if optional else ""
    return f'  <recv request="{method}"{t}{o} crlf="true"/>\n'


def scenario(tmp_path: Path, name: str, steps: str) -> Path:
    path = tmp_path / f"{name}.xml"
    path.write_text(
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="{name}">\n{steps}</scenario>\n'
    )
    return path


def answer_with(se: str, allow: str) -> str:
    """INVITE answered 200 with `Session-Expires: se` and `Allow: allow`, then its ACK."""
    return (
        _recv("INVITE")
        + _send(
            "200 OK",
            f"Session-Expires: {se}",
            "Require: timer",
            "Supported: timer",
            f"Allow: {allow}",
            sdp=True,
            retrans=True,
        )
        + _recv("ACK")
    )


def bye_ok(timeout_ms: int = 20000) -> str:
    return _recv("BYE", timeout_ms) + _send("200 OK")


def challenge(status: str, header: str) -> str:
    value = f'Digest realm="sipp.test", nonce="{NONCE}", algorithm=MD5, qop="auth"'
    return _send(status, f"{header}: {value}")


HangupWhen = Callable[[list[TracedMessage]], bool]


async def place_call(
    tmp_path: Path,
    steps: str,
    name: str,
    *,
    hangup_when: HangupWhen | None = None,
    timeout: float = 30,
) -> tuple[Sipp, list[TracedMessage]]:
    """POST /calls through a trunk (with credentials) to a sipp running `steps`; once sipp's
    trace satisfies `hangup_when`, DELETE /calls ends the call (our BYE). Waits for sipp to
    finish, checks that it succeeded and that the gateway left nothing behind."""
    uas = Sipp(tmp_path, "", scenario=scenario(tmp_path, name, steps), timeout=timeout)
    uas.args += ["-m", "1"]
    uas.start()
    trunk = {
        "main": {
            "uri": f"sip:127.0.0.1:{uas.local_port}",
            "from_user": "gw",
            "username": USER,
            "password": PASSWORD,
        }
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with running_gateway(
            CallLog().setup, api_token=Secret(TOKEN), trunks=trunk, rtp_timeout=0.0
        ) as gw:
            base = f"http://127.0.0.1:{gw.http_port}"
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{base}/calls", json={"to": "1000", "trunk": "main"}, headers=auth
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    call_id = (await resp.json())["id"]
                assert uas.proc is not None
                while hangup_when is not None and uas.proc.poll() is None:
                    if hangup_when(uas.traced()):
                        await asyncio.sleep(0.5)  # the ACK of a 2xx on its way
                        async with http.delete(f"{base}/calls/{call_id}", headers=auth) as r:
                            assert r.status == 200, await r.text()
                        break
                    await asyncio.sleep(0.1)
            result = await uas.wait_async()
            await assert_nothing_leaked(gw)
    finally:
        uas.kill()
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    return uas, uas.traced()


def got(method: str, count: int = 1) -> HangupWhen:
    """sipp has received `count` requests `method`."""
    return lambda traced: len(received(traced, method)) >= count


def stamps(sipp: Sipp) -> list[float]:
    """The time of each traced message, in order (the separator lines of -trace_msg)."""
    out = []
    for m in re.finditer(r"(?m)^-{20,} (\S+ \S+)", sipp.messages):
        try:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
        except ValueError:
            continue
    return out


def header(msg: TracedMessage, name: str) -> str:
    m = re.search(rf"(?im)^{re.escape(name)}\s*:\s*(.*?)\s*$", msg.text)
    return m.group(1) if m else ""


def received(traced: list[TracedMessage], method: str) -> list[TracedMessage]:
    return [t for t in traced if t.direction == "received" and t.method == method]


def check_digest(msg: TracedMessage, name: str) -> None:
    """The request carries credentials for sipp's challenge whose response is the digest of
    the trunk's password (RFC 2617 §3.2.2, recomputed here)."""
    params = parse_digest(header(msg, name))
    assert params, f"no {name} in:\n{msg.text}"
    assert params["username"] == USER and params["realm"] == "sipp.test"
    assert params["nonce"] == NONCE and params["qop"] == "auth"
    expected = digest_response(
        "MD5",
        USER,
        "sipp.test",
        Secret(PASSWORD),
        msg.method or "",
        params["uri"],
        NONCE,
        params["nc"],
        params["cnonce"],
        "auth",
    )
    assert params["response"] == expected
    assert PASSWORD not in msg.text


# --- the 90 s interval: our refresh 45 s after the answer


async def _refresh_at_half(tmp_path: Path, allow: str, method: str) -> TracedMessage:
    steps = (
        answer_with("90;refresher=uac", allow)
        + _recv(method, 60000)
        + _send(
            "200 OK", "Session-Expires: 90;refresher=uac", "Require: timer", sdp=method == "INVITE"
        )
        + (_recv("ACK") if method == "INVITE" else "")
    )
    count = 2 if method == "INVITE" else 1
    uas, traced = await place_call(
        tmp_path,
        steps + bye_ok(),
        f"refresh_{method.lower()}",
        hangup_when=got(method, count),
        timeout=80,
    )
    times = stamps(uas)
    assert len(times) == len(traced), (len(times), len(traced))
    answered = next(
        times[i]
        for i, t in enumerate(traced)
        if t.direction == "sent" and t.status == 200 and t.cseq_method == "INVITE"
    )
    invites = [i for i, t in enumerate(traced) if t.direction == "received" and t.method == method]
    index = invites[-1] if method == "INVITE" else invites[0]
    delay = times[index] - answered
    assert 44.5 <= delay <= 45.5, delay  # RFC 4028 §10: at half the interval
    return traced[index]


@pytest.mark.asyncio(loop_factories=["uvloop"])  # 45 s: on the loop users run
async def test_refresh_45_s_after_a_90_s_answer_by_update_or_else_by_reinvite(
    tmp_path: Path,
) -> None:
    """Two gateways and two sipp UASes at once (the suite waits the 45 s once): the one whose
    Allow lists UPDATE gets an UPDATE, the other a re-INVITE; both say `refresher=uac`."""
    (tmp_path / "update").mkdir()
    (tmp_path / "reinvite").mkdir()
    update, reinvite = await asyncio.gather(
        _refresh_at_half(tmp_path / "update", ALLOW_UPDATE, "UPDATE"),
        _refresh_at_half(tmp_path / "reinvite", ALLOW_NO_UPDATE, "INVITE"),
    )
    assert header(update, "Session-Expires").replace(" ", "") == "90;refresher=uac"
    assert "timer" in header(update, "Supported")
    assert header(reinvite, "Session-Expires").replace(" ", "") == "90;refresher=uac"


# --- failures of a refresh, 422, digest


async def test_refresh_answered_481_is_followed_by_our_bye(tmp_path: Path) -> None:
    steps = (
        answer_with("4;refresher=uac", ALLOW_UPDATE)
        + _recv("UPDATE", 10000)
        + _send("481 Call/Transaction Does Not Exist")
        + bye_ok(5000)
    )
    _uas, traced = await place_call(tmp_path, steps, "refresh_481")
    assert len(received(traced, "BYE")) == 1


async def test_422_to_our_invite_is_retried_with_its_min_se(tmp_path: Path) -> None:
    steps = (
        _recv("INVITE")
        + _send("422 Session Interval Too Small", "Min-SE: 2400")
        + _recv("ACK")
        + answer_with("2400;refresher=uac", ALLOW_UPDATE)
        + bye_ok(20000)
    )
    _uas, traced = await place_call(tmp_path, steps, "invite_422", hangup_when=got("INVITE", 2))
    first, retry = received(traced, "INVITE")
    assert header(first, "Session-Expires") == "1800" and header(first, "Min-SE") == "90"
    assert header(retry, "Session-Expires") == "2400" and header(retry, "Min-SE") == "2400"
    assert int(header(retry, "CSeq").split()[0]) == int(header(first, "CSeq").split()[0]) + 1


async def test_a_challenged_update_is_answered_with_credentials(tmp_path: Path) -> None:
    steps = (
        answer_with("4;refresher=uac", ALLOW_UPDATE)
        + _recv("UPDATE", 10000)
        + challenge("401 Unauthorized", "WWW-Authenticate")
        + _recv("UPDATE", 5000)
        + _send("200 OK", "Session-Expires: 600;refresher=uac")
        + bye_ok(20000)
    )
    _uas, traced = await place_call(tmp_path, steps, "update_401", hangup_when=got("UPDATE", 2))
    first, retry = received(traced, "UPDATE")[:2]
    assert not header(first, "Authorization")
    check_digest(retry, "Authorization")


async def test_a_challenged_reinvite_and_bye_are_answered_with_credentials(tmp_path: Path) -> None:
    steps = (
        answer_with("4;refresher=uac", ALLOW_NO_UPDATE)
        + _recv("INVITE", 10000)
        + challenge("407 Proxy Authentication Required", "Proxy-Authenticate")
        + _recv("ACK")
        + _recv("INVITE", 5000)
        + _send("200 OK", "Session-Expires: 600;refresher=uas", "Require: timer", sdp=True)
        + _recv("ACK")
        + _recv("BYE", 20000)
        + challenge("401 Unauthorized", "WWW-Authenticate")
        + bye_ok(5000)
    )
    _uas, traced = await place_call(
        tmp_path, steps, "reinvite_407_bye_401", hangup_when=got("INVITE", 3)
    )
    reinvites = received(traced, "INVITE")[1:]
    assert not header(reinvites[0], "Proxy-Authorization")
    check_digest(reinvites[1], "Proxy-Authorization")
    bye, bye_retry = received(traced, "BYE")
    assert not header(bye, "Authorization")
    check_digest(bye_retry, "Authorization")
    assert int(header(bye_retry, "CSeq").split()[0]) == int(header(bye, "CSeq").split()[0]) + 1


# --- Kamailio's sst module in front: the interval the proxy imposes is the one kept

SST_CFG = Path(__file__).resolve().parents[1] / "peers" / "kamailio" / "sst.cfg"


class SstKamailio(Kamailio):
    """Kamailio with tests/peers/kamailio/sst.cfg: sst's Min-SE `min_se`; the gateway at
    127.0.0.1:`gw_port` (its INVITEs go on to `to_uri`)."""

    def __init__(self, workdir: Path, gw_port: int, to_uri: str, min_se: int) -> None:
        defines = [f"SST_MIN_SE={min_se}", f"GW_PORT={gw_port}", f'TO_URI="{to_uri}"']
        super().__init__(
            workdir, [("127.0.0.1", gw_port)], config=SST_CFG, workers=1, defines=defines
        )


_UAC = """  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-inv-[pid]-[call_number]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]
{sdp}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="UPDATE" timeout="60000"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Session-Expires:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
""".replace("{sdp}", _SDP)


@pytest.mark.asyncio(loop_factories=["uvloop"])  # 45 s: on the loop users run
async def test_kamailio_sst_interval_is_refreshed_by_the_gateway(tmp_path: Path) -> None:
    """sipp calls the gateway through Kamailio, asking no session timer; sst adds
    `Session-Expires: 90`. The gateway's 2xx keeps 90 and makes itself the refresher (the
    caller does not support timers), and its UPDATE reaches the caller through Kamailio 45 s
    after the answer."""
    gw_port = free_udp_tcp_port()
    kam = SstKamailio(tmp_path / "kam", gw_port, "sip:127.0.0.1:9", 90)
    try:
        kam.start()
        async with running_gateway(
            CallLog().setup, rtp_timeout=0.0, sip_listen=f"127.0.0.1:{gw_port}"
        ) as gw:
            caller = Sipp(
                tmp_path,
                f"127.0.0.1:{kam.port}",
                scenario=scenario(tmp_path, "sst_uac", _UAC),
                extra=["-m", "1", "-s", "agent"],
                timeout=80,
            ).start()
            try:
                result = await caller.wait_async()
            finally:
                caller.kill()
            await assert_nothing_leaked(gw)
    finally:
        kam.stop()
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    traced = caller.traced()
    ok = next(t for t in traced if t.status == 200 and t.cseq_method == "INVITE")
    assert header(ok, "Session-Expires").replace(" ", "") == "90;refresher=uas"
    (update,) = received(traced, "UPDATE")
    assert header(update, "Session-Expires").replace(" ", "") == "90;refresher=uac"
    times = stamps(caller)
    delay = times[traced.index(update)] - times[traced.index(ok)]
    assert 44.5 <= delay <= 45.5, delay


# --- an inbound call from a trunk with credentials: our challenged BYE is answered too

_UAC_CALL = _UAC[: _UAC.index('  <recv request="UPDATE"')]
_CHALLENGED_BYE = f"""  <recv request="BYE" timeout="20000" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="sipp.test", nonce="{NONCE}", algorithm=MD5, qop="auth"
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE" timeout="5000" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""


async def test_an_inbound_call_from_a_trunk_answers_its_challenge_to_our_bye(
    tmp_path: Path,
) -> None:
    """A PBX (sipp, from a trunk's `inbound_sources`) calls in; the gateway hangs up and the PBX
    challenges the BYE: the retry carries the trunk's credentials (§22.2, CSeq + 1)."""
    trunk = {"pbx": {"inbound_sources": ["127.0.0.1/32"], "username": USER, "password": PASSWORD}}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_gateway(
        CallLog().setup, api_token=Secret(TOKEN), trunks=trunk, rtp_timeout=0.0
    ) as gw:
        caller = Sipp(
            tmp_path,
            f"127.0.0.1:{gw.sip_port}",
            scenario=scenario(tmp_path, "inbound_bye_401", _UAC_CALL + _CHALLENGED_BYE),
            extra=["-m", "1", "-s", "agent"],
            timeout=30,
        ).start()
        try:
            await wait_for(lambda: gw.manager.calls, 10, "the call answered")
            [call_id] = list(gw.manager.calls)
            base = f"http://127.0.0.1:{gw.http_port}"
            async with (
                aiohttp.ClientSession() as http,
                http.delete(f"{base}/calls/{call_id}", headers=auth) as r,
            ):
                assert r.status == 200, await r.text()
            result = await caller.wait_async()
        finally:
            caller.kill()
        await assert_nothing_leaked(gw)
    assert result.returncode == 0 and result.successful_calls == 1, result.explain()
    bye, bye_retry = received(caller.traced(), "BYE")
    assert not header(bye, "Authorization")
    check_digest(bye_retry, "Authorization")
    assert int(header(bye_retry, "CSeq").split()[0]) == int(header(bye, "CSeq").split()[0]) + 1
