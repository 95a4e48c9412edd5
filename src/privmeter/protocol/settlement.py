"""Settlement: the head-end's statement, the household's check, proofs, disputes and audit.

What it is for: at the end of a billing period the head-end issues a signed
:class:`Statement` -- E(bill), the tariff digest, the price-feed digest (real
time), the interval range, the record count and the digest of exactly the
household's signed records.  The household (:func:`settle`) checks it and
either pays with a :class:`BillProof` or answers with a :class:`Dispute`.
Anyone can then :func:`audit` a statement offline from the signed log, the
published tariff and feed and the proof, with no secret key.

The household's order of work (:func:`settle`):

1. head-end signature, household key id, plan id;
2. tariff digest == the published tariff's; for a real-time tariff the feed
   must verify under the tariff's feed key and its digest over the period
   must equal the statement's; the plan's declared price bounds and allowed
   prices must hold (:meth:`~privmeter.grid.plans.Plan.check_tariff`);
3. the interval range contains all its own readings (and equals the billing
   period it expects, if given) and the record count equals the number of
   readings (plus demand-response records) it knows of;
4. it recomputes the bill in plaintext from its own readings and the
   published tariff **first**;
5. only then does it touch the ciphertext: it derives ``r`` for the *expected*
   bill and checks ``c == (1 + bill*n) r^n mod n^2``.  If that holds it returns
   ``BillProof(bill, r)``; otherwise a ``Dispute("bill")``.  It never computes
   nor reveals the decryption of a ciphertext that is not its expected bill,
   so a statement whose "bill" is really one reading (or anything else) teaches
   the head-end only that the household disagrees.

Any failed check yields a :class:`Dispute` whose ``reason`` is one code from
:data:`DISPUTE_REASONS`, and nothing else.

Security assumptions: Ed25519 unforgeability (meter and head-end signatures);
the household key is well formed (gcd(n, phi(n)) = 1, proven once with the key,
see :mod:`privmeter.parties.keys`), so ``(bill, r)`` is a binding proof of the
decryption (:func:`~privmeter.crypto.paillier.verify_decryption`).

Guarantees: a household that under-reports cannot produce a proof that
verifies; a statement that adds, drops, duplicates, reorders or re-prices
records, or uses another tariff or feed, is disputed by the household and
fails the audit with a specific error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from privmeter.crypto.paillier import (
    EncryptedNumber,
    PaillierPrivateKey,
    PaillierPublicKey,
    verify_decryption,
)
from privmeter.crypto.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from privmeter.errors import (
    AuditFailure,
    BillMismatch,
    DuplicateReading,
    InvalidProof,
    InvalidSignature,
    KeyMismatch,
    PlaintextOverflow,
    PrivmeterError,
    TariffError,
    TariffRejected,
)
from privmeter.grid.plans import Plan
from privmeter.grid.pricefeed import PriceFeed
from privmeter.protocol.billing import (
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
from privmeter.protocol.codec import message

__all__ = [
    "DISPUTE_REASONS",
    "STATEMENT_CONTEXT",
    "AuditReport",
    "BillProof",
    "Dispute",
    "Statement",
    "audit",
    "check_proof",
    "expected_bill",
    "log_digest",
    "settle",
    "sign_statement",
    "statement_digest",
    "verify_statement",
]

STATEMENT_CONTEXT = b"privmeter.bill.statement/1"
LOG_DIGEST_DOMAIN = b"privmeter.bill.log-digest/1"

# reason code -> the error a party raises locally for it
DISPUTE_REASONS: dict[str, type[PrivmeterError]] = {
    "signature": InvalidSignature,  # the statement is not signed by the head-end
    "key": KeyMismatch,  # E(bill) under another household key, or another meter
    "plan": TariffRejected,  # another plan than the household's
    "tariff": TariffRejected,  # tariff digest differs from the published tariff
    "feed": TariffRejected,  # feed differs from the published one / does not verify
    "bounds": TariffRejected,  # prices break the plan's bounds or allowed prices
    "range": BillMismatch,  # interval range differs from the household's readings
    "count": BillMismatch,  # record count differs from the household's readings
    "fixed-charge": BillMismatch,  # fixed charge differs from the plan's
    "bill": BillMismatch,  # E(bill) does not encrypt the household's own bill
}


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
            raise ValueError(f"interval range [{self.start}, {self.end}) is empty or negative")
        if self.record_count < 0:
            raise ValueError("record_count must be non-negative")
        if len(self.key_id) != 16 or len(self.tariff_digest) != 32 or len(self.log_digest) != 32:
            raise ValueError("key_id must be 16 bytes; tariff and log digests 32 bytes")
        if len(self.feed_digest) not in (0, 32):
            raise ValueError("feed_digest must be empty or 32 bytes")
        if not 0 < len(self.bill_ciphertext) <= 1024:
            raise ValueError("bill_ciphertext must be 1-1024 bytes")
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError(f"signature must be {SIGNATURE_BYTES} bytes")

    def signed_payload(self) -> bytes:
        return canonical(
            self.meter_id, self.key_id, self.plan_id, self.tariff_digest, self.feed_digest,
            self.start, self.end, self.record_count, self.log_digest, self.bill_ciphertext,
            self.fixed_charge, self.issued_at,
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
            raise ValueError("statement_digest must be 32 bytes")
        if self.r <= 0 or self.r.bit_length() > 8192:
            raise ValueError("r must be a positive integer of at most 8192 bits")


@message("bill.dispute")
@dataclass(frozen=True, slots=True, kw_only=True)
class Dispute:
    """The household refuses a statement; ``reason`` is a code, nothing is revealed."""

    meter_id: str
    statement_digest: bytes
    reason: str

    def __post_init__(self) -> None:
        if len(self.statement_digest) != 32:
            raise ValueError("statement_digest must be 32 bytes")
        if self.reason not in DISPUTE_REASONS:
            raise ValueError(f"unknown dispute reason {self.reason!r:.40}")

    def error(self) -> PrivmeterError:
        """The specific error this dispute stands for (to raise or log locally)."""
        return DISPUTE_REASONS[self.reason](f"household disputes the statement: {self.reason}",
                                            meter_id=self.meter_id, reason=self.reason)


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
    return hashlib.sha256(STATEMENT_CONTEXT + statement.signed_payload() + statement.signature).digest()


def _record_order(rec: ReadingRecord) -> tuple[int, str, str]:
    return (rec.interval, rec.kind, rec.event_id)


def log_digest(meter_id: str, start: int, end: int, records: Iterable[bytes]) -> bytes:
    """Digest of exactly one household's logged records in ``[start, end)``, in interval order.

    ``SHA-256(domain || canonical(meter_id, start, end) || canonical(rec_1) || ...)``
    over the canonical record bytes sorted by (interval, kind, event id).
    """
    recs = sorted((record_from_bytes(b) for b in records), key=_record_order)
    h = hashlib.sha256(LOG_DIGEST_DOMAIN + canonical(meter_id, start, end))
    for rec in recs:
        if rec.meter_id != meter_id or not start <= rec.interval < end:
            raise ValueError(f"record of {rec.meter_id!r}/{rec.interval} outside the statement")
        h.update(canonical(record_bytes(rec)))
    return h.digest()


# -- the household ------------------------------------------------------------------

def _check_tariff(statement: Statement, plan: Plan, feed: PriceFeed | None) -> PriceFeed | None:
    """Steps 1-2 shared by the household and the auditor; returns the feed cut to the period."""
    if statement.plan_id != plan.plan_id:
        raise TariffRejected(f"statement plan {statement.plan_id!r}, ours {plan.plan_id!r}", reason="plan")
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


def settle(
    statement: Statement,
    *,
    headend_key: VerifyKey,
    secret_key: PaillierPrivateKey,
    meter_id: str,
    plan: Plan,
    readings: Mapping[int, int],
    feed: PriceFeed | None = None,
    adjustments: Mapping[tuple[str, str, int], int] | None = None,
    period: range | None = None,
) -> BillProof | Dispute:
    """The household checks a statement and pays (:class:`BillProof`) or disputes.

    See the module docstring for the order of checks.  Never raises on a bad
    statement: every failure becomes a :class:`Dispute` carrying only a code.
    """
    adjustments = adjustments or {}
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
        if any(not statement.start <= t < statement.end for t in readings) or any(
            not statement.start <= t < statement.end for (_, _, t) in adjustments
        ):
            raise BillMismatch("our readings fall outside the statement's range", reason="range")
        if period is not None and range(statement.start, statement.end) != period:
            raise BillMismatch(f"statement covers [{statement.start}, {statement.end}), not {period}",
                               reason="range")
        if statement.record_count != len(readings) + len(adjustments):
            raise BillMismatch(
                f"statement counts {statement.record_count} records, we have "
                f"{len(readings) + len(adjustments)}",
                reason="count",
            )
        if statement.fixed_charge != plan.fixed_charge(range(statement.start, statement.end)):
            raise BillMismatch("fixed charge differs from the plan's", reason="fixed-charge")
        # step 4: our own bill, before looking at the ciphertext
        bill = expected_bill(plan, cut, readings, adjustments, statement.start, statement.end)
        # step 5: is c an encryption of exactly that bill?  (never decrypts c)
        try:
            ct = pk.ciphertext_from_bytes(statement.bill_ciphertext)
            r = secret_key.recover_r(ct.value, pk.encode(bill))
            verify_decryption(pk, ct, bill, r)
        except (InvalidProof, PrivmeterError, ValueError):
            raise BillMismatch("E(bill) does not encrypt our bill", reason="bill") from None
    except PrivmeterError as exc:
        reason = exc.context.get("reason")
        if reason not in DISPUTE_REASONS:
            reason = "bill"
        return Dispute(meter_id=statement.meter_id, statement_digest=sd, reason=reason)
    return BillProof(meter_id=statement.meter_id, statement_digest=sd, bill=bill, r=r)


def check_proof(statement: Statement, proof: BillProof, pk: PaillierPublicKey) -> int:
    """The head-end (or anyone) checks a payment; returns the proven bill.

    :class:`~privmeter.errors.InvalidProof` if the proof refers to another
    statement or does not open E(bill) (e.g. an under-reported bill).
    """
    if proof.statement_digest != statement_digest(statement) or proof.meter_id != statement.meter_id:
        raise InvalidProof("proof refers to another statement", meter_id=proof.meter_id)
    if statement.key_id != pk.key_id:
        raise KeyMismatch("statement is not under this household key", meter_id=statement.meter_id)
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
) -> AuditReport:
    """Check a statement offline, with public data only; raise the specific failure.

    ``records`` may be the whole log: the records of the statement's meter in
    its range are selected.  The encrypted bill is rebuilt with the head-end's
    own :class:`~privmeter.protocol.billing.BillAccumulator`.
    """
    verify_statement(statement, headend_key)
    if statement.key_id != household_pk.key_id:
        raise KeyMismatch("statement is not under the household key", meter_id=statement.meter_id)
    cut = _check_tariff(statement, plan, feed)
    if statement.fixed_charge != plan.fixed_charge(range(statement.start, statement.end)):
        raise AuditFailure("fixed charge differs from the plan's", meter_id=statement.meter_id)
    mine: list[ReadingRecord] = []
    seen: set[tuple[str, int, str, str]] = set()
    for rec in records:
        if rec.meter_id != statement.meter_id or not statement.start <= rec.interval < statement.end:
            continue
        verify_record(rec, meter_key)
        if rec.key_id != household_pk.key_id:
            raise KeyMismatch("logged record under another key", meter_id=rec.meter_id, interval=rec.interval)
        if rec.slot in seen:
            raise DuplicateReading("log holds two records for one slot", meter_id=rec.meter_id, interval=rec.interval)
        seen.add(rec.slot)
        mine.append(rec)
    if len(mine) != statement.record_count:
        raise AuditFailure(
            f"statement counts {statement.record_count} records, the log holds {len(mine)}",
            meter_id=statement.meter_id,
        )
    ld = log_digest(statement.meter_id, statement.start, statement.end, [record_bytes(r) for r in mine])
    if ld != statement.log_digest:
        raise AuditFailure("log digest differs from the statement's", meter_id=statement.meter_id)
    acc = BillAccumulator(household_pk, price_bits(plan))
    realtime = plan.tariff.kind == "realtime"
    for rec in sorted(mine, key=_record_order):
        c = household_pk.ciphertext_from_bytes(rec.ciphertext).value
        acc.add(c, record_price(plan, rec.kind, rec.interval, cut), realtime=realtime and rec.kind == ENERGY)
    rebuilt = EncryptedNumber(household_pk, acc.value()) + statement.fixed_charge
    if rebuilt.to_bytes() != statement.bill_ciphertext:
        raise AuditFailure("E(bill) differs from the one rebuilt from the signed log", meter_id=statement.meter_id)
    bill = check_proof(statement, proof, household_pk)
    return AuditReport(
        meter_id=statement.meter_id,
        start=statement.start,
        end=statement.end,
        record_count=len(mine),
        bill=bill,
        statement_digest=statement_digest(statement),
        log_digest=ld,
    )
