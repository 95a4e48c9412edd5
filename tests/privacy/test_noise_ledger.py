from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.privacy.ledger import BITS_PER_READING, bill_bits_per_day, build_ledger
from privmeter.privacy.noise import NoiseConfig, calibrate, epsilon, rdp_skellam, skellam_shares


@given(st.floats(0.5, 20), st.integers(1, 2000), st.integers(1, 96))
@settings(max_examples=25, deadline=None)
def test_calibrate_meets_target(eps: float, sens: int, k: int) -> None:
    mu = calibrate(eps, sens, compositions=k)
    assert epsilon(mu, sens, compositions=k) <= eps
    assert epsilon(mu * 0.99, sens, compositions=k) > eps * 0.999


def test_rdp_monotone_and_gaussian_like() -> None:
    assert rdp_skellam(2, 1e6, 100) < rdp_skellam(2, 1e4, 100)
    # for large mu the bound approaches the Gaussian alpha D^2 / (2 sigma^2), sigma^2 = 2 mu
    mu, d = 1e8, 100
    assert math.isclose(rdp_skellam(4, mu, d), 4 * d * d / (2 * 2 * mu), rel_tol=1e-3)


def test_shares_sum_to_target_variance_integers() -> None:
    nc = NoiseConfig.for_target(2.0, sensitivity_wh=500, compositions=1, n_min=5)
    gen = np.random.default_rng(3)
    shares = skellam_shares(nc.share_mu, (20000, 5), gen)
    assert shares.dtype == np.int64
    total = shares.sum(axis=1)
    assert abs(total.var() / (2 * nc.mu) - 1) < 0.05
    assert abs(total.mean()) < 4 * math.sqrt(2 * nc.mu / 20000)


def test_ledger_accounting() -> None:
    plan = builtin_plan("lcl-flat")
    answered = np.array([[4, 4], [2, 0]])
    led = build_ledger(["a", "b"], answered, plan, group_size=10, protections=True)
    assert len(led) == 4
    e = led[0]
    assert e.comparison_bits == 4 and e.totals_bits == 0
    assert math.isclose(e.differencing_bits, 2 * BITS_PER_READING)
    assert math.isclose(e.bill_bits, bill_bits_per_day(plan))
    assert e.bill_bits < 1.5  # one flat-price monthly bill: ~25 bits over 30 days
    off = build_ledger(["a"], answered[:1], plan, group_size=1, protections=False)
    assert off[0].totals_bits > 1000 and off[0].differencing_bits > 1000
