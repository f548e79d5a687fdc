"""`gateway/call/` imports form no cycle, counting every import (type-only ones under
`TYPE_CHECKING` and those inside functions too), and the bridge core imports nothing that does
I/O. Read from the source with `ast`: nothing is imported to check it."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

CALL = Path(__file__).resolve().parents[2] / "gateway" / "call"


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import statement is."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {f"gateway.call.{p.stem}": p for p in CALL.glob("*.py") if p.stem != "__init__"}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def test_no_import_cycle_in_gateway_call() -> None:
    graph = _graph()
    assert "gateway.call.call" in graph["gateway.call.scenario"]  # the graph sees imports
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    # the leaves come first: the bridge and the lifecycle know no Call
    assert order.index("gateway.call.bridge") < order.index("gateway.call.call")
    assert order.index("gateway.call.prompts") < order.index("gateway.call.call")


def test_no_type_only_or_function_level_imports_hide_a_dependency() -> None:
    found = []
    for path in CALL.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                found.append(f"{path.name}:{node.lineno} TYPE_CHECKING")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        found.append(f"{path.name}:{inner.lineno} import in {node.name}()")
    assert found == []


def test_the_bridge_core_does_no_io() -> None:
    imported = _imports(CALL / "bridge.py")
    top = {name.split(".")[0] for name in imported}
    assert not top & {"asyncio", "socket", "websockets", "aiohttp", "aiortc", "structlog"}
    assert not imported & {
        "gateway.metrics",
        "gateway.logs",
        "gateway.config",
        "gateway.realtime.client",
        "gateway.call.call",
        "gateway.call.bus",
        "gateway.call.recorder",
    }
