"""The layers of docs/architecture.md hold: imports point down, never up, and never in a cycle.

The import graph is read from the source (AST), so it holds every import: top level, inside
functions, and under `if TYPE_CHECKING:` (a type-only import still couples the modules, and a
cycle of them is one the next runtime import closes). Importing `a.b.c` runs `a/__init__` and
`a/b/__init__` first, so those are edges too.

`LAYER_OF` places every module by its longest matching prefix; a module no prefix matches fails
the test until it is placed. Package `__init__`s import nothing (they re-export nothing), so
they cannot point anywhere and sit below every layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: lowest first; a module may import from its own layer or any layer below it
LAYERS = (
    "codecs",  # telcodecs: G.711, resampling, DTMF detection, levels
    "values",  # leaf value types and the exception tree (gateway/errors.py) every layer names
    "cores",  # sans-I/O protocol cores: time in, timers and output out as data
    "runtime",  # process-wide services: settings, logs, metrics, the refusal log, GC policy
    "adapters",  # sockets, subprocesses, aiortc/websockets glue, the media clock
    "calls",  # the Call, its manager and service, scenarios, routing, recorder
    "legs",  # a signalling + media stack as a MediaPort, and its call service
    "edges",  # HTTP: health, metrics, the call API, WebRTC signalling routes
    "wiring",  # builds and connects everything
)

#: module prefix -> layer (longest prefix wins)
LAYER_OF: dict[str, str] = {
    "telcodecs": "codecs",
    "gateway.secret": "values",
    "gateway.errors": "values",
    "gateway.webhooks": "cores",
    "gateway.media.format": "values",
    "gateway.sip": "cores",
    "gateway.sip.transport": "adapters",
    "gateway.sip.resolver": "adapters",
    "gateway.sip.tls": "adapters",
    "gateway.rtp": "cores",
    "gateway.rtp.transport": "adapters",
    "gateway.realtime": "cores",
    "gateway.realtime.client": "adapters",
    "gateway.realtime.local.server": "adapters",
    "gateway.realtime.local.tts": "adapters",
    "gateway.media": "cores",
    "gateway.media.clock": "adapters",
    "gateway.media.wav": "adapters",
    "gateway.media.espeak": "adapters",
    "gateway.media.wideband": "adapters",
    "gateway.webrtc": "edges",
    "gateway.webrtc.signalling": "adapters",
    "gateway.webrtc.ice": "adapters",
    "gateway.config": "runtime",
    "gateway.logs": "runtime",
    "gateway.banner": "runtime",
    "gateway.metrics": "runtime",
    "gateway.refusals": "runtime",
    "gateway.gcpolicy": "runtime",
    "gateway.call": "calls",
    "gateway.legs": "legs",
    "gateway.http": "edges",
    "gateway.app": "wiring",
    "gateway.cli": "wiring",
    "gateway.cli_calls": "wiring",
    "gateway.__main__": "wiring",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base, top in ((ROOT, "gateway"), (ROOT / "codecs", "telcodecs")):
        for path in (base / top).rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imported_names(name: str, source: str) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything module `name` imports, anywhere in its `source`."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno  # a submodule, when one exists


def imports_of(name: str, source: str | None = None) -> dict[str, int]:
    """First-party modules `name` imports (parent packages included) -> the first line."""
    if source is None:
        source = MODULES[name].read_text()
    out: dict[str, int] = {}
    for dotted, line in _imported_names(name, source):
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            # a module's own packages are imported before it, whatever it imports: no edge
            if target in MODULES and not (name == target or name.startswith(target + ".")):
                out.setdefault(target, line)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> str | None:
    matches = [p for p in LAYER_OF if name == p or name.startswith(p + ".")]
    return LAYER_OF[max(matches, key=len)] if matches else None


def _rank(name: str) -> int:
    if _is_package(name) and name.startswith("gateway"):
        return -1  # imports nothing (test_package_inits_import_nothing)
    layer = layer_of(name)
    assert layer is not None
    return LAYERS.index(layer)


def test_every_module_has_a_layer() -> None:
    assert set(LAYER_OF.values()) <= set(LAYERS)
    unplaced = [
        name
        for name in MODULES
        if layer_of(name) is None and not (_is_package(name) and name.startswith("gateway"))
    ]
    assert not unplaced, f"place these in LAYER_OF: {unplaced}"


def test_package_inits_import_nothing() -> None:
    # re-exporting would make importing a core load its package's adapters
    offenders = {
        name: sorted(GRAPH[name])
        for name in MODULES
        if _is_package(name) and name.startswith("gateway") and GRAPH[name]
    }
    assert not offenders, offenders
    for name in MODULES:
        if _is_package(name) and name.startswith("gateway"):
            tree = ast.parse(MODULES[name].read_text())
            imports = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Import | ast.ImportFrom) and n.module != "__future__"
            ]
            assert not imports, f"{name} imports at line {imports[0].lineno}"


def test_no_import_points_up_a_layer() -> None:
    up = [
        f"{name}:{line} ({layer_of(name)}) imports {target} ({layer_of(target)})"
        for name, targets in sorted(GRAPH.items())
        for target, line in sorted(targets.items())
        if _rank(target) > _rank(name)
    ]
    assert not up, "\n".join(up)


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_the_walk_sees_every_kind_of_import() -> None:
    # what the tests above rely on: imports inside functions and under TYPE_CHECKING, relative
    # ones, submodules named in `from package import module`, and the parent packages
    source = """
from typing import TYPE_CHECKING
import gateway.sip.message
from gateway.realtime import events as rt
from . import port
if TYPE_CHECKING:
    from gateway.call.call import Call
def later() -> None:
    from ..rtp.packet import parse_header
"""
    assert set(imports_of("gateway.media.playout", source)) == {
        "gateway.sip",
        "gateway.sip.message",
        "gateway.realtime",
        "gateway.realtime.events",
        "gateway.media.port",
        "gateway.call",
        "gateway.call.call",
        "gateway.rtp",
        "gateway.rtp.packet",
    }


def test_wiring_registers_no_event_handlers() -> None:
    # app.py builds and connects components; handlers of call, leg and Realtime events live
    # with the calls and legs (gateway/legs/webrtc/service.py for the WebRTC page's events)
    tree = ast.parse((ROOT / "gateway" / "app.py").read_text())
    subscriptions = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("on", "off")
    ]
    assert not subscriptions, f"gateway/app.py subscribes to events at lines {subscriptions}"
    assert "gateway.call.events" not in GRAPH["gateway.app"]
