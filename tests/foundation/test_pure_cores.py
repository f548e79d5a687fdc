"""The sans-I/O cores are free of I/O when imported: each one, imported alone in a fresh
interpreter, loads no event loop, socket, subprocess, HTTP/WebSocket/WebRTC stack, logging,
metrics or settings (docs/architecture.md, "Layers").

The cores are listed by package: every module of a core package is a core except the adapters
named here, so a module added to `gateway/sip/` (the UA's split, say) is checked without being
listed. A new adapter in one of these packages must be named below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: package directory -> its modules that are adapters (not cores)
CORE_PACKAGES: dict[str, frozenset[str]] = {
    "codecs/telcodecs": frozenset(),
    "gateway/sip": frozenset({"transport", "resolver", "tls"}),
    "gateway/rtp": frozenset({"transport"}),
    "gateway/realtime": frozenset({"client"}),
    "gateway/realtime/local": frozenset({"server", "tts"}),
    "gateway/media": frozenset({"clock", "wav", "espeak", "wideband"}),
}
#: cores that live in a package of adapters or calls
CORE_MODULES = (
    "gateway.call.breaker",
    "gateway.call.bridge",
    "gateway.call.lifecycle",
    "gateway.webhooks",
)

FORBIDDEN = (
    "asyncio",
    "websockets",
    "aiohttp",
    "aiortc",
    "aioice",
    "av",
    "uvloop",
    "prometheus_client",
    "structlog",
    "socket",
    "ssl",
    "selectors",
    "subprocess",
    "dns",
    "gateway.config",
    "gateway.logs",
    "gateway.metrics",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "codecs" if path.is_relative_to(ROOT / "codecs") else ROOT)
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> list[str]:
    names = set(CORE_MODULES)
    for package, adapters in CORE_PACKAGES.items():
        for path in (ROOT / package).glob("*.py"):
            if path.stem not in adapters:
                names.add(_module_name(path))
    return sorted(names)


CORES = core_modules()


def test_the_core_list_covers_the_named_cores() -> None:
    # the package listing found what docs/architecture.md calls the cores (a guard against a
    # listing that silently finds nothing)
    named = {
        "telcodecs.g711",
        "telcodecs.resample",
        "gateway.sip.message",
        "gateway.sip.sdp",
        "gateway.sip.transaction",
        "gateway.sip.dialog",
        "gateway.sip.keepalive",
        "gateway.sip.auth",
        "gateway.sip.policy",
        "gateway.sip.locate",
        "gateway.rtp.packet",
        "gateway.rtp.rtcp",
        "gateway.rtp.dtmf",
        "gateway.rtp.jitter",
        "gateway.rtp.session",
        "gateway.rtp.comfort_noise",
        "gateway.realtime.events",
        "gateway.realtime.protocol",
        "gateway.realtime.profiles",
        "gateway.realtime.local.engine",
        "gateway.media.playout",
        "gateway.media.format",
        "gateway.media.grid",
        "gateway.media.convert",
    }
    assert named <= set(CORES), sorted(named - set(CORES))
    assert "gateway.sip.transport" not in CORES and "gateway.realtime.client" not in CORES


_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.argv[2:] if name in sys.modules)))
"""


@pytest.mark.parametrize("module", CORES)
def test_core_imports_no_io(module: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "codecs")])}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *FORBIDDEN],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded == [], f"importing {module} loads {loaded}"
