"""The OpenAI SIP connector's control plane, self-hosted, driven by the official `openai` SDK:
an aiohttp app receives the signed `realtime.call.incoming` webhook and verifies it with
`client.webhooks.unwrap`, then `client.realtime.calls.accept/reject/refer/hangup` with
`base_url` at the gateway's `/v1`. The callers are baresip (hears the echo, by content) and sipp
(the SIP status of a reject, a REFER on its dialog, the fallback when the webhook is down)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from gateway.app import Gateway
from gateway.secret import Secret
from tests.support.audio import windows_found
from tests.support.baresip import baresip_call, speech_wav
from tests.support.gateway import (
    assert_nothing_leaked,
    provider_sessions,
    run_sipp,
    running_gateway,
    settings,
)
from tests.support.harness import free_port
from tests.support.local_provider import client_events
from tests.support.openai_sip import SECRET, TOKEN, sample
from tests.support.scenarios import CallLog

OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-elses-key-0123456789abc").decode()
SIPP_DIR = Path(__file__).resolve().parents[1] / "peers" / "sipp"


@dataclass
class App:
    """The OpenAI-SIP app: its webhook endpoint and its SDK client toward the gateway."""

    url: str
    secret: str
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    forged: list[str] = field(default_factory=list)  # webhook-ids unwrap refused
    client: AsyncOpenAI | None = None

    def sdk(self, gw: Gateway, token: str = TOKEN) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=token, base_url=f"http://127.0.0.1:{gw.http_port}/v1", max_retries=0
        )


@contextlib.asynccontextmanager
async def webhook_app(secret: str = SECRET) -> AsyncIterator[App]:
    port = free_port()
    app = App(f"http://127.0.0.1:{port}/hook", secret)
    verifier = AsyncOpenAI(api_key="unused")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = verifier.webhooks.unwrap(body, dict(request.headers), secret=app.secret)
        except openai.InvalidWebhookSignatureError:
            app.forged.append(request.headers.get("webhook-id", ""))
            return web.Response(status=400)
        await app.events.put(event)
        return web.Response(status=200)

    server = web.Application()
    server.router.add_post("/hook", hook)
    runner = web.AppRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app
    finally:
        await runner.cleanup()


def gateway_for(app_url: str, scenario: Any = None, **overrides: Any) -> Any:
    return running_gateway(
        scenario,
        call_mode="webhook",
        call_webhook_url=app_url,
        call_webhook_secret=Secret(SECRET),
        api_token=Secret(TOKEN),
        **overrides,
    )


def reject_scenario(tmp_path: Path, status: int) -> Path:
    """An INVITE (with an X- header) that must ring (180), then get `status`, then ACK."""
    text = (SIPP_DIR / "e2e_invite_403.xml").read_text()
    text = text.replace(
        "      User-Agent: sipp-e2e\n",
        "      User-Agent: sipp-e2e\n      X-Tenant: acme\n",
        1,
    )
    text = text.replace(
        '<recv response="403"/>', f'<recv response="180"/>\n  <recv response="{status}"/>'
    )
    assert f'response="{status}"' in text
    path = tmp_path / f"reject_{status}.xml"
    path.write_text(text)
    return path


def refer_scenario(tmp_path: Path) -> Path:
    """Answered after ringing; the app's REFER arrives (202, NOTIFY 200), then its BYE."""
    text = (SIPP_DIR / "e2e_refer.xml").read_text()
    start = text.index('  <pause milliseconds="1500"/>')
    end = text.index('  <recv request="REFER"')
    text = text[:start] + text[end:]
    text = text.replace('<recv response="180" optional="true"/>', '<recv response="180"/>')
    path = tmp_path / "refer.xml"
    path.write_text(text)
    return path


async def test_accept_with_instructions_then_the_caller_hears_the_echo(tmp_path: Path) -> None:
    log = CallLog()
    async with webhook_app() as app, gateway_for(app.url, log.setup, greeting=False) as gw:
        sdk = app.sdk(gw)
        assert gw.local_provider is not None
        gw.local_provider.options.record_frames = True

        async def the_app() -> str:
            event = await asyncio.wait_for(app.events.get(), 10)
            assert event.type == "realtime.call.incoming"
            call_id = event.data.call_id
            names = {h.name.lower() for h in event.data.sip_headers}
            assert {"from", "to", "call-id"} <= names
            await sdk.realtime.calls.accept(
                call_id,
                type="realtime",
                model="gpt-realtime",
                instructions="You are the webhook-accepted agent.",
            )
            # a second accept of the same call: 409
            with pytest.raises(openai.ConflictError) as conflict:
                await sdk.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
            assert conflict.value.status_code == 409
            return str(call_id)

        app_task = asyncio.create_task(the_app())
        source, said = speech_wav(tmp_path, 0.8, 4.0)
        phone = await baresip_call(gw, log, tmp_path, source)
        call_id = await app_task
        [call] = log.calls
        assert call.id == call_id
        heard = phone.heard()
        found = windows_found(said, heard)
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found
        # the app's instructions reached the provider session
        [engine] = provider_sessions(gw)
        sent = [e["session"].get("instructions") for e in client_events(engine, "session.update")]
        assert "You are the webhook-accepted agent." in sent, sent
        await assert_nothing_leaked(gw)


async def test_reject_gives_the_caller_the_status_asked_for(tmp_path: Path) -> None:
    async with webhook_app() as app, gateway_for(app.url) as gw:
        sdk = app.sdk(gw)

        async def the_app() -> None:
            event = await asyncio.wait_for(app.events.get(), 10)
            headers = {h.name: h.value for h in event.data.sip_headers}
            assert headers["X-Tenant"] == "acme"
            await sdk.realtime.calls.reject(event.data.call_id, status_code=486)

        app_task = asyncio.create_task(the_app())
        _sipp, result = await run_sipp(gw, tmp_path, scenario=str(reject_scenario(tmp_path, 486)))
        await app_task
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)


async def test_refer_sends_refer_to_the_caller_then_hangup_sends_bye(tmp_path: Path) -> None:
    async with webhook_app() as app, gateway_for(app.url) as gw:
        sdk = app.sdk(gw)

        async def the_app() -> None:
            event = await asyncio.wait_for(app.events.get(), 10)
            call_id = event.data.call_id
            await sdk.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
            # at once: the refer waits for the call still being set up (its session, its ACK)
            await sdk.realtime.calls.refer(call_id, target_uri="sip:operator@127.0.0.1:5099")
            await asyncio.sleep(1.0)  # REFER 202, NOTIFY 200
            await sdk.realtime.calls.hangup(call_id)

        app_task = asyncio.create_task(the_app())
        sipp, result = await run_sipp(gw, tmp_path, scenario=str(refer_scenario(tmp_path)))
        await app_task
        assert result.successful_calls == 1, result.explain()
        [refer] = [m for m in sipp.traced() if m.method == "REFER"]
        assert "Refer-To: <sip:operator@127.0.0.1:5099>" in refer.text or (
            "sip:operator@127.0.0.1:5099" in refer.text
        )
        assert any(m.method == "BYE" and m.direction == "received" for m in sipp.traced())
        await assert_nothing_leaked(gw)


async def test_refer_progress_reaches_the_sideband(tmp_path: Path) -> None:
    # the caller's side answers the REFER with 202, then NOTIFYs sipfrag 100 (active), 200
    text = refer_scenario(tmp_path).read_text()
    notify_at = text.index('  <send retrans="500">\n    <![CDATA[\n      NOTIFY')
    ok = '  <recv response="200"/>\n'
    notify_end = text.index(ok, notify_at) + len(ok)
    final = text[notify_at:notify_end]
    trying = final.replace("terminated;reason=noresource", "active;expires=60").replace(
        "SIP/2.0 200 OK\n    ]]>", "SIP/2.0 100 Trying\n    ]]>"
    )
    final = final.replace("CSeq: 2 NOTIFY", "CSeq: 3 NOTIFY")
    scenario = tmp_path / "refer_progress.xml"
    scenario.write_text(text[:notify_at] + trying + final + text[notify_end:])
    async with webhook_app() as app, gateway_for(app.url) as gw:
        sdk = AsyncOpenAI(
            api_key=TOKEN,
            base_url=f"http://127.0.0.1:{gw.http_port}/v1",
            websocket_base_url=f"ws://127.0.0.1:{gw.http_port}/v1",
            max_retries=0,
        )
        progress: list[dict[str, Any]] = []

        async def the_app() -> None:
            event = await asyncio.wait_for(app.events.get(), 10)
            call_id = event.data.call_id
            await sdk.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
            # at once, as apps do: the connect waits for the call still being set up
            async with sdk.realtime.connect(call_id=call_id, model="gpt-realtime") as conn:
                await sdk.realtime.calls.refer(call_id, target_uri="sip:operator@127.0.0.1:5099")
                while not progress or not progress[-1]["final"]:
                    frame = json.loads(await asyncio.wait_for(conn.recv_bytes(), 10))
                    if frame["type"] == "call.refer.progress":
                        progress.append(frame)
                await sdk.realtime.calls.hangup(call_id)

        app_task = asyncio.create_task(the_app())
        _sipp, result = await run_sipp(gw, tmp_path, scenario=str(scenario))
        await app_task
        assert result.successful_calls == 1, result.explain()
        assert [(p["status_code"], p["state"], p["final"]) for p in progress] == [
            (202, "accepted", False),
            (100, "trying", False),
            (200, "succeeded", True),
        ], progress
        await assert_nothing_leaked(gw)


async def test_a_webhook_endpoint_that_is_down_gets_the_fallback(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with gateway_for(down, call_webhook_timeout=1.5, call_webhook_reject_status=480) as gw:
        _sipp, result = await run_sipp(gw, tmp_path, scenario=str(reject_scenario(tmp_path, 480)))
        assert result.successful_calls == 1, result.explain()
        await assert_nothing_leaked(gw)


async def test_a_webhook_endpoint_that_is_down_with_fallback_default_runs_the_default_scenario(
    tmp_path: Path,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    log = CallLog()
    fallbacks = sample("gateway_call_webhooks_total", outcome="fallback_default")
    errors = sample("gateway_call_webhook_deliveries_total", result="error")
    async with gateway_for(
        down, log.setup, call_webhook_timeout=1.0, call_webhook_fallback="default", greeting=False
    ) as gw:
        source, said = speech_wav(tmp_path, 0.8, 4.0)
        phone = await baresip_call(gw, log, tmp_path, source)
        assert len(log.calls) == 1  # answered once the 1 s wait ran out: no app ever decided
        found = windows_found(said, phone.heard())
        assert np.mean(np.array(found) >= 0.8) >= 0.7, found
        assert sample("gateway_call_webhooks_total", outcome="fallback_default") == fallbacks + 1
        assert sample("gateway_call_webhook_deliveries_total", result="error") >= errors + 2
        await assert_nothing_leaked(gw)


@pytest.mark.parametrize("form", ["env", "file"])
async def test_the_webhook_secret_as_env_or_file_is_verified_by_unwrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    if form == "env":
        monkeypatch.setenv("OAI18_CALL_WEBHOOK_SECRET", SECRET)
        config = settings(call_webhook_secret=Secret("env:OAI18_CALL_WEBHOOK_SECRET"))
    else:
        path = tmp_path / "whsec"
        path.write_text(SECRET + "\n")
        path.chmod(0o600)
        config = settings({"GATEWAY_CALL_WEBHOOK_SECRET_FILE": str(path)})
    async with webhook_app() as app:
        gw = Gateway(
            dataclasses.replace(
                config, call_mode="webhook", call_webhook_url=app.url, api_token=Secret(TOKEN)
            )
        )
        await gw.start()
        try:

            async def the_app() -> None:
                event = await asyncio.wait_for(app.events.get(), 10)  # unwrap verified it
                await app.sdk(gw).realtime.calls.reject(event.data.call_id, status_code=486)

            app_task = asyncio.create_task(the_app())
            scenario = str(reject_scenario(tmp_path, 486))
            _sipp, result = await run_sipp(gw, tmp_path, scenario=scenario)
            await app_task
            assert result.successful_calls == 1, result.explain()
            assert app.forged == []
        finally:
            await gw.stop()


async def test_a_forged_signature_is_refused_by_unwrap_and_retried(tmp_path: Path) -> None:
    # the receiver knows another secret: every delivery is a forgery to it
    async with (
        webhook_app(OTHER_SECRET) as app,
        gateway_for(app.url, call_webhook_timeout=2.0, call_webhook_reject_status=480) as gw,
    ):
        _sipp, result = await run_sipp(gw, tmp_path, scenario=str(reject_scenario(tmp_path, 480)))
        assert result.successful_calls == 1, result.explain()
        assert app.events.empty()
        # retried with backoff (0.5 s, 1 s within the 2 s), the same message id each time
        assert len(app.forged) >= 2 and len(set(app.forged)) == 1, app.forged


async def test_a_wrong_token_gets_401_and_an_unknown_call_404() -> None:
    async with webhook_app() as app, gateway_for(app.url) as gw:
        with pytest.raises(openai.AuthenticationError) as denied:
            await app.sdk(gw, token="wrong-token").realtime.calls.reject("rtc_x")
        assert denied.value.status_code == 401
        body = denied.value.body
        assert isinstance(body, dict) and set(body) >= {"message", "type", "code", "param"}
        with pytest.raises(openai.NotFoundError) as missing:
            await app.sdk(gw).realtime.calls.accept("no-such-call", type="realtime", model="m")
        assert missing.value.status_code == 404
        with pytest.raises(openai.BadRequestError):
            await app.sdk(gw).realtime.calls.reject("no-such-call", status_code=42)


async def test_cancel_while_waiting_for_the_app_ends_the_wait_cleanly(tmp_path: Path) -> None:
    async with webhook_app() as app, gateway_for(app.url, call_webhook_timeout=30.0) as gw:
        text = (SIPP_DIR / "e2e_cancel.xml").read_text()
        text = text.replace(
            '<pause milliseconds="200"/>',
            '<recv response="180"/>\n  <pause milliseconds="1000"/>',
            1,
        )
        scenario = tmp_path / "cancel_ringing.xml"
        scenario.write_text(text)
        _sipp, result = await run_sipp(gw, tmp_path, scenario=str(scenario))
        assert result.successful_calls == 1, result.explain()
        event = await asyncio.wait_for(app.events.get(), 5)  # the app heard of the call
        assert gw.calls is not None and gw.calls.incoming is not None
        assert not gw.calls.incoming.waiting(event.data.call_id)  # long before the 30 s
        with pytest.raises(openai.NotFoundError):
            await app.sdk(gw).realtime.calls.accept(
                event.data.call_id, type="realtime", model="gpt-realtime"
            )
        await assert_nothing_leaked(gw)
