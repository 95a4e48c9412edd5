"""Settlement and audit: honest bills verify; every billing attack is disputed or fails the audit."""

from __future__ import annotations

import dataclasses
import random

import pytest

from privmeter.crypto.paillier import EncryptedNumber
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.errors import (
    AuditFailure,
    DuplicateReading,
    InvalidProof,
    InvalidSignature,
    KeyMismatch,
    RebuildMismatch,
    TariffRejected,
)
from privmeter.grid.tariff.plans import DemandResponse, Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.grid.tariff.tariffs import Tariff, TimeOfUseTier
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.records import (
    DR_EXCESS,
    DR_REBATE,
    BillAccumulator,
    ReadingRecord,
    make_record,
    price_bits,
    record_bytes,
    record_from_bytes,
    record_price,
)
from privmeter.protocol.settlement import (
    BillProof,
    Dispute,
    Statement,
    audit,
    check_proof,
    log_digest,
    settle,
    sign_statement,
)

DAY0 = 1699920000 // 900  # 2023-11-14 00:00 UTC
ALL_DAYS = ("weekday", "saturday", "sunday", "holiday")
FEED_KEY = SigningKey.from_seed(bytes(range(32)))
N = 96


def paillier_meter_key():  # another meter's verify key
    return SigningKey.from_seed(b"q" * 32).verify_key


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
            name="peak", price=31000, start_minute=960, end_minute=1440, day_types=ALL_DAYS
        ),
    )
    return Plan(
        plan_id="t-tou",
        name="TOU",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="tou", tiers=tiers, timezone="Europe/London"),
    )


def rt_plan() -> Plan:
    return Plan(
        plan_id="t-rt",
        name="RT",
        currency="GBP",
        interval_seconds=900,
        max_price=2**16,
        tariff=Tariff(kind="realtime", feed_id="t-feed", feed_key=FEED_KEY.verify_key.hex()),
    )


class Scenario:
    """Meter -> head-end ledger -> statement, and the household's own view, for one day."""

    def __init__(
        self, keys, plan: Plan, *, dr_event: range | None = None, seed: int = 1, min_bits: int = 512
    ) -> None:
        self.pk, self.sk = keys
        self.plan = plan
        self.meter = SigningKey.from_seed(b"m" * 32)
        self.headend = SigningKey.from_seed(b"h" * 32)
        self.ledger = BillingLedger(self.headend, [plan], min_key_bits=min_bits)
        self.ledger.register(
            "m1",
            self.meter.verify_key,
            self.pk,
            plan,
            wellformed_proof=prove_wellformed(self.sk),
            period_start=DAY0,
            period_intervals=N,
        )
        r = random.Random(seed)
        self.readings = {DAY0 + i: r.randint(-900, 2500) for i in range(N)}
        self.adjustments: dict[tuple[str, str, int], int] = {}
        self.records: list[ReadingRecord] = []
        self.feed: PriceFeed | None = None
        if plan.tariff.kind == "realtime":
            self.feed = PriceFeed.publish(
                FEED_KEY, "t-feed", 900, {DAY0 + i: 3000 + 97 * i for i in range(N)}
            )
            self.ledger.publish_feed(self.feed)
        for t, wh in self.readings.items():
            self._send(t, wh)
            if dr_event is not None and t in dr_event:
                cap = plan.demand_response.cap_wh(900)
                kind, x = (DR_EXCESS, wh - cap) if wh > cap else (DR_REBATE, cap - max(wh, 0))
                self.adjustments[(kind, "ev1", t)] = x
                self._send(t, x, kind=kind, event_id="ev1")
        self.statement = self.ledger.statement("m1", 0, now=1_700_000_000)

    def _send(self, t: int, wh: int, **kw) -> None:
        rec = make_record(
            self.meter, "m1", t, self.pk, self.pk.encrypt(wh, rng=random.Random(t)), **kw
        )
        self.ledger.receive(rec, current_interval=t)
        self.records.append(rec)

    def settle(self, statement: Statement | None = None, **kw) -> BillProof | Dispute:
        args = dict(
            headend_key=self.headend.verify_key,
            meter_key=self.meter.verify_key,
            secret_key=self.sk,
            meter_id="m1",
            plan=self.plan,
            period=range(DAY0, DAY0 + N),
            readings=self.readings,
            records=self.records,
            feed=self.feed,
            adjustments=self.adjustments,
        )
        args.update(kw)
        return settle(statement or self.statement, **args)

    def audit(
        self, statement: Statement | None = None, records=None, proof=None, plan=None, feed="same"
    ):
        st_ = statement or self.statement
        if proof is None:
            proof = self.settle(st_)
        return audit(
            st_,
            self.records if records is None else records,
            plan or self.plan,
            self.feed if feed == "same" else feed,
            proof,
            headend_key=self.headend.verify_key,
            meter_key=self.meter.verify_key,
            household_pk=self.pk,
            min_key_bits=512,
        )

    def forged(self, **changes) -> Statement:
        """The utility signs whatever statement it likes (it holds the head-end key)."""
        fields = {f.name: getattr(self.statement, f.name) for f in dataclasses.fields(Statement)}
        fields.pop("signature")
        fields.update(changes)
        return sign_statement(self.headend, **fields)

    def bill_from(self, pairs) -> bytes:
        """E(bill) from chosen (record, price) pairs: how a cheating head-end would build one."""
        acc = BillAccumulator(self.pk, price_bits(self.plan))
        for rec, price in pairs:
            acc.add(self.pk.ciphertext_from_bytes(rec.ciphertext).value, price)
        return (EncryptedNumber(self.pk, acc.value()) + self.statement.fixed_charge).to_bytes()

    def price(self, rec: ReadingRecord) -> int:
        return record_price(self.plan, rec.kind, rec.interval, self.feed)


@pytest.fixture(scope="module")
def flat(paillier_small) -> Scenario:
    return Scenario(paillier_small, flat_plan())


@pytest.fixture(scope="module")
def tou(paillier_small) -> Scenario:
    return Scenario(paillier_small, tou_plan())


@pytest.fixture(scope="module")
def rt(paillier_small) -> Scenario:
    return Scenario(paillier_small, rt_plan())


# -- honest path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flat", "tou", "rt"])
def test_honest_statement_pays_and_audits(request, name) -> None:
    s: Scenario = request.getfixturevalue(name)
    proof = s.settle()
    assert isinstance(proof, BillProof)
    expected = s.plan.total_charge(s.readings, range(DAY0, DAY0 + N), s.feed)
    assert proof.bill == expected
    assert check_proof(s.statement, proof, s.pk, s.plan) == expected
    report = s.audit(proof=proof)
    assert report.bill == expected and report.record_count == N
    assert report.summary().startswith("VERIFIED")
    assert decode(encode(s.statement), expect=Statement) == s.statement
    assert decode(encode(proof), expect=BillProof) == proof


def test_end_to_end_2048_with_demand_response(paillier_2048) -> None:
    dr = DemandResponse(
        cap_w=1500, penalty_price=40_000, rebate_price=15_000, max_event_minutes=120
    )
    s = Scenario(
        paillier_2048, flat_plan(dr=dr), dr_event=range(DAY0 + 70, DAY0 + 78), min_bits=2048
    )
    proof = s.settle()
    assert isinstance(proof, BillProof)
    extra = sum(dr.event_charge(s.readings[t], 900) for t in range(DAY0 + 70, DAY0 + 78))
    assert proof.bill == s.plan.total_charge(s.readings, range(DAY0, DAY0 + N)) + extra
    assert s.audit(proof=proof).record_count == N + 8
    # the household that forgets its DR records disputes the count, revealing nothing
    assert s.settle(adjustments={}).reason == "count"


# -- attacks by the utility ----------------------------------------------------------------------


def _disputed(s: Scenario, st_: Statement, reason: str, **kw) -> Dispute:
    out = s.settle(st_, **kw)
    assert isinstance(out, Dispute), out
    assert out.reason == reason
    # a dispute carries a code and the statement digest, nothing derived from the decryption
    assert {f.name for f in dataclasses.fields(Dispute)} == {
        "meter_id",
        "statement_digest",
        "reason",
    }
    assert isinstance(out.error(), type(out.error()))
    return out


def test_disguised_reading_is_never_decrypted(flat: Scenario) -> None:
    s = flat
    one = s.records[40]
    st_ = s.forged(bill_ciphertext=one.ciphertext)
    d = _disputed(s, st_, "rebuild")
    assert isinstance(d.error(), RebuildMismatch)
    assert str(s.readings[one.interval]) not in repr(d)
    with pytest.raises(AuditFailure):
        s.audit(
            st_, proof=BillProof(meter_id="m1", statement_digest=d.statement_digest, bill=1, r=1)
        )


def test_inflated_reading(flat: Scenario) -> None:
    s = flat
    fake = s.pk.encrypt(50_000)
    pairs = [(r, s.price(r)) for r in s.records[1:]]
    inflated = ReadingRecord(
        **{
            **{f.name: getattr(s.records[0], f.name) for f in dataclasses.fields(ReadingRecord)},
            "ciphertext": fake.to_bytes(),
        }
    )
    st_ = s.forged(bill_ciphertext=s.bill_from([(inflated, s.price(inflated)), *pairs]))
    _disputed(s, st_, "rebuild")
    # the inflated record in the log the household gets: not the meter's signature
    _disputed(s, st_, "log", records=[inflated, *s.records[1:]])
    with pytest.raises(InvalidSignature):  # the log entry no longer carries the meter's signature
        s.audit(st_, records=[inflated, *s.records[1:]], proof=s.settle())


def test_omitted_reading(flat: Scenario) -> None:
    s = flat
    kept = s.records[:30] + s.records[31:]
    st_ = s.forged(
        record_count=N - 1,
        bill_ciphertext=s.bill_from([(r, s.price(r)) for r in kept]),
        log_digest=log_digest("m1", DAY0, DAY0 + N, [record_bytes(r) for r in kept]),
    )
    _disputed(s, st_, "count")  # against the full log
    _disputed(s, st_, "count", records=kept)  # a log without it: the meter reported it
    # same count claimed, bill without the reading
    _disputed(s, s.forged(bill_ciphertext=st_.bill_ciphertext), "rebuild")
    with pytest.raises(AuditFailure):  # the auditor holds the meter-signed log
        s.audit(st_, proof=s.settle())


def test_duplicated_reading(flat: Scenario) -> None:
    s = flat
    pairs = [(r, s.price(r)) for r in s.records] + [(s.records[10], s.price(s.records[10]))]
    st_ = s.forged(bill_ciphertext=s.bill_from(pairs), record_count=N + 1)
    _disputed(s, st_, "count")
    _disputed(s, s.forged(bill_ciphertext=s.bill_from(pairs)), "rebuild")
    _disputed(s, s.statement, "log", records=[*s.records, s.records[10]])
    with pytest.raises(DuplicateReading):  # a log padded with a second record for one slot
        s.audit(s.statement, records=[*s.records, s.records[10]], proof=s.settle())
    with pytest.raises(AuditFailure):
        s.audit(s.forged(bill_ciphertext=s.bill_from(pairs)), proof=s.settle())


def test_reordered_readings(tou: Scenario) -> None:
    """Swap which reading gets the night price and which the peak price."""
    s = tou
    pairs = [(r, s.price(r)) for r in s.records]
    i, j = 2, 70  # 00:30 night, 17:30 peak
    assert pairs[i][1] != pairs[j][1] and s.readings[DAY0 + i] != s.readings[DAY0 + j]
    pairs[i], pairs[j] = (pairs[i][0], pairs[j][1]), (pairs[j][0], pairs[i][1])
    st_ = s.forged(bill_ciphertext=s.bill_from(pairs))
    _disputed(s, st_, "rebuild")
    with pytest.raises(AuditFailure):
        s.audit(st_, proof=s.settle())
    # shuffling the log itself changes nothing: the digest is over interval order
    shuffled = list(reversed(s.records))
    assert s.audit(records=shuffled).bill == s.settle().bill


def test_changed_tariff(flat: Scenario) -> None:
    s = flat
    other = flat_plan(price=19000)
    st_ = s.forged(
        tariff_digest=other.tariff.digest(),
        bill_ciphertext=s.bill_from([(r, 19000) for r in s.records]),
    )
    d = _disputed(s, st_, "tariff")
    assert isinstance(d.error(), TariffRejected)
    with pytest.raises(TariffRejected):
        s.audit(st_, proof=s.settle())
    # audited against the utility's unpublished tariff the arithmetic checks out, but no
    # household proof opens that statement: the audit still fails
    with pytest.raises(InvalidProof):
        s.audit(st_, plan=other, proof=s.settle())


def test_prices_that_encode_readings(rt: Scenario) -> None:
    """price_t = 2**(20 t): the household refuses; a published plan bounds prices."""
    s = rt
    greedy = PriceFeed.publish(
        FEED_KEY, "t-feed", 900, {DAY0 + i: 2 ** (20 * (i % 3)) for i in range(N)}
    )
    st_ = s.forged(feed_digest=greedy.digest())
    _disputed(s, st_, "feed")  # differs from the published feed
    out = s.settle(st_, feed=greedy)  # even if the utility publishes it: out of the plan's bounds
    assert isinstance(out, Dispute) and out.reason == "bounds"
    with pytest.raises(TariffRejected):
        s.audit(st_, feed=greedy, proof=s.settle())


def test_equivocating_feed(rt: Scenario) -> None:
    s = rt
    prices = dict(s.feed.prices)
    prices[DAY0 + 5] += 1
    other = PriceFeed.publish(FEED_KEY, "t-feed", 900, prices)
    st_ = s.forged(feed_digest=other.digest())
    _disputed(s, st_, "feed")
    assert isinstance(s.settle(feed=other), Dispute)  # household holding another copy disputes too


def test_other_checks_of_the_household(flat: Scenario, paillier_2048) -> None:
    s = flat
    _disputed(s, s.forged(fixed_charge=s.statement.fixed_charge + 1000), "fixed-charge")
    _disputed(s, s.forged(start=DAY0 + 1), "range")
    out = s.settle(s.forged(end=DAY0 + N + 1), period=range(DAY0, DAY0 + N))
    assert isinstance(out, Dispute) and out.reason == "range"
    assert isinstance(s.settle(period=range(DAY0, DAY0 + N)), BillProof)
    _disputed(s, s.forged(key_id=paillier_2048[0].key_id), "key")
    _disputed(s, s.forged(plan_id="t-other"), "plan")
    wrong_signer = dataclasses.replace(s.statement, issued_at=5)  # signature no longer matches
    d = _disputed(s, wrong_signer, "signature")
    assert isinstance(d.error(), InvalidSignature)
    with pytest.raises(InvalidSignature):
        s.audit(wrong_signer)
    with pytest.raises(KeyMismatch):
        audit(
            s.statement,
            s.records,
            s.plan,
            None,
            s.settle(),
            headend_key=s.headend.verify_key,
            meter_key=s.meter.verify_key,
            household_pk=paillier_2048[0],
        )
    _disputed(
        s, s.statement, "log", meter_key=paillier_meter_key()
    )  # records not signed by our meter


# -- attacks by the household -----------------------------------------------------------------------


def test_household_under_reports(flat: Scenario) -> None:
    s = flat
    honest = s.settle()
    low = dataclasses.replace(honest, bill=honest.bill - 1_000_000)
    with pytest.raises(InvalidProof):
        check_proof(s.statement, low, s.pk, s.plan)
    with pytest.raises(InvalidProof):
        s.audit(proof=low)
    other_r = dataclasses.replace(honest, r=honest.r + 1)
    with pytest.raises(InvalidProof):
        check_proof(s.statement, other_r, s.pk, s.plan)
    with pytest.raises(InvalidProof):  # a proof for another statement
        check_proof(s.forged(issued_at=2), honest, s.pk, s.plan)


def test_household_forges_a_reading(flat: Scenario) -> None:
    s = flat
    forged = make_record(SigningKey.from_seed(b"z" * 32), "m1", DAY0 + 3, s.pk, s.pk.encrypt(1))
    recs = [forged if r.interval == DAY0 + 3 else r for r in s.records]
    with pytest.raises(InvalidSignature):
        s.audit(records=recs)


def test_log_digest_covers_exactly_the_records(flat: Scenario) -> None:
    s = flat
    data = [record_bytes(r) for r in s.records]
    assert log_digest("m1", DAY0, DAY0 + N, data) == s.statement.log_digest
    assert log_digest("m1", DAY0, DAY0 + N, data[::-1]) == s.statement.log_digest
    assert log_digest("m1", DAY0, DAY0 + N, data[1:]) != s.statement.log_digest
    assert record_from_bytes(data[0]) == s.records[0]
    with pytest.raises(ValueError):
        log_digest("m1", DAY0 + 1, DAY0 + N, data)
