"""`gateway call` and `gateway calls` as a user runs them: the real CLI as a subprocess against a
live gateway, sipp as the callee dialled directly (`allow_direct_dial`): progress lines and the
exit status for an answered call (ended by the # key → end_call) and a busy one (486)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli_calls import EXIT_BUSY, EXIT_ERROR, EXIT_OK
from gateway.secret import Secret
from tests.support.gateway import assert_nothing_leaked, running_gateway
from tests.support.sipp import Sipp

TOKEN = "cli-call-token-9d2c"


async def _cli(*args: str, url: str, token_file: Path | None = None) -> tuple[int, str, str]:
    """Run `python -m gateway ARGS` with the token in the environment (or a file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    if token_file is None:
        env["GATEWAY_API_TOKEN"] = TOKEN
    else:
        env["GATEWAY_API_TOKEN_FILE"] = str(token_file)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        "--url",
        url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _callee(tmp_path: Path, scenario: str) -> Sipp:
    return Sipp(tmp_path, "", scenario=scenario, extra=["-m", "1", "-d", "300"], timeout=30)


async def test_gateway_call_prints_progress_and_exits_0_for_an_answered_call(
    tmp_path: Path,
) -> None:
    uas = _callee(tmp_path, "uas_answer_pound.xml").start()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    try:
        async with running_gateway(api_token=Secret(TOKEN), allow_direct_dial=True) as gw:
            url = f"http://127.0.0.1:{gw.http_port}"
            target = f"sip:callee@127.0.0.1:{uas.local_port}"
            status, out, err = await _cli("call", target, url=url, token_file=token_file)
            lines = out.splitlines()
            assert status == EXIT_OK, (out, err)
            assert lines[0].startswith("call "), lines
            assert lines[1] == f"dialing {target} (direct)", lines
            assert "ringing (180)" in lines
            assert "answered" in lines
            # the # key: the local provider calls end_call, the gateway answers and hangs up
            tools = [line for line in lines if line.startswith("tool call: end_call -> ok")]
            assert len(tools) == 1, lines
            assert lines[-1].startswith("hung up: "), lines
            order = [lines.index(x) for x in ("ringing (180)", "answered", tools[0], lines[-1])]
            assert order == sorted(order), lines
            await assert_nothing_leaked(gw)
            # nothing live now
            status, out, _ = await _cli("calls", url=url)
            assert (status, out.strip()) == (EXIT_OK, "no live calls")
        result = await uas.wait_async(20)
        assert result.successful_calls == 1, result.explain()
        assert "BYE sip:" in uas.messages
    finally:
        uas.kill()


async def test_gateway_call_exits_3_for_busy(tmp_path: Path) -> None:
    uas = _callee(tmp_path, "uas_busy.xml").start()
    try:
        async with running_gateway(api_token=Secret(TOKEN), allow_direct_dial=True) as gw:
            url = f"http://127.0.0.1:{gw.http_port}"
            target = f"sip:callee@127.0.0.1:{uas.local_port}"
            status, out, err = await _cli("call", target, url=url)
            lines = out.splitlines()
            assert status == EXIT_BUSY, (out, err)
            assert "ringing (180)" in lines and "answered" not in lines, lines
            assert lines[-1].startswith("not answered: busy 486"), lines
            await assert_nothing_leaked(gw)
        result = await uas.wait_async(20)
        assert result.successful_calls == 1, result.explain()
    finally:
        uas.kill()


async def test_direct_dial_off_is_refused_naming_the_setting_and_bad_token_is_an_error(
    tmp_path: Path,
) -> None:
    async with running_gateway(api_token=Secret(TOKEN)) as gw:
        url = f"http://127.0.0.1:{gw.http_port}"
        status, out, err = await _cli("call", "sip:callee@127.0.0.1:5999", url=url)
        assert status == EXIT_ERROR and out == "", (out, err)
        assert "403" in err and "allow_direct_dial" in err, err
        assert gw.manager.calls == {} and gw.manager._reserved == 0
        wrong = tmp_path / "wrong"
        wrong.write_text("nope")
        status, _, err = await _cli("calls", url=url, token_file=wrong)
        assert status == EXIT_ERROR and "401" in err, err


async def test_gateway_calls_lists_and_shows_a_live_call(tmp_path: Path) -> None:
    uas = Sipp(
        tmp_path,
        "",
        scenario="e2e_uas_answer.xml",
        timeout=30,
        extra=["-m", "1", "-key", "proto", "RTP/AVP", "-key", "secattr", "a=sendrecv"],
    )
    uas.start()
    try:
        async with running_gateway(api_token=Secret(TOKEN), allow_direct_dial=True) as gw:
            url = f"http://127.0.0.1:{gw.http_port}"
            assert gw.sip_calls is not None
            call_id = await gw.sip_calls.dial(f"sip:bob@127.0.0.1:{uas.local_port}", None, {})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while gw.manager.get(call_id) is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            status, out, err = await _cli("calls", url=url)
            assert status == EXIT_OK, err
            header, *rows = out.splitlines()
            assert header.split()[:4] == ["ID", "LEG", "DIRECTION", "STATE"], out
            assert len(rows) == 1 and rows[0].split()[:3] == [call_id, "sip", "outbound"], out
            status, out, err = await _cli("calls", "show", call_id, url=url)
            assert status == EXIT_OK, err
            shown: dict[str, Any] = dict(line.split(": ", 1) for line in out.splitlines())
            assert (
                shown["id"] == call_id and shown["called"] == f"sip:bob@127.0.0.1:{uas.local_port}"
            )
            status, _, err = await _cli("calls", "show", "nope", url=url)
            assert status == EXIT_ERROR and "404" in err, err
            await gw.manager.hangup(call_id)
        await uas.wait_async(20)
    finally:
        uas.kill()


async def test_gateway_call_instructions_and_session_reach_the_providers_session(
    tmp_path: Path,
) -> None:
    """`--session FILE` and `--instructions` become `POST /calls`'s `session`, laid over the
    route's config: the call's Realtime session is opened with them (the provider's
    session.updated answers them), and a session that is not an object is a 400."""
    uas = Sipp(
        tmp_path,
        "",
        scenario="e2e_uas_answer.xml",
        timeout=30,
        extra=["-m", "1", "-key", "proto", "RTP/AVP", "-key", "secattr", "a=sendrecv"],
    )
    uas.start()
    session_file = tmp_path / "session.json"
    session_file.write_text('{"type": "realtime", "instructions": "overridden", "tools": []}')
    try:
        async with running_gateway(api_token=Secret(TOKEN), allow_direct_dial=True) as gw:
            url = f"http://127.0.0.1:{gw.http_port}"
            target = f"sip:bob@127.0.0.1:{uas.local_port}"
            proc = asyncio.create_task(
                _cli(
                    "call",
                    target,
                    "--session",
                    str(session_file),
                    "--instructions",
                    "You are a pirate.",
                    url=url,
                )
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            calls: list[Any] = []
            while not calls and loop.time() < deadline:
                calls = list(gw.manager.calls.values())
                await asyncio.sleep(0.05)
            assert len(calls) == 1
            link = calls[0]._link
            assert link.protocol.requested.instructions == "You are a pirate."
            # the provider's answer carries them: the session really was opened with them
            assert link.protocol.effective is not None
            assert link.protocol.effective.instructions == "You are a pirate."
            await gw.manager.hangup(calls[0].id)
            status, out, err = await proc
            assert status == EXIT_OK, (out, err)
            bad = tmp_path / "bad.json"
            bad.write_text('["not", "an", "object"]')
            status, _, err = await _cli("call", target, "--session", str(bad), url=url)
            assert status == EXIT_ERROR and "JSON object" in err, err
        await uas.wait_async(20)
    finally:
        uas.kill()
