"""The ring's state machines, table-driven: leader, member, coordinator, Paillier ring.

Each role is driven into each state of a round and given each message (and its own steps):
a pair outside the table raises the table's error and leaves the round, and what the
meter has seen, as they were; an allowed pair moves the round as the table says.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from privmeter.crypto.keyagreement import AgreementKey
from privmeter.errors import AggregationError, InvalidCiphertext
from privmeter.protocol.ring import (
    PAILLIER_RING_METER,
    RING_COORDINATOR,
    RING_LEADER,
    RING_MEMBER,
    CoordinatorInput,
    CoordinatorState,
    MemberRoundState,
    PaillierRingCoordinator,
    PaillierRingMeter,
    PaillierToken,
    RingCoordinator,
    RingMeter,
    RingStart,
    RingTotal,
    RoundInput,
    RoundState,
)
from privmeter.protocol.states import Machine

IDS = [f"h{i}" for i in range(4)]
X = {m: 100 * (i + 1) for i, m in enumerate(IDS)}
R = 3  # the round driven


class Ring:
    """Coordinator and meters from one seed; ``steps``: 0 nothing, 1 started (the leader's
    token out), 2 the first member passed it on, 3 the total back at the coordinator."""

    def __init__(self, steps: int) -> None:
        rng = random.Random(5)
        keys = {m: AgreementKey.generate(rng) for m in IDS}
        pubs = {m: k.public for m, k in keys.items()}
        self.meters = {m: RingMeter(m, IDS, keys[m], pubs, group="g", rng=rng) for m in IDS}
        self.coord = RingCoordinator("g", IDS)
        self.msgs: dict[str, Any] = {"start": RingStart(group="g", round=R)}
        if steps >= 1:
            self.coord.start(R)
            self.msgs["token-h1"] = self.meters["h0"].handle_start(self.msgs["start"], X["h0"])
        if steps >= 2:
            self.msgs["token-h2"] = self.meters["h1"].handle_token(self.msgs["token-h1"], X["h1"])
        if steps >= 3:
            tok = self.meters["h2"].handle_token(self.msgs["token-h2"], X["h2"])
            self.msgs["token-h0"] = self.meters["h3"].handle_token(tok, X["h3"])
            self.msgs["total"] = self.meters["h0"].handle_token(self.msgs["token-h0"], X["h0"])
            assert self.coord.handle_total(self.msgs["total"]) == sum(X.values())


ALL = Ring(3).msgs


def _check(
    machine: Machine[Any, Any],
    state: Any,
    inp: Any,
    act: Callable[[], object],
    now: Callable[[], Any],
    snapshot: Callable[[], object],
) -> None:
    assert now() is state
    before = snapshot()
    if machine.allowed(state, inp):
        act()
        assert now() is machine.next(state, inp)
        return
    refusal = machine.refusal(state, inp)
    with pytest.raises(refusal.error) as ei:
        act()
    assert type(ei.value) is refusal.error and ei.value.context["state"] == state.value
    assert now() is state and snapshot() == before


LEADER = {RoundState.IDLE: 0, RoundState.STARTED: 1, RoundState.DONE: 3}
MEMBER = {MemberRoundState.IDLE: 1, MemberRoundState.DONE: 2}  # h1


@pytest.mark.parametrize("state", list(LEADER), ids=lambda s: s.value)
@pytest.mark.parametrize("inp", list(RoundInput), ids=lambda i: i.value)
def test_ring_leader_table(state: RoundState, inp: RoundInput) -> None:
    ring = Ring(LEADER[state])
    h0 = ring.meters["h0"]
    act = {
        RoundInput.START: lambda: h0.handle_start(ALL["start"], X["h0"]),
        RoundInput.TOKEN: lambda: h0.handle_token(ALL["token-h0"], X["h0"]),
    }[inp]
    _check(
        RING_LEADER,
        state,
        inp,
        act,
        lambda: h0.state(R),
        lambda: (h0.last_sent, h0.last_received, dict(h0._mask)),
    )


@pytest.mark.parametrize("state", list(MEMBER), ids=lambda s: s.value)
@pytest.mark.parametrize("inp", list(RoundInput), ids=lambda i: i.value)
def test_ring_member_table(state: MemberRoundState, inp: RoundInput) -> None:
    ring = Ring(MEMBER[state])
    h1 = ring.meters["h1"]
    act = {
        RoundInput.START: lambda: h1.handle_start(ALL["start"], X["h1"]),
        RoundInput.TOKEN: lambda: h1.handle_token(ALL["token-h1"], X["h1"]),
    }[inp]
    _check(
        RING_MEMBER,
        state,
        inp,
        act,
        lambda: h1.state(R),
        lambda: (h1.last_sent, h1.last_received),
    )


def _coordinator_in(state: CoordinatorState, coord: Any) -> None:
    if state is not CoordinatorState.IDLE:
        coord.start(R)
    if state is CoordinatorState.STALLED:
        with pytest.raises(AggregationError):
            coord.timeout(R)


@pytest.mark.parametrize("state", list(CoordinatorState), ids=lambda s: s.value)
@pytest.mark.parametrize("inp", list(CoordinatorInput), ids=lambda i: i.value)
def test_ring_coordinator_table(state: CoordinatorState, inp: CoordinatorInput) -> None:
    if state is CoordinatorState.DONE:
        coord = Ring(3).coord
    else:
        coord = RingCoordinator("g", IDS)
        _coordinator_in(state, coord)

    def act() -> object:
        if inp is CoordinatorInput.START:
            return coord.start(R)
        if inp is CoordinatorInput.TOTAL:
            return coord.handle_total(RingTotal(group="g", round=R, total=7))
        try:
            return coord.timeout(R)
        except AggregationError:  # the allowed open -> stalled step reports the lost round
            assert state is CoordinatorState.OPEN
            return None

    _check(RING_COORDINATOR, state, inp, act, lambda: coord.state(R), lambda: dict(coord.totals))


def test_paillier_ring_tables(paillier_small) -> None:  # type: ignore[no-untyped-def]
    pk, sk = paillier_small
    rng = random.Random(3)
    meters = {m: PaillierRingMeter(m, IDS, pk, group="g", rng=rng) for m in IDS}
    coord = PaillierRingCoordinator("g", IDS, sk)
    start = coord.start(R)
    assert coord.state(R) is CoordinatorState.OPEN
    toks: list[PaillierToken] = [meters["h0"].handle_start(start, X["h0"])]
    for m in IDS[1:]:
        toks.append(meters[m].handle_token(toks[-1], X[m]))
    # every meter is done with the round: start and token are refused as the table says
    for i, m in enumerate(IDS):
        pm = meters[m]
        assert pm.state(R) is MemberRoundState.DONE
        if i == 0:
            _check(
                PAILLIER_RING_METER,
                MemberRoundState.DONE,
                RoundInput.START,
                lambda pm=pm: pm.handle_start(start, 1),
                lambda pm=pm: pm.state(R),
                lambda: None,
            )
        else:
            _check(
                PAILLIER_RING_METER,
                MemberRoundState.DONE,
                RoundInput.TOKEN,
                lambda pm=pm, i=i: pm.handle_token(toks[i - 1], 1),
                lambda pm=pm: pm.state(R),
                lambda: None,
            )
    # the coordinator: the final token closes an open round, once
    assert coord.handle_final(toks[-1]) == sum(X.values())
    assert coord.state(R) is CoordinatorState.DONE
    _check(
        RING_COORDINATOR,
        CoordinatorState.DONE,
        CoordinatorInput.TOTAL,
        lambda: coord.handle_final(toks[-1]),
        lambda: coord.state(R),
        lambda: None,
    )
    coord.timeout(R)  # a finished round: nothing to report
    assert coord.state(R) is CoordinatorState.DONE


def test_a_bad_total_ciphertext_leaves_the_round_open(paillier_small) -> None:  # type: ignore[no-untyped-def]
    """The Paillier coordinator commits ``done`` only after the final token decrypts."""
    _pk, sk = paillier_small
    coord = PaillierRingCoordinator("g", IDS, sk)
    coord.start(R)
    bad = PaillierToken(group="g", round=R, sender=IDS[-1], ciphertext=0, final=True)
    with pytest.raises(InvalidCiphertext):
        coord.handle_final(bad)
    assert coord.state(R) is CoordinatorState.OPEN
    with pytest.raises(AggregationError):
        coord.timeout(R)
    assert coord.state(R) is CoordinatorState.STALLED
