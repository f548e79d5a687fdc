"""HTTP side of WebRTC calls: the offer endpoint (WHIP style), hang-up, tokens, CORS, the page.

    POST   /webrtc/offer          offer in, answer out; 201 + Location: /webrtc/calls/{id}
    DELETE /webrtc/calls/{id}     hang up (204 when the call has already ended)
    POST   /webrtc/calls/{id}/beacon  the page's pagehide hang-up (navigator.sendBeacon: no
                                  headers, so the body is the call's hang-up secret, handed
                                  to the page in the JSON answer; never a URL token)
    POST   /webrtc/token          mint a short-lived token (needs the API token)
    OPTIONS on the three above    CORS preflight
    GET    /                      the call page; its assets under /webrtc/static/
    GET    /favicon.ico           204 (the page declares an inline icon; no 404 in its console)

Every refusal is a JSON error (`gateway.http.errors.json_error`, counted) and a log line
(`webrtc_offer_refused`, floods summarised per address by `gateway.refusals`). Credentials are
checked before the body is read, so an unauthenticated offer costs no peer connection.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from aiohttp import web

from gateway.config import Settings
from gateway.errors import CallRejected, Forbidden, WebRtcError
from gateway.http.client import parse_networks, request_client
from gateway.http.errors import json_error
from gateway.legs.webrtc.leg import WebRtcLeg
from gateway.legs.webrtc.service import OfferInfo
from gateway.logs import get_logger
from gateway.refusals import RefusalLogger
from gateway.webrtc.auth import Authorizer, CredentialKind, bearer_of
from gateway.webrtc.ice import IcePolicy
from gateway.webrtc.signalling import Offer

log = get_logger("webrtc.http")

STATIC_DIR = Path(__file__).parent / "static"
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self)",
    "Cache-Control": "no-store",
}


#: call ids remembered after their end, so a late DELETE or beacon answers 204, not 404
_ENDED_REMEMBERED = 1024
_MAX_BEACON_BYTES = 256

CreateCall = Callable[[WebRtcLeg, OfferInfo], Awaitable[str]]
Hangup = Callable[[str], Awaitable[None]]


class WebRtcService:
    """What the WebRTC routes need, wired by `gateway.app`.

    `create_call`, `hangup` and `admit` come from the WebRTC call service
    (`gateway.legs.webrtc.service`). `create_call(leg, info) -> call_id`: builds the call around
    an answered leg (the call attaches its sink and owns the leg from then on); raise
    CallRejected to refuse it, the leg is then closed here. `hangup(call_id)`: ends the call
    (which `aclose()`s the leg). `admit()`: optional early check (capacity, draining) raising
    CallRejected before any peer connection exists. `include_loopback_candidates`: offer
    127.0.0.1 as an ICE candidate (tests, loopback-only listeners). `udp_ports`: (lo, hi) for
    ICE host candidates, None for ephemeral ports. `ice_addresses`: bind ICE host candidates on
    these addresses only (default: every interface).
    """

    def __init__(
        self,
        settings: Settings,
        create_call: CreateCall,
        hangup: Hangup,
        *,
        admit: Callable[[], None] | None = None,
        include_loopback_candidates: bool = False,
        udp_ports: tuple[int, int] | None = None,
        ice_addresses: Sequence[str] | None = None,
        connect_timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.public_address:
            ipaddress.ip_address(settings.public_address)  # ValueError: not an IP address
        self.settings = settings
        self.authorizer = Authorizer(settings.api_token)
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self.ice = IcePolicy(
            servers=tuple(settings.ice_servers),
            username=settings.ice_username,
            credential=settings.ice_credential,
            include_loopback=include_loopback_candidates,
            port_range=udp_ports,
            public_address=settings.public_address,
            host_addresses=tuple(ice_addresses) if ice_addresses is not None else None,
        )
        self.create_call = create_call
        self.hangup = hangup
        self.admit = admit
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.cors_origins = frozenset(settings.cors_origins)
        self._calls: dict[str, WebRtcLeg] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self.legs_created = 0
        self.refusals = RefusalLogger(log, "webrtc_offer")

    @property
    def calls(self) -> Mapping[str, WebRtcLeg]:
        """Live WebRTC calls by call id (read-only view)."""
        return MappingProxyType(self._calls)

    def new_leg(self) -> WebRtcLeg:
        """A fresh leg with this service's ICE policy."""
        self.legs_created += 1
        return WebRtcLeg(self.ice, connect_timeout=self.connect_timeout, on_ended=self._forget)

    def _forget(self, leg: WebRtcLeg, reason: str) -> None:
        if leg.call_id is not None and self._calls.get(leg.call_id) is leg:
            del self._calls[leg.call_id]
            self._ended[leg.call_id] = None
            while len(self._ended) > _ENDED_REMEMBERED:
                self._ended.popitem(last=False)

    def recently_ended(self, call_id: str) -> bool:
        """Whether `call_id` was a WebRTC call here that has ended (the last 1024 are kept)."""
        return call_id in self._ended

    async def aclose(self) -> None:
        """Close every leg still known here (the call manager normally does this first)."""
        for leg in list(self._calls.values()):
            await leg.aclose()
        self.refusals.close()

    # --- request checks

    def check_origin(self, request: web.Request) -> str | None:
        """The Origin to echo in CORS headers, None for same-origin or non-browser requests;
        Forbidden for a browser origin that is not configured."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if origin in self.cors_origins or "*" in self.cors_origins:
            return origin
        if urlsplit(origin).netloc == request.host:
            return None
        raise Forbidden("this web origin may not call the gateway (see cors_origins)")

    def client(self, request: web.Request) -> str | None:
        """The client's address (behind a trusted proxy: the forwarded one); None if unknown."""
        return request_client(request, self.trusted_proxies)

    def authorize(self, request: web.Request) -> CredentialKind:
        return self.authorizer.authorize(
            bearer=bearer_of(request.headers.get("Authorization")),
            query_token=request.query.get("token"),
            remote=self.client(request),
            now=self.clock(),
        )


def _cors(response: web.StreamResponse, origin: str | None) -> web.StreamResponse:
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Location"
        response.headers["Vary"] = "Origin"
    return response


def _refusal_reason(exc: WebRtcError) -> str:
    """A bounded token for the refusal log."""
    if isinstance(exc, CallRejected):
        return exc.reason
    return {401: "unauthorized", 403: "forbidden", 400: "bad_offer"}.get(exc.status, "other")


def _error(exc: WebRtcError, origin: str | None) -> web.StreamResponse:
    reason = exc.reason if isinstance(exc, CallRejected) else None
    response = json_error(exc.status, exc.message, reason=reason)
    if isinstance(exc, CallRejected) and exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
    return _cors(response, origin)


def add_webrtc_routes(app: web.Application, service: WebRtcService) -> None:
    """Register the WebRTC endpoints and the call page on `app`."""
    index = (STATIC_DIR / "index.html").read_bytes()

    async def offer(request: web.Request) -> web.StreamResponse:
        origin: str | None = None
        leg: WebRtcLeg | None = None
        try:
            origin = service.check_origin(request)
            credential = service.authorize(request)
            if service.admit is not None:
                service.admit()
            parsed = Offer.parse(request.content_type, await request.read())
            leg = service.new_leg()
            answer = await leg.accept(parsed.sdp)
            info = OfferInfo(
                remote=service.client(request),
                credential=credential,
                user_agent=request.headers.get("User-Agent", "")[:200],
                codec=leg.codec,
            )
            call_id = await service.create_call(leg, info)
        except WebRtcError as exc:
            if leg is not None:
                await leg.aclose()
            service.refusals.refused(
                request.remote or "", _refusal_reason(exc), status=exc.status, message=exc.message
            )
            return _error(exc, origin)
        except BaseException:
            if leg is not None:
                await leg.aclose()
            raise
        leg.call_id = call_id
        leg.hangup_secret = secrets.token_urlsafe(24)
        if leg.ended is None:
            service._calls[call_id] = leg
        leg.send_event({"type": "call", "call_id": call_id})
        resource = f"/webrtc/calls/{call_id}"
        content_type, body = parsed.answer_body(answer, call_id, resource, leg.hangup_secret)
        log.info("webrtc_offer_answered", call_id=call_id, codec=leg.codec, remote=info.remote)
        response = web.Response(status=201, body=body, content_type=content_type)
        response.headers["Location"] = resource
        return _cors(response, origin)

    async def delete_call(request: web.Request) -> web.StreamResponse:
        origin: str | None = None
        try:
            origin = service.check_origin(request)
            service.authorize(request)
        except WebRtcError as exc:
            return _error(exc, origin)
        call_id = request.match_info["call_id"]
        return _cors(await _hang_up(call_id), origin)

    async def _hang_up(call_id: str) -> web.StreamResponse:
        # idempotent: a call that has already ended (the page's hang-up message, the agent's
        # end_call, a beacon) answers 204
        if call_id not in service.calls:
            if service.recently_ended(call_id):
                return web.Response(status=204)
            return json_error(404, "no such WebRTC call")
        try:
            await service.hangup(call_id)
        except KeyError:
            return web.Response(status=204)
        return web.json_response({"call_id": call_id, "status": "ended"})

    async def beacon(request: web.Request) -> web.StreamResponse:
        origin: str | None = None
        try:
            origin = service.check_origin(request)
        except WebRtcError as exc:
            return _error(exc, origin)
        call_id = request.match_info["call_id"]
        raw = await request.content.read(_MAX_BEACON_BYTES + 1)
        leg = service.calls.get(call_id)
        if leg is not None:
            secret = leg.hangup_secret
            given = raw.strip()
            if not secret or not hmac.compare_digest(given, secret.encode()):
                return _cors(json_error(403, "wrong hang-up secret for this call"), origin)
        log.info("webrtc_beacon", call_id=call_id, live=leg is not None)
        return _cors(await _hang_up(call_id), origin)

    async def mint(request: web.Request) -> web.StreamResponse:
        origin: str | None = None
        try:
            origin = service.check_origin(request)
            service.authorizer.check_api_token(bearer_of(request.headers.get("Authorization")))
            ttl: int | None = None
            raw = await request.read()
            if raw.strip():
                try:
                    obj = json.loads(raw)
                except ValueError:
                    return _cors(json_error(400, "the body is not valid JSON"), origin)
                value = obj.get("ttl") if isinstance(obj, dict) else None
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    return _cors(json_error(400, '"ttl" must be a number of seconds'), origin)
                ttl = value
            minted = service.authorizer.mint(service.clock(), ttl)
        except WebRtcError as exc:
            return _error(exc, origin)
        body = {"token": minted.token, "expires_at": minted.expires_at, "ttl": minted.ttl}
        return _cors(web.json_response(body, status=201), origin)

    def preflight(methods: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                origin = service.check_origin(request)
            except WebRtcError as exc:
                return _error(exc, None)
            response = web.Response(status=204)
            response.headers["Allow"] = methods
            if "POST" in methods and request.path == "/webrtc/offer":
                response.headers["Accept-Post"] = "application/sdp, application/json"
            if origin is not None:
                response.headers["Access-Control-Allow-Methods"] = methods
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response.headers["Access-Control-Max-Age"] = "600"
            return _cors(response, origin)

        return handle

    async def page(_: web.Request) -> web.StreamResponse:
        return web.Response(
            body=index, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
        )

    async def favicon(_: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})

    app.router.add_post("/webrtc/offer", offer)
    app.router.add_route("OPTIONS", "/webrtc/offer", preflight("POST, OPTIONS"))
    app.router.add_delete("/webrtc/calls/{call_id}", delete_call)
    app.router.add_route("OPTIONS", "/webrtc/calls/{call_id}", preflight("DELETE, OPTIONS"))
    app.router.add_post("/webrtc/calls/{call_id}/beacon", beacon)
    app.router.add_post("/webrtc/token", mint)
    app.router.add_route("OPTIONS", "/webrtc/token", preflight("POST, OPTIONS"))
    app.router.add_get("/", page)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/webrtc/static/", STATIC_DIR, append_version=False)
