"""The embedded local Realtime provider: a faithful, self-contained GA Realtime server (not a
language model). See docs/local-provider.md.

`engine` (with `vad`, `audio`, `prompts`) is the sans-I/O server; `server` is its WebSocket
adapter and `tts` renders spoken prompts with espeak-ng. This package re-exports nothing."""
