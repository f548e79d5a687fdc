"""Structured logging: JSON lines by default, a readable console format on a terminal.

Call-scoped loggers carry `call_id`, `leg` and `provider` on every line (`bind_call`).
A redacting processor masks anything that looks like a credential as a last line of defence;
the first is `gateway.secret.Secret`, which never renders its value.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

_SECRET_KEYS = re.compile(
    r"(authorization|api[_-]?key|token|password|secret|credential|digest|response|nonce_count)",
    re.I,
)
_BEARER = re.compile(r"\b(Bearer|Api-Key|Digest)\s+[^\s,\"']+", re.I)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, str | bytes) and key != "event" and _SECRET_KEYS.search(key):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = _BEARER.sub(lambda m: m.group(1) + " ***", value)
    return event_dict


def configure(log_format: str = "auto", level: str = "info") -> None:
    """Set up structlog (and stdlib logging, which libraries use) once per process."""
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    lvl = getattr(logging, level.upper())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO) if lvl < logging.INFO else lvl)
    for noisy in ("aioice", "aiortc", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))


def bind_call(call_id: str, leg: str, provider: str) -> AbstractContextManager[None]:
    """Within the block, every line logged, and by tasks created in it for their whole life,
    carries the call's `call_id`, `leg` and `provider` (structlog context variables)."""
    return structlog.contextvars.bound_contextvars(call_id=call_id, leg=leg, provider=provider)


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger with `component=name` and any extra bound fields."""
    return structlog.get_logger(component=name, **bound)
