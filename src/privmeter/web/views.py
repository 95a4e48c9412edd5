"""JSON views of a running demo: the grid operator's, a household's, and the privacy comparison.

What it is for: each function turns an immutable snapshot
(:mod:`privmeter.web.snapshot`), built by the
:class:`~privmeter.web.engine.DemoEngine` on its own thread, into the JSON one
dashboard panel shows.  The views never see the engine or a party.

Which data each view may use is the point of the demo:

* operator views (:func:`overview`, :func:`group_totals`, :func:`events`,
  :func:`bills`, :func:`utility_view`) take an
  :class:`~privmeter.web.snapshot.OperatorSnapshot`, which holds only what the
  head-end holds: group totals, comparison bits, ciphertexts, masked inputs,
  statements, proven bills -- never a household's reading (enforced by the type);
* :func:`household` (a :class:`~privmeter.web.snapshot.HouseholdSnapshot`) is
  the household's own app: its true load (from its meter's local port), its
  bills as it computed them, its plan and budget;
* :func:`privacy` puts the raw curve a conventional meter would report (and
  what :func:`~privmeter.web.inference.infer_activities` reads from it)
  beside what privmeter reveals about the same household.

Units: power W, energy Wh, money micro-minor-units (the UI divides by 10^6
for pence), times unix seconds of simulated time.
"""

from __future__ import annotations

from typing import Any

from privmeter.errors import NotFound
from privmeter.web.inference import infer_activities, score_occupancy
from privmeter.web.snapshot import HouseholdSnapshot, OperatorSnapshot, thaw

__all__ = ["bills", "events", "group_totals", "household", "overview", "privacy", "utility_view"]

HEX_SHOWN = 48  # hex characters of a ciphertext shown before the ellipsis
ALERTS_SHOWN = 40


def _short(hexstr: str) -> str:
    return (
        hexstr if len(hexstr) <= HEX_SHOWN else f"{hexstr[:HEX_SHOWN]}…({len(hexstr) // 2} bytes)"
    )


def overview(s: OperatorSnapshot) -> dict[str, Any]:
    """The live header: clock, feeders with their latest total, counters, latest alerts."""
    groups = []
    for g, ms in s.groups.items():
        last = thaw(s.totals[g][-1]) if s.totals[g] else None
        limits = s.group_limits.get(g)
        groups.append(
            {
                "id": g,
                "members": list(ms),
                "offline": sorted(set(ms) & s.offline),
                "cmin_w": limits[0] if limits else None,
                "cmax_w": limits[1] if limits else None,
                "last": last,
                "points": len(s.totals[g]),
            }
        )
    flagged = sum(1 for b in s.bills.values() if b["status"] not in ("paid", "issued"))
    return {
        "format": "privmeter.demo.overview/1",
        "status": s.status,
        "paused": s.paused,
        "speed": s.speed,
        "interval": s.current,
        "sim_time": s.sim_time,
        "first_interval": s.first,
        "last_interval": s.last,
        "interval_seconds": s.interval_seconds,
        "end_time": (s.last + 1) * s.interval_seconds,
        "days": s.days,
        "households": len(s.meter_ids),
        "meters": [
            {"id": m, "group": s.group_of[m], "offline": m in s.offline} for m in s.meter_ids
        ],
        "groups": groups,
        "counts": {
            "events": len(s.events),
            "bills": len(s.bills),
            "flagged": flagged,
            "paid": sum(1 for b in s.bills.values() if b["status"] == "paid"),
            "probes": len(s.probes),
            "alerts": s.alert_count,
        },
        "alerts": thaw(s.alerts[-ALERTS_SHOWN:]),
        "crypto": {
            "household_key_bits": s.key_bits,
            "dgk_bits": s.dgk_bits,
            "default_key_bits": 3072,
            "aggregation": "masked sum mod 2^64, Shamir recovery",
        },
        "plan": s.plan,
        "bill_intervals": s.bill_intervals,
        "transport": s.transport,
        "network": dict(s.network),
        "step_ms": s.step_ms,
    }


def group_totals(s: OperatorSnapshot, group: str, since: int = -1) -> dict[str, Any]:
    if group not in s.groups:
        raise NotFound(group)
    rows = [thaw(r) for r in s.totals[group] if r["interval"] > since]
    return {"group": group, "interval_seconds": s.interval_seconds, "totals": rows}


def events(s: OperatorSnapshot) -> dict[str, Any]:
    """Demand events: trigger, who was compared, who got a directive, and what followed."""
    out = []
    for ev in s.events:
        window = [
            r["total_w"]
            for r in s.totals[ev["group"]]
            if ev["start_interval"] <= r["interval"] <= ev["end_interval"]
            and r["total_w"] is not None
        ]
        followed = None
        if window:
            avg = sum(window) // len(window)
            followed = {
                "intervals": len(window),
                "mean_total_w": avg,
                "change_w": None if ev["trigger_total_w"] is None else avg - ev["trigger_total_w"],
            }
        out.append({**thaw(ev), "followed": followed})
    return {"events": out[::-1], "probes": thaw(s.probes[::-1])}


def bills(s: OperatorSnapshot) -> dict[str, Any]:
    """Statements issued, with settlement and audit status (what the utility and an auditor know)."""
    rows = []

    def order(kv: tuple[tuple[str, int], Any]) -> tuple[bool, int, tuple[str, int]]:
        flagged = kv[1]["status"] not in (
            "paid",
            "issued",
        )  # flagged bills first, then newest first
        return (not flagged, -kv[1]["issued_at"], kv[0])

    for (_m, _p), b in sorted(s.bills.items(), key=order):
        rows.append(
            {k: thaw(v) for k, v in b.items() if k != "ciphertext"}
            | {
                "ciphertext": _short(b["ciphertext"]),
                "start_time": b["start"] * s.interval_seconds,
                "end_time": b["end"] * s.interval_seconds,
            }
        )
    return {"bills": rows}


def utility_view(s: OperatorSnapshot, meter: str) -> dict[str, Any]:
    """Everything the head-end holds about one household: nothing readable."""
    h = s.holdings.get(meter)
    if h is None:
        raise NotFound(meter)
    acc = h.account
    statements = [
        {
            "period": p,
            "statement": b["statement"][:16],
            "ciphertext": _short(b["ciphertext"]),
            "status": b["status"],
            "proven_bill": b["bill"],
        }
        for (m, p), b in sorted(s.bills.items())
        if m == meter
    ]
    return {
        "meter": meter,
        "group": s.group_of[meter],
        "registration": thaw(h.registration),
        "reading_ciphertexts": [
            {**thaw(r), "ciphertext": _short(r["ciphertext"])} for r in h.reading_ciphertexts[::-1]
        ],
        "masked_inputs": thaw(h.masked_inputs[::-1]),
        "comparison_bits": thaw(h.comparison_bits),
        "encrypted_bill_accumulator": None
        if acc is None
        else {
            "period": acc["period"],
            "records": acc["records"],
            "cells": {k: _short(format(v, "x")) for k, v in sorted(acc["cells"].items())},
        },
        "statements": statements,
        "plaintext_readings_held": 0,
        "note": "ciphertexts are under the household's Paillier key (only the household can decrypt); "
        "masked inputs are uniformly random mod 2^64 until summed with the whole feeder; "
        "a comparison bit says only whether the meter's power was above the utility's threshold T.",
    }


def household(h: HouseholdSnapshot) -> dict[str, Any]:
    """The household's own app: its load, what the utility saw, its bills and proofs, plan and budget."""
    plan = h.plan
    own_bills = []
    for b in h.bills:
        own_bills.append(
            {
                "period": b["period"],
                "start_time": b["start"] * h.interval_seconds,
                "end_time": b["end"] * h.interval_seconds,
                "status": b["status"],
                "my_bill": b["household_bill"],
                "proven_bill": b["bill"],
                "audit": thaw(b["audit"]),
                "proof_check": "verified by the head-end and the auditor"
                if b["status"] == "paid"
                else "disputed: the statement did not encrypt my bill; nothing revealed"
                if b["status"].startswith("dispute")
                else b["status"],
            }
        )
    dr = plan.demand_response
    return {
        "meter": h.meter,
        "group": h.group,
        "offline": h.offline,
        "load": {"start_time": h.load_start, "minute_w": list(h.minute_w)},
        "readings_wh": [
            {"interval": t, "time": t * h.interval_seconds, "wh": v} for t, v in h.readings
        ],
        "utility_saw": {
            "masked_inputs": thaw(h.masked_seen),
            "ciphertexts": [_short(c) for c in h.ciphertexts_seen],
            "feeder_members": h.feeder_members,
        },
        "bills": own_bills[::-1],
        "plan": {
            "id": plan.plan_id,
            "name": plan.name,
            "tariff": plan.tariff.kind,
            "currency": plan.currency,
            "description": plan.description[:300],
            "demand_response": None
            if dr is None
            else {
                "cap_w": dr.cap_w,
                "penalty_price": dr.penalty_price,
                "rebate_price": dr.rebate_price,
            },
        },
        "budget": {
            "comparisons_per_day": plan.privacy.comparisons_per_day,
            "comparisons_per_interval": plan.privacy.comparisons_per_interval,
            "used_today": h.used_today,
        },
        "directives": thaw(h.directives[::-1]),
    }


def privacy(h: HouseholdSnapshot) -> dict[str, Any]:
    """Conventional meter (raw curve + what it gives away) beside privmeter (what the utility gets)."""
    minute_w = list(h.minute_w)
    active, acts = infer_activities(minute_w)
    scored = None
    if h.occupancy is not None and minute_w:
        scored = score_occupancy(active, h.occupancy)
    n = h.feeder_members
    bits = h.comparison_bits
    return {
        "meter": h.meter,
        "conventional": {
            "start_time": h.load_start,
            "minute_w": minute_w,
            "active": active,
            "activities": [a.to_json() for a in acts],
            "occupancy": None if scored is None else scored.to_json(),
            "summary": f"{len(acts)} appliance uses and {sum(active)} active minutes read off "
            "the raw curve",
        },
        "privmeter": {
            "feeder": h.group,
            "feeder_members": n,
            "feeder_total": [{"time": r["time"], "total_w": r["total_w"]} for r in h.feeder_totals],
            "comparison_bits": bits,
            "bills": len(h.bills),
            "summary": f"the feeder total of {n} homes per interval, {bits} comparison bit(s), "
            "one proven total per billing period",
        },
    }
