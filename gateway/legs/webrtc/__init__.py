"""The WebRTC call leg (an aiortc peer connection as a `MediaPort`) and its call service."""
