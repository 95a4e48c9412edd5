"""Signed reading records and the head-end billing ledger: exact bills and every rejection."""

from __future__ import annotations

import random

import msgpack
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.paillier import PaillierPublicKey, generate_keypair
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.errors import (
    DuplicateReading,
    InvalidCiphertext,
    InvalidSignature,
    KeyMismatch,
    LocalProtocolError,
    MalformedMessage,
    ReplayedMessage,
    StaleMessage,
    TariffError,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.grid.tariff.plans import DemandResponse, Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.grid.tariff.tariffs import Tariff, TimeOfUseTier
from privmeter.protocol import billing
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.records import (
    DR_EXCESS,
    DR_REBATE,
    BillAccumulator,
    ReadingRecord,
    make_record,
    record_from_bytes,
)

DAY0 = 1699920000 // 900  # 2023-11-14 00:00 UTC, a Tuesday
ALL_DAYS = ("weekday", "saturday", "sunday", "holiday")


def flat_plan(price: int = 14228, dr: DemandResponse | None = None) -> Plan:
    return Plan(
        plan_id="t-flat",
        name="Flat",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="flat", price=price),
        standing_charge_per_day=45_000,
        demand_response=dr,
    )


def tou_plan() -> Plan:
    tiers = (
        TimeOfUseTier(name="night", price=7000, start_minute=0, end_minute=420, day_types=ALL_DAYS),
        TimeOfUseTier(
            name="day", price=16000, start_minute=420, end_minute=960, day_types=ALL_DAYS
        ),
        TimeOfUseTier(
            name="peak", price=31000, start_minute=960, end_minute=1140, day_types=ALL_DAYS
        ),
        TimeOfUseTier(
            name="eve", price=16000, start_minute=1140, end_minute=1440, day_types=ALL_DAYS
        ),
    )
    return Plan(
        plan_id="t-tou",
        name="TOU",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="tou", tiers=tiers, timezone="Europe/London"),
        standing_charge_per_day=30_000,
    )


FEED_KEY = SigningKey.from_seed(bytes(range(32)))


def rt_plan() -> Plan:
    return Plan(
        plan_id="t-rt",
        name="RT",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="realtime", feed_id="t-feed", feed_key=FEED_KEY.verify_key.hex()),
        max_price=2**16,
    )


class World:
    """A head-end ledger with one meter, on the small insecure key."""

    def __init__(self, keys, plan: Plan, *, periods: int = 96, store=None) -> None:
        self.pk, self.sk = keys
        self.plan = plan
        self.meter = SigningKey.from_seed(b"m" * 32)
        self.headend = SigningKey.from_seed(b"h" * 32)
        self.ledger = BillingLedger(self.headend, [plan], store=store, min_key_bits=512)
        self.ledger.register(
            "m1",
            self.meter.verify_key,
            self.pk,
            plan,
            wellformed_proof=prove_wellformed(self.sk),
            period_start=DAY0,
            period_intervals=periods,
        )
        self.rng = random.Random(7)

    def record(self, t: int, wh: int, **kw) -> ReadingRecord:
        return make_record(self.meter, "m1", t, self.pk, self.pk.encrypt(wh, rng=self.rng), **kw)

    def feed(self, lo: int, hi: int) -> PriceFeed:
        return PriceFeed.publish(
            FEED_KEY, "t-feed", 900, {t: 5000 + (t * 37) % 20000 for t in range(lo, hi)}
        )


def readings_for(n: int, seed: int = 1) -> dict[int, int]:
    r = random.Random(seed)
    return {DAY0 + i: r.randint(-800, 3000) for i in range(n)}


def run_period(w: World, readings: dict[int, int]):
    for t, wh in readings.items():
        w.ledger.receive(w.record(t, wh), current_interval=t)
    return w.ledger.statement("m1", 0, now=0)


@pytest.mark.parametrize("make_plan", [flat_plan, tou_plan])
def test_exact_bill_flat_and_tou(paillier_small, make_plan) -> None:
    w = World(paillier_small, make_plan())
    readings = readings_for(96)
    assert any(v < 0 for v in readings.values())  # export is billed too
    st_ = run_period(w, readings)
    expected = w.plan.total_charge(readings, range(DAY0, DAY0 + 96))
    assert w.sk.decrypt(w.pk.ciphertext_from_bytes(st_.bill_ciphertext)) == expected
    assert st_.record_count == 96 and (st_.start, st_.end) == (DAY0, DAY0 + 96)


def test_realtime_pending_then_folded(paillier_small) -> None:
    w = World(paillier_small, rt_plan())
    readings = readings_for(96, seed=3)
    for t, wh in readings.items():
        w.ledger.receive(w.record(t, wh), current_interval=t)  # no prices yet: all pending
    with pytest.raises(LocalProtocolError):
        w.ledger.statement("m1", 0, now=0)
    feed = w.feed(DAY0, DAY0 + 96)
    assert w.ledger.publish_feed(feed.subset(range(DAY0, DAY0 + 50))) == 50
    assert w.ledger.publish_feed(feed) == 46
    st_ = w.ledger.statement("m1", 0, now=0)
    assert w.sk.decrypt(w.pk.ciphertext_from_bytes(st_.bill_ciphertext)) == w.plan.energy_charge(
        readings, feed
    )
    assert st_.feed_digest == feed.digest()


def test_realtime_feed_must_verify(paillier_small) -> None:
    w = World(paillier_small, rt_plan())
    rogue = PriceFeed.publish(SigningKey.from_seed(b"x" * 32), "t-feed", 900, {DAY0: 1})
    with pytest.raises(InvalidSignature):
        w.ledger.publish_feed(rogue)
    with pytest.raises(TariffError):
        w.ledger.publish_feed(PriceFeed.publish(FEED_KEY, "other-feed", 900, {DAY0: 1}))
    assert w.ledger.feed is None


def test_pending_list_is_bounded(paillier_small, monkeypatch) -> None:
    monkeypatch.setattr(billing, "MAX_PENDING", 3)
    w = World(paillier_small, rt_plan())
    for i in range(3):
        w.ledger.receive(w.record(DAY0 + i, 1), current_interval=DAY0 + i)
    head = w.ledger.store.log_head()
    with pytest.raises(UnexpectedMessage):
        w.ledger.receive(w.record(DAY0 + 3, 1), current_interval=DAY0 + 3)
    assert w.ledger.store.log_head() == head


def test_month_of_realtime_readings(paillier_small) -> None:
    """2,976 intervals (31 days) on the Pippenger accumulator, with export."""
    w = World(paillier_small, rt_plan(), periods=2976)
    readings = readings_for(2976, seed=9)
    feed = w.feed(DAY0, DAY0 + 2976)
    w.ledger.publish_feed(feed)
    st_ = run_period(w, readings)
    assert w.sk.decrypt(w.pk.ciphertext_from_bytes(st_.bill_ciphertext)) == w.plan.energy_charge(
        readings, feed
    )
    count, cells = w.ledger.store.get_account("m1", 0)
    assert count == 2976 and len(cells) <= 75  # constant state: buckets, not records


def test_demand_response_records(paillier_small) -> None:
    dr = DemandResponse(
        cap_w=2000, penalty_price=50_000, rebate_price=20_000, max_event_minutes=240
    )
    w = World(paillier_small, flat_plan(dr=dr))
    readings = readings_for(96, seed=5)
    event = range(DAY0 + 68, DAY0 + 76)
    cap = dr.cap_wh(900)
    adjustments = 0
    for t, wh in readings.items():
        w.ledger.receive(w.record(t, wh), current_interval=t)
        if t in event:
            kind, x = (DR_EXCESS, wh - cap) if wh > cap else (DR_REBATE, cap - max(wh, 0))
            w.ledger.receive(w.record(t, x, kind=kind, event_id="ev1"), current_interval=t)
            adjustments += dr.event_charge(wh, 900)
    st_ = w.ledger.statement("m1", 0, now=0)
    assert st_.record_count == 96 + len(event)
    expected = w.plan.total_charge(readings, range(DAY0, DAY0 + 96)) + adjustments
    assert w.sk.decrypt(w.pk.ciphertext_from_bytes(st_.bill_ciphertext)) == expected


def test_dr_record_refused_without_dr_terms(paillier_small) -> None:
    w = World(paillier_small, flat_plan())
    with pytest.raises(UnexpectedMessage):
        w.ledger.receive(w.record(DAY0, 5, kind=DR_EXCESS, event_id="e"), current_interval=DAY0)
    assert w.ledger.store.log_head()[0] == 0


def test_accumulator_matches_phe(paillier_small) -> None:
    """Cross-check: python-paillier computes the same ciphertext for sum(x_i * p_i)."""
    pk, _ = paillier_small
    r = random.Random(11)
    ppk = phe.PaillierPublicKey(pk.n)
    acc = BillAccumulator(pk, 17)
    expect = None
    for _ in range(40):
        c = pk.encrypt(r.randint(-500, 500), rng=r).value
        price = r.choice([0, 1, 7000, 16000, 31000, 2**17 - 1, -20_000])
        acc.add(c, price, realtime=price % 2 == 1)
        term = phe.EncryptedNumber(ppk, c) * price
        expect = term if expect is None else expect + term
    assert acc.value() == expect.ciphertext(be_secure=False)


@settings(max_examples=25, deadline=None)
@given(
    terms=st.lists(
        st.tuples(st.integers(-5000, 5000), st.integers(-(2**20) + 1, 2**20 - 1), st.booleans()),
        max_size=25,
    ),
    cut=st.integers(0, 25),
)
def test_accumulator_property(paillier_small, terms, cut) -> None:
    """Any mix of prices and accumulators, with a persist/restore in the middle, decrypts exactly."""
    pk, sk = paillier_small
    r = random.Random(len(terms))
    acc = BillAccumulator(pk, 20)
    for i, (x, p, rt) in enumerate(terms):
        if i == cut:
            acc = BillAccumulator(pk, 20, acc.cells())
        acc.add(pk.encrypt(x, rng=r).value, p, realtime=rt)
    assert sk.decrypt(pk.ciphertext(acc.value())) == sum(x * p for x, p, _ in terms)


# -- rejections: each specific, none changing state --------------------------------------------


def _state(w: World):
    return w.ledger.store.log_head(), w.ledger.store.get_account("m1", 0)


def _rejected(
    w: World, rec: ReadingRecord, exc: type[Exception], current: int | None = None
) -> None:
    before = _state(w)
    with pytest.raises(exc):
        w.ledger.receive(rec, current_interval=rec.interval if current is None else current)
    assert _state(w) == before
    # and the ledger keeps serving
    t = DAY0 + 30 + len(w.ledger.store.iter_log())
    w.ledger.receive(w.record(t, 1), current_interval=t)


def test_rejections(paillier_small) -> None:
    w = World(paillier_small, flat_plan())
    good = w.record(DAY0 + 5, 420)
    w.ledger.receive(good, current_interval=DAY0 + 5)
    pk, sk = w.pk, w.sk
    other_pk, _ = generate_keypair(512, rng=random.Random(99), insecure_for_tests=True)
    forger = SigningKey.from_seed(b"f" * 32)

    # unknown meter
    _rejected(w, make_record(w.meter, "m9", DAY0, pk, pk.encrypt(1)), UnknownParty)
    # ciphertext under another household key
    _rejected(w, make_record(w.meter, "m1", DAY0 + 1, other_pk, other_pk.encrypt(1)), KeyMismatch)
    # forged: signed by a key that is not the meter's
    _rejected(w, make_record(forger, "m1", DAY0 + 1, pk, pk.encrypt(1)), InvalidSignature)
    # inflated: the head-end/network swaps the ciphertext of a signed record
    bigger = ReadingRecord(**{**_fields(good), "ciphertext": pk.encrypt(99_999).to_bytes()})
    _rejected(w, bigger, InvalidSignature)
    # interval moved: signature covers the interval
    _rejected(w, ReadingRecord(**{**_fields(good), "interval": DAY0 + 6}), InvalidSignature)
    # out of window, both sides
    _rejected(w, w.record(DAY0 + 12, 1), StaleMessage, current=DAY0 + 12 + 97)
    _rejected(w, w.record(DAY0 + 40, 1), StaleMessage, current=DAY0 + 38)
    # before the first billing period
    _rejected(w, w.record(DAY0 - 1, 1), StaleMessage, current=DAY0)
    # replay of the very same record
    _rejected(w, good, ReplayedMessage)
    # a different record for an already-billed interval
    _rejected(w, w.record(DAY0 + 5, 1), DuplicateReading)
    # malformed ciphertexts, validly signed (a broken meter): 0, n^2, >n^2, non-unit, wrong length
    nb = pk.nbytes
    for value in (0, pk.nsquare, pk.nsquare + 5, sk.p * 12345):
        _rejected(
            w,
            make_record(w.meter, "m1", DAY0 + 20, pk, value.to_bytes(nb, "big")),
            InvalidCiphertext,
        )
    _rejected(w, make_record(w.meter, "m1", DAY0 + 20, pk, b"\x01" * (nb - 1)), InvalidCiphertext)


def test_settled_period_takes_no_more_records(paillier_small) -> None:
    w = World(paillier_small, flat_plan(), periods=4)
    for i in range(3):
        w.ledger.receive(w.record(DAY0 + i, 10), current_interval=DAY0 + 3)
    st_ = w.ledger.statement("m1", 0, now=1)
    assert w.ledger.statement("m1", 0, now=2) == st_  # issued once
    with pytest.raises(StaleMessage):
        w.ledger.receive(w.record(DAY0 + 3, 10), current_interval=DAY0 + 3)
    w.ledger.receive(w.record(DAY0 + 4, 10), current_interval=DAY0 + 4)  # next period is open


def test_receipts_are_signed_and_chained(paillier_small) -> None:
    w = World(paillier_small, flat_plan())
    rec = w.record(DAY0, 5)
    receipt = w.ledger.receive(rec, current_interval=DAY0)
    receipt.verify(w.headend.verify_key)
    assert (receipt.seq, receipt.chain) == w.ledger.store.log_head()
    assert decode(encode(receipt)) == receipt
    forged = type(receipt)(
        **{**{f: getattr(receipt, f) for f in receipt.__dataclass_fields__}, "seq": 7}
    )
    with pytest.raises(InvalidSignature):
        forged.verify(w.headend.verify_key)


def test_record_wire_format(paillier_small) -> None:
    pk, _ = paillier_small
    rec = make_record(SigningKey.from_seed(b"m" * 32), "m1", 5, pk, pk.encrypt(3))
    assert record_from_bytes(encode(rec)) == rec
    for bad in (
        {"kind": "gas"},
        {"signature": b"x"},
        {"key_id": b"k"},
        {"event_id": "e"},
        {"meter_id": ""},
        {"interval": -1},
        {"ciphertext": b""},
    ):
        with pytest.raises(ValueError):
            ReadingRecord(**{**_fields(rec), **bad})
    # the codec turns the same ValueError into MalformedMessage
    wire = msgpack.unpackb(encode(rec), raw=False)
    wire[2]["kind"] = "gas"
    with pytest.raises(MalformedMessage):
        decode(msgpack.packb(wire, use_bin_type=True), expect=ReadingRecord)


def test_ledger_refuses_small_keys_by_default(paillier_small) -> None:
    ledger = BillingLedger(SigningKey.from_seed(b"h" * 32), [flat_plan()])
    with pytest.raises(Exception, match="bits"):
        ledger.register(
            "m1",
            SigningKey.from_seed(b"m" * 32).verify_key,
            paillier_small[0],
            flat_plan(),
            wellformed_proof=prove_wellformed(paillier_small[1]),
        )


def _fields(rec: ReadingRecord) -> dict:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


def test_public_key_round_trip_for_store(paillier_small) -> None:
    pk, _ = paillier_small
    assert PaillierPublicKey.from_json(pk.to_json(), min_bits=512) == pk
