"""The exception tree drawn at the top of gateway/errors.py is the real one, and it is whole.

Every exception class defined in gateway/ and telcodecs descends from exactly one family root
(a class on an unindented line of the drawing), and the drawing is generated again here from
the classes themselves and compared line by line, so a new exception fails this test until it
is placed under a root and drawn. Public exceptions live in gateway/errors.py; a module may keep
a private one (a leading underscore) that never leaves it.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import gateway.errors

ROOT = Path(__file__).resolve().parents[2]

#: a drawn line: the tree's prefix, the class, its builtin bases, then two spaces and a note
_DRAWN = re.compile(
    r"^(?P<shape>(?P<prefix>(?:│   |    )*(?:├── |└── )?)(?P<name>\w+)(?: \((?P<bases>[\w, ]+)\))?)"
    r" {2,}\S"
)


def _module_names() -> list[str]:
    names = []
    for base, top in ((ROOT, "gateway"), (ROOT / "codecs", "telcodecs")):
        for path in sorted((base / top).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _module_names()


def _path(module: str) -> Path:
    base = ROOT / "codecs" if module.startswith("telcodecs") else ROOT
    path = base.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined at module level (or in a class) in gateway/ and telcodecs."""
    found: list[type[BaseException]] = []

    def collect(owner: object, module: str) -> None:
        for obj in vars(owner).values():
            if isinstance(obj, type) and obj.__module__ == module and obj not in found:
                if issubclass(obj, BaseException):
                    found.append(obj)
                collect(obj, module)

    for name in MODULES:
        if name == "gateway.__main__":  # importing it runs the gateway
            tree = ast.parse(_path(name).read_text())
            assert not [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
            continue
        collect(importlib.import_module(name), name)
    return found


EXCEPTIONS = defined_exceptions()


def drawing() -> list[str]:
    """The drawn tree's lines, as written (the block indented under the docstring's prose)."""
    doc = gateway.errors.__doc__
    assert doc is not None
    return [line[4:] for line in doc.splitlines() if line.startswith("    ") and line.strip()]


def drawn_roots() -> list[type[BaseException]]:
    roots = []
    for line in drawing():
        m = _DRAWN.match(line)
        assert m is not None, f"not a tree line (class, two spaces, a note): {line!r}"
        if not m["prefix"]:
            root = getattr(gateway.errors, m["name"])
            assert issubclass(root, BaseException)
            roots.append(root)
    return roots


ROOTS = drawn_roots()


def _label(cls: type[BaseException]) -> str:
    builtins = [
        b.__name__ for b in cls.__bases__ if b.__module__ == "builtins" and b is not Exception
    ]
    return f"{cls.__name__} ({', '.join(builtins)})" if builtins else cls.__name__


def render(roots: list[type[BaseException]]) -> list[str]:
    """The tree of `roots` as the docstring draws it: children in the order they are defined."""
    lines: list[str] = []

    def walk(cls: type[BaseException], prefix: str, branch: str) -> None:
        lines.append(prefix + branch + _label(cls))
        children = [c for c in cls.__subclasses__() if c in EXCEPTIONS]
        below = prefix + {"": "", "├── ": "│   ", "└── ": "    "}[branch]
        for i, child in enumerate(children):
            walk(child, below, "└── " if i == len(children) - 1 else "├── ")

    for root in roots:
        walk(root, "", "")
    return lines


def test_the_walk_finds_the_exceptions() -> None:
    # a guard against a walk that silently finds nothing: classes of five packages
    modules = {cls.__module__ for cls in EXCEPTIONS}
    assert {"gateway.errors", "gateway.realtime.local.engine"} <= modules
    assert len(EXCEPTIONS) > 30
    assert {
        "SipParseError",
        "RtpParseError",
        "RealtimeError",
        "AdmissionError",
        "BadOffer",
        "_Bad",
    } <= {cls.__name__ for cls in EXCEPTIONS}


def test_every_exception_descends_from_exactly_one_drawn_root() -> None:
    misplaced = {
        f"{cls.__module__}.{cls.__qualname__}": [r.__name__ for r in ROOTS if issubclass(cls, r)]
        for cls in EXCEPTIONS
        if len([r for r in ROOTS if issubclass(cls, r)]) != 1
    }
    assert not misplaced, f"place these under one root drawn in gateway/errors.py: {misplaced}"


def test_the_families_form_a_tree() -> None:
    # one parent of ours each (a builtin such as ValueError may be mixed in beside it)
    for cls in EXCEPTIONS:
        ours = [b for b in cls.__bases__ if b in EXCEPTIONS]
        assert len(ours) == (0 if cls in ROOTS else 1), (cls, cls.__bases__)


def test_the_drawing_is_the_real_tree() -> None:
    drawn = []
    for line in drawing():
        m = _DRAWN.match(line)
        assert m is not None, line
        drawn.append(m["shape"])
    assert drawn == render(ROOTS)


def test_public_exceptions_live_in_gateway_errors() -> None:
    elsewhere = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in EXCEPTIONS
        if cls.__module__ != "gateway.errors" and not cls.__name__.startswith("_")
    ]
    assert not elsewhere, f"move these to gateway/errors.py: {elsewhere}"


def test_no_exception_class_is_defined_inside_a_function() -> None:
    # the walk above sees module- and class-level classes only
    local = []
    for name in MODULES:
        tree = ast.parse(_path(name).read_text())
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                local += [
                    f"{name}:{node.lineno} {node.name}"
                    for node in ast.walk(func)
                    if isinstance(node, ast.ClassDef)
                    and any(re.search(r"(Error|Exception)$", ast.unparse(b)) for b in node.bases)
                ]
    assert not local, local
