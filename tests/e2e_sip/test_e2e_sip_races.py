"""Racy phones against the whole gateway (issue 13, item 1): a BYE that follows the ACK at once
must end the call like any other BYE, with nothing left behind."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import assert_nothing_leaked, run_sipp, running_gateway
from tests.support.scenarios import CallLog


async def test_bye_right_after_ack_ends_every_call(tmp_path: Path) -> None:
    log = CallLog()
    async with running_gateway(log.setup) as gw:
        _sipp, result = await run_sipp(
            gw, tmp_path, scenario="bye_right_after_ack.xml", calls=20, extra=["-r", "10"]
        )
        assert result.successful_calls == 20, result.explain()
        # every call ends by the caller's BYE: provider session closed, port and slot freed
        await assert_nothing_leaked(gw)
        assert log.outcomes() == ["remote_hangup"] * 20
