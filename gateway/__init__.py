"""Telephony media gateway: SIP and WebRTC calls bridged live to Realtime speech models."""

__version__ = "0.1.0"
