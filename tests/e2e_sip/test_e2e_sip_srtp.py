"""Encrypted media offers against the whole gateway (embedded local provider), with sipp as the
phone. With `sip_srtp = "off"` an SRTP audio line is refused: 488 with a Warning when it is the
only audio, port 0 beside a plain RTP line (RFC 3264 §6); a re-INVITE or UPDATE to SRTP gets 488
and the call goes on; a late-offer ACK, or an outbound call's 200, that answers with SRTP ends
the call with BYE. DTLS-SRTP is refused in every mode. (SDES-SRTP calls with baresip:
test_e2e_sip_srtp_baresip.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support.gateway import assert_nothing_leaked, outbound_call, run_sipp, running_gateway
from tests.support.scenarios import CallLog

SDES = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
DTLS = "a=fingerprint:sha-256 D1:2C:BE:AD:C4:F6:64:5C:25:16:11:9C:AF:E7:0F:73:79:36:4E:9C"


def received(messages: str) -> list[str]:
    """The messages sipp received, from its -trace_msg log."""
    blocks = re.split(r"^-{20,}.*$", messages, flags=re.M)
    return [b.split("\n\n", 1)[1].strip() for b in blocks if "message received" in b]


def call_port(answer: str) -> int:
    m = re.search(r"^m=audio ([1-9][0-9]*) RTP/AVP", answer, re.M)
    assert m, answer
    return int(m.group(1))


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_sip_rejected_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize(
    ("proto", "attribute"),
    [("RTP/SAVP", SDES), ("RTP/SAVPF", SDES), ("UDP/TLS/RTP/SAVPF", DTLS)],
)
async def test_encrypted_audio_only_gets_488_with_srtp_off(
    tmp_path: Path, proto: str, attribute: str
) -> None:
    log = CallLog()
    async with running_gateway(log.setup, sip_srtp="off") as gw:
        before = rejected("srtp_unsupported")
        sipp, result = await run_sipp(
            gw,
            tmp_path,
            scenario="e2e_srtp_488.xml",
            extra=["-key", "proto", proto, "-key", "secattr", attribute],
        )
        assert result.successful_calls == 1, result.explain()  # 488 with Warning 302, ACKed
        [refusal] = [m for m in received(sipp.messages) if m.startswith("SIP/2.0 488")]
        assert f'Warning: 302 - "SRTP ({proto}) not supported, offer RTP/AVP"' in refusal
        assert rejected("srtp_unsupported") - before == 1
        assert log.calls == []  # no call, no model session, no port
        await assert_nothing_leaked(gw)


async def test_dtls_srtp_gets_488_with_srtp_optional(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:  # the default: optional
        before = rejected("srtp_unsupported")
        sipp, result = await run_sipp(
            gw,
            tmp_path,
            scenario="e2e_srtp_488.xml",
            extra=["-key", "proto", "UDP/TLS/RTP/SAVPF", "-key", "secattr", DTLS],
        )
        assert result.successful_calls == 1, result.explain()
        [refusal] = [m for m in received(sipp.messages) if m.startswith("SIP/2.0 488")]
        assert 'Warning: 302 - "SRTP (UDP/TLS/RTP/SAVPF) not supported (DTLS-SRTP)' in refusal
        assert rejected("srtp_unsupported") - before == 1
        assert log.calls == []
        await assert_nothing_leaked(gw)


async def test_srtp_line_beside_a_plain_one_is_refused_with_port_zero(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup, sip_srtp="off") as gw:
        sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_srtp_and_rtp.xml")
        assert result.successful_calls == 1, result.explain()
        [answer] = [m for m in received(sipp.messages) if m.startswith("SIP/2.0 200 OK")
                    and "CSeq: 1 INVITE" in m]  # fmt: skip
        # as many m-lines as offered, the SRTP one refused, the plain one answered, no crypto
        assert re.findall(r"^m=.*$", answer, re.M) == [
            "m=audio 0 RTP/SAVP 0",
            f"m=audio {call_port(answer)} RTP/AVP 0 101",
        ]
        assert "crypto" not in answer
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["remote_hangup"]


async def test_reinvite_and_update_to_srtp_get_488_and_the_call_goes_on(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup, sip_srtp="off") as gw:
        before = rejected("srtp_unsupported")
        _sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_reinvite_srtp.xml")
        assert result.successful_calls == 1, result.explain()  # the final BYE got its 200
        assert rejected("srtp_unsupported") - before == 2
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["remote_hangup"]  # it lasted until the caller's BYE
        [call] = log.calls
        assert str(call.leg.native) == "pcmu/8000"


async def test_late_offer_answered_with_srtp_ends_the_call_with_bye(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup, sip_srtp="off") as gw:
        _sipp, result = await run_sipp(gw, tmp_path, scenario="e2e_late_offer_srtp_answer.xml")
        assert result.successful_calls == 1, result.explain()  # the gateway's BYE came
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["srtp_unsupported"]


async def test_outbound_call_answered_with_srtp_is_ended_with_bye(tmp_path: Path) -> None:
    log = CallLog()
    uas, result = await outbound_call(tmp_path, log, "RTP/SAVP", SDES, ring_ms=0, sip_srtp="off")
    assert result.successful_calls == 1, result.explain()  # our BYE came (and got its 200)
    assert "BYE sip:" in uas.messages
    assert log.calls == []  # never became a call: no model session, port freed
