"""The layout the design card fixes, and first-party names that cannot shadow the stdlib."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _first_party_top_level() -> set[str]:
    names: set[str] = set()
    for source_root in (ROOT, ROOT / "codecs"):
        for child in source_root.iterdir():
            if child.name.startswith((".", "_")) or child.name in ("tests", "benchmarks"):
                continue
            if child.is_dir() and (child / "__init__.py").exists():
                names.add(child.name)
            elif child.suffix == ".py":
                names.add(child.stem)
    return names


def test_first_party_modules_do_not_shadow_stdlib() -> None:
    names = _first_party_top_level()
    assert {"gateway", "telcodecs"} <= names
    clashes = names & set(sys.stdlib_module_names)
    assert not clashes, f"first-party top-level modules shadow the standard library: {clashes}"


def test_codecs_directory_is_not_a_package() -> None:
    # `import codecs.x` can never work (the stdlib codecs module is frozen), so codecs/ is a
    # source root holding telcodecs, not a package itself.
    assert not (ROOT / "codecs" / "__init__.py").exists()
    assert (ROOT / "codecs" / "telcodecs" / "__init__.py").exists()


def test_design_card_layout_exists() -> None:
    for name in (
        "pyproject.toml",
        "Dockerfile",
        "gateway",
        "codecs",
        "tests",
        "deploy",
        "docs",
        "README.md",
        "Makefile",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), name


def test_packaging_declares_the_runtime_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    for pkg in ("aiohttp", "websockets", "aiortc", "numpy", "structlog", "prometheus-client"):
        assert pkg in deps
    assert "audioop-lts; python_version >= '3.13'" in project["dependencies"]
    assert project["requires-python"] == ">=3.11"
    assert project["scripts"]["gateway"] == "gateway.cli:main"
    dev = " ".join(project["optional-dependencies"]["dev"])
    for pkg in ("pytest", "pytest-asyncio", "hypothesis", "ruff", "mypy", "openai"):
        assert pkg in dev


def test_telcodecs_imports_from_its_source_root() -> None:
    import telcodecs

    assert Path(telcodecs.__file__ or "").resolve().is_relative_to(ROOT / "codecs")


def test_architecture_doc_names_every_module() -> None:
    """docs/architecture.md ("Every module") names each module of gateway/ and telcodecs: by its
    path, or by its file name in the bullet that names its package's directory."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Every module", 1)[1]
    bullets = section.split("\n- ")[1:]
    missing = []
    for root in (ROOT / "gateway", ROOT / "codecs" / "telcodecs"):
        for path in sorted(root.rglob("*.py")):
            if path.name == "__init__.py":
                continue
            rel = path.relative_to(ROOT).as_posix()
            folder = path.parent.relative_to(ROOT).as_posix() + "/"
            if not any(
                rel in b or (folder in b and f"`{path.name}`" in b) or f"/{path.name}`" in b
                for b in bullets
                if folder in b or rel in b
            ):
                missing.append(rel)
    assert not missing, f"docs/architecture.md does not name: {missing}"
