"""The signed real-time price feed: one price per interval, published by the utility.

What it is for: a real-time tariff (kind ``"realtime"``) has no price of its
own; its price for interval ``t`` is whatever the utility published for ``t``
on its feed.  Every household must be billed with *the same* published price,
so each entry is signed with the feed's Ed25519 key (declared in the plan as
``feed_key``).  A household that is billed with a price the feed never carried,
or a feed whose signatures do not verify, refuses the bill.

Format: each entry is signed on its own (one 64-byte Ed25519 signature per
interval), over the domain-separated payload::

    context  = b"privmeter.pricefeed/1"
    payload  = len(feed_id) (1 byte) || feed_id (ASCII)
               || interval_seconds (u32 BE) || interval (u64 BE) || price (u64 BE)

so entries can be published one at a time (day-ahead, intraday), merged, and
cut down to the intervals of one bill while staying verifiable.  The JSON file
format (``privmeter.pricefeed/1``) is documented in ``docs/plan-format.md``.

Units: ``price`` is an int in milli-minor-units per kWh (14.228 p/kWh ->
14228); ``interval`` is ``floor(unix_seconds / interval_seconds)``.

Security assumption: Ed25519 is unforgeable (~128-bit security).  The feed key
belongs to the utility, so a signature proves *who published* a price and that
it is the one everybody sees (two different signed prices for one interval
are evidence of equivocation: :meth:`PriceFeed.merge` raises on them); it does
not prove the price is *reasonable* -- that is what the plan's price bounds and
``allowed_prices`` are for (:meth:`privmeter.grid.tariff.plans.Plan.check_tariff`).

Guarantee: a :class:`PriceFeed` is immutable; :meth:`PriceFeed.verify`
succeeds only if every entry carries a valid signature by the given key over
exactly this feed id, interval length, interval and price.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from privmeter.crypto.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from privmeter.errors import (
    ConfigError,
    InvalidArgumentType,
    InvalidSignature,
    TariffError,
    UnsupportedVersion,
)

__all__ = [
    "FEED_FORMAT",
    "FEED_SIGNATURE_CONTEXT",
    "MAX_FEED_ENTRIES",
    "MAX_FEED_PRICE",
    "PriceFeed",
    "PricePoint",
    "canonical_digest",
    "check_identifier",
    "check_interval_seconds",
    "demo_feed_signing_key",
]

FEED_FORMAT = "privmeter.pricefeed/1"
FEED_SIGNATURE_CONTEXT = b"privmeter.pricefeed/1"
MAX_FEED_PRICE = 2**63 - 1  # what the u64 wire field can carry; plans bound prices far lower
MAX_FEED_ENTRIES = 1_000_000  # ~28 years of 15-minute prices: bounds a hostile feed file
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DEMO_SEED_DOMAIN = b"privmeter.demo-feed-key/1\x00"


def canonical_digest(domain: str, obj: Any) -> bytes:
    """SHA-256 of ``domain || 0x00 || canonical JSON of obj``.

    Canonical JSON: keys sorted, no whitespace, ASCII only; values are ints,
    strings, bools, None, lists and dicts (no floats, so the encoding of a
    value is unique).  Used for tariff, plan and feed digests: the digest is
    of the *meaning*, never of the text a file happened to be written in.
    """
    _no_floats(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(domain.encode("ascii") + b"\x00" + text.encode("ascii")).digest()


def _no_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise InvalidArgumentType("canonical encoding takes no floats")
    if isinstance(obj, dict):
        for v in obj.values():
            _no_floats(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _no_floats(v)


def check_interval_seconds(value: Any, field: str, error: type[ConfigError] = TariffError) -> int:
    """Return ``value`` if it is an int that divides a day (86400 s), else raise ``error``."""
    if not _is_int(value) or not 1 <= value <= 86400 or 86400 % value:
        raise error(f"{field}: expected a positive int dividing 86400, got {value!r}", field=field)
    return int(value)


def demo_feed_signing_key(feed_id: str) -> SigningKey:
    """INSECURE: the deterministic demo signing key of feed ``feed_id``.

    Derived from a public seed (SHA-256 of a fixed domain and the feed id), so
    *anyone* can sign with it.  The shipped example plans declare these keys
    so that simulations and the demo can publish prices; a real plan declares
    the utility's real feed key.
    """
    check_identifier(feed_id, "feed_id")
    return SigningKey.from_seed(hashlib.sha256(_DEMO_SEED_DOMAIN + feed_id.encode()).digest())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_identifier(value: Any, field: str, error: type[ConfigError] = TariffError) -> str:
    """Return ``value`` if it is a feed / plan identifier (``[a-z0-9][a-z0-9._-]{0,63}``)."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise error(
            f"{field}: expected 1-64 chars of [a-z0-9._-] starting with a letter or digit, "
            f"got {value!r}",
            field=field,
        )
    return value


def _entry_payload(feed_id: str, interval_seconds: int, interval: int, price: int) -> bytes:
    fid = feed_id.encode("ascii")
    return bytes([len(fid)]) + fid + struct.pack(">IQQ", interval_seconds, interval, price)


@dataclass(frozen=True, slots=True, kw_only=True)
class PricePoint:
    """One published price: ``price`` (milli-minor-units/kWh) for ``interval``.

    ``signature`` is the feed key's Ed25519 signature over the entry (see the
    module docstring); empty for a point that has not been signed yet.
    """

    interval: int
    price: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        if not _is_int(self.interval) or not 0 <= self.interval < 2**63:
            raise TariffError(
                f"price point interval: expected an int in [0, 2**63), got {self.interval!r}",
                field="interval",
            )
        if not _is_int(self.price) or not 0 <= self.price <= MAX_FEED_PRICE:
            raise TariffError(
                f"price point price: expected an int in [0, 2**63), got {self.price!r}",
                field="price",
                interval=self.interval,
            )
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_BYTES):
            raise TariffError(
                f"price point signature: expected {SIGNATURE_BYTES} bytes",
                field="signature",
                interval=self.interval,
            )


class PriceFeed:
    """A signed sequence of per-interval prices (immutable).

    Build one with :meth:`publish` (the utility, holding the feed's signing
    key) or :meth:`from_json` / the constructor (anyone); check it with
    :meth:`verify` before trusting a price.  ``prices`` is a read-only
    ``{interval: price}`` view.
    """

    __slots__ = ("_entries", "_prices", "_verified", "feed_id", "interval_seconds")

    def __init__(
        self, *, feed_id: str, interval_seconds: int, points: Iterable[PricePoint]
    ) -> None:
        self.feed_id = check_identifier(feed_id, "feed_id")
        self.interval_seconds = check_interval_seconds(interval_seconds, "interval_seconds")
        entries: dict[int, PricePoint] = {}
        for p in points:
            if not isinstance(p, PricePoint):
                raise TariffError(
                    f"points: expected PricePoint, got {type(p).__name__}", field="points"
                )
            if not p.signature:
                raise TariffError(
                    f"points: interval {p.interval} carries no signature",
                    field="points",
                    interval=p.interval,
                )
            if p.interval in entries:
                raise TariffError(
                    f"points: interval {p.interval} appears twice",
                    field="points",
                    interval=p.interval,
                )
            entries[p.interval] = p
            if len(entries) > MAX_FEED_ENTRIES:
                raise TariffError(f"points: more than {MAX_FEED_ENTRIES} entries", field="points")
        self._entries: dict[int, PricePoint] = dict(sorted(entries.items()))
        self._prices: Mapping[int, int] = MappingProxyType(
            {t: p.price for t, p in self._entries.items()}
        )
        self._verified: set[bytes] = set()

    # -- publishing ------------------------------------------------------------------

    @classmethod
    def publish(
        cls,
        signing_key: SigningKey,
        feed_id: str,
        interval_seconds: int,
        prices: Mapping[int, int],
    ) -> PriceFeed:
        """Sign ``{interval: price}`` with the feed key and return the feed."""
        check_identifier(feed_id, "feed_id")
        check_interval_seconds(interval_seconds, "interval_seconds")
        points = []
        for t, price in prices.items():
            unsigned = PricePoint(interval=t, price=price)  # validates ranges
            sig = signing_key.sign(
                FEED_SIGNATURE_CONTEXT, _entry_payload(feed_id, interval_seconds, t, price)
            )
            points.append(
                PricePoint(interval=unsigned.interval, price=unsigned.price, signature=sig)
            )
        feed = cls(feed_id=feed_id, interval_seconds=interval_seconds, points=points)
        feed._verified.add(signing_key.verify_key.raw)
        return feed

    # -- reading -----------------------------------------------------------------------

    @property
    def prices(self) -> Mapping[int, int]:
        return self._prices

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, interval: object) -> bool:
        return interval in self._entries

    def points(self) -> Iterator[PricePoint]:
        """The signed entries in interval order."""
        return iter(self._entries.values())

    def price(self, interval: int) -> int:
        """The published price of ``interval``; :class:`TariffError` if the feed has none."""
        p = self._entries.get(interval)
        if p is None:
            raise TariffError(
                f"price feed {self.feed_id!r} has no price for interval {interval!r}",
                feed_id=self.feed_id,
                interval=interval,
            )
        return p.price

    def verify(self, verify_key: VerifyKey) -> None:
        """Raise :class:`~privmeter.errors.InvalidSignature` unless every entry is signed by ``verify_key``.

        The result is remembered per key (the feed is immutable), so checking
        the same feed again is free.
        """
        if verify_key.raw in self._verified:
            return
        for p in self._entries.values():
            try:
                verify_key.verify(
                    FEED_SIGNATURE_CONTEXT,
                    _entry_payload(self.feed_id, self.interval_seconds, p.interval, p.price),
                    p.signature,
                )
            except InvalidSignature:
                raise InvalidSignature(
                    f"price feed {self.feed_id!r}: bad signature on interval {p.interval}",
                    feed_id=self.feed_id,
                    interval=p.interval,
                ) from None
        self._verified.add(verify_key.raw)

    def subset(self, intervals: Iterable[int]) -> PriceFeed:
        """The signed entries for ``intervals`` only (each must be present: :class:`TariffError`)."""
        pts = []
        for t in intervals:
            if t not in self._entries:
                self.price(t)  # raises TariffError naming the interval
            pts.append(self._entries[t])
        out = PriceFeed(feed_id=self.feed_id, interval_seconds=self.interval_seconds, points=pts)
        out._verified.update(self._verified)
        return out

    def merge(self, other: PriceFeed) -> PriceFeed:
        """Union of two publications of the same feed.

        Raises :class:`TariffError` if the feeds differ in id or interval
        length, or if they carry *different* prices for one interval (if both
        verify, that pair is signed evidence that the utility equivocated).
        """
        if (other.feed_id, other.interval_seconds) != (self.feed_id, self.interval_seconds):
            raise TariffError(
                f"cannot merge feed {other.feed_id!r}/{other.interval_seconds}s into "
                f"{self.feed_id!r}/{self.interval_seconds}s",
                field="feed_id",
            )
        merged = dict(self._entries)
        for t, p in other._entries.items():
            mine = merged.get(t)
            if mine is not None and mine.price != p.price:
                raise TariffError(
                    f"price feed {self.feed_id!r} carries two prices for interval {t}: "
                    f"{mine.price} and {p.price} (equivocation)",
                    feed_id=self.feed_id,
                    interval=t,
                )
            merged.setdefault(t, p)
        out = PriceFeed(
            feed_id=self.feed_id, interval_seconds=self.interval_seconds, points=merged.values()
        )
        out._verified.update(self._verified & other._verified)
        return out

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding of (feed id, interval length, prices).

        Signatures are not part of it: two feeds with the same prices have the
        same digest, whoever's copy it is.
        """
        return canonical_digest(
            FEED_FORMAT,
            {
                "feed_id": self.feed_id,
                "interval_seconds": self.interval_seconds,
                "prices": [[t, p] for t, p in self._prices.items()],
            },
        )

    # -- files -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FEED_FORMAT,
            "feed_id": self.feed_id,
            "interval_seconds": self.interval_seconds,
            "entries": [[p.interval, p.price, p.signature.hex()] for p in self._entries.values()],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Any) -> PriceFeed:
        if not isinstance(d, dict):
            raise TariffError("price feed: expected a JSON object", field="")
        if d.get("format") != FEED_FORMAT:
            raise UnsupportedVersion(
                f"price feed: expected format {FEED_FORMAT!r}, got {d.get('format')!r}"
            )
        extra = set(d) - {"format", "feed_id", "interval_seconds", "entries"}
        if extra:
            raise TariffError(f"price feed: unknown keys {sorted(extra)!r}", field=sorted(extra)[0])
        entries = d.get("entries")
        if not isinstance(entries, list):
            raise TariffError(f"entries: expected a list, got {entries!r}", field="entries")
        if len(entries) > MAX_FEED_ENTRIES:
            raise TariffError(f"entries: more than {MAX_FEED_ENTRIES}", field="entries")
        points = []
        for i, e in enumerate(entries):
            if (
                not isinstance(e, list)
                or len(e) != 3
                or not _is_int(e[0])
                or not _is_int(e[1])
                or not isinstance(e[2], str)
                or len(e[2]) != 2 * SIGNATURE_BYTES
            ):
                raise TariffError(
                    f"entries[{i}]: expected [interval, price, 128 hex chars], got {e!r:.200}",
                    field=f"entries[{i}]",
                )
            try:
                sig = bytes.fromhex(e[2])
            except ValueError:
                raise TariffError(
                    f"entries[{i}]: signature is not hex", field=f"entries[{i}]"
                ) from None
            points.append(PricePoint(interval=e[0], price=e[1], signature=sig))
        return cls(
            feed_id=d.get("feed_id", ""),
            interval_seconds=d.get("interval_seconds", 0),
            points=points,
        )

    @classmethod
    def from_json(cls, s: str | bytes) -> PriceFeed:
        try:
            d = json.loads(s)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TariffError(f"price feed: not JSON ({exc})", field="") from None
        return cls.from_dict(d)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PriceFeed):
            return NotImplemented
        return (self.feed_id, self.interval_seconds, self._entries) == (
            other.feed_id,
            other.interval_seconds,
            other._entries,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        span = (
            f"{next(iter(self._entries))}..{next(reversed(self._entries))}"
            if self._entries
            else "empty"
        )
        return f"PriceFeed({self.feed_id!r}, {self.interval_seconds}s, {len(self)} prices, {span})"
