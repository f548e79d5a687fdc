"""`/healthz` (the process is alive), `/readyz` (it takes calls) and `/metrics`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from gateway import metrics
from gateway.http.calls import check_bearer
from gateway.http.client import Networks, is_loopback, request_client
from gateway.http.errors import json_error
from gateway.secret import Secret

MetricsGuard = Callable[[web.Request], bool]


def add_health_routes(
    app: web.Application,
    ready: Callable[[], tuple[bool, str]],
    details: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """`ready()` returns (ready, reason); /readyz answers 503 with the reason when not ready.
    `details()` adds fields to /readyz's body either way (e.g. `registrations`)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = ready()
        body = {"status": "ready" if ok else "not_ready", "reason": reason}
        if details is not None:
            body.update(details())
        return web.json_response(body, status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def metrics_guard(token: Secret, trusted_proxies: Networks, *, public: bool) -> MetricsGuard:
    """Who may read `/metrics` served on the HTTP listener.

    `public` (a non-loopback listener): the bearer of the API token, like the call API (with no
    token configured: loopback clients only). A loopback listener: local clients, and token
    bearers; the remote clients a same-host reverse proxy relays are not local.
    """

    def allowed(request: web.Request) -> bool:
        if public:
            return check_bearer(request, token, trusted_proxies)
        if is_loopback(request_client(request, trusted_proxies)):
            return True
        return bool(token) and check_bearer(request, token, trusted_proxies)

    return allowed


def add_metrics_route(app: web.Application, guard: MetricsGuard | None = None) -> None:
    """Prometheus exposition at `/metrics`; with `guard`, a refused request gets 401 (JSON)."""

    async def handle(request: web.Request) -> web.Response:
        if guard is not None and not guard(request):
            denied = json_error(401, "/metrics needs the API token: Authorization: Bearer <token>")
            denied.headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
            return denied
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = metrics.CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/metrics", handle)
