"""Comfort noise (RFC 3389) and rtcp-mux (RFC 5761) end to end, sipp as the caller against the
whole gateway (embedded local provider).

sipp offers PCMA with CN/8000 (and a=rtcp-mux, or not) and plays a capture the test writes:
speech, one CN packet at -40 dBov and 1.5 s of nothing but a CN refresh, speech again, CN at
-60 dBov and its gap, speech. What the model heard is checked by content: each speech segment
intact, and in each gap noise at the stated level (not silence, not a repeated frame, never
the CN packets as audio). With a=rtcp-mux the answer has it, the gateway's RTCP arrives at
sipp's RTP port from ours, and the gateway holds no RTCP socket (no socket of the process
on the port above ours while the call runs); without it, RTCP stays on port+1 both sides."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import telcodecs

from gateway.config import parse_port_range
from gateway.media.format import AudioFormat
from gateway.realtime.local.tts import render_prompts
from gateway.secret import Secret
from tests.support.audio import find_correlation, windows_found
from tests.support.baresip import Baresip, speech_wav
from tests.support.gateway import assert_nothing_leaked, provider_sessions, running_gateway
from tests.support.local_provider import appended_audio
from tests.support.pcap import (
    SIPP_SHARE,
    LoopbackCapture,
    pcap_rtp_payloads,
    read_pcap_udp,
    write_udp_pcap,
)
from tests.support.scenarios import CallLog
from tests.support.sipp import Sipp
from tests.support.waiting import wait_for

SEGMENT = 8000  # 1 s of speech per talk spurt
GAP_FRAMES = 75  # 1.5 s of CN between spurts
LEVELS = (40, 60)  # -dBov of the two CN gaps
TAG = "[pid]SIPpTag00[call_number]"


def speech_segments() -> list[bytes]:
    """Three 1 s PCMA segments of the speech sipp ships (g711a.pcap)."""
    payloads = pcap_rtp_payloads(SIPP_SHARE / "g711a.pcap")
    said = b"".join(p for pt, _, p in payloads if pt == 8)
    return [said[i * SEGMENT : (i + 1) * SEGMENT] for i in range(3)]


def cn_capture(path: Path, segments: list[bytes]) -> Path:
    """RTP as a phone with VAD sends it: 20 ms PCMA packets for each segment; after each but the
    last, one CN packet (level, then spectral coefficients to ignore) and a refresh halfway
    through the gap; the timestamp runs on through the gaps (RFC 3389 §4)."""
    datagrams: list[tuple[float, bytes]] = []
    seq = frame = 0
    ssrc = 0x5EEDC0DE

    def packet(pt: int, marker: bool, payload: bytes) -> bytes:
        return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, 160 * frame, ssrc)

    for i, segment in enumerate(segments):
        for j in range(0, len(segment), 160):
            datagrams.append((frame * 0.02, packet(8, j == 0, b"") + segment[j : j + 160]))
            seq, frame = seq + 1, frame + 1
        if i < len(LEVELS):
            cn = bytes([LEVELS[i], 0x5A, 0x44])
            datagrams.append((frame * 0.02, packet(13, False, b"") + cn))
            seq += 1
            frame += GAP_FRAMES // 2
            datagrams.append((frame * 0.02, packet(13, False, b"") + cn))  # refresh
            seq += 1
            frame += GAP_FRAMES - GAP_FRAMES // 2
    return write_udp_pcap(path, datagrams)


def scenario(pcap: Path, talk_ms: int, rtcp_mux: bool) -> bytes:
    sdp = [
        "v=0",
        "o=phone 4711 4711 IN IP[local_ip_type] [local_ip]",
        "s=-",
        "c=IN IP[media_ip_type] [media_ip]",
        "t=0 0",
        "m=audio [media_port] RTP/AVP 8 101 13",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=rtpmap:13 CN/8000",
        *(["a=rtcp-mux"] if rtcp_mux else []),
        "a=ptime:20",
    ]
    dialog = [
        f"From: <sip:phone@[local_ip]>;tag={TAG}",
        "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]",
        "Call-ID: [call_id]",
    ]
    invite = [
        "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-inv-[pid]-[call_number]",
        f"From: <sip:phone@[local_ip]>;tag={TAG}",
        "To: <sip:[service]@[remote_ip]:[remote_port]>",
        "Call-ID: [call_id]",
        "CSeq: 1 INVITE",
        "Contact: <sip:phone@[local_ip]:[local_port];transport=[transport]>",
        "Max-Forwards: 70",
        "Content-Type: application/sdp",
        "Content-Length: [len]",
        "",
        *sdp,
        "",
    ]
    ack = [
        "ACK [next_url] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        *dialog,
        "CSeq: 1 ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "",
    ]
    bye = [
        "BYE [next_url] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        *dialog,
        "CSeq: 2 BYE",
        "Max-Forwards: 70",
        "Content-Length: 0",
        "",
    ]

    def send(lines: list[str], retrans: bool = False) -> str:
        attr = ' retrans="500"' if retrans else ""
        return f"<send{attr}>\n<![CDATA[\n" + "\n".join(lines) + "\n]]>\n</send>"

    steps = [
        send(invite, retrans=True),
        '<recv response="100" optional="true"/>',
        '<recv response="180" optional="true"/>',
        '<recv response="200" rrs="true"/>',
        send(ack),
        f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>',
        f'<pause milliseconds="{talk_ms}"/>',
        send(bye, retrans=True),
        '<recv response="200" crlf="true"/>',
    ]
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        '<scenario name="cn">\n' + "\n".join(steps) + "\n</scenario>\n"
    ).encode("latin-1")


def udp_ports_of_this_process() -> set[int]:
    """The local ports of the UDP sockets this process (the in-process gateway) holds: its
    socket inodes (/proc/self/fd) looked up in /proc/net/udp. Other programs on the machine
    may bind ports of the range: only ours count."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 8 and data[0] >> 6 == 2 and 200 <= data[1] <= 204


@pytest.mark.parametrize(
    "rtcp_mux", [True, False], ids=["rtcp_mux_and_sending_cn", "separate_rtcp_no_cn_sent"]
)
async def test_cn_gaps_reach_the_model_as_noise_at_their_level_and_rtcp_mux(
    tmp_path: Path, rtcp_mux: bool
) -> None:
    """Both ways: with `sip_comfort_noise` (the first case) the gateway sends CN while the model
    is silent; without it (the second), silence packets as before."""
    segments = speech_segments()
    pcap = cn_capture(tmp_path / "speech_cn.pcap", segments)
    talk_ms = 3 * 1000 + 2 * GAP_FRAMES * 20 + 1500
    xml = tmp_path / "cn.xml"
    xml.write_bytes(scenario(pcap, talk_ms, rtcp_mux))
    log = CallLog()
    async with running_gateway(log.setup, sip_comfort_noise=rtcp_mux) as gw:
        assert gw.local_provider is not None and gw.sip_calls is not None
        gw.local_provider.options.record_frames = True
        low, high = parse_port_range(gw.settings.rtp_ports)
        capture = tmp_path / "from_gateway.pcap"
        sipp = Sipp(
            tmp_path, f"127.0.0.1:{gw.sip_port}", scenario=xml, extra=["-m", "1"], timeout=40
        )
        sipp_media = int(sipp.args[sipp.args.index("-mp") + 1])
        with LoopbackCapture(capture, f"udp and src portrange {low}-{high + 1}"):
            sipp.start()
            try:
                legs = gw.sip_calls._legs
                await wait_for(lambda: len(legs) == 1, 10, "the call is up")
                [leg] = legs.values()
                port = leg.rtp.port
                # the call's ports: RTP only with rtcp-mux, the pair without
                assert gw.sip_calls.ports.in_use == 1
                held = udp_ports_of_this_process()
                assert port in held and (port + 1 in held) != rtcp_mux
                assert (leg.rtp.rtcp_port is None) == rtcp_mux
                result = await sipp.wait_async()
            finally:
                sipp.kill()
            await asyncio.sleep(0.2)
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)
        [call] = log.calls
        assert str(call.leg.native) == "pcma/8000"

        # the answer lists CN (we receive it) and a=rtcp-mux exactly when offered
        answer = next(m for m in sipp.traced() if m.status == 200 and m.cseq_method == "INVITE")
        assert "a=rtpmap:13 CN/8000" in answer.text
        m_line = next(line for line in answer.text.splitlines() if line.startswith("m=audio"))
        assert m_line.split()[3:] == ["8", "101", "13"]
        assert ("a=rtcp-mux" in answer.text) == rtcp_mux

        # what the model heard: each spurt intact, the gaps noise at the CN packets' level
        [engine] = provider_sessions(gw)
        heard = telcodecs.alaw_decode(appended_audio(engine))
        starts = []
        for segment in segments:
            at, score = find_correlation(heard, telcodecs.alaw_decode(segment))
            assert score >= 0.95, score
            starts.append(at)
        assert starts == sorted(starts)
        for i, level in enumerate(LEVELS):
            gap = heard[starts[i] + SEGMENT + 400 : starts[i + 1] - 400]
            assert len(gap) >= 8000 * 1.2, len(gap)
            assert abs(telcodecs.rms_dbfs(gap) + level) <= 3.0, (level, telcodecs.rms_dbfs(gap))
            frames = gap[: len(gap) // 160 * 160].reshape(-1, 160)
            assert all(telcodecs.rms_dbfs(f) > -level - 6 for f in frames)  # no silent frame
            assert len({f.tobytes() for f in frames}) == len(frames)  # not one frame repeated
            x = gap.astype(np.float64)
            assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.2  # noise, not speech or tone

        # what the gateway sent: CN (RFC 3389 §4: one packet where its silence starts, -127
        # dBov) only when configured, else silence in PCMA
        # (other test runs on this machine may use the range too: only our call's ports count)
        ours = [
            p
            for p in read_pcap_udp(capture)
            if p.src[1] in (port, port + 1) and p.dst[1] in (sipp_media, sipp_media + 1)
        ]
        media = [p.payload for p in ours if p.src[1] == port and not is_rtcp(p.payload)]
        cn_sent = [p for p in media if p[1] & 0x7F == 13]
        if rtcp_mux:
            assert cn_sent and all(p[12:] == b"\x7f" for p in cn_sent)
        else:
            assert cn_sent == []
        assert any(p[1] & 0x7F == 8 for p in media)  # the greeting and the echo

        # the gateway's RTCP: from our RTP port to sipp's RTP port with rtcp-mux, else both +1
        sent = [p for p in ours if is_rtcp(p.payload)]
        assert sent, "no RTCP from the gateway"
        if rtcp_mux:
            assert {(p.src[1], p.dst[1]) for p in sent} == {(port, sipp_media)}
        else:
            assert {(p.src[1], p.dst[1]) for p in sent} == {(port + 1, sipp_media + 1)}


@pytest.mark.parametrize("rtcp_mux", [True, False], ids=["baresip_rtcp_mux", "baresip_no_mux"])
async def test_the_gateway_dials_baresip_offering_rtcp_mux(tmp_path: Path, rtcp_mux: bool) -> None:
    """Our offer (POST /calls) has a=rtcp-mux with port+1 as the fallback (RFC 5761 §5.1.1).
    baresip with `rtcp_mux yes` answers with it: the gateway releases its RTCP socket, and
    RTCP flows both ways on the RTP ports; without it the separate port stays. Either way
    baresip hears the greeting and the echo of what it said."""
    log = CallLog()
    token = "test-api-token-rtcp-mux"
    prompts = await render_prompts()
    greeting = telcodecs.ulaw_decode(prompts.audio("greeting", AudioFormat("pcmu", 8000)))
    source, said = speech_wav(tmp_path, len(greeting) / 8000 + 0.7, 4.0)
    seconds = int(len(said) / 8000 + len(greeting) / 8000 + 0.7 + 4.0) + 1
    phone = Baresip(
        tmp_path,
        source,
        "",  # it answers
        seconds + 20,
        config_extra=f"rtcp_mux {'yes' if rtcp_mux else 'no'}\n",
    )
    phone.args.insert(1, "-s")  # its SIP trace
    trunks = {"phone": {"uri": f"sip:127.0.0.1:{phone.sip_port}", "from_user": "gw"}}
    async with running_gateway(log.setup, api_token=Secret(token), trunks=trunks) as gw:
        assert gw.sip_calls is not None
        phone.start()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{gw.http_port}/calls",
                    json={"to": "gw", "trunk": "phone"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp,
            ):
                assert resp.status == 201, await resp.text()
            legs = gw.sip_calls._legs
            await wait_for(lambda: len(legs) == 1 and log.calls != [], 10, "the call is up")
            [leg] = legs.values()
            await wait_for(lambda: leg.session.stats.packets_in > 0, 10, "media from baresip")
            held = udp_ports_of_this_process()
            port = leg.rtp.port
            assert port in held and (port + 1 in held) != rtcp_mux
            assert (leg.rtp.rtcp_port is None) == rtcp_mux
            await wait_for(lambda: bool(log.ended), seconds + 10, "baresip to hang up")
            await asyncio.sleep(0.5)
        finally:
            phone.kill()
        await assert_nothing_leaked(gw)
    trace = phone.trace()
    invite = trace[trace.index("INVITE sip:gw@") :]
    assert "a=rtcp-mux" in invite[: invite.index("\n\n", invite.index("v=0"))]
    assert ("RTP/RTCP multiplexing enabled" in trace) == rtcp_mux
    stats = leg.session.stats
    assert stats.dropped["unknown_pt"] == 0 and stats.dropped["rtcp_wrong_source"] == 0
    if rtcp_mux:  # baresip's RTCP came to our RTP port and was taken as RTCP (RFC 5761 §4)
        assert stats.rtcp_in >= 1 and stats.rtt_seconds is not None
    heard = phone.heard()
    found = windows_found(greeting[:16000], heard)
    assert np.mean(np.array(found) >= 0.8) >= 0.85, found
    echoed = windows_found(said, heard[len(greeting) :])
    assert np.mean(np.array(echoed) >= 0.8) >= 0.7, echoed
