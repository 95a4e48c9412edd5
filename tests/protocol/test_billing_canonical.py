"""``canonical()``: the exact bytes every record and receipt signature covers."""

from __future__ import annotations

import enum

import pytest

from privmeter.protocol.records import canonical


class _Kind(enum.IntEnum):
    SEVEN = 7


def test_canonical_exact_bytes() -> None:
    assert canonical("ab", -1, b"\x00", 255, 0, "é") == (
        b"s\x00\x00\x00\x02ab"
        + b"i\x00\x00\x00\x01\xff"
        + b"b\x00\x00\x00\x01\x00"
        + b"i\x00\x00\x00\x02\x00\xff"
        + b"i\x00\x00\x00\x01\x00"
        + b"s\x00\x00\x00\x02\xc3\xa9"
    )
    assert canonical(2**70) == b"i\x00\x00\x00\x09" + (2**70).to_bytes(9, "big")
    assert canonical(_Kind.SEVEN) == canonical(7)  # int subclasses encode as their value
    assert canonical() == b""


@pytest.mark.parametrize("bad", [True, False, 1.5, bytearray(b"x"), None])
def test_canonical_refuses_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        canonical(bad)  # type: ignore[arg-type]
