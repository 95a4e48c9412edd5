"""Settlement: the head-end's statement, the household's check, proofs, disputes and audit.

What it is for: at the end of a billing period the head-end issues a signed
:class:`Statement` -- E(bill), the tariff digest, the price-feed digest (real
time), the interval range, the record count and the digest of exactly the
household's signed records.  The household (:func:`settle`) checks it and
either pays with a :class:`BillProof` or answers with a :class:`Dispute`.
Anyone can then :func:`audit` a statement offline from the signed log, the
published tariff and feed and the proof, with no secret key.

The household pays only a statement whose E(bill) it has **rebuilt itself**,
and never decrypts anything.  Its order of work (:func:`settle`), every step
before the last on public data only:

1. head-end signature, meter id and household key id;
2. plan id, tariff digest == the published tariff's; for a real-time tariff
   the feed must verify under the tariff's feed key and its digest over the
   period must equal the statement's; the plan's price bounds and allowed
   prices must hold (:meth:`~privmeter.grid.tariff.plans.Plan.check_tariff`);
3. the interval range is exactly one of its billing periods and the fixed
   charge is the plan's for it;
4. the statement's log (:func:`check_log`, the auditor's own code): every
   record carries its meter's signature, the household key id, one per slot,
   inside the range; their number and digest are the statement's; and E(bill)
   equals, byte for byte, the product the household rebuilds from them and
   the published prices (:func:`rebuild_bill`: ``prod c_i**p_i * (1+n)**fixed``
   with the head-end's own :class:`~privmeter.protocol.records.BillAccumulator`);
5. the records are exactly the readings (and demand-response amounts) its
   meter gave it on the local port (slots, not values);
6. only then: its bill from its own readings and the published tariff lies in
   the plan's bounds (:meth:`~privmeter.grid.tariff.plans.Plan.bill_bounds`) and
   opens E(bill): it derives ``r`` for that bill and checks
   ``c == (1 + bill*n) r^n mod n^2``, then returns ``BillProof(bill, r)``.

Any failed check yields a :class:`Dispute` whose ``reason`` is one code from
:data:`DISPUTE_REASONS`, and nothing else.

Bound (the head-end may send any signed statement and any log): the answer to
a statement is a function of public data -- the statement, the log, the
published plan and feed, all of which the head-end holds -- except for the
pay/step-6 outcome, which is reached only when E(bill) is the rebuilt product
of the meter's records for exactly the period's slots.  For such a statement
E(bill) encrypts the household's true bill of the period whatever else the
head-end chose, so the answer is the true bill (or, if the meter's records and
its local port disagree, a fixed dispute the head-end cannot vary).  A lying
statement therefore teaches the head-end nothing it could not compute itself;
an honest one teaches it the period's bill, once (the household pays at most
one statement per period, :class:`~privmeter.parties.household.HouseholdAgent`).
Test: ``tests/adversary/test_settlement.py``.

Security assumptions: Ed25519 unforgeability (meter and head-end signatures);
the meter is the trusted sensor; the household key is well formed (h_s derived
from n; gcd(n, phi(n)) = 1, proven at registration,
:func:`~privmeter.protocol.records.check_household_key`), so ``(bill, r)`` is
a binding proof of the decryption
(:func:`~privmeter.crypto.paillier_proofs.verify_decryption`) and a bill proven for a
statement lies within the plan's bounds (:func:`check_proof`).

Guarantees: a household that under-reports cannot produce a proof that
verifies; a statement that adds, drops, duplicates, reorders or re-prices
records, uses another tariff or feed, or re-randomises or re-combines
ciphertexts, is disputed by the household and fails the audit with a
specific error; no proof of a bill outside the plan's bounds is accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from privmeter.crypto.paillier import (
    MIN_KEY_BITS,
    EncryptedNumber,
    PaillierPrivateKey,
    PaillierPublicKey,
)
from privmeter.crypto.paillier_proofs import prove_plaintext, verify_decryption
from privmeter.crypto.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from privmeter.errors import (
    AlreadySettled,
    AuditFailure,
    BillMismatch,
    BillOutOfBounds,
    DuplicateReading,
    InvalidArgument,
    InvalidProof,
    InvalidSignature,
    KeyMismatch,
    MalformedMessage,
    PlaintextOverflow,
    PrivmeterError,
    RebuildMismatch,
    TariffError,
    TariffRejected,
)
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.protocol.codec import message
from privmeter.protocol.records import (
    ENERGY,
    BillAccumulator,
    ReadingRecord,
    canonical,
    price_bits,
    record_bytes,
    record_from_bytes,
    record_price,
    verify_record,
)

__all__ = [
    "DISPUTE_REASONS",
    "MAX_LOG_RECORDS",
    "STATEMENT_CONTEXT",
    "AuditReport",
    "BillProof",
    "Dispute",
    "Statement",
    "audit",
    "check_bill_bounds",
    "check_log",
    "check_proof",
    "expected_bill",
    "log_digest",
    "rebuild_bill",
    "records_from_log",
    "settle",
    "sign_statement",
    "statement_digest",
    "verify_statement",
]

STATEMENT_CONTEXT = b"privmeter.bill.statement/1"
LOG_DIGEST_DOMAIN = b"privmeter.bill.log-digest/1"

# reason code -> the error a party raises locally for it.  Every reason but the last two
# is decided on public data (the statement, its log, the published plan and feed).
DISPUTE_REASONS: dict[str, type[PrivmeterError]] = {
    "signature": InvalidSignature,  # the statement is not signed by the head-end
    "key": KeyMismatch,  # E(bill) under another household key, or another meter
    "plan": TariffRejected,  # another plan than the household's
    "tariff": TariffRejected,  # tariff digest differs from the published tariff
    "feed": TariffRejected,  # feed differs from the published one / does not verify
    "bounds": TariffRejected,  # prices break the plan's bounds or allowed prices
    "range": BillMismatch,  # interval range is not one of the household's billing periods
    "settled": AlreadySettled,  # the household already paid another statement of this period
    "fixed-charge": BillMismatch,  # fixed charge differs from the plan's
    "log": BillMismatch,  # the log is not the meter's signed records of the period / its digest differs
    "count": BillMismatch,  # record count differs from the log, or the log from the meter's readings
    "rebuild": RebuildMismatch,  # E(bill) is not the one rebuilt from the log and the tariff
    # reached only for a statement whose E(bill) is the rebuilt one (its true bill):
    "bill-bounds": BillOutOfBounds,  # the household's own bill is outside the plan's bounds
    "bill": BillMismatch,  # its readings do not open E(bill) (the meter's records disagree with them)
}
MAX_LOG_RECORDS = 31 * 96 * 4  # a statement's log: a 31-day month of 15-minute records, with room


@message("bill.statement")
@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """The head-end's signed bill for one household and period (intervals ``[start, end)``)."""

    meter_id: str
    key_id: bytes
    plan_id: str
    tariff_digest: bytes
    feed_digest: bytes  # b"" unless the tariff is real-time
    start: int
    end: int
    record_count: int
    log_digest: bytes
    bill_ciphertext: bytes
    fixed_charge: int
    issued_at: int
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise InvalidArgument(f"interval range [{self.start}, {self.end}) is empty or negative")
        if self.record_count < 0:
            raise InvalidArgument("record_count must be non-negative")
        if len(self.key_id) != 16 or len(self.tariff_digest) != 32 or len(self.log_digest) != 32:
            raise InvalidArgument("key_id must be 16 bytes; tariff and log digests 32 bytes")
        if len(self.feed_digest) not in (0, 32):
            raise InvalidArgument("feed_digest must be empty or 32 bytes")
        if not 0 < len(self.bill_ciphertext) <= 1024:
            raise InvalidArgument("bill_ciphertext must be 1-1024 bytes")
        if len(self.signature) != SIGNATURE_BYTES:
            raise InvalidArgument(f"signature must be {SIGNATURE_BYTES} bytes")

    def signed_payload(self) -> bytes:
        return canonical(
            self.meter_id,
            self.key_id,
            self.plan_id,
            self.tariff_digest,
            self.feed_digest,
            self.start,
            self.end,
            self.record_count,
            self.log_digest,
            self.bill_ciphertext,
            self.fixed_charge,
            self.issued_at,
        )


@message("bill.proof")
@dataclass(frozen=True, slots=True, kw_only=True)
class BillProof:
    """The household's payment: the bill and ``r`` with ``c = (1 + bill*n) r^n mod n^2``."""

    meter_id: str
    statement_digest: bytes
    bill: int
    r: int

    def __post_init__(self) -> None:
        if len(self.statement_digest) != 32:
            raise InvalidArgument("statement_digest must be 32 bytes")
        if self.r <= 0 or self.r.bit_length() > 8192:
            raise InvalidArgument("r must be a positive integer of at most 8192 bits")


@message("bill.dispute")
@dataclass(frozen=True, slots=True, kw_only=True)
class Dispute:
    """The household refuses a statement; ``reason`` is a code, nothing is revealed."""

    meter_id: str
    statement_digest: bytes
    reason: str

    def __post_init__(self) -> None:
        if len(self.statement_digest) != 32:
            raise InvalidArgument("statement_digest must be 32 bytes")
        if self.reason not in DISPUTE_REASONS:
            raise InvalidArgument(f"unknown dispute reason {self.reason!r:.40}")

    def error(self) -> PrivmeterError:
        """The specific error this dispute stands for (to raise or log locally)."""
        return DISPUTE_REASONS[self.reason](
            f"household disputes the statement: {self.reason}",
            meter_id=self.meter_id,
            reason=self.reason,
        )


def sign_statement(signing_key: SigningKey, **fields: object) -> Statement:
    """Build and sign a :class:`Statement` (the head-end)."""
    unsigned = Statement(signature=b"\0" * SIGNATURE_BYTES, **fields)  # type: ignore[arg-type]
    sig = signing_key.sign(STATEMENT_CONTEXT, unsigned.signed_payload())
    return Statement(signature=sig, **fields)  # type: ignore[arg-type]


def verify_statement(statement: Statement, headend_key: VerifyKey) -> None:
    """:class:`~privmeter.errors.InvalidSignature` unless the head-end signed ``statement``."""
    headend_key.verify(STATEMENT_CONTEXT, statement.signed_payload(), statement.signature)


def statement_digest(statement: Statement) -> bytes:
    """SHA-256 of the signed statement (what a proof or dispute refers to)."""
    return hashlib.sha256(
        STATEMENT_CONTEXT + statement.signed_payload() + statement.signature
    ).digest()


def _record_order(rec: ReadingRecord) -> tuple[int, str, str]:
    return (rec.interval, rec.kind, rec.event_id)


def log_digest(
    meter_id: str, start: int, end: int, records: Iterable[bytes | ReadingRecord]
) -> bytes:
    """Digest of exactly one household's logged records in ``[start, end)``, in interval order.

    ``SHA-256(domain || canonical(meter_id, start, end) || canonical(rec_1) || ...)``
    over the canonical record bytes sorted by (interval, kind, event id).
    ``records``: logged bytes or decoded records.
    """
    recs = sorted(
        (r if isinstance(r, ReadingRecord) else record_from_bytes(r) for r in records),
        key=_record_order,
    )
    h = hashlib.sha256(LOG_DIGEST_DOMAIN + canonical(meter_id, start, end))
    for rec in recs:
        if rec.meter_id != meter_id or not start <= rec.interval < end:
            raise InvalidArgument(
                f"record of {rec.meter_id!r}/{rec.interval} outside the statement"
            )
        h.update(canonical(record_bytes(rec)))
    return h.digest()


# -- shared by the household and the auditor ------------------------------------------


def _check_tariff(statement: Statement, plan: Plan, feed: PriceFeed | None) -> PriceFeed | None:
    """Steps 1-2 shared by the household and the auditor; returns the feed cut to the period."""
    if statement.plan_id != plan.plan_id:
        raise TariffRejected(
            f"statement plan {statement.plan_id!r}, ours {plan.plan_id!r}", reason="plan"
        )
    if statement.tariff_digest != plan.tariff.digest():
        raise TariffRejected("statement tariff differs from the published tariff", reason="tariff")
    intervals = range(statement.start, statement.end)
    cut: PriceFeed | None = None
    if plan.tariff.kind == "realtime":
        vk = plan.tariff.verify_key
        if feed is None or vk is None:
            raise TariffRejected("a real-time bill needs the published price feed", reason="feed")
        try:
            feed.verify(vk)
            cut = feed.subset(intervals)
        except (InvalidSignature, TariffError) as exc:
            raise TariffRejected(f"published feed unusable: {exc}", reason="feed") from None
        if statement.feed_digest != cut.digest():
            raise TariffRejected("statement feed differs from the published feed", reason="feed")
    elif statement.feed_digest:
        raise TariffRejected("feed digest on a bill whose tariff has no feed", reason="feed")
    try:
        plan.check_tariff(plan.tariff, cut, intervals)
    except (TariffRejected, TariffError) as exc:
        raise TariffRejected(f"tariff breaks the plan: {exc}", reason="bounds") from None
    return cut


def rebuild_bill(
    records: Iterable[ReadingRecord],
    plan: Plan,
    feed: PriceFeed | None,
    pk: PaillierPublicKey,
    fixed_charge: int,
) -> EncryptedNumber:
    """E(bill) rebuilt from signed records and the published prices: ``prod c_i**p_i * E(fixed)``.

    Deterministic (no re-randomisation), with the head-end's own
    :class:`~privmeter.protocol.records.BillAccumulator`: an honest ledger's
    statement carries exactly these bytes.  ``feed`` is the period's feed
    (real-time plans).
    """
    acc = BillAccumulator(pk, price_bits(plan))
    for rec in records:
        c = pk.ciphertext_from_bytes(rec.ciphertext).value
        acc.add_record(c, plan, rec.kind, record_price(plan, rec.kind, rec.interval, feed))
    return acc.bill(fixed_charge)


def check_log(
    statement: Statement,
    records: Iterable[ReadingRecord],
    plan: Plan,
    feed: PriceFeed | None,
    *,
    meter_key: VerifyKey,
    household_pk: PaillierPublicKey,
) -> tuple[list[ReadingRecord], bytes]:
    """Check a statement against a signed log; return its records (interval order) and log digest.

    ``records`` may be the whole log: the statement's meter's records in its
    range are selected.  Each must carry the meter's signature
    (:class:`~privmeter.errors.InvalidSignature`) and the household key id
    (:class:`~privmeter.errors.KeyMismatch`), one per slot
    (:class:`~privmeter.errors.DuplicateReading`); their number and digest
    must be the statement's (:class:`~privmeter.errors.AuditFailure`); and
    E(bill) must be :func:`rebuild_bill` of them, byte for byte
    (:class:`~privmeter.errors.RebuildMismatch`).  Every error carries a
    ``reason`` from :data:`DISPUTE_REASONS`.
    """
    ctx = {"meter_id": statement.meter_id}
    mine: list[ReadingRecord] = []
    seen: set[tuple[str, int, str, str]] = set()
    for rec in records:
        if (
            rec.meter_id != statement.meter_id
            or not statement.start <= rec.interval < statement.end
        ):
            continue
        try:
            verify_record(rec, meter_key)
        except InvalidSignature:
            raise InvalidSignature(
                "logged record not signed by the meter", interval=rec.interval, reason="log", **ctx
            ) from None
        if rec.key_id != household_pk.key_id:
            raise KeyMismatch(
                "logged record under another key", interval=rec.interval, reason="log", **ctx
            )
        if rec.slot in seen:
            raise DuplicateReading(
                "log holds two records for one slot", interval=rec.interval, reason="log", **ctx
            )
        seen.add(rec.slot)
        mine.append(rec)
    if len(mine) != statement.record_count:
        raise AuditFailure(
            f"statement counts {statement.record_count} records, the log holds {len(mine)}",
            reason="count",
            **ctx,
        )
    mine.sort(key=_record_order)
    ld = log_digest(statement.meter_id, statement.start, statement.end, mine)
    if ld != statement.log_digest:
        raise AuditFailure("log digest differs from the statement's", reason="log", **ctx)
    if (
        rebuild_bill(mine, plan, feed, household_pk, statement.fixed_charge).to_bytes()
        != statement.bill_ciphertext
    ):
        raise RebuildMismatch(
            "E(bill) differs from the one rebuilt from the signed log", reason="rebuild", **ctx
        )
    return mine, ld


def check_bill_bounds(statement: Statement, plan: Plan, bill: int) -> None:
    """:class:`~privmeter.errors.BillOutOfBounds` unless ``bill`` lies in the plan's bounds for
    the statement's range and record count (:meth:`~privmeter.grid.tariff.plans.Plan.bill_bounds`)."""
    lo, hi = plan.bill_bounds(range(statement.start, statement.end), statement.record_count)
    if not lo <= bill <= hi:
        raise BillOutOfBounds(
            f"bill of {bill.bit_length()} bits outside the plan's bounds [{lo}, {hi}]",
            meter_id=statement.meter_id,
            reason="bill-bounds",
        )


def expected_bill(
    plan: Plan,
    feed: PriceFeed | None,
    readings: Mapping[int, int],
    adjustments: Mapping[tuple[str, str, int], int],
    start: int,
    end: int,
) -> int:
    """The bill in plaintext (micro-minor-units): energy charge + DR adjustments + fixed charge.

    ``readings`` maps interval -> Wh; ``adjustments`` maps
    (kind, event id, interval) -> Wh for ``dr_excess`` / ``dr_rebate`` records.
    """
    total = int(plan.energy_charge(readings, feed)) + int(plan.fixed_charge(range(start, end)))
    for (kind, _event, t), wh in adjustments.items():
        total += int(wh) * record_price(plan, kind, t, feed)
    return total


# -- the household ------------------------------------------------------------------


def settle(
    statement: Statement,
    *,
    headend_key: VerifyKey,
    meter_key: VerifyKey,
    secret_key: PaillierPrivateKey,
    meter_id: str,
    plan: Plan,
    period: range,
    readings: Mapping[int, int],
    records: Iterable[ReadingRecord],
    feed: PriceFeed | None = None,
    adjustments: Mapping[tuple[str, str, int], int] | None = None,
) -> BillProof | Dispute:
    """The household checks a statement and pays (:class:`BillProof`) or disputes.

    ``period``: the billing period the statement must cover exactly;
    ``readings`` / ``adjustments``: what the meter's local port says (any
    range: the period's are used); ``records``: the meter-signed records the
    statement is built from (the statement's log), checked under
    ``meter_key``.  See the module docstring for the order of checks.  Never
    raises on a bad statement: every failure becomes a :class:`Dispute`
    carrying only a code.  Never decrypts anything.
    """
    sd = statement_digest(statement)
    pk = secret_key.public_key
    try:
        try:
            verify_statement(statement, headend_key)
        except InvalidSignature:
            raise InvalidSignature("statement signature", reason="signature") from None
        if statement.meter_id != meter_id or statement.key_id != pk.key_id:
            raise KeyMismatch("statement is for another meter or key", reason="key")
        cut = _check_tariff(statement, plan, feed)
        if range(statement.start, statement.end) != period:
            raise BillMismatch(
                f"statement covers [{statement.start}, {statement.end}), not {period}",
                reason="range",
            )
        if statement.fixed_charge != plan.fixed_charge(period):
            raise BillMismatch("fixed charge differs from the plan's", reason="fixed-charge")
        # step 4: the statement's log, and E(bill) rebuilt from it (public data only)
        mine, _ = check_log(statement, records, plan, cut, meter_key=meter_key, household_pk=pk)
        # step 5: the log is exactly what the meter told us it reported (slots, not values)
        ours = {t: x for t, x in readings.items() if t in period}
        adj = {k: x for k, x in (adjustments or {}).items() if k[2] in period}
        slots = {(t, ENERGY, "") for t in ours} | {(t, kind, eid) for (kind, eid, t) in adj}
        if {(r.interval, r.kind, r.event_id) for r in mine} != slots:
            raise BillMismatch(
                f"the log's {len(mine)} records are not the meter's {len(slots)}", reason="count"
            )
        # step 6: E(bill) is now the true bill's encryption; our own bill must open it
        bill = expected_bill(plan, cut, ours, adj, statement.start, statement.end)
        check_bill_bounds(statement, plan, bill)
        try:
            ct = pk.ciphertext_from_bytes(statement.bill_ciphertext)
            r = prove_plaintext(secret_key, ct, bill)  # InvalidProof unless E(bill) opens to it
        except (InvalidProof, PrivmeterError, ValueError):
            raise BillMismatch("our readings do not open E(bill)", reason="bill") from None
    except PrivmeterError as exc:
        reason = exc.context.get("reason")
        if reason not in DISPUTE_REASONS:
            reason = "log"  # a malformed log record, an unusable ciphertext in it...
        return Dispute(meter_id=statement.meter_id, statement_digest=sd, reason=reason)
    return BillProof(meter_id=statement.meter_id, statement_digest=sd, bill=bill, r=r)


def records_from_log(log: Iterable[bytes]) -> list[ReadingRecord]:
    """Decode a statement's log (canonical record bytes); :class:`~privmeter.errors.MalformedMessage`
    (reason ``log``) on anything that is not a record, or more than :data:`MAX_LOG_RECORDS`."""
    out: list[ReadingRecord] = []
    for data in log:
        if len(out) >= MAX_LOG_RECORDS:
            raise MalformedMessage(f"log of more than {MAX_LOG_RECORDS} records", reason="log")
        try:
            out.append(record_from_bytes(data))
        except MalformedMessage as exc:
            raise MalformedMessage(f"log record: {exc}", reason="log") from None
    return out


def check_proof(statement: Statement, proof: BillProof, pk: PaillierPublicKey, plan: Plan) -> int:
    """The head-end (or anyone) checks a payment; returns the proven bill.

    :class:`~privmeter.errors.InvalidProof` if the proof refers to another
    statement or does not open E(bill) (e.g. an under-reported bill);
    :class:`~privmeter.errors.BillOutOfBounds` if the bill lies outside the
    plan's bounds for the statement (:func:`check_bill_bounds`): no bill a
    meter's records could add up to is, so such a "proof" opens a ciphertext
    that is not a bill (a key whose encryptions do not decrypt to the readings).
    """
    if (
        proof.statement_digest != statement_digest(statement)
        or proof.meter_id != statement.meter_id
    ):
        raise InvalidProof("proof refers to another statement", meter_id=proof.meter_id)
    if statement.key_id != pk.key_id:
        raise KeyMismatch("statement is not under this household key", meter_id=statement.meter_id)
    if statement.plan_id != plan.plan_id:
        raise TariffRejected(
            f"statement plan {statement.plan_id!r}, expected {plan.plan_id!r}",
            meter_id=statement.meter_id,
        )
    check_bill_bounds(statement, plan, proof.bill)
    ct = pk.ciphertext_from_bytes(statement.bill_ciphertext)
    try:
        verify_decryption(pk, ct, proof.bill, proof.r)
    except PlaintextOverflow:
        raise InvalidProof("claimed bill out of range") from None
    return proof.bill


# -- the auditor ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What an audit established (all of it checked)."""

    meter_id: str
    start: int
    end: int
    record_count: int
    bill: int
    statement_digest: bytes
    log_digest: bytes

    def summary(self) -> str:
        return (
            f"VERIFIED meter {self.meter_id} intervals [{self.start}, {self.end}): "
            f"{self.record_count} signed records, bill {self.bill} micro-minor-units, "
            f"statement {self.statement_digest.hex()[:16]}"
        )


def audit(
    statement: Statement,
    records: Iterable[ReadingRecord],
    plan: Plan,
    feed: PriceFeed | None,
    proof: BillProof,
    *,
    headend_key: VerifyKey,
    meter_key: VerifyKey,
    household_pk: PaillierPublicKey,
    min_key_bits: int = MIN_KEY_BITS,
) -> AuditReport:
    """Check a statement offline, with public data only; raise the specific failure.

    ``records`` may be the whole log (:func:`check_log`, the household's own
    check).  The household key must pass :meth:`~privmeter.crypto.paillier.PaillierPublicKey.check`
    (h_s derived from n: :class:`~privmeter.errors.BaseNotDerived`), and the
    proven bill must lie in the plan's bounds (:func:`check_proof`).
    """
    household_pk.check(min_bits=min_key_bits)
    verify_statement(statement, headend_key)
    if statement.key_id != household_pk.key_id:
        raise KeyMismatch("statement is not under the household key", meter_id=statement.meter_id)
    cut = _check_tariff(statement, plan, feed)
    if statement.fixed_charge != plan.fixed_charge(range(statement.start, statement.end)):
        raise AuditFailure("fixed charge differs from the plan's", meter_id=statement.meter_id)
    mine, ld = check_log(
        statement, records, plan, cut, meter_key=meter_key, household_pk=household_pk
    )
    bill = check_proof(statement, proof, household_pk, plan)
    return AuditReport(
        meter_id=statement.meter_id,
        start=statement.start,
        end=statement.end,
        record_count=len(mine),
        bill=bill,
        statement_digest=statement_digest(statement),
        log_digest=ld,
    )
