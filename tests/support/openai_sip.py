"""Shared by the OpenAI-SIP-compatibility tests (docs/openai-sip-compat.md): the webhook
secret and API token the gateway and the apps use, and metric samples."""

from __future__ import annotations

import base64

from prometheus_client import REGISTRY

SECRET = "whsec_" + base64.b64encode(b"call-webhook-test-key-0123456789").decode()
TOKEN = "v1-calls-test-token-8c2f"


def sample(name: str, **labels: str) -> float:
    """A sample of the gateway's metrics registry (0 when not yet exported)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
