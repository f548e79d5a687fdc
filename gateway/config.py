"""Gateway settings: one typed dataclass filled from defaults, a TOML file, `GATEWAY_*` variables
and command-line flags, in that order of precedence (flags win).

Every field of `Settings` is a flag (`--sip-listen`), a variable (`GATEWAY_SIP_LISTEN`) and a TOML
key (`sip_listen`, top level). Tables that do not fit a flag (the routing table, transfer targets,
trunks) come from the TOML file only. Provider credentials are also read from their customary
variables (`OPENAI_API_KEY`, `YANDEX_API_KEY`, `YANDEX_IAM_TOKEN`, `YANDEX_FOLDER_ID`).

Every secret (a `Secret` field, e.g. `api_token`) can also be read from a file named by its
`<name>_file` setting (`--api-token-file`, `GATEWAY_API_TOKEN_FILE`, TOML `api_token_file`), so
that it never shows in `/proc/<pid>/cmdline`: the file's content, trailing newlines stripped.
Giving a secret both ways is an error; `command_line_secrets()` names the ones given as flags,
for the start-up warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.secret import Secret, read_secret_file
from gateway.sip.sdp import SRTP_MODES
from gateway.sip.trunk import Trunk, load_trunks
from gateway.webhooks import WEBHOOK_TOOL_KEYS, WebhookTool, load_webhook_tools, signing_key


def _opt(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, list | dict):
        factory: Any = (
            (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default))
        )
        return field(default_factory=factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Settings:
    """All gateway settings. See `docs/configuration.md` for the full reference."""

    # --- listeners
    http_listen: str = _opt("0.0.0.0:8080", "HTTP listener: page, call API, /healthz, /readyz")
    metrics_listen: str = _opt("", "separate listener for /metrics (default: on --http-listen)")
    sip_listen: str = _opt("0.0.0.0:5060", "SIP over UDP and TCP, HOST:PORT")
    sip_tls_listen: str = _opt("", "SIP over TLS, HOST:PORT (needs --sip-tls-cert/--sip-tls-key)")
    sip_tls_cert: str = _opt("", "PEM certificate chain for SIP TLS")
    sip_tls_key: str = _opt("", "PEM private key for SIP TLS")
    public_address: str = _opt("", "address put in SDP c= and Contact (NAT 1:1); default: listen")
    rtp_ports: str = _opt("10000-20000", "UDP port range for RTP, LO-HI (even ports, RTCP on +1)")
    # --- SIP policy
    sip_allow: list[str] = _opt(
        ["127.0.0.0/8", "::1/128"], "CIDR networks allowed to send INVITEs (comma separated)"
    )
    sip_auth_user: str = _opt("", "require digest auth on inbound INVITEs with this user")
    sip_auth_password: Secret = _opt(Secret(""), "digest password for --sip-auth-user")
    sip_auth_password_file: str = _opt(
        "", "read sip_auth_password from this file (keeps it off the command line)"
    )
    sip_realm: str = _opt("gateway", "digest realm")
    sip_digest_algorithms: list[str] = _opt(
        ["SHA-256", "MD5"], "digest algorithms offered, preferred first (MD5 first for old phones)"
    )
    sip_ringing: bool = _opt(False, "send 180 Ringing before answering")
    sip_early_media: bool = _opt(
        False, "answer inbound calls 183 with early media (ringback) while the provider connects"
    )
    sip_comfort_noise: bool = _opt(
        False, "offer comfort noise (CN, RFC 3389) and send it while the model is silent"
    )
    sip_dns_servers: list[str] = _opt(
        [], "DNS servers (HOST:PORT) for trunk names (RFC 3263); default: the system's resolver"
    )
    sip_codecs: list[str] = _opt(
        ["g722", "opus", "pcmu", "pcma"],
        "SIP codecs in order of preference (g722, opus, pcmu, pcma): answers pick the first "
        "offered, offers list them in order",
    )
    sip_rate_limit: float = _opt(
        50.0, "SIP messages per second per source that belong to no call (a call's never count)"
    )
    sip_rate_burst: int = _opt(100, "burst of --sip-rate-limit messages per source address")
    sip_calls_per_second: float = _opt(
        50.0, "new calls (INVITEs) per second per allowed address outside a trunk; beyond: 503"
    )
    sip_calls_burst: int = _opt(100, "burst of new calls per allowed address outside a trunk")
    sip_overload_reply_rate: float = _opt(
        100.0, "503s per second for INVITEs over their call budget (beyond: dropped, counted)"
    )
    max_calls: int = _opt(200, "concurrent calls; beyond it INVITEs get 503 with Retry-After")
    overload_lateness_ms: float = _opt(
        15.0,
        "new calls get 503 (overload) while the media send lateness p99 over the last 2 s is "
        "above this; admitted again after it stays below half of it for overload_hold_s; 0: off",
    )
    overload_cpu_pct: float = _opt(
        70.0,
        "new calls get 503 (overload) while the process used more than this % of one core over "
        "the last 2 s (with the calls admitted in the last 4 s counted at their whole cost); "
        "admitted again after it stays 10 points below for overload_hold_s; 0: off",
    )
    overload_hold_s: float = _opt(
        5.0,
        "seconds the lateness p99 must stay below half of overload_lateness_ms (and the CPU "
        "share 10 points below overload_cpu_pct) to admit again",
    )
    ptime_ms: int = _opt(20, "default RTP packet time in ms (the offer's ptime is honoured)")
    sip_srtp: str = _opt(
        "optional",
        "SRTP (SDES, RFC 4568): off|optional|mandatory (optional: SRTP offers get SRTP, plain "
        "ones plain; mandatory: plain RTP refused, outbound calls offer RTP/SAVP)",
    )
    rtp_timeout: float = _opt(
        30.0, "end a SIP call after this many seconds without RTP, from the answer (0: never)"
    )
    rtp_strict_source: bool = _opt(
        True, "take RTP only from the IP the SDP or the signalling names (off: any, learned)"
    )
    # --- Realtime provider
    provider: str = _opt("auto", "auto|local|openai|yandex|url (auto: openai or yandex if a key")
    provider_url: str = _opt("", "Realtime WebSocket URL for --provider url (or a base override)")
    provider_token: Secret = _opt(Secret(""), "bearer token for --provider url")
    provider_token_file: str = _opt(
        "", "read provider_token from this file (keeps it off the command line)"
    )
    model: str = _opt("", "model name (openai default gpt-realtime)")
    openai_api_key: Secret = _opt(Secret(""), "OpenAI API key (also OPENAI_API_KEY)")
    openai_api_key_file: str = _opt(
        "", "read openai_api_key from this file (keeps it off the command line)"
    )
    yandex_folder_id: str = _opt("", "Yandex Cloud folder id (also YANDEX_FOLDER_ID)")
    yandex_api_key: Secret = _opt(Secret(""), "Yandex API key (also YANDEX_API_KEY)")
    yandex_api_key_file: str = _opt(
        "", "read yandex_api_key from this file (keeps it off the command line)"
    )
    yandex_iam_token: Secret = _opt(Secret(""), "Yandex IAM token (also YANDEX_IAM_TOKEN)")
    yandex_iam_token_file: str = _opt(
        "", "read yandex_iam_token from this file (keeps it off the command line)"
    )
    local_flavor: str = _opt("openai", "behaviour of the embedded local provider: openai|yandex")
    session_format: str = _opt("auto", "session audio format: auto|pcmu|pcma|pcm24k")
    instructions: str = _opt(
        "You are a helpful voice assistant on a phone call. Caller: {caller}.",
        "model instructions; {caller} and {called} are filled in per call",
    )
    voice: str = _opt("", "provider voice (openai: marin; yandex: marina)")
    languages: list[str] = _opt(
        [], "input languages for Yandex (audio.input.languages), e.g. ru-RU"
    )
    vad: str = _opt("server_vad", "turn detection: server_vad|semantic_vad|none")
    vad_threshold: float = _opt(0.5, "server VAD threshold")
    vad_silence_ms: int = _opt(500, "server VAD silence duration in ms")
    vad_prefix_ms: int = _opt(300, "server VAD prefix padding in ms")
    transcription_model: str = _opt(
        "",
        "input transcription model (empty: the profile's own, gpt-4o-mini-transcribe on openai "
        "and local, so a reconnect can replay the caller's words)",
    )
    # --- GA session fields (issue 17); empty: not sent, the provider's default
    tool_choice: str = _opt("auto", "auto|none|required|function:NAME|mcp:SERVER[:TOOL]")
    max_output_tokens: str = _opt("", "tokens per response: 1-4096 or inf")
    truncation: str = _opt("", "auto|disabled, or a retention ratio 0-1 (e.g. 0.8)")
    prompt: str = _opt("", "stored prompt id (pmpt_...), optionally ID@VERSION")
    tracing: str = _opt("", "auto, or a tracing workflow name")
    include: list[str] = _opt([], "extra output: item.input_audio_transcription.logprobs")
    parallel_tool_calls: bool = _opt(True, "let the model call several tools at once")
    noise_reduction: str = _opt("", "input noise reduction: near_field|far_field")
    vad_eagerness: str = _opt("", "semantic VAD eagerness: low|medium|high|auto")
    vad_idle_timeout_ms: int = _opt(0, "server VAD: ask a response after this silence, ms (0: off)")
    vad_create_response: bool = _opt(True, "turn detection starts a response at the turn's end")
    vad_interrupt_response: bool = _opt(True, "turn detection cancels a response on speech")
    greeting: bool = _opt(True, "the model speaks first")
    append_ms: int = _opt(100, "caller audio batched per input_audio_buffer.append, in ms")
    provider_stall_timeout: float = _opt(
        5.0, "seconds without a provider event while a response is awaited: a stall (0: off)"
    )
    provider_stall_retries: int = _opt(
        2, "stalled sessions re-opened per call (holding prompt); the next stall ends the call"
    )
    provider_max_reconnects: int = _opt(
        5, "provider sessions re-opened per call after drops and stalls; the next loss ends it"
    )
    provider_max_reconnects_per_minute: int = _opt(
        3, "provider sessions re-opened per call within any 60 s; the next loss ends the call"
    )
    # --- tools (issue 17)
    tool_hold_after: float = _opt(
        1.5, "seconds a tool may run before the caller hears a holding line (0: never)"
    )
    # --- calls
    api_token: Secret = _opt(Secret(""), "bearer token for the call API and WebRTC offers")
    api_token_file: str = _opt("", "read api_token from this file (keeps it off the command line)")
    # issue 18: the OpenAI-SIP-compatible control plane (docs/openai-sip-compat.md)
    call_mode: str = _opt(
        "scenario", "inbound calls: scenario (answered at once) or webhook (accept/reject)"
    )
    call_webhook_url: str = _opt("", "where realtime.call.incoming is POSTed (webhook mode)")
    call_webhook_secret: Secret = _opt(
        Secret(""), "whsec_... key signing the call webhook (or env:VAR)"
    )
    call_webhook_secret_file: str = _opt("", "read call_webhook_secret from this file")
    call_webhook_timeout: float = _opt(10.0, "seconds a webhook call rings awaiting accept")
    call_webhook_fallback: str = _opt("reject", "after the timeout: reject or default")
    call_webhook_reject_status: int = _opt(480, "SIP status of the fallback reject")
    record_dir: str = _opt("", "write a stereo WAV and a JSONL transcript per call here")
    scenario: str = _opt("", "Python file defining the call scenario (default scenario if empty)")
    drain_timeout: float = _opt(300.0, "seconds live calls may go on after a drain starts")
    provider_breaker_failures: int = _opt(
        3, "consecutive provider connect failures that make /readyz not ready (0: never)"
    )
    provider_breaker_cooldown: float = _opt(
        10.0, "seconds between provider probes while the provider is unavailable"
    )
    ice_servers: list[str] = _opt([], "STUN/TURN URLs for WebRTC (none by default)")
    webrtc_ports: str = _opt("", "UDP port range for WebRTC ICE, LO-HI (default: ephemeral)")
    ice_username: str = _opt("", "TURN username")
    ice_credential: Secret = _opt(Secret(""), "TURN credential")
    ice_credential_file: str = _opt(
        "", "read ice_credential from this file (keeps it off the command line)"
    )
    cors_origins: list[str] = _opt([], "origins allowed to call the HTTP API from a browser")
    trusted_proxies: list[str] = _opt(
        [], "reverse proxies (CIDRs) whose Forwarded/X-Forwarded-For header names the client"
    )
    # issue 19: outbound calls to a plain sip: URI with no trunk (POST /calls, `gateway call`)
    allow_direct_dial: bool = _opt(
        False, "POST /calls may dial a sip: URI straight to its host when no trunk is configured"
    )
    # --- logging
    log_format: str = _opt("auto", "auto|json|console (auto: console on a terminal)")
    log_level: str = _opt("info", "debug|info|warning|error")
    # --- TOML-only tables
    routes: list[dict[str, Any]] = _opt([], "routing table (TOML only)", toml_only=True)
    transfer_targets: dict[str, str] = _opt(
        {}, "transfer target names to SIP URIs (TOML only)", toml_only=True
    )
    trunks: dict[str, dict[str, Any]] = _opt(
        {}, "trunks: outbound uri, inbound sources and call budget (TOML only)", toml_only=True
    )
    tools: dict[str, dict[str, Any]] = _opt(
        {},
        "webhook tools: description, parameters, url, headers, secret (TOML only)",
        toml_only=True,
    )
    # issue 19, calls console: the call history (docs/console.md)
    history_path: str = _opt(
        "data/history.sqlite3",
        "SQLite file of the call history, relative to the working directory ('' turns it off)",
    )
    history_retention_days: float = _opt(30.0, "days a call stays in the history (0: forever)")

    def validate(self) -> None:
        """Raise ConfigError with one clear line for the first problem (`problems()` has all)."""
        found = self.problems()
        if found:
            raise ConfigError(found[0])

    def problems(self) -> list[str]:
        """Every inconsistent setting, one clear line each, in a stable order: what
        `gateway check` prints and `gateway serve` refuses to start on."""
        out: list[str] = []
        for step in self._checks():
            try:
                step()
            except ConfigError as exc:
                out.append(str(exc))
        return out

    def _checks(self) -> Iterator[Callable[[], object]]:
        """The checks, each a step that raises ConfigError; one failing step hides no other."""
        for name in ("http_listen", "sip_listen"):
            yield functools.partial(parse_hostport, getattr(self, name), name)
        if self.webrtc_ports:
            yield functools.partial(parse_port_range, self.webrtc_ports, "webrtc_ports")
        for name in ("metrics_listen", "sip_tls_listen"):
            if getattr(self, name):
                yield functools.partial(parse_hostport, getattr(self, name), name)
        yield functools.partial(parse_port_range, self.rtp_ports)
        for name in NUMERIC_RANGES:
            yield functools.partial(_in_range, name, getattr(self, name))
        yield functools.partial(_one_of, "call_mode", self.call_mode, {"scenario", "webhook"})
        yield functools.partial(
            _one_of, "call_webhook_fallback", self.call_webhook_fallback, {"reject", "default"}
        )
        yield self._check_webhook_url
        for cidr in self.sip_allow:
            yield functools.partial(_cidr, "sip_allow", cidr)
        for server in self.sip_dns_servers:
            yield functools.partial(parse_hostport, server, "sip_dns_servers")
        for cidr in self.trusted_proxies:
            yield functools.partial(_cidr, "trusted_proxies", cidr)
        if self.sip_tls_listen:
            for name in ("sip_tls_cert", "sip_tls_key"):
                yield functools.partial(self._check_tls_file, name)
        yield functools.partial(
            _one_of, "provider", self.provider, {"auto", "local", "openai", "yandex", "url"}
        )
        yield functools.partial(
            _one_of, "session_format", self.session_format, {"auto", "pcmu", "pcma", "pcm24k"}
        )
        yield functools.partial(_one_of, "vad", self.vad, {"server_vad", "semantic_vad", "none"})
        yield functools.partial(_one_of, "local_flavor", self.local_flavor, {"openai", "yandex"})
        yield functools.partial(_one_of, "log_format", self.log_format, {"auto", "json", "console"})
        yield functools.partial(
            _one_of, "log_level", self.log_level, {"debug", "info", "warning", "error"}
        )
        yield self._check_provider_credentials
        for codec in self.sip_codecs:
            yield functools.partial(_one_of, "sip_codecs", codec, {"g722", "opus", "pcmu", "pcma"})
        yield self._check_codec_list
        for alg in self.sip_digest_algorithms:
            yield functools.partial(_one_of, "sip_digest_algorithms", alg, {"SHA-256", "MD5"})
        yield self._check_digest_list
        yield self._check_trunks
        yield self._check_ptime
        yield self._check_srtp
        for name in SESSION_FIELD_NAMES:
            yield functools.partial(session_field, name, getattr(self, name))
        yield self._check_tools
        for name, uri in self.transfer_targets.items():
            yield functools.partial(_transfer_target, name, uri)
        if self.scenario:
            yield functools.partial(_must_be_file, "scenario", self.scenario)
        if self.record_dir:
            yield self._check_record_dir
        yield self._check_history_path

    def _check_history_path(self) -> None:
        if self.history_path and self.history_path.endswith(("/", os.sep)):
            raise ConfigError("history_path must name a file, not a directory")

    def _check_webhook_url(self) -> None:
        uses_webhook = self.call_mode == "webhook" or any(
            isinstance(r, Mapping) and r.get("mode") == "webhook" for r in self.routes
        )  # the routes table itself: gateway.call.routing.validate_routes
        if uses_webhook and urlsplit(self.call_webhook_url).scheme not in ("http", "https"):
            raise ConfigError("call_webhook_url must be an http:// or https:// URL (webhook mode)")

    def _check_tls_file(self, name: str) -> None:
        path = getattr(self, name)
        if not path:
            raise ConfigError(f"sip_tls_listen needs {name}")
        _must_be_file(name, path)

    def _check_provider_credentials(self) -> None:
        # issue 19: an explicit provider without its credentials refuses to start
        if self.provider == "url" and not self.provider_url:
            raise ConfigError("provider url needs provider_url")
        if self.provider == "openai" and not self.openai_api_key:
            raise ConfigError(
                "provider openai needs an API key: set OPENAI_API_KEY (or openai_api_key_file)"
            )
        yandex_key = bool(self.yandex_api_key or self.yandex_iam_token)
        if self.provider == "yandex" and not yandex_key:
            raise ConfigError(
                "provider yandex needs YANDEX_API_KEY or YANDEX_IAM_TOKEN (or their _file settings)"
            )
        wants_yandex = self.provider == "yandex" or (
            self.provider == "auto" and not self.openai_api_key
        )
        if wants_yandex and yandex_key and not self.yandex_folder_id:
            raise ConfigError(
                "provider yandex needs yandex_folder_id (YANDEX_FOLDER_ID) with its key; "
                "without it the gateway would run the local echo provider"
            )

    def _check_codec_list(self) -> None:
        if not self.sip_codecs or len(set(self.sip_codecs)) != len(self.sip_codecs):
            raise ConfigError("sip_codecs must name each codec at most once, at least one")

    def _check_digest_list(self) -> None:
        if not self.sip_digest_algorithms:
            raise ConfigError("sip_digest_algorithms must name at least one algorithm")

    def _check_ptime(self) -> None:
        if self.ptime_ms not in (10, 20, 30, 40, 60):
            raise ConfigError("ptime_ms must be one of 10, 20, 30, 40, 60")

    def _check_srtp(self) -> None:
        if self.sip_srtp not in SRTP_MODES:
            raise ConfigError(f"sip_srtp must be one of {', '.join(SRTP_MODES)}")

    def _check_trunks(self) -> None:
        known = {f.name for f in dataclasses.fields(Trunk)} - {"name"} | {"password_file"}
        tables = {}
        for name, table in self.trunks.items():
            if isinstance(table, Mapping):
                unknown = [k for k in table if k not in known]
                if unknown:
                    raise ConfigError(
                        "; ".join(unknown_key(f"trunks.{name}", k, known) for k in unknown)
                    )
            tables[name] = table
        load_trunks(tables)

    def _check_tools(self) -> None:
        for name, table in self.tools.items():
            if isinstance(table, Mapping):
                unknown = [k for k in table if k not in WEBHOOK_TOOL_KEYS]
                if unknown:
                    raise ConfigError(
                        "; ".join(
                            unknown_key(f"tools.{name}", k, WEBHOOK_TOOL_KEYS) for k in unknown
                        )
                    )
        self.webhook_tools()

    def _check_record_dir(self) -> None:
        # the recorder creates the directory and its parents: the nearest existing ancestor
        # must be a directory it can write in
        path = Path(self.record_dir).absolute()
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"record_dir: {self.record_dir!r} is not a directory")
            if not os.access(path, os.W_OK):
                raise ConfigError(f"record_dir: {self.record_dir!r} is not writable")
            return
        ancestor = next(p for p in path.parents if p.exists())
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise ConfigError(
                f"record_dir: cannot create {self.record_dir!r}: {str(ancestor)!r} is not a "
                "writable directory"
            )

    def trunk_settings(self) -> dict[str, Trunk]:
        """The `[trunks.NAME]` tables, typed (checked by `validate`)."""
        return load_trunks(self.trunks)

    def call_webhook_key(self) -> bytes:
        """The HMAC key of `call_webhook_secret` (`whsec_...`, or `env:VAR` naming it); b""
        when unset: the call webhook goes unsigned."""
        raw = self.call_webhook_secret.reveal()
        if raw.startswith("env:"):
            var = raw[4:]
            if not var or var not in os.environ:
                raise ConfigError(f"call_webhook_secret: environment variable {var!r} is not set")
            raw = os.environ[var]
        return signing_key(raw, "call_webhook_secret") if raw else b""

    def webhook_tools(self) -> dict[str, WebhookTool]:
        """The `[tools.NAME]` tables, typed (checked by `validate`)."""
        return load_webhook_tools(self.tools, os.environ)

    def resolved_provider(self) -> str:
        """The provider in use: `auto` picks openai or yandex when their key is set, else local."""
        return self.provider_choice()[0]

    def provider_choice(self) -> tuple[str, str]:
        """The provider in use and why, for the start-up log line (issue 19)."""
        if self.provider != "auto":
            return self.provider, "chosen by the provider setting"
        if self.openai_api_key:
            return "openai", "OPENAI_API_KEY is set"
        if self.yandex_folder_id and (self.yandex_api_key or self.yandex_iam_token):
            return "yandex", "a Yandex key and YANDEX_FOLDER_ID are set"
        return "local", "no OPENAI_API_KEY or YANDEX key set: the local echo provider"


def _one_of(name: str, value: str, allowed: set[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(sorted(allowed))}")


#: The range of every numeric setting, inclusive (issue 19: `gateway check` refuses the rest).
NUMERIC_RANGES: Mapping[str, tuple[float, float]] = {
    "sip_rate_limit": (0, 100_000),
    "sip_rate_burst": (1, 1_000_000),
    "sip_calls_per_second": (0, 10_000),
    "sip_calls_burst": (1, 100_000),
    "sip_overload_reply_rate": (0, 100_000),
    "max_calls": (1, 100_000),
    "history_retention_days": (0, 36_500),
    "overload_lateness_ms": (0, 1000),
    "overload_cpu_pct": (0, 100),
    "overload_hold_s": (0, 600),
    "ptime_ms": (10, 60),
    "rtp_timeout": (0, 86_400),
    "vad_threshold": (0, 1),
    "vad_silence_ms": (0, 10_000),
    "vad_prefix_ms": (0, 10_000),
    "append_ms": (20, 1000),
    "provider_stall_timeout": (0, 300),
    "provider_stall_retries": (0, 100),
    "provider_max_reconnects": (0, 1000),
    "provider_max_reconnects_per_minute": (0, 60),
    "tool_hold_after": (0, 60),
    "call_webhook_timeout": (0.001, 300),
    "call_webhook_reject_status": (400, 699),
    "drain_timeout": (0, 86_400),
    "provider_breaker_failures": (0, 1000),
    "provider_breaker_cooldown": (0.001, 3600),
}


def _in_range(name: str, value: float) -> None:
    lo, hi = NUMERIC_RANGES[name]
    if not lo <= value <= hi:  # NaN fails too
        raise ConfigError(f"{name}: {value!r} is out of range {lo:g}..{hi:g}")


def _cidr(name: str, value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a CIDR network") from None


def _transfer_target(name: str, uri: object) -> None:
    if not isinstance(uri, str) or not uri.startswith(("sip:", "sips:", "tel:")):
        raise ConfigError(f"transfer_targets.{name}: {uri!r} is not a sip:, sips: or tel: URI")


def _must_be_file(name: str, path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"{name}: no such file {path!r}")


def unknown_key(where: str, key: str, known: Iterable[str]) -> str:
    """ "unknown trunk key 'url' (did you mean 'uri'?)": the nearest valid key suggested."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}"


def parse_hostport(value: str, name: str = "address") -> tuple[str, int]:
    """`HOST:PORT` or `[v6]:PORT` into (host, port); ConfigError names the setting."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdecimal() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: {value!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parse_port_range(value: str, name: str = "rtp_ports") -> tuple[int, int]:
    """`LO-HI` into an even-aligned (lo, hi) pair with room for at least one RTP/RTCP pair."""
    lo_s, sep, hi_s = value.partition("-")
    if not sep or not lo_s.isdecimal() or not hi_s.isdecimal():
        raise ConfigError(f"{name}: {value!r} is not LO-HI")
    lo, hi = int(lo_s), int(hi_s)
    lo += lo % 2
    if not 1024 <= lo < hi <= 65535 or hi - lo < 1:
        raise ConfigError(f"{name}: {value!r} must be an even range within 1024-65535")
    return lo, hi


# --- loading -----------------------------------------------------------------------------------

#: The GA session fields a setting or a route sets (docs/configuration.md "Session fields").
SESSION_FIELD_NAMES = (
    "tool_choice",
    "max_output_tokens",
    "truncation",
    "prompt",
    "tracing",
    "include",
    "parallel_tool_calls",
    "noise_reduction",
    "vad_eagerness",
    "vad_idle_timeout_ms",
    "vad_create_response",
    "vad_interrupt_response",
)
_TOOL_CHOICES = ("auto", "none", "required")
_INCLUDE = ("item.input_audio_transcription.logprobs",)


def session_field(name: str, raw: Any) -> Any:
    """A session field's setting (or route value) in its wire form; None: not sent. ConfigError
    with one line for a bad value. Routes may give the objects as TOML tables."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name}: {raw!r} is not {expected}")

    if name == "tool_choice":
        if isinstance(raw, Mapping):
            kind = raw.get("type")
            if kind == "function" and isinstance(raw.get("name"), str) and raw["name"]:
                return {"type": "function", "name": raw["name"]}
            if kind == "mcp" and isinstance(raw.get("server_label"), str):
                return dict(raw)
            raise bad('{type = "function", name = ...} or {type = "mcp", server_label = ...}')
        text = str(raw)
        if text in _TOOL_CHOICES:
            return text
        kind, _, rest = text.partition(":")
        if kind == "function" and rest:
            return {"type": "function", "name": rest}
        if kind == "mcp" and rest:
            server, _, tool = rest.partition(":")
            return {"type": "mcp", "server_label": server, **({"name": tool} if tool else {})}
        raise bad("auto, none, required, function:NAME or mcp:SERVER[:TOOL]")
    if name == "max_output_tokens":
        if raw in ("", None):
            return None
        if raw == "inf":
            return "inf"
        try:
            tokens = int(raw)
        except (TypeError, ValueError):
            raise bad("a number of tokens (1-4096) or inf") from None
        if not 1 <= tokens <= 4096 or isinstance(raw, bool | float):
            raise bad("a number of tokens (1-4096) or inf")
        return tokens
    if name == "truncation":
        if isinstance(raw, Mapping):
            raw = raw.get("retention_ratio", raw)
        if raw in ("", None):
            return None
        if raw in ("auto", "disabled"):
            return raw
        try:
            ratio = float(raw)
        except (TypeError, ValueError):
            raise bad("auto, disabled or a retention ratio between 0 and 1") from None
        if not 0.0 <= ratio <= 1.0:
            raise bad("auto, disabled or a retention ratio between 0 and 1")
        return {"type": "retention_ratio", "retention_ratio": ratio}
    if name == "prompt":
        if isinstance(raw, Mapping):
            if not isinstance(raw.get("id"), str) or not raw["id"]:
                raise bad("a prompt table with an id")
            return dict(raw)
        if not raw:
            return None
        pid, _, version = str(raw).partition("@")
        return {"id": pid, **({"version": version} if version else {})}
    if name == "tracing":
        if isinstance(raw, Mapping):
            return dict(raw)
        if not raw:
            return None
        return "auto" if raw == "auto" else {"workflow_name": str(raw)}
    if name == "include":
        values = [raw] if isinstance(raw, str) else list(raw or [])
        for value in values:
            if value not in _INCLUDE:
                raise bad(f"a list of {', '.join(_INCLUDE)}")
        return tuple(values) or None
    if name in ("parallel_tool_calls", "vad_create_response", "vad_interrupt_response"):
        if not isinstance(raw, bool):
            raise bad("true or false")
        return raw
    if name == "noise_reduction":
        if raw in ("", None):
            return None
        if raw not in ("near_field", "far_field"):
            raise bad("near_field or far_field")
        return raw
    if name == "vad_eagerness":
        if raw in ("", None):
            return None
        if raw not in ("low", "medium", "high", "auto"):
            raise bad("low, medium, high or auto")
        return raw
    if name == "vad_idle_timeout_ms":
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 600_000:
            raise bad("a number of milliseconds (0: off)")
        return raw or None
    raise ConfigError(f"{name}: not a session field")  # pragma: no cover


_ALIASES: Mapping[str, str] = {
    "OPENAI_API_KEY": "openai_api_key",
    "YANDEX_API_KEY": "yandex_api_key",
    "YANDEX_IAM_TOKEN": "yandex_iam_token",
    "YANDEX_FOLDER_ID": "yandex_folder_id",
}


def _fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def _convert(f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    hint = typing.get_type_hints(Settings)[f.name]
    try:
        if hint is Secret:
            return raw if isinstance(raw, Secret) else Secret(str(raw))
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            if not isinstance(raw, str | int | float):
                raise ValueError("expected a string")
            return str(raw)
        origin = typing.get_origin(hint)
        if origin is list and typing.get_args(hint) == (str,):
            if isinstance(raw, str):
                return [p.strip() for p in raw.split(",") if p.strip()]
            if isinstance(raw, Sequence) and all(isinstance(x, str) for x in raw):
                return list(raw)
            raise ValueError("expected a list of strings")
        if origin in (list, dict):
            if not isinstance(raw, origin):
                raise ValueError(f"expected a TOML {'array' if origin is list else 'table'}")
            return raw
        if isinstance(hint, types.UnionType):  # pragma: no cover - not used yet
            return raw
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{f.name} (from {source}): {exc}") from None
    raise ConfigError(f"{f.name}: unsupported setting type {hint}")  # pragma: no cover


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to `parser`; unset flags stay None so lower layers show through."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    for f in _fields():
        if f.metadata.get("toml_only"):
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = typing.get_type_hints(Settings)[f.name]
        if hint is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f.metadata["help"],
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=f.metadata["help"])


def load_settings(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    problems: list[str] | None = None,
) -> Settings:
    """Build validated Settings from defaults < TOML < environment < flags. With `problems`,
    every problem is appended to it (one line each, a bad value leaving the default) instead
    of raising ConfigError for the first."""

    def report(exc: ConfigError) -> None:
        if problems is None:
            raise exc
        problems.append(str(exc))

    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each value came from, for errors
    path = (
        config_file
        or (getattr(args, "config", None) if args else None)
        or env.get("GATEWAY_CONFIG")
    )
    names = {f.name: f for f in _fields()}

    def put(f: dataclasses.Field[Any], raw: Any, source: str, source_for_error: str) -> None:
        try:
            values[f.name] = _convert(f, raw, source_for_error)
        except ConfigError as exc:
            report(exc)
            return
        sources[f.name] = source

    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config: no such file {path!r}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path!r}: {exc}") from None
        for key, raw in data.items():
            if key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                report(ConfigError(f"config {path!r}: unknown setting {key!r}{hint}"))
                continue
            put(names[key], raw, f"config {path!r}", path)
    for var, name in _ALIASES.items():
        if env.get(var):
            put(names[name], env[var], var, var)
    for f in _fields():
        var = "GATEWAY_" + f.name.upper()
        if var in env and not f.metadata.get("toml_only"):
            put(f, env[var], var, var)
    if args is not None:
        for f in _fields():
            raw = getattr(args, f.name, None)
            if raw is not None:
                flag = "--" + f.name.replace("_", "-")
                put(f, raw, flag, flag)
    for name in secret_names():
        path = values.get(name + "_file")
        if not path:
            continue
        if values.get(name):
            report(
                ConfigError(
                    f"{name} (from {sources[name]}) and {name}_file "
                    f"(from {sources[name + '_file']}) are both set: give one"
                )
            )
            continue
        try:
            values[name] = read_secret_file(path, name + "_file")
        except ConfigError as exc:
            report(exc)
    settings = Settings(**values)
    if problems is None:
        settings.validate()
    else:
        problems.extend(settings.problems())
    return settings


#: Keys of TOML tables (trunks, tools, routes) whose values are credentials; `headers` values
#: are all redacted (Authorization and the like).
_SECRET_KEY = re.compile(r"password|secret|token|api_key|credential|headers", re.IGNORECASE)


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, Secret):
        return str(value)
    if key and _SECRET_KEY.search(key) and not key.endswith("_file"):
        if isinstance(value, Mapping):
            return {k: str(Secret(str(v))) for k, v in value.items()}
        return str(Secret(str(value)))
    if isinstance(value, Mapping):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def effective_settings(settings: Settings) -> list[str]:
    """`name = value` per setting, TOML-like, every credential replaced by its mask (`Secret`'s
    redaction): what `gateway check` prints."""
    lines = []
    for f in _fields():
        value = _redact(getattr(settings, f.name), f.name if f.name in secret_names() else "")
        lines.append(f"{f.name} = {json.dumps(value, default=str, ensure_ascii=False)}")
    return lines


def secret_names() -> list[str]:
    """The settings that hold credentials (`Secret` fields); each has a `<name>_file` twin."""
    hints = typing.get_type_hints(Settings)
    return [f.name for f in _fields() if hints[f.name] is Secret]


def command_line_secrets(args: argparse.Namespace | None) -> list[str]:
    """The secrets given as command-line flags: readable by every local user in
    /proc/<pid>/cmdline, so the gateway warns about each at start-up."""
    if args is None:
        return []
    return [name for name in secret_names() if getattr(args, name, None)]
