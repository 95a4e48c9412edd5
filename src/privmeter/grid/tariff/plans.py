"""Electricity plans: tariff, price bounds, fixed charges, demand response, privacy budget.

What it is for: a :class:`Plan` is the contract between a household and its
utility, written as a TOML file (format version :data:`PLAN_FORMAT_VERSION`,
schema in ``docs/plan-format.md``).  It says how every interval is priced
(:class:`~privmeter.grid.tariff.tariffs.Tariff`: flat, time of use or real time from
a signed :class:`~privmeter.grid.tariff.pricefeed.PriceFeed`), the bounds every price
must respect, the standing charge, the demand-response terms, and the privacy
budget the household's meter enforces (comparisons per interval and day,
group sizes...).  Protocols read their limits from here.

Units (binding): energy int Wh per interval (import +, export -); prices int
milli-minor-units per kWh; money int micro-minor-units (Wh x price); standing
charge int milli-minor-units per day; interval = floor(unix_s / interval_s).
Every computation is exact integer arithmetic.

Security assumption: the utility publishes one plan and one price feed for
everybody and may try to bill with something else, or with prices chosen to
make the decrypted bill reveal individual readings (price_t = 2^(20t) turns
the bill into a concatenation of the readings).  :meth:`Plan.check_tariff` is
the household's defence: the tariff must be the plan's (same digest), every
price must lie in ``[min_price, max_price]`` with ``max_price <= 2**32``
(default 2**24), a real-time price must carry a valid signature of the plan's
feed key and be one of ``allowed_prices`` when declared.  The bound is what
limits encoding: a bill over readings totalling E Wh can take at most about
``max_price * E`` distinct values, so it carries at most
``log2(max_price * E)`` bits whatever the prices (about 42 bits for a month at
2**24), instead of 20 bits *per reading*; a small ``allowed_prices`` set
(lcl-dtou: three prices) limits it much further.

Guarantee: a constructed :class:`Plan` is internally consistent (all prices
within its bounds, tiers aligned to its intervals).  Reading a plan file
(:func:`~privmeter.grid.tariff.plan_toml.parse_plan`, ``load_plan``,
``builtin_plan``) is :mod:`privmeter.grid.tariff.plan_toml`'s job; its errors are
:class:`~privmeter.errors.PlanError` / :class:`~privmeter.errors.TariffError`
whose message starts with the source and the field path (``plan.max_price``,
``tariff.tiers[1].start``) and whose ``context["field"]`` is that path;
unknown keys are errors (typos never pass silently).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from privmeter.errors import (
    ConfigError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidSignature,
    PlanError,
    TariffError,
    TariffRejected,
)
from privmeter.grid.tariff.pricefeed import (
    PriceFeed,
    PricePoint,
    canonical_digest,
    check_identifier,
    check_interval_seconds,
    demo_feed_signing_key,
)
from privmeter.grid.tariff.tariffs import (
    DAY_TYPES,
    HARD_MAX_PRICE,
    MINUTES_PER_DAY,
    Tariff,
    TimeOfUseTier,
)

__all__ = [
    "DAY_TYPES",
    "DEFAULT_MAX_PRICE",
    "MAX_POWER_W",
    "MAX_PRICE_LIMIT",
    "PLAN_FORMAT_VERSION",
    "DemandResponse",
    "Plan",
    "PriceFeed",
    "PricePoint",
    "PrivacyBudget",
    "Tariff",
    "TimeOfUseTier",
    "demo_feed_signing_key",
]

PLAN_FORMAT_VERSION = 1
DEFAULT_MAX_PRICE = (
    2**24
)  # 167.77 major units/kWh: far above any retail price, small enough to bound leakage
MAX_PRICE_LIMIT = (
    HARD_MAX_PRICE  # 2**32: no plan may declare more (the bill would carry too many bits)
)
# The largest |average power| a bill accounts for in one interval: 2**23 W = 8.4 MW, the range of
# the comparison's 24-bit signed readings; far above any household or small-business connection.
MAX_POWER_W = 2**23
MAX_STANDING_CHARGE = 2**40  # milli-minor-units per day; sanity bound
PLAN_DIGEST_DOMAIN = "privmeter.plan/1"
BILLING_DIGEST_DOMAIN = "privmeter.billing-schedule/1"
_CURRENCY_RE = re.compile(r"[A-Z]{3}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _err(cls: type[ConfigError], path: str, expected: str, got: Any) -> ConfigError:
    return cls(f"{path}: expected {expected}, got {got!r}", field=path)


def _int_in(v: Any, lo: int, hi: int, path: str, cls: type[ConfigError] = PlanError) -> int:
    if not _is_int(v) or not lo <= v <= hi:
        raise _err(cls, path, f"an int in [{lo}, {hi}]", v)
    return int(v)


def _check_tz(name: Any, path: str, cls: type[ConfigError]) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise _err(cls, path, "an IANA time zone name such as 'Europe/London'", name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _err(cls, path, "a known IANA time zone name", name) from None


# -- plan sections ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandResponse:
    """Demand-response terms, applied during an event the utility declares.

    ``cap_w``: the household's power cap during an event (W), i.e.
    :meth:`cap_wh` Wh per interval.  ``penalty_price``: charged per Wh above
    the cap, ``rebate_price``: credited per Wh of headroom below it (both
    milli-minor-units/kWh, on top of the tariff).  ``max_event_minutes``: the
    longest event the plan allows.  :meth:`event_charge` is the plaintext
    reference the encrypted billing reproduces.
    """

    cap_w: int
    penalty_price: int
    rebate_price: int
    max_event_minutes: int

    def __post_init__(self) -> None:
        _int_in(self.cap_w, 1, 2**31, "demand_response.cap_w")
        _int_in(self.penalty_price, 0, HARD_MAX_PRICE, "demand_response.penalty_price")
        _int_in(self.rebate_price, 0, HARD_MAX_PRICE, "demand_response.rebate_price")
        _int_in(self.max_event_minutes, 1, MINUTES_PER_DAY, "demand_response.max_event_minutes")

    def cap_wh(self, interval_seconds: int) -> int:
        """The cap as energy per interval: ``floor(cap_w * interval_seconds / 3600)`` Wh."""
        return self.cap_w * interval_seconds // 3600

    def event_charge(self, energy_wh: int, interval_seconds: int) -> int:
        """Extra money (micro-minor-units, negative = rebate) for one event interval.

        ``penalty_price * max(0, x - cap) - rebate_price * max(0, cap - max(x, 0))``
        with ``cap = cap_wh(interval_seconds)``: export earns no more rebate
        than zero consumption does.
        """
        cap = self.cap_wh(interval_seconds)
        if energy_wh > cap:
            return self.penalty_price * (energy_wh - cap)
        return -self.rebate_price * (cap - max(energy_wh, 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacyBudget:
    """How much the utility may learn about one household, enforced by its meter.

    See ``docs/plan-format.md`` for why each field exists.
    """

    comparisons_per_interval: int = 1
    comparisons_per_day: int = 4
    same_threshold_for_group: bool = True
    min_group_size: int = 5
    min_survivors: int = 5
    max_membership_changes_per_day: int = 2

    def __post_init__(self) -> None:
        _int_in(self.comparisons_per_interval, 0, 64, "privacy.comparisons_per_interval")
        _int_in(self.comparisons_per_day, 0, 86400, "privacy.comparisons_per_day")
        if self.comparisons_per_interval > self.comparisons_per_day:
            raise PlanError(
                "privacy.comparisons_per_interval: expected at most comparisons_per_day "
                f"({self.comparisons_per_day}), got {self.comparisons_per_interval!r}",
                field="privacy.comparisons_per_interval",
            )
        if not isinstance(self.same_threshold_for_group, bool):
            raise _err(
                PlanError,
                "privacy.same_threshold_for_group",
                "a bool",
                self.same_threshold_for_group,
            )
        # 3: with 2 members each learns the other's reading from the total
        _int_in(self.min_group_size, 3, 1_000_000, "privacy.min_group_size")
        _int_in(self.min_survivors, 3, self.min_group_size, "privacy.min_survivors")
        _int_in(
            self.max_membership_changes_per_day,
            0,
            1_000_000,
            "privacy.max_membership_changes_per_day",
        )


# -- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One electricity plan (see the module docstring; schema in docs/plan-format.md)."""

    plan_id: str
    name: str
    currency: str
    interval_seconds: int
    tariff: Tariff
    min_price: int = 0
    max_price: int = DEFAULT_MAX_PRICE
    standing_charge_per_day: int = 0  # milli-minor-units per day
    demand_response: DemandResponse | None = None
    privacy: PrivacyBudget = field(default_factory=PrivacyBudget)
    timezone: str = "UTC"  # the billing calendar (days of the standing charge)
    description: str = ""
    _tz: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_identifier(self.plan_id, "plan.id", PlanError)
        if (
            not isinstance(self.name, str)
            or not 1 <= len(self.name) <= 200
            or not self.name.isprintable()
        ):
            raise _err(PlanError, "plan.name", "a printable string of 1-200 chars", self.name)
        if not isinstance(self.description, str) or len(self.description) > 4000:
            raise _err(
                PlanError, "plan.description", "a string of at most 4000 chars", self.description
            )
        if not isinstance(self.currency, str) or not _CURRENCY_RE.fullmatch(self.currency):
            raise _err(PlanError, "plan.currency", "an ISO 4217 code such as 'GBP'", self.currency)
        check_interval_seconds(self.interval_seconds, "plan.interval_seconds", PlanError)
        object.__setattr__(self, "_tz", _check_tz(self.timezone, "plan.timezone", PlanError))
        _int_in(self.min_price, 0, MAX_PRICE_LIMIT, "plan.min_price")
        _int_in(self.max_price, 0, MAX_PRICE_LIMIT, "plan.max_price")
        if self.min_price > self.max_price:
            raise _err(
                PlanError,
                "plan.max_price",
                f"at least min_price ({self.min_price})",
                self.max_price,
            )
        _int_in(
            self.standing_charge_per_day, 0, MAX_STANDING_CHARGE, "plan.standing_charge_per_day"
        )
        if not isinstance(self.tariff, Tariff):
            raise _err(PlanError, "tariff", "a Tariff", type(self.tariff).__name__)
        if self.demand_response is not None and not isinstance(
            self.demand_response, DemandResponse
        ):
            raise _err(
                PlanError, "demand_response", "a DemandResponse or None", self.demand_response
            )
        if not isinstance(self.privacy, PrivacyBudget):
            raise _err(PlanError, "privacy", "a PrivacyBudget", self.privacy)
        self._check_tariff_fits()
        dr = self.demand_response
        if dr is not None:
            for name in ("penalty_price", "rebate_price"):
                if getattr(dr, name) > self.max_price:
                    raise _err(
                        PlanError,
                        f"demand_response.{name}",
                        f"at most max_price ({self.max_price})",
                        getattr(dr, name),
                    )

    def _check_tariff_fits(self) -> None:
        t = self.tariff
        lo, hi = self.min_price, self.max_price
        bound = f"a price within the plan's bounds [{lo}, {hi}]"
        if t.kind == "flat":
            if not lo <= t.price <= hi:  # type: ignore[operator]
                raise _err(TariffError, "tariff.price", bound, t.price)
        elif t.kind == "tou":
            if 3600 % self.interval_seconds:
                raise _err(
                    PlanError,
                    "plan.interval_seconds",
                    "a divisor of 3600 for a time-of-use tariff",
                    self.interval_seconds,
                )
            for i, tier in enumerate(t.tiers):
                if not lo <= tier.price <= hi:
                    raise _err(TariffError, f"tariff.tiers[{i}].price", bound, tier.price)
                for name in ("start_minute", "end_minute"):
                    m = getattr(tier, name)
                    if (m * 60) % self.interval_seconds:
                        raise _err(
                            TariffError,
                            f"tariff.tiers[{i}].{name}",
                            f"a tier boundary on an interval boundary ({self.interval_seconds} s)",
                            f"{m // 60:02d}:{m % 60:02d}",
                        )
        elif t.allowed_prices is not None:
            for i, p in enumerate(t.allowed_prices):
                if not lo <= p <= hi:
                    raise _err(TariffError, f"tariff.allowed_prices[{i}]", bound, p)

    # -- the household's checks ----------------------------------------------------------

    def check_tariff(
        self,
        tariff: Tariff,
        feed: PriceFeed | None = None,
        intervals: Iterable[int] | None = None,
    ) -> None:
        """Refuse (:class:`~privmeter.errors.TariffRejected`) a tariff other than this plan's.

        Checks, in order: every price of ``tariff`` lies within the plan's
        bounds; ``tariff`` is the plan's tariff (same digest); for a realtime
        tariff, ``feed`` is present, is the plan's feed (id, interval length),
        every entry verifies under the plan's feed key, and for each of
        ``intervals`` (default: every interval in the feed) the feed has a
        price, within bounds and in ``allowed_prices`` if declared.
        """
        if not isinstance(tariff, Tariff):
            raise TariffRejected(f"expected a Tariff, got {type(tariff).__name__}")
        prices = tariff.distinct_prices() or ()
        for p in (*prices, *(tariff.allowed_prices or ())):
            if not self.min_price <= p <= self.max_price:
                raise TariffRejected(
                    f"tariff price {p} outside the plan's bounds [{self.min_price}, {self.max_price}]",
                    plan_id=self.plan_id,
                )
        if tariff.digest() != self.tariff.digest():
            raise TariffRejected(
                f"tariff differs from the one plan {self.plan_id!r} publishes "
                f"(digest {tariff.digest().hex()[:16]}..., expected {self.tariff.digest().hex()[:16]}...)",
                plan_id=self.plan_id,
            )
        if tariff.kind == "realtime":
            if intervals is None:
                intervals = feed.prices.keys() if isinstance(feed, PriceFeed) else ()
            self.prices_for(intervals, feed)

    def prices_for(self, intervals: Iterable[int], feed: PriceFeed | None = None) -> dict[int, int]:
        """``{interval: price}`` for ``intervals``, every price checked against the plan.

        For a realtime plan the feed must verify under the plan's key, carry
        every interval, and stay within bounds / ``allowed_prices``; anything
        else raises :class:`~privmeter.errors.TariffRejected`.
        """
        t = self.tariff
        ivs = list(intervals)
        for iv in ivs:
            if not _is_int(iv) or iv < 0:
                raise InvalidArgumentType(f"intervals must be non-negative ints, got {iv!r}")
        if t.kind != "realtime":
            return {iv: t.price_at(iv, self.interval_seconds) for iv in ivs}
        try:
            t.check_feed_matches(feed, self.interval_seconds)
            if feed is None or t.verify_key is None:
                raise TariffError("a real-time tariff needs its price feed and the feed's key")
            feed.verify(t.verify_key)
        except (TariffError, InvalidSignature) as exc:
            raise TariffRejected(f"price feed refused: {exc}", plan_id=self.plan_id) from exc
        allowed = frozenset(t.allowed_prices) if t.allowed_prices is not None else None
        table = feed.prices
        out: dict[int, int] = {}
        for iv in ivs:
            p = table.get(iv)
            if p is None:
                raise TariffRejected(
                    f"price feed {feed.feed_id!r} has no price for interval {iv}",
                    plan_id=self.plan_id,
                    interval=iv,
                )
            if not self.min_price <= p <= self.max_price:
                raise TariffRejected(
                    f"feed price {p} for interval {iv} outside the plan's bounds "
                    f"[{self.min_price}, {self.max_price}]",
                    plan_id=self.plan_id,
                    interval=iv,
                )
            if allowed is not None and p not in allowed:
                raise TariffRejected(
                    f"feed price {p} for interval {iv} is not one of the plan's allowed prices "
                    f"{sorted(allowed)}",
                    plan_id=self.plan_id,
                    interval=iv,
                )
            out[iv] = p
        return out

    # -- money -------------------------------------------------------------------------

    def energy_charge(self, readings: Mapping[int, int], feed: PriceFeed | None = None) -> int:
        """``sum(x_t * price_t)`` over ``{interval: Wh}``: micro-minor-units, exact.

        Prices come from :meth:`prices_for` (so a realtime feed is verified
        and bounded first).  Export (negative Wh) is credited at the same price.
        """
        for t, x in readings.items():
            if not _is_int(x):
                raise InvalidArgumentType(f"reading for interval {t!r} must be int Wh, got {x!r}")
        prices = self.prices_for(readings.keys(), feed)
        return sum(x * prices[t] for t, x in readings.items())

    def days_touched(self, intervals: range) -> int:
        """Number of local calendar days (plan timezone) that ``[start, end)`` of the range overlaps."""
        if not isinstance(intervals, range) or intervals.step != 1:
            raise InvalidArgumentType(f"intervals must be a range with step 1, got {intervals!r}")
        if len(intervals) == 0:
            return 0
        if intervals.start < 0:
            raise InvalidArgument(f"intervals must be non-negative, got {intervals!r}")
        s = intervals.start * self.interval_seconds
        e = intervals.stop * self.interval_seconds - 1  # last second inside the span
        first = _dt.datetime.fromtimestamp(s, self._tz).date()
        last = _dt.datetime.fromtimestamp(e, self._tz).date()
        return (last - first).days + 1

    def fixed_charge(self, intervals: range) -> int:
        """Standing charge for ``intervals``, micro-minor-units.

        Rule: ``standing_charge_per_day * 1000`` for every local calendar day
        (in the plan's ``timezone``) that the span from the start of the first
        interval to the end of the last one overlaps, however little.  Bill
        periods that start and end at local midnight therefore charge each day
        exactly once; two periods sharing a day both charge it.
        """
        return self.days_touched(intervals) * self.standing_charge_per_day * 1000

    def record_bound_wh(self) -> int:
        """The largest |Wh| one billing record of this plan can carry.

        An energy record is one interval's net energy, ``|x| <= MAX_POWER_W *
        interval_seconds / 3600`` (rounded up); a ``dr_excess`` amount is at
        most that too, and a ``dr_rebate`` amount at most the cap
        (:meth:`DemandResponse.cap_wh`).
        """
        x = -(-MAX_POWER_W * self.interval_seconds // 3600)
        dr = self.demand_response
        return max(x, dr.cap_wh(self.interval_seconds)) if dr is not None else x

    def bill_bounds(self, intervals: range, record_count: int) -> tuple[int, int]:
        """``(lo, hi)``: every bill over ``intervals`` made of ``record_count`` records lies in ``[lo, hi]``.

        A bill is ``fixed_charge(intervals) + sum(x_i * p_i)`` over its
        records, with ``|x_i| <= record_bound_wh()`` and ``|p_i| <= max_price``
        (tariff prices lie in ``[min_price, max_price]``, ``min_price >= 0``;
        the penalty and rebate prices are at most ``max_price``, checked when
        the plan is built), so ``|sum| <= record_count * record_bound_wh() *
        max_price``.  A month of 15-minute records at the default bounds is
        within about 2**58: a "proven" bill of thousands of bits (a
        garbage decryption) is outside.
        """
        if not _is_int(record_count) or record_count < 0:
            raise InvalidArgument(f"record_count must be a non-negative int, got {record_count!r}")
        fixed = self.fixed_charge(intervals)
        span = record_count * self.record_bound_wh() * self.max_price
        return fixed - span, fixed + span

    def total_charge(
        self, readings: Mapping[int, int], intervals: range, feed: PriceFeed | None = None
    ) -> int:
        """Energy charge of ``readings`` (which must lie in ``intervals``) plus the fixed charge."""
        outside = [t for t in readings if t not in intervals]
        if outside:
            raise InvalidArgument(f"readings outside {intervals!r}: {outside[:5]!r}")
        return self.energy_charge(readings, feed) + self.fixed_charge(intervals)

    # -- digests -----------------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        dr = self.demand_response
        p = self.privacy
        return {
            "version": PLAN_FORMAT_VERSION,
            "plan_id": self.plan_id,
            "name": self.name,
            "description": self.description,
            "currency": self.currency,
            "interval_seconds": self.interval_seconds,
            "timezone": self.timezone,
            "min_price": self.min_price,
            "max_price": self.max_price,
            "standing_charge_per_day": self.standing_charge_per_day,
            "tariff": self.tariff.canonical(),
            "demand_response": None
            if dr is None
            else {
                "cap_w": dr.cap_w,
                "penalty_price": dr.penalty_price,
                "rebate_price": dr.rebate_price,
                "max_event_minutes": dr.max_event_minutes,
            },
            "privacy": {
                "comparisons_per_interval": p.comparisons_per_interval,
                "comparisons_per_day": p.comparisons_per_day,
                "same_threshold_for_group": p.same_threshold_for_group,
                "min_group_size": p.min_group_size,
                "min_survivors": p.min_survivors,
                "max_membership_changes_per_day": p.max_membership_changes_per_day,
            },
        }

    def digest(self) -> bytes:
        """SHA-256 of :meth:`canonical` (domain ``privmeter.plan/1``), not of any file text."""
        return canonical_digest(PLAN_DIGEST_DOMAIN, self.canonical())

    def billing_digest(self, intervals: range, feed: PriceFeed | None = None) -> bytes:
        """Digest of *the prices a bill over ``intervals`` uses*: plan digest, range and,
        for a realtime plan, the feed's prices over the range (checked as in :meth:`prices_for`).

        A settlement statement carries it; the household recomputes it from
        its own copy of the published plan and feed and refuses on mismatch.
        """
        if not isinstance(intervals, range) or intervals.step != 1:
            raise InvalidArgumentType(f"intervals must be a range with step 1, got {intervals!r}")
        prices = None
        if self.tariff.kind == "realtime":
            checked = self.prices_for(intervals, feed)
            prices = [[t, p] for t, p in sorted(checked.items())]
        return canonical_digest(
            BILLING_DIGEST_DOMAIN,
            {
                "plan": self.digest().hex(),
                "start": intervals.start,
                "stop": intervals.stop,
                "prices": prices,
            },
        )
