"""The embedded local Realtime provider: a faithful, self-contained GA Realtime server (not a
language model). See docs/local-provider.md."""

from gateway.realtime.local.engine import EngineOptions, LocalEngine
from gateway.realtime.local.server import LocalProvider, run_standalone

__all__ = ["EngineOptions", "LocalEngine", "LocalProvider", "run_standalone"]
