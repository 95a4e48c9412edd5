"""System messages between the parties (codec tags ``sys.*``), beyond the protocols' own.

What it is for: the glue a running system needs around the protocol
messages (``agg.*``, ``bill.*``, ``dr.*``): the head-end asks a group's
meters to start an aggregation epoch, publishes price feeds, tells meters
the simulated time and asks households to settle; a household answers with
the protocol's own ``bill.proof`` / ``bill.dispute``.

Security: these messages travel inside the authenticated, encrypted channel
(:mod:`privmeter.net.transport`), so the peer is known; none of them carries
anything a party must trust beyond that: a meter checks every protocol
message on its own (signatures, freshness), a forged ``sys.feed`` fails the
feed signature check, a bogus ``sys.epoch`` only leads to an epoch whose
bundle the meter verifies.  Guarantee: every field is range-checked when the
message is built or decoded (:class:`~privmeter.errors.MalformedMessage`).
"""

from __future__ import annotations

from dataclasses import dataclass

from privmeter.errors import InvalidArgument
from privmeter.protocol.codec import DEFAULT_MAX_BYTES, check_id, message
from privmeter.protocol.settlement import MAX_LOG_RECORDS

__all__ = ["Bye", "EpochRequest", "FeedPublished", "Hello", "Relayed", "SettleRequest", "Tick"]

MAX_FEED_JSON = 2 * 1024 * 1024  # a year of 15-minute signed prices fits


@message("sys.hello")
@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """A meter (or household) announces itself after connecting: which meter, which group."""

    meter_id: str
    group: str
    last_interval: int  # the last interval it has a reading for (-1: none)

    def __post_init__(self) -> None:
        check_id(self.meter_id, "meter_id")
        check_id(self.group, "group")
        if not -1 <= self.last_interval < 2**48:
            raise InvalidArgument("last_interval out of range")


@message("sys.epoch")
@dataclass(frozen=True, slots=True, kw_only=True)
class EpochRequest:
    """Head-end -> meter: set up aggregation epoch ``epoch`` of ``group`` (answer: ``agg.advert``)."""

    group: str
    epoch: int
    first_interval: int

    def __post_init__(self) -> None:
        check_id(self.group, "group")
        if not 0 <= self.epoch < 2**62 or not 0 <= self.first_interval < 2**48:
            raise InvalidArgument("epoch or first_interval out of range")


@message("sys.tick")
@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Head-end -> meter: the (simulated) clock, unix seconds; informative only."""

    now: int
    interval: int

    def __post_init__(self) -> None:
        if not 0 <= self.now < 2**48 or not 0 <= self.interval < 2**48:
            raise InvalidArgument("now or interval out of range")


@message("sys.feed")
@dataclass(frozen=True, slots=True, kw_only=True)
class FeedPublished:
    """The utility's signed price feed (``privmeter.pricefeed/1`` JSON); receivers verify it."""

    feed_json: str

    def __post_init__(self) -> None:
        if not 0 < len(self.feed_json) <= MAX_FEED_JSON:
            raise InvalidArgument("feed JSON empty or too large")


@message("sys.settle")
@dataclass(frozen=True, slots=True, kw_only=True)
class SettleRequest:
    """Head-end -> household: the statement of a billing period, to pay or dispute, and its log.

    ``log``: the canonical bytes of the meter-signed records the statement is
    built from; the household rebuilds E(bill) from them before it answers
    (:mod:`privmeter.protocol.settlement`).  A month of 15-minute records is
    ~2.5 MB at 3072 bits: it fits the 4 MiB frame.
    """

    period: int
    statement: bytes  # codec bytes of a bill.statement (decoded with expect=Statement)
    log: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.period < 2**32 or not 0 < len(self.statement) <= 8192:
            raise InvalidArgument("period or statement size out of range")
        if len(self.log) > MAX_LOG_RECORDS:
            raise InvalidArgument(f"log of more than {MAX_LOG_RECORDS} records")


@message("sys.bye")
@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    """Either side: the run is over (the receiver may disconnect)."""

    reason: str

    def __post_init__(self) -> None:
        if len(self.reason) > 200:
            raise InvalidArgument("reason too long")


@message("sys.relay")
@dataclass(frozen=True, slots=True, kw_only=True)
class Relayed:
    """One message of ``meter_id`` (codec bytes), relayed by a concentrator, either direction."""

    meter_id: str
    payload: bytes

    def __post_init__(self) -> None:
        if not self.meter_id or len(self.meter_id) > 64:
            raise InvalidArgument("meter_id must be 1-64 characters")
        if not 0 < len(self.payload) <= DEFAULT_MAX_BYTES:
            raise InvalidArgument("relayed payload empty or too large")
