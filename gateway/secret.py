"""A string that never shows itself in logs, reprs, errors or metrics."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import ConfigError


class Secret:
    """Wraps a credential; `str()`/`repr()` give a mask, `.reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The credential itself, for the one place that must send it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret_file(path: str, name: str) -> Secret:
    """A secret from a file (Docker/Kubernetes secrets, systemd credentials): the content with
    trailing newlines stripped. ConfigError, naming the setting and the path, when the file
    cannot be read or holds nothing."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file {path!r}") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path!r} is not UTF-8 text") from None
    value = text.rstrip("\r\n")
    if not value.strip():
        raise ConfigError(f"{name}: {path!r} is empty")
    return Secret(value)
