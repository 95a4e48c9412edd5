"""Every wire message of the parties, registered with the codec in one place.

What it is for: a message class registers its tag with
:func:`privmeter.protocol.codec.message` when its module is imported, so a
process decodes only the tags of the modules it happened to import.  A party
that decodes what others send (a relay above all: it forwards every message
the meters, households and the head-end exchange) imports this module and
decodes with :func:`decode`: then every tag is known, whatever else it
imports.  :data:`MESSAGE_MODULES` is the one list of modules that define wire
messages; tests check that no other production module defines one (a new
message module not listed here fails them) and that each tag has a
fixed-bytes vector (``tests/vectors/wire``).

The list lives in the parties layer because the messages span protocol, net
and parties (a lower layer cannot import a higher one).  Benchmark-only
messages (``agg.bench.*``, :mod:`privmeter.bench`) are not wire messages
between parties and are not listed.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeVar

import privmeter.net.channel
import privmeter.net.connection
import privmeter.net.handshake
import privmeter.parties.enrolment
import privmeter.parties.messages
import privmeter.protocol.aggregation_messages
import privmeter.protocol.comparison
import privmeter.protocol.demand_messages
import privmeter.protocol.records
import privmeter.protocol.ring
import privmeter.protocol.settlement
from privmeter.protocol import codec
from privmeter.protocol.codec import DEFAULT_MAX_BYTES

__all__ = ["MESSAGE_MODULES", "decode", "wire_messages"]

T = TypeVar("T")

MESSAGE_MODULES: tuple[ModuleType, ...] = (
    privmeter.net.channel,
    privmeter.net.connection,
    privmeter.net.handshake,
    privmeter.parties.enrolment,
    privmeter.parties.messages,
    privmeter.protocol.aggregation_messages,
    privmeter.protocol.comparison,
    privmeter.protocol.demand_messages,
    privmeter.protocol.records,
    privmeter.protocol.ring,
    privmeter.protocol.settlement,
)


def wire_messages() -> dict[str, type[Any]]:
    """Tag -> class for every wire message of :data:`MESSAGE_MODULES` (sorted by tag)."""
    names = {m.__name__ for m in MESSAGE_MODULES}
    return {t: c for t, c in sorted(codec.registered().items()) if c.__module__ in names}


def decode(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, expect: type[T] | None = None
) -> Any:
    """:func:`privmeter.protocol.codec.decode`, with every wire message's tag registered."""
    return codec.decode(data, max_bytes=max_bytes, expect=expect)
