from __future__ import annotations

from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.errors import (
    MalformedMessage,
    MessageTooLarge,
    RemoteProtocolError,
    UnsupportedVersion,
)
from privmeter.protocol.codec import WIRE_VERSION, decode, encode, message


@message("test.inner")
@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    a: int
    b: bytes


@message("test.outer")
@dataclass(frozen=True, slots=True, kw_only=True)
class Outer:
    name: str
    big: int
    values: tuple[int, ...]
    inner: Inner
    maybe: int | None
    flag: bool
    table: dict[str, int]

    def __post_init__(self) -> None:
        if self.big == 0:
            raise ValueError("big must be non-zero")


def sample(**kw: object) -> Outer:
    d: dict[str, object] = dict(
        name="m-1",
        big=-(1 << 4000) + 7,
        values=(1, -2, 1 << 70),
        inner=Inner(a=5, b=b"\x00\xff"),
        maybe=None,
        flag=True,
        table={"x": 1},
    )
    d.update(kw)
    return Outer(**d)  # type: ignore[arg-type]


def test_roundtrip():
    m = sample()
    assert decode(encode(m)) == m
    assert decode(encode(m), expect=Outer) == m


def test_expect_pins_class():
    with pytest.raises(MalformedMessage):
        decode(encode(Inner(a=1, b=b"")), expect=Outer)


def raw(version: object, tag: object, fields: object) -> bytes:
    return msgpack.packb([version, tag, fields], use_bin_type=True)


@pytest.mark.parametrize(
    "data, err",
    [
        (b"", MalformedMessage),
        (b"\xc1garbage", MalformedMessage),
        (encode(sample())[:-3], MalformedMessage),
        (raw(WIRE_VERSION + 1, "test.inner", {"a": 1, "b": b""}), UnsupportedVersion),
        (raw(WIRE_VERSION, "no.such", {}), MalformedMessage),
        (raw(WIRE_VERSION, "test.inner", {"a": 1}), MalformedMessage),
        (raw(WIRE_VERSION, "test.inner", {"a": 1, "b": b"", "c": 2}), MalformedMessage),
        (raw(WIRE_VERSION, "test.inner", {"a": "1", "b": b""}), MalformedMessage),
        (raw(WIRE_VERSION, "test.inner", {"a": True, "b": b""}), MalformedMessage),
        (raw(WIRE_VERSION, "test.inner", [1, 2]), MalformedMessage),
        (msgpack.packb({"not": "a list"}), MalformedMessage),
    ],
)
def test_malformed(data, err):
    with pytest.raises(err):
        decode(data)


def test_post_init_rejection_is_malformed():
    good = encode(sample(big=5))
    obj = msgpack.unpackb(
        good, raw=False, strict_map_key=True, ext_hook=lambda c, d: msgpack.ExtType(c, d)
    )
    obj[2]["big"] = 0
    with pytest.raises(MalformedMessage, match="non-zero"):
        decode(msgpack.packb(obj, use_bin_type=True))


def test_too_large():
    with pytest.raises(MessageTooLarge):
        decode(encode(sample()), max_bytes=100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_only_protocol_errors(data):
    try:
        decode(data)
    except RemoteProtocolError:
        pass
