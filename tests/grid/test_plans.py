"""Plan files: the shipped examples, every validation path, digests, fixed and energy charges."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import privmeter.grid.tariff.plan_toml as plan_toml_mod
import privmeter.grid.tariff.plans as plans_mod
from privmeter.errors import ConfigError, PlanError, TariffError, TariffRejected
from privmeter.grid.tariff.plan_toml import builtin_plan, builtin_plan_names, load_plan, parse_plan
from privmeter.grid.tariff.plans import (
    DEFAULT_MAX_PRICE,
    PLAN_FORMAT_VERSION,
    DemandResponse,
    Plan,
    PrivacyBudget,
    Tariff,
    TimeOfUseTier,
)

BASE = """\
version = 1

[plan]
id = "test-tou"
name = "Test ToU"
currency = "GBP"
interval_seconds = 900
timezone = "Europe/London"
min_price = 1000
max_price = 90000
standing_charge_per_day = 50000

[tariff]
kind = "tou"
holidays = ["2024-12-25", 2024-12-26]

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
start = 00:00:00
end = "24:00"
days = ["saturday", "sunday", "holiday"]

[demand_response]
cap_w = 3000
penalty_price = 20000
rebate_price = 10000
max_event_minutes = 240

[privacy]
comparisons_per_interval = 1
comparisons_per_day = 4
same_threshold_for_group = true
min_group_size = 5
min_survivors = 5
max_membership_changes_per_day = 2
"""

FLAT = """\
version = 1
[plan]
id = "flat"
name = "Flat"
currency = "EUR"
interval_seconds = 900
[tariff]
kind = "flat"
price = 30000
"""


def _iv(iso: str, seconds: int = 900) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp()) // seconds


# -- shipped examples ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lcl-flat", "lcl-dtou", "economy7", "realtime-demo"])
def test_builtin_plans_load(name: str) -> None:
    plan = builtin_plan(name)
    assert plan.plan_id == name
    assert plan.demand_response is not None
    assert plan.privacy == PrivacyBudget(
        comparisons_per_interval=1,
        comparisons_per_day=4,
        same_threshold_for_group=True,
        min_group_size=5,
        min_survivors=5,
        max_membership_changes_per_day=2,
    )
    assert plan.currency == "GBP"
    assert len(plan.digest()) == 32
    assert name in builtin_plan_names()


def test_builtin_plan_values() -> None:
    flat = builtin_plan("lcl-flat")
    assert (
        flat.tariff.kind == "flat" and flat.tariff.price == 14228 and flat.interval_seconds == 1800
    )
    dtou = builtin_plan("lcl-dtou")
    assert dtou.tariff.kind == "realtime"
    assert dtou.tariff.allowed_prices == (3990, 11760, 67200)
    assert (dtou.min_price, dtou.max_price) == (3990, 67200)
    e7 = builtin_plan("economy7")
    assert e7.tariff.kind == "tou" and e7.tariff.distinct_prices() == (14500, 31250)
    rt = builtin_plan("realtime-demo")
    assert rt.tariff.distinct_prices() is None and rt.max_price == 100000
    with pytest.raises(PlanError, match="no built-in plan"):
        builtin_plan("../economy7")


def test_lcl_flat_one_kwh_costs_14_228_pence() -> None:
    plan = builtin_plan("lcl-flat")
    # 1 kWh at 14.228 p/kWh = 14.228 p = 14,228,000 micro-pence; export credited alike
    assert plan.energy_charge({0: 1000}) == 14_228_000
    assert plan.energy_charge({0: 600, 1: 400, 2: -250}) == 750 * 14228


def test_base_document_parses() -> None:
    plan = parse_plan(BASE)
    assert plan.tariff.holidays == ("2024-12-25", "2024-12-26")
    assert plan.tariff.tiers[2].start_minute == 0 and plan.tariff.tiers[2].end_minute == 1440
    assert plan.tariff.timezone == "Europe/London"
    assert plan.tariff.distinct_prices() == (15000, 25000, 40000)
    assert plan.tariff.tier_boundaries() == (0, 960, 1140)
    flat = parse_plan(FLAT)
    assert flat.timezone == "UTC" and flat.max_price == DEFAULT_MAX_PRICE and flat.min_price == 0
    assert flat.demand_response is None and flat.privacy == PrivacyBudget()
    assert PLAN_FORMAT_VERSION == 1


def test_load_plan_from_file(tmp_path: Path) -> None:
    p = tmp_path / "plan.toml"
    p.write_text(BASE, encoding="utf-8")
    assert load_plan(p).digest() == parse_plan(BASE).digest()
    p.write_text(BASE.replace("cap_w = 3000", "cap_w = 0"), encoding="utf-8")
    with pytest.raises(PlanError, match=str(p).replace("\\", "\\\\")):
        load_plan(p)
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.toml")
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(PlanError, match="UTF-8"):
        load_plan(p)


# -- validation: every error names its field ------------------------------------------

CASES: list[tuple[str, str, str, type[ConfigError]]] = [
    # (old text, new text, field path, error class)
    ("version = 1\n", "", "version", PlanError),
    ("version = 1\n", "version = 2\n", "version", PlanError),
    ("version = 1\n", 'version = "1"\n', "version", PlanError),
    ("version = 1\n", "version = 1\nextra = 3\n", "extra", PlanError),
    ('id = "test-tou"', 'id = "Test ToU"', "plan.id", PlanError),
    ('id = "test-tou"\n', "", "plan.id", PlanError),
    ('name = "Test ToU"', "name = 7", "plan.name", PlanError),
    ('currency = "GBP"', 'currency = "pounds"', "plan.currency", PlanError),
    ("interval_seconds = 900", "interval_seconds = 7", "plan.interval_seconds", PlanError),
    ("interval_seconds = 900", "interval_seconds = 900.0", "plan.interval_seconds", PlanError),
    ("interval_seconds = 900", "interval_seconds = 7200", "plan.interval_seconds", PlanError),
    ('timezone = "Europe/London"', 'timezone = "Europe/Londn"', "plan.timezone", PlanError),
    ("min_price = 1000", "min_price = -1", "plan.min_price", PlanError),
    ("max_price = 90000", "max_price = 4294967297", "plan.max_price", PlanError),
    ("max_price = 90000", "max_price = 999", "plan.max_price", PlanError),
    ("max_price = 90000", "max_price = true", "plan.max_price", PlanError),
    (
        "standing_charge_per_day = 50000",
        "standing_charge_per_day = -5",
        "plan.standing_charge_per_day",
        PlanError,
    ),
    ("standing_charge_per_day = 50000", "standing_charge = 5", "plan.standing_charge", PlanError),
    ('kind = "tou"', 'kind = "dynamic"', "tariff.kind", TariffError),
    ('kind = "tou"', 'kind = "tou"\nprice = 5', "tariff.price", TariffError),
    ('kind = "tou"', 'kind = "tou"\nprise = 5', "tariff.prise", TariffError),
    ('kind = "tou"', 'kind = "tou"\ntimezone = "Mars/Olympus"', "tariff.timezone", TariffError),
    (
        'holidays = ["2024-12-25", 2024-12-26]',
        'holidays = ["2024-13-25"]',
        "tariff.holidays[0]",
        TariffError,
    ),
    (
        'holidays = ["2024-12-25", 2024-12-26]',
        'holidays = ["2024-12-25", "2024-12-25"]',
        "tariff.holidays[1]",
        TariffError,
    ),
    (
        'holidays = ["2024-12-25", 2024-12-26]',
        'holidays = "2024-12-25"',
        "tariff.holidays",
        TariffError,
    ),
    ("price = 40000", "price = 95000", "tariff.tiers[0].price", TariffError),
    ("price = 40000", "price = 500", "tariff.tiers[0].price", TariffError),
    ("price = 40000", 'price = "40000"', "tariff.tiers[0].price", TariffError),
    ("price = 40000", "price = 40000\ncolour = 1", "tariff.tiers[0].colour", TariffError),
    ('start = "16:00"', 'start = "4pm"', "tariff.tiers[0].start", TariffError),
    ('start = "16:00"', 'start = "24:00"', "tariff.tiers[0].start", TariffError),
    ('start = "16:00"', "start = 16:00:30", "tariff.tiers[0].start", TariffError),
    ('start = "16:00"\n', "", "tariff.tiers[0].start", TariffError),
    ('end = "19:00"', 'end = "16:00"', "tariff.tiers[0].end", TariffError),
    ('end = "19:00"', 'end = "19:60"', "tariff.tiers[0].end", TariffError),
    (
        'days = ["weekday"]\n\n[[tariff.tiers]]\nname = "standard"',
        'days = ["workday"]\n\n[[tariff.tiers]]\nname = "standard"',
        "tariff.tiers[0].days[0]",
        TariffError,
    ),
    (
        'days = ["weekday"]\n\n[[tariff.tiers]]\nname = "standard"',
        'days = []\n\n[[tariff.tiers]]\nname = "standard"',
        "tariff.tiers[0].days",
        TariffError,
    ),
    ('name = "peak"', 'name = ""', "tariff.tiers[0].name", TariffError),
    ('end = "19:00"', 'end = "19:30"', "tariff.tiers[1]", TariffError),  # overlap with standard
    ('end = "19:00"', 'end = "18:00"', "tariff.tiers", TariffError),  # 18:00-19:00 uncovered
    (
        'days = ["saturday", "sunday", "holiday"]',
        'days = ["saturday", "sunday"]',
        "tariff.tiers",
        TariffError,
    ),
    ("cap_w = 3000", "cap_w = 0", "demand_response.cap_w", PlanError),
    ("cap_w = 3000\n", "", "demand_response.cap_w", PlanError),
    ("penalty_price = 20000", "penalty_price = 95000", "demand_response.penalty_price", PlanError),
    ("rebate_price = 10000", "rebate_price = -1", "demand_response.rebate_price", PlanError),
    (
        "max_event_minutes = 240",
        "max_event_minutes = 2000",
        "demand_response.max_event_minutes",
        PlanError,
    ),
    (
        "max_event_minutes = 240",
        "max_event_minutes = 240\ncap_kw = 3",
        "demand_response.cap_kw",
        PlanError,
    ),
    (
        "comparisons_per_interval = 1",
        "comparisons_per_interval = 5",
        "privacy.comparisons_per_interval",
        PlanError,
    ),
    (
        "comparisons_per_day = 4",
        "comparisons_per_day = -1",
        "privacy.comparisons_per_day",
        PlanError,
    ),
    (
        "same_threshold_for_group = true",
        "same_threshold_for_group = 1",
        "privacy.same_threshold_for_group",
        PlanError,
    ),
    ("min_group_size = 5", "min_group_size = 2", "privacy.min_group_size", PlanError),
    ("min_survivors = 5", "min_survivors = 6", "privacy.min_survivors", PlanError),
    (
        "max_membership_changes_per_day = 2",
        "max_membership_changes_per_day = -1",
        "privacy.max_membership_changes_per_day",
        PlanError,
    ),
    (
        "max_membership_changes_per_day = 2",
        "max_membership_change_per_day = 2",
        "privacy.max_membership_change_per_day",
        PlanError,
    ),
    ("[privacy]", "[privacy]\nepsilon = 1", "privacy.epsilon", PlanError),
]


@pytest.mark.parametrize(
    ("old", "new", "field", "cls"), CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)]
)
def test_validation_error_names_its_field(
    old: str, new: str, field: str, cls: type[ConfigError]
) -> None:
    assert old in BASE, old
    text = BASE.replace(old, new, 1)
    with pytest.raises(cls) as ei:
        parse_plan(text, source="test.toml")
    assert ei.value.context["field"] == field, str(ei.value)
    msg = str(ei.value)
    assert msg.startswith(f"test.toml: {field}"), msg


def test_tier_boundaries_must_fall_on_interval_boundaries() -> None:
    text = BASE.replace('start = "16:00"', 'start = "16:07"').replace(
        'end = "16:00"', 'end = "16:07"'
    )
    with pytest.raises(TariffError) as ei:
        parse_plan(text)
    assert ei.value.context["field"] == "tariff.tiers[0].start"
    assert (
        parse_plan(text.replace("interval_seconds = 900", "interval_seconds = 60")).interval_seconds
        == 60
    )


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(TariffError, match="did you mean 'price'"):
        parse_plan(BASE.replace('kind = "tou"', 'kind = "tou"\nprise = 5'))


def test_missing_tables_and_bad_toml() -> None:
    with pytest.raises(PlanError, match="not valid TOML"):
        parse_plan("version = = 1")
    with pytest.raises(PlanError) as ei:
        parse_plan("version = 1\n")
    assert ei.value.context["field"] == "plan"
    with pytest.raises(TariffError) as ei2:
        parse_plan(FLAT.split("[tariff]")[0])
    assert ei2.value.context["field"] == "tariff"
    with pytest.raises(PlanError) as ei3:
        parse_plan("version = 1\nplan = 3\n")
    assert ei3.value.context["field"] == "plan"
    with pytest.raises(PlanError, match="larger than"):
        parse_plan("#" * (plan_toml_mod.MAX_PLAN_BYTES + 1))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("price = 30000", "price = 30000\ntiers = []", "tariff.tiers"),
        ("price = 30000", 'price = 30000\nfeed_id = "x"', "tariff.feed_id"),
        ("price = 30000", "", "tariff.price"),
        ("price = 30000", "price = 4294967297", "tariff.price"),
        ('kind = "flat"\nprice = 30000', 'kind = "realtime"', "tariff.feed_id"),
        (
            'kind = "flat"\nprice = 30000',
            'kind = "realtime"\nfeed_id = "f"\nfeed_key = "abc"',
            "tariff.feed_key",
        ),
        (
            'kind = "flat"\nprice = 30000',
            'kind = "realtime"\nfeed_id = "f"\nfeed_key = "'
            + "11" * 32
            + '"\nallowed_prices = [1, 1]',
            "tariff.allowed_prices",
        ),
        (
            'kind = "flat"\nprice = 30000',
            'kind = "realtime"\nfeed_id = "f"\nfeed_key = "'
            + "11" * 32
            + '"\nallowed_prices = [1, -1]',
            "tariff.allowed_prices[1]",
        ),
        (
            'kind = "flat"\nprice = 30000',
            'kind = "realtime"\nfeed_id = "f"\nfeed_key = "' + "11" * 32 + '"\nallowed_prices = 5',
            "tariff.allowed_prices",
        ),
    ],
)
def test_kind_specific_fields(old: str, new: str, field: str) -> None:
    assert old in FLAT
    with pytest.raises(TariffError) as ei:
        parse_plan(FLAT.replace(old, new))
    assert ei.value.context["field"] == field, str(ei.value)


# -- dataclass construction (other modules build plans in code) ---------------------------


def test_direct_construction_validates() -> None:
    flat = Tariff(kind="flat", price=100)
    Plan(plan_id="ok", name="ok", currency="GBP", interval_seconds=900, tariff=flat)
    with pytest.raises(TariffError):
        Tariff(kind="flat", price=-1)
    with pytest.raises(TariffError):
        Tariff(kind="flat", price=1, timezone="UTC")
    with pytest.raises(TariffError) as ei:
        TimeOfUseTier(name="x", price=1, start_minute=0, end_minute=1441, day_types=("weekday",))
    assert ei.value.context["field"] == "end_minute"
    with pytest.raises(PlanError) as ei2:
        Plan(plan_id="ok", name="ok", currency="GBP", interval_seconds=900, tariff="flat")  # type: ignore[arg-type]
    assert ei2.value.context["field"] == "tariff"
    with pytest.raises(TariffError):
        Plan(
            plan_id="ok",
            name="ok",
            currency="GBP",
            interval_seconds=900,
            tariff=flat,
            min_price=200,
        )
    with pytest.raises(PlanError):
        DemandResponse(cap_w=1, penalty_price=1, rebate_price=1, max_event_minutes=0)


def test_tier_day_types_are_normalised() -> None:
    t = TimeOfUseTier(
        name="all",
        price=1,
        start_minute=0,
        end_minute=1440,
        day_types=("holiday", "sunday", "weekday", "saturday"),
    )
    assert t.day_types == ("weekday", "saturday", "sunday", "holiday")
    with pytest.raises(TariffError):
        TimeOfUseTier(
            name="x", price=1, start_minute=0, end_minute=1440, day_types=("weekday", "weekday")
        )


# -- digests ------------------------------------------------------------------------------


def test_digest_is_of_meaning_not_text() -> None:
    a = parse_plan(BASE)
    # comments, whitespace, key order, tier order, holiday order, day order, time syntax
    tiers = BASE[BASE.index("[[tariff.tiers]]") : BASE.index("[demand_response]")]
    blocks = tiers.split("\n\n")
    reordered = BASE.replace(tiers, "\n\n".join([blocks[2], blocks[0], blocks[1]]) + "\n\n")
    reordered = reordered.replace(
        'holidays = ["2024-12-25", 2024-12-26]', 'holidays = [2024-12-26, "2024-12-25"]'
    )
    reordered = reordered.replace(
        'days = ["saturday", "sunday", "holiday"]', 'days = ["holiday", "saturday", "sunday"]'
    )
    reordered = reordered.replace('start = "16:00"', "start = 16:00:00  # a comment")
    reordered = reordered.replace(
        "min_price = 1000\nmax_price = 90000", "max_price   = 90000\nmin_price = 1000"
    )
    b = parse_plan("# header\n" + reordered)
    assert b.tariff.tiers[0].name == "weekend"  # really reordered
    assert a.tariff.digest() == b.tariff.digest()
    assert a.digest() == b.digest()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("price = 40000", "price = 40001"),
        ('name = "peak"', 'name = "Peak"'),
        ('holidays = ["2024-12-25", 2024-12-26]', 'holidays = ["2024-12-25"]'),
        ('kind = "tou"', 'kind = "tou"\ntimezone = "Europe/Paris"'),
        ('start = "16:00"', 'start = "16:15"'),
    ],
)
def test_tariff_digest_changes_with_any_tariff_change(old: str, new: str) -> None:
    a, b = (
        parse_plan(BASE),
        parse_plan(
            BASE.replace(old, new, 1).replace('end = "16:00"', 'end = "16:15"')
            if "16:15" in new
            else BASE.replace(old, new, 1)
        ),
    )
    assert a.tariff.digest() != b.tariff.digest()
    assert a.digest() != b.digest()


def test_plan_digest_changes_with_non_tariff_fields() -> None:
    a = parse_plan(BASE)
    for old, new in [
        ("min_group_size = 5", "min_group_size = 6"),
        ("cap_w = 3000", "cap_w = 3001"),
        ("standing_charge_per_day = 50000", "standing_charge_per_day = 50001"),
    ]:
        b = parse_plan(BASE.replace(old, new))
        assert b.tariff.digest() == a.tariff.digest() and b.digest() != a.digest()
    digests = {builtin_plan(n).tariff.digest() for n in builtin_plan_names()}
    assert len(digests) == len(builtin_plan_names())


def test_check_tariff_flat_and_tou() -> None:
    plan = parse_plan(BASE)
    plan.check_tariff(parse_plan(BASE).tariff)
    other = parse_plan(BASE.replace("price = 25000", "price = 25001")).tariff
    with pytest.raises(TariffRejected, match="differs"):
        plan.check_tariff(other)
    with pytest.raises(TariffRejected, match="outside the plan's bounds"):
        plan.check_tariff(Tariff(kind="flat", price=2**20))
    # a tou schedule built to encode readings: prices 2^(20k) by quarter of the day
    tiers = tuple(
        TimeOfUseTier(
            name=f"q{k}",
            price=2 ** (20 * k) if k < 2 else 2**31,
            start_minute=360 * k,
            end_minute=360 * (k + 1),
            day_types=("weekday", "saturday", "sunday", "holiday"),
        )
        for k in range(4)
    )
    evil = Tariff(kind="tou", tiers=tiers, timezone="UTC")
    with pytest.raises(TariffRejected, match="outside the plan's bounds"):
        plan.check_tariff(evil)
    with pytest.raises(TariffRejected):
        plan.check_tariff("flat")  # type: ignore[arg-type]


# -- money ---------------------------------------------------------------------------------


def test_fixed_charge_counts_local_days_touched() -> None:
    plan = parse_plan(BASE)  # 50000 milli-pence/day -> 50,000,000 micro-pence/day
    day = 50_000 * 1000
    june1 = _iv("2024-06-01T00:00:00+01:00")
    assert plan.fixed_charge(range(june1, june1 + 96)) == day
    assert plan.fixed_charge(range(june1, june1 + 96 * 30)) == 30 * day
    assert (
        plan.fixed_charge(range(june1 + 95, june1 + 97)) == 2 * day
    )  # 23:45-00:15 touches two days
    assert plan.fixed_charge(range(june1 + 10, june1 + 11)) == day
    assert plan.fixed_charge(range(june1, june1)) == 0
    # DST days: 23 and 25 hours long, still one day each
    spring = _iv("2024-03-31T00:00:00+00:00")
    assert plan.fixed_charge(range(spring, spring + 92)) == day
    autumn = _iv("2024-10-27T00:00:00+01:00")
    assert plan.fixed_charge(range(autumn, autumn + 100)) == day
    assert plan.fixed_charge(range(autumn, autumn + 101)) == 2 * day
    with pytest.raises(TypeError):
        plan.fixed_charge(range(0, 10, 2))


def test_total_charge() -> None:
    plan = builtin_plan("lcl-flat")
    assert plan.total_charge({0: 1000}, range(0, 48)) == 14_228_000  # no standing charge
    e7 = builtin_plan("economy7")
    start = _iv("2024-06-03T00:00:00+01:00")
    total = e7.total_charge({start + 4: 1000}, range(start, start + 96))  # 01:00 BST: night
    assert total == 1000 * 14500 + 53350 * 1000
    with pytest.raises(ValueError):
        e7.total_charge({start - 1: 1}, range(start, start + 96))


def test_energy_charge_rejects_non_int_readings() -> None:
    plan = builtin_plan("lcl-flat")
    with pytest.raises(TypeError):
        plan.energy_charge({0: 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        plan.energy_charge({-1: 1})


def test_demand_response_event_charge() -> None:
    dr = builtin_plan("lcl-flat").demand_response
    assert dr is not None
    assert dr.cap_wh(1800) == 1500 and dr.cap_wh(900) == 750
    assert dr.event_charge(2000, 1800) == 500 * 20000
    assert dr.event_charge(1000, 1800) == -500 * 10000
    assert dr.event_charge(1500, 1800) == 0
    assert dr.event_charge(-300, 1800) == -1500 * 10000  # export earns no extra rebate


def test_economy7_local_clock_across_dst() -> None:
    """Night = 00:30-07:30 local: 7 h normally, 6 h on the spring-forward day, 8 h on fall-back."""
    e7 = builtin_plan("economy7")
    tz = ZoneInfo("Europe/London")
    for day, hours in (("2024-06-12", 7), ("2024-03-31", 6), ("2024-10-27", 8), ("2024-12-25", 7)):
        d = dt.date.fromisoformat(day)
        start = int(dt.datetime.combine(d, dt.time(0), tz).timestamp()) // 900
        stop = int(dt.datetime.combine(d + dt.timedelta(days=1), dt.time(0), tz).timestamp()) // 900
        night = sum(1 for t in range(start, stop) if e7.tariff.price_at(t, 900) == 14500)
        assert night == hours * 4, day


def test_public_surface_is_pinned() -> None:
    import privmeter.grid.tariff.pricefeed as pf
    import privmeter.grid.tariff.tariffs as tf

    for mod in (plans_mod, plan_toml_mod, pf, tf):
        for name in mod.__all__:
            assert hasattr(mod, name), (mod.__name__, name)
    assert {
        "Plan",
        "Tariff",
        "TimeOfUseTier",
        "DemandResponse",
        "PrivacyBudget",
        "PriceFeed",
        "PricePoint",
        "PLAN_FORMAT_VERSION",
    } <= set(plans_mod.__all__)
    assert {"parse_plan", "load_plan", "builtin_plan", "builtin_plan_names"} <= set(
        plan_toml_mod.__all__
    )
