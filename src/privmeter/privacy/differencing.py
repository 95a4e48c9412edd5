"""Active attacks of a utility on the leakage limits: differencing and probing.

What it is for: measuring, on real simulated readings, what a utility that
*breaks the rules* learns with the protections off and on.

Differencing (:func:`differencing_attack`): the utility forms ``G`` and
``G - {victim}``.  Protections off: it aggregates both in every interval
and subtracts: the victim's reading, exactly, every interval.  Protections
on (:class:`~privmeter.protocol.membership.MembershipPolicy` in every
member): the second roster for an already-served interval is refused, so
the utility falls back to *alternating* the roster, which the change limit
allows ``max_membership_changes_per_day`` times a day; at each boundary it
estimates ``x_v(t) ~ total_G(t) - total_{G-v}(t+-1)`` whose error is the
other members' change between two adjacent intervals.  With distributed
noise (:mod:`privmeter.privacy.noise`) each total carries independent
Skellam noise, so even the protections-off difference has error variance
``2 Var(noise)``; the price is the same noise on every legitimate total.

Probing (:func:`probing_attack`): the utility binary-searches the victim's
power with repeated comparisons ``[x >= T]``.  Protections off: 14
comparisons per interval pin every reading to the watt.  On: the real
meter-side :class:`~privmeter.protocol.demand_budget.ComparisonBudget` answers at
most the plan's comparisons per interval and per day and raises
:class:`~privmeter.errors.BudgetExceeded` beyond; the best the utility can do
is a search spread over consecutive intervals, bounded by the budget in
bits per day.

Units: Wh per 15-minute interval for totals, W for comparisons.
Security assumption: none (this is the adversary).  Guarantee:
deterministic given the inputs and ``rng``.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privmeter.errors import BudgetExceeded, GroupTooSmall, InvalidArgument, MembershipChangeRefused
from privmeter.grid.tariff.plans import PrivacyBudget
from privmeter.privacy.noise import NoiseConfig, skellam_shares
from privmeter.protocol.demand_budget import ComparisonBudget
from privmeter.protocol.membership import MembershipPolicy

__all__ = [
    "PROBE_BITS",
    "DifferencingResult",
    "ProbingResult",
    "differencing_attack",
    "probing_attack",
]

PROBE_BITS = (
    14  # power in [0, 16384) W: a 100 A single-phase supply is ~23 kW; 16 kW covers homes here
)
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DifferencingResult:
    protections: bool
    noise_epsilon: float | None
    group_size: int
    intervals: int
    estimates: int  # victim readings the utility obtained an estimate of
    exact: int  # of which exactly right
    refused: int  # roster requests the meters refused
    rmse_wh: float  # error of the estimates
    victim_std_wh: float  # error of the no-information guess (the victim's mean)
    total_rmse_wh: float  # cost: error the noise puts on every legitimate total
    total_mean_wh: float

    def as_dict(self) -> dict[str, object]:
        return {
            "protections": self.protections,
            "noise_epsilon": self.noise_epsilon,
            "group_size": self.group_size,
            "intervals": self.intervals,
            "estimates": self.estimates,
            "exact": self.exact,
            "refused": self.refused,
            "rmse_wh": round(self.rmse_wh, 2),
            "victim_std_wh": round(self.victim_std_wh, 2),
            "total_rmse_wh": round(self.total_rmse_wh, 2),
            "total_relative_error": round(self.total_rmse_wh / max(self.total_mean_wh, 1e-9), 5),
        }


def _noisy_total(
    readings: IntArray, noise: NoiseConfig | None, gen: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Sum of ``readings`` (members, T) with each member's noise share; and the exact sum."""
    exact = readings.sum(axis=0)
    if noise is None:
        return exact, exact
    clipped = noise.clip(readings)
    shares = skellam_shares(noise.share_mu, readings.shape, gen)
    return (clipped + shares).sum(axis=0), exact


def differencing_attack(
    energy: IntArray,
    victim: int,
    group: Sequence[int],
    budget: PrivacyBudget,
    *,
    protections: bool,
    rng: random.Random,
    noise: NoiseConfig | None = None,
    first_interval: int = 0,
    interval_seconds: int = 900,
) -> DifferencingResult:
    """Run the differencing attack on ``victim`` (a row of ``energy``) inside ``group``."""
    if victim not in group:
        raise InvalidArgument("the victim must be a member of the group")
    rest = [h for h in group if h != victim]
    n_t = energy.shape[1]
    gen = np.random.default_rng(rng.getrandbits(64))
    x_v = energy[victim].astype(np.float64)
    full, exact_full = _noisy_total(energy[list(group)], noise, gen)
    refused = 0
    if not protections:
        minus, _ = _noisy_total(energy[rest], noise, gen)
        est = (full - minus).astype(np.float64)
        idx = np.arange(n_t)
    else:
        ids = {h: f"m{h}" for h in group}
        roster_g = frozenset(ids.values())
        roster_m = frozenset(ids[h] for h in rest)
        pols = {h: MembershipPolicy(ids[h], budget, interval_seconds) for h in group}
        for p in pols.values():
            p.admit("G", roster_g, from_interval=first_interval)
        # 1. concurrent G and G - {v}: every member of G - {v} refuses the second group
        for t in range(n_t):
            for h in group:
                pols[h].serve("G", first_interval + t)
            for h in rest:
                try:
                    pols[h].admit("G-v", roster_m, from_interval=first_interval + t)
                except (MembershipChangeRefused, GroupTooSmall):
                    refused += 1
                    break  # one refusal already sinks this interval's second total
        # 2. alternate G / G - {v}, as often as every member's policy lets it
        pols = {h: MembershipPolicy(ids[h], budget, interval_seconds) for h in group}
        for p in pols.values():
            p.admit("G", roster_g, from_interval=first_interval)
        boundaries: list[tuple[int, int]] = []
        current = "G"
        for t in range(n_t):
            if t > 0:
                target = "G-v" if current == "G" else "G"
                roster = roster_m if target == "G-v" else roster_g
                members = rest if target == "G-v" else list(group)
                try:  # all or nothing: every member must accept before anyone switches
                    for h in members:
                        copy.deepcopy(pols[h]).admit(
                            target, roster, from_interval=first_interval + t
                        )
                except (MembershipChangeRefused, GroupTooSmall):
                    refused += 1
                else:
                    for h in members:
                        pols[h].admit(target, roster, from_interval=first_interval + t)
                    if current == "G":
                        boundaries.append((t - 1, t))  # G at t-1, G-{v} at t: x_v(t-1)
                    else:
                        boundaries.append((t, t - 1))  # G-{v} at t-1, G at t: x_v(t)
                    current = target
            for h in group if current == "G" else rest:
                pols[h].serve(current, first_interval + t)
        minus, _ = _noisy_total(energy[rest], noise, gen)
        pairs = np.array(boundaries, dtype=np.int64).reshape(-1, 2)
        idx = pairs[:, 0]
        est = (full[idx] - minus[pairs[:, 1]]).astype(np.float64)
    err = est - x_v[idx] if len(idx) else np.zeros(0)
    noise_err = (full - exact_full).astype(np.float64)
    return DifferencingResult(
        protections=protections,
        noise_epsilon=None if noise is None else noise.target_epsilon,
        group_size=len(group),
        intervals=n_t,
        estimates=len(idx),
        exact=int(np.sum(np.abs(err) < 0.5)),
        refused=refused,
        rmse_wh=float(np.sqrt(np.mean(err**2))) if len(err) else math.nan,
        victim_std_wh=float(x_v.std()),
        total_rmse_wh=float(np.sqrt(np.mean(noise_err**2))),
        total_mean_wh=float(np.mean(exact_full)),
    )


@dataclass(frozen=True, slots=True)
class ProbingResult:
    protections: bool
    days: int
    answered: int
    refused: int
    bits_per_day: float
    mae_w: float  # error of the utility's estimate of every reading
    baseline_mae_w: float  # error of guessing the population median

    def as_dict(self) -> dict[str, object]:
        return {
            "protections": self.protections,
            "days": self.days,
            "answered": self.answered,
            "refused": self.refused,
            "bits_per_day": round(self.bits_per_day, 2),
            "mae_w": round(self.mae_w, 1),
            "baseline_mae_w": round(self.baseline_mae_w, 1),
        }


def probing_attack(
    power_w: IntArray,
    budget: PrivacyBudget,
    *,
    protections: bool,
    start_unix: int,
    prior_median_w: int,
    interval_seconds: int = 900,
) -> ProbingResult:
    """Binary search of one household's power readings with comparisons (see module docstring).

    ``power_w``: (intervals,) the W a comparison reads at each interval.
    The utility asks up to :data:`PROBE_BITS` comparisons per interval; an
    unfinished search carries its range over to the next interval (readings
    are correlated), a finished one restarts at the full range.
    """
    cb = ComparisonBudget(
        comparisons_per_interval=budget.comparisons_per_interval if protections else 1 << 30,
        comparisons_per_day=budget.comparisons_per_day if protections else 1 << 30,
        same_threshold_for_group=budget.same_threshold_for_group,
        min_group_size=budget.min_group_size,
        interval_seconds=interval_seconds,
    )
    top = 1 << PROBE_BITS
    lo, hi = 0, top  # reading in [lo, hi)
    answered = refused = 0
    estimates = np.empty(len(power_w), dtype=np.float64)
    for t, x in enumerate(power_w.tolist()):
        reading = (
            start_unix // interval_seconds + t
        )  # the budget is keyed on the reading's interval
        x = min(max(int(x), 0), top - 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                cb.charge(reading)
            except BudgetExceeded:
                refused += 1
                break
            answered += 1
            if x >= mid:
                lo = mid
            else:
                hi = mid
        # the utility's best guess: its prior, moved into the range its answers allow
        estimates[t] = min(max(prior_median_w, lo), hi - 1)
        if hi - lo <= 1:
            lo, hi = 0, top  # resolved: the next interval is a new search
    days = max(1, len(power_w) * interval_seconds // 86400)
    clipped = np.clip(power_w, 0, top - 1).astype(np.float64)
    return ProbingResult(
        protections=protections,
        days=days,
        answered=answered,
        refused=refused,
        bits_per_day=answered / days,
        mae_w=float(np.mean(np.abs(estimates - clipped))),
        baseline_mae_w=float(np.mean(np.abs(prior_median_w - clipped))),
    )
