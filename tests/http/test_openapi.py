"""The OpenAPI document covers every route the gateway registers, is a well-formed OpenAPI 3.1
document, is served publicly at /openapi.json, and docs/api.md is generated from it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.http.openapi import PATHS, document, markdown
from gateway.secret import Secret
from tests.support.gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
WEBHOOK_KEY = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route on the app (HEAD, which aiohttp adds beside each
    GET, aside; a static directory as `{filename}` under its prefix)."""
    out: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path = path.rstrip("/") + "/{filename}"
        for route in resource:
            if route.method != "HEAD":
                out.add((route.method.lower(), path))
    return out


async def test_every_registered_route_is_documented_and_nothing_else() -> None:
    # webhook mode, so the /v1/realtime/calls routes are registered too
    async with running_gateway(
        api_token=Secret("t0k"),
        call_webhook_url="http://127.0.0.1:9/hook",
        call_webhook_secret=Secret(WEBHOOK_KEY),
    ) as gw:
        app = gw._runners[0].app
        routes = registered_routes(app)
        documented = {(m, p) for p, ops in PATHS.items() for m in ops}
        assert routes - documented == set(), "routes missing from gateway/http/openapi.py"
        assert documented - routes == set(), "documented routes the gateway does not register"
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{gw.http_port}/openapi.json") as resp,
        ):
            assert resp.status == 200  # public: no token
            assert await resp.json() == document()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_well_formed_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    schemes = doc["components"]["securitySchemes"]
    for path, ops in doc["paths"].items():
        assert path.startswith("/")
        names = re.findall(r"{(\w+)}", path)
        for method, op in ops.items():
            assert method in METHODS, (path, method)
            assert op["summary"] and op["responses"], (path, method)
            for status, response in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status) and response["description"]
            for requirement in op["security"]:
                assert set(requirement) <= set(schemes)
            params = op.get("parameters", [])
            in_path = [p["name"] for p in params if p["in"] == "path"]
            # every template variable is a required path parameter, and only those
            assert sorted(in_path) == sorted(names), (path, method)
            assert all(p["required"] for p in params if p["in"] == "path")
            assert all(p["in"] in ("path", "query", "header", "cookie") for p in params)
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        prefix = "#/components/schemas/"
        assert ref.startswith(prefix) and ref[len(prefix) :] in schemas, ref
    for name, schema in schemas.items():
        assert set(schema.get("required", [])) <= set(schema.get("properties", {})), name


def test_docs_api_md_is_generated_from_the_document() -> None:
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == markdown(), "run: python -m gateway.http.openapi > docs/api.md"
