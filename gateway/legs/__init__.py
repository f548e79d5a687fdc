"""Call legs that combine a signalling stack with a media stack (SIP + RTP)."""
