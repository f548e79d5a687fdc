"""WebRTC calls: the aiortc leg, its signalling and the browser call page."""

from gateway.webrtc.errors import BadOffer, CallRejected, Forbidden, Unauthorized, WebRtcError
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.routes import OfferInfo, WebRtcService, add_webrtc_routes

__all__ = [
    "BadOffer",
    "CallRejected",
    "Forbidden",
    "OfferInfo",
    "Unauthorized",
    "WebRtcError",
    "WebRtcLeg",
    "WebRtcService",
    "add_webrtc_routes",
]
