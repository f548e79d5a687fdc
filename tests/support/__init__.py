"""What the tests (and the benchmarks) share: the one home of every helper more than one test
module uses. A test module imports from here, never from another `test_*.py`
(tests/foundation/test_test_imports.py checks it).

Processes and peers:
- `harness`: free ports (`free_port` TCP, `free_udp_port`, `free_udp_tcp_port`,
  `free_port_with_next`), child processes stopped by PID, /proc, /metrics; standard library
  only, shared with the benchmarks.
- `binaries`: `require_binary`, which fails (never skips) naming the package to install.
- `sipp`, `baresip`, `browser` (headless Chromium), `ops_peers` (Prometheus, Kamailio, a bare
  SIP responder).
- `gateway`: the whole gateway in-process (`running_gateway`) or as a process
  (`GatewayProcess`), what a call can leave behind, sipp against it.
- `simloop`: an asyncio loop on simulated time.

Protocols:
- `sip_messages` (SIP over a raw UDP socket), `sip_memory` (SipEndpoint cores wired in memory,
  a hand-written raw peer), `sip_app` (an answering app on a real SipTransport).
- `rtp` (vectors, a lossy link), `pcap` (captures, sipp's bundled ones).
- `webrtc` (an echoing sink, an aiortc client, the WebRTC routes on loopback).
- `realtime` (a phone session, reading a client's events), `realtime_schema` (OpenAI and Yandex
  conformance against the openai SDK's models), `fault_provider` (a fault-injecting Realtime
  proxy), `local_provider` (what the local provider received).

Calls and media:
- `memory_call` (a Call on an in-memory leg), `yandex` (the same with `--provider yandex`),
  `scenarios` (recording scenarios).
- `audio` (test signals, checks by cross-correlation, WAV files), `signals` (the codec
  measurements).
- `waiting` (polling with a deadline), `promql` (the shipped dashboard's and alerts' PromQL).
"""
