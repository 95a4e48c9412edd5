"""The head-end core: billing ledger + masked aggregation + demand management + persistence.

What it is for: one object holds everything the utility's head-end does, so
the same code runs behind sockets (:mod:`privmeter.parties.headend_service`)
and in memory (the simulator's in-memory runner, ``sim/runner.py``):

* registrations (meter -> Ed25519 key, household Paillier key, plan, group);
* billing: every :class:`~privmeter.protocol.records.ReadingRecord` goes
  through :class:`~privmeter.protocol.billing.BillingLedger` (checks, encrypted
  accumulation, signed log, receipts); statements at the end of a period;
  the household's :class:`~privmeter.protocol.settlement.BillProof` is
  checked with the public key alone (:func:`~privmeter.protocol.settlement.check_proof`);
* aggregation per group (feeder): one
  :class:`~privmeter.protocol.aggregation.AggregationHeadEnd` per epoch; a
  new epoch after every restart (the masking secrets are never persisted);
* demand management per group: when a final total leaves ``[Cmin, Cmax]``
  a :class:`~privmeter.protocol.demand.DemandManager` opens an event, and
  the head-end runs echoes, comparisons and directives; at most one event
  at a time per group and no more events per day than the plan's budget;
* persistence through a :class:`~privmeter.parties.headend_store.HeadEndStorage`
  (:class:`~privmeter.parties.headend_store.HeadEndStore`, SQLite WAL; a cluster
  shard's PostgreSQL store): log, accumulators, statements, totals, events, settlements.

Message dispatch (:meth:`HeadEndCore.handle`): every message names the
meter it comes from, which must equal the authenticated peer
(:class:`~privmeter.errors.UnknownParty` otherwise); every failure is a
specific :class:`~privmeter.errors.PrivmeterError`, raised *before* any
state changes, and the core keeps serving.

Security assumption: the head-end is the honest-but-curious utility; the
ground truth of readings never enters this module (only ciphertexts, masked
values, totals and comparison bits do).  Guarantee: the only per-household
information the core ever holds in plaintext is the comparison bit of an
event and whether a meter took part in an interval.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privmeter.crypto.keyagreement import AgreementKey, sign_advert, verify_advert
from privmeter.crypto.numtheory import SYSTEM_RNG, RandomSource
from privmeter.crypto.paillier import MIN_KEY_BITS, PaillierPublicKey
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    AggregationError,
    BillOutOfBounds,
    GroupTooSmall,
    InvalidProof,
    LocalProtocolError,
    PrivmeterError,
    ReplayedMessage,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed
from privmeter.parties.concentrator import Relayed, unwrap
from privmeter.parties.headend_store import HeadEndStorage, MemoryHeadEndStore, StoredTotal
from privmeter.parties.messages import EpochRequest, Hello, SettleRequest
from privmeter.protocol.aggregation import AggregateResult, AggregationHeadEnd, EpochCache
from privmeter.protocol.aggregation_messages import (
    HEADEND_ID,
    KeyAdvert,
    KeyBundle,
    MaskedInput,
    degree_for,
)
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.codec import encode
from privmeter.protocol.demand import DemandManager
from privmeter.protocol.demand_messages import ComparisonAnswer, DemandEvent, Echo, Offer
from privmeter.protocol.records import ReadingRecord
from privmeter.protocol.ring import RingCoordinator, RingToken, RingTotal
from privmeter.protocol.settlement import (
    BillProof,
    Dispute,
    Statement,
    check_proof,
    statement_digest,
)

__all__ = ["GroupConfig", "HeadEndCore", "IntervalOutcome"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupConfig:
    """A feeder: its meters and the utility's private limits (W of average power)."""

    group_id: str
    members: tuple[str, ...]
    min_survivors: int = 5
    cmin_w: int = 0
    cmax_w: int = 2**40
    level_above_w: int = 3000  # curtail down to this (the plan's cap, public)
    level_below_w: int = 500
    event_minutes: int = 30
    max_events_per_day: int = 4
    echo_quorum: int | None = (
        None  # echoes a meter needs (its plan's rule); None: a strict majority
    )
    mode: str = "star"  # "star": robust masked aggregation; "ring": the founding paper's ring


@dataclass(frozen=True, slots=True)
class IntervalOutcome:
    """What closing an interval produced: a final total (maybe) and an event (maybe)."""

    result: AggregateResult | None
    event: DemandEvent | None


@dataclass(slots=True)
class _Group:
    cfg: GroupConfig
    epoch: int = 0
    agg: AggregationHeadEnd | None = None
    dm: DemandManager | None = None
    event_until: int = -1  # last interval of the active event's window
    events_by_day: Counter[int] = field(default_factory=Counter)
    ring: RingCoordinator | None = None
    ring_adverts: dict[str, KeyAdvert] = field(default_factory=dict)
    ring_roster: tuple[str, ...] = ()
    ring_current: int = -1


class HeadEndCore:
    """The utility's head-end (see the module docstring)."""

    def __init__(
        self,
        signing_key: SigningKey,
        plans: Mapping[str, Plan] | Iterable[Plan],
        *,
        store: HeadEndStorage | None = None,
        demand: bool = False,
        interval_seconds: int = 900,
        min_key_bits: int = MIN_KEY_BITS,
        window_back: int | None = None,
        rng: RandomSource = SYSTEM_RNG,
    ) -> None:
        self.signing_key = signing_key
        self.store: HeadEndStorage = store if store is not None else MemoryHeadEndStore()
        kw: dict[str, Any] = {"min_key_bits": min_key_bits}
        if window_back is not None:
            kw["window_back"] = window_back
        self.ledger = BillingLedger(signing_key, plans, store=self.store, **kw)
        self.demand = demand  # run demand management (meters bring their own comparison keys)
        self.min_key_bits = min_key_bits
        self.interval_seconds = interval_seconds
        self.rng = rng
        self.epochs = EpochCache()  # this head-end's aggregation epoch tables (its own)
        self.registry: dict[str, VerifyKey] = {}
        self.household_keys: dict[str, PaillierPublicKey] = {}
        self.groups: dict[str, _Group] = {}
        self.meter_group: dict[str, str] = {}
        self.errors: Counter[str] = (
            Counter()
        )  # error code -> count (peer misbehaviour, dropouts...)
        self.cpu: defaultdict[str, float] = defaultdict(float)  # step -> CPU seconds
        self.calls: Counter[str] = Counter()
        self.feed: PriceFeed | None = None
        self._statements: dict[tuple[str, int], Statement] = {}
        self._ring_first = 0
        self.concentrators: dict[str, frozenset[str]] = {}  # tree topology: relay -> its meters
        self.outbox: list[
            tuple[str, Any]
        ] = []  # meter-to-meter payloads to relay (end-to-end sealed)

    # -- setup -----------------------------------------------------------------------------
    def define_group(self, cfg: GroupConfig) -> None:
        """Define (or redefine, with a new roster) a group; its demand-management limits --
        the running event's window, the events of each day -- carry over from the store."""
        g = _Group(cfg)
        for e in self.store.events():
            if e.get("group") != cfg.group_id:
                continue
            start, minutes = e.get("start_interval"), e.get("duration_minutes")
            if isinstance(start, int) and isinstance(minutes, int):
                per = max(1, minutes * 60 // self.interval_seconds)
                g.event_until = max(g.event_until, start + per - 1)
                g.events_by_day[start * self.interval_seconds // 86400] += 1
        self.groups[cfg.group_id] = g
        for m in cfg.members:
            self.meter_group[m] = cfg.group_id

    def register(
        self,
        meter_id: str,
        verify_key: VerifyKey,
        household_pk: PaillierPublicKey,
        plan: Plan,
        *,
        wellformed_proof: Sequence[int],
        period_start: int,
        period_intervals: int,
    ) -> None:
        """Register a meter (idempotent: a restarted head-end re-registers from its config).

        A new or changed registration runs
        :func:`~privmeter.protocol.records.check_household_key` on the
        household key and its ``wellformed_proof`` (h_s derived from n,
        gcd(n, phi(n)) = 1, the plan's bills fit the key).
        """
        reg = self.store.get_meter(meter_id)
        if (
            reg is None
            or reg.verify_key != verify_key.raw
            or reg.plan_digest != plan.digest()
            or reg.period_start != period_start
            or reg.period_intervals != period_intervals
            or reg.paillier_public_key != household_pk.to_json()
        ):
            self.ledger.register(
                meter_id,
                verify_key,
                household_pk,
                plan,
                wellformed_proof=wellformed_proof,
                period_start=period_start,
                period_intervals=period_intervals,
            )
        elif plan.plan_id not in self.ledger.plans:
            self.ledger.plans[plan.plan_id] = plan
        self.registry[meter_id] = verify_key
        self.household_keys[meter_id] = household_pk

    def unregister(self, meter_id: str) -> None:
        """A meter left or was revoked: its messages are refused from now on (its records,
        statements and settlements stay in the store); its group is redefined by the caller."""
        self.registry.pop(meter_id, None)
        self.household_keys.pop(meter_id, None)
        self.meter_group.pop(meter_id, None)

    def register_concentrator(self, concentrator_id: str, meters: Iterable[str]) -> None:
        """A data concentrator and the meters it relays for (tree topology)."""
        self.concentrators[concentrator_id] = frozenset(meters)

    def publish_feed(self, feed: PriceFeed) -> int:
        """Publish (day-ahead) real-time prices; pending records are folded in."""
        t0 = time.process_time()
        n = self.ledger.publish_feed(feed)
        self.feed = feed if self.feed is None else self.feed.merge(feed)
        self.cpu["billing"] += time.process_time() - t0
        return n

    # -- aggregation epochs ---------------------------------------------------------------
    def new_epoch(self, group_id: str, first_interval: int) -> dict[str, list[Any]]:
        """Start a fresh aggregation epoch; returns the ``sys.epoch`` request per member."""
        g = self._group(group_id)
        key = f"epoch:{group_id}"
        g.epoch = int(self.store.meta_get(key) or 0) + 1
        self.store.meta_set(key, str(g.epoch))
        members = {m: self.registry[m] for m in g.cfg.members if m in self.registry}
        if g.cfg.mode == "ring":
            g.ring_adverts = {}
            g.ring = None
            g.ring_current = first_interval - 1
            self._ring_first = first_interval
        else:
            g.agg = AggregationHeadEnd(
                self.signing_key,
                members,
                group=group_id,
                epoch=g.epoch,
                first_interval=first_interval,
                min_survivors=g.cfg.min_survivors,
                rng=self.rng,
                degree=degree_for(len(members), self.observed_dropout(group_id, len(members))),
                epochs=self.epochs,
            )
        if self.demand:
            g.dm = DemandManager(
                self.signing_key,
                group_id,
                members,
                min_group_bits=min(self.min_key_bits, MIN_KEY_BITS),
                cmin_w=g.cfg.cmin_w,
                cmax_w=g.cfg.cmax_w,
                level_above_w=g.cfg.level_above_w,
                level_below_w=g.cfg.level_below_w,
                duration_minutes=g.cfg.event_minutes,
                interval_seconds=self.interval_seconds,
                quorum=g.cfg.echo_quorum,
            )
        req = EpochRequest(group=group_id, epoch=g.epoch, first_interval=first_interval)
        return {m: [req] for m in members}

    def observed_dropout(self, group_id: str, members: int, *, window: int = 96) -> float:
        """The share of the group's meters missing from its recent intervals (the
        last ``window`` stored totals), capped at 0.5: what the next epoch's
        neighbour degree is sized for (:func:`degree_for`)."""
        recent = sorted((t for t in self.store.totals(group_id)), key=lambda t: t.interval)[
            -window:
        ]
        if not recent or members <= 0:
            return 0.0
        present = sum(t.survivors for t in recent) / len(recent)
        return min(0.5, max(0.0, 1.0 - present / members))

    def make_bundle(self, group_id: str) -> dict[str, list[Any]]:
        """Close the epoch's setup: the signed key bundle for every meter that advertised."""
        g = self._group(group_id)
        if g.cfg.mode == "ring":
            return self._ring_bundle(g)
        agg = self._agg(g)
        t0 = time.process_time()
        bundle = agg.make_bundle()
        self.cpu["aggregation"] += time.process_time() - t0
        return {m: [bundle] for m in agg.roster}

    def open_interval(self, group_id: str) -> dict[str, list[Any]]:
        g = self._group(group_id)
        if g.cfg.mode == "ring":
            if g.ring is None:
                raise UnexpectedMessage("no ring set up", group=group_id)
            g.ring_current += 1
            return {g.ring_roster[0]: [g.ring.start(g.ring_current)]}
        agg = self._agg(g)
        t0 = time.process_time()
        starts = agg.open_interval()
        self.cpu["aggregation"] += time.process_time() - t0
        return {m: [s] for m, s in starts.items()}

    def current_interval(self, group_id: str) -> int:
        g = self._group(group_id)
        return g.ring_current if g.cfg.mode == "ring" else self._agg(g).current

    def lag(self, group_id: str) -> int:
        """Intervals between an interval and the close that makes its total final:
        1, or 2 for a sparse aggregation graph (its reveals wait for the quorum
        certificate of the announcement; docs/aggregation.md)."""
        g = self._group(group_id)
        if g.cfg.mode == "ring" or g.agg is None:
            return 1
        return g.agg.lag

    def round_expect(self, group_id: str) -> type:
        """The message that ends an interval round for this group (per recipient)."""
        return RingTotal if self._group(group_id).cfg.mode == "ring" else MaskedInput

    # -- the founding paper's ring ------------------------------------------------------------
    def _ring_bundle(self, g: _Group) -> dict[str, list[Any]]:
        n = len(g.ring_adverts)
        if n < max(2, g.cfg.min_survivors):
            raise GroupTooSmall(f"{n} meters advertised, below the minimum {g.cfg.min_survivors}")
        ak = AgreementKey.generate(self.rng)
        nonce = self.rng.getrandbits(128).to_bytes(16, "big")
        gid = g.cfg.group_id
        head = KeyAdvert(
            group=gid,
            epoch=g.epoch,
            party_id=HEADEND_ID,
            public=ak.public,
            nonce=nonce,
            signature=sign_advert(self.signing_key, gid, g.epoch, HEADEND_ID, ak.public, nonce),
        )
        roster = tuple(sorted(g.ring_adverts))
        bundle = KeyBundle(
            group=gid,
            epoch=g.epoch,
            first_interval=self._ring_first,
            dim=1,
            degree=n - 1,
            headend=head,
            adverts=tuple(g.ring_adverts[m] for m in roster),
        )
        g.ring_roster = roster
        g.ring = RingCoordinator(gid, roster)
        return {m: [bundle] for m in roster}

    def _ring_close(self, g: _Group) -> AggregateResult | None:
        if g.ring is None:
            raise LocalProtocolError("the group has no ring baseline")
        t = g.ring_current
        roster = g.ring_roster
        if t in g.ring.totals:
            return AggregateResult(t, (g.ring.totals.pop(t),), roster, ())
        try:
            g.ring.timeout(t)
        except AggregationError as exc:
            return AggregateResult(t, None, (), roster, str(exc))
        return None

    def close_interval(self, group_id: str, *, now: int) -> IntervalOutcome:
        """Close the open interval: persist the total that became final; maybe open an event."""
        g = self._group(group_id)
        t0 = time.process_time()
        if g.cfg.mode == "ring":
            res = self._ring_close(g)
            current = g.ring_current
        else:
            agg = self._agg(g)
            res = agg.close_interval()
            current = agg.current
        self.cpu["aggregation"] += time.process_time() - t0
        event = None
        if res is not None:
            total = res.total[0] if res.total is not None else None
            self.store.put_total(
                StoredTotal(
                    group_id, res.interval, total, len(res.survivors), len(res.dropped), res.error
                )
            )
            if res.error:
                self.errors["aggregation"] += 1
            if total is not None and g.dm is not None:
                event = self._maybe_event(g, total, current, now)
        return IntervalOutcome(res, event)

    # -- demand management -------------------------------------------------------------------
    def _maybe_event(self, g: _Group, total_wh: int, current: int, now: int) -> DemandEvent | None:
        if g.dm is None:
            raise LocalProtocolError("the group has no demand manager")
        day = now // 86400
        if current <= g.event_until or g.events_by_day[day] >= g.cfg.max_events_per_day:
            return None
        total_w = total_wh * 3600 // self.interval_seconds
        t0 = time.process_time()
        ev = g.dm.check_total(total_w, interval=current, now=now, rng=self.rng)
        self.cpu["demand"] += time.process_time() - t0
        if ev is None:
            return None
        g.events_by_day[day] += 1
        per = max(1, ev.duration_minutes * 60 // self.interval_seconds)
        g.event_until = ev.start_interval + per - 1
        self.store.put_event(
            ev.event_id,
            g.cfg.group_id,
            current,
            {
                "side": ev.side,
                "action": ev.action,
                "start_interval": ev.start_interval,
                "duration_minutes": ev.duration_minutes,
                "trigger_total_w": total_w,
                "cmin_w": g.cfg.cmin_w,
                "cmax_w": g.cfg.cmax_w,
                "echoes": 0,
                "answers": 0,
                "targets": 0,
            },
        )
        return ev

    def event_queries(self, event_id: str, *, now: int) -> dict[str, list[Any]]:
        """Echo bundle + one comparison query to each meter that echoed the event."""
        _, dm = self._event_group(event_id)
        t0 = time.process_time()
        echoed = sorted(dm.events[event_id].echoes)
        out: dict[str, list[Any]] = {}
        if len(echoed) >= dm.quorum:
            bundle = dm.echo_bundle(event_id)
            offered = dm.offered(event_id)
            for q in dm.queries(
                event_id, now=now, meters=[m for m in echoed if m in offered], rng=self.rng
            ):
                out[q.meter_id] = [bundle, q]
        else:
            self.errors["dr-quorum"] += 1
        self.cpu["demand"] += time.process_time() - t0
        return out

    def event_directives(self, event_id: str, *, now: int) -> dict[str, list[Any]]:
        g, dm = self._event_group(event_id)
        t0 = time.process_time()
        ds = dm.directives(event_id, now=now)
        e = dm.events[event_id]
        info = {
            k: v
            for k, v in self._event_info(event_id).items()
            if k not in ("event_id", "group", "interval")
        }
        info.update(echoes=len(e.echoes), answers=len(e.results), targets=len(e.directed))
        self.store.put_event(event_id, g.cfg.group_id, self._event_info(event_id)["interval"], info)
        self.cpu["demand"] += time.process_time() - t0
        return {d.meter_id: [d] for d in ds}

    def event_outcome(self, event_id: str) -> dict[str, Any]:
        """What the utility learnt in an event, for its records: its private threshold (W),
        each answering meter's bit ``[x >= T]``, the interval of the reading each meter
        compared (from its signed offer), and the meters directed -- no reading."""
        _, dm = self._event_group(event_id)
        e = dm.events[event_id]
        return {
            "threshold_w": e.threshold,
            "bits": {m: bool(b) for m, b in sorted(e.results.items())},
            "reading_intervals": {m: o.reading_interval for m, o in sorted(e.offers.items())},
            "directed": sorted(e.directed),
        }

    def _event_info(self, event_id: str) -> dict[str, Any]:
        for e in self.store.events():
            if e["event_id"] == event_id:
                return e
        raise UnexpectedMessage("no such event", event_id=event_id)

    def _event_group(self, event_id: str) -> tuple[_Group, DemandManager]:
        for g in self.groups.values():
            if g.dm is not None and event_id in g.dm.events:
                return g, g.dm
        raise UnexpectedMessage("no such event", event_id=event_id)

    # -- settlement ------------------------------------------------------------------------
    def statement(self, meter_id: str, period: int, *, now: int) -> Statement:
        t0 = time.process_time()
        st = self.ledger.statement(meter_id, period, now=now)
        self._statements[(meter_id, period)] = st
        self.cpu["settlement"] += time.process_time() - t0
        return st

    def settle_request(self, statement: Statement, period: int) -> SettleRequest:
        """The household's copy of a statement, with its log: the meter-signed records it is built
        from, which the household rebuilds E(bill) from before it answers."""
        log = self.store.records(statement.meter_id, statement.start, statement.end)
        return SettleRequest(period=period, statement=encode(statement), log=tuple(log))

    def _receive_payment(self, peer: str, msg: BillProof | Dispute) -> None:
        found = [
            (p, s)
            for (m, p), s in self._statements.items()
            if m == msg.meter_id and statement_digest(s) == msg.statement_digest
        ]
        if not found:
            raise UnexpectedMessage("answer to no statement we issued", meter_id=msg.meter_id)
        period, st = found[0]
        if isinstance(msg, Dispute):
            self.store.put_settlement(
                msg.meter_id, period, "dispute:" + msg.reason, encode(msg), None
            )
            return
        try:
            bill = check_proof(
                st, msg, self.household_keys[msg.meter_id], self.ledger.plan_of(msg.meter_id)
            )
        except InvalidProof:
            self.store.put_settlement(msg.meter_id, period, "invalid-proof", encode(msg), None)
            raise
        except BillOutOfBounds:
            self.store.put_settlement(msg.meter_id, period, "bill-out-of-bounds", encode(msg), None)
            raise
        self.store.put_settlement(msg.meter_id, period, "paid", encode(msg), bill)

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, peer: str, msg: Any, *, now: int, interval: int) -> list[Any]:
        """Handle one message from authenticated ``peer``; returns the replies.

        ``interval`` is the head-end's current interval (freshness of
        billing records).  Raises a specific error (state unchanged) on any
        check failing.
        """
        try:
            return self._handle(peer, msg, now=now, interval=interval)
        except PrivmeterError as exc:
            self.errors[exc.code] += 1
            raise

    def _handle(self, peer: str, msg: Any, *, now: int, interval: int) -> list[Any]:
        if isinstance(msg, Relayed):
            served = self.concentrators.get(peer)
            if served is None or msg.meter_id not in served:
                raise UnknownParty(
                    "relay from a concentrator that does not serve this meter",
                    meter_id=msg.meter_id,
                    peer=peer,
                )
            inner = unwrap(msg)
            if isinstance(inner, Relayed):
                raise UnexpectedMessage("nested relay envelope", meter_id=msg.meter_id)
            return [
                Relayed(meter_id=msg.meter_id, payload=encode(r))
                for r in self._handle(msg.meter_id, inner, now=now, interval=interval)
            ]
        if isinstance(msg, ReadingRecord):
            self._same(peer, msg.meter_id)
            t0 = time.process_time()
            receipt = self.ledger.receive(msg, current_interval=interval)
            self.cpu["billing"] += time.process_time() - t0
            self.calls["records"] += 1
            return [receipt]
        if isinstance(msg, MaskedInput):
            self._same(peer, msg.meter_id)
            agg = self._agg(self._group(self._group_of(peer)))
            t0 = time.process_time()
            agg.handle_input(msg)
            self.cpu["aggregation"] += time.process_time() - t0
            self.calls["inputs"] += 1
            return []
        if isinstance(msg, RingToken):
            self._same(peer, msg.sender)
            g = self._group(self._group_of(peer))
            if g.ring is None or msg.group != g.cfg.group_id or msg.receiver not in g.ring_roster:
                raise UnexpectedMessage("ring token outside this meter's ring", meter_id=peer)
            self.outbox.append((msg.receiver, msg))  # sealed for the receiver: relayed, not read
            self.calls["relayed"] += 1
            return []
        if isinstance(msg, RingTotal):
            g = self._group(self._group_of(peer))
            if g.ring is None or not g.ring_roster or peer != g.ring_roster[0]:
                raise UnexpectedMessage(
                    "ring total from a meter that is not the leader", meter_id=peer
                )
            self._same(peer, peer)
            g.ring.handle_total(msg)
            return []
        if isinstance(msg, KeyAdvert) and self._group(self._group_of(peer)).cfg.mode == "ring":
            self._same(peer, msg.party_id)
            g = self._group(self._group_of(peer))
            if (msg.group, msg.epoch) != (g.cfg.group_id, g.epoch):
                raise UnexpectedMessage("advert for another group or epoch", meter_id=peer)
            if peer in g.ring_adverts:
                raise ReplayedMessage("second advert", meter_id=peer)
            verify_advert(
                self.registry[peer],
                msg.group,
                msg.epoch,
                msg.party_id,
                msg.public,
                msg.nonce,
                msg.signature,
            )
            g.ring_adverts[peer] = msg
            return []
        if isinstance(msg, KeyAdvert):
            self._same(peer, msg.party_id)
            agg = self._agg(self._group(self._group_of(peer)))
            t0 = time.process_time()
            agg.handle_advert(msg)
            self.cpu["aggregation"] += time.process_time() - t0
            return []
        if isinstance(msg, Echo | Offer | ComparisonAnswer):
            self._same(peer, msg.meter_id)
            _, dm = self._event_group(msg.event_id)
            t0 = time.process_time()
            if isinstance(msg, Echo):
                dm.receive_echo(msg)
            elif isinstance(msg, Offer):
                dm.receive_offer(msg)
            else:
                dm.receive_answer(msg, now=now)
            self.cpu["demand"] += time.process_time() - t0
            return []
        if isinstance(msg, BillProof | Dispute):
            self._same(peer, msg.meter_id)
            t0 = time.process_time()
            self._receive_payment(peer, msg)
            self.cpu["settlement"] += time.process_time() - t0
            return []
        if isinstance(msg, Hello):
            self._same(peer, msg.meter_id)
            return []
        raise UnexpectedMessage(f"the head-end does not take {type(msg).__name__} messages")

    # -- helpers ---------------------------------------------------------------------------
    def _same(self, peer: str, meter_id: str) -> None:
        if peer != meter_id and peer != f"hh:{meter_id}":
            raise UnknownParty(
                "message names another meter than the authenticated peer",
                meter_id=meter_id,
                peer=peer,
            )
        if meter_id not in self.registry:
            raise UnknownParty("meter not registered", meter_id=meter_id)

    def _group_of(self, meter_id: str) -> str:
        g = self.meter_group.get(meter_id)
        if g is None:
            raise UnknownParty("meter is in no group", meter_id=meter_id)
        return g

    def _group(self, group_id: str) -> _Group:
        g = self.groups.get(group_id)
        if g is None:
            raise LocalProtocolError(f"no group {group_id!r}")
        return g

    @staticmethod
    def _agg(g: _Group) -> AggregationHeadEnd:
        if g.agg is None:
            raise UnexpectedMessage("no aggregation epoch running", group=g.cfg.group_id)
        return g.agg

    def totals(self) -> list[StoredTotal]:
        return self.store.totals()

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        return self.store.settlements()

    def statements(self) -> dict[tuple[str, int], Statement]:
        """Every statement issued, by ``(meter id, period)`` (for audit bundles and checks)."""
        return dict(self._statements)
