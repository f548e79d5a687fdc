"""Per-call session settings: defaults from config, overridden by the routing table's first match
(by dialled number, the trunk's source network or name, the leg, or a header of the INVITE:
`header = {name = "X-Tenant", value = "acme"}` matches when any line of that header has exactly
that value), then by the scenario.

Instructions are a template: `{caller}` and `{called}` are filled in per call (caller ID into the
instructions), and any `{x_header}` from the INVITE's X- headers (`X-Account` -> `{x_account}`).
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config import SESSION_FIELD_NAMES, Settings, session_field, unknown_key
from gateway.errors import ConfigError
from gateway.media.format import AudioFormat
from gateway.realtime import events as rt

ROUTE_MATCH_KEYS = frozenset({"called", "source", "leg", "header", "trunk"})
ROUTE_OVERRIDE_KEYS = frozenset(
    {
        "instructions",
        "voice",
        "greeting",
        "vad",
        "transcription_model",
        "session_format",
        "record",
        "tools",
        "mode",
        *SESSION_FIELD_NAMES,
    }
)


@dataclass(frozen=True)
class CallProfile:
    """The effective per-call settings after routing."""

    instructions: str
    voice: str
    greeting: bool
    vad: str
    transcription_model: str
    session_format: str
    record: bool
    #: every tool (True), none (False), or only these names (a route's `tools = [...]`)
    tools: bool | tuple[str, ...]
    #: GA session fields in wire form, None: not sent (`gateway.config.session_field`)
    session_fields: Mapping[str, Any] = field(default_factory=dict)
    #: "scenario" (answered at once) or "webhook" (realtime.call.incoming, then accept/reject)
    mode: str = "scenario"

    def tool_names(self) -> frozenset[str] | None:
        """The tool names this call may use; None: any."""
        if self.tools is True:
            return None
        return frozenset(self.tools or ())


def validate_routes(routes: Sequence[Mapping[str, Any]]) -> None:
    """ConfigError naming the first bad route entry."""
    for i, route in enumerate(routes):
        if not isinstance(route, Mapping):
            raise ConfigError(f"routes[{i}]: expected a TOML table ([[routes]])")
        known = ROUTE_MATCH_KEYS | ROUTE_OVERRIDE_KEYS
        unknown = [key for key in route if key not in known]
        if unknown:
            raise ConfigError("; ".join(unknown_key(f"routes[{i}]", k, known) for k in unknown))
        if "source" in route:
            try:
                ipaddress.ip_network(str(route["source"]), strict=False)
            except ValueError:
                raise ConfigError(f"routes[{i}].source is not a CIDR network") from None
        for name in SESSION_FIELD_NAMES:
            if name in route:
                try:
                    session_field(name, route[name])
                except ConfigError as exc:
                    raise ConfigError(f"routes[{i}].{exc}") from None
        tools = route.get("tools", True)
        if not isinstance(tools, bool) and not (
            isinstance(tools, list) and all(isinstance(t, str) for t in tools)
        ):
            raise ConfigError(f"routes[{i}].tools: expected true, false or a list of tool names")
        if route.get("mode", "scenario") not in ("scenario", "webhook"):
            raise ConfigError(f"routes[{i}].mode must be scenario or webhook")
        if "header" in route:
            header = route["header"]
            if (
                not isinstance(header, Mapping)
                or set(header) != {"name", "value"}
                or not all(isinstance(v, str) and v for v in header.values())
            ):
                raise ConfigError(f'routes[{i}].header: expected {{name = "X-...", value = "..."}}')


def _matches(
    route: Mapping[str, Any],
    called: str,
    source: str,
    leg: str,
    headers: Sequence[tuple[str, str]],
    trunk: str,
) -> bool:
    if "called" in route and str(route["called"]) != called:
        return False
    if "trunk" in route and str(route["trunk"]) != trunk:
        return False
    if "header" in route:
        name, value = str(route["header"]["name"]).lower(), str(route["header"]["value"])
        if not any(n.lower() == name and v.strip() == value for n, v in headers):
            return False
    if "leg" in route and str(route["leg"]) != leg:
        return False
    if "source" in route:
        try:
            if ipaddress.ip_address(source) not in ipaddress.ip_network(
                str(route["source"]), strict=False
            ):
                return False
        except ValueError:
            return False
    return True


def resolve_profile(
    settings: Settings,
    called: str,
    source: str,
    leg: str,
    headers: Sequence[tuple[str, str]] = (),
    trunk: str = "",
) -> CallProfile:
    """Defaults from `settings`, overridden by the first matching route (`headers`: the
    INVITE's header lines, for routes that match on one; `trunk`: the trunk the call came or
    went through)."""
    values: dict[str, Any] = {
        "instructions": settings.instructions,
        "voice": settings.voice,
        "greeting": settings.greeting,
        "vad": settings.vad,
        "transcription_model": settings.transcription_model,
        "session_format": settings.session_format,
        "record": bool(settings.record_dir),
        "tools": True,
        "mode": settings.call_mode,
    }
    fields = {name: getattr(settings, name) for name in SESSION_FIELD_NAMES}
    for route in settings.routes:
        if _matches(route, called, source, leg, headers, trunk):
            values.update(
                {k: v for k, v in route.items() if k in ROUTE_OVERRIDE_KEYS and k not in fields}
            )
            fields.update({k: v for k, v in route.items() if k in fields})
            if isinstance(values["tools"], list):
                values["tools"] = tuple(values["tools"])
            break
    wire = {name: session_field(name, raw) for name, raw in fields.items()}
    return CallProfile(**values, session_fields=wire)


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render_instructions(template: str, caller: str, called: str, headers: Mapping[str, str]) -> str:
    """Fill `{caller}`, `{called}` and `{x_*}` header fields; unknown fields become empty."""
    fields = _Defaulting(caller=caller or "unknown", called=called)
    for name, value in headers.items():
        if name.lower().startswith("x-"):
            fields[name.lower().replace("-", "_")] = value
    try:
        return string.Formatter().vformat(template, (), fields)
    except (ValueError, IndexError):
        return template


def _offered(profile: CallProfile, tool: Mapping[str, Any]) -> bool:
    names = profile.tool_names()
    return names is None or tool.get("name") in names


def build_session(
    profile: CallProfile,
    *,
    instructions: str,
    input_format: AudioFormat,
    output_format: AudioFormat,
    default_voice: str,
    tools: Sequence[Mapping[str, Any]],
    settings: Settings,
) -> rt.SessionConfig:
    """The session.update the call asks for."""
    turn: rt.TurnDetection | None
    f = profile.session_fields
    create = f.get("vad_create_response", True)
    interrupt = f.get("vad_interrupt_response", True)
    if profile.vad == "none":
        turn = None
    elif profile.vad == "semantic_vad":
        turn = rt.TurnDetection(
            type="semantic_vad",
            eagerness=f.get("vad_eagerness"),
            create_response=create,
            interrupt_response=interrupt,
        )
    else:
        turn = rt.TurnDetection(
            type="server_vad",
            threshold=settings.vad_threshold,
            prefix_padding_ms=settings.vad_prefix_ms,
            silence_duration_ms=settings.vad_silence_ms,
            idle_timeout_ms=f.get("vad_idle_timeout_ms"),
            create_response=create,
            interrupt_response=interrupt,
        )
    offered = tuple(t for t in tools if _offered(profile, t))
    has_tools = bool(offered)
    return rt.SessionConfig(
        instructions=instructions,
        voice=profile.voice or default_voice,
        input_format=input_format,
        output_format=output_format,
        turn_detection=turn,
        tools=offered,
        tool_choice=f.get("tool_choice", "auto") if has_tools else None,
        transcription={"model": profile.transcription_model}
        if profile.transcription_model
        else None,
        noise_reduction=f.get("noise_reduction"),
        max_output_tokens=f.get("max_output_tokens"),
        truncation=f.get("truncation"),
        prompt=f.get("prompt"),
        tracing=f.get("tracing"),
        include=f.get("include"),
        # sent when off only: on is every provider's default
        parallel_tool_calls=False if has_tools and f.get("parallel_tool_calls") is False else None,
    )
