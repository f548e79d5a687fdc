"""The media-port interface shared by every call leg (SIP/RTP, WebRTC) and the call bridge."""
