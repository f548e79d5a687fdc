"""`gateway check` (issue 19): every problem at once, one line each, the nearest valid key
suggested; the effective settings printed with every secret redacted; `gateway serve` refusing
on the same checks; explicit provider choice."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from gateway.config import NUMERIC_RANGES, SESSION_FIELD_NAMES, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
#: the provider variables of the machine must not leak into these runs
_CLEAN_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "YANDEX_"))
}


def _gateway(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        env={**_CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


BAD_CONFIG = """\
vad_threshold = 2
max_cals = 3
rtp_timeout = -1
[trunks.carrier]
url = "sip:carrier.example"
[tools.lookup]
url = "https://tools.example/lookup"
descripton = "look a thing up"
[[routes]]
caled = "100"
[transfer_targets]
sales = "https://sales.example"
"""


def test_check_lists_every_problem_with_the_nearest_key(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    cfg = tmp_path / "gw.toml"
    cfg.write_text(BAD_CONFIG)
    proc = _gateway(
        "check", "--config", str(cfg), "--provider", "openai", "--sip-tls-listen", "127.0.0.1:0",
        "--sip-tls-cert", str(tmp_path / "missing.pem"),
        "--record-dir", str(tmp_path / "a-file" / "rec"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gateway: error: ")]
    expected = [
        "unknown setting 'max_cals' (did you mean 'max_calls'?)",
        "vad_threshold: 2.0 is out of range 0..1",
        "rtp_timeout: -1.0 is out of range 0..86400",
        "sip_tls_cert: no such file",
        "sip_tls_listen needs sip_tls_key",
        "provider openai needs an API key",
        "trunks.carrier: unknown key 'url' (did you mean 'uri'?)",
        "tools.lookup: unknown key 'descripton' (did you mean 'description'?)",
        "routes[0]: unknown key 'caled' (did you mean 'called'?)",
        "transfer_targets.sales: 'https://sales.example' is not a sip:, sips: or tel: URI",
        "a-file' is not a writable directory",
    ]
    for fragment in expected:
        assert sum(fragment in line for line in errors) == 1, (fragment, errors)
    assert len(errors) == len(expected), errors
    assert proc.stdout == ""  # nothing printed as if valid


def test_check_prints_the_settings_with_every_secret_redacted(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-FILE-secret-4821\n")
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        'call_webhook_secret = "whsec_dG9tbC1zZWNyZXQtOTk="\n'
        "[trunks.carrier]\n"
        'uri = "sip:carrier.example"\nusername = "u1"\npassword = "trunk-PASS-secret-77"\n'
        "[tools.lookup]\n"
        'url = "https://tools.example/lookup"\n'
        'headers = { Authorization = "Bearer hdr-secret-5150" }\n'
    )
    secrets = {
        "OPENAI_API_KEY": "sk-OPENAI-secret-1234",
        "GATEWAY_SIP_AUTH_PASSWORD": "digest-secret-999",
        "GATEWAY_ICE_CREDENTIAL": "turn-secret-31337",
    }
    proc = _gateway("check", "--config", str(cfg), "--api-token-file", str(token_file), env=secrets)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    for value in [
        *secrets.values(),
        "tok-FILE-secret-4821",
        "trunk-PASS-secret-77",
        "hdr-secret-5150",
        "whsec_dG9tbC1zZWNyZXQtOTk=",
    ]:
        assert value not in output
    lines = proc.stdout.splitlines()
    assert "api_token = \"Secret('***')\"" in lines
    assert "openai_api_key = \"Secret('***')\"" in lines
    assert "vad_threshold = 0.5" in lines
    assert f'api_token_file = "{token_file}"' in lines  # a path is not a secret
    assert "# provider: openai (OPENAI_API_KEY is set)" in lines
    assert "gateway check: OK" in proc.stderr


def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    proc = _gateway("check", "--config", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert (
        proc.stderr.splitlines()[0]
        == f"gateway: error: config: no such file '{tmp_path}/nope.toml'"
    )
    (tmp_path / "bad.toml").write_text("vad_threshold = = 1\n")
    proc = _gateway("check", "--config", str(tmp_path / "bad.toml"))
    assert proc.returncode == 2 and "gateway: error: config " in proc.stderr


def test_serve_refuses_on_the_same_checks_before_starting() -> None:
    proc = _gateway("serve", "--vad-threshold", "2", "--max-calls", "0", "--provider", "openai")
    assert proc.returncode == 2
    errors = proc.stderr.splitlines()
    assert "gateway: error: vad_threshold: 2.0 is out of range 0..1" in errors
    assert "gateway: error: max_calls: 0 is out of range 1..100000" in errors
    assert any("provider openai needs an API key" in line for line in errors), errors


def _numeric_fields() -> list[str]:
    hints = typing.get_type_hints(Settings)
    return [f.name for f in dataclasses.fields(Settings) if hints[f.name] in (int, float)]


def test_every_numeric_setting_has_a_range() -> None:
    unranged = [
        name
        for name in _numeric_fields()
        if name not in NUMERIC_RANGES and name not in SESSION_FIELD_NAMES
    ]
    assert unranged == []


@pytest.mark.parametrize("name", sorted(NUMERIC_RANGES))
def test_each_range_is_enforced_at_both_ends(name: str) -> None:
    lo, hi = NUMERIC_RANGES[name]
    is_int = typing.get_type_hints(Settings)[name] is int
    for value, inside in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
        settings = dataclasses.replace(Settings(), **{name: int(value) if is_int else value})
        named = [p for p in settings.problems() if p.startswith(f"{name}:")]
        assert (not named) == inside, (value, named)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_PROVIDER": "openai"}, "provider openai needs an API key"),
        ({"GATEWAY_PROVIDER": "yandex", "YANDEX_FOLDER_ID": "f1"}, "provider yandex needs YANDEX_"),
        ({"GATEWAY_PROVIDER": "yandex", "YANDEX_API_KEY": "k"}, "needs yandex_folder_id"),
        ({"YANDEX_API_KEY": "k"}, "needs yandex_folder_id"),  # auto: no quiet echo bot
        ({"YANDEX_IAM_TOKEN": "t"}, "needs yandex_folder_id"),
    ],
)
def test_an_explicit_provider_without_credentials_is_refused(
    env: dict[str, str], message: str
) -> None:
    problems: list[str] = []
    load_settings(None, environ=env, problems=problems)
    assert len(problems) == 1 and message in problems[0], problems


@pytest.mark.parametrize(
    ("env", "provider", "reason"),
    [
        ({}, "local", "no OPENAI_API_KEY or YANDEX key set"),
        ({"OPENAI_API_KEY": "sk"}, "openai", "OPENAI_API_KEY is set"),
        ({"OPENAI_API_KEY": "sk", "YANDEX_API_KEY": "k"}, "openai", "OPENAI_API_KEY is set"),
        ({"YANDEX_API_KEY": "k", "YANDEX_FOLDER_ID": "f"}, "yandex", "YANDEX_FOLDER_ID are set"),
        ({"GATEWAY_PROVIDER": "local"}, "local", "chosen by the provider setting"),
    ],
)
def test_auto_says_which_provider_and_why(env: dict[str, str], provider: str, reason: str) -> None:
    chosen, why = load_settings(None, environ=env).provider_choice()
    assert chosen == provider and reason in why
