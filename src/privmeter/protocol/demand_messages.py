"""The wire messages of demand management (codec tags ``dr.*``) and the meter's load instruction.

Each message is a frozen, keyword-only dataclass whose ``__post_init__``
checks ids, sizes and ranges, so :func:`privmeter.protocol.codec.decode`
never yields a malformed one; ``signed_payload`` is what its signer signs
(Ed25519, under the ``*_CONTEXT`` of its kind).  The parties' state machines
that exchange them are in :mod:`privmeter.protocol.demand`; the flow and the
leakage bound are described there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from privmeter.errors import InvalidArgument
from privmeter.protocol.codec import check_id, message
from privmeter.protocol.comparison import (
    MAX_BITS,
    MIN_BITS,
    RADICES,
    ComparisonChallenge,
    ComparisonOffer,
)
from privmeter.protocol.records import canonical

__all__ = [
    "ACTIONS",
    "ANSWER_CONTEXT",
    "CLOCK_SKEW_S",
    "DIRECTIVE_CONTEXT",
    "ECHO_CONTEXT",
    "EVENT_CONTEXT",
    "MAX_EVENT_LIFETIME_S",
    "OFFER_CONTEXT",
    "QUERY_CONTEXT",
    "SIDES",
    "ComparisonAnswer",
    "ComparisonQuery",
    "DemandEvent",
    "Directive",
    "Echo",
    "EchoBundle",
    "LoadInstruction",
    "Offer",
]

ACTIONS = ("curtail", "shift", "take_more")  # as in privmeter.grid.synthetic.curtailment
SIDES = ("above", "below")
EVENT_CONTEXT = b"privmeter.dr.event/2"
ECHO_CONTEXT = b"privmeter.dr.echo/1"
QUERY_CONTEXT = b"privmeter.dr.query/2"
ANSWER_CONTEXT = b"privmeter.dr.answer/2"
OFFER_CONTEXT = b"privmeter.dr.offer/1"
DIRECTIVE_CONTEXT = b"privmeter.dr.directive/1"
MAX_EVENT_LIFETIME_S = 3600  # an event's messages are accepted at most an hour
CLOCK_SKEW_S = 30  # tolerated clock difference between head-end and meter


def _check_sig(sig: bytes) -> None:
    if len(sig) != 64:
        raise InvalidArgument("signature must be 64 bytes")


# -- messages ---------------------------------------------------------------------


@message("dr.event")
@dataclass(frozen=True, slots=True, kw_only=True)
class DemandEvent:
    """A demand-management event opened by the head-end for one group (head-end-signed)."""

    event_id: str
    group_id: str
    action: str
    side: str  # "above": meters with x >= T are targeted; "below": x < T
    start_interval: int
    duration_minutes: int
    issued_at: int
    expires_at: int
    bits: int
    radix: int
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        check_id(self.group_id, "group_id")
        if not MIN_BITS <= self.bits <= MAX_BITS or self.radix not in RADICES:
            raise InvalidArgument(
                f"bits must be in [{MIN_BITS}, {MAX_BITS}] and radix one of {RADICES}"
            )
        if self.action not in ACTIONS:
            raise InvalidArgument(f"action must be one of {ACTIONS}, got {self.action!r:.40}")
        if self.side not in SIDES:
            raise InvalidArgument(f"side must be one of {SIDES}, got {self.side!r:.40}")
        if not 0 <= self.start_interval < 2**48 or not 1 <= self.duration_minutes <= 1440:
            raise InvalidArgument("start_interval or duration_minutes out of range")
        if not 0 <= self.issued_at < self.expires_at <= self.issued_at + MAX_EVENT_LIFETIME_S:
            raise InvalidArgument(f"event lifetime must be in (0, {MAX_EVENT_LIFETIME_S}] s")
        _check_sig(self.signature)

    def signed_payload(self) -> bytes:
        return canonical(
            self.event_id,
            self.group_id,
            self.action,
            self.side,
            self.start_interval,
            self.duration_minutes,
            self.issued_at,
            self.expires_at,
            self.bits,
            self.radix,
        )

    def digest(self) -> bytes:
        """What group members echo: SHA-256 over the signed payload."""
        return hashlib.sha256(EVENT_CONTEXT + self.signed_payload()).digest()


@message("dr.echo")
@dataclass(frozen=True, slots=True, kw_only=True)
class Echo:
    """A meter's signed statement "I was shown event ``event_id`` with this digest"."""

    event_id: str
    group_id: str
    meter_id: str
    digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        check_id(self.group_id, "group_id")
        check_id(self.meter_id, "meter_id")
        if len(self.digest) != 32:
            raise InvalidArgument("digest must be 32 bytes")
        _check_sig(self.signature)

    def signed_payload(self) -> bytes:
        return canonical(self.event_id, self.group_id, self.meter_id, self.digest)


@message("dr.echoes")
@dataclass(frozen=True, slots=True, kw_only=True)
class EchoBundle:
    """Echoes relayed by the head-end (it cannot forge them: they are meter-signed)."""

    event_id: str
    echoes: tuple[Echo, ...]

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        if len(self.echoes) > 100_000:
            raise InvalidArgument("too many echoes")


@message("dr.offer")
@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """A meter's comparison offer for an event: its one-use key and encrypted digits (meter-signed).

    ``reading_interval`` names the interval whose reading is encrypted: the
    meter's budget is charged on that interval and its day.
    """

    event_id: str
    meter_id: str
    reading_interval: int
    offer: ComparisonOffer
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        check_id(self.meter_id, "meter_id")
        if not 0 <= self.reading_interval < 2**48:
            raise InvalidArgument("reading_interval out of range")
        _check_sig(self.signature)

    def signed_payload(self) -> bytes:
        return canonical(self.event_id, self.meter_id, self.reading_interval, self.offer.digest())


@message("dr.query")
@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonQuery:
    """The head-end's challenge on one meter's offer (head-end-signed)."""

    event_id: str
    meter_id: str
    query_id: int
    issued_at: int
    challenge: ComparisonChallenge
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        check_id(self.meter_id, "meter_id")
        if not 0 <= self.query_id < 2**63 or self.issued_at < 0:
            raise InvalidArgument("query_id or issued_at out of range")
        _check_sig(self.signature)

    def signed_payload(self) -> bytes:
        return canonical(
            self.event_id, self.meter_id, self.query_id, self.issued_at, self.challenge.digest()
        )


@message("dr.answer")
@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonAnswer:
    """A meter's one bit for a query: whether a value of the challenge was zero (meter-signed)."""

    event_id: str
    meter_id: str
    query_id: int
    challenge_digest: bytes
    zero_found: bool
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        check_id(self.meter_id, "meter_id")
        if not 0 <= self.query_id < 2**63:
            raise InvalidArgument("query_id out of range")
        if len(self.challenge_digest) != 32 or not isinstance(self.zero_found, bool):
            raise InvalidArgument("challenge_digest must be 32 bytes and zero_found a bool")
        _check_sig(self.signature)

    def signed_payload(self) -> bytes:
        return canonical(
            self.event_id, self.meter_id, self.query_id, self.challenge_digest, int(self.zero_found)
        )


@message("dr.directive")
@dataclass(frozen=True, slots=True, kw_only=True)
class Directive:
    """An individual directive to one meter on the wrong side of ``T`` (head-end-signed)."""

    event_id: str
    meter_id: str
    action: str
    start_interval: int
    duration_minutes: int
    issued_at: int
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.event_id, "event_id")
        check_id(self.meter_id, "meter_id")
        if self.action not in ACTIONS:
            raise InvalidArgument(f"action must be one of {ACTIONS}")
        if not 0 <= self.start_interval < 2**48 or not 1 <= self.duration_minutes <= 1440:
            raise InvalidArgument("start_interval or duration_minutes out of range")
        if self.issued_at < 0:
            raise InvalidArgument("issued_at must be non-negative")
        _check_sig(self.signature)

    def signed_payload(self) -> bytes:
        return canonical(
            self.event_id,
            self.meter_id,
            self.action,
            self.start_interval,
            self.duration_minutes,
            self.issued_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadInstruction:
    """What the meter hands to the load model (``grid.synthetic.curtailment.apply_directive``)."""

    event_id: str
    action: str
    start_interval: int
    duration_minutes: int
    limit_w: int | None  # the plan's cap (public); never the private threshold
