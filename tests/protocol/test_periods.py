"""Billing periods (protocol/periods.py): fixed lengths and calendar months, shared by the
head-end's ledger and the household agent."""

from __future__ import annotations

import calendar
import datetime
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.tariffs import Tariff
from privmeter.parties.household import HouseholdAgent
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.periods import MONTHLY, check_layout, period_bounds, period_of
from privmeter.protocol.records import make_record
from privmeter.protocol.settlement import BillProof

IV = 900
JAN_2013 = int(datetime.datetime(2013, 1, 1, tzinfo=datetime.UTC).timestamp()) // IV


def _month_days(k: int) -> int:
    y, m = divmod(k, 12)
    return calendar.monthrange(2013 + y, m + 1)[1]


@given(st.integers(0, 400), st.integers(0, 40 * 96 * 31))
def test_months_partition_the_intervals(k: int, offset: int) -> None:
    lo, hi = period_bounds(k, JAN_2013, MONTHLY, IV)
    assert hi - lo == _month_days(k) * 96
    assert period_bounds(k + 1, JAN_2013, MONTHLY, IV)[0] == hi  # no gap, no overlap
    assert (
        period_of(lo, JAN_2013, MONTHLY, IV) == k and period_of(hi - 1, JAN_2013, MONTHLY, IV) == k
    )
    t = JAN_2013 + offset
    p = period_of(t, JAN_2013, MONTHLY, IV)
    a, b = period_bounds(p, JAN_2013, MONTHLY, IV)
    assert a <= t < b


@given(st.integers(1, 5000), st.integers(-10_000, 10_000))
def test_fixed_length_periods(length: int, t: int) -> None:
    p = period_of(t, 100, length, IV)
    a, b = period_bounds(p, 100, length, IV)
    assert a <= t < b and b - a == length


def test_layout_checks() -> None:
    check_layout(JAN_2013, MONTHLY, IV)
    with pytest.raises(ValueError, match="month start"):
        check_layout(JAN_2013 + 1, MONTHLY, IV)
    with pytest.raises(ValueError):
        check_layout(0, -1, IV)


def test_monthly_statement_settles_with_the_household(paillier_small) -> None:
    pk, sk = paillier_small
    plan = Plan(
        plan_id="t-flat",
        name="Flat",
        currency="GBP",
        interval_seconds=IV,
        tariff=Tariff(kind="flat", price=14228),
        standing_charge_per_day=45_000,
    )
    meter, headend = SigningKey.generate(), SigningKey.generate()
    ledger = BillingLedger(headend, [plan], min_key_bits=512)
    ledger.register(
        "m1",
        meter.verify_key,
        pk,
        plan,
        wellformed_proof=prove_wellformed(sk),
        period_start=JAN_2013,
        period_intervals=MONTHLY,
    )
    feb = period_bounds(1, JAN_2013, MONTHLY, IV)[0]
    rng = random.Random(3)
    readings = {JAN_2013: 100, feb - 1: 250, feb: 900, feb + 5: 70}
    for t, wh in readings.items():
        ledger.receive(make_record(meter, "m1", t, pk, pk.encrypt(wh, rng=rng)), current_interval=t)
    home = HouseholdAgent(
        "m1",
        sk,
        plan,
        headend.verify_key,
        lambda: (readings, {}),
        meter_key=meter.verify_key,
        period_start=JAN_2013,
        period_intervals=MONTHLY,
    )
    for period, days, mine in ((0, 31, (JAN_2013, feb - 1)), (1, 28, (feb, feb + 5))):
        st_ = ledger.statement("m1", period, now=0)
        assert (st_.start, st_.end) == period_bounds(period, JAN_2013, MONTHLY, IV)
        assert st_.end - st_.start == days * 96
        proof = home.settle(st_, ledger.store.records("m1", st_.start, st_.end))
        assert isinstance(proof, BillProof)
        assert proof.bill == sum(readings[t] * 14228 for t in mine) + days * 45_000 * 1000
