"""Shared helpers for the versioned JSON forms of keys (Paillier, DGK).

Big integers travel as lower-case hex strings; a malformed field raises
:class:`~privmeter.errors.MalformedMessage` naming the field, so every key
format rejects bad input the same way.
"""

from __future__ import annotations

import json
from typing import Any

from privmeter.errors import MalformedMessage

__all__ = ["hex_int", "json_object", "unhex_int"]


def hex_int(x: int) -> str:
    """An integer as a hex string (no prefix)."""
    return format(int(x), "x")


def unhex_int(s: Any, what: str, *, max_chars: int) -> int:
    """Parse the hex string of field ``what``; at most ``max_chars`` digits."""
    if not isinstance(s, str) or not s or len(s) > max_chars:
        raise MalformedMessage(f"{what} must be a hex string, got {type(s).__name__}")
    try:
        return int(s, 16)
    except ValueError:
        raise MalformedMessage(f"{what} is not hex: {s[:40]!r}") from None


def json_object(s: str | bytes, what: str) -> Any:
    """``json.loads`` with a MalformedMessage naming ``what`` on failure."""
    try:
        return json.loads(s)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"{what} is not JSON: {exc}") from None
