"""Signed reading records and the head-end's encrypted billing ledger (sans-IO).

What it is for: every interval the meter sends a :class:`ReadingRecord` --
the household's reading encrypted under the household's Paillier key, signed
by the meter.  The head-end's :class:`BillingLedger` checks each record and
folds it into the household's encrypted bill as it arrives, without ever
decrypting anything; at the end of a billing period it issues a signed
:class:`~privmeter.protocol.settlement.Statement`.

Record checks, in this order, each a specific error and **no state change** on
failure (the ledger keeps serving):

1. unknown meter -> :class:`~privmeter.errors.UnknownParty`
2. key id differs from the registered household key -> :class:`~privmeter.errors.KeyMismatch`
3. bad meter signature -> :class:`~privmeter.errors.InvalidSignature`
4. interval outside ``[current - window_back, current + window_ahead]``, before
   the first billing period, or in a period already settled ->
   :class:`~privmeter.errors.StaleMessage`
5. the very same record again -> :class:`~privmeter.errors.ReplayedMessage`
6. a *different* record for an already-billed (meter, interval, kind, event)
   -> :class:`~privmeter.errors.DuplicateReading`
7. ciphertext not ``nbytes`` long, 0, ``>= n^2`` or not a unit ->
   :class:`~privmeter.errors.InvalidCiphertext`

then the record is folded into the accumulator and appended to the signed log
in one store transaction.

Accumulation (:class:`BillAccumulator`, the *same* code the auditor runs): a
record with ciphertext ``c`` and price ``p`` contributes ``c**p``.  Flat and
time-of-use energy and the demand-response kinds go into a
:class:`~privmeter.crypto.multiexp.GroupedProduct` keyed by price (one
multiplication per record, one exponentiation per distinct price at the end);
real-time energy goes into a :class:`~privmeter.crypto.multiexp.StreamingMultiExp`
(Pippenger buckets: one multiplication per window per record).  Either way the
state per household is constant: it does not grow with the number of records.
A negative price (a demand-response rebate) is applied as ``(c^-1)**|p|``.

Real-time prices: if the feed has not yet published the price of a record's
interval, the record is still accepted and logged, and its ciphertext is kept
as a *pending* cell of the account (at most :data:`MAX_PENDING` per account,
persisted with the accumulator).  :meth:`BillingLedger.publish_feed` folds
pending records in once their prices appear; a statement is refused while any
are pending.

Security assumption: Ed25519 (meter signatures) is unforgeable and the meter
is the trusted sensor.  Guarantee: every record in the log carries a valid
meter signature over (meter id, interval, kind, event, key id, ciphertext); no
record counts twice; the accumulator equals, at every commit, the product the
auditor recomputes from the log.

Units: energy Wh (signed), prices milli-minor-units per kWh, bill in
micro-minor-units (Wh x price); interval = floor(unix_seconds / interval_seconds).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.multiexp import GroupedProduct, StreamingMultiExp
from privmeter.crypto.paillier import MIN_KEY_BITS, EncryptedNumber, PaillierPublicKey
from privmeter.crypto.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from privmeter.errors import (
    DuplicateReading,
    InvalidKey,
    KeyMismatch,
    LocalProtocolError,
    PlaintextOverflow,
    PlanError,
    ReplayedMessage,
    StaleMessage,
    StoreError,
    TariffError,
    TariffRejected,
    UnexpectedMessage,
    UnknownParty,
    UnprovenKey,
)
from privmeter.grid.plans import Plan
from privmeter.grid.pricefeed import PriceFeed
from privmeter.protocol.codec import check_id, decode, encode, message
from privmeter.protocol.periods import check_layout, period_bounds, period_of
from privmeter.store.billing_store import BillingStore, MemoryBillingStore, Registration

if TYPE_CHECKING:
    from privmeter.protocol.settlement import Statement

__all__ = [
    "DR_EXCESS",
    "DR_REBATE",
    "ENERGY",
    "KINDS",
    "MAX_PENDING",
    "RECORDS_PER_INTERVAL",
    "RECORD_CONTEXT",
    "BillAccumulator",
    "BillingLedger",
    "ReadingRecord",
    "Receipt",
    "canonical",
    "check_household_key",
    "make_record",
    "price_bits",
    "record_bytes",
    "record_from_bytes",
    "record_price",
    "sign_receipt",
    "verify_record",
]

ENERGY = "energy"  # Wh imported (+) / exported (-) in the interval, at the tariff's price
DR_EXCESS = "dr_excess"  # Wh above the event's cap, at the plan's penalty price
DR_REBATE = "dr_rebate"  # Wh of curtailment credited, at minus the plan's rebate price
KINDS = (ENERGY, DR_EXCESS, DR_REBATE)
RECORDS_PER_INTERVAL = len(KINDS)  # at most one record of each kind per interval and event
RECORD_CONTEXT = b"privmeter.bill.record/1"
RECEIPT_CONTEXT = b"privmeter.bill.receipt/1"
MAX_PENDING = 4 * 96  # real-time records awaiting their price: four days of 15-minute intervals
MAX_CIPHERTEXT_BYTES = 1024  # n^2 of an 8192-bit modulus; bounds a hostile record
DEFAULT_WINDOW_BACK = 96  # accept readings up to a day late (15-minute intervals)
DEFAULT_WINDOW_AHEAD = 1  # and one interval early (clock skew)
DEFAULT_PERIOD_INTERVALS = 31 * 96  # one 31-day month of 15-minute intervals
# Pippenger window for real-time prices: small, so the persisted state stays small
# (ceil(bits/4) * 15 residues: 75 for 17-bit prices, ~56 KiB at 3072 bits) at the cost of
# ceil(bits/4) multiplications per record instead of ceil(bits/8).
STREAM_WINDOW = 4
_U32 = struct.Struct(">I").pack


def canonical(*parts: bytes | str | int) -> bytes:
    """Unambiguous byte encoding of typed parts (the payload every signature covers).

    Each part is ``tag (1 byte) || length (u32 BE) || data`` with tag ``b`` for
    bytes, ``s`` for UTF-8 text and ``i`` for a signed big-endian integer.
    """
    out: list[bytes] = []  # joined once: this runs twice per record on the head-end's hot path
    for p in parts:
        if isinstance(p, bytes):
            out.append(b"b")
            data = p
        elif isinstance(p, str):
            out.append(b"s")
            data = p.encode("utf-8")
        elif isinstance(p, bool):
            raise TypeError("canonical() takes no bools")
        elif isinstance(p, int):
            out.append(b"i")
            data = p.to_bytes((p.bit_length() + 8) // 8, "big", signed=True)
        else:
            raise TypeError(f"canonical() cannot encode {type(p).__name__}")
        out.append(_U32(len(data)))
        out.append(data)
    return b"".join(out)



@message("bill.record")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingRecord:
    """One encrypted, meter-signed reading (see the module docstring for the kinds)."""

    meter_id: str
    interval: int
    kind: str
    event_id: str
    key_id: bytes
    ciphertext: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_id(self.meter_id, "meter_id")
        if not 0 <= self.interval < 2**48:
            raise ValueError(f"interval must be in [0, 2**48), got {self.interval!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r:.40}")
        if self.kind == ENERGY:
            if self.event_id:
                raise ValueError("an energy record carries no event_id")
        else:
            check_id(self.event_id, "event_id")
        if len(self.key_id) != 16:
            raise ValueError(f"key_id must be 16 bytes, got {len(self.key_id)}")
        if not 0 < len(self.ciphertext) <= MAX_CIPHERTEXT_BYTES:
            raise ValueError(f"ciphertext must be 1-{MAX_CIPHERTEXT_BYTES} bytes, got {len(self.ciphertext)}")
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError(f"signature must be {SIGNATURE_BYTES} bytes, got {len(self.signature)}")

    @property
    def slot(self) -> tuple[str, int, str, str]:
        """What may be billed only once: (meter, interval, kind, event)."""
        return (self.meter_id, self.interval, self.kind, self.event_id)

    def signed_payload(self) -> bytes:
        return canonical(self.meter_id, self.interval, self.kind, self.event_id, self.key_id, self.ciphertext)


def make_record(
    signing_key: SigningKey,
    meter_id: str,
    interval: int,
    pk: PaillierPublicKey,
    ciphertext: EncryptedNumber | bytes,
    *,
    kind: str = ENERGY,
    event_id: str = "",
) -> ReadingRecord:
    """The meter side: sign an encrypted reading into a :class:`ReadingRecord`."""
    if isinstance(ciphertext, EncryptedNumber):
        if ciphertext.public_key.key_id != pk.key_id:
            raise KeyMismatch("ciphertext is not under the household key", meter_id=meter_id)
        data = ciphertext.to_bytes()
    else:
        data = bytes(ciphertext)
    unsigned = canonical(meter_id, interval, kind, event_id, pk.key_id, data)
    return ReadingRecord(
        meter_id=meter_id,
        interval=interval,
        kind=kind,
        event_id=event_id,
        key_id=pk.key_id,
        ciphertext=data,
        signature=signing_key.sign(RECORD_CONTEXT, unsigned),
    )


def verify_record(record: ReadingRecord, verify_key: VerifyKey) -> None:
    """Raise :class:`~privmeter.errors.InvalidSignature` unless the meter signed this record."""
    verify_key.verify(RECORD_CONTEXT, record.signed_payload(), record.signature)


def record_bytes(record: ReadingRecord) -> bytes:
    """The canonical bytes of a record as logged and hashed (the codec's encoding)."""
    return encode(record)


def record_from_bytes(data: bytes) -> ReadingRecord:
    """Decode one logged record (:class:`~privmeter.errors.MalformedMessage` if it is not one)."""
    rec: ReadingRecord = decode(data, max_bytes=4 * MAX_CIPHERTEXT_BYTES, expect=ReadingRecord)
    return rec


def record_price(plan: Plan, kind: str, interval: int, feed: PriceFeed | None) -> int:
    """The price a record is billed at (milli-minor-units per kWh).

    Energy: the plan's tariff at ``interval`` (the feed's price for a real-time
    tariff; :class:`~privmeter.errors.TariffError` if the feed has none yet).
    ``dr_excess``: the plan's penalty price; ``dr_rebate``: minus its rebate price.
    """
    if kind == ENERGY:
        return int(plan.tariff.price_at(interval, plan.interval_seconds, feed))
    dr = plan.demand_response
    if dr is None:
        raise UnexpectedMessage(f"plan {plan.plan_id!r} has no demand response; got a {kind!r} record")
    if kind == DR_EXCESS:
        return int(dr.penalty_price)
    if kind == DR_REBATE:
        return -int(dr.rebate_price)
    raise ValueError(f"unknown record kind {kind!r}")


_VERIFIED_KEYS: set[tuple[bytes, int, int, tuple[int, ...], int]] = set()


def check_household_key(
    pk: PaillierPublicKey,
    wellformed_proof: Sequence[int],
    *,
    min_bits: int = MIN_KEY_BITS,
    plan: Plan | None = None,
    period_intervals: int | None = None,
) -> None:
    """The check a party runs on a household key before relying on it: registration.

    The head-end runs it when it registers a meter's household
    (:meth:`BillingLedger.register`); key files are loaded through it
    (:func:`privmeter.parties.keys.public_household_key`).  In order:

    1. the key's structure, and its ``h_s`` is the base derived from n, so an
       n-th residue and every encryption under it decrypts to what was
       encrypted (:meth:`~privmeter.crypto.paillier.PaillierPublicKey.check`:
       :class:`~privmeter.errors.InvalidKey` /
       :class:`~privmeter.errors.BaseNotDerived`);
    2. the well-formedness proof, gcd(n, phi(n)) = 1, so a decryption proof
       ``(bill, r)`` binds (:class:`~privmeter.errors.UnprovenKey`);
    3. with a plan and a period length: twice the largest bill of a period
       (:meth:`~privmeter.grid.plans.Plan.bill_bounds` with
       :data:`RECORDS_PER_INTERVAL` records per interval) fits the key's
       signed range, so no bill wraps around n
       (:class:`~privmeter.errors.PlaintextOverflow`).

    Cost: ~90 ms at 3072 bits (eight n-th powers mod n, trial division, one
    power mod n**2), once per key and proof in a process (verified pairs are
    remembered: a re-registration, or many meters sharing a test key, pay once).
    """
    if isinstance(wellformed_proof, str | bytes) or not isinstance(wellformed_proof, Sequence):
        raise UnprovenKey("a household key needs its well-formedness proof (a list of roots)")
    roots = list(wellformed_proof)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in roots):
        raise UnprovenKey("well-formedness proof roots must be integers")
    if not isinstance(pk, PaillierPublicKey):
        raise InvalidKey(f"expected a Paillier public key, got {type(pk).__name__}")
    memo = (pk.key_id, pk.n, pk.hs, tuple(roots), min_bits)  # the key id alone is a 128-bit hash
    if memo not in _VERIFIED_KEYS:
        pk.verify_wellformed(roots, min_bits=min_bits)
        if len(_VERIFIED_KEYS) >= 4096:
            _VERIFIED_KEYS.clear()
        _VERIFIED_KEYS.add(memo)
    if plan is not None and period_intervals is not None:
        lo, hi = plan.bill_bounds(range(0, period_intervals), RECORDS_PER_INTERVAL * period_intervals)
        if 2 * max(-lo, hi) > pk.max_int:
            raise PlaintextOverflow(
                f"a {pk.bits}-bit key cannot hold the largest bill of plan {plan.plan_id!r} "
                f"over {period_intervals} intervals", key_id=pk.key_id.hex())


def price_bits(plan: Plan) -> int:
    """Exponent size the accumulator must handle for ``plan`` (from its price bounds)."""
    bound = max(abs(int(plan.min_price)), abs(int(plan.max_price)), 1)
    dr = plan.demand_response
    if dr is not None:
        bound = max(bound, abs(int(dr.penalty_price)), abs(int(dr.rebate_price)))
    return bound.bit_length()


class BillAccumulator:
    """The encrypted bill of one household for one period, in constant state.

    ``add(c, price, realtime=...)`` folds in one ciphertext; :meth:`value`
    returns ``prod c_i**p_i mod n^2`` = E(sum x_i p_i).  The state is a flat
    ``{cell name: residue}`` map (``g<price>`` for the grouped product,
    ``s<i>`` for the streaming buckets) so a store can persist only the cells
    that changed.  Head-end and auditor both use this class.
    """

    __slots__ = ("_exp_bits", "_grouped", "_nsq", "_streaming", "pk")

    def __init__(self, pk: PaillierPublicKey, exp_bits: int, cells: Mapping[str, int] | None = None) -> None:
        self.pk = pk
        self._nsq = pk.nsquare
        self._exp_bits = max(int(exp_bits), 1)
        cells = cells or {}
        grouped = {int(k[1:]): int(v) for k, v in cells.items() if k.startswith("g")}
        stream = sorted(((int(k[1:]), int(v)) for k, v in cells.items() if k.startswith("s")))
        self._grouped = GroupedProduct.from_state(self._nsq, grouped) if grouped else GroupedProduct(self._nsq)
        if stream:
            self._streaming: StreamingMultiExp | None = StreamingMultiExp.from_state(
                self._nsq, self._exp_bits, STREAM_WINDOW, [v for _, v in stream]
            )
        else:
            self._streaming = None

    def add(self, c: int, price: int, *, realtime: bool = False) -> None:
        """Fold in ciphertext value ``c`` (already validated) at ``price``."""
        if price < 0:
            c, price = nt.invert(c, self._nsq), -price
        if price.bit_length() > self._exp_bits:
            raise TariffRejected(f"price {price} exceeds the plan's {self._exp_bits}-bit bound")
        if price == 0:
            return
        if realtime:
            if self._streaming is None:
                self._streaming = StreamingMultiExp(self._nsq, self._exp_bits, STREAM_WINDOW)
            self._streaming.add(c, price)
        else:
            self._grouped.add(c, price)

    def add_record(self, c: int, plan: Plan, kind: str, price: int) -> None:
        """Fold in a record's ciphertext value at its price (real-time energy streams, the rest groups)."""
        self.add(c, price, realtime=kind == ENERGY and plan.tariff.kind == "realtime")

    def bill(self, fixed_charge: int) -> EncryptedNumber:
        """E(energy charge + ``fixed_charge``): the statement's E(bill) (deterministic)."""
        return EncryptedNumber(self.pk, self.value()) + int(fixed_charge)

    def value(self) -> int:
        """E(energy charge) as a residue mod n^2 (deterministic: no re-randomisation)."""
        v = int(self._grouped.result())
        if self._streaming is not None:
            v = v * int(self._streaming.result()) % self._nsq
        return v

    def cells(self) -> dict[str, int]:
        out = {f"g{k}": int(v) for k, v in self._grouped.state().items()}
        if self._streaming is not None:
            out.update({f"s{i}": int(v) for i, v in enumerate(self._streaming.state())})
        return out


@message("bill.receipt")
@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The head-end's signed acknowledgement of one accepted record.

    ``record_digest`` is SHA-256 of the record's canonical bytes; ``seq`` and
    ``chain`` place it in the log.  A meter (or household) holding receipts
    can prove the head-end accepted a record it later omits from a bill.
    """

    meter_id: str
    interval: int
    kind: str
    event_id: str
    record_digest: bytes
    seq: int
    chain: bytes
    signature: bytes

    def signed_payload(self) -> bytes:
        return canonical(self.meter_id, self.interval, self.kind, self.event_id, self.record_digest, self.seq, self.chain)

    def verify(self, headend_key: VerifyKey) -> None:
        headend_key.verify(RECEIPT_CONTEXT, self.signed_payload(), self.signature)


def sign_receipt(signing_key: SigningKey, record: ReadingRecord, seq: int, chain: bytes) -> Receipt:
    """The head-end's receipt for ``record``, logged at ``seq`` with ``chain``.  Deterministic
    (Ed25519): the same logged record always gets the same receipt, so a head-end may send it
    again when a meter resends a record whose receipt was lost."""
    rd = hashlib.sha256(record_bytes(record)).digest()
    payload = canonical(record.meter_id, record.interval, record.kind, record.event_id, rd, seq, chain)
    return Receipt(meter_id=record.meter_id, interval=record.interval, kind=record.kind,
                   event_id=record.event_id, record_digest=rd, seq=seq, chain=chain,
                   signature=signing_key.sign(RECEIPT_CONTEXT, payload))


@dataclass(slots=True)
class _Meter:
    reg: Registration
    verify_key: VerifyKey
    pk: PaillierPublicKey
    plan: Plan

    def period_of(self, interval: int) -> int:
        return period_of(interval, self.reg.period_start, self.reg.period_intervals, self.plan.interval_seconds)

    def bounds(self, period: int) -> tuple[int, int]:
        return period_bounds(period, self.reg.period_start, self.reg.period_intervals, self.plan.interval_seconds)


class BillingLedger:
    """The head-end's billing state machine (sans-IO; persistence through a :class:`BillingStore`).

    ``plans`` maps plan id -> :class:`~privmeter.grid.plans.Plan`, so a ledger
    reopened on a persistent store finds its meters' plans again (their
    digests must match what was registered, else :class:`~privmeter.errors.StoreError`).
    """

    def __init__(
        self,
        signing_key: SigningKey,
        plans: Mapping[str, Plan] | Iterable[Plan],
        *,
        store: BillingStore | None = None,
        window_back: int = DEFAULT_WINDOW_BACK,
        window_ahead: int = DEFAULT_WINDOW_AHEAD,
        min_key_bits: int = MIN_KEY_BITS,
    ) -> None:
        self.signing_key = signing_key
        self.plans: dict[str, Plan] = (
            dict(plans) if isinstance(plans, Mapping) else {p.plan_id: p for p in plans}
        )
        self.store: BillingStore = store if store is not None else MemoryBillingStore()
        self.window_back = window_back
        self.window_ahead = window_ahead
        self.min_key_bits = min_key_bits
        self._meters: dict[str, _Meter] = {}
        self.feed: PriceFeed | None = None
        for text in self.store.feeds():
            f = PriceFeed.from_json(text)
            self.feed = f if self.feed is None else self.feed.merge(f)

    # -- registration -------------------------------------------------------------

    def register(
        self,
        meter_id: str,
        meter_verify_key: VerifyKey,
        household_pk: PaillierPublicKey,
        plan: Plan,
        *,
        wellformed_proof: Sequence[int],
        period_start: int = 0,
        period_intervals: int = DEFAULT_PERIOD_INTERVALS,
    ) -> None:
        """Register a meter, its household's key and plan, and the billing period layout
        (``period_intervals``: a fixed length, or :data:`~privmeter.protocol.periods.MONTHLY`).

        The household key must pass :func:`check_household_key` (h_s derived
        from n, ``wellformed_proof`` verifies, the plan's bills fit the key).
        """
        check_id(meter_id, "meter_id")
        check_layout(period_start, period_intervals, plan.interval_seconds)
        longest = period_intervals or 31 * 86400 // plan.interval_seconds  # MONTHLY: at most 31 days
        check_household_key(household_pk, wellformed_proof, min_bits=self.min_key_bits, plan=plan,
                            period_intervals=longest)
        if plan.plan_id not in self.plans:
            self.plans[plan.plan_id] = plan
        reg = Registration(
            meter_id=meter_id,
            verify_key=meter_verify_key.raw,
            paillier_public_key=household_pk.to_json(),
            plan_id=plan.plan_id,
            plan_digest=plan.digest(),
            period_start=period_start,
            period_intervals=period_intervals,
        )
        self.store.put_meter(reg)
        self._meters[meter_id] = _Meter(reg, meter_verify_key, household_pk, plan)

    def plan_of(self, meter_id: str) -> Plan:
        """The plan a registered meter is billed on (:class:`~privmeter.errors.UnknownParty` if none)."""
        return self._meter(meter_id).plan

    def _meter(self, meter_id: str) -> _Meter:
        m = self._meters.get(meter_id)
        if m is not None:
            return m
        reg = self.store.get_meter(meter_id)
        if reg is None:
            raise UnknownParty("record from an unregistered meter", meter_id=meter_id)
        plan = self.plans.get(reg.plan_id)
        if plan is None or plan.digest() != reg.plan_digest:
            raise StoreError(f"plan {reg.plan_id!r} of meter {meter_id!r} is not loaded or changed")
        pk = PaillierPublicKey.from_json(reg.paillier_public_key, min_bits=self.min_key_bits)
        m = _Meter(reg, VerifyKey(reg.verify_key), pk, plan)
        self._meters[meter_id] = m
        return m

    # -- records --------------------------------------------------------------------

    def receive(self, record: ReadingRecord, *, current_interval: int) -> Receipt:
        """Check, accumulate and log one record; see the module docstring for the checks."""
        m = self._meter(record.meter_id)
        ctx = {"meter_id": record.meter_id, "interval": record.interval}
        if record.key_id != m.pk.key_id:
            raise KeyMismatch("record is not under the registered household key", **ctx)
        verify_record(record, m.verify_key)
        if not current_interval - self.window_back <= record.interval <= current_interval + self.window_ahead:
            raise StaleMessage(
                f"interval outside [{current_interval - self.window_back}, "
                f"{current_interval + self.window_ahead}]",
                **ctx,
            )
        if record.interval < m.reg.period_start:
            raise StaleMessage("interval before the first billing period", **ctx)
        period = m.period_of(record.interval)
        if self.store.get_statement(record.meter_id, period) is not None:
            raise StaleMessage(f"billing period {period} is already settled", **ctx)
        data = record_bytes(record)
        prior = self.store.find_record(*record.slot)
        if prior is not None:
            if prior == data:
                raise ReplayedMessage("record already received", **ctx)
            raise DuplicateReading(f"a different {record.kind!r} record for this interval is already billed", **ctx)
        c = m.pk.ciphertext_from_bytes(record.ciphertext).value  # InvalidCiphertext
        count, cells = self.store.get_account(record.meter_id, period) or (0, {})
        acc = BillAccumulator(m.pk, price_bits(m.plan), _acc_cells(cells))
        before = acc.cells()
        changed: dict[str, int] = {}
        try:
            price = record_price(m.plan, record.kind, record.interval, self.feed)
        except TariffError:
            if m.plan.tariff.kind != "realtime":
                raise
            if sum(1 for k in cells if k.startswith("p")) >= MAX_PENDING:
                raise UnexpectedMessage(
                    f"{MAX_PENDING} records already await real-time prices; resend later", **ctx
                ) from None
            changed[_pending_cell(record)] = c
        else:
            acc.add_record(c, m.plan, record.kind, price)
            changed.update(_diff(before, acc.cells()))
        seq, chain = self.store.commit_record(
            meter_id=record.meter_id,
            interval=record.interval,
            kind=record.kind,
            event_id=record.event_id,
            record=data,
            period=period,
            count=count + 1,
            changed=changed,
            removed=(),
        )
        return sign_receipt(self.signing_key, record, seq, chain)

    # -- real-time prices -------------------------------------------------------------

    def publish_feed(self, feed: PriceFeed) -> int:
        """Merge a newly published (signed) feed and fold in pending records; returns how many.

        The feed must verify against every registered plan's ``feed_key`` that
        names this feed; a conflicting price for an interval raises
        :class:`~privmeter.errors.TariffError` (equivocation) and changes nothing.
        """
        users = [
            p for p in self.plans.values() if p.tariff.kind == "realtime" and p.tariff.feed_id == feed.feed_id
        ]
        if not users:
            raise TariffError(f"no registered plan bills with feed {feed.feed_id!r}", feed_id=feed.feed_id)
        for plan in users:
            vk = plan.tariff.verify_key
            assert vk is not None
            feed.verify(vk)  # InvalidSignature
        merged = feed if self.feed is None else self.feed.merge(feed)
        self.store.put_feed(feed.digest(), feed.to_json())
        self.feed = merged
        folded = 0
        for meter_id, period in self.store.open_accounts():
            count, cells = self.store.get_account(meter_id, period) or (0, {})
            pend = {k: v for k, v in cells.items() if k.startswith("p")}
            if not pend:
                continue
            m = self._meter(meter_id)
            acc = BillAccumulator(m.pk, price_bits(m.plan), _acc_cells(cells))
            before = acc.cells()
            removed = []
            for name, c in sorted(pend.items()):
                interval, kind = _parse_pending(name)
                if kind == ENERGY and interval not in merged:
                    continue
                acc.add_record(c, m.plan, kind, record_price(m.plan, kind, interval, merged))
                removed.append(name)
            if removed:
                self.store.commit_account(meter_id, period, count, _diff(before, acc.cells()), removed)
                folded += len(removed)
        return folded

    # -- statements -------------------------------------------------------------------

    def period_bounds(self, meter_id: str, period: int) -> tuple[int, int]:
        """``[start, end)`` intervals of billing period ``period`` of a meter."""
        return self._meter(meter_id).bounds(period)

    def statement(self, meter_id: str, period: int, *, now: int) -> Statement:
        """Issue (once; later calls return the same) the signed statement of a period.

        Refused with :class:`~privmeter.errors.LocalProtocolError` while any
        record of the period still awaits its real-time price.
        """
        from privmeter.protocol.settlement import Statement, log_digest, sign_statement

        stored = self.store.get_statement(meter_id, period)
        if stored is not None:
            st: Statement = decode(stored, expect=Statement)
            return st
        m = self._meter(meter_id)
        start, end = m.bounds(period)
        count, cells = self.store.get_account(meter_id, period) or (0, {})
        if any(k.startswith("p") for k in cells):
            raise LocalProtocolError("records of this period still await real-time prices", meter_id=meter_id)
        records = self.store.records(meter_id, start, end)
        if len(records) != count:
            raise StoreError(f"account counts {count} records, log holds {len(records)}", meter_id=meter_id)
        acc = BillAccumulator(m.pk, price_bits(m.plan), _acc_cells(cells))
        fixed = int(m.plan.fixed_charge(range(start, end)))
        bill_c = acc.bill(fixed)
        feed_digest = b""
        if m.plan.tariff.kind == "realtime":
            if self.feed is None:
                raise LocalProtocolError("no price feed published for a real-time plan")
            try:
                feed_digest = self.feed.subset(range(start, end)).digest()
            except TariffError as exc:
                raise LocalProtocolError(f"price feed incomplete for the period: {exc}") from None
        st = sign_statement(
            self.signing_key,
            meter_id=meter_id,
            key_id=m.pk.key_id,
            plan_id=m.plan.plan_id,
            tariff_digest=m.plan.tariff.digest(),
            feed_digest=feed_digest,
            start=start,
            end=end,
            record_count=count,
            log_digest=log_digest(meter_id, start, end, records),
            bill_ciphertext=bill_c.to_bytes(),
            fixed_charge=fixed,
            issued_at=now,
        )
        self.store.put_statement(meter_id, period, encode(st))
        return st


def _acc_cells(cells: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in cells.items() if not k.startswith("p")}


def _diff(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in after.items() if before.get(k) != v}


def _pending_cell(record: ReadingRecord) -> str:
    return f"p{record.interval}:{record.kind}:{record.event_id}"


def _parse_pending(name: str) -> tuple[int, str]:
    interval, kind, _ = name[1:].split(":", 2)
    if kind not in KINDS:
        raise PlanError(f"corrupt pending cell {name!r}")
    return int(interval), kind
