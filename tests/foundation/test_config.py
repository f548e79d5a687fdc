from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, add_arguments, load_settings


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_safe() -> None:
    s = load_settings(_args(), environ={})
    assert s.sip_allow == ["127.0.0.0/8", "::1/128"]
    assert s.ice_servers == []
    assert not s.api_token
    assert s.resolved_provider() == "local"


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'max_calls = 5\nsip_listen = "127.0.0.1:5070"\nvoice = "toml"\n'
        '[transfer_targets]\noperator = "sip:op@example.com"\n'
    )
    env = {"GATEWAY_MAX_CALLS": "7", "GATEWAY_VOICE": "env"}
    s = load_settings(_args("--config", str(cfg), "--voice", "flag"), environ=env)
    assert s.max_calls == 7
    assert s.sip_listen == "127.0.0.1:5070"
    assert s.voice == "flag"
    assert s.transfer_targets == {"operator": "sip:op@example.com"}


def test_provider_keys_from_customary_variables_never_print() -> None:
    s = load_settings(_args(), environ={"OPENAI_API_KEY": "sk-test-123"})
    assert s.resolved_provider() == "openai"
    assert s.openai_api_key.reveal() == "sk-test-123"
    assert "sk-test-123" not in repr(s)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--sip-listen", "nonsense"], {}, "sip_listen"),
        (["--rtp-ports", "20-10"], {}, "rtp_ports"),
        (["--sip-allow", "10.0.0.0/33"], {}, "not a CIDR"),
        (["--provider", "bogus"], {}, "provider"),
        ([], {"GATEWAY_MAX_CALLS": "many"}, "GATEWAY_MAX_CALLS"),
        (["--sip-tls-listen", "0.0.0.0:5061"], {}, "sip_tls_cert"),
        (["--session-format", "opus"], {}, "session_format"),
        (["--sip-calls-burst", "0"], {}, "sip_calls_burst must be at least 1"),
        (["--sip-overload-reply-rate", "-1"], {}, "sip_overload_reply_rate"),
        (["--provider-breaker-failures", "-1"], {}, "provider_breaker_failures"),
        (["--provider-breaker-cooldown", "0"], {}, "provider_breaker_cooldown"),
    ],
)
def test_bad_settings_give_one_clear_error(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_args(*argv), environ=env)


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("max_cals = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_cals'"):
        load_settings(_args("--config", str(cfg)), environ={})


def test_every_setting_has_help() -> None:
    import dataclasses

    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f.name


def test_configuration_doc_lists_every_setting() -> None:
    import dataclasses

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for f in dataclasses.fields(Settings):
        assert f"`{f.name}`" in doc, f"docs/configuration.md misses {f.name}"


def test_digest_algorithms_are_checked() -> None:
    s = load_settings(_args("--sip-digest-algorithms", "MD5,SHA-256"), environ={})
    assert s.sip_digest_algorithms == ["MD5", "SHA-256"]
    with pytest.raises(ConfigError, match="sip_digest_algorithms"):
        load_settings(_args("--sip-digest-algorithms", "SHA-1"), environ={})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('inbound_sources = "203.0.113.0/24"', "trunks.t.inbound_sources: expected a list"),
        ('inbound_sources = ["203.0.113.0/33"]', "'203.0.113.0/33' is not a CIDR"),
        ('inbound_sources = ["203.0.113.0/24"]\ncalls_per_second = "x"', "calls_per_second"),
        ('inbound_sources = ["203.0.113.0/24"]\ncalls_burst = 0', "calls_burst"),
    ],
)
def test_trunk_inbound_keys_are_checked(tmp_path: Path, table: str, message: str) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"[trunks.t]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(_args("--config", str(cfg)), environ={})


def test_a_trunk_with_inbound_sources_gets_its_own_call_budget(tmp_path: Path) -> None:
    from gateway.app import sip_source_policy

    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'sip_allow = ["10.0.0.0/8"]\nsip_calls_per_second = 2\nsip_calls_burst = 2\n'
        '[trunks.carrier]\nuri = "sip:trunk.example.com"\n'
        'inbound_sources = ["203.0.113.0/24"]\ncalls_burst = 5\n'
        '[trunks.outbound_only]\nuri = "sip:other.example.com"\n'
    )
    policy = sip_source_policy(load_settings(_args("--config", str(cfg)), environ={}))
    assert policy.trunk_of("203.0.113.7") == "carrier" and policy.is_allowed("203.0.113.7")
    assert [t.name for t in policy.trunks] == ["carrier"]
    assert policy.trunks[0].calls_per_second == 2 and policy.trunks[0].calls_burst == 5
    assert sum(policy.admit_call(f"203.0.113.{i}", 0.0) for i in range(10)) == 5
    assert sum(policy.admit_call("10.1.2.3", 0.0) for _ in range(10)) == 2
