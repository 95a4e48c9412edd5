"""The meter agent: reads its load source, masks, encrypts, signs, answers comparisons.

What it is for: one :class:`MeterAgent` is one smart meter (a fleet process
runs many).  It is message-driven and sans-IO: :meth:`MeterAgent.handle`
takes a message from the head-end and returns the messages to send back.

* ``sys.epoch`` -> a fresh :class:`~privmeter.protocol.aggregation.AggregationMeter`
  and its signed ``agg.advert``; ``agg.bundle`` -> epoch secrets;
* ``agg.start.v2`` for interval t -> the billing record(s) of t (reading
  encrypted under the household's Paillier key, meter-signed), the
  demand-response records of t if an event covers it, any record not yet
  acknowledged, and the masked reading of t (``agg.input.v2``);
* ``bill.receipt`` -> verified (head-end key) and the record forgotten;
* ``dr.event`` / ``dr.echoes`` / ``dr.query`` / ``dr.directive`` -> the
  :class:`~privmeter.protocol.demand.MeterDemandAgent` (budget enforced by
  the meter); a directive changes the household's future load
  (:func:`~privmeter.grid.synthetic.curtailment.apply_directive`).

The meter keeps, for its household (the "local port"), the readings and the
demand-response amounts it reported: :attr:`MeterAgent.local_readings`,
:attr:`MeterAgent.local_adjustments`.

Encryption cost: each meter holds only its own household key, so it keeps a
small Lim-Lee comb table for the DJN base (``rows=8, tables=2``: 512
residues, 384 KiB at 3072 bits, ~2.5 ms per encryption) instead of the
library's 12.6 MB table: a fleet of 200 meters fits in ~80 MB.  The
randomiser is the same DJN ``h_s**a`` with ``a`` of ``ceil(k/2)`` bits, so
the security assumption is the library's (see :mod:`privmeter.crypto.paillier`).

Security assumption: the meter is the trusted, tamper-resistant sensor.
Guarantee: every reading leaves the meter only encrypted (billing) or
masked (aggregation); a record is resent until a valid head-end receipt for
it arrives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privmeter.crypto import numtheory as nt
from privmeter.crypto.elgamal import Group
from privmeter.crypto.keyagreement import AgreementKey, sign_advert, verify_advert
from privmeter.crypto.paillier import EncryptedNumber, PaillierPublicKey
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import LocalProtocolError, UnexpectedMessage
from privmeter.grid.devices.resample import interval_energy_wh
from privmeter.grid.devices.source import LoadSource
from privmeter.grid.synthetic.curtailment import apply_directive
from privmeter.grid.tariff.plans import Plan
from privmeter.parties.messages import EpochRequest, FeedPublished, Tick
from privmeter.parties.meter_state import MeterLedgerStore, attach
from privmeter.protocol.aggregation import AggregationMeter
from privmeter.protocol.aggregation_messages import HEADEND_ID, IntervalStart, KeyAdvert, KeyBundle
from privmeter.protocol.demand import MeterDemandAgent
from privmeter.protocol.demand_budget import ComparisonBudget
from privmeter.protocol.demand_messages import (
    ComparisonQuery,
    DemandEvent,
    Directive,
    EchoBundle,
    LoadInstruction,
)
from privmeter.protocol.demand_settlement import event_amounts
from privmeter.protocol.membership import MembershipPolicy
from privmeter.protocol.records import (
    DR_EXCESS,
    DR_REBATE,
    ENERGY,
    ReadingRecord,
    Receipt,
    make_record,
    record_bytes,
)
from privmeter.protocol.ring import RingMeter, RingStart, RingToken

__all__ = ["MeterAgent", "MeterEncryptor", "MeterLoad", "SourceReadings"]

log = logging.getLogger(__name__)

COMB_ROWS = 8
COMB_TABLES = 2
MAX_UNACKED = 4 * 96  # records kept for resending (a day of 15-minute readings, plus DR records)


class MeterEncryptor:
    """Paillier encryption under one household key with a small DJN comb table
    (a fleet process holds many keys; see ``PaillierPublicKey.size_djn_table``)."""

    __slots__ = ("pk",)

    def __init__(self, pk: PaillierPublicKey) -> None:
        self.pk = pk
        pk.size_djn_table(COMB_ROWS, COMB_TABLES)

    def encrypt(self, m: int, rng: nt.RandomSource = nt.SYSTEM_RNG) -> EncryptedNumber:
        return self.pk.encrypt(m, rng=rng)


class SourceReadings(Mapping[int, int | None]):
    """A :class:`~privmeter.grid.devices.source.LoadSource`'s interval energies, as ``MeterLoad.fixed``.

    A daemon thread pumps ``source.readings()`` into a table.  Looking an
    interval up waits (up to ``wait_s``) until the source has reported that
    interval or has ended: a live meter closes an interval a few seconds
    after its end.  An interval the source reported missing, never reached
    before ending, or did not report within ``wait_s`` is ``None``: the
    meter sends no reading for it (dropped by aggregation, nothing billed).
    A source that fails is logged and counts as ended.
    """

    def __init__(self, source: LoadSource, *, wait_s: float = 120.0) -> None:
        self.source = source
        self.interval_seconds = int(source.interval_seconds)
        self.wait_s = wait_s
        self.error: Exception | None = None
        self._values: dict[int, int | None] = {}
        self._high = -1
        self._ended = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, name="privmeter-source", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for r in self.source.readings():
                with self._cond:
                    self._values[r.interval] = r.energy_wh
                    self._high = max(self._high, r.interval)
                    self._cond.notify_all()
        except Exception as exc:  # a broken source ends the feed; later intervals are missing
            log.warning("load source failed: %s: %s", type(exc).__name__, exc)
            self.error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def wait_for(self, interval: int, timeout: float | None = None) -> bool:
        """Wait until ``interval`` is reported or the source ended; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._ended or self._high >= interval,
                self.wait_s if timeout is None else timeout,
            )

    @property
    def ended(self) -> bool:
        return self._ended

    def get(self, interval: int, default: int | None = None) -> int | None:  # type: ignore[override]
        self.wait_for(interval)
        with self._cond:
            v = self._values.get(interval)
        return default if v is None else v

    def __getitem__(self, interval: int) -> int | None:
        self.wait_for(interval)
        with self._cond:
            return self._values[interval]

    def __iter__(self) -> Iterator[int]:
        with self._cond:
            return iter(sorted(self._values))

    def __len__(self) -> int:
        with self._cond:
            return len(self._values)

    def close(self, timeout: float = 5.0) -> None:
        """Close the source (if it can be closed) and wait briefly for the pump to stop."""
        closer = getattr(self.source, "close", None)
        if callable(closer):
            closer()
        self._thread.join(timeout)


@dataclass(slots=True)
class MeterLoad:
    """The household's load as the meter sees it.

    Either minute-resolution net power (simulated households: directives
    reshape the future minutes) or fixed interval readings (real data such as
    LCL, or a live :class:`SourceReadings` from a real meter: directives are
    recorded but cannot change what the meter measures).  A ``None`` reading
    is a missing interval.
    """

    interval_seconds: int
    start_unix: int = 0
    minute_w: npt.NDArray[np.int64] | None = None
    deferrable_w: npt.NDArray[np.int64] | None = None
    fixed: Mapping[int, int | None] | None = None
    _energy: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.minute_w is not None:
            self.minute_w = np.array(self.minute_w, dtype=np.int64)
            self.deferrable_w = (
                np.zeros_like(self.minute_w)
                if self.deferrable_w is None
                else np.array(self.deferrable_w, dtype=np.int64)
            )
            self._recompute()

    def _recompute(self) -> None:
        if self.minute_w is None:
            raise LocalProtocolError("the meter has no minute profile")
        e = interval_energy_wh(self.minute_w, self.interval_seconds)
        first = self.start_unix // self.interval_seconds
        self._energy = {first + i: int(v) for i, v in enumerate(e.tolist())}

    @property
    def first_interval(self) -> int:
        if self.fixed is not None and not isinstance(self.fixed, SourceReadings):
            return min(self.fixed) if self.fixed else 0
        return self.start_unix // self.interval_seconds

    def energy_wh(self, interval: int) -> int | None:
        if self.fixed is not None:
            return self.fixed.get(interval)
        return self._energy.get(interval)

    def apply(self, ins: LoadInstruction) -> None:
        """Carry out a directive from its start interval on (future minutes only)."""
        if self.minute_w is None or self.deferrable_w is None:
            return
        start_minute = (ins.start_interval * self.interval_seconds - self.start_unix) // 60
        if start_minute < 0 or start_minute >= len(self.minute_w):
            return
        dur = min(ins.duration_minutes, len(self.minute_w) - start_minute)
        res = apply_directive(
            self.minute_w,
            start_minute=start_minute,
            duration_minutes=dur,
            action=ins.action,
            deferrable_w=self.deferrable_w,
            limit_w=ins.limit_w,
        )
        self.minute_w = res.minute_w
        self.deferrable_w = res.deferrable_w
        self._recompute()


class MeterAgent:
    """One smart meter (see the module docstring)."""

    def __init__(
        self,
        meter_id: str,
        signing_key: SigningKey,
        household_pk: PaillierPublicKey,
        headend_key: VerifyKey,
        plan: Plan,
        load: MeterLoad,
        *,
        group: str,
        group_keys: Mapping[str, VerifyKey],
        comparison_group: Group | None = None,
        min_survivors: int = 5,
        encryptor: MeterEncryptor | None = None,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
        mode: str = "star",
        ledger: MeterLedgerStore | None = None,
    ) -> None:
        """``ledger``: where the meter keeps its privacy ledgers (roster record,
        comparison budget) across restarts (:mod:`privmeter.parties.meter_state`);
        None keeps them in memory only.  ``comparison_group``: the group of the
        meter's own one-use comparison keys; None runs no demand management."""
        if mode not in ("star", "ring"):
            raise ValueError(f"mode must be 'star' or 'ring', got {mode!r}")
        self.mode = mode
        self.meter_id = meter_id
        self.signing_key = signing_key
        self.pk = household_pk
        self.headend_key = headend_key
        self.plan = plan
        self.load = load
        self.group = group
        self.group_keys = dict(group_keys)
        self.min_survivors = min_survivors
        self.rng = rng
        self.enc = encryptor if encryptor is not None else MeterEncryptor(household_pk)
        self.agg: AggregationMeter | None = None
        # the plan's roster rules (differencing defence), one record for all epochs
        self.membership = MembershipPolicy(
            meter_id, plan.privacy, interval_seconds=load.interval_seconds
        )
        self.ring: RingMeter | None = None
        self._ring_key: tuple[AgreementKey, KeyAdvert] | None = None
        self.comparison_group = comparison_group
        # the comparison budget outlives the demand agent: it is rebuilt for every roster
        # (set_roster), the ledger of what was revealed is one for the meter's life
        self.budget = ComparisonBudget.from_plan(plan) if comparison_group is not None else None
        self.demand: MeterDemandAgent | None = None
        self.demand_error: str | None = None  # why no demand agent runs (a roster too small, ...)
        self.demand_enabled = False  # whether the head-end runs demand management (from the roster)
        if ledger is not None:
            attach(ledger, meter_id, self.membership, self.budget)
        self._build_demand(enabled=True)
        self.interval_seconds = load.interval_seconds
        self.now = 0
        self.unacked: dict[tuple[str, int, str, str], ReadingRecord] = {}
        self.local_readings: dict[int, int] = {}
        self.local_adjustments: dict[tuple[str, str, int], int] = {}
        self.directives: list[LoadInstruction] = []
        self.feeds: list[str] = []
        self.bytes_out = 0
        self._dr_windows: list[tuple[str, int, int]] = []  # (event id, first, last interval)
        self._next: int | None = load.first_interval  # first interval not yet reported

    def _build_demand(self, *, enabled: bool) -> None:
        """(Re)build the demand agent for the current roster, around the one budget."""
        self.demand = None
        self.demand_error = None
        self.demand_enabled = enabled
        if self.comparison_group is None or self.budget is None:
            self.demand_error = "no comparison group"
            return
        if not enabled:
            self.demand_error = "demand management is off"
            return
        try:
            self.demand = MeterDemandAgent.from_plan(
                self.plan,
                self.meter_id,
                self.group,
                self.signing_key,
                self.headend_key,
                roster=self.group_keys,
                budget=self.budget,
                key_group=self.comparison_group.name,
                allow_insecure_group=self.comparison_group.insecure,
            )
        except LocalProtocolError as exc:  # e.g. a roster below the plan's group size
            self.demand_error = str(exc)

    def set_roster(self, group_keys: Mapping[str, VerifyKey], *, demand: bool = True) -> None:
        """A new signed roster of the meter's group (checked by the caller): the keys it
        aggregates with and the members whose echoes certify an event.  The demand agent
        is rebuilt on it (``demand``: whether the head-end runs demand management); the
        comparison budget and its ledger carry over, so a roster change gives no new budget."""
        keys = dict(group_keys)
        same = keys == self.group_keys and demand == self.demand_enabled
        self.group_keys = keys
        if same:
            return
        old = self.demand
        self._build_demand(enabled=demand)
        if old is not None and self.demand is not None:  # events in flight keep their state
            self.demand.events = old.events
            self.demand._accepted_per_interval = old._accepted_per_interval

    def restore(
        self,
        readings: Mapping[int, int],
        adjustments: Mapping[tuple[str, str, int], int],
        unacked: Iterable[ReadingRecord],
        directives: Iterable[LoadInstruction] = (),
    ) -> None:
        """After a restart: what this meter reported before (its journal, see
        :mod:`privmeter.parties.meter_state`); it carries on after the last reading,
        inside the windows of the directives it received (their demand-response records)."""
        self.local_readings.update(readings)
        self.local_adjustments.update(adjustments)
        for rec in unacked:
            self.unacked[rec.slot] = rec
        if readings:
            self._next = max(self._next or 0, max(readings) + 1)
        for ins in directives:
            if all(d.event_id != ins.event_id for d in self.directives):
                self.directives.append(ins)
                self._dr_windows.append(self._window(ins))

    def _window(self, ins: LoadInstruction) -> tuple[str, int, int]:
        per = max(1, ins.duration_minutes * 60 // self.interval_seconds)
        return ins.event_id, ins.start_interval, ins.start_interval + per - 1

    # -- billing ---------------------------------------------------------------------------
    def _record(
        self, interval: int, wh: int, kind: str = ENERGY, event_id: str = ""
    ) -> ReadingRecord:
        ct = self.enc.encrypt(wh, self.rng)
        rec = make_record(
            self.signing_key, self.meter_id, interval, self.pk, ct, kind=kind, event_id=event_id
        )
        if len(self.unacked) < MAX_UNACKED:
            self.unacked[rec.slot] = rec
        return rec

    def records_upto(self, interval: int, *, catch_up: int = 96) -> list[ReadingRecord]:
        """Records of every interval not yet reported up to ``interval`` (after an outage too)."""
        start = interval if self._next is None else max(self._next, interval - catch_up)
        out: list[ReadingRecord] = []
        for t in range(start, interval + 1):
            out.extend(self.records_for(t))
        self._next = max(self._next or 0, interval + 1)
        return out

    def records_for(self, interval: int) -> list[ReadingRecord]:
        """Billing records of ``interval`` (energy, plus DR records inside an event window)."""
        wh = self.load.energy_wh(interval)
        if wh is None or interval in self.local_readings:
            return []
        self.local_readings[interval] = wh
        out = [self._record(interval, wh)]
        dr = self.plan.demand_response
        for event_id, first, last in self._dr_windows:
            if dr is not None and first <= interval <= last:
                ex, rb = event_amounts(wh, dr.cap_wh(self.interval_seconds))
                for kind, amount in ((DR_EXCESS, ex), (DR_REBATE, rb)):
                    out.append(self._record(interval, amount, kind, event_id))
                    self.local_adjustments[(kind, event_id, interval)] = amount
        return out

    def resend(
        self, *, exclude: set[tuple[str, int, str, str]] | None = None
    ) -> list[ReadingRecord]:
        return [r for k, r in sorted(self.unacked.items()) if not exclude or k not in exclude]

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, msg: Any, *, now: int | None = None) -> list[Any]:
        """Handle one head-end message; returns the messages to send back.

        ``now`` is the meter's own clock (unix seconds), passed in by its
        caller; it is never taken from a message (a ``sys.tick``'s time is
        ignored), so a head-end cannot move the meter's time.
        """
        if now is not None:
            self.now = now
        if isinstance(msg, IntervalStart):
            t = msg.announcement.interval
            if self.agg is None:
                raise UnexpectedMessage("interval start before any epoch")
            fresh = self.records_upto(t)
            old = self.resend(exclude={r.slot for r in fresh})
            wh = self.load.energy_wh(t)
            masked = self.agg.handle_start(msg, wh)
            return [*old, *fresh, masked]
        if isinstance(msg, Receipt):
            msg.verify(self.headend_key)
            rec = self.unacked.get((msg.meter_id, msg.interval, msg.kind, msg.event_id))
            if rec is not None:
                import hashlib

                if hashlib.sha256(record_bytes(rec)).digest() == msg.record_digest:
                    del self.unacked[rec.slot]
            return []
        if isinstance(msg, RingStart | RingToken):
            return self._ring_round(msg)
        if isinstance(msg, EpochRequest) and self.mode == "ring":
            if msg.group != self.group:
                raise UnexpectedMessage("epoch for another group")
            ak = AgreementKey.generate(self.rng)
            nonce = self.rng.getrandbits(128).to_bytes(16, "big")
            adv = KeyAdvert(
                group=msg.group,
                epoch=msg.epoch,
                party_id=self.meter_id,
                public=ak.public,
                nonce=nonce,
                signature=sign_advert(
                    self.signing_key, msg.group, msg.epoch, self.meter_id, ak.public, nonce
                ),
            )
            self._ring_key = (ak, adv)
            self.ring = None
            return [adv]
        if isinstance(msg, KeyBundle) and self.mode == "ring":
            return self._ring_bundle(msg)
        if isinstance(msg, EpochRequest):
            if msg.group != self.group:
                raise UnexpectedMessage("epoch for another group")
            self.agg = AggregationMeter(
                self.meter_id,
                self.signing_key,
                self.group_keys,
                self.headend_key,
                group=msg.group,
                epoch=msg.epoch,
                min_survivors=self.min_survivors,
                rng=self.rng,
                membership=self.membership,
            )
            return [self.agg.advertise()]
        if isinstance(msg, KeyBundle):
            if self.agg is None:
                raise UnexpectedMessage("bundle before any epoch")
            self.agg.handle_bundle(msg)
            return []
        if isinstance(
            msg, Tick
        ):  # the head-end's "anything unacknowledged?" poll; its time is not ours
            return self.resend()
        if isinstance(msg, FeedPublished):
            self.feeds.append(msg.feed_json)
            return []
        if isinstance(msg, DemandEvent | EchoBundle | ComparisonQuery | Directive):
            return self._demand(msg)
        raise UnexpectedMessage(f"a meter does not take {type(msg).__name__} messages")

    # -- the founding paper's ring ----------------------------------------------------------
    def _ring_bundle(self, bundle: KeyBundle) -> list[Any]:
        """Check every advert in the bundle (meter keys, head-end key) and join the ring."""
        if self._ring_key is None:
            raise UnexpectedMessage("ring bundle before any epoch")
        ak, mine = self._ring_key
        if (bundle.group, bundle.epoch) != (mine.group, mine.epoch) or mine not in bundle.adverts:
            raise UnexpectedMessage("ring bundle for another epoch, or without our advert")
        h = bundle.headend
        verify_advert(
            self.headend_key, h.group, h.epoch, HEADEND_ID, h.public, h.nonce, h.signature
        )
        publics = {}
        for a in bundle.adverts:
            key = self.group_keys.get(a.party_id)
            if key is None:
                raise UnexpectedMessage(f"{a.party_id!r} is not in our group")
            verify_advert(key, a.group, a.epoch, a.party_id, a.public, a.nonce, a.signature)
            publics[a.party_id] = a.public
        roster = sorted(publics)
        if len(roster) < self.min_survivors:
            from privmeter.errors import GroupTooSmall

            raise GroupTooSmall(f"ring of {len(roster)} below the minimum {self.min_survivors}")
        self.ring = RingMeter(
            self.meter_id, roster, ak, publics, group=bundle.group, epoch=bundle.epoch, rng=self.rng
        )
        return []

    def _ring_round(self, msg: RingStart | RingToken) -> list[Any]:
        if self.ring is None:
            raise UnexpectedMessage("ring message before the ring was set up")
        t = msg.round
        fresh = self.records_upto(t)
        old = self.resend(exclude={r.slot for r in fresh})
        wh = self.load.energy_wh(t) or 0
        out = (
            self.ring.handle_start(msg, wh)
            if isinstance(msg, RingStart)
            else self.ring.handle_token(msg, wh)
        )
        return [*old, *fresh, out]

    def _demand(self, msg: Any) -> list[Any]:
        if self.demand is None:
            raise UnexpectedMessage(f"this meter runs no demand management ({self.demand_error})")
        now = self.now
        if isinstance(
            msg, DemandEvent
        ):  # the reading compared: the meter's last, of its own interval
            last = max(self.local_readings) if self.local_readings else None
            reading_w = (
                None if last is None else self.local_readings[last] * 3600 // self.interval_seconds
            )
            offer, echo = self.demand.receive_event(
                msg, reading_interval=last, reading_w=reading_w, now=now, rng=self.rng
            )
            return [offer, echo]
        if isinstance(msg, EchoBundle):
            self.demand.receive_echoes(msg, now=now)
            return []
        if isinstance(msg, ComparisonQuery):
            return [self.demand.receive_query(msg, now=now)]
        ins = self.demand.receive_directive(msg, now=now)
        self.directives.append(ins)
        self._dr_windows.append(self._window(ins))
        self.load.apply(ins)
        return []
