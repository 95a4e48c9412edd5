"""The meter agent: takes its readings, masks, encrypts, signs, answers comparisons.

What it is for: one :class:`MeterAgent` is one smart meter (a fleet process
runs many).  It is message-driven and sans-IO: :meth:`MeterAgent.handle`
takes a message from the head-end and the meter's time (``now``) and returns
the messages to send back; the readings are pushed in by the meter's service
(:meth:`MeterAgent.reading`, in any order; :meth:`MeterAgent.end_of_readings`
when the source has ended).  The agent never waits, never reads a clock and
holds no thread: waiting for a live source to close an interval, and the
household's physical load, are the service's (:mod:`privmeter.parties.meter_feed`).
A round whose interval has no reading pushed is answered without one (the
meter is dropped from that total, nothing is billed), as for a reading the
source reported missing; a reading pushed after its round is kept but never
reported, as before.  The aggregation role (idle, advertised, running)
follows one table per mode, :data:`METER_AGENT_STAR` and :data:`METER_AGENT_RING`
(:attr:`MeterAgent.state`; docs/states.md).

* ``sys.epoch`` -> a fresh :class:`~privmeter.protocol.aggregation.AggregationMeter`
  and its signed ``agg.advert``; ``agg.bundle`` -> epoch secrets;
* ``agg.start.v2`` for interval t -> the billing record(s) of t (reading
  encrypted under the household's Paillier key, meter-signed), the
  demand-response records of t if an event covers it, any record not yet
  acknowledged, and the masked reading of t (``agg.input.v2``);
* ``bill.receipt`` -> verified (head-end key) and the record forgotten;
* ``dr.event`` / ``dr.echoes`` / ``dr.query`` / ``dr.directive`` -> the
  :class:`~privmeter.protocol.demand.MeterDemandAgent` (budget enforced by
  the meter); a directive is kept (:attr:`MeterAgent.directives`) for the
  household, whose load it changes (the service applies it:
  :class:`~privmeter.parties.meter_feed.MeterFeed`).

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

import enum
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from privmeter.crypto import numtheory as nt
from privmeter.crypto.elgamal import Group
from privmeter.crypto.keyagreement import AgreementKey, sign_advert, verify_advert
from privmeter.crypto.paillier import EncryptedNumber, PaillierPublicKey
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import InvalidArgument, LocalProtocolError, UnexpectedMessage
from privmeter.grid.tariff.plans import Plan
from privmeter.parties.messages import EpochRequest, FeedPublished, Tick
from privmeter.parties.meter_state import MeterLedgerStore, attach
from privmeter.protocol.aggregation import AggregationMeter, EpochCache
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
from privmeter.protocol.states import Machine, Refusal, register

__all__ = [
    "CATCH_UP",
    "METER_AGENT_RING",
    "METER_AGENT_STAR",
    "MeterAgent",
    "MeterAgentState",
    "MeterAgentStep",
    "MeterEncryptor",
]

log = logging.getLogger(__name__)

COMB_ROWS = 8
COMB_TABLES = 2
MAX_UNACKED = 4 * 96  # records kept for resending (a day of 15-minute readings, plus DR records)
CATCH_UP = 96  # intervals a round reports back after an outage (a day of 15-minute readings)


class MeterEncryptor:
    """Paillier encryption under one household key with a small DJN comb table
    (a fleet process holds many keys; see ``PaillierPublicKey.size_djn_table``)."""

    __slots__ = ("pk",)

    def __init__(self, pk: PaillierPublicKey) -> None:
        self.pk = pk
        pk.size_djn_table(COMB_ROWS, COMB_TABLES)

    def encrypt(self, m: int, rng: nt.RandomSource = nt.SYSTEM_RNG) -> EncryptedNumber:
        return self.pk.encrypt(m, rng=rng)


class MeterAgentState(enum.Enum):
    """The meter agent's aggregation role (star: masked aggregation, ring: the paper's ring)."""

    IDLE = "idle"  # no epoch asked for yet
    ADVERTISED = "advertised"  # key advert sent for the current epoch, its bundle not taken
    RUNNING = "running"  # the epoch's bundle taken: rounds answered


class MeterAgentStep(enum.Enum):
    EPOCH = "epoch"  # sys.epoch (EpochRequest): a new epoch, from any state
    BUNDLE = "bundle"  # KeyBundle
    ROUND = "round"  # star: agg.start.v2 (IntervalStart); ring: RingStart / RingToken


_AS, _AT = MeterAgentState, MeterAgentStep
# star: a round before the bundle is taken to the aggregation meter, whose own table
# (protocol.aggregation.AGG_METER) refuses it once the round's billing records are made
METER_AGENT_STAR = register(
    Machine(
        "meter agent (star)",
        MeterAgentState,
        MeterAgentStep,
        _AS.IDLE,
        {
            _AS.IDLE: {_AT.EPOCH: _AS.ADVERTISED},
            _AS.ADVERTISED: {
                _AT.EPOCH: _AS.ADVERTISED,
                _AT.BUNDLE: _AS.RUNNING,
                _AT.ROUND: _AS.ADVERTISED,
            },
            _AS.RUNNING: {_AT.EPOCH: _AS.ADVERTISED, _AT.ROUND: _AS.RUNNING},
        },
        {
            (_AS.IDLE, _AT.BUNDLE): Refusal(UnexpectedMessage, "bundle before any epoch"),
            (_AS.IDLE, _AT.ROUND): Refusal(UnexpectedMessage, "interval start before any epoch"),
            (_AS.RUNNING, _AT.BUNDLE): Refusal(UnexpectedMessage, "the epoch's bundle was taken"),
        },
    )
)
# ring: a second bundle of the epoch rebuilds the ring (as before)
METER_AGENT_RING = register(
    Machine(
        "meter agent (ring)",
        MeterAgentState,
        MeterAgentStep,
        _AS.IDLE,
        {
            _AS.IDLE: {_AT.EPOCH: _AS.ADVERTISED},
            _AS.ADVERTISED: {_AT.EPOCH: _AS.ADVERTISED, _AT.BUNDLE: _AS.RUNNING},
            _AS.RUNNING: {
                _AT.EPOCH: _AS.ADVERTISED,
                _AT.BUNDLE: _AS.RUNNING,
                _AT.ROUND: _AS.RUNNING,
            },
        },
        {
            (_AS.IDLE, _AT.BUNDLE): Refusal(UnexpectedMessage, "ring bundle before any epoch"),
            (_AS.IDLE, _AT.ROUND): Refusal(
                UnexpectedMessage, "ring message before the ring was set up"
            ),
            (_AS.ADVERTISED, _AT.ROUND): Refusal(
                UnexpectedMessage, "ring message before the ring was set up"
            ),
        },
    )
)
# message type -> the role's step, per mode (any other type is not a role step)
_STEPS: dict[str, dict[type, MeterAgentStep]] = {
    "star": {EpochRequest: _AT.EPOCH, KeyBundle: _AT.BUNDLE, IntervalStart: _AT.ROUND},
    "ring": {
        EpochRequest: _AT.EPOCH,
        KeyBundle: _AT.BUNDLE,
        RingStart: _AT.ROUND,
        RingToken: _AT.ROUND,
    },
}


class MeterAgent:
    """One smart meter (see the module docstring)."""

    def __init__(
        self,
        meter_id: str,
        signing_key: SigningKey,
        household_pk: PaillierPublicKey,
        headend_key: VerifyKey,
        plan: Plan,
        interval_seconds: int,
        *,
        first_interval: int | None = None,
        group: str,
        group_keys: Mapping[str, VerifyKey],
        comparison_group: Group | None = None,
        min_survivors: int = 5,
        encryptor: MeterEncryptor | None = None,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
        mode: str = "star",
        ledger: MeterLedgerStore | None = None,
        epochs: EpochCache | None = None,
    ) -> None:
        """``ledger``: where the meter keeps its privacy ledgers (roster record,
        comparison budget) across restarts (:mod:`privmeter.parties.meter_state`);
        None keeps them in memory only.  ``comparison_group``: the group of the
        meter's own one-use comparison keys; None runs no demand management.
        ``first_interval``: the first interval the meter reports (a round reports
        every interval since, up to :data:`CATCH_UP` back); None: from its first round.
        ``epochs``: where its aggregation epoch tables are kept; None: a cache of its own
        (a simulator running many meters in one process may hand them one)."""
        if mode not in ("star", "ring"):
            raise InvalidArgument(f"mode must be 'star' or 'ring', got {mode!r}")
        self.mode = mode
        self.meter_id = meter_id
        self.signing_key = signing_key
        self.pk = household_pk
        self.headend_key = headend_key
        self.plan = plan
        self.group = group
        self.group_keys = dict(group_keys)
        self.min_survivors = min_survivors
        self.rng = rng
        self.enc = encryptor if encryptor is not None else MeterEncryptor(household_pk)
        self.state = MeterAgentState.IDLE  # the aggregation role (METER_AGENT_STAR / _RING)
        self.agg: AggregationMeter | None = None
        self.epochs = epochs if epochs is not None else EpochCache()
        # the plan's roster rules (differencing defence), one record for all epochs
        self.membership = MembershipPolicy(
            meter_id, plan.privacy, interval_seconds=interval_seconds
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
        self.interval_seconds = interval_seconds
        self.now = 0
        self._readings: dict[int, int | None] = {}  # pushed in by the service
        self._readings_high = -1  # the latest interval with a reading pushed
        self._readings_ended = False
        self.unacked: dict[tuple[str, int, str, str], ReadingRecord] = {}
        self.local_readings: dict[int, int] = {}
        self.local_adjustments: dict[tuple[str, str, int], int] = {}
        self.directives: list[LoadInstruction] = []
        self.feeds: list[str] = []
        self.bytes_out = 0
        self._dr_windows: list[tuple[str, int, int]] = []  # (event id, first, last interval)
        self._next: int | None = first_interval  # first interval not yet reported

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

    # -- readings (pushed in by the service) -------------------------------------------------
    def reading(self, interval: int, wh: int | None) -> None:
        """The meter's measurement of ``interval`` in Wh (net), pushed in by its service.

        ``None``: the source reported the interval missing.  Any order; a later
        push for the same interval replaces the earlier one until its round has
        reported it.
        """
        if not isinstance(interval, int) or isinstance(interval, bool):
            raise LocalProtocolError(f"reading interval must be an int, got {interval!r}")
        if wh is not None and (not isinstance(wh, int) or isinstance(wh, bool)):
            raise LocalProtocolError(f"reading must be an int (Wh) or None, got {wh!r}")
        self._readings[interval] = wh
        self._readings_high = max(self._readings_high, interval)

    def end_of_readings(self) -> None:
        """The source has ended: no reading will be pushed any more."""
        self._readings_ended = True

    def wants_reading(self, interval: int) -> bool:
        """Whether the round of ``interval`` would find its reading not in yet: nothing
        pushed for it or a later interval, and the readings have not ended (a service
        with a live source waits for it before the round)."""
        return not self._readings_ended and self._readings_high < interval

    def _energy_wh(self, interval: int) -> int | None:
        return self._readings.get(interval)

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

    def records_upto(self, interval: int, *, catch_up: int = CATCH_UP) -> list[ReadingRecord]:
        """Records of every interval not yet reported up to ``interval`` (after an outage too)."""
        start = interval if self._next is None else max(self._next, interval - catch_up)
        out: list[ReadingRecord] = []
        for t in range(start, interval + 1):
            out.extend(self.records_for(t))
        self._next = max(self._next or 0, interval + 1)
        return out

    def records_for(self, interval: int) -> list[ReadingRecord]:
        """Billing records of ``interval`` (energy, plus DR records inside an event window)."""
        wh = self._energy_wh(interval)
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
        step = _STEPS[self.mode].get(type(msg))
        if step is not None:
            return self._role_step(step, msg)
        if isinstance(msg, Receipt):
            msg.verify(self.headend_key)
            rec = self.unacked.get((msg.meter_id, msg.interval, msg.kind, msg.event_id))
            if rec is not None:
                if hashlib.sha256(record_bytes(rec)).digest() == msg.record_digest:
                    del self.unacked[rec.slot]
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

    # -- the aggregation role (its table: METER_AGENT_STAR / METER_AGENT_RING) ---------------
    def _role_step(self, step: MeterAgentStep, msg: Any) -> list[Any]:
        """One step of the aggregation role: checked against the mode's table first
        (refused with the state unchanged), committed after the step succeeded."""
        machine = METER_AGENT_STAR if self.mode == "star" else METER_AGENT_RING
        nxt = machine.next(self.state, step, meter_id=self.meter_id)
        if self.mode == "ring":
            out = self._ring_step(step, msg)
        else:
            out = self._star_step(step, msg)
        self.state = nxt
        return out

    def _star_step(self, step: MeterAgentStep, msg: Any) -> list[Any]:
        if step is MeterAgentStep.EPOCH:
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
                epochs=self.epochs,
            )
            return [self.agg.advertise()]
        if self.agg is None:
            raise LocalProtocolError(f"meter agent in state {self.state.value!r} has no epoch")
        if step is MeterAgentStep.BUNDLE:
            self.agg.handle_bundle(msg)
            return []
        # a round: its billing records first, then the masked reading (which an epoch
        # still waiting for its bundle refuses: the records stay unacknowledged, resent)
        t = msg.announcement.interval
        fresh = self.records_upto(t)
        old = self.resend(exclude={r.slot for r in fresh})
        masked = self.agg.handle_start(msg, self._energy_wh(t))
        return [*old, *fresh, masked]

    def _ring_step(self, step: MeterAgentStep, msg: Any) -> list[Any]:
        if step is MeterAgentStep.EPOCH:
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
        if step is MeterAgentStep.BUNDLE:
            return self._ring_bundle(msg)
        return self._ring_round(msg)

    # -- the founding paper's ring ----------------------------------------------------------
    def _ring_bundle(self, bundle: KeyBundle) -> list[Any]:
        """Check every advert in the bundle (meter keys, head-end key) and join the ring."""
        if self._ring_key is None:  # the table refused a bundle before any epoch
            raise LocalProtocolError(f"ring agent in state {self.state.value!r} has no key")
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
        if self.ring is None:  # the table refused a round before the ring was set up
            raise LocalProtocolError(f"ring agent in state {self.state.value!r} has no ring")
        t = msg.round
        fresh = self.records_upto(t)
        old = self.resend(exclude={r.slot for r in fresh})
        wh = self._energy_wh(t) or 0
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
        self._dr_windows.append(self._window(ins))  # the household's load is the service's
        return []
