"""Time-of-use pricing: tier boundaries, day types, holidays, DST days; energy charge properties.

The reference implementations here are deliberately independent of
``tariffs.py``: local time comes from pandas' time-zone conversion, and tier
membership is recomputed from the tier's fields.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.grid.tariff.plan_toml import parse_plan
from privmeter.grid.tariff.plans import (
    DAY_TYPES,
    Plan,
    PriceFeed,
    Tariff,
    TimeOfUseTier,
    demo_feed_signing_key,
)

LONDON = ZoneInfo("Europe/London")
ALL_DAYS = ("weekday", "saturday", "sunday", "holiday")
T2020 = 1_577_836_800  # 2020-01-01T00:00Z
T2030 = 1_893_456_000


def _local_iv(iso_local: str, seconds: int = 900) -> int:
    return int(dt.datetime.fromisoformat(iso_local).replace(tzinfo=LONDON).timestamp()) // seconds


def _utc_iv(iso_utc: str, seconds: int = 900) -> int:
    return int(dt.datetime.fromisoformat(iso_utc).replace(tzinfo=dt.UTC).timestamp()) // seconds


def _reference_price(tariff: Tariff, interval: int, seconds: int) -> int:
    """Price by brute force: pandas local time, explicit day-type and tier tests."""
    ts = pd.Timestamp(interval * seconds, unit="s", tz="UTC").tz_convert(tariff.timezone)
    day = ts.date()
    if day.isoformat() in tariff.holidays:
        dtype = "holiday"
    else:
        dtype = {5: "saturday", 6: "sunday"}.get(day.weekday(), "weekday")
    m = ts.hour * 60 + ts.minute
    hits = []
    for t in tariff.tiers:
        s, e = t.start_minute, t.end_minute
        inside = s <= m < e if s < e else (m >= s or m < e)
        if dtype in t.day_types and inside:
            hits.append(t.price)
    assert len(hits) == 1
    return hits[0]


def _plan(tariff: Tariff, seconds: int = 900, **kw: int) -> Plan:
    return Plan(
        plan_id="t",
        name="t",
        currency="GBP",
        interval_seconds=seconds,
        tariff=tariff,
        timezone="Europe/London",
        **kw,
    )


# -- fixed scenarios ---------------------------------------------------------------------

BASE_TOU = """\
version = 1
[plan]
id = "peak"
name = "Peak"
currency = "GBP"
interval_seconds = 900
timezone = "Europe/London"
[tariff]
kind = "tou"
holidays = ["2024-12-25"]
[[tariff.tiers]]
name = "peak"
price = 40000
start = "16:00"
end = "19:00"
days = ["weekday"]
[[tariff.tiers]]
name = "standard"
price = 25000
start = "19:00"
end = "16:00"
days = ["weekday"]
[[tariff.tiers]]
name = "weekend"
price = 15000
start = "00:00"
end = "00:00"
days = ["saturday", "sunday", "holiday"]
"""


@pytest.mark.parametrize(
    ("local", "price", "day_type"),
    [
        ("2024-12-24T15:45", 25000, "weekday"),  # Tuesday, last standard interval
        ("2024-12-24T16:00", 40000, "weekday"),  # first peak interval
        ("2024-12-24T18:45", 40000, "weekday"),  # last peak interval
        ("2024-12-24T19:00", 25000, "weekday"),
        ("2024-12-24T00:00", 25000, "weekday"),  # the wrapping tier after midnight
        ("2024-12-25T17:00", 15000, "holiday"),  # Wednesday, but a holiday
        ("2024-12-26T17:00", 40000, "weekday"),  # not listed: an ordinary Thursday
        ("2024-12-28T17:00", 15000, "saturday"),
        ("2024-12-29T17:00", 15000, "sunday"),
        ("2024-07-01T16:00", 40000, "weekday"),  # summer: 16:00 BST is 15:00 UTC
        ("2024-07-01T15:45", 25000, "weekday"),
    ],
)
def test_tier_boundaries_on_the_local_clock(local: str, price: int, day_type: str) -> None:
    tariff = parse_plan(BASE_TOU).tariff
    iv = _local_iv(local)
    assert tariff.price_at(iv, 900) == price
    assert tariff.day_type(iv, 900) == day_type
    assert _reference_price(tariff, iv, 900) == price


def _dst_tariff() -> Tariff:
    """1111 during local 01:00-02:00 (the hour that DST skips or repeats), 2222 otherwise."""
    return Tariff(
        kind="tou",
        timezone="Europe/London",
        tiers=(
            TimeOfUseTier(
                name="odd-hour", price=1111, start_minute=60, end_minute=120, day_types=ALL_DAYS
            ),
            TimeOfUseTier(
                name="rest", price=2222, start_minute=120, end_minute=60, day_types=ALL_DAYS
            ),
        ),
    )


@pytest.mark.parametrize(
    ("day", "odd_intervals", "day_intervals"),
    [("2024-03-30", 4, 96), ("2024-03-31", 0, 92), ("2024-10-27", 8, 100), ("2024-10-28", 4, 96)],
)
def test_dst_days_in_london(day: str, odd_intervals: int, day_intervals: int) -> None:
    """Spring forward (2024-03-31): local 01:00-02:00 does not exist, so no interval has
    its price; fall back (2024-10-27): it happens twice, so eight intervals have it."""
    tariff = _dst_tariff()
    d = dt.date.fromisoformat(day)
    start = int(dt.datetime.combine(d, dt.time(0), LONDON).timestamp()) // 900
    stop = int(dt.datetime.combine(d + dt.timedelta(days=1), dt.time(0), LONDON).timestamp()) // 900
    assert stop - start == day_intervals
    count = sum(1 for t in range(start, stop) if tariff.price_at(t, 900) == 1111)
    assert count == odd_intervals


def test_dst_exact_instants() -> None:
    tariff = _dst_tariff()
    # spring: 00:45 GMT is the last interval before the jump, the next starts 02:00 BST
    assert tariff.price_at(_utc_iv("2024-03-31T00:45:00"), 900) == 2222
    assert tariff.price_at(_utc_iv("2024-03-31T01:00:00"), 900) == 2222
    # autumn: 00:00 UTC = 01:00 BST (first pass), 01:00 UTC = 01:00 GMT (second pass)
    assert tariff.price_at(_utc_iv("2024-10-27T00:00:00"), 900) == 1111
    assert tariff.price_at(_utc_iv("2024-10-27T01:45:00"), 900) == 1111
    assert tariff.price_at(_utc_iv("2024-10-27T02:00:00"), 900) == 2222
    for t in range(_utc_iv("2024-03-30T20:00:00"), _utc_iv("2024-04-01T00:00:00")):
        assert tariff.price_at(t, 900) == _reference_price(tariff, t, 900)
    for t in range(_utc_iv("2024-10-26T20:00:00"), _utc_iv("2024-10-28T00:00:00")):
        assert tariff.price_at(t, 900) == _reference_price(tariff, t, 900)


def test_gmt_all_year_economy7_variant() -> None:
    text = (builtin_plan_text := _economy7_text()).replace(
        'timezone = "Europe/London"\nholidays', 'timezone = "Etc/GMT"\nholidays'
    )
    assert text != builtin_plan_text
    e7_gmt = parse_plan(text).tariff
    # 00:30 GMT = 01:30 BST: night starts an hour later on the local clock in summer
    assert e7_gmt.price_at(_local_iv("2024-07-01T00:30"), 900) == 31250
    assert e7_gmt.price_at(_local_iv("2024-07-01T01:30"), 900) == 14500
    assert e7_gmt.price_at(_local_iv("2024-01-08T00:30"), 900) == 14500


def _economy7_text() -> str:
    from importlib import resources

    return (resources.files("privmeter") / "data" / "plans" / "economy7.toml").read_text()


# -- properties ----------------------------------------------------------------------------


@st.composite
def tou_tariffs(draw: st.DrawFn) -> Tariff:
    tiers = []
    groups = draw(
        st.sampled_from(
            [
                (ALL_DAYS,),
                (("weekday",), ("saturday", "sunday", "holiday")),
                (("weekday", "saturday"), ("sunday",), ("holiday",)),
            ]
        )
    )
    for g, day_types in enumerate(groups):
        cuts = sorted(draw(st.sets(st.integers(0, 95), min_size=1, max_size=5)))
        bounds = [c * 15 for c in cuts]
        for i, s in enumerate(bounds):
            e = bounds[(i + 1) % len(bounds)] or 1440
            if len(bounds) == 1:
                s, e = (s, s + 1440) if s == 0 else (s, s)  # one tier for the whole day
                if e == s:  # wrap-around whole day is not expressible; split at midnight
                    tiers.append(
                        TimeOfUseTier(
                            name=f"g{g}a",
                            price=draw(st.integers(0, 2**24)),
                            start_minute=s,
                            end_minute=1440,
                            day_types=day_types,
                        )
                    )
                    tiers.append(
                        TimeOfUseTier(
                            name=f"g{g}b",
                            price=draw(st.integers(0, 2**24)),
                            start_minute=0,
                            end_minute=s,
                            day_types=day_types,
                        )
                    )
                    continue
            tiers.append(
                TimeOfUseTier(
                    name=f"g{g}t{i}",
                    price=draw(st.integers(0, 2**24)),
                    start_minute=s,
                    end_minute=e,
                    day_types=day_types,
                )
            )
    holidays = draw(
        st.lists(st.dates(dt.date(2020, 1, 1), dt.date(2029, 12, 31)), max_size=5, unique=True)
    )
    tz = draw(st.sampled_from(["Europe/London", "America/New_York", "Australia/Sydney", "UTC"]))
    return Tariff(
        kind="tou",
        timezone=tz,
        tiers=tuple(draw(st.permutations(tiers))),
        holidays=tuple(d.isoformat() for d in holidays),
    )


readings_st = st.dictionaries(
    st.integers(T2020 // 900, T2030 // 900), st.integers(-50_000, 50_000), max_size=30
)


@settings(max_examples=40, deadline=None)
@given(tou_tariffs(), readings_st)
def test_tou_energy_charge_matches_reference(tariff: Tariff, readings: dict[int, int]) -> None:
    plan = _plan(tariff)
    expected = sum(x * _reference_price(tariff, t, 900) for t, x in readings.items())
    assert plan.energy_charge(readings) == expected
    for t in list(readings)[:5]:
        assert tariff.price_at(t, 900) in tariff.distinct_prices()  # type: ignore[operator]


@settings(max_examples=40, deadline=None)
@given(tou_tariffs())
def test_tou_digest_ignores_order(tariff: Tariff) -> None:
    again = Tariff(
        kind="tou",
        timezone=tariff.timezone,
        tiers=tuple(reversed(tariff.tiers)),
        holidays=tuple(reversed(tariff.holidays)),
    )
    assert again.digest() == tariff.digest()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**24), readings_st)
def test_flat_energy_charge_matches_reference(price: int, readings: dict[int, int]) -> None:
    plan = _plan(Tariff(kind="flat", price=price))
    assert plan.energy_charge(readings) == price * sum(readings.values())


_RT_KEY = demo_feed_signing_key("prop-feed")


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.integers(0, 10**7),
        st.tuples(st.integers(-(10**6), 10**6), st.integers(0, 2**24)),
        max_size=20,
    )
)
def test_realtime_energy_charge_matches_reference(data: dict[int, tuple[int, int]]) -> None:
    tariff = Tariff(kind="realtime", feed_id="prop-feed", feed_key=_RT_KEY.verify_key.hex())
    feed = PriceFeed.publish(_RT_KEY, "prop-feed", 900, {t: p for t, (_, p) in data.items()})
    feed = PriceFeed.from_json(feed.to_json())  # forces a real signature check
    plan = _plan(tariff)
    readings = {t: x for t, (x, _) in data.items()}
    assert plan.energy_charge(readings, feed) == sum(x * p for x, p in data.values())


def test_day_type_constants() -> None:
    assert DAY_TYPES == ALL_DAYS
