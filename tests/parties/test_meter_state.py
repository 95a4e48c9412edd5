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
from privmeter.grid.plans import PrivacyBudget
from privmeter.parties.meter_state import FORMAT, MeterLedgerStore, attach
from privmeter.protocol.aggregation_messages import KeyBundle
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.demand import ComparisonBudget
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


def _run_epoch(pol: dict[str, MembershipPolicy], epoch: int, first: int, steps: int) -> list[tuple[str, int]]:
    g = make_group(len(KEYS), epoch=epoch, first_interval=first, meter_keys=KEYS, headend_key=HEADEND,
                   membership=pol, seed=epoch, min_survivors=3)
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
