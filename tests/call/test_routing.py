"""Per-call settings: the routing table's first match overrides the defaults; instructions are a
template over the caller, the dialled number and the INVITE's X- headers."""

from __future__ import annotations

import pytest

from gateway.call.routing import render_instructions, resolve_profile, validate_routes
from gateway.errors import ConfigError
from tests.support.gateway import settings


def test_first_matching_route_overrides_defaults() -> None:
    s = settings(
        voice="marin",
        routes=[
            {"called": "1000", "voice": "cedar", "instructions": "Sales. Caller {caller}."},
            {"source": "203.0.113.0/24", "greeting": False},
            {"called": "1000", "voice": "never-reached"},
        ],
    )
    sales = resolve_profile(s, called="1000", source="198.51.100.7", leg="sip")
    assert sales.voice == "cedar" and sales.instructions.startswith("Sales.")
    trunk = resolve_profile(s, called="2000", source="203.0.113.9", leg="sip")
    assert trunk.greeting is False and trunk.voice == "marin"
    default = resolve_profile(s, called="2000", source="198.51.100.7", leg="webrtc")
    assert default.voice == "marin" and default.greeting is True


def test_instructions_template_uses_caller_called_and_x_headers() -> None:
    text = render_instructions(
        "Caller {caller} dialled {called}; account {x_account}; unknown {x_missing}.",
        "+15551234",
        "1000",
        {"X-Account": "A-42", "From": "<sip:x@y>"},
    )
    assert text == "Caller +15551234 dialled 1000; account A-42; unknown ."
    assert render_instructions("Hello {caller}", "", "", {}) == "Hello unknown"
    # a broken template is used as it is rather than failing the call
    assert render_instructions("Bad {", "c", "d", {}) == "Bad {"


def test_bad_routes_are_refused_with_the_entry_named() -> None:
    with pytest.raises(ConfigError, match=r"routes\[1\]: unknown key '"):
        validate_routes([{"called": "1"}, {"calld": "2"}])
    with pytest.raises(ConfigError, match=r"routes\[0\].source"):
        validate_routes([{"source": "not-a-net"}])


def test_a_route_matches_on_any_line_of_a_header() -> None:
    s = settings(
        routes=[
            {"header": {"name": "X-Tenant", "value": "acme"}, "voice": "cedar"},
            {"called": "1000", "voice": "marin"},
        ]
    )
    lines = [("X-Tenant", "other"), ("x-tenant", " acme "), ("From", "<sip:a@b>")]
    assert resolve_profile(s, "1000", "198.51.100.7", "sip", lines).voice == "cedar"
    assert resolve_profile(s, "1000", "198.51.100.7", "sip", lines[:1]).voice == "marin"
    assert resolve_profile(s, "1000", "198.51.100.7", "sip").voice == "marin"  # no headers


@pytest.mark.parametrize(
    "header",
    [
        "X-Tenant",
        {"name": "X-Tenant"},
        {"name": "X-Tenant", "value": ""},
        {"name": 1, "value": "a"},
    ],
)
def test_a_bad_header_route_is_refused(header: object) -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\].header"):
        validate_routes([{"header": header}])


def test_a_route_can_match_the_trunk_a_call_came_through() -> None:
    s = settings(routes=[{"trunk": "pbx", "voice": "cedar"}, {"leg": "sip", "voice": "ash"}])
    assert resolve_profile(s, "1001", "127.0.0.1", "sip", trunk="pbx").voice == "cedar"
    assert resolve_profile(s, "1001", "127.0.0.1", "sip", trunk="other").voice == "ash"
    assert resolve_profile(s, "1001", "127.0.0.1", "sip").voice == "ash"
    validate_routes([{"trunk": "pbx", "greeting": False}])  # a known match key


def test_a_route_picks_the_tools_a_call_gets() -> None:
    from gateway.call.default_scenario import TOOLS
    from gateway.call.routing import build_session
    from gateway.media.format import PCMU_8K

    s = settings(routes=[{"called": "1", "tools": ["end_call"]}, {"called": "2", "tools": False}])
    picked = resolve_profile(s, called="1", source="127.0.0.1", leg="sip")
    assert picked.tool_names() == frozenset({"end_call"})
    assert resolve_profile(s, called="2", source="127.0.0.1", leg="sip").tool_names() == set()
    assert resolve_profile(s, called="3", source="127.0.0.1", leg="sip").tool_names() is None
    session = build_session(
        picked,
        instructions="",
        input_format=PCMU_8K,
        output_format=PCMU_8K,
        default_voice="marin",
        tools=TOOLS,
        settings=s,
    )
    assert [t["name"] for t in session.tools or ()] == ["end_call"]
    with pytest.raises(ConfigError, match="tools"):
        validate_routes([{"called": "1", "tools": "end_call"}])
