"""The head-end core in memory: exact totals, verified bills, dropouts, and hostile messages."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from privmeter.errors import (
    InvalidSignature,
    KeyMismatch,
    ReplayedMessage,
    StaleMessage,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.parties.engine import drive
from privmeter.parties.headend_store import HeadEndStore
from privmeter.parties.messages import Tick
from privmeter.protocol.aggregation_messages import MaskedInput
from privmeter.protocol.records import ReadingRecord, make_record
from privmeter.sim.clock import SimClock
from privmeter.sim.runner import MemoryLink, check, make_parties, run_memory
from privmeter.sim.scenario import World, build

from ..conftest import tiny_scenario


def test_memory_run_exact_and_verified(tiny_world: World) -> None:
    res = run_memory(tiny_world)
    assert res["aggregation"]["intervals"] == 8
    assert res["aggregation"]["max_abs_error"] == 0
    assert res["billing"]["households"] == 6
    assert res["billing"]["verified"] == 6
    assert res["billing"]["max_abs_error"] == 0
    assert res["performance"]["headend_cpu_s"] > 0
    assert res["network"]["rejected"] == {}


def test_dropouts_exact_over_survivors_and_late_records_billed(sim_cache: Path) -> None:
    world = build(tiny_scenario(sim_cache, dropout=0.12, min_survivors=3))
    res = run_memory(world)
    agg = res["aggregation"]
    assert agg["max_abs_error"] == 0
    dropped = [r for r in agg["series"] if r["dropped"]]
    assert dropped, "the seeded outages should drop someone"
    # every reading is billed in the end: the meters resend after their outage
    assert res["billing"]["verified"] == 6
    assert res["billing"]["max_abs_error"] == 0


def test_sqlite_store_run_and_reopen(tiny_world: World, tmp_path: Path) -> None:
    db = tmp_path / "he.db"
    res = run_memory(tiny_world, store_path=str(db))
    assert res["billing"]["verified"] == 6
    store = HeadEndStore(db)
    try:
        totals = [t for t in store.totals() if t.total is not None]
        assert len(totals) >= 8
        by_iv = {r["interval"]: r["total_wh"] for r in res["aggregation"]["series"]}
        for t in totals:
            if t.interval in by_iv:
                assert t.total == by_iv[t.interval]
        assert len(store.settlements()) == 6
        assert store.log_head()[0] == res["billing"]["records_logged"]
    finally:
        store.close()


def _started(world: World):  # a core with an epoch and one interval open
    p = make_parties(world)
    link = MemoryLink(p)
    clock = SimClock(0)
    asyncio.run(
        drive(
            p.core,
            link,
            world.groups,
            first_interval=world.first_interval,
            count=4,
            interval_seconds=world.scenario.interval_seconds,
            clock=clock,
            settle=False,
        )
    )
    return p


def test_hostile_messages_rejected_and_core_keeps_serving(tiny_world: World) -> None:
    p = _started(tiny_world)
    core = p.core
    h0, h1 = tiny_world.households[0], tiny_world.households[1]
    t = tiny_world.first_interval + 6
    now = (t + 1) * 900
    good = make_record(
        h0.signing_key,
        h0.meter_id,
        t,
        h0.secret_key.public_key,
        h0.secret_key.public_key.encrypt(100),
    )
    # a record signed by another meter's key
    forged = make_record(
        h1.signing_key,
        h0.meter_id,
        t,
        h0.secret_key.public_key,
        h0.secret_key.public_key.encrypt(1),
    )
    with pytest.raises(InvalidSignature):
        core.handle(h0.meter_id, forged, now=now, interval=t)
    # a record naming another meter than the authenticated peer
    with pytest.raises(UnknownParty):
        core.handle(h1.meter_id, good, now=now, interval=t)
    # under another household's key
    other = make_record(
        h0.signing_key,
        h0.meter_id,
        t,
        h1.secret_key.public_key,
        h1.secret_key.public_key.encrypt(1),
    )
    with pytest.raises(KeyMismatch):
        core.handle(h0.meter_id, other, now=now, interval=t)
    # far in the past
    old = make_record(
        h0.signing_key,
        h0.meter_id,
        t - 500,
        h0.secret_key.public_key,
        h0.secret_key.public_key.encrypt(1),
    )
    with pytest.raises(StaleMessage):
        core.handle(h0.meter_id, old, now=now, interval=t)
    # a message type the head-end does not take
    with pytest.raises(UnexpectedMessage):
        core.handle(h0.meter_id, Tick(now=now, interval=t), now=now, interval=t)
    # a masked input outside the open interval, with a forged MAC
    mi = MaskedInput(
        group="feeder-001",
        epoch=1,
        interval=t,
        meter_id=h0.meter_id,
        masked=(),
        shares=b"",
        recovery=b"",
        reveal_interval=-1,
        reveals=b"",
        tag=b"\0" * 16,
    )
    with pytest.raises((UnexpectedMessage, StaleMessage, InvalidSignature)):
        core.handle(h0.meter_id, mi, now=now, interval=t)
    # the good record is accepted once, its replay refused
    receipt = core.handle(h0.meter_id, good, now=now, interval=t)[0]
    receipt.verify(tiny_world.headend_key.verify_key)
    with pytest.raises(ReplayedMessage):
        core.handle(h0.meter_id, good, now=now, interval=t)
    assert core.errors["invalid-signature"] == 1
    assert core.errors["replay"] == 1
    # a tampered copy (bit flipped in the ciphertext) fails the signature
    bad = dataclasses.replace(
        good, ciphertext=bytes([good.ciphertext[0] ^ 1]) + good.ciphertext[1:]
    )
    assert isinstance(bad, ReadingRecord)
    with pytest.raises(InvalidSignature):
        core.handle(h0.meter_id, bad, now=now, interval=t)


def test_check_detects_a_wrong_total(tiny_world: World) -> None:
    p = make_parties(tiny_world)
    link = MemoryLink(p)
    log = asyncio.run(
        drive(
            p.core,
            link,
            tiny_world.groups,
            first_interval=tiny_world.first_interval,
            count=3,
            interval_seconds=900,
            clock=SimClock(0),
        )
    )
    res = check(tiny_world, p.core, log, feeds=p.feeds)
    assert res["aggregation"]["max_abs_error"] == 0
    # a liar's truth: one meter's readings off by one -> the check reports error 1
    truth = {
        m: {
            t: (f.load.energy_wh(t) or 0) + (m == "m00000")
            for t in range(tiny_world.first_interval, tiny_world.first_interval + 8)
        }
        for m, f in p.feeds.items()
    }
    res2 = check(tiny_world, p.core, log, truth=truth)
    assert res2["aggregation"]["max_abs_error"] == 1


def test_next_epoch_degree_is_sized_for_the_observed_dropout(sim_cache: Path) -> None:
    """The head-end sizes each epoch's neighbour graph for the churn it saw in
    the group's last intervals (``degree_for``): none -> the default degree;
    heavy -> a denser graph, so that intervals keep unmasking."""
    from privmeter.parties.headend_store import StoredTotal
    from privmeter.protocol.aggregation_messages import default_degree, degree_for

    world = build(tiny_scenario(sim_cache, households=40, min_survivors=3))
    p = make_parties(world)
    ((g, members),) = world.groups.items()
    n = len(members)
    assert p.core.observed_dropout(g, n) == 0.0
    p.core.new_epoch(g, world.first_interval)
    assert p.core.groups[g].agg._degree == default_degree(n)
    for i in range(10):  # 30 % of the group missing in each recent interval
        p.core.store.put_total(StoredTotal(g, world.first_interval + i, 1, n - 12, 12))
    assert abs(p.core.observed_dropout(g, n) - 0.3) < 1e-9
    p.core.new_epoch(g, world.first_interval + 20)
    assert p.core.groups[g].agg._degree == degree_for(n, 0.3) > default_degree(n)


def test_a_redefined_or_restarted_group_keeps_its_event_window_and_daily_count(
    tmp_path: Path,
) -> None:
    """Demand-management limits come back from the store: a head-end restarted (or a group
    redefined with a new roster) during an event's window opens no second event in it, and
    the day's events still count against ``max_events_per_day``."""
    from privmeter.crypto.signing import SigningKey
    from privmeter.grid.tariff.plan_toml import load_plan
    from privmeter.parties.headend import GroupConfig, HeadEndCore

    plan = load_plan(Path(__file__).parents[1] / "app" / "plan-dr-3s.toml")
    store = HeadEndStore(tmp_path / "he.db")
    start = 86400 // 3 * 5 + 100  # an interval of day 5
    store.put_event(
        "e1",
        "g",
        start - 1,
        {"side": "above", "action": "curtail", "start_interval": start, "duration_minutes": 30},
    )
    store.put_event("e0", "other", start - 1, {"start_interval": start, "duration_minutes": 1440})
    core = HeadEndCore(SigningKey.generate(), [plan], store=store, demand=True, interval_seconds=3)
    core.define_group(GroupConfig(group_id="g", members=("a", "b", "c"), max_events_per_day=1))
    g = core.groups["g"]
    assert g.event_until == start + 30 * 60 // 3 - 1
    assert g.events_by_day[5] == 1 and sum(g.events_by_day.values()) == 1
    core.define_group(GroupConfig(group_id="fresh", members=("d", "e", "f")))
    assert core.groups["fresh"].event_until == -1 and not core.groups["fresh"].events_by_day
    store.close()
