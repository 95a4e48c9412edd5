"""A meter's privacy ledgers survive a restart (``parties/meter_state.py``).

Without them a restarted meter would forget which intervals it already gave
a reading for (a head-end could get a second total of one interval: exact
differencing) and how many comparisons it answered today."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from privmeter.crypto.signing import SigningKey
from privmeter.errors import BudgetExceeded, ConfigError, MembershipChangeRefused
from privmeter.grid.tariff.plans import PrivacyBudget
from privmeter.parties.meter_state import FORMAT, MeterLedgerStore, attach
from privmeter.protocol.aggregation_messages import KeyBundle
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.demand_budget import ComparisonBudget
from privmeter.protocol.membership import MembershipPolicy
from privmeter.sim.aggregation_group import make_group

BUDGET = PrivacyBudget(min_group_size=5, min_survivors=3, max_membership_changes_per_day=1)
KEYS = {f"m{i:05d}": SigningKey.from_seed(hashlib.sha256(b"st%d" % i).digest()) for i in range(6)}
HEADEND = SigningKey.from_seed(hashlib.sha256(b"he-st").digest())


def reading(meter: str, t: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:3], "big")


def _policies(db: Path) -> tuple[MeterLedgerStore, dict[str, MembershipPolicy]]:
    store = MeterLedgerStore(db)
    pol = {}
    for m in KEYS:
        pol[m] = MembershipPolicy(m, BUDGET)
        attach(store, m, pol[m], None)
    return store, pol


def _run_epoch(
    pol: dict[str, MembershipPolicy], epoch: int, first: int, steps: int
) -> list[tuple[str, int]]:
    g = make_group(
        len(KEYS),
        epoch=epoch,
        first_interval=first,
        meter_keys=KEYS,
        headend_key=HEADEND,
        membership=pol,
        seed=epoch,
        min_survivors=3,
    )
    for m in g.meters.values():
        g.headend.handle_advert(encode(m.advertise()))
    bundle = decode(encode(g.headend.make_bundle()), expect=KeyBundle)
    for m in g.meters.values():
        m.handle_bundle(bundle)
    for _ in range(steps):
        res = g.step(reading)
        if res is not None and res.total is not None:
            assert res.total == (sum(reading(m, res.interval) for m in res.survivors),)
    return g.refusals


def test_restarted_meters_still_refuse_a_second_total_of_a_served_interval(tmp_path: Path) -> None:
    db = tmp_path / "meters.db"
    store, pol = _policies(db)
    assert _run_epoch(pol, 1, 1000, 5) == []  # readings for 1001..1004
    store.close()  # the meters "crash": nothing but the file survives
    store, pol = _policies(db)
    assert all(p.last_served == 1004 for p in pol.values())
    refusals = _run_epoch(pol, 2, 1002, 5)  # a head-end re-running 1003..1004
    assert {t for _m, t in refusals} == {1003, 1004}
    assert {m for m, _t in refusals} == set(KEYS)
    store.close()


def test_comparison_budget_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = MeterLedgerStore(db)
    b = ComparisonBudget(comparisons_per_interval=1, comparisons_per_day=2)
    attach(store, "m1", MembershipPolicy("m1", BUDGET), b)
    iv = 1_700_000_000 // 900  # the ledger is keyed on the compared readings' intervals
    b.charge(iv)
    b.charge(iv + 1)
    store.close()
    store = MeterLedgerStore(db)
    b2 = ComparisonBudget(comparisons_per_interval=1, comparisons_per_day=2)
    attach(store, "m1", MembershipPolicy("m1", BUDGET), b2)
    with pytest.raises(BudgetExceeded):
        b2.charge(iv + 2)  # the day's two were used before the restart
    store.close()


def test_a_corrupt_ledger_is_a_clear_error_not_a_fresh_start(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = MeterLedgerStore(db)
    p = MembershipPolicy("m1", BUDGET)
    attach(store, "m1", p, None)
    p.admit("g", frozenset(KEYS) | {"m1"}, from_interval=10)
    store.close()
    con = sqlite3.connect(db)
    doc = json.loads(con.execute("SELECT doc FROM ledger").fetchone()[0])
    assert doc["format"] == FORMAT and doc["membership"]["since"] == 10
    doc["membership"]["since"] = "ten"
    con.execute("UPDATE ledger SET doc = ?", (json.dumps(doc),))
    con.commit()
    con.close()
    store = MeterLedgerStore(db)
    with pytest.raises(ConfigError, match="m1"):
        attach(store, "m1", MembershipPolicy("m1", BUDGET), None)
    store.close()


def test_policy_state_round_trips_and_refuses_intervals_older_than_its_memory() -> None:
    p = MembershipPolicy("m1", BUDGET)
    p.admit("g", frozenset(KEYS) | {"m1"}, from_interval=0)
    for t in (5, 6, 700, 1400):
        p.serve("g", t)
    q = MembershipPolicy("m1", BUDGET)
    q.restore(json.loads(json.dumps(p.state())))
    assert q.state() == p.state()
    with pytest.raises(MembershipChangeRefused):
        q.serve("g", 700)  # served
    with pytest.raises(MembershipChangeRefused):
        q.serve("g", 7)  # never served, but older than 7 days before 1400: forgotten, so refused
    q.serve("g", 1401)


# -- demand management in a deployed meter: an agent per roster, one budget, directives kept ------

DR_PLAN = Path(__file__).parents[1] / "app" / "plan-dr-3s.toml"


def _dr_meter(store: MeterLedgerStore, pk, roster: dict[str, SigningKey]):  # type: ignore[no-untyped-def]
    from privmeter.crypto.elgamal import GROUPS
    from privmeter.grid.tariff.plan_toml import load_plan
    from privmeter.parties.meter import MeterAgent

    plan = load_plan(DR_PLAN)
    meter = MeterAgent(
        "m00000",
        KEYS["m00000"],
        pk,
        HEADEND.verify_key,
        plan,
        3,
        first_interval=1000,
        group="g",
        group_keys={m: k.verify_key for m, k in roster.items()},
        comparison_group=GROUPS["test512"],
        min_survivors=3,
        ledger=store,
    )
    for t in range(1000, 1100):
        meter.reading(t, 4)  # 4 Wh per 3 s: 4800 W
    return meter


def _event(meter, last: int, threshold: int):  # type: ignore[no-untyped-def]
    """One event over ``meter`` (and its roster's echoes), as a head-end runs it; returns the bit."""
    from privmeter.protocol.demand import DemandManager
    from privmeter.protocol.demand_messages import ECHO_CONTEXT, Echo
    from privmeter.protocol.records import canonical

    meter.records_for(last)  # the meter's reading of interval ``last``
    now = (last + 1) * 3
    dm = DemandManager(
        HEADEND,
        "g",
        meter.group_keys,
        cmin_w=0,
        cmax_w=1,
        level_above_w=1000,
        level_below_w=0,
        interval_seconds=3,
        min_group_bits=512,
    )
    ev = dm.open_event(threshold, side="above", action="curtail", start_interval=last + 1, now=now)
    offer, echo = meter.handle(ev, now=now)
    dm.receive_offer(offer)
    dm.receive_echo(echo)
    for m in sorted(meter.group_keys):  # the other members' echoes of the same event
        if m != meter.meter_id:
            payload = canonical(ev.event_id, "g", m, ev.digest())
            dm.receive_echo(
                Echo(
                    event_id=ev.event_id,
                    group_id="g",
                    meter_id=m,
                    digest=ev.digest(),
                    signature=KEYS[m].sign(ECHO_CONTEXT, payload),
                )
            )
    meter.handle(dm.echo_bundle(ev.event_id), now=now)
    (q,) = dm.queries(ev.event_id, now=now, meters=[meter.meter_id])
    bit = dm.receive_answer(*meter.handle(q, now=now), now=now)
    for d in dm.directives(ev.event_id, now=now):
        meter.handle(d, now=now)
    return bit


def test_a_meter_takes_part_from_its_first_roster_on_and_a_restart_gives_no_new_budget(
    tmp_path: Path,
) -> None:
    from privmeter.crypto.paillier import generate_keypair
    from privmeter.parties.meter_state import restore_journal, sync_journal

    pk, _sk = generate_keypair(512, insecure_for_tests=True)
    store = MeterLedgerStore(tmp_path / "state.db")
    alone = {"m00000": KEYS["m00000"]}
    meter = _dr_meter(store, pk, alone)
    assert meter.demand is None and "roster size 1" in (meter.demand_error or "")  # no group yet
    four = {m: KEYS[m] for m in list(KEYS)[:4]}
    meter.set_roster({m: k.verify_key for m, k in four.items()})  # the signed roster arrives
    assert meter.demand is not None and meter.demand.quorum == 3
    budget = meter.budget
    assert _event(meter, 1010, threshold=2000) is True  # 4800 W >= 2000 W: directed
    sync_journal(store, meter)
    assert [d.event_id for d in meter.directives] and meter.budget is not None
    assert meter.budget.used_today(1011 * 3) == 1
    # a roster change rebuilds the agent around the same budget: no new bit
    five = {m: KEYS[m] for m in list(KEYS)[:5]}
    meter.set_roster({m: k.verify_key for m, k in five.items()})
    assert meter.budget is budget and meter.demand is not None and meter.demand.budget is budget
    with pytest.raises(BudgetExceeded):
        _event(meter, 1012, threshold=2000)
    meter.set_roster({m: k.verify_key for m, k in five.items()}, demand=False)
    assert meter.demand is None and meter.demand_error == "demand management is off"
    store.close()
    # a restart: the budget, the directive (and its window's DR records) come back from state.db
    store = MeterLedgerStore(tmp_path / "state.db")
    meter = _dr_meter(store, pk, five)
    restore_journal(store, meter)
    assert [d.action for d in meter.directives] == ["curtail"]
    assert meter.budget is not None and meter.budget.used_today(1011 * 3) == 1
    assert [r.kind for r in meter.records_for(1020)] == ["energy", "dr_excess", "dr_rebate"]
    with pytest.raises(BudgetExceeded):
        _event(meter, 1021, threshold=2000)
    store.close()
