"""JSON error responses and the middleware that turns every HTTP failure into one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import metrics
from gateway.logs import get_logger

log = get_logger("http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media",
    429: "rate_limited",
    503: "unavailable",
}


# finer reasons a caller may give instead of the status's own (bounded: metric label values)
_DETAILED_REASONS = frozenset({"provider_unavailable", "overload"})


def json_error(
    status: int, message: str, *, reason: str | None = None, **extra: object
) -> web.Response:
    """An HTTP error with body `{"error": {"status", "reason", "message", ...}}`; counted.

    `reason` replaces the status's token when it is one of the detailed reasons (e.g. 503
    `provider_unavailable` rather than `unavailable`)."""
    reason = reason if reason in _DETAILED_REASONS else _REASONS.get(status, "error")
    metrics.HTTP_ERRORS.labels(reason=reason).inc()
    body = {"error": {"status": status, "reason": reason, "message": message, **extra}}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own HTTP errors and unexpected exceptions become JSON errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception:
        log.exception("http_handler_failed", path=request.path, method=request.method)
        return json_error(500, "internal error")


def openai_error(status: int, message: str, code: str, *, param: str | None = None) -> web.Response:
    """An HTTP error shaped as OpenAI's API answers one (`{"error": {"message", "type",
    "code", "param"}}`), for the `/v1` routes; counted as `json_error` is."""
    reason = _REASONS.get(status, "error")
    metrics.HTTP_ERRORS.labels(reason=reason).inc()
    kind = "invalid_request_error" if status != 401 else "authentication_error"
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return web.json_response(body, status=status)
