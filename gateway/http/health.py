"""`/healthz` (the process is alive), `/readyz` (it takes calls) and `/metrics`."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway import metrics


def add_health_routes(app: web.Application, ready: Callable[[], tuple[bool, str]]) -> None:
    """`ready()` returns (ready, reason); /readyz answers 503 with the reason when not ready."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = ready()
        return web.json_response(
            {"status": "ready" if ok else "not_ready", "reason": reason}, status=200 if ok else 503
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def add_metrics_route(app: web.Application) -> None:
    """Prometheus exposition at `/metrics`."""

    async def handle(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = metrics.CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/metrics", handle)
