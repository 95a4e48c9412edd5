from __future__ import annotations

import random

import numpy as np
import pytest

from privmeter.errors import GroupTooSmall, MembershipChangeRefused
from privmeter.grid.tariff.plans import PrivacyBudget
from privmeter.privacy.differencing import PROBE_BITS, differencing_attack, probing_attack
from privmeter.privacy.noise import NoiseConfig
from privmeter.privacy.views import AGG_INTERVAL_S, Population
from privmeter.protocol.membership import MembershipPolicy

BUDGET = PrivacyBudget()  # 1/interval, 4/day, min group 5, 2 changes a day


def test_differencing_exact_without_protections(population: Population) -> None:
    e = population.energy(AGG_INTERVAL_S)
    r = differencing_attack(e, 0, list(range(8)), BUDGET, protections=False, rng=random.Random(1))
    assert r.estimates == r.exact == e.shape[1] and r.rmse_wh == 0.0


def test_differencing_blocked_and_limited_with_protections(population: Population) -> None:
    e = population.energy(AGG_INTERVAL_S)
    r = differencing_attack(e, 0, list(range(8)), BUDGET, protections=True, rng=random.Random(1))
    assert r.exact == 0
    assert r.estimates <= BUDGET.max_membership_changes_per_day * population.days
    assert r.refused > e.shape[1]  # every concurrent second group was refused


def test_differencing_with_distributed_noise_costs_accuracy(population: Population) -> None:
    e = population.energy(AGG_INTERVAL_S)
    nc = NoiseConfig.for_target(4.0, sensitivity_wh=1000, compositions=1, n_min=5)
    r = differencing_attack(
        e, 0, list(range(8)), BUDGET, protections=False, rng=random.Random(1), noise=nc
    )
    assert r.exact < r.estimates // 10
    assert r.rmse_wh > r.victim_std_wh  # worse than guessing the victim's mean
    assert r.total_rmse_wh > 0


def test_membership_policy_rules() -> None:
    roster = frozenset(f"m{i}" for i in range(6))
    p = MembershipPolicy("m0", BUDGET)
    with pytest.raises(GroupTooSmall):
        p.admit("tiny", frozenset({"m0", "m1"}), from_interval=0)
    p.admit("G", roster, from_interval=0)
    p.serve("G", 0)
    with pytest.raises(MembershipChangeRefused):  # a second group for a served interval
        p.admit("G-v", roster - {"m5"}, from_interval=0)
    with pytest.raises(MembershipChangeRefused):
        p.serve("other", 0)
    assert p.group_id == "G" and p.changes_on(0) == 0  # state unchanged
    p.admit("G-v", roster - {"m5"}, from_interval=1)
    p.admit("G", roster, from_interval=2)
    with pytest.raises(MembershipChangeRefused):  # third change on day 0
        p.admit("G-v", roster - {"m5"}, from_interval=3)
    p.admit("G-v", roster - {"m5"}, from_interval=96)  # next day
    assert p.changes_on(1) == 1


def test_probing_bounded_by_budget(population: Population) -> None:
    power = population.power_at_end(AGG_INTERVAL_S)[0]
    med = int(np.median(power))
    off = probing_attack(
        power, BUDGET, protections=False, start_unix=population.start_unix, prior_median_w=med
    )
    on = probing_attack(
        power, BUDGET, protections=True, start_unix=population.start_unix, prior_median_w=med
    )
    assert off.mae_w == 0.0 and off.answered == PROBE_BITS * len(power)
    assert on.answered == BUDGET.comparisons_per_day * population.days
    assert on.bits_per_day <= BUDGET.comparisons_per_day and on.refused > 0
    assert on.mae_w > 0.5 * on.baseline_mae_w
