"""The start-up banner's text (gateway/banner.py), pure: what to dial per transport, the page
link with the token only in the terminal block, never in the log fields; the warnings."""

from __future__ import annotations

import io

from gateway import banner
from gateway.secret import Secret


def _facts(**overrides: object) -> banner.StartupFacts:
    base: dict[str, object] = {
        "sip_host": "192.0.2.7",
        "sip_port": 5060,
        "tls_port": 5061,
        "http_host": "0.0.0.0",
        "http_port": 8080,
        "token": Secret("tok-secret-55"),
        "provider": "openai",
        "provider_reason": "OPENAI_API_KEY is set",
        "model": "gpt-realtime",
    }
    return banner.StartupFacts(**{**base, **overrides})  # type: ignore[arg-type]


def test_the_block_names_every_transport_and_the_token_link() -> None:
    lines = _facts().lines()
    assert "  dial      sip:agent@192.0.2.7:5060" in lines
    assert "  dial      sip:agent@192.0.2.7:5060;transport=tcp" in lines
    assert "  dial      sip:agent@192.0.2.7:5061;transport=tls" in lines
    assert "  open      http://127.0.0.1:8080/#token=tok-secret-55" in lines
    assert "  provider  openai, model gpt-realtime (OPENAI_API_KEY is set)" in lines


def test_the_log_fields_never_carry_the_token() -> None:
    fields = _facts().log_fields()
    assert "tok-secret-55" not in repr(fields)
    assert fields["token_required"] is True and fields["open"] == "http://127.0.0.1:8080/"
    assert "#token=" not in "\n".join(_facts(token=Secret("")).lines())


def test_ipv6_hosts_are_bracketed() -> None:
    facts = _facts(sip_host="2001:db8::1", tls_port=0, http_host="::1")
    assert facts.dial() == [
        "sip:agent@[2001:db8::1]:5060",
        "sip:agent@[2001:db8::1]:5060;transport=tcp",
    ]
    assert facts.page() == "http://[::1]:8080/"


def test_first_run_warnings() -> None:
    warn = banner.first_run_warnings(
        provider="local", provider_setting="auto", metrics_listen="0.0.0.0:9100",
        sip_allow=["127.0.0.0/8", "::1/128"], inbound_trunks=False,
    )  # fmt: skip
    assert len(warn) == 3
    assert "local echo provider" in warn[0]
    assert "/metrics on 0.0.0.0:9100 is open" in warn[1]
    assert "loopback only" in warn[2]
    quiet = banner.first_run_warnings(
        provider="local", provider_setting="local", metrics_listen="127.0.0.1:9100",
        sip_allow=["127.0.0.0/8", "10.0.0.0/8"], inbound_trunks=False,
    )  # fmt: skip
    assert quiet == []


def test_a_pipe_is_not_a_person() -> None:
    assert not banner.is_human("auto", io.StringIO())
    assert banner.drain_notice(2, 300.0) == (
        "Stopping: 2 calls are draining (up to 300 s). Press Ctrl-C again to end them now."
    )
    assert banner.stop_now_notice(1) == "Ending 1 call now."
