"""HTTP side of the gateway: health, metrics, the call API and WebRTC signalling (aiohttp)."""
