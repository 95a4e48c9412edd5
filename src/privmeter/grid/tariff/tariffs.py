"""Tariffs: the price of every interval, as exact integers.

What it is for: a :class:`Tariff` answers one question -- what does a kWh
cost in interval ``t`` -- for three kinds of tariff:

* ``"flat"``: one ``price`` for every interval;
* ``"tou"`` (time of use): :class:`TimeOfUseTier` s, each a price for a span
  of local wall-clock minutes on some day types (``weekday``, ``saturday``,
  ``sunday``, ``holiday``), in an IANA ``timezone`` with configurable holiday
  dates.  The tiers of each day type cover every minute exactly once;
* ``"realtime"``: the price of interval ``t`` is the one the utility
  published for ``t`` on its signed :class:`~privmeter.grid.tariff.pricefeed.PriceFeed`
  (``feed_id``, ``feed_key``), optionally restricted to a finite set of
  ``allowed_prices``.  There is no fallback: no published price, no bill.

Units: prices are ints in milli-minor-units per kWh (14.228 p/kWh -> 14228);
an interval is ``floor(unix_seconds / interval_seconds)``.  Energy (Wh) times
price is money in micro-minor-units, exactly.

Rule for time of use: an interval's price is the tier in force at the
interval's *start instant*, read on the local wall clock (so DST is handled by
the zone database: on the spring-forward day the skipped local hour has no
intervals, on the fall-back day the repeated hour is priced twice by the same
tier).  Plans additionally require tier boundaries to fall on interval
boundaries, so no interval straddles two tiers.

Security assumption: none here (plain data); what stops a utility from
billing with another tariff is the digest: :meth:`Tariff.digest` is SHA-256
of a canonical encoding of the tariff's *meaning* (tiers sorted, day types and
holidays normalised), so the same tariff always has the same digest and any
change to a price, tier, zone, holiday or feed changes it.

Guarantee: a constructed :class:`Tariff` is valid (every field checked,
tiers cover each day type exactly once); errors are
:class:`~privmeter.errors.TariffError` whose ``context["field"]`` names the
offending field (``tariff.tiers[2].start_minute``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from privmeter.crypto.signing import VerifyKey
from privmeter.errors import InvalidKey, TariffError
from privmeter.grid.tariff.pricefeed import PriceFeed, canonical_digest, check_identifier

__all__ = [
    "DAY_TYPES",
    "HARD_MAX_PRICE",
    "MINUTES_PER_DAY",
    "TARIFF_KINDS",
    "Tariff",
    "TimeOfUseTier",
    "day_type_of",
]

DAY_TYPES = ("weekday", "saturday", "sunday", "holiday")
TARIFF_KINDS = ("flat", "tou", "realtime")
MINUTES_PER_DAY = 1440
HARD_MAX_PRICE = 2**32  # no plan may declare a higher price bound (see plans.MAX_PRICE_LIMIT)
TARIFF_DIGEST_DOMAIN = "privmeter.tariff/1"
_MAX_NAME = 64
_MAX_TIERS = 1024
_MAX_HOLIDAYS = 10_000
_MAX_ALLOWED_PRICES = 1024


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _err(path: str, expected: str, got: Any) -> TariffError:
    return TariffError(f"{path}: expected {expected}, got {got!r}", field=path)


def _check_price(value: Any, path: str) -> int:
    if not _is_int(value) or not 0 <= value <= HARD_MAX_PRICE:
        raise _err(path, "an int price in [0, 2**32] milli-minor-units/kWh", value)
    return int(value)


def day_type_of(day: _dt.date, holidays: frozenset[_dt.date] = frozenset()) -> str:
    """``holiday`` if ``day`` is listed, else ``weekday`` / ``saturday`` / ``sunday``."""
    if day in holidays:
        return "holiday"
    wd = day.weekday()
    return "weekday" if wd < 5 else ("saturday" if wd == 5 else "sunday")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeOfUseTier:
    """A price for local minutes ``[start_minute, end_minute)`` on ``day_types``.

    ``end_minute`` may be 1440 (midnight at the end of the day).  If
    ``end_minute < start_minute`` the tier wraps midnight: it covers
    ``[start_minute, 1440)`` and ``[0, end_minute)`` of the *same* calendar
    day type.  ``day_types`` is normalised to the order of :data:`DAY_TYPES`.
    """

    name: str
    price: int
    start_minute: int
    end_minute: int
    day_types: tuple[str, ...]

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not 1 <= len(self.name) <= _MAX_NAME
            or not self.name.isprintable()
        ):
            raise _err("name", f"a printable string of 1-{_MAX_NAME} chars", self.name)
        _check_price(self.price, "price")
        if not _is_int(self.start_minute) or not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise _err("start_minute", "an int minute in [0, 1440)", self.start_minute)
        if not _is_int(self.end_minute) or not 0 < self.end_minute <= MINUTES_PER_DAY:
            raise _err("end_minute", "an int minute in (0, 1440]", self.end_minute)
        if self.end_minute == self.start_minute:
            raise _err("end_minute", "a minute different from start_minute", self.end_minute)
        dts = self.day_types
        if not isinstance(dts, tuple | list) or not dts:
            raise _err("day_types", f"a non-empty tuple of {DAY_TYPES}", dts)
        for i, d in enumerate(dts):
            if d not in DAY_TYPES:
                raise _err(f"day_types[{i}]", f"one of {DAY_TYPES}", d)
        if len(set(dts)) != len(dts):
            raise _err("day_types", "no repeated day type", dts)
        object.__setattr__(self, "day_types", tuple(d for d in DAY_TYPES if d in dts))

    def covers(self, minute: int) -> bool:
        """Whether local minute-of-day ``minute`` falls in this tier (ignoring day type)."""
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute

    def boundaries(self) -> tuple[int, int]:
        return self.start_minute, self.end_minute % MINUTES_PER_DAY

    def _canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "price": self.price,
            "start_minute": self.start_minute,
            "end_minute": self.end_minute,
            "day_types": list(self.day_types),
        }


def _tier_key(t: TimeOfUseTier) -> tuple[Any, ...]:
    return (
        tuple(DAY_TYPES.index(d) for d in t.day_types),
        t.start_minute,
        t.end_minute,
        t.name,
        t.price,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Tariff:
    """The price of every interval (see the module docstring for the three kinds).

    Fields by kind -- others must be left at their defaults:

    * flat: ``price``;
    * tou: ``tiers``, ``timezone`` (IANA name), ``holidays`` (ISO dates);
    * realtime: ``feed_id``, ``feed_key`` (hex Ed25519 public key),
      ``allowed_prices`` (optional finite price set).
    """

    kind: str
    price: int | None = None
    tiers: tuple[TimeOfUseTier, ...] = ()
    timezone: str | None = None
    holidays: tuple[str, ...] = ()
    feed_id: str | None = None
    feed_key: str | None = None
    allowed_prices: tuple[int, ...] | None = None
    _lookup: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in TARIFF_KINDS:
            raise _err("tariff.kind", f"one of {TARIFF_KINDS}", self.kind)
        allowed: dict[str, tuple[str, ...]] = {
            "flat": ("price",),
            "tou": ("tiers", "timezone", "holidays"),
            "realtime": ("feed_id", "feed_key", "allowed_prices"),
        }
        defaults = {
            "price": None,
            "tiers": (),
            "timezone": None,
            "holidays": (),
            "feed_id": None,
            "feed_key": None,
            "allowed_prices": None,
        }
        for name, default in defaults.items():
            if name not in allowed[self.kind] and getattr(self, name) != default:
                raise TariffError(
                    f"tariff.{name}: not allowed for a {self.kind!r} tariff "
                    f"(a {self.kind} tariff takes {', '.join(allowed[self.kind])})",
                    field=f"tariff.{name}",
                )
        if self.kind == "flat":
            _check_price(self.price, "tariff.price")
        elif self.kind == "tou":
            self._init_tou()
        else:
            self._init_realtime()

    # -- construction ---------------------------------------------------------------

    def _init_tou(self) -> None:
        tz_name = self.timezone
        if not isinstance(tz_name, str) or not tz_name:
            raise _err("tariff.timezone", "an IANA time zone name such as 'Europe/London'", tz_name)
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise _err("tariff.timezone", "a known IANA time zone name", tz_name) from None
        hol = self.holidays
        if not isinstance(hol, tuple | list) or len(hol) > _MAX_HOLIDAYS:
            raise _err("tariff.holidays", f"a tuple of at most {_MAX_HOLIDAYS} ISO dates", hol)
        dates: set[_dt.date] = set()
        dates_in_order: list[_dt.date] = []
        for i, h in enumerate(hol):
            try:
                d = _dt.date.fromisoformat(h) if isinstance(h, str) and len(h) == 10 else None
            except ValueError:
                d = None
            if d is None:
                raise _err(f"tariff.holidays[{i}]", "an ISO date 'YYYY-MM-DD'", h)
            if d in dates:
                raise _err(f"tariff.holidays[{i}]", "each holiday listed once", h)
            dates.add(d)
            dates_in_order.append(d)
        tiers = self.tiers
        if not isinstance(tiers, tuple | list) or not tiers or len(tiers) > _MAX_TIERS:
            raise _err("tariff.tiers", f"1-{_MAX_TIERS} TimeOfUseTier", tiers)
        owner: dict[str, list[int | None]] = {d: [None] * MINUTES_PER_DAY for d in DAY_TYPES}
        for i, tier in enumerate(tiers):
            if not isinstance(tier, TimeOfUseTier):
                raise _err(f"tariff.tiers[{i}]", "a TimeOfUseTier", tier)
            spans = (
                [(tier.start_minute, tier.end_minute)]
                if tier.start_minute < tier.end_minute
                else [(tier.start_minute, MINUTES_PER_DAY), (0, tier.end_minute)]
            )
            for dtype in tier.day_types:
                slots = owner[dtype]
                for a, b in spans:
                    for m in range(a, b):
                        j = slots[m]
                        if j is not None:
                            raise TariffError(
                                f"tariff.tiers[{i}]: {tier.name!r} overlaps tiers[{j}] "
                                f"{tiers[j].name!r} on {dtype} at {m // 60:02d}:{m % 60:02d}",
                                field=f"tariff.tiers[{i}]",
                            )
                        slots[m] = i
        for dtype in DAY_TYPES:
            for m, j in enumerate(owner[dtype]):
                if j is None:
                    raise TariffError(
                        f"tariff.tiers: no tier covers {dtype} at {m // 60:02d}:{m % 60:02d} "
                        "(the tiers of each day type must cover every minute exactly once)",
                        field="tariff.tiers",
                    )
        table = {
            dt_: tuple(tiers[j].price for j in owner[dt_] if j is not None) for dt_ in DAY_TYPES
        }
        object.__setattr__(self, "tiers", tuple(tiers))
        object.__setattr__(self, "holidays", tuple(d.isoformat() for d in dates_in_order))
        object.__setattr__(self, "_lookup", (tz, frozenset(dates), table))

    def _init_realtime(self) -> None:
        check_identifier(self.feed_id, "tariff.feed_id")
        key = self.feed_key
        if not isinstance(key, str):
            raise _err("tariff.feed_key", "a hex Ed25519 public key (64 hex chars)", key)
        try:
            vk = VerifyKey.from_hex(key)
        except InvalidKey:
            raise _err("tariff.feed_key", "a hex Ed25519 public key (64 hex chars)", key) from None
        object.__setattr__(self, "feed_key", vk.hex())  # canonical lower-case
        ap = self.allowed_prices
        if ap is not None:
            if not isinstance(ap, tuple | list) or not 1 <= len(ap) <= _MAX_ALLOWED_PRICES:
                raise _err("tariff.allowed_prices", f"1-{_MAX_ALLOWED_PRICES} prices or None", ap)
            for i, p in enumerate(ap):
                _check_price(p, f"tariff.allowed_prices[{i}]")
            if len(set(ap)) != len(ap):
                raise _err("tariff.allowed_prices", "each price listed once", ap)
            object.__setattr__(self, "allowed_prices", tuple(sorted(ap)))
        object.__setattr__(self, "_lookup", vk)

    # -- queries ----------------------------------------------------------------------

    @property
    def verify_key(self) -> VerifyKey | None:
        """The feed's public key (realtime), else None."""
        return self._lookup if self.kind == "realtime" else None

    def day_type(self, interval: int, interval_seconds: int) -> str:
        """Local day type of the interval's start (tou only)."""
        tz, holidays, _ = self._tou_lookup()
        local = _dt.datetime.fromtimestamp(interval * interval_seconds, tz)
        return day_type_of(local.date(), holidays)

    def price_at(self, interval: int, interval_seconds: int, feed: PriceFeed | None = None) -> int:
        """Price of ``interval`` in milli-minor-units per kWh.

        Realtime: the price ``feed`` publishes for ``interval`` -- this is a
        lookup only; it checks that the feed is the tariff's (id, interval
        length) but not its signatures or bounds:
        :meth:`privmeter.grid.tariff.plans.Plan.prices_for` does.  Raises
        :class:`TariffError` if the feed is missing, foreign or has no price.
        """
        if not _is_int(interval) or interval < 0:
            raise _err("interval", "a non-negative int", interval)
        if self.kind == "flat":
            return self.price  # type: ignore[return-value]
        if self.kind == "tou":
            tz, holidays, table = self._tou_lookup()
            local = _dt.datetime.fromtimestamp(interval * interval_seconds, tz)
            prices = table[day_type_of(local.date(), holidays)]
            return prices[local.hour * 60 + local.minute]
        self.check_feed_matches(feed, interval_seconds)
        if feed is None:
            raise TariffError("a real-time tariff needs its price feed")
        return feed.price(interval)

    def check_feed_matches(self, feed: PriceFeed | None, interval_seconds: int) -> None:
        """:class:`TariffError` unless ``feed`` is this realtime tariff's feed at ``interval_seconds``."""
        if feed is None:
            raise TariffError(
                f"realtime tariff {self.feed_id!r} needs its price feed",
                field="feed",
                feed_id=self.feed_id,
            )
        if not isinstance(feed, PriceFeed):
            raise _err("feed", "a PriceFeed", type(feed).__name__)
        if feed.feed_id != self.feed_id:
            raise TariffError(
                f"feed: expected feed {self.feed_id!r}, got {feed.feed_id!r}", field="feed.feed_id"
            )
        if feed.interval_seconds != interval_seconds:
            raise TariffError(
                f"feed: expected {interval_seconds}-second intervals, got {feed.interval_seconds}",
                field="feed.interval_seconds",
            )

    def distinct_prices(self) -> tuple[int, ...] | None:
        """The finite set of prices (sorted) for flat and tou; None for realtime.

        (A realtime tariff's ``allowed_prices``, if declared, is the set its
        feed may use; it is exposed as that attribute, not here.)
        """
        if self.kind == "flat":
            return (self.price,)  # type: ignore[return-value]
        if self.kind == "tou":
            return tuple(sorted({t.price for t in self.tiers}))
        return None

    def tier_boundaries(self) -> tuple[int, ...]:
        """Every local minute at which a tou price may change (sorted; empty otherwise)."""
        out: set[int] = set()
        for t in self.tiers:
            out.update(t.boundaries())
        return tuple(sorted(out))

    def canonical(self) -> dict[str, Any]:
        """The canonical (digest) form: only the fields of this kind, normalised."""
        if self.kind == "flat":
            return {"kind": "flat", "price": self.price}
        if self.kind == "tou":
            return {
                "kind": "tou",
                "timezone": self.timezone,
                "holidays": sorted(self.holidays),
                "tiers": [t._canonical() for t in sorted(self.tiers, key=_tier_key)],
            }
        return {
            "kind": "realtime",
            "feed_id": self.feed_id,
            "feed_key": self.feed_key,
            "allowed_prices": None if self.allowed_prices is None else list(self.allowed_prices),
        }

    def digest(self) -> bytes:
        """SHA-256 of :meth:`canonical` (domain ``privmeter.tariff/1``): same tariff, same digest."""
        return canonical_digest(TARIFF_DIGEST_DOMAIN, self.canonical())

    def _tou_lookup(self) -> tuple[ZoneInfo, frozenset[_dt.date], dict[str, tuple[int, ...]]]:
        if self.kind != "tou":
            raise TariffError(f"not a time-of-use tariff (kind {self.kind!r})", field="tariff.kind")
        return self._lookup  # type: ignore[no-any-return]
