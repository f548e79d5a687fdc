"""Realtime API: the client the gateway uses per call, provider profiles, and the protocol model.

The local provider lives in `gateway.realtime.local`.
"""

from gateway.realtime.client import RealtimeClient, ReconnectPolicy
from gateway.realtime.dtmf import dtmf_text, parse_dtmf_text
from gateway.realtime.errors import (
    ConnectError,
    ProtocolError,
    RealtimeError,
    SessionClosed,
    SessionSetupError,
    UnsupportedEventError,
)
from gateway.realtime.events import SessionConfig, TurnDetection
from gateway.realtime.profiles import ProviderProfile, choose_session_format, make_profile

__all__ = [
    "ConnectError",
    "ProtocolError",
    "ProviderProfile",
    "RealtimeClient",
    "RealtimeError",
    "ReconnectPolicy",
    "SessionClosed",
    "SessionConfig",
    "SessionSetupError",
    "TurnDetection",
    "UnsupportedEventError",
    "choose_session_format",
    "dtmf_text",
    "make_profile",
    "parse_dtmf_text",
]
