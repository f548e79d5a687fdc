"""How the gateway reports caller DTMF to the model: a user text message.

Convention: a user `message` item with one `input_text` part whose text is exactly
``DTMF: <digits>``, e.g. ``DTMF: #`` or ``DTMF: 123``. Digits are 0-9, `*`, `#` and A-D.
The bridge builds it with `dtmf_text()`, the local provider recognises it with
`parse_dtmf_text()`; instructions can tell a real model what it means.
"""

from __future__ import annotations

import re

__all__ = ["DTMF_PREFIX", "dtmf_text", "parse_dtmf_text"]

DTMF_PREFIX = "DTMF: "
_DIGITS = re.compile(r"[0-9*#A-D]+")


def dtmf_text(digits: str) -> str:
    """The text of the user message that reports `digits`; ValueError for anything else."""
    if not _DIGITS.fullmatch(digits):
        raise ValueError(f"not DTMF digits: {digits!r}")
    return DTMF_PREFIX + digits


def parse_dtmf_text(text: str) -> str | None:
    """The digits reported by a `dtmf_text()` message, or None if `text` is not one."""
    if not text.startswith(DTMF_PREFIX):
        return None
    digits = text[len(DTMF_PREFIX) :]
    return digits if _DIGITS.fullmatch(digits) else None
