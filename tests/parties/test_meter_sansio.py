"""The meter core is sans-IO: readings pushed in (any order, late), no thread, no clock, no wait."""

from __future__ import annotations

import ast
import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import privmeter
from privmeter.parties.engine import drive
from privmeter.parties.meter import MeterAgent
from privmeter.parties.meter_feed import MeterFeed, MeterLoad, round_of
from privmeter.sim.clock import SimClock
from privmeter.sim.runner import MemoryLink, make_parties
from privmeter.sim.scenario import World

SRC = Path(privmeter.__file__).parent
N = 6  # intervals driven


class _Direct:
    """A meter's service that pushes nothing itself: the test pushes the readings."""

    def __init__(self, agent: MeterAgent, after_round: Any = None) -> None:
        self.agent = agent
        self.load = MeterLoad(agent.interval_seconds, fixed={})
        self.after_round = after_round

    def needs_wait(self, interval: int) -> bool:
        return False

    def handle(self, msg: Any, *, now: int | None = None) -> list[Any]:
        out = self.agent.handle(msg, now=now)
        t = round_of(msg)
        if t is not None and self.after_round is not None:
            self.after_round(t)
        return out


def test_readings_pushed_out_of_order_and_late_give_exact_totals(tiny_world: World) -> None:
    p = make_parties(tiny_world)
    first = tiny_world.first_interval
    rng = random.Random(16)
    ids = sorted(p.meters)
    truth = {m: {t: rng.randrange(-400, 3000) for t in range(first, first + N + 3)} for m in ids}
    late_meter, late_t = ids[2], first + 2

    def push_late(t: int) -> None:  # the reading of late_t arrives after its round
        if t == late_t:
            p.meters[late_meter].reading(late_t, truth[late_meter][late_t])

    p.feeds = {m: _Direct(a, push_late if m == late_meter else None) for m, a in p.meters.items()}  # type: ignore[misc]
    pushes = [(m, t) for m in ids for t in truth[m] if (m, t) != (late_meter, late_t)]
    rng.shuffle(pushes)  # every meter's readings in random order, future ones included
    for m, t in pushes:
        p.meters[m].reading(t, truth[m][t])
    log = asyncio.run(
        drive(
            p.core,
            MemoryLink(p),
            tiny_world.groups,
            first_interval=first,
            count=N,
            interval_seconds=tiny_world.scenario.interval_seconds,
            clock=SimClock(0),
        )
    )
    seen = {r.interval: r for _g, r in log.results if first <= r.interval < first + N}
    assert sorted(seen) == list(range(first, first + N))
    for t, r in seen.items():
        want_dropped = (late_meter,) if t == late_t else ()
        assert r.dropped == want_dropped and r.total is not None
        assert r.total == (sum(truth[m][t] for m in r.survivors),)
    # the late reading was never reported (nor billed), as a reading missed by its round
    for m in ids:
        want = {t: truth[m][t] for t in range(first, first + N) if (m, t) != (late_meter, late_t)}
        got = {t: v for t, v in p.meters[m].local_readings.items() if t < first + N}
        assert got == want


def test_a_round_without_its_reading_is_answered_at_once(tiny_world: World) -> None:
    """The core never waits: the service asks ``wants_reading`` and does the waiting."""
    p = make_parties(tiny_world)
    m = next(iter(p.meters.values()))
    first = tiny_world.first_interval
    assert m.wants_reading(first)
    m.reading(first + 1, 5)  # a later interval closed: the source has passed ``first``
    assert not m.wants_reading(first) and not m.wants_reading(first + 1)
    assert m.wants_reading(first + 2)
    m.end_of_readings()
    assert not m.wants_reading(first + 100)


def test_the_sans_io_cores_have_no_thread_clock_or_sleep() -> None:
    """The cores import nothing that waits or reads the time; the head-end core's only use
    of ``time`` is ``process_time`` (its CPU accounting, never a decision)."""
    cores = [SRC / "parties" / f for f in ("meter.py", "headend.py", "household.py")]
    cores += sorted((SRC / "protocol").glob("*.py"))
    banned = {"threading", "asyncio", "socket", "selectors", "queue", "multiprocessing"}
    for path in cores:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
                assert names != {"time"}, f"{path.name}: from time import ..."
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "time":
                    assert node.attr == "process_time", f"{path.name}: time.{node.attr}"
                continue
            else:
                continue
            assert not names & banned, f"{path.name} imports {names & banned}"
        text = path.read_text()
        for call in ("sleep(", "datetime.now(", "utcnow(", "date.today("):
            assert call not in text, f"{path.name}: {call}"


def test_building_meters_starts_no_thread(tiny_world: World) -> None:
    before = threading.active_count()
    p = make_parties(tiny_world)
    assert threading.active_count() == before
    assert all(not hasattr(m, "load") for m in p.meters.values())


def test_two_parties_in_one_process_do_not_share_epoch_state(tiny_world: World) -> None:
    """Meters built without a cache each own theirs, and so does the head-end core; the
    simulator's meters share one only because ``make_meters`` hands them one."""
    sc = tiny_world.scenario
    p = make_parties(tiny_world)
    shared = {id(m.epochs) for m in p.meters.values()}
    assert len(shared) == 1 and id(p.core.epochs) not in shared  # the sim's explicit choice
    keys = {h.meter_id: h.signing_key.verify_key for h in tiny_world.households}
    for h in tiny_world.households:  # the same meters, each built as a deployment builds it
        a = MeterAgent(
            h.meter_id,
            h.signing_key,
            h.secret_key.public_key,
            tiny_world.headend_key.verify_key,
            h.plan,
            sc.interval_seconds,
            first_interval=tiny_world.first_interval,
            group=h.group,
            group_keys={m: keys[m] for m in tiny_world.groups[h.group]},
            min_survivors=sc.min_survivors,
        )
        p.meters[h.meter_id] = a
        p.feeds[h.meter_id] = MeterFeed(a, p.feeds[h.meter_id].load)
    log = asyncio.run(
        drive(
            p.core,
            MemoryLink(p),
            tiny_world.groups,
            first_interval=tiny_world.first_interval,
            count=2,
            interval_seconds=sc.interval_seconds,
            clock=SimClock(0),
            settle=False,
        )
    )
    caches = [m.epochs for m in p.meters.values()] + [p.core.epochs]
    assert len({id(c) for c in caches}) == len(caches)
    tables = [next(iter(c._tables.values())) for c in caches]  # one epoch each, built apart
    assert all(len(c) == 1 for c in caches) and len({id(t) for t in tables}) == len(tables)
    for m in p.meters.values():
        assert m.agg is not None and m.agg._epochs is m.epochs
    for g in p.core.groups.values():
        assert g.agg is not None and g.agg._epochs is p.core.epochs
    first = tiny_world.first_interval
    results = [r for _g, r in log.results if first <= r.interval < first + 2]
    assert len(results) == 2
    for r in results:  # and the totals are exact
        want = sum(p.feeds[m].load.energy_wh(r.interval) or 0 for m in r.survivors)
        assert r.total == (want,) and not r.dropped
