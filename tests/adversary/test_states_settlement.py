"""The billing-period state machines, table-driven: the household's (HOUSEHOLD_PERIOD) and
the head-end ledger's (LEDGER_PERIOD).

The household is driven into each state a period can be in between statements (``open``,
``disputed``, ``paid``) and sent each kind of statement: the refused pairs answer the
table's error (as the dispute ``settled``: AlreadySettled) and leave the period, its proof
and the durable store untouched; the allowed ones move it as the table says.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.parties.household import (
    HOUSEHOLD_PERIOD,
    HouseholdAgent,
    PeriodInput,
    PeriodState,
)
from privmeter.protocol.billing import (
    LEDGER_PERIOD,
    BillingLedger,
    LedgerInput,
    LedgerPeriodState,
)
from privmeter.protocol.settlement import BillProof, Dispute, statement_digest

from .settlement_harness import (
    DAY0,
    HEADEND,
    METER,
    LyingHeadEnd,
    N,
    World,
    flat_plan,
    readings_for,
)


@pytest.fixture(scope="module")
def world(paillier_small) -> World:
    return World(paillier_small, flat_plan(), readings_for(3))


class Home:
    """A household whose ``on_paid`` hook records what it would save."""

    def __init__(self, w: World) -> None:
        self.w, self.he = w, LyingHeadEnd(w)
        self.saved: list[tuple[int, BillProof]] = []
        self.agent: HouseholdAgent = w.household()
        self.agent.on_paid = lambda k, p: self.saved.append((k, p))
        self.msgs = {
            "honest": w.statement,  # the honest ledger's statement
            "reissued": self.he.sign(),  # the same bill, issued again (another statement)
            "lying": self.he.sign(fixed_charge=w.statement.fixed_charge + 1),
        }

    def send(self, name: str) -> BillProof | Dispute:
        return self.he.send(self.agent, self.msgs[name])

    def snapshot(self) -> tuple[object, ...]:
        return (self.agent.state(0), dict(self.agent.paid), list(self.saved))


# how each state is reached from a fresh household
REACH = {PeriodState.OPEN: [], PeriodState.DISPUTED: ["lying"], PeriodState.PAID: ["honest"]}


def _input(home: Home, name: str) -> PeriodInput:
    paid = home.agent.paid.get(0)
    same = paid is not None and paid.statement_digest == statement_digest(home.msgs[name])
    return PeriodInput.RETRANSMISSION if same else PeriodInput.STATEMENT


@pytest.mark.parametrize("state", list(REACH), ids=lambda s: s.value)
@pytest.mark.parametrize("name", ["honest", "reissued", "lying"])
def test_household_period_table(world: World, state: PeriodState, name: str) -> None:
    home = Home(world)
    for step in REACH[state]:
        home.send(step)
    assert home.agent.state(0) is state
    inp = _input(home, name)
    before = home.snapshot()
    ans = home.send(name)
    if not HOUSEHOLD_PERIOD.allowed(state, inp):
        refusal = HOUSEHOLD_PERIOD.refusal(state, inp)
        assert isinstance(ans, Dispute) and ans.reason == "settled"
        assert type(ans.error()) is refusal.error
        assert home.snapshot() == before  # no state change, no second proof, nothing saved
        return
    checking = HOUSEHOLD_PERIOD.next(state, inp)
    if inp is PeriodInput.RETRANSMISSION:
        assert ans == home.agent.paid[0] and home.snapshot() == before
        return
    outcome = PeriodInput.PAY if isinstance(ans, BillProof) else PeriodInput.DISPUTE
    assert home.agent.state(0) is HOUSEHOLD_PERIOD.next(checking, outcome)
    assert isinstance(ans, BillProof) == (name != "lying")
    assert len(home.saved) == (1 if isinstance(ans, BillProof) else 0)


def test_a_restarted_household_restores_paid_and_forgets_disputed(world: World) -> None:
    home = Home(world)
    home.send("lying")
    assert home.agent.state(0) is PeriodState.DISPUTED
    proof = home.send("honest")
    assert isinstance(proof, BillProof) and home.agent.state(0) is PeriodState.PAID
    again = HouseholdAgent(
        "m1",
        world.sk,
        world.plan,
        home.agent.headend_key,
        lambda: (world.readings, {}),
        meter_key=home.agent.meter_key,
        period_start=home.agent.period_start,
        period_intervals=home.agent.period_intervals,
        paid={0: proof},
    )
    assert again.state(0) is PeriodState.PAID and again.state(1) is PeriodState.OPEN


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["honest", "reissued", "lying"]), min_size=1, max_size=6))
def test_any_statement_sequence_follows_the_table(world: World, names: list[str]) -> None:
    """Whatever statements arrive in whatever order: the state moves as the table says,
    exactly one proof is ever given for the period and it is saved once."""
    home = Home(world)
    proofs = set()
    for name in names:
        state, inp = home.agent.state(0), _input(home, name)
        ans = home.send(name)
        if isinstance(ans, BillProof):
            proofs.add(ans)
        if not HOUSEHOLD_PERIOD.allowed(state, inp):
            assert isinstance(ans, Dispute) and ans.reason == "settled"
            assert home.agent.state(0) is state
        elif inp is PeriodInput.RETRANSMISSION:
            assert home.agent.state(0) is state
        else:
            outcome = PeriodInput.PAY if isinstance(ans, BillProof) else PeriodInput.DISPUTE
            assert home.agent.state(0) is HOUSEHOLD_PERIOD.next(
                HOUSEHOLD_PERIOD.next(state, inp), outcome
            )
    assert len(proofs) <= 1 and len(home.saved) == len(proofs)


# -- the head-end's ledger ------------------------------------------------------------------


def _ledger(world: World) -> BillingLedger:
    """The world's ledger before its statement, holding all its records but the last."""
    led = BillingLedger(HEADEND, [world.plan], min_key_bits=world.pk.bits)
    led.register(
        "m1",
        METER.verify_key,
        world.pk,
        world.plan,
        wellformed_proof=prove_wellformed(world.sk),
        period_start=DAY0,
        period_intervals=N,
    )
    for rec in world.records[:-1]:
        led.receive(rec, current_interval=rec.interval)
    return led


@pytest.mark.parametrize("state", list(LedgerPeriodState), ids=lambda s: s.value)
@pytest.mark.parametrize("inp", list(LedgerInput), ids=lambda i: i.value)
def test_ledger_period_table(world: World, state: LedgerPeriodState, inp: LedgerInput) -> None:
    led = _ledger(world)
    if state is LedgerPeriodState.ISSUED:
        led.statement("m1", 0, now=1_700_000_000)
    assert led.period_state("m1", 0) is state
    last = world.records[-1]
    act = {
        LedgerInput.RECORD: lambda: led.receive(last, current_interval=last.interval),
        LedgerInput.STATEMENT: lambda: led.statement("m1", 0, now=1_700_000_001),
    }[inp]

    def snapshot() -> tuple[object, ...]:
        return (
            led.period_state("m1", 0),
            led.store.records("m1", DAY0, DAY0 + N),
            led.store.get_statement("m1", 0),
        )

    before = snapshot()
    if LEDGER_PERIOD.allowed(state, inp):
        act()
        assert led.period_state("m1", 0) is LEDGER_PERIOD.next(state, inp)
        if state is LedgerPeriodState.ISSUED:  # the same statement again
            assert snapshot() == before
        return
    refusal = LEDGER_PERIOD.refusal(state, inp)
    with pytest.raises(refusal.error, match="already settled") as ei:
        act()
    assert type(ei.value) is refusal.error and ei.value.context["period"] == 0
    assert snapshot() == before
