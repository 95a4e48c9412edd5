"""Demand management's state machines, table-driven: the meter's event, the manager's view
of one meter, and both sides of a comparison session.

For every state a role can be driven into and every message it can receive there, a pair
the table refuses raises the table's specific error (naming the state and the message) and
leaves the role as it was; an allowed pair moves it to the table's next state.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.elgamal import get_group
from privmeter.crypto.signing import SigningKey
from privmeter.protocol import comparison as cmp
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.demand import (
    MANAGER_METER,
    METER_EVENT,
    DemandManager,
    ManagerInput,
    ManagerMeterState,
    MeterDemandAgent,
    MeterEventState,
    MeterInput,
)
from privmeter.protocol.demand_budget import ComparisonBudget
from privmeter.protocol.states import Machine

NOW = 1_700_000_100
GROUP = "feeder-7"
M = "m00"  # the meter whose states are driven
N = 5


def wire(msg: Any) -> Any:
    return decode(encode(msg), expect=type(msg))


class World:
    """A head-end and five meters, driven step by step from one seed (same messages each time).

    Steps: 0 event opened; 1 every meter accepts (offers and echoes to the manager);
    2 the echo bundle reaches every meter; 3 the manager challenges M; 4 M answers and the
    manager reads the bit; 5 the manager directs M and M applies it.
    """

    METER: ClassVar[list[MeterEventState]] = [
        MeterEventState.IDLE,
        MeterEventState.OFFERED,
        MeterEventState.CERTIFIED,
        MeterEventState.CERTIFIED,
        MeterEventState.ANSWERED,
        MeterEventState.DIRECTED,
    ]
    MANAGER: ClassVar[list[ManagerMeterState]] = [
        ManagerMeterState.IDLE,
        ManagerMeterState.OFFERED,
        ManagerMeterState.OFFERED,
        ManagerMeterState.QUERIED,
        ManagerMeterState.ANSWERED,
        ManagerMeterState.DIRECTED,
    ]

    def __init__(self, steps: int) -> None:
        self.rng = random.Random(7)
        he = SigningKey.from_seed(b"H" * 32)
        keys = {f"m{i:02d}": SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(N)}
        roster = {m: k.verify_key for m, k in keys.items()}
        self.mgr = DemandManager(
            he,
            GROUP,
            roster,
            cmin_w=0,
            cmax_w=100,
            level_above_w=10,
            level_below_w=10,
            bits=16,
            min_group_bits=512,
        )
        self.agents = {
            m: MeterDemandAgent(
                m,
                GROUP,
                k,
                he.verify_key,
                ComparisonBudget(comparisons_per_interval=2, min_group_size=3),
                roster=roster,
                cap_w=10,
                key_group="test512",
                allow_insecure_group=True,
            )
            for m, k in keys.items()
        }
        self.msgs: dict[str, Any] = {}
        for k in range(steps + 1):
            getattr(self, f"_step{k}")()

    @property
    def eid(self) -> str:
        return str(self.msgs["event"].event_id)

    def _step0(self) -> None:
        self.msgs["event"] = wire(
            self.mgr.open_event(
                10, side="above", action="curtail", start_interval=1, now=NOW, rng=self.rng
            )
        )

    def _step1(self) -> None:
        for m, a in self.agents.items():
            off, echo = a.receive_event(
                self.msgs["event"],
                reading_interval=NOW // 900 - 1,
                reading_w=50,
                now=NOW,
                rng=self.rng,
            )
            self.mgr.receive_offer(wire(off))
            self.mgr.receive_echo(wire(echo))
            if m == M:
                self.msgs["offer"], self.msgs["echo"] = wire(off), wire(echo)

    def _step2(self) -> None:
        self.msgs["echoes"] = wire(self.mgr.echo_bundle(self.eid))
        for a in self.agents.values():
            assert a.receive_echoes(self.msgs["echoes"], now=NOW)

    def _step3(self) -> None:
        (q,) = self.mgr.queries(self.eid, now=NOW, meters=[M], rng=self.rng)
        self.msgs["query"] = wire(q)

    def _step4(self) -> None:
        self.msgs["answer"] = wire(self.agents[M].receive_query(self.msgs["query"], now=NOW))
        assert self.mgr.receive_answer(self.msgs["answer"], now=NOW) is True

    def _step5(self) -> None:
        (d,) = self.mgr.directives(self.eid, now=NOW)
        self.msgs["directive"] = wire(d)
        self.agents[M].receive_directive(self.msgs["directive"], now=NOW)


FULL = World(5)  # every message of the run, identical in every prefix world
ALL = FULL.msgs


def meter_after(state: MeterEventState, inp: MeterInput) -> MeterEventState:
    """The table's next state; the full echo bundle also certifies (the ``certify`` step)."""
    nxt = METER_EVENT.next(state, inp)
    if inp is MeterInput.ECHOES and METER_EVENT.allowed(nxt, MeterInput.CERTIFY):
        nxt = METER_EVENT.next(nxt, MeterInput.CERTIFY)
    return nxt


def meter_snapshot(w: World) -> tuple[Any, ...]:
    a = w.agents[M]
    me = a.events.get(w.eid)
    return (a.state(w.eid), a.budget.state(), None if me is None else me.answered_query)


def manager_snapshot(w: World) -> tuple[Any, ...]:
    e = w.mgr.events[w.eid]
    return (
        e.state(M),
        M in e.offers,
        e.queries.get(M),
        e.results.get(M),
        sorted(e.directed),
        w.mgr.bad_offers,
    )


def test_every_world_reaches_its_states() -> None:
    for k in range(6):
        w = World(k)
        assert w.agents[M].state(w.eid) is World.METER[k]
        assert w.mgr.events[w.eid].state(M) is World.MANAGER[k]
        e = w.mgr.events[w.eid]  # the directed index is exactly the meters in state directed
        assert e.directed == {m for m, st in e.states.items() if st is ManagerMeterState.DIRECTED}


# message -> (the meter's input, how the meter takes it)
METER_MSGS = {
    "event": (
        MeterInput.EVENT,
        lambda a, m: a.receive_event(m, reading_interval=NOW // 900 - 1, reading_w=50, now=NOW),
    ),
    "echoes": (MeterInput.ECHOES, lambda a, m: a.receive_echoes(m, now=NOW)),
    "query": (MeterInput.QUERY, lambda a, m: a.receive_query(m, now=NOW)),
    "directive": (MeterInput.DIRECTIVE, lambda a, m: a.receive_directive(m, now=NOW)),
}
MANAGER_MSGS = {
    "echo": (ManagerInput.ECHO, lambda g, m: g.receive_echo(m)),
    "offer": (ManagerInput.OFFER, lambda g, m: g.receive_offer(m)),
    "answer": (ManagerInput.ANSWER, lambda g, m: g.receive_answer(m, now=NOW)),
}


@pytest.mark.parametrize("step", range(6))
@pytest.mark.parametrize("name", sorted(METER_MSGS))
def test_meter_event_table(step: int, name: str) -> None:
    """The meter's event: a refused message raises the table's error, state unchanged."""
    w = World(step)
    state = World.METER[step]
    inp, take = METER_MSGS[name]
    before = meter_snapshot(w)
    if METER_EVENT.allowed(state, inp):
        take(w.agents[M], ALL[name])
        assert w.agents[M].state(w.eid) is meter_after(state, inp)
        return
    refusal = METER_EVENT.refusal(state, inp)
    with pytest.raises(refusal.error) as ei:
        take(w.agents[M], ALL[name])
    assert type(ei.value) is refusal.error
    assert ei.value.context["state"] == state.value and ei.value.context["event"] == inp.value
    assert refusal.reason in str(ei.value)
    assert meter_snapshot(w) == before


@pytest.mark.parametrize("step", range(6))
@pytest.mark.parametrize("name", sorted(MANAGER_MSGS))
def test_manager_meter_table(step: int, name: str) -> None:
    """The manager's view of one meter: a refused message raises the table's error, unchanged."""
    w = World(step)
    state = World.MANAGER[step]
    inp, take = MANAGER_MSGS[name]
    before = manager_snapshot(w)
    if MANAGER_METER.allowed(state, inp):
        take(w.mgr, ALL[name])
        assert w.mgr.events[w.eid].state(M) is MANAGER_METER.next(state, inp)
        return
    refusal = MANAGER_METER.refusal(state, inp)
    with pytest.raises(refusal.error) as ei:
        take(w.mgr, ALL[name])
    assert type(ei.value) is refusal.error
    assert manager_snapshot(w) == before


@pytest.mark.parametrize("step", range(6))
def test_the_managers_own_steps_follow_the_table(step: int) -> None:
    """``queries`` challenges only an ``offered`` meter and ``directives`` directs only an
    ``answered`` target: in any other state the meter is skipped and stays as it was."""
    w = World(step)
    state = World.MANAGER[step]
    before = manager_snapshot(w)
    qs = w.mgr.queries(w.eid, now=NOW, meters=[M], rng=w.rng)
    assert bool(qs) == MANAGER_METER.allowed(state, ManagerInput.QUERY)
    if not qs:
        assert manager_snapshot(w) == before
    before = manager_snapshot(w)
    state = w.mgr.events[w.eid].state(M)
    ds = w.mgr.directives(w.eid, now=NOW)
    assert bool(ds) == MANAGER_METER.allowed(state, ManagerInput.DIRECTIVE)
    if not ds:
        assert manager_snapshot(w) == before


def test_certification_is_the_table_s_certify_step() -> None:
    """A plan without echoes certifies at once; with echoes, only the quorum does."""
    w = World(1)
    assert w.agents[M].state(w.eid) is MeterEventState.OFFERED
    short = type(ALL["echoes"])(event_id=w.eid, echoes=ALL["echoes"].echoes[:2])
    assert w.agents[M].receive_echoes(short, now=NOW) is False
    assert w.agents[M].state(w.eid) is MeterEventState.OFFERED
    assert w.agents[M].receive_echoes(ALL["echoes"], now=NOW) is True
    assert w.agents[M].state(w.eid) is MeterEventState.CERTIFIED


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(sorted(METER_MSGS)), min_size=1, max_size=8))
def test_any_message_sequence_follows_the_meter_table(names: list[str]) -> None:
    """Whatever order the head-end sends the event's messages in, the meter's state moves
    exactly as the table says, and every refusal is the table's."""
    w = World(0)
    for name in names:
        inp, take = METER_MSGS[name]
        state = w.agents[M].state(w.eid)
        try:
            take(w.agents[M], ALL[name])
        except Exception as exc:  # checked against the table
            if METER_EVENT.allowed(state, inp):
                # allowed by the table, refused on content: only a query on another offer
                assert name == "query", exc
            else:
                assert type(exc) is METER_EVENT.refusal(state, inp).error
            assert w.agents[M].state(w.eid) is state
        else:
            assert METER_EVENT.allowed(state, inp)
            assert w.agents[M].state(w.eid) is meter_after(state, inp)


# -- comparison sessions ---------------------------------------------------------------------

SMALL = get_group("test512", allow_insecure=True)


def _session() -> tuple[cmp.MeterComparison, cmp.UtilityComparison]:
    rng = random.Random(3)
    meter = cmp.MeterComparison(SMALL, 50, bits=8, radix=2, rng=rng)
    util = cmp.UtilityComparison(
        meter.offer, 10, bits=8, radix=2, min_group_bits=512, allow_insecure=True, rng=rng
    )
    return meter, util


def test_comparison_session_tables() -> None:
    meter, util = _session()
    ch = util.challenge
    for m, side, inp, take in (
        (cmp.METER_SESSION, meter, cmp.SessionEvent.CHALLENGE, lambda: meter.answer(ch)),
        (cmp.UTILITY_SESSION, util, cmp.SessionEvent.ANSWER, lambda: util.receive(True)),
    ):
        assert side.state is m.initial and m.allowed(side.state, inp)
        take()
        assert side.state is cmp.SessionState.DONE
        for state, ev in m.pairs():
            if state is cmp.SessionState.DONE and ev is inp:
                with pytest.raises(m.refusal(state, ev).error, match="already answered"):
                    take()
                assert side.state is cmp.SessionState.DONE


def test_every_demand_machine_is_registered() -> None:
    from privmeter.protocol.states import MACHINES

    for m in (METER_EVENT, MANAGER_METER, cmp.METER_SESSION, cmp.UTILITY_SESSION):
        assert isinstance(m, Machine) and MACHINES[m.role] is m
