"""The test tree's own layout: shared helpers have one home, `tests/support/`. No module of the
tests or the benchmarks imports from a `test_*.py` module, and whatever they import from the
`tests` tree comes from `tests.support`. Read from the source with `ast`, every import counted
(inside functions too, relative ones resolved): nothing is imported to check it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("tests", "benchmarks")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every module `path` imports; `from a import b` yields `a` and `a.b`
    (b may be a module), a relative import is resolved against `path`'s package."""
    package = _module_name(path).split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _is_source(module: str) -> bool:
    """Whether `module` names a file or package in this repository."""
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _all_imports() -> list[tuple[str, str]]:
    """("file:line", module) for every import of a module of the tests or the benchmarks."""
    found = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            for line, module in _imports(path):
                if module.split(".")[0] in TREES and _is_source(module):
                    found.append((f"{path.relative_to(ROOT)}:{line}", module))
    return found


def test_the_walk_sees_the_imports_of_the_test_tree() -> None:
    found = _all_imports()
    # an absolute import, a module imported by name from a package, and a benchmark's
    assert {"tests.support.harness", "tests.support.signals"} <= {m for _, m in found}
    assert any(where.startswith("benchmarks/bench_calls.py:") for where, _ in found)


def test_no_module_imports_from_a_test_module() -> None:
    """A helper two test modules need lives in tests/support/, not in one of them."""
    bad = [
        f"{where} imports {module}"
        for where, module in _all_imports()
        if module.split(".")[-1].startswith("test_")
    ]
    assert not bad, "move the helper to tests/support/:\n" + "\n".join(bad)


def test_shared_helpers_come_from_tests_support() -> None:
    """No second home for helpers: no `*_harness.py` or `*_helpers.py` beside the tests."""
    bad = [
        f"{where} imports {module}"
        for where, module in _all_imports()
        if module.startswith("tests.")
        and module != "tests.support"
        and not module.startswith("tests.support.")
    ]
    assert not bad, "move the helper to tests/support/:\n" + "\n".join(bad)
