"""Issue 12, attacks 3 and 5: a lying head-end against settlement, and keys / bills out of bounds.

Attack 3 (settlement as an equality oracle): the head-end sends
E(bill) E(x_t) E(-guess), re-randomised; before the fix the household paid
exactly when guess == x_t.  Now it pays only a statement whose E(bill) it has
rebuilt itself from its meter's signed records, so every such probe is
disputed with the same public reason (``rebuild``) whatever the reading.

Attack 5 (h_s not checked, bills unbounded): a household key whose h_s hides a
(1+n)**k factor passed every check, and a "proof" of a bill of ~n/2 (a garbage
decryption) verified and passed the audit.  Now the key is refused
(:class:`~privmeter.errors.BaseNotDerived`) wherever it enters, a missing or
wrong key proof is refused at registration (:class:`~privmeter.errors.UnprovenKey`),
and a bill outside the plan's bounds is refused by the household, the head-end
and the auditor (:class:`~privmeter.errors.BillOutOfBounds`).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from privmeter.crypto.hazmat.paillier import CrtPrivateKey
from privmeter.crypto.paillier import PaillierPrivateKey, PaillierPublicKey
from privmeter.crypto.paillier_proofs import prove_decryption, prove_wellformed
from privmeter.errors import (
    AlreadySettled,
    BaseNotDerived,
    BillOutOfBounds,
    RebuildMismatch,
    UnprovenKey,
)
from privmeter.parties.headend import HeadEndCore
from privmeter.parties.keys import HouseholdKeys, public_household_key
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import make_record
from privmeter.protocol.settlement import (
    BillProof,
    Dispute,
    audit,
    check_proof,
    statement_digest,
)
from privmeter.store.billing_store import MemoryBillingStore, Registration

from .settlement_harness import (
    DAY0,
    FIELD_LIES,
    HEADEND,
    METER,
    Lie,
    LyingHeadEnd,
    N,
    World,
    flat_plan,
    readings_for,
)

VICTIM = 5  # the interval index whose reading differs between the two worlds


@pytest.fixture(scope="module")
def worlds(paillier_small) -> tuple[World, World]:
    """Two worlds that differ only in the victim's reading (by 1,234 Wh)."""
    a = readings_for(3)
    b = dict(a)
    b[DAY0 + VICTIM] += 1234
    return World(paillier_small, flat_plan(), a), World(paillier_small, flat_plan(), b)


def _answer(a: BillProof | Dispute) -> tuple[str, str]:
    """What a reply says apart from the statement it names: its kind and reason."""
    return ("pay", "") if isinstance(a, BillProof) else ("dispute", a.reason)


# -- attack 3 -------------------------------------------------------------------------------------


def test_attack3_equality_oracle_learns_nothing(worlds: tuple[World, World]) -> None:
    """The oracle statement for every guess in a window holding both worlds' readings:
    each is disputed as not rebuilt, with the same answers in both worlds."""
    wa, wb = worlds
    t = DAY0 + VICTIM
    xa, xb = wa.readings[t], wb.readings[t]
    guesses = sorted({xa, xb, *range(xa - 12, xa + 13)})
    replies = {}
    for w in worlds:
        he, home = LyingHeadEnd(w), w.household()
        rng = random.Random(99)
        replies[w] = [he.send(home, he.sign(bill_ciphertext=he.oracle(t, g, rng))) for g in guesses]
    assert [_answer(r) for r in replies[wa]] == [_answer(r) for r in replies[wb]]
    assert {_answer(r) for r in replies[wa]} == {("dispute", "rebuild")}
    assert all(
        isinstance(r, Dispute) and isinstance(r.error(), RebuildMismatch) for r in replies[wa]
    )


def test_the_true_bill_re_randomised_is_not_paid(worlds: tuple[World, World]) -> None:
    """E(bill) that encrypts exactly the true bill but is not the rebuilt product: refused too
    (before the fix it was paid: the household checked only that it opens to its bill)."""
    w = worlds[0]
    he = LyingHeadEnd(w)
    st_ = he.sign(bill_ciphertext=he.bill_ct().rerandomize(rng=random.Random(1)).to_bytes())
    assert w.sk.decrypt(he.ct(st_.bill_ciphertext)) == w.true_bill()
    assert _answer(he.send(w.household(), st_)) == ("dispute", "rebuild")


def test_honest_statement_is_paid_once_per_period(worlds: tuple[World, World]) -> None:
    for w in worlds:
        he, home = LyingHeadEnd(w), w.household()
        first = he.send(home, w.statement)
        assert isinstance(first, BillProof) and first.bill == w.true_bill()
        assert he.send(home, w.statement) == first  # a retransmission: the same proof again
        again = he.send(
            home, he.sign()
        )  # the same bill, issued again: a second payment of the period
        assert _answer(again) == ("dispute", "settled")
        assert isinstance(again, Dispute) and isinstance(again.error(), AlreadySettled)
        assert check_proof(w.statement, first, w.pk, w.plan) == w.true_bill()
    # a disputed period can still be settled by a correct statement
    w = worlds[0]
    he, home = LyingHeadEnd(w), w.household()
    assert _answer(he.send(home, he.sign(fixed_charge=w.statement.fixed_charge + 1))) == (
        "dispute",
        "fixed-charge",
    )
    assert isinstance(he.send(home, w.statement), BillProof)


def test_the_household_never_decrypts(
    worlds: tuple[World, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settlement works with every decryption path of the secret key disabled."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the household decrypted something")

    # every decryption, the safe one and the raw CRT one under it (which also
    # serves prove_decryption), refuses
    monkeypatch.setattr(PaillierPrivateKey, "decrypt", refuse)
    monkeypatch.setattr(CrtPrivateKey, "raw_decrypt", refuse)
    w = worlds[0]
    he, home = LyingHeadEnd(w), w.household()
    assert _answer(
        he.send(home, he.sign(bill_ciphertext=he.oracle(DAY0, 0, random.Random(2))))
    ) == ("dispute", "rebuild")
    assert isinstance(he.send(home, w.statement), BillProof)


def test_every_field_lie_is_disputed_alike(worlds: tuple[World, World]) -> None:
    for name in sorted(FIELD_LIES):
        lie = Lie(fields=(name,))
        got = [
            _answer(LyingHeadEnd(w).send(w.household(), *lie.statement(LyingHeadEnd(w))))
            for w in worlds
        ]
        assert got[0] == got[1] and got[0][0] == "dispute", (name, got)


_CIPHERS = ("honest", "rerandomized", "oracle", "record", "plus", "scaled", "recombined", "random")
_LOGS = ("honest", "drop", "dup", "empty", "shuffled")


@st.composite
def lies(draw: st.DrawFn, wa: World, wb: World) -> Lie:
    cipher = draw(st.sampled_from(_CIPHERS))
    index = draw(st.integers(0, N - 1))
    t = DAY0 + index
    guess = draw(st.sampled_from([wa.readings[t], wb.readings[t], wa.readings[t] + 1, 0]))
    delta = draw(st.integers(-(10**6), 10**6).filter(lambda d: d not in (0, 1)))
    fields = tuple(draw(st.lists(st.sampled_from(sorted(FIELD_LIES)), max_size=2, unique=True)))
    return Lie(
        cipher=cipher,
        interval_index=index,
        guess=guess,
        delta=delta,
        seed=draw(st.integers(0, 2**32)),
        fields=fields,
        log=draw(st.sampled_from(_LOGS)),
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_lies_answer_the_same_in_both_worlds(
    worlds: tuple[World, World], data: st.DataObject
) -> None:
    """Whatever lie the head-end tells, the household's answer is the same in two worlds that
    differ only in one reading; only an honest statement is paid, with each world's own bill."""
    wa, wb = worlds
    lie = data.draw(lies(wa, wb))
    got = []
    for w in worlds:
        he = LyingHeadEnd(w)
        try:
            sent = lie.statement(he)
        except ValueError:  # not a statement at all (e.g. an empty range): nothing to send
            assume(False)
        got.append(he.send(w.household(), *sent))
    if lie.is_honest:
        assert [a.bill if isinstance(a, BillProof) else a for a in got] == [
            wa.true_bill(),
            wb.true_bill(),
        ]
    else:
        assert _answer(got[0]) == _answer(got[1]), lie
        assert _answer(got[0])[0] == "dispute", lie


# -- attack 5 -------------------------------------------------------------------------------------


def _chosen_base_key(paillier_small) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """The malicious household's key: h_s = (1+n)**k h**n, not an n-th residue."""
    pk, sk = paillier_small
    k = random.Random(1).getrandbits(500)
    bad = PaillierPublicKey(pk.n, pow(1 + pk.n, k, pk.nsquare) * pk.hs % pk.nsquare)
    return bad, PaillierPrivateKey(bad, sk.p, sk.q)


def test_attack5_chosen_base_is_refused_at_registration(paillier_small) -> None:
    bad, bad_sk = _chosen_base_key(paillier_small)
    ledger = BillingLedger(HEADEND, [flat_plan()], min_key_bits=512)
    with pytest.raises(BaseNotDerived):  # a valid proof about n does not vouch for h_s
        ledger.register(
            "m1",
            METER.verify_key,
            bad,
            flat_plan(),
            wellformed_proof=prove_wellformed(bad_sk),
            period_start=DAY0,
            period_intervals=N,
        )
    core = HeadEndCore(HEADEND, [flat_plan()], min_key_bits=512)
    with pytest.raises(BaseNotDerived):
        core.register(
            "m1",
            METER.verify_key,
            bad,
            flat_plan(),
            wellformed_proof=prove_wellformed(bad_sk),
            period_start=DAY0,
            period_intervals=N,
        )
    with pytest.raises(BaseNotDerived):  # the key file path (auditor, enrolment)
        public_household_key(HouseholdKeys(bad_sk).public_dict(), min_bits=512)
    assert core.store.get_meter("m1") is None and ledger.store.get_meter("m1") is None


def test_attack5_key_proof_is_required_at_registration(paillier_small, paillier_2048) -> None:
    pk, sk = paillier_small
    ledger = BillingLedger(HEADEND, [flat_plan()], min_key_bits=512)
    other = prove_wellformed(paillier_2048[1])
    for proof in ([], [1] * 8, other, "not a proof", [True] * 8):
        with pytest.raises(UnprovenKey):
            ledger.register(
                "m1",
                METER.verify_key,
                pk,
                flat_plan(),
                wellformed_proof=proof,  # type: ignore[arg-type]
                period_start=DAY0,
                period_intervals=N,
            )
    d = HouseholdKeys(sk).public_dict()
    del d["wellformed_proof"]
    with pytest.raises(UnprovenKey):
        public_household_key(d, min_bits=512)
    ledger.register(
        "m1",
        METER.verify_key,
        pk,
        flat_plan(),
        wellformed_proof=prove_wellformed(sk),
        period_start=DAY0,
        period_intervals=N,
    )


def test_attack5_a_stored_registration_with_a_chosen_base_is_refused(paillier_small) -> None:
    """A store written before the check (or tampered with) cannot smuggle the key back in."""
    bad, _ = _chosen_base_key(paillier_small)
    store = MemoryBillingStore()
    store.put_meter(
        Registration(
            meter_id="m1",
            verify_key=METER.verify_key.raw,
            paillier_public_key=bad.to_json(),
            plan_id=flat_plan().plan_id,
            plan_digest=flat_plan().digest(),
            period_start=DAY0,
            period_intervals=N,
        )
    )
    ledger = BillingLedger(HEADEND, [flat_plan()], store=store, min_key_bits=512)
    rec = make_record(METER, "m1", DAY0, bad, bad.encrypt(5))
    with pytest.raises(BaseNotDerived):
        ledger.receive(rec, current_interval=DAY0)


def test_attack5_the_pre_fix_absurd_bill_is_out_of_bounds(paillier_small) -> None:
    """The bill the chosen-base key "proved" before the fix: a garbage decryption of ~n bits."""
    bad, bad_sk = _chosen_base_key(paillier_small)
    w = World(paillier_small, flat_plan(), readings_for(3))
    pk = w.pk
    # what a meter's encryption of 1000 Wh decrypts to under the chosen base: garbage of ~n bits
    raw_bad_sk = CrtPrivateKey(bad_sk.p, bad_sk.q)  # hazmat: decrypt with no overflow check
    garbages = (
        raw_bad_sk.raw_decrypt(bad.encrypt(1000, rng=random.Random(seed)).value)
        for seed in range(50)
    )
    garbage = next(
        g - pk.n if g > pk.n // 2 else g for g in garbages if not pk.max_int < g < pk.n - pk.max_int
    )
    assert abs(garbage) > 2**400
    # replay it under the good key: a statement whose E(bill) opens to that garbage
    he = LyingHeadEnd(w)
    st_ = he.sign(bill_ciphertext=pk.encrypt(garbage, rng=random.Random(6)).to_bytes())
    m, r = prove_decryption(w.sk, pk.ciphertext_from_bytes(st_.bill_ciphertext))
    proof = BillProof(meter_id="m1", statement_digest=statement_digest(st_), bill=m, r=r)
    with pytest.raises(BillOutOfBounds):
        check_proof(st_, proof, pk, w.plan)


def test_attack5_a_bill_out_of_bounds_is_refused_by_all_three(paillier_small) -> None:
    """A meter that reports an absurd amount (2**400 Wh): the household disputes, and a proof of
    that bill is refused by the head-end and by the auditor."""
    pk, sk = paillier_small
    plan = flat_plan()
    core = HeadEndCore(HEADEND, [plan], min_key_bits=512)
    core.register(
        "m1",
        METER.verify_key,
        pk,
        plan,
        wellformed_proof=prove_wellformed(sk),
        period_start=DAY0,
        period_intervals=N,
    )
    readings = readings_for(4)
    readings[DAY0 + 2] = 2**400
    records = []
    for t, wh in sorted(readings.items()):
        rec = make_record(METER, "m1", t, pk, pk.encrypt(wh))
        core.handle("m1", rec, now=t * 900, interval=t)
        records.append(rec)
    statement = core.statement("m1", 0, now=0)
    lo, hi = plan.bill_bounds(range(DAY0, DAY0 + N), N)
    assert not lo <= plan.total_charge(readings, range(DAY0, DAY0 + N)) <= hi
    from privmeter.parties.household import HouseholdAgent

    home = HouseholdAgent(
        "m1",
        sk,
        plan,
        HEADEND.verify_key,
        lambda: (readings, {}),
        meter_key=METER.verify_key,
        period_start=DAY0,
        period_intervals=N,
    )
    (answer,) = home.handle(core.settle_request(statement, 0))
    assert isinstance(answer, Dispute) and answer.reason == "bill-bounds"
    assert isinstance(answer.error(), BillOutOfBounds)
    # the proof a lax household sends
    m, r = prove_decryption(sk, pk.ciphertext_from_bytes(statement.bill_ciphertext))
    proof = BillProof(meter_id="m1", statement_digest=statement_digest(statement), bill=m, r=r)
    with pytest.raises(BillOutOfBounds):
        core.handle("m1", proof, now=0, interval=DAY0 + N)
    assert [s[2] for s in core.settlements()] == ["bill-out-of-bounds"]
    with pytest.raises(BillOutOfBounds):
        audit(
            statement,
            records,
            plan,
            None,
            proof,
            headend_key=HEADEND.verify_key,
            meter_key=METER.verify_key,
            household_pk=pk,
            min_key_bits=512,
        )


def test_a_restarted_household_never_pays_a_period_twice(
    worlds: tuple[World, World], tmp_path
) -> None:
    """The paid periods live in the household's state.db: after a restart between two
    statements of one period the second is refused as settled; a retransmission of the
    first gets the same proof again (issue 12's loose end)."""
    import dataclasses

    from privmeter.parties.household import HouseholdAgent
    from privmeter.parties.meter_state import MeterLedgerStore
    from privmeter.protocol.codec import decode, encode

    from .settlement_harness import METER as METER_KEY

    w = worlds[0]
    he = LyingHeadEnd(w)

    def boot() -> tuple[MeterLedgerStore, HouseholdAgent]:
        store = MeterLedgerStore(tmp_path / "state.db")
        paid = {k: decode(b, expect=BillProof) for k, b in store.paid("m1").items()}
        home = HouseholdAgent(
            "m1",
            w.sk,
            w.plan,
            HEADEND.verify_key,
            lambda: (w.readings, {}),
            meter_key=METER_KEY.verify_key,
            period_start=w.period.start,
            period_intervals=N,
            paid=paid,
            on_paid=lambda k, p: store.put_paid("m1", k, encode(p)),
        )
        return store, home

    store, home = boot()
    first = he.send(home, w.statement)
    assert isinstance(first, BillProof) and first.bill == w.true_bill()
    store.close()  # the household restarts
    store, home = boot()
    assert home.paid == {0: first}
    again = he.send(home, he.sign())  # a second statement of the paid period
    assert (
        isinstance(again, Dispute)
        and again.reason == "settled"
        and isinstance(again.error(), AlreadySettled)
    )
    assert (
        he.send(home, w.statement) == first
    )  # the same statement: the same proof, not a second payment
    # the store itself refuses a different proof for a paid period
    with pytest.raises(AlreadySettled):
        store.put_paid("m1", 0, encode(dataclasses.replace(first, bill=first.bill + 1)))
    store.close()
