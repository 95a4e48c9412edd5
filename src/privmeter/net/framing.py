"""Length-prefixed framing of a byte stream, size-limited.

What it is for: TCP is a byte stream; every privmeter connection cuts it into
frames, each a 4-byte big-endian unsigned length followed by that many
payload bytes::

    +----------------+---------------------------+
    | length (u32 BE)| payload (length bytes)    |
    +----------------+---------------------------+

Security assumption: none (the peer is hostile).  Guarantee: no frame larger
than the configured limit is ever buffered -- the limit is checked on the
4-byte header, before a single payload byte is read, so a peer announcing a
huge frame costs us four bytes of memory, not four gigabytes.  A stream that
ends inside a frame is reported as truncated; a stream that ends exactly on a
frame boundary is a clean end of stream.

Two forms, same rules: :class:`FrameDecoder` is a sans-IO decoder (feed
bytes in, get complete payloads out; used by tests and by anything driving
bytes by hand) and :func:`read_frame` reads one frame from an
:class:`asyncio.StreamReader` (used by :mod:`privmeter.net.transport`).
"""

from __future__ import annotations

import asyncio
import struct

from privmeter.errors import InvalidArgument, MessageTooLarge, TransportError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_BYTES",
    "MAX_FRAME_LIMIT",
    "FrameDecoder",
    "encode_frame",
    "read_frame",
]

HEADER_BYTES = 4
DEFAULT_MAX_FRAME = 4 * 1024 * 1024  # 4 MiB: a 1,000-meter share bundle fits, a flood does not
MAX_FRAME_LIMIT = (1 << 32) - 1  # what a u32 length can say
_HEADER = struct.Struct(">I")


def _check_limit(max_frame: int) -> int:
    if not isinstance(max_frame, int) or not 1 <= max_frame <= MAX_FRAME_LIMIT:
        raise InvalidArgument(f"max_frame must be in [1, {MAX_FRAME_LIMIT}], got {max_frame!r}")
    return max_frame


def encode_frame(payload: bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """``len(payload)`` as u32 big-endian, then ``payload``.

    Raises :class:`~privmeter.errors.MessageTooLarge` if the payload is over
    ``max_frame`` (we never send what the peer would have to refuse).
    """
    n = len(payload)
    if n > max_frame:
        raise MessageTooLarge(f"frame of {n} bytes exceeds the {max_frame}-byte limit")
    return _HEADER.pack(n) + bytes(payload)


class FrameDecoder:
    """Sans-IO frame decoder: :meth:`feed` bytes, get whole payloads back.

    After an error (oversized frame) the decoder is unusable: the stream has
    lost synchronisation and the connection must be closed.
    """

    __slots__ = ("_buf", "_failed", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = _check_limit(max_frame)
        self._buf = bytearray()
        self._failed = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame payload now complete, in order."""
        if self._failed:
            raise TransportError("frame decoder used after a framing error")
        self._buf += data
        out: list[bytes] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= HEADER_BYTES:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > self.max_frame:
                self._failed = True
                raise MessageTooLarge(
                    f"peer announced a frame of {n} bytes; limit is {self.max_frame}"
                )
            if len(buf) - pos - HEADER_BYTES < n:
                break
            start = pos + HEADER_BYTES
            out.append(bytes(buf[start : start + n]))
            pos = start + n
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)

    def eof(self) -> None:
        """The stream ended: raise :class:`~privmeter.errors.TransportError` if mid-frame."""
        if self._buf:
            raise TransportError(
                f"stream truncated inside a frame ({len(self._buf)} bytes pending)"
            )


async def read_frame(
    reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME
) -> bytes | None:
    """Read one frame payload; ``None`` on a clean end of stream (frame boundary).

    Raises :class:`~privmeter.errors.MessageTooLarge` for a header over
    ``max_frame`` (nothing more is read) and
    :class:`~privmeter.errors.TransportError` for a stream cut inside a frame.
    """
    try:
        header = await reader.readexactly(HEADER_BYTES)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise TransportError(
            f"stream truncated inside a frame header ({len(exc.partial)} bytes)"
        ) from None
    (n,) = _HEADER.unpack(header)
    if n > max_frame:
        raise MessageTooLarge(f"peer announced a frame of {n} bytes; limit is {max_frame}")
    if n == 0:
        return b""
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise TransportError(
            f"stream truncated inside a frame: got {len(exc.partial)} of {n} bytes"
        ) from None
