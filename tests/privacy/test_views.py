from __future__ import annotations

import random

import numpy as np
import pytest

from privmeter.errors import BudgetExceeded
from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.privacy.views import (
    AGG_INTERVAL_S,
    ComparisonProbe,
    Population,
    answer_comparisons,
    bills_micro,
    cross_check_aggregation,
    group_members,
    privmeter_view,
)
from privmeter.protocol.demand_budget import ComparisonBudget


def test_group_totals_are_sums_of_member_readings(population: Population) -> None:
    plan = builtin_plan("lcl-flat")
    e = population.energy(AGG_INTERVAL_S)
    gv = privmeter_view(population, 5, plan, None, rng=random.Random(1), energy=e)
    for v in range(population.n):
        members = gv.members[v]
        assert members[0] == (v, 0) and len(members) == 5
        assert np.array_equal(gv.totals[v], sum(e[h] for h, _ in members))
    assert not gv.reused and (gv.bits == -1).all()


def test_group_of_size_one_is_the_household_reading(population: Population) -> None:
    plan = builtin_plan("lcl-flat")
    gv = privmeter_view(population, 1, plan, None, rng=random.Random(1))
    assert np.array_equal(gv.totals, population.energy(AGG_INTERVAL_S))


def test_group_members_uses_other_days_then_reuse() -> None:
    rng = random.Random(3)
    m, reused = group_members(0, 7, 4, 2, rng)  # 3 others x 2 days = 6 distinct traces
    assert m[0] == (0, 0) and not reused and len(set(m)) == 7
    assert all(h != 0 for h, _ in m[1:])
    m, reused = group_members(0, 10, 4, 2, rng)
    assert reused and len(m) == 10


def test_masked_aggregation_agrees_with_plaintext_view(population: Population) -> None:
    pairs = cross_check_aggregation(population, [0, 1, 2, 3, 4], intervals=2)
    assert pairs and all(a == b for a, b in pairs)


def test_comparisons_limited_by_the_real_budget(population: Population) -> None:
    plan = builtin_plan("lcl-flat")
    probe = ComparisonProbe(slots=tuple(range(0, 96, 8)), threshold_w=300)  # 12 asks a day
    rec = answer_comparisons(population, plan, probe)
    assert (rec.answered == plan.privacy.comparisons_per_day).all()
    assert (rec.refused == 12 - plan.privacy.comparisons_per_day).all()
    power = population.power_at_end(AGG_INTERVAL_S)
    asked = rec.bits >= 0
    assert np.array_equal(rec.bits[asked] == 1, power[asked] >= 300)
    off = answer_comparisons(population, plan, probe, enforce=False)
    assert (off.answered == 12).all()
    # the budget class itself refuses the fifth comparison of a day
    b = ComparisonBudget.from_plan(plan)
    for k in range(4):
        b.charge(2 * k)  # readings of intervals 0, 2, 4, 6 (one day)
    with pytest.raises(BudgetExceeded):
        b.charge(10)


def test_bill_is_price_times_energy(population: Population) -> None:
    plan = builtin_plan("lcl-flat")
    bills = bills_micro(population, plan)
    assert np.array_equal(bills, population.energy(1800).sum(axis=1) * 14228)
