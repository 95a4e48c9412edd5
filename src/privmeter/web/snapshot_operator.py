"""The operator snapshot, built from what the utility's head-end holds and nothing else.

What it is for: :class:`HeadEndLog` is the dashboard's record of what the
head-end received and decided -- per feeder the unmasked totals, the
demand-management events, the statements it issued with their settlement and
audit, and per meter the latest reading ciphertexts and masked inputs that
reached it; :func:`operator_snapshot` freezes it, with the head-end core's own
state (feeder limits, registrations, comparison bits, encrypted accumulators),
into an :class:`~privmeter.web.snapshot.OperatorSnapshot` for the operator
views.

Guarantee: this module never imports a meter, a household, the simulation or
the engine (an import-linter contract in ``pyproject.toml``): its inputs are
the head-end core, the log above (which has no field for a reading, a load or
a household's own bill) and the run's public state, so an operator view cannot
show a household's data.  Threading: the engine thread (it reads the core).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from privmeter.parties.headend import HeadEndCore
from privmeter.protocol.aggregation_messages import MaskedInput
from privmeter.protocol.records import ReadingRecord
from privmeter.web.alerts import Alerts
from privmeter.web.snapshot import MeterHoldings, OperatorSnapshot, RunState, freeze

__all__ = ["MAX_POINTS", "SEEN_PER_METER", "HeadEndLog", "operator_snapshot"]

MAX_POINTS = 2000  # totals kept per feeder for the charts
SEEN_PER_METER = 16  # ciphertexts / masked inputs kept per meter for the utility view


class HeadEndLog:
    """What the head-end received and decided, kept for the dashboard (engine thread; mutable)."""

    def __init__(self, groups: Mapping[str, Sequence[str]]) -> None:
        self.groups = {g: list(ms) for g, ms in groups.items()}  # feeder -> its meters
        self.group_of = {m: g for g, ms in self.groups.items() for m in ms}
        meters = sorted(self.group_of)
        self.totals: dict[str, deque[dict[str, Any]]] = {
            g: deque(maxlen=MAX_POINTS) for g in groups
        }  # per feeder, oldest first
        self.events: list[dict[str, Any]] = []  # demand events run, oldest first
        self.bills: dict[tuple[str, int], dict[str, Any]] = {}  # (meter, period) -> statement row
        self.seen_records: dict[str, deque[dict[str, Any]]] = {
            m: deque(maxlen=SEEN_PER_METER) for m in meters
        }
        self.seen_masked: dict[str, deque[dict[str, Any]]] = {
            m: deque(maxlen=SEEN_PER_METER) for m in meters
        }

    def saw(self, meter: str, msg: Any) -> None:
        """Keep what the utility receives from a meter, for the utility view."""
        if isinstance(msg, ReadingRecord):
            self.seen_records[meter].append(
                {
                    "interval": msg.interval,
                    "kind": msg.kind,
                    "ciphertext": msg.ciphertext.hex(),
                    "bytes": len(msg.ciphertext),
                }
            )
        elif isinstance(msg, MaskedInput):
            self.seen_masked[meter].append(
                {"interval": msg.interval, "masked": [str(v) for v in msg.masked]}
            )


def operator_snapshot(
    core: HeadEndCore | None,
    log: HeadEndLog,
    run: RunState,
    *,
    probes: Sequence[Mapping[str, Any]],
    alerts: Alerts,
    meters: Sequence[str] = (),
) -> OperatorSnapshot:
    """What the head-end holds now, frozen; with :class:`~privmeter.web.snapshot.MeterHoldings`
    of each of ``meters`` that exists (the utility view of one household).  ``core`` is None
    before the deployment is set up."""
    limits: dict[str, tuple[int, int] | None] = {}
    for g in log.groups:
        cfg = core.groups[g].cfg if core is not None else None
        limits[g] = (cfg.cmin_w, cfg.cmax_w) if cfg is not None else None
    state = {f.name: getattr(run, f.name) for f in fields(RunState)}
    state["network"] = freeze(run.network)
    return OperatorSnapshot(
        **state,
        meter_ids=tuple(sorted(log.group_of)),
        groups=freeze(log.groups),
        group_of=freeze(log.group_of),
        group_limits=freeze(limits),
        totals=freeze(log.totals),
        events=freeze(log.events),
        probes=freeze(probes),
        bills=freeze(log.bills),
        alerts=freeze(alerts.entries),
        alert_count=alerts.count,
        holdings=freeze(
            {
                m: meter_holdings(core, log, run, m)
                for m in meters
                if m in log.group_of and core is not None
            }
        ),
    )


def meter_holdings(core: HeadEndCore, log: HeadEndLog, run: RunState, meter: str) -> MeterHoldings:
    """Everything the head-end holds about one meter's household (the utility view)."""
    reg = core.store.get_meter(meter)
    pk = core.household_keys.get(meter)
    dm = core.groups[log.group_of[meter]].dm
    bits = []
    if dm is not None:
        for eid, ev in dm.events.items():
            if meter in ev.results:
                bits.append(
                    {
                        "event_id": eid,
                        "threshold_w": ev.threshold,
                        "side": ev.msg.side,
                        "bit_x_ge_T": ev.results[meter],
                        "directive": meter in ev.directed,
                    }
                )
    period = max(0, (run.current - run.first) // run.bill_intervals)
    acc = core.store.get_account(meter, period)
    return MeterHoldings(
        meter=meter,
        registration=None
        if reg is None
        else freeze(
            {
                "meter_verify_key": reg.verify_key.hex(),
                "plan": reg.plan_id,
                "household_key_id": None if pk is None else pk.key_id.hex(),
                "period_intervals": reg.period_intervals,
            }
        ),
        reading_ciphertexts=freeze(log.seen_records[meter]),
        masked_inputs=freeze(log.seen_masked[meter]),
        comparison_bits=freeze(bits),
        account=None
        if acc is None
        else freeze({"period": period, "records": acc[0], "cells": acc[1]}),
    )
