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
A meter keeps it across restarts in its ledger file
(:mod:`privmeter.parties.meter_state`; in memory only without one).

Security assumption: rosters are signed by the head-end (so a meter knows
exactly what it is asked to serve) and a meter's clock is roughly right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from privmeter.errors import GroupTooSmall, InvalidArgument, MembershipChangeRefused
from privmeter.grid.tariff.plans import PrivacyBudget

__all__ = ["MembershipPolicy"]

DAY_S = 86400
SERVED_MEMORY_DAYS = 7  # served intervals remembered; anything older than that is refused
STATE_FORMAT = "privmeter.membership/1"


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
    # called after every recorded change, before the caller acts on it (a meter
    # persists its ledger there: see parties/meter_state.py)
    on_change: Callable[[], None] | None = field(default=None, repr=False, compare=False)

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
                meter_id=self.meter_id,
                group=group_id,
            )
        if self.group_id == group_id and self.roster == roster:
            return  # no change
        first = self.group_id is None
        if self.enforce and not first:
            if from_interval <= self.last_served:
                raise MembershipChangeRefused(
                    f"roster change back to interval {from_interval}, already served "
                    f"interval {self.last_served}: one group per interval",
                    meter_id=self.meter_id,
                    interval=from_interval,
                )
            day = self._day(from_interval)
            if self._changes.get(day, 0) >= self.budget.max_membership_changes_per_day:
                raise MembershipChangeRefused(
                    f"{self.budget.max_membership_changes_per_day} roster changes already "
                    f"made on day {day}",
                    meter_id=self.meter_id,
                    day=day,
                )
        if not first:
            day = self._day(from_interval)
            self._changes[day] = self._changes.get(day, 0) + 1
        self.group_id, self.roster, self.since = group_id, roster, from_interval
        if self.on_change is not None:
            self.on_change()

    def serve(self, group_id: str, interval: int) -> None:
        """Check (then record) that this meter may contribute to ``group_id`` at ``interval``."""
        if self.enforce:
            if group_id != self.group_id or interval < self.since:
                raise MembershipChangeRefused(
                    f"asked to serve {group_id!r} at interval {interval}, current group is "
                    f"{self.group_id!r} since {self.since}",
                    meter_id=self.meter_id,
                    interval=interval,
                )
            served = self._served.get(interval, set())
            if served and group_id not in served:
                raise MembershipChangeRefused(
                    f"interval {interval} already served for another group",
                    meter_id=self.meter_id,
                    interval=interval,
                )
            if group_id in served:  # e.g. a new epoch re-running an interval: a second total
                raise MembershipChangeRefused(
                    f"interval {interval} already served for {group_id!r}: one reading, one total",
                    meter_id=self.meter_id,
                    interval=interval,
                )
            if interval <= self.last_served - self._memory():  # older than what we remember
                raise MembershipChangeRefused(
                    f"interval {interval} is more than {SERVED_MEMORY_DAYS} days before the last "
                    f"one served ({self.last_served})",
                    meter_id=self.meter_id,
                    interval=interval,
                )
        self._served.setdefault(interval, set()).add(group_id)
        self.last_served = max(self.last_served, interval)
        horizon = self.last_served - self._memory()
        for old in [t for t in self._served if t <= horizon]:
            del self._served[old]
        if self.on_change is not None:
            self.on_change()

    def _memory(self) -> int:
        return SERVED_MEMORY_DAYS * DAY_S // self.interval_seconds

    # -- persistence: a meter keeps its ledger across restarts ---------------------------
    def state(self) -> dict[str, Any]:
        """The ledger as JSON-ready data (versioned: ``STATE_FORMAT``)."""
        return {
            "format": STATE_FORMAT,
            "group_id": self.group_id,
            "roster": sorted(self.roster),
            "since": self.since,
            "last_served": self.last_served,
            "changes": [[d, n] for d, n in sorted(self._changes.items())],
            "served": [[t, sorted(gs)] for t, gs in sorted(self._served.items())],
        }

    def restore(self, st: Any) -> None:
        """Load a :meth:`state` (raises ``ValueError`` on anything malformed, unchanged)."""

        def ints(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        try:
            ok = (
                isinstance(st, dict)
                and st.get("format") == STATE_FORMAT
                and (st["group_id"] is None or isinstance(st["group_id"], str))
                and isinstance(st["roster"], list)
                and all(isinstance(m, str) for m in st["roster"])
                and ints(st["since"])
                and ints(st["last_served"])
                and all(len(x) == 2 and ints(x[0]) and ints(x[1]) for x in st["changes"])
                and all(
                    len(x) == 2 and ints(x[0]) and all(isinstance(g, str) for g in x[1])
                    for x in st["served"]
                )
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise InvalidArgument(f"not a {STATE_FORMAT} ledger")
        self.group_id, self.roster = st["group_id"], frozenset(st["roster"])
        self.since, self.last_served = st["since"], st["last_served"]
        self._changes = {d: n for d, n in st["changes"]}
        self._served = {t: set(gs) for t, gs in st["served"]}

    def changes_on(self, day: int) -> int:
        return self._changes.get(day, 0)
