"""RTP media leg (RFC 3550/3551, 4733 DTMF, symmetric RTP): sans-I/O cores plus one adapter.

Layout: `packet`, `rtcp`, `dtmf`, `jitter`, `session` and `ports` are plain objects with no
sockets and no asyncio (time is passed in); `transport` is the asyncio glue. Pacing is the media
clock's (`gateway.media.clock` on `gateway.media.grid`). See docs/rtp.md.
"""
