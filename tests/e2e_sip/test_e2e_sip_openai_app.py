"""The example app of docs/openai-sip-compat.md (docs/examples/openai_sip_app.py), run as its
own process with nothing but the `OPENAI_*` environment pointed at a live gateway, and a sipp
caller. The whole flow of an OpenAI SIP connector app, through the official `openai` SDK only:
the signed webhook (verified by `client.webhooks.unwrap`), `accept` with instructions and a
function tool, the sideband (`client.realtime.connect(call_id=...)`), the app's answer to the
model's call of its tool, and `hangup`. The caller hears its own speech echoed and the model's
answer to the tool's output (the local provider's "Done." reply prompt), by content,
then gets the BYE of the app's hangup."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import telcodecs

from gateway.config import parse_port_range
from gateway.media.format import PCMA_8K
from gateway.secret import Secret
from tests.support.audio import Pcm, windows_found
from tests.support.baresip import speech_wav
from tests.support.gateway import assert_nothing_leaked, running_gateway
from tests.support.harness import free_port
from tests.support.local_provider import client_frames
from tests.support.openai_sip import SECRET, TOKEN, sample
from tests.support.pcap import LoopbackCapture, read_pcap_udp, write_rtp_pcap
from tests.support.scenarios import CallLog
from tests.support.sipp import SCENARIOS as SIPP_DIR
from tests.support.sipp import Sipp
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "openai_sip_app.py"
SILENCE_ALAW = b"\xd5"


def caller_scenario(tmp_path: Path, speech_pcap: Path) -> Path:
    """INVITE (PCMA + telephone-event), ringing while the app decides, 200, ACK; say a phrase
    (and hear it echoed), then press `*`, `4` (the local model calls the session's 4th tool: the
    app's, after end_call, transfer_call and send_dtmf); wait for the app's BYE."""
    text = (SIPP_DIR / "e2e_pcap_dtmf.xml").read_text()
    head = text[: text.index("  <nop>")]
    head = head.replace('<recv response="180" optional="true"/>', '<recv response="180"/>')
    play = '  <nop><action><exec play_pcap_audio="{}"/></action></nop>\n'
    body = (
        play.format(speech_pcap)
        + '  <pause milliseconds="9000"/>\n'
        + play.format("/usr/share/sip-tester/dtmf_2833_star.pcap")
        + '  <pause milliseconds="400"/>\n'
        + play.format("/usr/share/sip-tester/dtmf_2833_4.pcap")
    )
    wait_bye = (SIPP_DIR / "e2e_wait_bye.xml").read_text()
    body += wait_bye[wait_bye.index('  <recv request="BYE"') :]
    path = tmp_path / "openai_app_caller.xml"
    path.write_text(head + body)
    return path


async def test_the_example_app_runs_a_call_end_to_end_with_the_sdk(tmp_path: Path) -> None:
    # the caller's speech: espeak-ng, as PCMA RTP (20 ms) with 1.5 s of silence after it
    _padded, said = speech_wav(tmp_path, 0.3, 0.0)
    speech = telcodecs.alaw_encode(said.astype("<i2").tobytes()) + SILENCE_ALAW * 12000
    speech_pcap = write_rtp_pcap(tmp_path / "speech.pcap", speech, ptime_ms=20)

    app_port = free_port()
    log = CallLog()
    accepted = sample("gateway_call_webhooks_total", outcome="accepted")
    delivered = sample("gateway_call_webhook_delivery_seconds_count")
    sidebands = sample("gateway_sidebands_total")
    outputs_sent = sample("gateway_sideband_client_events_total", type="conversation.item.create")
    async with running_gateway(
        log.setup,
        call_mode="webhook",
        call_webhook_url=f"http://127.0.0.1:{app_port}/webhook",
        call_webhook_secret=Secret(SECRET),
        api_token=Secret(TOKEN),
        greeting=False,
    ) as gw:
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True
        env = {
            **os.environ,
            "OPENAI_API_KEY": TOKEN,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{gw.http_port}/v1",
            "OPENAI_WEBHOOK_SECRET": SECRET,
        }
        app_log = tmp_path / "app.log"
        app = subprocess.Popen(  # noqa: ASYNC220 (started once, stopped by PID below)
            [sys.executable, str(EXAMPLE), "--port", str(app_port)],
            env=env,
            stdout=app_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await wait_for(lambda: _listening(app_port), 15, "the example app to listen")
            low, high = parse_port_range(gw.settings.rtp_ports)
            capture = tmp_path / "to_caller.pcap"
            sipp = Sipp(
                tmp_path,
                f"127.0.0.1:{gw.sip_port}",
                scenario=caller_scenario(tmp_path, speech_pcap),
                extra=["-m", "1"],
                timeout=40,
            )
            with LoopbackCapture(capture, f"udp and src portrange {low}-{high}"):
                sipp.start()
                try:
                    result = await sipp.wait_async()
                finally:
                    sipp.kill()
                await asyncio.sleep(0.2)
            output = app_log.read_text(errors="replace")
            assert result.successful_calls == 1, (result.explain(), output)
            # the BYE is the app's hangup (the caller never hangs up in this scenario)
            [call] = log.calls
            assert f"accepted {call.id}" in output and f"hung up {call.id}" in output, output
            await wait_for(lambda: "sideband closed" in app_log.read_text(), 5, "sideband close")
        finally:
            if app.poll() is None:
                os.kill(app.pid, signal.SIGTERM)
                app.wait(5)
        # the app's tool: declared beside the gateway's, called once, answered by the app only
        outputs = [
            f["item"]
            for f in client_frames(gw.local_provider)
            if f["type"] == "conversation.item.create"
            and f["item"]["type"] == "function_call_output"
        ]
        assert len(outputs) == 1, outputs
        assert json.loads(outputs[0]["output"]) == {"order": "42", "status": "shipped"}
        assert f"answered {outputs[0]['call_id']}" in output
        # what the caller heard, by content: its own phrase echoed, then the reply chime
        heard = _heard_pcma(capture)
        found = windows_found(said, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found
        # the model's answer after the tool's output: the provider's "reply" prompt, in PCMA
        reply = telcodecs.alaw_decode(gw.local_provider.options.prompts.audio("reply", PCMA_8K))
        assert len(reply) >= 2000
        found = windows_found(reply, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.7, ("the reply to the tool's output", found)
        await assert_nothing_leaked(gw)
        # counted: one accepted webhook call, delivered once, one sideband (gone), one output
        assert sample("gateway_call_webhooks_total", outcome="accepted") == accepted + 1
        assert sample("gateway_call_webhook_delivery_seconds_count") == delivered + 1
        assert sample("gateway_sidebands_total") == sidebands + 1
        assert sample("gateway_sidebands_live") == 0
        assert (
            sample("gateway_sideband_client_events_total", type="conversation.item.create")
            == outputs_sent + 1
        )


def test_the_docs_show_excerpts_of_the_example_as_it_is() -> None:
    doc = (ROOT / "docs" / "openai-sip-compat.md").read_text()
    section = doc.split("## An end-to-end example app", 1)[1].split("\n## ", 1)[0]
    listings = re.findall(r"```python\n(.*?)```", section, re.S)
    assert listings, "the example section shows no listing"
    source = EXAMPLE.read_text()
    for listing in listings:
        assert listing in source, f"the doc's listing is not in {EXAMPLE.name}:\n{listing}"


def _heard_pcma(capture: Path) -> Pcm:
    payloads = [
        p.payload[12:]
        for p in read_pcap_udp(capture)
        if len(p.payload) > 12 and p.payload[1] & 0x7F == 8
    ]
    return telcodecs.alaw_decode(b"".join(payloads))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
