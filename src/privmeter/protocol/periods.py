"""Billing periods: fixed-length runs of intervals, or calendar months (UTC).

What it is for: a meter's registration fixes its billing period layout as
``(period_start, period_intervals)``.  ``period_intervals > 0`` is a fixed
length (tests, weekly or 30-day periods); ``period_intervals == MONTHLY``
(0) means calendar months in UTC: period 0 is the month that starts at
interval ``period_start`` (which must be the first interval of a UTC month),
period ``k`` the ``k``-th month after it, so periods have 28 to 31 days.
The head-end's ledger, the household agent and the deployment's engine all
compute periods here, so they always agree on where a bill starts and ends.

Security: none of its own (public arithmetic).  Guarantee: the periods
partition the intervals from ``period_start`` on, in order, without gaps;
every interval length that divides a day puts month boundaries on interval
boundaries (plans require it: ``interval_seconds`` divides 86400).
"""

from __future__ import annotations

import datetime

from privmeter.errors import InvalidArgument

__all__ = ["MONTHLY", "check_layout", "period_bounds", "period_of"]

MONTHLY = 0  # period_intervals meaning: calendar months (UTC)


def _month_index(unix: int) -> int:
    d = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return d.year * 12 + d.month - 1


def _month_start(index: int) -> int:
    y, m = divmod(index, 12)
    return int(datetime.datetime(y, m + 1, 1, tzinfo=datetime.UTC).timestamp())


def check_layout(period_start: int, period_intervals: int, interval_seconds: int) -> None:
    """ValueError unless the layout is usable (see the module docstring)."""
    if period_start < 0 or period_intervals < 0:
        raise InvalidArgument("period_start and period_intervals must be non-negative")
    if period_intervals == MONTHLY:
        unix = period_start * interval_seconds
        if 86400 % interval_seconds or _month_start(_month_index(unix)) != unix:
            raise InvalidArgument(
                f"monthly periods must start at a UTC month start, got interval {period_start}"
            )


def period_of(
    interval: int, period_start: int, period_intervals: int, interval_seconds: int
) -> int:
    """The billing period that ``interval`` falls in (negative: before the first)."""
    if period_intervals != MONTHLY:
        return (interval - period_start) // period_intervals
    return _month_index(interval * interval_seconds) - _month_index(period_start * interval_seconds)


def period_bounds(
    period: int, period_start: int, period_intervals: int, interval_seconds: int
) -> tuple[int, int]:
    """``[start, end)`` intervals of billing period ``period``."""
    if period_intervals != MONTHLY:
        start = period_start + period * period_intervals
        return start, start + period_intervals
    first = _month_index(period_start * interval_seconds) + period
    return _month_start(first) // interval_seconds, _month_start(first + 1) // interval_seconds
