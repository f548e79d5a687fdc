"""Call legs: a signalling stack and a media stack seen by the bridge as one `MediaPort`, and
the call service that turns the leg's calls into `Call`s (`sip/`, `webrtc/`)."""
