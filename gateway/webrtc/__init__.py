"""WebRTC's edge: the HTTP signalling routes, their credentials and the call page, plus what
the WebRTC leg (`gateway.legs.webrtc`) uses below it (ICE gathering, offer checks, errors)."""
