"""JSON views of a running demo: the grid operator's, a household's, and the privacy comparison.

What it is for: each function turns the state of a
:class:`~privmeter.web.engine.DemoEngine` into the JSON one dashboard panel
shows.  They run on the engine thread (:meth:`DemoEngine.call`), so they
read the parties and the SQLite store consistently.

Which data each view may use is the point of the demo:

* operator views (:func:`overview`, :func:`group_totals`, :func:`events`,
  :func:`bills`, :func:`utility_view`) read only what the head-end holds:
  group totals, comparison bits, ciphertexts, masked inputs, statements,
  proven bills -- never a household's reading;
* :func:`household` is the household's own app: its true load (from its
  meter's local port), its bills as it computed them, its plan and budget;
* :func:`privacy` puts the raw curve a conventional meter would report (and
  what :func:`~privmeter.web.inference.infer_activities` reads from it)
  beside what privmeter reveals about the same household.

Units: power W, energy Wh, money micro-minor-units (the UI divides by 10^6
for pence), times unix seconds of simulated time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from privmeter.web.inference import infer_activities, score_occupancy

if TYPE_CHECKING:
    from privmeter.web.engine import DemoEngine

__all__ = ["bills", "events", "group_totals", "household", "overview", "privacy", "utility_view"]

HEX_SHOWN = 48  # hex characters of a ciphertext shown before the ellipsis
ALERTS_SHOWN = 40


def _short(hexstr: str) -> str:
    return hexstr if len(hexstr) <= HEX_SHOWN else f"{hexstr[:HEX_SHOWN]}…({len(hexstr) // 2} bytes)"


def _now(e: DemoEngine) -> int:
    return (e.current + 1) * e.interval_seconds


def overview(e: DemoEngine) -> dict[str, Any]:
    """The live header: clock, feeders with their latest total, counters, latest alerts."""
    groups = []
    for g, ms in e.groups.items():
        last = e.totals[g][-1] if e.totals[g] else None
        cfg = e.core.groups[g].cfg if e.core is not None else None
        groups.append({
            "id": g, "members": ms, "offline": sorted(set(ms) & e.offline),
            "cmin_w": cfg.cmin_w if cfg else None, "cmax_w": cfg.cmax_w if cfg else None,
            "last": last, "points": len(e.totals[g]),
        })
    flagged = sum(1 for b in e.bills.values() if b["status"] not in ("paid", "issued"))
    sc = e.world.scenario
    return {
        "format": "privmeter.demo.overview/1",
        "status": "finished" if e.finished else "paused" if e.paused else "running",
        "paused": e.paused, "speed": e.speed, "interval": e.current, "sim_time": _now(e),
        "first_interval": e.first, "last_interval": e.last, "interval_seconds": e.interval_seconds,
        "end_time": (e.last + 1) * e.interval_seconds, "days": sc.days,
        "households": len(e.meter_ids), "meters": [{"id": m, "group": e.group_of[m], "offline": m in e.offline}
                                                    for m in e.meter_ids],
        "groups": groups,
        "counts": {"events": len(e.events), "bills": len(e.bills), "flagged": flagged,
                   "paid": sum(1 for b in e.bills.values() if b["status"] == "paid"),
                   "probes": len(e.probes), "alerts": e._seq},
        "alerts": list(e.alerts)[-ALERTS_SHOWN:],
        "crypto": {"household_key_bits": sc.key_bits, "dgk_bits": sc.dgk_bits,
                   "default_key_bits": 3072, "aggregation": "masked sum mod 2^64, Shamir recovery"},
        "plan": sc.plan, "bill_intervals": e.config.bill_intervals,
        "transport": e.transport, "network": e.wire_stats(),
        "step_ms": round(1000 * sum(e.step_seconds) / len(e.step_seconds), 1) if e.step_seconds else None,
    }


def group_totals(e: DemoEngine, group: str, since: int = -1) -> dict[str, Any]:
    if group not in e.groups:
        raise KeyError(group)
    rows = [r for r in e.totals[group] if r["interval"] > since]
    return {"group": group, "interval_seconds": e.interval_seconds, "totals": rows}


def events(e: DemoEngine) -> dict[str, Any]:
    """Demand events: trigger, who was compared, who got a directive, and what followed."""
    out = []
    for ev in e.events:
        window = [r["total_w"] for r in e.totals[ev["group"]]
                  if ev["start_interval"] <= r["interval"] <= ev["end_interval"] and r["total_w"] is not None]
        followed = None
        if window:
            avg = sum(window) // len(window)
            followed = {"intervals": len(window), "mean_total_w": avg,
                        "change_w": None if ev["trigger_total_w"] is None else avg - ev["trigger_total_w"]}
        out.append({**ev, "followed": followed})
    return {"events": out[::-1], "probes": e.probes[::-1]}


def bills(e: DemoEngine) -> dict[str, Any]:
    """Statements issued, with settlement and audit status (what the utility and an auditor know)."""
    rows = []

    def order(kv: tuple[tuple[str, int], dict[str, Any]]) -> tuple[bool, int, tuple[str, int]]:
        flagged = kv[1]["status"] not in ("paid", "issued")  # flagged bills first, then newest first
        return (not flagged, -kv[1]["issued_at"], kv[0])

    for (_m, _p), b in sorted(e.bills.items(), key=order):
        rows.append({k: v for k, v in b.items() if k not in ("household_bill", "ciphertext")}
                    | {"ciphertext": _short(b["ciphertext"]),
                       "start_time": b["start"] * e.interval_seconds, "end_time": b["end"] * e.interval_seconds})
    return {"bills": rows}


def utility_view(e: DemoEngine, meter: str) -> dict[str, Any]:
    """Everything the head-end holds about one household: nothing readable."""
    core = e.core
    assert core is not None
    if meter not in e.meters:
        raise KeyError(meter)
    reg = core.store.get_meter(meter)
    g = e.group_of[meter]
    dm = core.groups[g].dm
    bits = []
    if dm is not None:
        for eid, ev in dm.events.items():
            if meter in ev.results:
                bits.append({"event_id": eid, "threshold_w": ev.threshold, "side": ev.msg.side,
                             "bit_x_ge_T": ev.results[meter], "directive": meter in ev.directed})
    period = max(0, (e.current - e.first) // e.config.bill_intervals)
    acc = core.store.get_account(meter, period)
    statements = [{"period": p, "statement": b["statement"][:16], "ciphertext": _short(b["ciphertext"]),
                   "status": b["status"], "proven_bill": b["bill"]}
                  for (m, p), b in sorted(e.bills.items()) if m == meter]
    return {
        "meter": meter, "group": g,
        "registration": None if reg is None else {
            "meter_verify_key": reg.verify_key.hex(), "plan": reg.plan_id,
            "household_key_id": e.specs[meter].secret_key.public_key.key_id.hex(),
            "period_intervals": reg.period_intervals},
        "reading_ciphertexts": [{**r, "ciphertext": _short(r["ciphertext"])} for r in list(e.seen_records[meter])[::-1]],
        "masked_inputs": list(e.seen_masked[meter])[::-1],
        "comparison_bits": bits,
        "encrypted_bill_accumulator": None if acc is None else {
            "period": period, "records": acc[0], "cells": {k: _short(format(v, "x")) for k, v in sorted(acc[1].items())}},
        "statements": statements,
        "plaintext_readings_held": 0,
        "note": "ciphertexts are under the household's Paillier key (only the household can decrypt); "
                "masked inputs are uniformly random mod 2^64 until summed with the whole feeder; "
                "a comparison bit says only whether the meter's power was above the utility's threshold T.",
    }


def _minutes(e: DemoEngine, meter: str, hours: int = 24) -> tuple[int, list[int]]:
    load = e.meters[meter].load
    if load.minute_w is None:
        return 0, []
    end = (_now(e) - load.start_unix) // 60
    start = max(0, end - hours * 60)
    return load.start_unix + start * 60, [int(v) for v in load.minute_w[start:end]]


def household(e: DemoEngine, meter: str) -> dict[str, Any]:
    """The household's own app: its load, what the utility saw, its bills and proofs, plan and budget."""
    if meter not in e.meters:
        raise KeyError(meter)
    agent = e.meters[meter]
    plan = agent.plan
    t0, minute_w = _minutes(e, meter)
    now = _now(e)
    used = agent.demand.budget.used_today(now) if agent.demand is not None else 0
    own_bills = []
    for (m, p), b in sorted(e.bills.items()):
        if m != meter:
            continue
        own_bills.append({"period": p, "start_time": b["start"] * e.interval_seconds,
                          "end_time": b["end"] * e.interval_seconds, "status": b["status"],
                          "my_bill": b["household_bill"], "proven_bill": b["bill"], "audit": b["audit"],
                          "proof_check": "verified by the head-end and the auditor" if b["status"] == "paid"
                          else "disputed: the statement did not encrypt my bill; nothing revealed"
                          if b["status"].startswith("dispute") else b["status"]})
    readings = sorted(agent.local_readings.items())[-96:]
    dr = plan.demand_response
    return {
        "meter": meter, "group": e.group_of[meter], "offline": meter in e.offline,
        "load": {"start_time": t0, "minute_w": minute_w},
        "readings_wh": [{"interval": t, "time": t * e.interval_seconds, "wh": v} for t, v in readings],
        "utility_saw": {"masked_inputs": list(e.seen_masked[meter])[-4:][::-1],
                        "ciphertexts": [_short(r["ciphertext"]) for r in list(e.seen_records[meter])[-4:][::-1]],
                        "feeder_members": len(e.groups[e.group_of[meter]])},
        "bills": own_bills[::-1],
        "plan": {"id": plan.plan_id, "name": plan.name, "tariff": plan.tariff.kind, "currency": plan.currency,
                 "description": plan.description[:300],
                 "demand_response": None if dr is None else {"cap_w": dr.cap_w, "penalty_price": dr.penalty_price,
                                                             "rebate_price": dr.rebate_price}},
        "budget": {"comparisons_per_day": plan.privacy.comparisons_per_day,
                   "comparisons_per_interval": plan.privacy.comparisons_per_interval, "used_today": used},
        "directives": [{"event_id": d.event_id, "action": d.action, "start_time": d.start_interval * e.interval_seconds,
                        "minutes": d.duration_minutes, "limit_w": d.limit_w} for d in agent.directives][::-1],
    }


def privacy(e: DemoEngine, meter: str) -> dict[str, Any]:
    """Conventional meter (raw curve + what it gives away) beside privmeter (what the utility gets)."""
    if meter not in e.meters:
        raise KeyError(meter)
    t0, minute_w = _minutes(e, meter)
    active, acts = infer_activities(minute_w)
    occ = e.occupancy(meter)
    scored = None
    if occ is not None and minute_w:
        load = e.meters[meter].load
        i0 = (t0 - load.start_unix) // 60
        scored = score_occupancy(active, occ[i0:i0 + len(minute_w)])
    g = e.group_of[meter]
    n = len(e.groups[g])
    rows = [r for r in e.totals[g] if r["time"] >= t0]
    bits = sum(1 for ev in e.events if meter in ev["answered"]) + sum(
        s["answered"] for p in e.probes if p["meter"] == meter for s in p["steps"])
    return {
        "meter": meter,
        "conventional": {"start_time": t0, "minute_w": minute_w, "active": active,
                         "activities": [a.to_json() for a in acts], "occupancy": None if scored is None else scored.to_json(),
                         "summary": f"{len(acts)} appliance uses and {sum(active)} active minutes read off "
                                    "the raw curve"},
        "privmeter": {"feeder": g, "feeder_members": n,
                      "feeder_total": [{"time": r["time"], "total_w": r["total_w"]} for r in rows],
                      "comparison_bits": bits,
                      "bills": sum(1 for (m, _p) in e.bills if m == meter),
                      "summary": f"the feeder total of {n} homes per interval, {bits} comparison bit(s), "
                                 "one proven total per billing period"},
    }
