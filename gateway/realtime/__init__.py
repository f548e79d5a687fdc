"""Realtime API: the protocol model, provider profiles and the client the gateway uses per call.

Layout: `events`, `protocol`, `profiles`, `errors` and `dtmf` are sans-I/O (no asyncio, no
sockets, no logging: time is passed in, output is returned as data); `client` is the asyncio
WebSocket adapter. Import from the modules: this package re-exports nothing, so importing a
core never loads the client. The local provider lives in `gateway.realtime.local`.
"""
