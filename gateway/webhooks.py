"""Webhook tools from the configuration, and the Standard Webhooks signature, sans I/O.

    [tools.order_status]
    description = "Look up an order by id"
    parameters = { type = "object", properties = { order_id = { type = "string" } } }
    url = "https://backend.example/tools/order_status"
    timeout_s = 5
    headers = { Authorization = "env:ORDER_API_TOKEN" }
    secret = "env:TOOLS_WEBHOOK_SECRET"

`load_webhook_tools()` types and checks the `[tools.NAME]` tables (`ConfigError` naming the
first bad key), resolving `env:VAR` values from the environment it is given; header values and
the secret are `Secret`s, so they never show in logs, reprs or errors.

Signing follows Standard Webhooks (standardwebhooks.com, "Signature scheme"): the secret is
given as `whsec_` + base64 of the key; the signed content is `"{webhook-id}.{webhook-timestamp}.
{body}"`; `webhook-signature` is `v1,` + base64 of its HMAC-SHA256 under the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.secret import Secret

__all__ = ["WebhookTool", "load_webhook_tools", "sign", "signing_key", "webhook_headers"]

WEBHOOK_TOOL_KEYS = frozenset(
    {"description", "parameters", "url", "timeout_s", "headers", "secret"}
)
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class WebhookTool:
    """One `[tools.NAME]` table, checked: a tool the model calls, answered by an HTTP POST."""

    name: str
    url: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    timeout_s: float = 5.0
    headers: Mapping[str, Secret] = field(default_factory=dict)
    #: the Standard Webhooks key (decoded from `whsec_...`); empty: requests go unsigned
    secret: Secret = field(default_factory=lambda: Secret(""))


def _value(raw: object, where: str, environ: Mapping[str, str]) -> str:
    """A string, or the environment variable an `env:VAR` names."""
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string")
    if raw.startswith("env:"):
        var = raw[4:]
        if not var or var not in environ:
            raise ConfigError(f"{where}: environment variable {var!r} is not set")
        return environ[var]
    return raw


def signing_key(secret: str, where: str = "secret") -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(f"{where} must be in the whsec_<base64> form")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where} is not valid base64 after whsec_") from None
    if len(key) < 16:
        raise ConfigError(f"{where} is too short (at least 16 bytes of key)")
    return key


def load_webhook_tools(
    tables: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, WebhookTool]:
    """The `[tools.NAME]` tables, typed; ConfigError for the first bad one."""
    out: dict[str, WebhookTool] = {}
    for name, table in tables.items():
        where = f"tools.{name}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = set(table) - WEBHOOK_TOOL_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
            raise ConfigError(f"{where}: a tool name is letters, digits, _ and - (64 at most)")
        url = table.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"{where}.url must be an http:// or https:// URL")
        if not urlsplit(url).hostname:
            raise ConfigError(f"{where}.url has no host")
        description = table.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where}.description must be a string")
        parameters = table.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
            raise ConfigError(f'{where}.parameters must be a JSON schema of type = "object"')
        timeout = table.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError(f"{where}.timeout_s must be a number")
        if not 0 < timeout <= 60:
            raise ConfigError(f"{where}.timeout_s must be more than 0 and at most 60 seconds")
        headers = table.get("headers", {})
        if not isinstance(headers, Mapping):
            raise ConfigError(f"{where}.headers must be a table")
        secret = table.get("secret", "")
        key = b""
        if secret:
            key = signing_key(_value(secret, f"{where}.secret", environ), f"{where}.secret")
        out[name] = WebhookTool(
            name=name,
            url=url,
            description=description,
            parameters=dict(parameters),
            timeout_s=float(timeout),
            headers={
                str(h): Secret(_value(v, f"{where}.headers.{h}", environ))
                for h, v in headers.items()
            },
            secret=Secret(base64.b64encode(key).decode("ascii") if key else ""),
        )
    return out


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    content = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def webhook_headers(tool: WebhookTool, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one request: the configured ones, then the Standard Webhooks ones."""
    headers = {name: value.reveal() for name, value in tool.headers.items()}
    headers["content-type"] = "application/json"
    if tool.secret:
        key = base64.b64decode(tool.secret.reveal())
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign(key, msg_id, timestamp, body)
    return headers
