"""Shared helpers for the versioned JSON forms of keys (Paillier).

Big integers travel as lower-case hex strings; a malformed field raises
:class:`~privmeter.errors.MalformedMessage` naming the field, so every key
format rejects bad input the same way.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Self

from privmeter.errors import MalformedMessage, UnsupportedVersion

__all__ = ["JsonKey", "hex_int", "json_object", "key_mapping", "unhex_int"]


def hex_int(x: int) -> str:
    """An integer as a hex string (no prefix)."""
    return format(int(x), "x")


def unhex_int(s: Any, what: str, *, max_chars: int) -> int:
    """Parse the hex string of field ``what``; at most ``max_chars`` digits."""
    if not isinstance(s, str) or not s or len(s) > max_chars:
        raise MalformedMessage(f"{what} must be a hex string, got {type(s).__name__}")
    if s.strip("0123456789abcdefABCDEF"):  # int(s, 16) would also take "-5", " 5", "0x5", "5_0"
        raise MalformedMessage(f"{what} is not hex: {s[:40]!r}")
    return int(s, 16)


def json_object(s: str | bytes, what: str) -> Any:
    """``json.loads`` with a MalformedMessage naming ``what`` on failure."""
    try:
        return json.loads(s)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"{what} is not JSON: {exc}") from None


def key_mapping(d: Any, fmt: str, what: str) -> dict[str, Any]:
    """``d`` if it is a mapping in format ``fmt``: the first check of every key's
    ``from_dict`` (``MalformedMessage`` / ``UnsupportedVersion`` otherwise)."""
    if not isinstance(d, dict):
        raise MalformedMessage(f"{what} must be a mapping")
    if d.get("format") != fmt:
        raise UnsupportedVersion(f"expected format {fmt!r}, got {d.get('format')!r:.60}")
    return d


class JsonKey:
    """Mixin for key classes: ``to_json`` / ``from_json`` over their own
    ``to_dict`` / ``from_dict`` (canonical: sorted keys).  ``JSON_WHAT`` names
    the key in errors."""

    __slots__ = ()
    JSON_WHAT: ClassVar[str] = "key"

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: Any, *, min_bits: int = 0) -> Self:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str | bytes, *, min_bits: int | None = None) -> Self:
        """Parse the JSON form (``min_bits``: as ``from_dict``; its default if None)."""
        d = json_object(s, cls.JSON_WHAT)
        return cls.from_dict(d) if min_bits is None else cls.from_dict(d, min_bits=min_bits)
