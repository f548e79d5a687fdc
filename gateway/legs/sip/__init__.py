"""The SIP call leg (SIP dialog + RTP session as a `MediaPort`) and the SIP call service."""
