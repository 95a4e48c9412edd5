"""The household snapshot: one household's own view, beside what the utility saw of it.

What it is for: :func:`household_snapshot` freezes what the household's app
shows -- its true load (what its meter measures), the readings its meter
reported, its bills as it computed them, its plan, comparison budget and
directives -- with what the head-end received from it (from the
:class:`~privmeter.web.snapshot_operator.HeadEndLog`) and, for the privacy
panel, the simulation's ground-truth occupancy (:func:`load_occupancy`), into
a :class:`~privmeter.web.snapshot.HouseholdSnapshot`.

Security: this is the one place the dashboard reads a party's private state;
only the household and privacy views receive its result.  Threading: the
engine thread (it reads the meter agent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from privmeter.parties.meter import MeterAgent
from privmeter.parties.meter_feed import MeterLoad
from privmeter.sim.scenario import Scenario, synthetic_homes
from privmeter.web.snapshot import HouseholdSnapshot, freeze
from privmeter.web.snapshot_operator import HeadEndLog

__all__ = ["household_snapshot", "load_occupancy"]

DAY_MINUTES = 24 * 60  # the load curve shown: the last day
READINGS_SHOWN = 96  # the latest readings shown (a day of 15-minute intervals)
SEEN_SHOWN = 4  # what the utility saw of it: the latest masked inputs and ciphertexts


def household_snapshot(
    agent: MeterAgent,
    load: MeterLoad,
    log: HeadEndLog,
    *,
    household_bills: Mapping[tuple[str, int], int],
    probes: Sequence[Mapping[str, Any]],
    offline: bool,
    occupancy: Sequence[int] | None,
    current: int,
    interval_seconds: int,
) -> HouseholdSnapshot:
    """One household's own view, frozen: ``agent`` is its meter, ``load`` the load the meter
    measures (its feed's; the household's true consumption), ``household_bills`` the bills
    households computed ((meter, period) -> bill), ``occupancy`` its ground truth per minute
    from the start of its load (0 away, 1 asleep, 2 active) if known; ``current`` the last
    interval stepped."""
    meter = agent.meter_id
    now = (current + 1) * interval_seconds
    t0 = 0
    minute_w: tuple[int, ...] = ()
    if load.minute_w is not None:
        end = (now - load.start_unix) // 60
        start = max(0, end - DAY_MINUTES)
        t0, minute_w = (
            load.start_unix + start * 60,
            tuple(int(v) for v in load.minute_w[start:end]),
        )
    occ = None
    if occupancy is not None and minute_w:
        i0 = (t0 - load.start_unix) // 60
        occ = tuple(int(v) for v in occupancy[i0 : i0 + len(minute_w)])
    g = log.group_of[meter]
    own = [
        {**b, "household_bill": household_bills.get((m, p))}
        for (m, p), b in sorted(log.bills.items())
        if m == meter
    ]
    recs = list(log.seen_records[meter])
    bits = sum(1 for ev in log.events if meter in ev["answered"]) + sum(
        s["answered"] for p in probes if p["meter"] == meter for s in p["steps"]
    )
    return HouseholdSnapshot(
        meter=meter,
        group=g,
        offline=offline,
        interval_seconds=interval_seconds,
        sim_time=now,
        load_start=t0,
        minute_w=minute_w,
        occupancy=occ,
        readings=tuple(sorted(agent.local_readings.items())[-READINGS_SHOWN:]),
        bills=freeze(own),
        plan=agent.plan,
        used_today=agent.demand.budget.used_today(now) if agent.demand is not None else 0,
        directives=freeze(
            [
                {
                    "event_id": d.event_id,
                    "action": d.action,
                    "start_time": d.start_interval * interval_seconds,
                    "minutes": d.duration_minutes,
                    "limit_w": d.limit_w,
                }
                for d in agent.directives
            ]
        ),
        masked_seen=freeze(list(log.seen_masked[meter])[-SEEN_SHOWN:][::-1]),
        ciphertexts_seen=tuple(r["ciphertext"] for r in recs[-SEEN_SHOWN:][::-1]),
        feeder_members=len(log.groups[g]),
        feeder_totals=freeze([r for r in log.totals[g] if r["time"] >= t0]),
        comparison_bits=bits,
    )


def load_occupancy(sc: Scenario) -> dict[str, Any]:
    """Ground-truth occupancy per minute (0 away, 1 asleep, 2 active) of every household of the
    scenario, from the cached profiles (meter id -> array); empty if they cannot be rebuilt."""
    try:
        homes = synthetic_homes(sc)
        return {f"m{i:05d}": h.occupancy for i, h in enumerate(homes)}
    except Exception:
        return {}
