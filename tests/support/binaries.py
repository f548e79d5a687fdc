"""The real peer programs the tests run: a missing one fails the test (never skips it), naming
the package to install."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.harness import REPO


def require_binary(name: str, package: str, source: str = "Debian package") -> str:
    """Absolute path of `name`; fails the calling test naming the package if missing.

    Also looks in /usr/sbin and the project's .venv/bin (pip-installed tools like hadolint)."""
    path = shutil.which(name)
    if path is None:
        for extra in ("/usr/sbin", "/sbin", str(REPO / ".venv" / "bin")):
            candidate = Path(extra) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        pytest.fail(
            f"{name} is not installed: install the {source} '{package}' "
            + (
                f"(apt-get install {package}, or `make peers`)"
                if source == "Debian package"
                else f"(.venv/bin/pip install {package})"
            ),
            pytrace=False,
        )
    return path
