"""The meter's comparison budget and the utility's threshold policy for demand events.

:class:`ComparisonBudget` is the ledger a meter keeps of the comparisons it
answered, per reading and per day of readings, keyed on the compared
reading's own interval (never on a time a peer sends): it is what bounds
the head-end's knowledge to ``comparisons_per_day`` bits a day
(:mod:`privmeter.protocol.demand` states the bound).  :func:`choose_threshold`
is the utility's policy for the threshold ``T`` of an event, from the
group's total and size only; :func:`plaintext_targets` is its plaintext
reference of who is targeted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from privmeter.errors import BudgetExceeded, InvalidArgument, LocalProtocolError
from privmeter.protocol.comparison import DEFAULT_BITS, clamp_value
from privmeter.protocol.demand_messages import SIDES

__all__ = [
    "DAY_S",
    "MAX_READING_AGE",
    "ComparisonBudget",
    "choose_threshold",
    "plaintext_targets",
]

DAY_S = 86400
MAX_READING_AGE = (
    2  # intervals: a meter compares only a reading of its own clock's last two intervals
)


# -- budget ---------------------------------------------------------------------------


@dataclass(slots=True)
class ComparisonBudget:
    """The plan's comparison budget, enforced by the meter (a ledger per interval and day)."""

    comparisons_per_interval: int = 1
    comparisons_per_day: int = 4
    same_threshold_for_group: bool = True
    min_group_size: int = 5
    interval_seconds: int = 900
    _per_interval: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _per_day: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    # called after every charge, before the answer leaves (a meter persists its
    # ledger there: see parties/meter_state.py)
    on_change: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.comparisons_per_interval < 0 or self.comparisons_per_day < 0:
            raise InvalidArgument("budgets must be non-negative")
        if self.interval_seconds <= 0 or DAY_S % self.interval_seconds:
            raise InvalidArgument("interval_seconds must divide a day")

    @classmethod
    def from_plan(cls, plan: Any) -> ComparisonBudget:
        """From a :class:`privmeter.grid.tariff.plans.Plan` (its ``privacy`` section)."""
        pb = plan.privacy
        return cls(
            comparisons_per_interval=pb.comparisons_per_interval,
            comparisons_per_day=pb.comparisons_per_day,
            same_threshold_for_group=pb.same_threshold_for_group,
            min_group_size=pb.min_group_size,
            interval_seconds=plan.interval_seconds,
        )

    def _slots(self, reading_interval: int) -> tuple[int, int]:
        return reading_interval, reading_interval * self.interval_seconds // DAY_S

    def check(self, reading_interval: int) -> None:
        """Raise :class:`~privmeter.errors.BudgetExceeded` if one more comparison of the
        reading of ``reading_interval`` (or of its day's readings) is over budget."""
        iv, day = self._slots(reading_interval)
        if self._per_interval.get(iv, 0) >= self.comparisons_per_interval:
            raise BudgetExceeded(
                f"{self.comparisons_per_interval} comparisons of this reading already used",
                interval=iv,
            )
        if self._per_day.get(day, 0) >= self.comparisons_per_day:
            raise BudgetExceeded(
                f"{self.comparisons_per_day} comparisons of this day's readings already used",
                day=day,
            )

    def charge(self, reading_interval: int) -> None:
        """Check, then record one comparison of the reading of ``reading_interval``.

        The ledger is keyed on the reading's own interval and day, never on a
        time a peer sends: no clock, however wrong, gives a reading a second budget.
        Entries older than the day before are dropped (a reading that old is
        never compared again: :data:`MAX_READING_AGE`).
        """
        self.check(reading_interval)
        iv, day = self._slots(reading_interval)
        self._per_interval[iv] = self._per_interval.get(iv, 0) + 1
        self._per_day[day] = self._per_day.get(day, 0) + 1
        for d in [d for d in self._per_day if d < day - 1]:
            del self._per_day[d]
        keep = DAY_S // self.interval_seconds
        for i in [i for i in self._per_interval if i < iv - keep]:
            del self._per_interval[i]
        if self.on_change is not None:
            self.on_change()

    def state(self) -> dict[str, Any]:
        """The ledger as JSON-ready data (``privmeter.comparisons/1``)."""
        return {
            "format": "privmeter.comparisons/1",
            "per_interval": sorted(self._per_interval.items()),
            "per_day": sorted(self._per_day.items()),
        }

    def restore(self, st: Any) -> None:
        """Load a :meth:`state` (raises ``ValueError`` on anything malformed, unchanged)."""
        try:
            ok = (
                isinstance(st, dict)
                and st.get("format") == "privmeter.comparisons/1"
                and all(
                    len(x) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in x)
                    for key in ("per_interval", "per_day")
                    for x in st[key]
                )
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise InvalidArgument("not a privmeter.comparisons/1 ledger")
        self._per_interval = {k: v for k, v in st["per_interval"]}
        self._per_day = {k: v for k, v in st["per_day"]}

    def used_today(self, now: int) -> int:
        """Comparisons charged on readings of the (unix) day of ``now``."""
        return self._per_day.get(now // DAY_S, 0)


# -- threshold policy -------------------------------------------------------------------


def choose_threshold(
    total_w: int, group_size: int, gap_w: int, level_w: int, side: str, *, bits: int = DEFAULT_BITS
) -> int:
    """The policy: a threshold expected to close ``gap_w``, from the total and group size only.

    Model: readings i.i.d. exponential with mean ``mu = total_w / group_size``.
    ``side="above"``: meters with ``x >= T`` go down to ``level_w`` (the plan's
    cap); expected shed ``N * exp(-T/mu) * (T + mu - level)`` for ``T >= level``;
    the largest ``T`` whose shed covers ``gap_w`` (the fewest households
    disturbed).  ``side="below"``: meters with ``x < T`` go up to ``level_w``;
    expected gain ``N * (level*(1-e) - mu + e*(T+mu))`` with ``e = exp(-T/mu)``
    for ``T <= level``; the smallest ``T`` that covers the gap.  The result is
    clamped into the comparison's range.
    """
    if group_size <= 0:
        raise LocalProtocolError("group_size must be positive")
    half = 1 << (bits - 1)
    mu = max(total_w / group_size, 1.0)
    n = group_size

    def shed(t: int) -> float:
        return n * math.exp(-t / mu) * (t + mu - level_w)

    def gain(t: int) -> float:
        e = math.exp(-t / mu)
        return n * (level_w * (1 - e) - mu + e * (t + mu))

    lo_t = max(level_w, 0)
    if side == "above":
        hi = max(lo_t, int(40 * mu) + lo_t)
        if shed(lo_t) < gap_w:
            t = lo_t
        else:
            lo, h = lo_t, hi  # shed(lo) >= gap, decreasing in T
            while h - lo > 1:
                mid = (lo + h) // 2
                if shed(mid) >= gap_w:
                    lo = mid
                else:
                    h = mid
            t = lo
    elif side == "below":
        if gain(lo_t) < gap_w:
            t = lo_t
        else:
            lo, h = 0, lo_t  # gain increasing in T on [0, level]
            while h - lo > 1:
                mid = (lo + h) // 2
                if gain(mid) >= gap_w:
                    h = mid
                else:
                    lo = mid
            t = h
    else:
        raise LocalProtocolError(f"side must be one of {SIDES}")
    return min(max(t, -half + 1), half - 1)


def plaintext_targets(
    readings_w: Mapping[str, int], threshold: int, side: str, bits: int = DEFAULT_BITS
) -> set[str]:
    """Plaintext reference of who is targeted (readings clamped as the meters do)."""
    return {
        m for m, x in readings_w.items() if (clamp_value(x, bits) >= threshold) == (side == "above")
    }
