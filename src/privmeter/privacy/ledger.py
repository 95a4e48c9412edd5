"""The leakage ledger: bits the utility learns about each household, per day, under its plan.

What it is for: one number per household and day that a household (and the
dashboard) can read: "today the utility learned at most B bits about you",
split by channel, with the accounting rule of each channel stated here.
All figures are *upper bounds* on information (log2 of the number of
values the channel can distinguish), not estimates of what an attacker
extracts; the attack tables measure the latter.

Channels (per household, per day):

* ``comparison_bits``: 1 per comparison the meter answered (a bit
  ``[x >= T]`` carries at most 1 bit); the meter's budget caps it at
  ``comparisons_per_day``.
* ``bill_bits``: a settled bill reveals one integer per billing period.
  Over a period of ``P`` days with energy in ``[0, E_max]`` Wh (``E_max`` =
  :data:`MAX_HOUSEHOLD_W` for 24 h x P) and ``k`` distinct prices, the bill
  takes at most ``(E_max + 1)^k`` values, and never more than
  ``max_price * E_max + 1`` (the plan's price bound, see
  ``grid/tariff/plans.py``); the ledger charges ``log2`` of the smaller, spread
  over the ``P`` days.  Realtime tariffs: the ``max_price`` bound (or
  ``k = len(allowed_prices)`` when declared).
* ``totals_bits``: 0 when the household's group has at least the plan's
  ``min_group_size`` members (the masked aggregation reveals only the total;
  what a total of >= min members reveals about one of them is what the
  attack tables measure, and they find it at the no-information baseline).
  A smaller group (protections off) is charged the full readings:
  ``intervals_per_day * BITS_PER_READING``.
* ``differencing_bits``: protections on, each allowed roster change can
  yield one estimate of one reading: ``max_membership_changes_per_day *
  BITS_PER_READING`` (an upper bound: the measured estimates are worse than
  guessing).  Protections off (overlapping groups): every reading,
  ``intervals_per_day * BITS_PER_READING``.

Security assumption: the meter enforces the budgets (comparison budget,
membership policy).  Guarantee: for a utility that follows its plan, the
per-day total is an upper bound on the information it gets through these
channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privmeter.grid.tariff.plans import Plan

__all__ = [
    "BITS_PER_READING",
    "MAX_HOUSEHOLD_W",
    "LedgerEntry",
    "bill_bits_per_day",
    "build_ledger",
    "readings_bits_per_day",
]

MAX_HOUSEHOLD_W = 23_000  # a 100 A single-phase UK supply at 230 V
BITS_PER_READING = math.log2(2 * MAX_HOUSEHOLD_W * 900 // 3600 + 1)  # a 15-min reading in [-E, E]


def readings_bits_per_day(interval_seconds: int) -> float:
    """Upper bound on the information in one day of one household's readings at a resolution."""
    e = MAX_HOUSEHOLD_W * interval_seconds // 3600
    return (86400 // interval_seconds) * math.log2(2 * e + 1)


def bill_bits_per_day(plan: Plan, period_days: int = 30) -> float:
    """The bill channel's bits per day (see the module docstring)."""
    e_max = MAX_HOUSEHOLD_W * 24 * period_days
    bound = math.log2(plan.max_price * e_max + 1)
    prices = plan.tariff.distinct_prices() or plan.tariff.allowed_prices
    if prices:
        bound = min(bound, len(set(prices)) * math.log2(e_max + 1))
    return bound / period_days


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    household_id: str
    day: int
    comparison_bits: float
    bill_bits: float
    totals_bits: float
    differencing_bits: float

    @property
    def total_bits(self) -> float:
        return self.comparison_bits + self.bill_bits + self.totals_bits + self.differencing_bits

    def as_dict(self) -> dict[str, object]:
        return {
            "household_id": self.household_id,
            "day": self.day,
            "comparison_bits": round(self.comparison_bits, 3),
            "bill_bits": round(self.bill_bits, 3),
            "totals_bits": round(self.totals_bits, 3),
            "differencing_bits": round(self.differencing_bits, 3),
            "total_bits": round(self.total_bits, 3),
        }


def build_ledger(
    ids: Sequence[str],
    answered: npt.NDArray[np.int64],
    plan: Plan,
    *,
    group_size: int,
    protections: bool,
    first_day: int = 0,
    bill_period_days: int = 30,
    interval_seconds: int = 900,
) -> list[LedgerEntry]:
    """One entry per household and day; ``answered``: (N, days) comparisons answered."""
    pb = plan.privacy
    per_day_readings = readings_bits_per_day(interval_seconds)
    bill = bill_bits_per_day(plan, bill_period_days)
    if protections and group_size < pb.min_group_size:
        totals = 0.0  # the meters refuse (GroupTooSmall): no total at all
    else:
        totals = 0.0 if group_size >= pb.min_group_size else per_day_readings
    if protections:
        diff = min(pb.max_membership_changes_per_day * BITS_PER_READING, per_day_readings)
    else:
        diff = per_day_readings
    out = []
    for i, hid in enumerate(ids):
        for d in range(answered.shape[1]):
            out.append(
                LedgerEntry(
                    household_id=hid,
                    day=first_day + d,
                    comparison_bits=float(answered[i, d]),
                    bill_bits=bill,
                    totals_bits=totals,
                    differencing_bits=diff,
                )
            )
    return out
