"""SDES-SRTP (RFC 4568) against baresip with `;mediaenc=srtp-mand`, and `gateway serve` as a
child process at log level debug: baresip calls in (over UDP and over TLS) and is called through
a trunk with `srtp = "mandatory"`; the echo of what it said comes back through SRTP and is found
by content in its recording. The SDP each way is read from baresip's SIP trace (baresip 1.0 in
srtp-mand mode also takes an answer with no a=crypto), and no key of either side appears in the
gateway's log, its /metrics or its call API."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from gateway.media.format import AudioFormat
from gateway.realtime.local.tts import render_prompts
from tests.support.audio import Pcm, windows_found
from tests.support.baresip import Baresip, speech_wav
from tests.support.certs import TestCa
from tests.support.gateway import GatewayProcess, call_summaries
from tests.support.harness import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

SRTP_ACCOUNT = "<sip:gw@127.0.0.1>;regint=0;answermode=auto;mediaenc=srtp-mand"
KEY = re.compile(r"inline:([A-Za-z0-9+/=]{20,})")


async def greeting_seconds() -> float:
    prompts = await render_prompts()
    return len(prompts.audio("greeting", AudioFormat("pcmu", 8000))) / 8000


def sdp_bodies(trace: str) -> list[str]:
    """The SDP bodies in baresip's SIP trace, each from v=0 to its last a= line."""
    return re.findall(r"v=0\r?\n(?:[a-z]=.*\r?\n?)+", trace)


def echo_heard(phone: Baresip, said: Pcm, after_s: float) -> None:
    heard = phone.heard()
    found = windows_found(said, heard[int(after_s * 8000) :])
    assert np.mean(np.array(found) >= 0.8) >= 0.7, found


def no_key_anywhere(
    gw: GatewayProcess, keys: set[str], api: list[str], record_dir: Path | None = None
) -> None:
    """None of `keys` (base64, as in the SDP) in the log, what /metrics and the API said
    (`api`), or the recordings' metadata (`record_dir`'s JSON lines)."""
    assert len(keys) >= 2  # baresip's and ours
    places = {"log": gw.log_path.read_text(errors="replace"), "api": "\n".join(api)}
    if record_dir is not None:
        metadata = sorted(record_dir.glob("*.jsonl"))
        assert metadata, "no recording was written"
        places["recording"] = "\n".join(p.read_text(errors="replace") for p in metadata)
        assert places["recording"].strip(), "the recording's metadata is empty"
    assert "gateway_rtp_packets_total" in places["api"]  # /metrics was read
    for key in keys:
        for variant in (key, key.rstrip("="), key[:24]):
            for where, text in places.items():
                assert variant not in text, f"a key in the {where}"


async def stop(gw: GatewayProcess) -> None:
    rc = await asyncio.to_thread(gw.stop)
    assert rc == 0, gw.log_path.read_text()[-3000:]


def tls_args(tmp_path: Path, ca: TestCa) -> tuple[list[str], int]:
    ours = ca.issue("gateway", "IP:127.0.0.1")
    port = free_port()
    args = ["--sip-tls-listen", f"127.0.0.1:{port}", "--sip-tls-cert", str(ours.cert),
            "--sip-tls-key", str(ours.key)]  # fmt: skip
    return args, port


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_baresip_calls_in_with_srtp_and_hears_its_echo(
    tmp_path: Path, transport: str
) -> None:
    ca = TestCa(tmp_path)
    args, tls_port = tls_args(tmp_path, ca)
    record_dir = tmp_path / "recordings"
    gw = GatewayProcess(tmp_path, "--log-level", "debug", "--record-dir", str(record_dir), *args)
    lead = await greeting_seconds() + 0.7
    source, said = speech_wav(tmp_path, lead, 4.0)
    seconds = int(lead + len(said) / 8000 + 4) + 4
    target = (
        f"sip:agent@127.0.0.1:{tls_port};transport=tls"
        if transport == "tls"
        else f"sip:agent@127.0.0.1:{gw.sip_port}"
    )
    await asyncio.to_thread(gw.start)
    api: list[str] = []
    try:
        phone = Baresip(
            tmp_path,
            source,
            target,
            seconds + 4,
            config_extra=f"module srtp.so\nsip_cafile {ca.cert}\n",
            account=SRTP_ACCOUNT,
        )
        phone.args.insert(1, "-s")
        phone.start()
        try:

            def listed() -> bool:
                status, body = gw.http("GET", "/calls")
                api.append(str(body))
                return status == 200 and bool(body["calls"])

            await wait_for(listed, 15, "the call to be up")
            call_id = gw.http("GET", "/calls")[1]["calls"][0]["id"]
            api.append(str(gw.http("GET", f"/calls/{call_id}")[1]))
            await wait_for(lambda: bool(call_summaries(gw)), seconds + 10, "the call to end")
            api.append(str(gw.http("GET", "/metrics")[1]))
            await asyncio.sleep(0.5)
        finally:
            phone.kill()
        trace = phone.trace()
    finally:
        await stop(gw)
    offer, answer = sdp_bodies(trace)[:2]
    assert re.search(r"^m=audio \d+ RTP/SAVP ", offer, re.M), offer
    assert re.search(r"^m=audio [1-9]\d* RTP/SAVP ", answer, re.M), answer
    [ours] = re.findall(r"^a=crypto:(\d+ \S+) inline:", answer, re.M)
    assert ours in re.findall(r"^a=crypto:(\d+ \S+) inline:", offer, re.M)  # its tag and suite
    [summary] = call_summaries(gw)
    assert summary["outcome"] == "remote_hangup", summary
    assert summary["rtp_in"] > 100, summary
    echo_heard(phone, said, lead)
    no_key_anywhere(gw, set(KEY.findall(offer + answer)), api, record_dir)


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_the_gateway_calls_baresip_through_an_srtp_mandatory_trunk(
    tmp_path: Path, transport: str
) -> None:
    ca = TestCa(tmp_path)
    theirs = ca.issue("phone", "IP:127.0.0.1")
    lead = await greeting_seconds() + 0.7
    source, said = speech_wav(tmp_path, lead, 4.0)
    seconds = int(lead + len(said) / 8000 + 4) + 4
    phone = Baresip(
        tmp_path,
        source,  # it answers, speaks after the greeting, hangs up at the end of the file
        "",
        seconds + 10,
        config_extra=(f"module srtp.so\nsip_certificate {theirs.combined}\nsip_cafile {ca.cert}\n"),
        account=SRTP_ACCOUNT,
    )
    phone.args.insert(1, "-s")
    uri = (
        f"sip:127.0.0.1:{phone.sip_port + 1};transport=tls"
        if transport == "tls"
        else f"sip:127.0.0.1:{phone.sip_port}"
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[trunks.phone]\nuri = "{uri}"\ntls_ca_file = "{ca.cert}"\nsrtp = "mandatory"\n'
    )
    args, _ = tls_args(tmp_path, ca)
    gw = GatewayProcess(tmp_path, "--config", str(config), "--log-level", "debug", *args)
    phone.start()
    await asyncio.to_thread(gw.start)
    api: list[str] = []
    try:
        status, body = await asyncio.to_thread(
            gw.http, "POST", "/calls", {"to": "gw", "trunk": "phone"}
        )
        assert status == 201, body
        api.append(str(body))

        def listed() -> bool:
            _, calls = gw.http("GET", "/calls")
            api.append(str(calls))
            return bool(calls["calls"])

        await wait_for(listed, 15, "the call to be answered")
        await wait_for(lambda: bool(call_summaries(gw)), seconds + 10, "the call to end")
        api.append(str(gw.http("GET", "/metrics")[1]))
        await asyncio.sleep(0.5)
    finally:
        phone.kill()
        await stop(gw)
    trace = phone.trace()
    offer, answer = sdp_bodies(trace)[:2]
    assert re.search(r"^m=audio \d+ RTP/SAVP ", offer, re.M), offer
    offered = re.findall(r"^a=crypto:(\d+ \S+) inline:", offer, re.M)
    assert offered == [
        "1 AES_CM_128_HMAC_SHA1_80",
        "2 AES_CM_128_HMAC_SHA1_32",
        "3 AEAD_AES_128_GCM",
    ], offer
    [chosen] = re.findall(r"^a=crypto:(\d+ \S+) inline:", answer, re.M)
    assert chosen in offered
    [summary] = call_summaries(gw)
    assert summary["outcome"] == "remote_hangup", summary
    echo_heard(phone, said, lead)
    no_key_anywhere(gw, set(KEY.findall(offer + answer)), api)
