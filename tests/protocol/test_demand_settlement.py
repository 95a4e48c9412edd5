"""Event settlement inside the encrypted bill: E(excess) / E(rebate) records, household verification."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.grid.tariff.plans import DemandResponse, Plan
from privmeter.grid.tariff.tariffs import Tariff
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.demand_settlement import event_adjustments, event_amounts, event_records
from privmeter.protocol.records import DR_EXCESS, DR_REBATE, make_record, record_from_bytes
from privmeter.protocol.settlement import BillProof, Dispute, settle

DAY0 = 1699920000 // 900
N = 16
DR = DemandResponse(cap_w=2000, penalty_price=30_000, rebate_price=12_000, max_event_minutes=120)


def plan() -> Plan:
    return Plan(
        plan_id="t-dr",
        name="Flat+DR",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="flat", price=14228),
        demand_response=DR,
    )


@settings(max_examples=200, deadline=None)
@given(x=st.integers(-5000, 5000), cap=st.integers(0, 3000))
def test_amounts_reproduce_the_plans_event_charge(x: int, cap: int) -> None:
    ex, rb = event_amounts(x, cap)
    assert ex >= 0 and rb >= 0 and (ex == 0 or rb == 0)
    d = DemandResponse(cap_w=max(cap * 4, 1), penalty_price=7, rebate_price=3, max_event_minutes=60)
    c = d.cap_wh(900)
    ex, rb = event_amounts(x, c)
    assert 7 * ex - 3 * rb == d.event_charge(x, 900)


def test_records_decrypt_to_amounts_and_bill_homomorphically(paillier_small) -> None:
    pk, sk = paillier_small
    meter = SigningKey.from_seed(b"M" * 32)
    energy = {DAY0 + i: x for i, x in enumerate([100, 499, 500, 501, 2000, -300])}
    cap = DR.cap_wh(900)
    recs = event_records(meter, "m1", pk, "ev-1", energy, cap, rng=random.Random(1))
    assert len(recs) == 2 * len(energy)
    assert {r.kind for r in recs} == {DR_EXCESS, DR_REBATE}
    acc = pk.zero()
    for r in recs:
        ct = pk.ciphertext_from_bytes(r.ciphertext)
        ex, rb = event_amounts(energy[r.interval], cap)
        assert sk.decrypt(ct) == (ex if r.kind == DR_EXCESS else rb)
        acc = acc + ct * (DR.penalty_price if r.kind == DR_EXCESS else -DR.rebate_price)
    assert sk.decrypt(acc) == sum(DR.event_charge(x, 900) for x in energy.values())
    adj = event_adjustments("ev-1", energy, cap)
    assert len(adj) == len(recs)
    assert all(
        adj[(r.kind, "ev-1", r.interval)] == sk.decrypt(pk.ciphertext_from_bytes(r.ciphertext))
        for r in recs
    )


@pytest.mark.parametrize("tampered", [False, True])
def test_event_settles_inside_the_encrypted_bill(paillier_2048, tampered: bool) -> None:
    """Ledger bills the event records blind; the household's verification covers them."""
    pk, sk = paillier_2048
    p = plan()
    meter = SigningKey.from_seed(b"m" * 32)
    headend = SigningKey.from_seed(b"h" * 32)
    ledger = BillingLedger(headend, [p])
    ledger.register(
        "m1",
        meter.verify_key,
        pk,
        p,
        wellformed_proof=prove_wellformed(sk),
        period_start=DAY0,
        period_intervals=N,
    )
    r = random.Random(4)
    readings = {DAY0 + i: r.randint(-400, 1200) for i in range(N)}
    for t, wh in readings.items():
        ledger.receive(make_record(meter, "m1", t, pk, pk.encrypt(wh, rng=r)), current_interval=t)
    event = {t: readings[t] for t in range(DAY0 + 4, DAY0 + 8)}  # a one-hour event
    for rec in event_records(meter, "m1", pk, "ev-9", event, DR.cap_wh(900), rng=r):
        ledger.receive(rec, current_interval=rec.interval)
    statement = ledger.statement("m1", 0, now=1_700_000_000)
    adjustments = event_adjustments("ev-9", event, DR.cap_wh(900))
    if tampered:  # the household's own view of the event differs from the records
        k = next(k for k, v in adjustments.items() if k[0] == DR_REBATE and v == 0)
        adjustments[k] = 1
    out = settle(
        statement,
        headend_key=headend.verify_key,
        meter_key=meter.verify_key,
        secret_key=sk,
        meter_id="m1",
        plan=p,
        period=range(DAY0, DAY0 + N),
        readings=readings,
        adjustments=adjustments,
        records=[record_from_bytes(b) for b in ledger.store.records("m1", DAY0, DAY0 + N)],
    )
    if tampered:
        assert isinstance(out, Dispute)
        return
    assert isinstance(out, BillProof)
    extra = sum(DR.event_charge(x, 900) for x in event.values())
    assert out.bill == p.total_charge(readings, range(DAY0, DAY0 + N)) + extra
