from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.errors import MessageTooLarge, TransportError
from privmeter.net.framing import FrameDecoder, encode_frame, read_frame


def test_encode_layout():
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_encode_refuses_oversized():
    with pytest.raises(MessageTooLarge):
        encode_frame(b"x" * 11, max_frame=10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 50), min_size=1))
def test_decoder_any_chunking(payloads, cuts):
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder(max_frame=1000)
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        out += dec.feed(stream[pos : pos + n])
        pos += n
        i += 1
    dec.eof()
    assert out == payloads
    assert dec.buffered == 0


def test_decoder_rejects_oversized_header_before_payload():
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(MessageTooLarge):
        dec.feed(b"\xff\xff\xff\xff")  # 4 GiB announced: refused on the header alone
    with pytest.raises(TransportError):
        dec.feed(b"more")  # unusable afterwards


def test_decoder_truncated():
    dec = FrameDecoder()
    assert dec.feed(encode_frame(b"hello")[:-2]) == []
    with pytest.raises(TransportError):
        dec.eof()


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


def test_read_frame():
    async def go() -> None:
        r = _reader(encode_frame(b"one") + encode_frame(b""))
        assert await read_frame(r) == b"one"
        assert await read_frame(r) == b""
        assert await read_frame(r) is None  # clean end at a boundary
        with pytest.raises(TransportError):
            await read_frame(_reader(b"\x00\x00"))  # cut in the header
        with pytest.raises(TransportError):
            await read_frame(_reader(b"\x00\x00\x00\x09abc"))  # cut in the payload
        with pytest.raises(MessageTooLarge):
            await read_frame(_reader(b"\x00\x10\x00\x00"), max_frame=1024)

    asyncio.run(go())


def test_bad_limit():
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=0)
