"""The aggregation roles' tables (AGG_METER, AGG_HEADEND) and the meter agent's (star, ring):
each role driven into each state and sent each step; a refused step leaves the state as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from privmeter.errors import PrivmeterError, UnexpectedMessage
from privmeter.parties.engine import drive
from privmeter.parties.messages import EpochRequest
from privmeter.parties.meter import (
    METER_AGENT_RING,
    METER_AGENT_STAR,
    MeterAgent,
    MeterAgentState,
)
from privmeter.parties.meter_feed import MeterFeed
from privmeter.protocol.aggregation import (
    AGG_HEADEND,
    AGG_METER,
    HeadEndState,
    MeterState,
)
from privmeter.protocol.aggregation_messages import IntervalStart, KeyBundle
from privmeter.protocol.codec import encode
from privmeter.protocol.ring import RingStart, RingToken
from privmeter.protocol.states import Machine
from privmeter.sim.aggregation_group import make_group
from privmeter.sim.clock import SimClock
from privmeter.sim.runner import MemoryLink, make_parties
from privmeter.sim.scenario import World, build

from ..conftest import tiny_scenario

MACHINES: list[Machine[Any, Any]] = [AGG_METER, AGG_HEADEND, METER_AGENT_STAR, METER_AGENT_RING]


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: m.role)
def test_each_pair_outside_the_table_is_refused_naming_state_and_step(m: Machine[Any, Any]) -> None:
    for state, event in m.pairs():
        if m.allowed(state, event):
            continue
        with pytest.raises(m.refusal(state, event).error) as ei:
            m.next(state, event, meter_id="m1")
        assert repr(state.value) in str(ei.value) and repr(event.value) in str(ei.value)


def test_aggregation_meter_and_head_end_follow_their_tables() -> None:
    g = make_group(5)
    he, meter = g.headend, g.meters["m00000"]
    assert he.state is HeadEndState.COLLECTING and meter.state is MeterState.ADVERTISED
    for step in (he.open_interval, he.close_interval, lambda: he.handle_input(b"\x80")):
        with pytest.raises(UnexpectedMessage, match="epoch not set up"):
            step()
        assert he.state is HeadEndState.COLLECTING
    g.setup()
    assert he.state is HeadEndState.RUNNING
    assert all(m.state is MeterState.RUNNING for m in g.meters.values())
    with pytest.raises(UnexpectedMessage, match="after the epoch was set up"):
        he.handle_advert(encode(meter.advertise()))
    bundle = he.make_bundle()  # again when running: the same bundle
    assert he.state is HeadEndState.RUNNING
    with pytest.raises(UnexpectedMessage, match="'running' cannot take 'bundle'"):
        meter.handle_bundle(bundle)
    assert meter.state is MeterState.RUNNING
    # a meter still waiting for its bundle refuses a round; it stays advertised
    late = make_group(5).meters["m00000"]
    start = he.open_interval()["m00000"]
    with pytest.raises(UnexpectedMessage, match="'advertised' cannot take 'start'"):
        late.handle_start(start, 5)
    assert late.state is MeterState.ADVERTISED
    meter.handle_start(start, 5)  # the running one answers
    assert meter.state is MeterState.RUNNING


class _Recorder:
    """A meter's feed that keeps the last message of each type it delivered."""

    def __init__(self, feed: MeterFeed) -> None:
        self.feed, self.seen = feed, {}  # type: ignore[var-annotated]

    def needs_wait(self, interval: int) -> bool:
        return False

    def handle(self, msg: Any, *, now: int | None = None) -> list[Any]:
        self.seen[type(msg)] = msg
        return self.feed.handle(msg, now=now)


def _run(world: World, count: int = 1) -> tuple[dict[str, MeterAgent], dict[str, _Recorder]]:
    p = make_parties(world)
    rec = {m: _Recorder(f) for m, f in p.feeds.items()}
    p.feeds = rec  # type: ignore[assignment]
    for a in p.meters.values():
        assert a.state is MeterAgentState.IDLE
    asyncio.run(
        drive(
            p.core,
            MemoryLink(p),
            world.groups,
            first_interval=world.first_interval,
            count=count,
            interval_seconds=world.scenario.interval_seconds,
            clock=SimClock(0),
            settle=False,
        )
    )
    return p.meters, rec


def _refused(agent: MeterAgent, msg: Any, match: str) -> None:
    before = agent.state
    with pytest.raises(PrivmeterError, match=match):
        agent.handle(msg)
    assert agent.state is before


def test_star_meter_agent_follows_its_table(tiny_world: World) -> None:
    meters, rec = _run(tiny_world)
    mid = sorted(meters)[0]
    a, seen = meters[mid], rec[mid].seen
    bundle, start = seen[KeyBundle], seen[IntervalStart]
    assert a.state is MeterAgentState.RUNNING
    _refused(a, bundle, "the epoch's bundle was taken")
    # a new epoch from running: advertised; its round is refused by the aggregation meter
    (adv,) = a.handle(EpochRequest(group=a.group, epoch=99, first_interval=0))
    assert adv.epoch == 99 and a.state is MeterAgentState.ADVERTISED
    _refused(a, start, "'advertised' cannot take 'start'")


def test_an_idle_star_agent_takes_only_an_epoch(tiny_world: World) -> None:
    p = make_parties(tiny_world)
    a = next(iter(p.meters.values()))
    _, rec = _run(tiny_world)
    seen = rec[a.meter_id].seen
    _refused(a, seen[KeyBundle], "bundle before any epoch")
    _refused(a, seen[IntervalStart], "interval start before any epoch")
    _refused(a, EpochRequest(group="another", epoch=1, first_interval=0), "epoch for another group")
    assert a.state is MeterAgentState.IDLE


def test_ring_meter_agent_follows_its_table(sim_cache: Path) -> None:
    world = build(tiny_scenario(sim_cache, topology="ring"))
    meters, rec = _run(world)
    fresh = make_parties(world).meters
    first = sorted(meters)[0]
    a, seen = meters[first], rec[first].seen
    bundle, start = seen[KeyBundle], seen[RingStart]
    assert a.state is MeterAgentState.RUNNING
    idle = fresh[first]
    _refused(idle, bundle, "ring bundle before any epoch")
    _refused(idle, start, "ring message before the ring was set up")
    _refused(idle, seen.get(RingToken, start), "ring message before the ring was set up")
    (adv,) = a.handle(EpochRequest(group=a.group, epoch=99, first_interval=0))
    assert adv.epoch == 99 and a.state is MeterAgentState.ADVERTISED and a.ring is None
    _refused(a, start, "ring message before the ring was set up")
