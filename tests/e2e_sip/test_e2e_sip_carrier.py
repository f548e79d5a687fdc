"""What carriers send, end to end through the whole gateway (embedded local provider) with sipp
as the carrier (issue 15, item 7): a tel: From, a Latin-1 display name and a SIP-I multipart
body, each with a packet time other than 20 ms (25, 30, 80 ms). Each call is answered and
audio flows both ways, checked by content: sipp plays speech in packets of the offered ptime
(`play_pcap_audio`, from a capture the test writes), the model hears it, the local provider
echoes it, and dumpcap captures what the gateway sends back to sipp. A tel: Request-URI gets
416. The scenarios are written by the test, as bytes: sipp sends header bytes as they are."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import telcodecs

from gateway.config import parse_port_range
from tests.support.audio import windows_found
from tests.support.gateway import assert_nothing_leaked, provider_sessions, running_gateway
from tests.support.local_provider import appended_audio
from tests.support.pcap import (
    SIPP_SHARE,
    LoopbackCapture,
    pcap_rtp_payloads,
    read_pcap_udp,
    write_rtp_pcap,
)
from tests.support.scenarios import CallLog
from tests.support.sipp import Sipp

SPEECH_S = 2.4  # of g711a.pcap's speech, then silence so the model's VAD ends the turn
SILENCE_S = 1.6
ALAW_SILENCE = b"\xd5"
TAG = "[pid]SIPpTag00[call_number]"
INVITE_VIA = (
    "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-inv-[pid]-[call_number]"
)


def speech() -> bytes:
    """The first SPEECH_S of the PCMA speech sipp ships (g711a.pcap, 30 ms packets)."""
    payloads = pcap_rtp_payloads(SIPP_SHARE / "g711a.pcap")
    assert {pt for pt, _, _ in payloads} == {8}
    return b"".join(p for _, _, p in payloads)[: int(8000 * SPEECH_S)]


def sdp_lines(ptime: int) -> list[str]:
    return [
        "v=0",
        "o=carrier 4711 4711 IN IP[local_ip_type] [local_ip]",
        "s=-",
        "c=IN IP[media_ip_type] [media_ip]",
        "t=0 0",
        "m=audio [media_port] RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        f"a=ptime:{ptime}",
    ]


def multipart_body(ptime: int) -> tuple[str, list[str]]:
    """A SIP-I body (ITU-T Q.1912.5, RFC 5621): the SDP and an ISUP IAM, optional to handle.
    The ISUP bytes avoid NUL, CR and LF (sipp ends lines with CRLF itself)."""
    boundary = "sipi-unique-7c1e2b"
    isup = "\x01\x11\x20\x01\x0a\x20\x02\x83\x90\x89\x55\x51\x0f\x07\x03\x13\x09\x32"
    lines = [
        f"--{boundary}",
        "Content-Type: application/sdp",
        "",
        *sdp_lines(ptime),
        f"--{boundary}",
        "Content-Type: application/ISUP;version=itu-t92+",
        "Content-Disposition: signal;handling=optional",
        "",
        isup,
        f"--{boundary}--",
    ]
    return f"multipart/mixed;boundary={boundary}", lines


def scenario(
    *,
    from_value: str,
    ptime: int,
    pcap: Path | None,
    talk_ms: int,
    multipart: bool = False,
    request_uri: str = "sip:[service]@[remote_ip]:[remote_port]",
    final: int = 200,
) -> bytes:
    """A UAC scenario: INVITE (SDP or SIP-I multipart), then either 200/ACK/media/BYE or the
    `final` refusal and its ACK. Written as Latin-1 (the XML says so): bytes go out as they
    are."""
    if multipart:
        ctype, body = multipart_body(ptime)
    else:
        ctype, body = "application/sdp", sdp_lines(ptime)
    from_header = f"From: {from_value};tag={TAG}"
    to_header = "To: <sip:[service]@[remote_ip]:[remote_port]>"
    invite = [
        f"INVITE {request_uri} SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-inv-[pid]-[call_number]",
        from_header,
        to_header,
        "Call-ID: [call_id]",
        "CSeq: 1 INVITE",
        "Contact: <sip:carrier@[local_ip]:[local_port];transport=[transport]>",
        "Max-Forwards: 70",
        "MIME-Version: 1.0",
        f"Content-Type: {ctype}",
        "Content-Length: [len]",
        "",
        *body,
        "",
    ]
    steps = [send(invite, retrans=True)]
    steps += ['<recv response="100" optional="true"/>', '<recv response="180" optional="true"/>']
    if final != 200:
        ack = [
            f"ACK {request_uri} SIP/2.0",
            INVITE_VIA,
            from_header,
            to_header + "[peer_tag_param]",
            "Call-ID: [call_id]",
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
        ]
        steps += [f'<recv response="{final}"/>', send(ack)]
    else:
        in_dialog = [
            from_header,
            to_header + "[peer_tag_param]",
            "[routes]",
            "Call-ID: [call_id]",
        ]
        ack = [
            "ACK [next_url] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            *in_dialog,
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
        ]
        bye = [
            "BYE [next_url] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            *in_dialog,
            "CSeq: 2 BYE",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
        ]
        steps += ['<recv response="200" rrs="true"/>', send(ack)]
        if pcap is not None:
            steps.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        steps += [f'<pause milliseconds="{talk_ms}"/>', send(bye, retrans=True)]
        steps.append('<recv response="200" crlf="true"/>')
    text = (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        '<scenario name="carrier">\n' + "\n".join(steps) + "\n</scenario>\n"
    )
    return text.encode("latin-1")


def send(lines: list[str], *, retrans: bool = False) -> str:
    attr = ' retrans="500"' if retrans else ""
    return f"<send{attr}>\n<![CDATA[\n" + "\n".join(lines) + "\n]]>\n</send>"


@dataclass(frozen=True)
class Case:
    name: str
    from_value: str
    ptime: int
    multipart: bool
    caller: str  # what the call sees as its caller


CASES = [
    Case("tel_from_ptime25", '"Carrier Caller" <tel:+1-555-0199>', 25, False, "+15550199"),
    Case("latin1_display_ptime30", '"José Müller" <sip:jose@[local_ip]>', 30, False, "jose"),
    Case("sipi_multipart_ptime80", "<sip:+15550123@[local_ip];user=phone>", 80, True, "+15550123"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_carrier_call_is_answered_and_audio_flows_both_ways(
    tmp_path: Path, case: Case
) -> None:
    said = speech()
    audio = said + ALAW_SILENCE * int(8000 * SILENCE_S)
    pcap = write_rtp_pcap(tmp_path / f"speech_{case.ptime}ms.pcap", audio, ptime_ms=case.ptime)
    talk_ms = int((SPEECH_S + SILENCE_S) * 1000) + 4000  # then the echo of the speech comes back
    xml = tmp_path / f"{case.name}.xml"
    xml.write_bytes(
        scenario(
            from_value=case.from_value,
            ptime=case.ptime,
            pcap=pcap,
            talk_ms=talk_ms,
            multipart=case.multipart,
        )
    )
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True
        low, high = parse_port_range(gw.settings.rtp_ports)
        capture = tmp_path / "to_sipp.pcap"
        sipp = Sipp(
            tmp_path, f"127.0.0.1:{gw.sip_port}", scenario=xml, extra=["-m", "1"], timeout=30
        )
        with LoopbackCapture(capture, f"udp and src portrange {low}-{high}"):
            sipp.start()
            try:
                result = await sipp.wait_async()
            finally:
                sipp.kill()
            await asyncio.sleep(0.2)
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        assert gw.clocks is not None and len(gw.clocks.for_ptime(case.ptime)) == 0
        [call] = log.calls
        assert log.outcomes() == ["remote_hangup"]

        # who called: the tel: number or the SIP user; the display name as text
        assert call.info.caller == case.caller
        if "José" in case.from_value:
            assert '"José Müller"' in call.info.headers["From"]
            assert b"Jos\xe9 M\xfcller" in xml.read_bytes()  # Latin-1 on the wire, not UTF-8
        # the offer's packet time is the one we send in, and its codec
        assert str(call.leg.native) == "pcma/8000" and call.leg.frame_ms == case.ptime
        answer = next(m for m in sipp.traced() if m.status == 200 and m.cseq_method == "INVITE")
        assert f"a=ptime:{case.ptime}" in answer.text

        # caller → model: the speech, by content, from packets of the offered size
        [engine] = provider_sessions(gw)
        heard = telcodecs.alaw_decode(appended_audio(engine))
        reference = telcodecs.alaw_decode(said)
        found = windows_found(reference, heard)
        assert np.mean(np.array(found) >= 0.95) >= 0.9, found

        # model → caller: what sipp received, in packets of our ptime, holds the echo
        packets = [p.payload for p in read_pcap_udp(capture) if p.payload[:1] == b"\x80"]
        rtp = [p for p in packets if p[1] & 0x7F == 8]
        assert len(rtp) >= 0.8 * (talk_ms / case.ptime), len(rtp)
        sizes = {len(p) - 12 for p in rtp}
        assert sizes == {8 * case.ptime}, sizes
        back = telcodecs.alaw_decode(b"".join(p[12:] for p in rtp))
        echoed = windows_found(reference, back)
        assert np.mean(np.array(echoed) >= 0.9) >= 0.8, echoed


async def test_a_tel_request_uri_gets_416(tmp_path: Path) -> None:
    xml = tmp_path / "tel_ruri.xml"
    xml.write_bytes(
        scenario(
            from_value="<sip:carrier@[local_ip]>",
            ptime=20,
            pcap=None,
            talk_ms=0,
            request_uri="tel:+15550100",
            final=416,
        )
    )
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        sipp = Sipp(tmp_path, f"127.0.0.1:{gw.sip_port}", scenario=xml, extra=["-m", "1"])
        sipp.start()
        try:
            result = await sipp.wait_async()
        finally:
            sipp.kill()
        assert result.successful_calls == 1, result.explain()
        [refusal] = [m for m in sipp.traced() if m.direction == "received"]
        assert refusal.first_line == "SIP/2.0 416 Unsupported URI Scheme"
        assert log.calls == [] and len(provider_sessions(gw)) == 0
        await assert_nothing_leaked(gw)
