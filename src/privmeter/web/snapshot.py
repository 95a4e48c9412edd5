"""Immutable snapshots of a running demo: the only input of the dashboard's views.

What it is for: :class:`~privmeter.web.engine.DemoEngine` owns every party
(meters with their true load, households with their bills, the head-end); the
views (:mod:`privmeter.web.views`) turn state into the JSON a panel shows.
They never see the engine: the engine builds one of these frozen snapshots on
its own thread and hands it to a view.

* :class:`OperatorSnapshot` holds only what the utility's head-end holds
  (feeder totals, demand events and comparison bits, statements and proven
  bills, alerts, the ciphertexts and masked inputs it received, and for one
  meter its :class:`MeterHoldings`).  It has no field for a meter's load, a
  household's own bill or any party's key, so the operator views cannot show
  them: the privacy promise of the operator view is kept by the type.
* :class:`HouseholdSnapshot` holds one household's own view: its load (from
  its meter's local port), its readings, its bills as it computed them, its
  plan, budget and directives, beside what the utility saw of it; the privacy
  panel adds the simulation's ground-truth occupancy to score the inference.

Every field is read-only (tuples, frozensets and read-only mappings, built
by :func:`freeze`); :func:`thaw` turns a field back into plain JSON values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from privmeter.grid.tariff.plans import Plan

__all__ = ["HouseholdSnapshot", "MeterHoldings", "OperatorSnapshot", "freeze", "thaw"]


def freeze(value: Any) -> Any:
    """A read-only deep copy of JSON-like data (dicts -> read-only mappings, lists -> tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple) or type(value).__name__ == "deque":
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON values (dicts and lists) from frozen data."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterHoldings:
    """Everything the head-end holds about one meter's household (the utility view)."""

    meter: str
    registration: Mapping[str, Any] | None  # verify key, plan, household key id, period layout
    reading_ciphertexts: Sequence[Mapping[str, Any]]  # the latest records it received, oldest first
    masked_inputs: Sequence[Mapping[str, Any]]  # the latest masked inputs, oldest first
    comparison_bits: Sequence[
        Mapping[str, Any]
    ]  # per demand event: threshold, side, bit, directive
    account: (
        Mapping[str, Any] | None
    )  # the open period's encrypted accumulator: period, records, cells


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """The demo run's public state at one moment (the clock, the controls, the set-up)."""

    status: str  # running, paused or finished
    paused: bool
    speed: float
    current: int  # the last interval stepped
    first: int
    last: int
    interval_seconds: int
    days: int
    key_bits: int
    dgk_bits: int
    plan: str
    bill_intervals: int
    transport: str
    network: Mapping[str, int]
    step_ms: float | None
    offline: frozenset[str]  # meters that do not answer (the head-end sees who is missing)


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorSnapshot(RunState):
    """The demo at one moment, as the utility's head-end holds it (no household data): the
    run's public state and what the head-end received."""

    meter_ids: Sequence[str]
    groups: Mapping[str, Sequence[str]]
    group_of: Mapping[str, str]
    group_limits: Mapping[str, tuple[int, int] | None]  # (Cmin W, Cmax W) per feeder, once running
    totals: Mapping[str, Sequence[Mapping[str, Any]]]  # feeder totals, oldest first
    events: Sequence[Mapping[str, Any]]
    probes: Sequence[Mapping[str, Any]]
    bills: Mapping[tuple[str, int], Mapping[str, Any]]  # statements: status, proven bill, audit
    alerts: Sequence[Mapping[str, Any]]
    alert_count: int
    holdings: Mapping[str, MeterHoldings]  # only for the meters a view asked about

    @property
    def sim_time(self) -> int:
        """Unix seconds of simulated time at the end of the current interval."""
        return (self.current + 1) * self.interval_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class HouseholdSnapshot:
    """One household's own view (its app) and the privacy comparison's inputs."""

    meter: str
    group: str
    offline: bool
    interval_seconds: int
    sim_time: int
    load_start: int  # unix seconds of minute_w[0]
    minute_w: Sequence[int]  # its true load per minute over the last day (its meter's local port)
    occupancy: Sequence[int] | None  # ground truth per minute of minute_w (simulation), if known
    readings: Sequence[tuple[int, int]]  # (interval, Wh) its meter reported, latest day
    bills: Sequence[Mapping[str, Any]]  # its statements with its own bill, oldest first
    plan: Plan
    used_today: int  # comparisons answered today
    directives: Sequence[Mapping[str, Any]]
    masked_seen: Sequence[Mapping[str, Any]]  # what the utility saw of it, latest first
    ciphertexts_seen: Sequence[str]  # hex, latest first
    feeder_members: int
    feeder_totals: Sequence[Mapping[str, Any]]  # its feeder's totals since load_start
    comparison_bits: int  # bits the utility learned about it (events answered + probe steps)
