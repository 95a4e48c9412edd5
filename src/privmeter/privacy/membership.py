"""Meter-side group-membership policy: the defence against differencing.

What it is for: a utility that aggregates a group ``G`` and also
``G - {victim}`` learns the victim's reading as the difference of the two
totals.  The masked aggregation itself cannot see this (each total is a
legitimate total of >= min_group_size meters); the meters can, because each
knows which signed rosters it has been asked to serve.  This policy, kept
by every meter, enforces the plan's rules (``PrivacyBudget``):

1. a roster smaller than ``min_group_size`` is refused
   (:class:`~privmeter.errors.GroupTooSmall`);
2. a meter serves exactly one group per interval, once: contributing to a
   second group, or a second time to the same group (a new epoch re-running
   the interval), for an interval it has already served, or admitting a
   roster that starts at or before an interval already served, is refused
   (:class:`~privmeter.errors.MembershipChangeRefused`): the two totals of
   the *same* interval that exact differencing needs never both exist;
3. at most ``max_membership_changes_per_day`` roster changes take effect
   per (UTC) day, refused beyond (``MembershipChangeRefused``): a utility
   that alternates ``G`` and ``G - {v}`` over time gets at most that many
   boundaries a day, each giving only an *estimate* of one reading (the
   other members' change between adjacent intervals is the error; measured
   in :mod:`privmeter.privacy.differencing`).

Every check happens before any state change: a refused request leaves the
policy as it was.  Where it is enforced: every meter party
(:class:`privmeter.parties.meter.MeterAgent`) keeps one policy from its
plan's ``PrivacyBudget`` and hands it to each
:class:`~privmeter.protocol.aggregation.AggregationMeter` it runs, which
calls :meth:`MembershipPolicy.admit` as the last check on every key bundle
(the signed roster) and :meth:`MembershipPolicy.serve` as the last check
before contributing a reading; ``min_survivors`` additionally bounds every
interval's survivor set (tests: ``tests/protocol/test_aggregation_membership.py``).
The policy lives in the meter's memory: a restarted meter starts a new
record (the per-day limit then restarts with it).

Security assumption: rosters are signed by the head-end (so a meter knows
exactly what it is asked to serve) and a meter's clock is roughly right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from privmeter.errors import GroupTooSmall, MembershipChangeRefused
from privmeter.grid.plans import PrivacyBudget

__all__ = ["MembershipPolicy"]

DAY_S = 86400


@dataclass
class MembershipPolicy:
    """One meter's record of the rosters it serves (see the module docstring)."""

    meter_id: str
    budget: PrivacyBudget
    interval_seconds: int = 900
    enforce: bool = True  # False: protections off (for the evaluation's comparison)
    group_id: str | None = None
    roster: frozenset[str] = frozenset()
    since: int = -1  # first interval of the current roster
    last_served: int = -1
    _changes: dict[int, int] = field(default_factory=dict, repr=False)
    _served: dict[int, set[str]] = field(default_factory=dict, repr=False)

    def _day(self, interval: int) -> int:
        return interval * self.interval_seconds // DAY_S

    def admit(self, group_id: str, roster: frozenset[str], *, from_interval: int) -> None:
        """Accept serving ``group_id`` with ``roster`` from ``from_interval`` on."""
        if self.meter_id not in roster:
            raise MembershipChangeRefused(
                f"roster of {group_id!r} does not contain this meter", meter_id=self.meter_id
            )
        if self.enforce and len(roster) < self.budget.min_group_size:
            raise GroupTooSmall(
                f"roster of {len(roster)} meters, expected at least {self.budget.min_group_size}",
                meter_id=self.meter_id, group=group_id,
            )
        if self.group_id == group_id and self.roster == roster:
            return  # no change
        first = self.group_id is None
        if self.enforce and not first:
            if from_interval <= self.last_served:
                raise MembershipChangeRefused(
                    f"roster change back to interval {from_interval}, already served "
                    f"interval {self.last_served}: one group per interval",
                    meter_id=self.meter_id, interval=from_interval,
                )
            day = self._day(from_interval)
            if self._changes.get(day, 0) >= self.budget.max_membership_changes_per_day:
                raise MembershipChangeRefused(
                    f"{self.budget.max_membership_changes_per_day} roster changes already "
                    f"made on day {day}",
                    meter_id=self.meter_id, day=day,
                )
        if not first:
            day = self._day(from_interval)
            self._changes[day] = self._changes.get(day, 0) + 1
        self.group_id, self.roster, self.since = group_id, roster, from_interval

    def serve(self, group_id: str, interval: int) -> None:
        """Check (then record) that this meter may contribute to ``group_id`` at ``interval``."""
        if self.enforce:
            if group_id != self.group_id or interval < self.since:
                raise MembershipChangeRefused(
                    f"asked to serve {group_id!r} at interval {interval}, current group is "
                    f"{self.group_id!r} since {self.since}",
                    meter_id=self.meter_id, interval=interval,
                )
            served = self._served.get(interval, set())
            if served and group_id not in served:
                raise MembershipChangeRefused(
                    f"interval {interval} already served for another group",
                    meter_id=self.meter_id, interval=interval,
                )
            if group_id in served:  # e.g. a new epoch re-running an interval: a second total
                raise MembershipChangeRefused(
                    f"interval {interval} already served for {group_id!r}: one reading, one total",
                    meter_id=self.meter_id, interval=interval,
                )
        self._served.setdefault(interval, set()).add(group_id)
        self.last_served = max(self.last_served, interval)

    def changes_on(self, day: int) -> int:
        return self._changes.get(day, 0)
