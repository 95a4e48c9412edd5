"""Run a scenario end to end and check every result against the ground truth.

What it is for: :func:`run_memory` wires a head-end core, one meter agent
and one household agent per household, and drives them through the real
protocol objects with every message crossing the real codec (in one
process: tests, fast runs).  :mod:`privmeter.sim.network` runs the same
parties over loopback sockets.  Both end in :func:`check`, which compares
the head-end's private totals and the verified bills with the plaintext
truth (computed here, independently of the parties, from the households'
true loads) and returns the dictionary that becomes ``report.json``.

Dropouts (in memory): each meter misses each interval with probability
``scenario.dropout`` (seeded), i.e. it is offline for that round; it reports
the missed readings at its next round, as a meter does after an outage.

Security: the ground truth is read only by :func:`check`, after the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from privmeter.crypto.paillier import MIN_KEY_BITS
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.errors import PlanError, PrivmeterError
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.parties.concentrator import Concentrator, Relayed, hierarchical_totals
from privmeter.parties.engine import DriveLog, drive
from privmeter.parties.headend import GroupConfig, HeadEndCore
from privmeter.parties.headend_store import HeadEndStore, MemoryHeadEndStore
from privmeter.parties.household import HouseholdAgent, LocalPort
from privmeter.parties.messages import FeedPublished, SettleRequest
from privmeter.parties.meter import MeterAgent
from privmeter.parties.meter_feed import MeterFeed, MeterLoad, SourceReadings, round_of
from privmeter.parties.meter_state import MeterLedgerStore
from privmeter.protocol.aggregation import EpochCache
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.records import DR_EXCESS, record_from_bytes
from privmeter.protocol.settlement import BillProof, audit
from privmeter.sim.clock import SimClock
from privmeter.sim.identities import is_offline
from privmeter.sim.scenario import World

__all__ = ["MemoryLink", "Parties", "check", "close_sources", "make_parties", "run_memory"]


@dataclass
class Parties:
    core: HeadEndCore
    meters: dict[str, MeterAgent]
    households: dict[str, HouseholdAgent]
    feeds: dict[str, MeterFeed]  # each meter's load, pushing its readings in (meter_feed)
    bytes_up: Counter[str] = field(default_factory=Counter)
    bytes_down: Counter[str] = field(default_factory=Counter)
    concentrators: dict[str, Concentrator] = field(default_factory=dict)


def group_configs(world: World) -> list[GroupConfig]:
    sc = world.scenario
    out = []
    for g, ms in sorted(world.groups.items()):
        plan = next(h.plan for h in world.households if h.meter_id == ms[0])
        dr = plan.demand_response
        out.append(
            GroupConfig(
                group_id=g,
                members=tuple(sorted(ms)),
                min_survivors=sc.min_survivors,
                cmin_w=sc.cmin_w_per_household * len(ms),
                cmax_w=sc.cmax_w_per_household * len(ms),
                level_above_w=dr.cap_w if dr else 3000,
                level_below_w=500,
                event_minutes=min(30, dr.max_event_minutes if dr else 30),
                max_events_per_day=plan.privacy.comparisons_per_day,
                mode="ring" if sc.topology == "ring" else "star",
            )
        )
    return out


def make_core(
    world: World,
    store: HeadEndStore | MemoryHeadEndStore | None = None,
    *,
    rng: random.Random | None = None,
    period_intervals: int | None = None,
) -> HeadEndCore:
    """The head-end core of ``world``: its feeders defined, every meter registered with a
    billing period of ``period_intervals`` (default: the whole simulated period)."""
    sc = world.scenario
    core = HeadEndCore(
        world.headend_key,
        world.plans,
        store=store,
        demand=world.comparison_group is not None,
        interval_seconds=sc.interval_seconds,
        min_key_bits=min(sc.key_bits, MIN_KEY_BITS),
        rng=rng or random.Random(sc.seed ^ 0x5EED),
    )
    for cfg in group_configs(world):
        core.define_group(cfg)
    for h in world.households:
        core.register(
            h.meter_id,
            h.signing_key.verify_key,
            h.secret_key.public_key,
            h.plan,
            wellformed_proof=prove_wellformed(h.secret_key),
            period_start=world.first_interval,
            period_intervals=sc.intervals if period_intervals is None else period_intervals,
        )
    if sc.topology == "tree":
        for g, ms in sorted(world.groups.items()):
            core.register_concentrator(concentrator_id(g), ms)
    return core


def make_meters(
    world: World,
    ids: Sequence[str] | None = None,
    *,
    ledger: MeterLedgerStore | None = None,
    period_intervals: int | None = None,
) -> tuple[dict[str, MeterAgent], dict[str, HouseholdAgent], dict[str, MeterFeed]]:
    """The meters of ``world`` (or of ``ids``), their households, and their feeds
    (:class:`~privmeter.parties.meter_feed.MeterFeed`: the load each meter measures;
    deliver a round through the feed, which pushes the readings in).  Each household reads
    its meter's local port and is billed over ``period_intervals`` (default: the whole
    simulated period)."""
    sc = world.scenario
    keys = {h.meter_id: h.signing_key.verify_key for h in world.households}
    meters: dict[str, MeterAgent] = {}
    homes: dict[str, HouseholdAgent] = {}
    feeds: dict[str, MeterFeed] = {}
    # the simulator's choice: the meters of one process share one cache of epoch tables
    # (pure functions of the bundle, built once per process instead of once per meter)
    epochs = EpochCache()
    want = set(ids) if ids is not None else None
    for i, h in enumerate(world.households):
        if want is not None and h.meter_id not in want:
            continue
        group_keys = {m: keys[m] for m in world.groups[h.group]}
        if h.source is not None:  # a real meter: its readings come from the source, live
            from privmeter.grid.sources import open_source

            src = open_source(h.source, interval_seconds=sc.interval_seconds)
            load = MeterLoad(
                sc.interval_seconds,
                world.first_interval * sc.interval_seconds,
                fixed=SourceReadings(src),
            )
        else:
            load = MeterLoad(
                h.load.interval_seconds,
                h.load.start_unix,
                h.load.minute_w,
                h.load.deferrable_w,
                fixed=h.load.fixed,
            )  # a copy: directives change the meter's load, not the world's
        m = MeterAgent(
            h.meter_id,
            h.signing_key,
            h.secret_key.public_key,
            world.headend_key.verify_key,
            h.plan,
            load.interval_seconds,
            first_interval=load.first_interval,
            group=h.group,
            group_keys=group_keys,
            comparison_group=world.comparison_group,
            min_survivors=sc.min_survivors,
            rng=random.Random(hash((sc.seed, i)) & 0xFFFFFFFF),
            mode="ring" if sc.topology == "ring" else "star",
            ledger=ledger,
            epochs=epochs,
        )
        meters[h.meter_id] = m
        feeds[h.meter_id] = MeterFeed(m, load)
        homes[h.meter_id] = HouseholdAgent(
            h.meter_id,
            h.secret_key,
            h.plan,
            world.headend_key.verify_key,
            _local_port(m),
            meter_key=h.signing_key.verify_key,
            period_start=world.first_interval,
            period_intervals=sc.intervals if period_intervals is None else period_intervals,
        )
    return meters, homes, feeds


def _local_port(m: MeterAgent) -> LocalPort:
    """The household's local port on its own meter: the meter's readings and adjustments."""
    return lambda: (m.local_readings, m.local_adjustments)


def close_sources(feeds: Mapping[str, MeterFeed]) -> None:
    """Close the load sources of meters that read a real meter (see :func:`make_meters`)."""
    for f in feeds.values():
        f.close()


def make_parties(world: World, store: HeadEndStore | MemoryHeadEndStore | None = None) -> Parties:
    core = make_core(world, store)
    meters, homes, feeds = make_meters(world)
    concs: dict[str, Concentrator] = {}
    if world.scenario.topology == "tree":
        for g, ms in sorted(world.groups.items()):
            cid = concentrator_id(g)
            concs[cid] = Concentrator(cid, ms)
    return Parties(core, meters, homes, feeds, concentrators=concs)


def concentrator_id(group: str) -> str:
    return f"dc-{group}"


class MemoryLink:
    """Delivers messages in memory, through the codec, with seeded per-interval dropouts."""

    def __init__(
        self,
        p: Parties,
        *,
        dropout: float = 0.0,
        seed: int = 0,
        offline: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.p = p
        self.dropout = dropout
        self.seed = seed
        self._offline = offline
        self.rejected: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.via: dict[str, Concentrator] = {}  # tree topology: meter -> its concentrator
        for served in p.concentrators.values():
            for m in served.meters:
                self.via[m] = served

    def offline(self, meter_id: str, interval: int) -> bool:
        if self._offline is not None:
            return self._offline(meter_id, interval)
        return is_offline(self.seed, meter_id, interval, self.dropout)

    async def exchange(
        self, outgoing: Mapping[str, Sequence[Any]], *, expect: Any, now: int, interval: int
    ) -> set[str]:
        p = self.p
        answered: set[str] = set()
        queue: deque[tuple[str, Any]] = deque(
            (mid, m) for mid, msgs in outgoing.items() for m in msgs
        )
        with p.core.store.batch():
            while queue:
                mid, msg = queue.popleft()
                t = round_of(msg)
                if t is not None and self.offline(mid, t):
                    continue  # the meter is down for this round (as in the fleets)
                data = encode(msg)
                p.bytes_down[mid] += len(data)
                conc = self.via.get(mid)
                if (
                    conc is not None
                ):  # tree: the head-end's message reaches the meter via its concentrator
                    env = decode(encode(Relayed(meter_id=mid, payload=data)))
                    _, msg = conc.down(env)
                else:
                    msg = decode(data)
                feed = p.feeds[mid]
                if t is not None and feed.needs_wait(t):  # a real meter closes t a few s after
                    await asyncio.to_thread(feed.wait_for, t)
                try:
                    if isinstance(msg, SettleRequest):
                        replies = p.households[mid].handle(msg)
                    else:
                        if isinstance(msg, FeedPublished):
                            p.households[mid].handle(msg)
                        replies = feed.handle(msg, now=now)
                except PrivmeterError as exc:  # the meter refuses (e.g. too few survivors)
                    self.refused[exc.code] += 1
                    continue
                for r in replies:
                    up = encode(r)
                    p.bytes_up[mid] += len(up)
                    try:
                        if conc is not None:
                            env = decode(encode(conc.up(mid, r)))
                            back = [
                                conc.down(decode(encode(b)))[1]
                                for b in p.core.handle(
                                    conc.concentrator_id, env, now=now, interval=interval
                                )
                            ]
                        else:
                            back = p.core.handle(mid, decode(up), now=now, interval=interval)
                    except PrivmeterError as exc:  # a rejected message is counted, the run goes on
                        self.rejected[exc.code] += 1
                        continue
                    if expect is not None and isinstance(r, expect):
                        answered.add(mid)
                    for b in back:
                        bd = encode(b)
                        p.bytes_down[mid] += len(bd)
                        feed.handle(b if conc is not None else decode(bd), now=now)
                    queue.extend(p.core.outbox)  # relayed meter-to-meter payloads
                    p.core.outbox.clear()
        return answered


def run_memory(
    world: World,
    *,
    store_path: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    audit_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the scenario in one process; returns the checked results (``report.json``).

    ``audit_dir``: also write every household's audit bundle there (:mod:`privmeter.sim.bundle`).
    """
    sc = world.scenario
    store = HeadEndStore(store_path) if store_path else MemoryHeadEndStore()
    p = make_parties(world, store)
    link = MemoryLink(p, dropout=sc.dropout, seed=sc.seed)
    clock = SimClock(world.first_interval * sc.interval_seconds)
    t0 = time.perf_counter()
    c0 = time.process_time()
    try:
        log = asyncio.run(
            drive(
                p.core,
                link,
                world.groups,
                first_interval=world.first_interval,
                count=sc.intervals,
                interval_seconds=sc.interval_seconds,
                clock=clock,
                feeds=list(world.feeds.values()),
                progress=progress,
            )
        )
    finally:
        close_sources(p.feeds)
    wall = time.perf_counter() - t0
    total_cpu = time.process_time() - c0
    out = check(world, p.core, log, feeds=p.feeds)
    out["performance"].update(
        {
            "mode": "memory",
            "wall_s": round(wall, 3),
            "process_cpu_s": round(total_cpu, 3),
            "bytes_per_meter_up": _mean(p.bytes_up.values()),
            "bytes_per_meter_down": _mean(p.bytes_down.values()),
        }
    )
    out["bytes_per_meter"] = {
        m: {"up": p.bytes_up[m], "down": p.bytes_down[m]} for m in sorted(p.meters)
    }
    out["network"]["rejected"] = dict(link.rejected)
    out["network"]["refused_by_meters"] = dict(link.refused)
    if audit_dir is not None:
        from privmeter.sim.bundle import write_audit_bundles

        write_audit_bundles(world, p.core, audit_dir)
    store.close()
    return out


def _mean(vals: Any) -> float:
    vals = list(vals)
    return round(sum(vals) / len(vals), 1) if vals else 0.0


# -- checking against the ground truth -----------------------------------------------------------


def _truth_bill(
    plan: Plan,
    feed: PriceFeed | None,
    readings: Mapping[int, int],
    adjustments: Mapping[tuple[str, str, int], int],
    start: int,
    end: int,
) -> int:
    """The plaintext bill, computed here from prices directly (independent of settlement)."""
    total = 0
    for t, wh in readings.items():
        price = plan.tariff.price_at(t, plan.interval_seconds, feed)
        total += wh * price
    dr = plan.demand_response
    for (kind, _e, _t), wh in adjustments.items():
        if dr is None:
            raise PlanError(
                f"plan {plan.plan_id!r} has no demand response, yet the meter reported a {kind!r} amount"
            )
        total += wh * (dr.penalty_price if kind == DR_EXCESS else -dr.rebate_price)
    return total + int(plan.fixed_charge(range(start, end)))


class _AggRow(TypedDict):
    """One interval's private total against the plaintext truth (a row of ``series``)."""

    group: str
    interval: int
    total_wh: int | None
    truth_survivors_wh: int
    truth_all_wh: int
    survivors: int
    dropped: int
    error: int | None


def check(
    world: World,
    core: HeadEndCore,
    log: DriveLog,
    *,
    feeds: Mapping[str, MeterFeed] | None = None,
    truth: Mapping[str, Mapping[int, int]] | None = None,
    adjustments_of: Mapping[str, Mapping[tuple[str, str, int], int]] | None = None,
) -> dict[str, Any]:
    """Compare totals and bills with the truth; verify every bill by a third-party audit.

    The truth is each household's load after any directives: from the meters'
    feeds (in memory: the load each meter measured) or from ``truth`` (reported by the fleet processes,
    which simulate the physical households).
    """
    sc = world.scenario
    spec = {h.meter_id: h for h in world.households}
    lo, hi = world.first_interval, world.first_interval + sc.intervals

    def energy(m: str, t: int) -> int | None:
        if truth is not None:
            return truth.get(m, {}).get(t)
        if feeds is not None and m in feeds:
            return feeds[m].load.energy_wh(t)
        return spec[m].load.energy_wh(t)

    # aggregation: the private total must equal the true sum over the survivors
    agg_rows: list[_AggRow] = []
    max_err = 0
    unmasked = 0
    for st in core.totals():
        if not lo <= st.interval < hi:
            continue
        res = next((r for g, r in log.results if g == st.group and r.interval == st.interval), None)
        survivors = res.survivors if res is not None else ()
        truth_surv = sum((energy(m, st.interval) or 0) for m in survivors)
        truth_all = sum((energy(m, st.interval) or 0) for m in world.groups[st.group])
        err = None
        if st.total is not None:
            unmasked += 1
            err = st.total - truth_surv
            max_err = max(max_err, abs(err))
        agg_rows.append(
            {
                "group": st.group,
                "interval": st.interval,
                "total_wh": st.total,
                "truth_survivors_wh": truth_surv,
                "truth_all_wh": truth_all,
                "survivors": st.survivors,
                "dropped": st.dropped,
                "error": err,
            }
        )
    # billing: proven bill == truth, and an independent audit from the signed log
    statements = {}
    for (m, _period), s in core.statements().items():
        statements[m] = s
    settled = {m: (kind, ans, bill) for m, _p, kind, ans, bill in core.settlements()}
    log_records: dict[str, list[Any]] = {}
    for _seq, rec_bytes, _chain in core.store.iter_log():
        rec = record_from_bytes(rec_bytes)
        log_records.setdefault(rec.meter_id, []).append(rec)
    bills = []
    verified = 0
    bill_max_err = 0
    audit_ok = 0
    for m in sorted(spec):
        h = spec[m]
        feed = world.feeds.get(h.plan.plan_id)
        truth_readings = {t: v for t in range(lo, hi) if (v := energy(m, t)) is not None}
        adjustments: dict[tuple[str, str, int], int] = {}
        if adjustments_of is not None:
            adjustments = dict(adjustments_of.get(m, {}))
        elif feeds is not None and m in feeds:
            adjustments = dict(feeds[m].agent.local_adjustments)
        adjustments = {k: v for k, v in adjustments.items() if lo <= k[2] < hi}
        dr = h.plan.demand_response
        # recompute the DR amounts from the truth (the meter's own numbers are not trusted here)
        for kind, eid, t in list(adjustments):
            if dr is not None:
                from privmeter.protocol.demand_settlement import event_amounts

                ex, rb = event_amounts(truth_readings.get(t, 0), dr.cap_wh(sc.interval_seconds))
                adjustments[(kind, eid, t)] = ex if kind == DR_EXCESS else rb
        bill_truth = _truth_bill(h.plan, feed, truth_readings, adjustments, lo, hi)
        kind, ans, proven = settled.get(m, ("missing", b"", None))
        row: dict[str, Any] = {
            "meter_id": m,
            "plan": h.plan.plan_id,
            "truth": bill_truth,
            "proven": proven,
            "status": kind,
            "records": len(log_records.get(m, [])),
            "energy_wh": sum(truth_readings.values()),
            "audited": False,
        }
        if proven is not None:
            err = proven - bill_truth
            row["error"] = err
            bill_max_err = max(bill_max_err, abs(err))
            try:
                proof = decode(ans, expect=BillProof)
                rep = audit(
                    statements[m],
                    log_records.get(m, []),
                    h.plan,
                    feed,
                    proof,
                    headend_key=world.headend_key.verify_key,
                    meter_key=h.signing_key.verify_key,
                    household_pk=h.secret_key.public_key,
                    min_key_bits=min(sc.key_bits, MIN_KEY_BITS),
                )
                row["audited"] = rep.bill == proven
                audit_ok += row["audited"]
            except Exception as exc:
                row["audit_error"] = f"{type(exc).__name__}: {exc}"
            if row["audited"] and err == 0:
                verified += 1
        else:
            bill_max_err = max(bill_max_err, abs(bill_truth))
        bills.append(row)
    tree = None
    if sc.topology == "tree":
        feeders: dict[str, dict[int, int | None]] = {}
        truth_feeders: dict[str, dict[int, int | None]] = {}
        for r in agg_rows:
            feeders.setdefault(r["group"], {})[r["interval"]] = r["total_wh"]
            truth_feeders.setdefault(r["group"], {})[r["interval"]] = r["truth_survivors_wh"]
        parent = {g: "substation" for g in feeders}
        root = hierarchical_totals(feeders, parent).get("substation", {})
        troot = hierarchical_totals(truth_feeders, parent).get("substation", {})
        # the truth is never None (every meter's energy is known); a total is None if not unmasked
        errs = [
            abs(v - tv) for t, v in root.items() if v is not None and (tv := troot[t]) is not None
        ]
        tree = {
            "levels": ["substation", "concentrators (feeders)", "meters"],
            "concentrators": len(feeders),
            "root_intervals": len(errs),
            "root_max_abs_error": max(errs) if errs else None,
            "root_series": [
                {"interval": t, "total_wh": v, "truth_wh": troot[t]}
                for t, v in sorted(root.items())
            ],
        }
    events = core.store.events()
    cpu = {k: round(v, 3) for k, v in core.cpu.items()}
    intervals_checked = sum(1 for r in agg_rows if r["total_wh"] is not None)
    return {
        "format": "privmeter.sim.report/1",
        "scenario": _scenario_summary(world),
        "aggregation": {
            "intervals": intervals_checked,
            "expected_intervals": sc.intervals * len(world.groups),
            "groups": len(world.groups),
            "max_abs_error": max_err if unmasked else None,
            "failed_intervals": sum(1 for r in agg_rows if r["total_wh"] is None),
            "topology": sc.topology,
            "tree": tree,
            "series": agg_rows,
        },
        "billing": {
            "households": len(spec),
            "verified": verified,
            "audited": audit_ok,
            "max_abs_error": bill_max_err,
            "bills": bills,
            "records_logged": sum(len(v) for v in log_records.values()),
        },
        "demand_response": {
            "events": len(events),
            "directives": sum(int(e.get("targets", 0)) for e in events),
            "list": events,
        },
        "performance": {
            "headend_cpu_s": round(sum(core.cpu.values()), 3),
            "headend_cpu_by_step_s": cpu,
            "step_wall_s": {k: round(v, 3) for k, v in log.step_wall.items()},
            "interval_wall_s": [round(x, 4) for x in log.interval_wall],
            "records": core.calls["records"],
            "build_s": round(world.build_seconds, 3),
        },
        "network": {"answered_per_interval": log.answered, "errors": dict(core.errors)},
    }


def _scenario_summary(world: World) -> dict[str, Any]:
    from privmeter.sim.scenario import scenario_json

    d = scenario_json(world.scenario)
    d["first_interval"] = world.first_interval
    d["plans"] = sorted(world.plans)
    d["groups"] = {g: len(ms) for g, ms in world.groups.items()}
    return d
