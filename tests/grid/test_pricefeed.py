"""The signed price feed: publishing, verification, tampering, files, and the plan's checks on it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.signing import SigningKey
from privmeter.errors import InvalidSignature, TariffError, TariffRejected, UnsupportedVersion
from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.grid.tariff.plans import Plan, PrivacyBudget, Tariff
from privmeter.grid.tariff.pricefeed import (
    FEED_FORMAT,
    PriceFeed,
    PricePoint,
    canonical_digest,
    demo_feed_signing_key,
)

FEED_ID = "realtime-demo"
DEMO_KEY = demo_feed_signing_key(FEED_ID)
START = 1_900_000  # an interval index (900 s): some day in 2024


def _prices(n: int = 8) -> dict[int, int]:
    return {START + i: 10_000 + 1_000 * i for i in range(n)}


@pytest.fixture(scope="module")
def feed() -> PriceFeed:
    return PriceFeed.publish(DEMO_KEY, FEED_ID, 900, _prices())


@pytest.fixture(scope="module")
def plan() -> Plan:
    return builtin_plan("realtime-demo")


# -- the feed itself ------------------------------------------------------------------


def test_publish_verify_and_lookup(feed: PriceFeed) -> None:
    fresh = PriceFeed.from_json(feed.to_json())  # no cached verification
    fresh.verify(DEMO_KEY.verify_key)
    assert fresh == feed
    assert fresh.price(START + 3) == 13_000
    assert dict(fresh.prices) == _prices()
    assert len(fresh) == 8 and START in fresh and START + 8 not in fresh
    assert [p.interval for p in fresh.points()] == sorted(_prices())
    assert fresh.digest() == feed.digest()


def test_demo_key_matches_the_shipped_plans() -> None:
    for name, fid in (("realtime-demo", "realtime-demo"), ("lcl-dtou", "lcl-dtou-2013")):
        tariff = builtin_plan(name).tariff
        assert tariff.feed_id == fid
        assert tariff.feed_key == demo_feed_signing_key(fid).verify_key.hex()


def test_missing_interval_is_a_tariff_error(feed: PriceFeed) -> None:
    with pytest.raises(TariffError, match="no price for interval") as ei:
        feed.price(START + 100)
    assert ei.value.context["interval"] == START + 100


def test_forged_feed_other_key_fails(feed: PriceFeed) -> None:
    forged = PriceFeed.publish(SigningKey.from_seed(b"\x07" * 32), FEED_ID, 900, _prices())
    with pytest.raises(InvalidSignature):
        forged.verify(DEMO_KEY.verify_key)
    assert forged.digest() == feed.digest()  # same prices: the digest is not what protects


def _tampered(feed: PriceFeed, edit) -> PriceFeed:  # type: ignore[no-untyped-def]
    d = json.loads(feed.to_json())
    edit(d)
    return PriceFeed.from_dict(d)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda d: d["entries"][2].__setitem__(1, 1), id="price-changed"),
        pytest.param(lambda d: d["entries"][2].__setitem__(0, START + 50), id="interval-moved"),
        pytest.param(
            lambda d: d["entries"][1].__setitem__(2, d["entries"][2][2]), id="signature-swapped"
        ),
        pytest.param(lambda d: d.__setitem__("feed_id", "other-feed"), id="feed-id-changed"),
        pytest.param(
            lambda d: d.__setitem__("interval_seconds", 1800), id="interval-length-changed"
        ),
    ],
)
def test_tampering_breaks_a_signature(feed: PriceFeed, edit) -> None:  # type: ignore[no-untyped-def]
    bad = _tampered(feed, edit)
    with pytest.raises(InvalidSignature) as ei:
        bad.verify(DEMO_KEY.verify_key)
    assert "interval" in ei.value.context


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (
            {"format": FEED_FORMAT, "feed_id": "x", "interval_seconds": 900, "entries": [], "k": 1},
            "k",
        ),
        (
            {"format": FEED_FORMAT, "feed_id": "X!", "interval_seconds": 900, "entries": []},
            "feed_id",
        ),
        (
            {"format": FEED_FORMAT, "feed_id": "x", "interval_seconds": 7, "entries": []},
            "interval_seconds",
        ),
        (
            {"format": FEED_FORMAT, "feed_id": "x", "interval_seconds": 900, "entries": {}},
            "entries",
        ),
        (
            {"format": FEED_FORMAT, "feed_id": "x", "interval_seconds": 900, "entries": [[1, 2]]},
            "entries[0]",
        ),
        (
            {
                "format": FEED_FORMAT,
                "feed_id": "x",
                "interval_seconds": 900,
                "entries": [[1, 2, "zz" * 64]],
            },
            "entries[0]",
        ),
        (
            {
                "format": FEED_FORMAT,
                "feed_id": "x",
                "interval_seconds": 900,
                "entries": [[1, -2, "00" * 64]],
            },
            "price",
        ),
        (
            {
                "format": FEED_FORMAT,
                "feed_id": "x",
                "interval_seconds": 900,
                "entries": [[1, 2, "00" * 64], [1, 3, "00" * 64]],
            },
            "points",
        ),
    ],
)
def test_malformed_feed_files(doc: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(TariffError) as ei:
        PriceFeed.from_json(json.dumps(doc))
    assert ei.value.context["field"] == field


def test_feed_file_version_and_garbage() -> None:
    with pytest.raises(UnsupportedVersion):
        PriceFeed.from_json('{"format": "privmeter.pricefeed/2"}')
    with pytest.raises(TariffError):
        PriceFeed.from_json(b"\xff not json")
    with pytest.raises(TariffError):
        PriceFeed.from_json("[1, 2]")


def test_price_points_validate() -> None:
    with pytest.raises(TariffError):
        PricePoint(interval=-1, price=1)
    with pytest.raises(TariffError):
        PricePoint(interval=1, price=True)
    with pytest.raises(TariffError):
        PricePoint(interval=1, price=1, signature=b"short")
    with pytest.raises(TariffError, match="no signature"):
        PriceFeed(feed_id="x", interval_seconds=900, points=[PricePoint(interval=1, price=1)])


def test_subset_and_merge(feed: PriceFeed) -> None:
    sub = feed.subset(range(START + 2, START + 5))
    assert dict(sub.prices) == {t: p for t, p in _prices().items() if START + 2 <= t < START + 5}
    PriceFeed.from_json(sub.to_json()).verify(DEMO_KEY.verify_key)  # still verifiable
    with pytest.raises(TariffError):
        feed.subset([START + 99])
    later = PriceFeed.publish(DEMO_KEY, FEED_ID, 900, {START + 8: 1, START + 9: 2})
    both = sub.merge(later).merge(sub)
    assert sorted(both.prices) == [START + 2, START + 3, START + 4, START + 8, START + 9]
    both.verify(DEMO_KEY.verify_key)


def test_merge_detects_equivocation(feed: PriceFeed) -> None:
    other = PriceFeed.publish(DEMO_KEY, FEED_ID, 900, {START: 99_999})
    with pytest.raises(TariffError, match="equivocation") as ei:
        feed.merge(other)
    assert ei.value.context["interval"] == START
    with pytest.raises(TariffError):
        feed.merge(PriceFeed.publish(DEMO_KEY, "another", 900, {START: 1}))


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.integers(0, 2**40), st.integers(0, 2**32), max_size=6))
def test_json_round_trip_property(prices: dict[int, int]) -> None:
    f = PriceFeed.publish(DEMO_KEY, FEED_ID, 900, prices)
    g = PriceFeed.from_json(f.to_json())
    assert g == f and g.digest() == f.digest() and dict(g.prices) == prices
    g.verify(DEMO_KEY.verify_key)


def test_canonical_digest_rejects_floats() -> None:
    with pytest.raises(TypeError):
        canonical_digest("x", {"a": [1.5]})
    assert canonical_digest("x", {"b": 1, "a": 2}) == canonical_digest("x", {"a": 2, "b": 1})
    assert canonical_digest("x", {"a": 1}) != canonical_digest("y", {"a": 1})


# -- the plan's checks on a realtime tariff ----------------------------------------------


def test_plan_bills_with_a_valid_feed(plan: Plan, feed: PriceFeed) -> None:
    readings = {START + i: 100 * i - 200 for i in range(8)}
    expected = sum(x * _prices()[t] for t, x in readings.items())
    assert plan.energy_charge(readings, feed) == expected
    plan.check_tariff(plan.tariff, feed, range(START, START + 8))
    plan.check_tariff(plan.tariff, feed)  # default: every interval of the feed


def test_plan_refuses_forged_feed(plan: Plan) -> None:
    forged = PriceFeed.publish(SigningKey.from_seed(b"\x01" * 32), FEED_ID, 900, _prices())
    with pytest.raises(TariffRejected, match="signature"):
        plan.check_tariff(plan.tariff, forged, range(START, START + 8))
    with pytest.raises(TariffRejected):
        plan.energy_charge({START: 10}, forged)


def test_plan_refuses_missing_feed_interval(plan: Plan, feed: PriceFeed) -> None:
    with pytest.raises(TariffRejected, match="no price") as ei:
        plan.check_tariff(plan.tariff, feed, range(START, START + 9))
    assert ei.value.context["interval"] == START + 8
    with pytest.raises(TariffRejected):
        plan.energy_charge({START + 8: 1}, feed)


def test_plan_refuses_no_feed_or_foreign_feed(plan: Plan) -> None:
    with pytest.raises(TariffRejected, match="needs its price feed"):
        plan.check_tariff(plan.tariff, None, range(START, START + 1))
    other = PriceFeed.publish(DEMO_KEY, "other-feed", 900, _prices())
    with pytest.raises(TariffRejected, match="expected feed"):
        plan.check_tariff(plan.tariff, other, range(START, START + 1))
    half_hourly = PriceFeed.publish(DEMO_KEY, FEED_ID, 1800, _prices())
    with pytest.raises(TariffRejected, match="1800"):
        plan.check_tariff(plan.tariff, half_hourly, range(START, START + 1))


def test_attack_prices_encoding_readings_2_pow_20t(plan: Plan) -> None:
    """price_t = 2^(20t) would make the bill spell out each reading: refused, even though
    the utility signs it with the genuine feed key."""
    schedule = {START + t: 2 ** (20 * t) for t in range(4)}  # 2**60: still fits the u64 field
    evil = PriceFeed.publish(DEMO_KEY, FEED_ID, 900, schedule)
    evil.verify(DEMO_KEY.verify_key)  # genuinely published...
    with pytest.raises(TariffRejected, match="outside the plan's bounds") as ei:
        plan.check_tariff(plan.tariff, evil, range(START, START + 4))
    assert ei.value.context["interval"] == START + 1  # 2**20 > max_price 100000
    # ...and it is what the bill would have revealed: every reading, exactly
    readings = {START + t: 300 + 7 * t for t in range(4)}
    bill = sum(x * schedule[t] for t, x in readings.items())
    assert [(bill >> (20 * t)) & (2**20 - 1) for t in range(4)] == list(readings.values())
    with pytest.raises(TariffRejected):
        plan.energy_charge(readings, evil)


def test_dtou_feed_price_not_in_allowed_prices() -> None:
    plan = builtin_plan("lcl-dtou")
    key = demo_feed_signing_key("lcl-dtou-2013")
    good = PriceFeed.publish(key, "lcl-dtou-2013", 1800, {100: 3990, 101: 11760, 102: 67200})
    plan.check_tariff(plan.tariff, good, range(100, 103))
    assert plan.energy_charge({100: 1000, 101: 1000, 102: -500}, good) == (
        1000 * 3990 + 1000 * 11760 - 500 * 67200
    )
    odd = PriceFeed.publish(key, "lcl-dtou-2013", 1800, {100: 3990, 101: 11761})  # within bounds
    with pytest.raises(TariffRejected, match="not one of the plan's allowed prices") as ei:
        plan.check_tariff(plan.tariff, odd, range(100, 102))
    assert ei.value.context["interval"] == 101


def test_check_tariff_rejects_another_realtime_tariff(plan: Plan, feed: PriceFeed) -> None:
    rogue_key = SigningKey.from_seed(b"\x02" * 32)
    rogue = Tariff(kind="realtime", feed_id=FEED_ID, feed_key=rogue_key.verify_key.hex())
    rogue_feed = PriceFeed.publish(rogue_key, FEED_ID, 900, _prices())
    with pytest.raises(TariffRejected, match="differs"):
        plan.check_tariff(rogue, rogue_feed, range(START, START + 8))


def test_billing_digest_binds_the_feed_prices(plan: Plan, feed: PriceFeed) -> None:
    r = range(START, START + 8)
    d = plan.billing_digest(r, feed)
    assert d == plan.billing_digest(r, PriceFeed.from_json(feed.to_json()))
    changed = PriceFeed.publish(DEMO_KEY, FEED_ID, 900, {**_prices(), START + 7: 1})
    assert plan.billing_digest(r, changed) != d
    assert plan.billing_digest(range(START, START + 7), feed) != d
    # a flat plan's billing digest needs no feed and changes with the range
    flat = builtin_plan("lcl-flat")
    assert flat.billing_digest(range(0, 48)) != flat.billing_digest(range(0, 47))


def test_realtime_plan_bounds_allowed_prices() -> None:
    t = Tariff(
        kind="realtime",
        feed_id=FEED_ID,
        feed_key=DEMO_KEY.verify_key.hex(),
        allowed_prices=(5, 500),
    )
    with pytest.raises(TariffError) as ei:
        Plan(
            plan_id="p",
            name="p",
            currency="GBP",
            interval_seconds=900,
            tariff=t,
            max_price=100,
            privacy=PrivacyBudget(),
        )
    assert ei.value.context["field"] == "tariff.allowed_prices[1]"
