"""The head-end's encrypted billing ledger (sans-IO).

What it is for: every interval the meter sends a
:class:`~privmeter.protocol.records.ReadingRecord` --
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

Accumulation: :class:`~privmeter.protocol.records.BillAccumulator`, the *same*
code the household and the auditor run; the state per household is constant.
Layering: records (:mod:`privmeter.protocol.records`) < settlement
(:mod:`privmeter.protocol.settlement`) < this ledger.

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

States: each household's billing period is ``open`` (taking records) or
``issued`` (its statement signed and stored: no record is taken any more, the
same statement is returned again), moved only along :data:`LEDGER_PERIOD`
(``docs/states.md``); the state is derived from the store (a stored
statement), whose format is unchanged.

Units: energy Wh (signed), prices milli-minor-units per kWh, bill in
micro-minor-units (Wh x price); interval = floor(unix_seconds / interval_seconds).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from privmeter.crypto.paillier import MIN_KEY_BITS, PaillierPublicKey
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    DuplicateReading,
    KeyMismatch,
    LocalProtocolError,
    PlanError,
    ReplayedMessage,
    StaleMessage,
    StoreError,
    TariffError,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.protocol.codec import check_id, decode, encode
from privmeter.protocol.periods import check_layout, period_bounds, period_of
from privmeter.protocol.records import (
    ENERGY,
    KINDS,
    BillAccumulator,
    ReadingRecord,
    Receipt,
    check_household_key,
    price_bits,
    record_bytes,
    record_price,
    sign_receipt,
    verify_record,
)
from privmeter.protocol.settlement import Statement, log_digest, sign_statement
from privmeter.protocol.states import Machine, Refusal, register
from privmeter.store.billing_store import BillingStore, MemoryBillingStore, Registration

__all__ = [
    "DEFAULT_PERIOD_INTERVALS",
    "DEFAULT_WINDOW_AHEAD",
    "DEFAULT_WINDOW_BACK",
    "LEDGER_PERIOD",
    "MAX_PENDING",
    "BillingLedger",
    "LedgerInput",
    "LedgerPeriodState",
]

MAX_PENDING = 4 * 96  # real-time records awaiting their price: four days of 15-minute intervals
DEFAULT_WINDOW_BACK = 96  # accept readings up to a day late (15-minute intervals)
DEFAULT_WINDOW_AHEAD = 1  # and one interval early (clock skew)
DEFAULT_PERIOD_INTERVALS = 31 * 96  # one 31-day month of 15-minute intervals


class LedgerPeriodState(enum.Enum):
    """One household's billing period, as the head-end's ledger sees it."""

    OPEN = "open"  # taking records
    ISSUED = "issued"  # its statement signed and stored: closed to records


class LedgerInput(enum.Enum):
    RECORD = "record"  # a meter-signed ReadingRecord of the period
    STATEMENT = "statement"  # local: the statement issued (again: the same one)


LEDGER_PERIOD = register(
    Machine(
        "billing period (head-end ledger)",
        LedgerPeriodState,
        LedgerInput,
        LedgerPeriodState.OPEN,
        {
            LedgerPeriodState.OPEN: {
                LedgerInput.RECORD: LedgerPeriodState.OPEN,
                LedgerInput.STATEMENT: LedgerPeriodState.ISSUED,
            },
            LedgerPeriodState.ISSUED: {LedgerInput.STATEMENT: LedgerPeriodState.ISSUED},
        },
        default=Refusal(StaleMessage, "billing period already settled"),
    )
)


@dataclass(slots=True)
class _Meter:
    reg: Registration
    verify_key: VerifyKey
    pk: PaillierPublicKey
    plan: Plan

    def period_of(self, interval: int) -> int:
        return period_of(
            interval, self.reg.period_start, self.reg.period_intervals, self.plan.interval_seconds
        )

    def bounds(self, period: int) -> tuple[int, int]:
        return period_bounds(
            period, self.reg.period_start, self.reg.period_intervals, self.plan.interval_seconds
        )


class BillingLedger:
    """The head-end's billing state machine (sans-IO; persistence through a :class:`BillingStore`).

    ``plans`` maps plan id -> :class:`~privmeter.grid.tariff.plans.Plan`, so a ledger
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
        longest = (
            period_intervals or 31 * 86400 // plan.interval_seconds
        )  # MONTHLY: at most 31 days
        check_household_key(
            household_pk,
            wellformed_proof,
            min_bits=self.min_key_bits,
            plan=plan,
            period_intervals=longest,
        )
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
        if (
            not current_interval - self.window_back
            <= record.interval
            <= current_interval + self.window_ahead
        ):
            raise StaleMessage(
                f"interval outside [{current_interval - self.window_back}, "
                f"{current_interval + self.window_ahead}]",
                **ctx,
            )
        if record.interval < m.reg.period_start:
            raise StaleMessage("interval before the first billing period", **ctx)
        period = m.period_of(record.interval)
        LEDGER_PERIOD.next(
            self.period_state(record.meter_id, period), LedgerInput.RECORD, period=period, **ctx
        )
        data = record_bytes(record)
        prior = self.store.find_record(*record.slot)
        if prior is not None:
            if prior == data:
                raise ReplayedMessage("record already received", **ctx)
            raise DuplicateReading(
                f"a different {record.kind!r} record for this interval is already billed", **ctx
            )
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
            p
            for p in self.plans.values()
            if p.tariff.kind == "realtime" and p.tariff.feed_id == feed.feed_id
        ]
        if not users:
            raise TariffError(
                f"no registered plan bills with feed {feed.feed_id!r}", feed_id=feed.feed_id
            )
        for plan in users:
            vk = plan.tariff.verify_key
            if vk is None:
                raise TariffError(
                    f"plan {plan.plan_id!r} bills with feed {feed.feed_id!r} but has no feed key",
                    feed_id=feed.feed_id,
                )
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
                self.store.commit_account(
                    meter_id, period, count, _diff(before, acc.cells()), removed
                )
                folded += len(removed)
        return folded

    # -- statements -------------------------------------------------------------------

    def period_bounds(self, meter_id: str, period: int) -> tuple[int, int]:
        """``[start, end)`` intervals of billing period ``period`` of a meter."""
        return self._meter(meter_id).bounds(period)

    def period_state(self, meter_id: str, period: int) -> LedgerPeriodState:
        """A billing period's state (:data:`LEDGER_PERIOD`): ``issued`` once its statement is stored."""
        stored = self.store.get_statement(meter_id, period) is not None
        return LedgerPeriodState.ISSUED if stored else LedgerPeriodState.OPEN

    def statement(self, meter_id: str, period: int, *, now: int) -> Statement:
        """Issue (once; later calls return the same) the signed statement of a period.

        Refused with :class:`~privmeter.errors.LocalProtocolError` while any
        record of the period still awaits its real-time price.
        """
        stored = self.store.get_statement(meter_id, period)
        state = LedgerPeriodState.OPEN if stored is None else LedgerPeriodState.ISSUED
        LEDGER_PERIOD.next(state, LedgerInput.STATEMENT, meter_id=meter_id, period=period)
        if stored is not None:
            st: Statement = decode(stored, expect=Statement)
            return st
        m = self._meter(meter_id)
        start, end = m.bounds(period)
        count, cells = self.store.get_account(meter_id, period) or (0, {})
        if any(k.startswith("p") for k in cells):
            raise LocalProtocolError(
                "records of this period still await real-time prices", meter_id=meter_id
            )
        records = self.store.records(meter_id, start, end)
        if len(records) != count:
            raise StoreError(
                f"account counts {count} records, log holds {len(records)}", meter_id=meter_id
            )
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
