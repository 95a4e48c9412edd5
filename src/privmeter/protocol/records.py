"""The billing record vocabulary every party shares (sans-IO).

What it is for: every interval the meter sends a :class:`ReadingRecord` --
the household's reading encrypted under the household's Paillier key, signed
by the meter (:func:`make_record`).  The head-end's ledger
(:class:`~privmeter.protocol.billing.BillingLedger`) checks each record and
answers with a signed :class:`Receipt`; settlement
(:mod:`privmeter.protocol.settlement`) and the auditor rebuild the encrypted
bill from the same records with the same :class:`BillAccumulator`.  This module
is the bottom of the billing stack: records < settlement < ledger.

Record kinds (:data:`KINDS`): ``energy`` (Wh imported (+) / exported (-) at the
tariff's price), ``dr_excess`` (Wh above a demand-response event's cap, at the
plan's penalty price) and ``dr_rebate`` (Wh of curtailment credited, at minus
the plan's rebate price); at most one record of each kind per interval and
event (:attr:`ReadingRecord.slot`).

Accumulation (:class:`BillAccumulator`, the *same* code the head-end, the
household and the auditor run): a record with ciphertext ``c`` and price ``p``
contributes ``c**p``.  Flat and time-of-use energy and the demand-response
kinds go into a :class:`~privmeter.crypto.multiexp.GroupedProduct` keyed by
price (one multiplication per record, one exponentiation per distinct price at
the end); real-time energy goes into a
:class:`~privmeter.crypto.multiexp.StreamingMultiExp` (Pippenger buckets: one
multiplication per window per record).  Either way the state per household is
constant: it does not grow with the number of records.  A negative price (a
demand-response rebate) is applied as ``(c^-1)**|p|``.

Registration (:func:`check_household_key`): the check every party runs on a
household key before relying on it.

Security assumption: Ed25519 (meter signatures) is unforgeable and the meter
is the trusted sensor.  Guarantee: a record verifies only under its meter's key
over (meter id, interval, kind, event, key id, ciphertext) (:func:`canonical`
encodes that payload unambiguously).

Units: energy Wh (signed), prices milli-minor-units per kWh, bill in
micro-minor-units (Wh x price); interval = floor(unix_seconds / interval_seconds).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from privmeter.crypto import numtheory as nt
from privmeter.crypto.multiexp import GroupedProduct, StreamingMultiExp
from privmeter.crypto.paillier import MIN_KEY_BITS, EncryptedNumber, PaillierPublicKey
from privmeter.crypto.paillier_proofs import verify_wellformed
from privmeter.crypto.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from privmeter.errors import (
    InvalidArgument,
    InvalidArgumentType,
    InvalidKey,
    KeyMismatch,
    PlaintextOverflow,
    TariffRejected,
    UnexpectedMessage,
    UnprovenKey,
)
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.protocol.codec import check_id, decode, encode, message

__all__ = [
    "DR_EXCESS",
    "DR_REBATE",
    "ENERGY",
    "KINDS",
    "MAX_CIPHERTEXT_BYTES",
    "RECEIPT_CONTEXT",
    "RECORDS_PER_INTERVAL",
    "RECORD_CONTEXT",
    "BillAccumulator",
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
MAX_CIPHERTEXT_BYTES = 1024  # n^2 of an 8192-bit modulus; bounds a hostile record
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
            raise InvalidArgumentType("canonical() takes no bools")
        elif isinstance(p, int):
            out.append(b"i")
            data = p.to_bytes((p.bit_length() + 8) // 8, "big", signed=True)
        else:
            raise InvalidArgumentType(f"canonical() cannot encode {type(p).__name__}")
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
            raise InvalidArgument(f"interval must be in [0, 2**48), got {self.interval!r}")
        if self.kind not in KINDS:
            raise InvalidArgument(f"kind must be one of {KINDS}, got {self.kind!r:.40}")
        if self.kind == ENERGY:
            if self.event_id:
                raise InvalidArgument("an energy record carries no event_id")
        else:
            check_id(self.event_id, "event_id")
        if len(self.key_id) != 16:
            raise InvalidArgument(f"key_id must be 16 bytes, got {len(self.key_id)}")
        if not 0 < len(self.ciphertext) <= MAX_CIPHERTEXT_BYTES:
            raise InvalidArgument(
                f"ciphertext must be 1-{MAX_CIPHERTEXT_BYTES} bytes, got {len(self.ciphertext)}"
            )
        if len(self.signature) != SIGNATURE_BYTES:
            raise InvalidArgument(
                f"signature must be {SIGNATURE_BYTES} bytes, got {len(self.signature)}"
            )

    @property
    def slot(self) -> tuple[str, int, str, str]:
        """What may be billed only once: (meter, interval, kind, event)."""
        return (self.meter_id, self.interval, self.kind, self.event_id)

    def signed_payload(self) -> bytes:
        return canonical(
            self.meter_id, self.interval, self.kind, self.event_id, self.key_id, self.ciphertext
        )


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
        raise UnexpectedMessage(
            f"plan {plan.plan_id!r} has no demand response; got a {kind!r} record"
        )
    if kind == DR_EXCESS:
        return int(dr.penalty_price)
    if kind == DR_REBATE:
        return -int(dr.rebate_price)
    raise InvalidArgument(f"unknown record kind {kind!r}")


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
       (:meth:`~privmeter.grid.tariff.plans.Plan.bill_bounds` with
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
        verify_wellformed(pk, roots, min_bits=min_bits)
        if len(_VERIFIED_KEYS) >= 4096:
            _VERIFIED_KEYS.clear()
        _VERIFIED_KEYS.add(memo)
    if plan is not None and period_intervals is not None:
        lo, hi = plan.bill_bounds(
            range(0, period_intervals), RECORDS_PER_INTERVAL * period_intervals
        )
        if 2 * max(-lo, hi) > pk.max_int:
            raise PlaintextOverflow(
                f"a {pk.bits}-bit key cannot hold the largest bill of plan {plan.plan_id!r} "
                f"over {period_intervals} intervals",
                key_id=pk.key_id.hex(),
            )


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

    def __init__(
        self, pk: PaillierPublicKey, exp_bits: int, cells: Mapping[str, int] | None = None
    ) -> None:
        self.pk = pk
        self._nsq = pk.nsquare
        self._exp_bits = max(int(exp_bits), 1)
        cells = cells or {}
        grouped = {int(k[1:]): int(v) for k, v in cells.items() if k.startswith("g")}
        stream = sorted(((int(k[1:]), int(v)) for k, v in cells.items() if k.startswith("s")))
        self._grouped = (
            GroupedProduct.from_state(self._nsq, grouped) if grouped else GroupedProduct(self._nsq)
        )
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
        return canonical(
            self.meter_id,
            self.interval,
            self.kind,
            self.event_id,
            self.record_digest,
            self.seq,
            self.chain,
        )

    def verify(self, headend_key: VerifyKey) -> None:
        headend_key.verify(RECEIPT_CONTEXT, self.signed_payload(), self.signature)


def sign_receipt(signing_key: SigningKey, record: ReadingRecord, seq: int, chain: bytes) -> Receipt:
    """The head-end's receipt for ``record``, logged at ``seq`` with ``chain``.  Deterministic
    (Ed25519): the same logged record always gets the same receipt, so a head-end may send it
    again when a meter resends a record whose receipt was lost."""
    rd = hashlib.sha256(record_bytes(record)).digest()
    payload = canonical(
        record.meter_id, record.interval, record.kind, record.event_id, rd, seq, chain
    )
    return Receipt(
        meter_id=record.meter_id,
        interval=record.interval,
        kind=record.kind,
        event_id=record.event_id,
        record_digest=rd,
        seq=seq,
        chain=chain,
        signature=signing_key.sign(RECEIPT_CONTEXT, payload),
    )
