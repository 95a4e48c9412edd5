"""Demand management with individual households: events, budget, directives, settlement (sans-IO).

What it is for: when a group's total leaves the utility's private
``[Cmin, Cmax]``, the utility (:class:`DemandManager`) picks a threshold
``T``, compares every meter of the group with ``T``
(:mod:`privmeter.protocol.comparison`: the meter holds a one-use key) and
sends a directive (curtail, shift, take_more) to exactly the meters on the
wrong side.  Each meter (:class:`MeterDemandAgent`) enforces its plan's
privacy budget, answers with one signed bit, and turns a directive into a
:class:`LoadInstruction` for the load model
(:func:`privmeter.grid.synthetic.curtailment.apply_directive`).

Flow (rules of the state machine; every message signed, Ed25519)::

    utility                                   meter (each of the group)
    DemandEvent(action, side, window, bits) ->  validate, budget check on its last reading
                                          <-  Offer(reading interval, one-use key,
                                                    E(one-hot digits))       [meter-signed]
                                          <-  Echo(event digest)           [meter-signed]
    EchoBundle(>= quorum echoes)          ->  certify: same digest from >= quorum members
    ComparisonQuery(challenge on the offer) ->  checks, charge the reading's budget,
                                                zero-test every value, erase the key
                                          <-  ComparisonAnswer(one bit)     [meter-signed]
    Directive (only to the wrong side)    ->  LoadInstruction(limit_w = plan cap)

States: each role's state is an enum moved only along a table, checked
before anything changes: :data:`METER_EVENT` (the meter, per event),
:data:`MANAGER_METER` (the manager, per meter of an event); the tables are
in ``docs/states.md``.

Meter rules (each violation a specific error, and no state change):
unknown event or a query/directive outside an accepted event ->
:class:`~privmeter.errors.UnexpectedMessage`; a second event with the same
id, a repeated query or directive -> :class:`~privmeter.errors.ReplayedMessage`;
an expired or future-dated message -> :class:`~privmeter.errors.StaleMessage`;
a bad signature -> :class:`~privmeter.errors.InvalidSignature`; no reading of
the meter's own last :data:`MAX_READING_AGE` intervals ->
:class:`~privmeter.errors.NoFreshReading`; beyond the plan's comparisons per
reading / per day of readings -> :class:`~privmeter.errors.BudgetExceeded`;
a challenge of the wrong size or with values outside the group ->
:class:`~privmeter.errors.MalformedMessage` /
:class:`~privmeter.errors.InvalidCiphertext`; echoes from group members on
a different digest -> :class:`~privmeter.errors.ThresholdEquivocation`.

Leakage bound (the property this module guarantees, whatever the head-end
sends): each answered comparison releases exactly one bit, computed with a
key the meter drew for it and erased after it; the meter answers at most
``comparisons_per_interval`` comparisons of one reading and
``comparisons_per_day`` of one day's readings, keyed on the compared
reading's own interval (never on a time a peer sends: issue 12, attack 4).
So a head-end learns at most ``comparisons_per_day`` bits a day about a
household; a binary search leaves at least ``2**(bits - budget)`` readings
consistent with its view.  ``now`` is the meter's own clock, passed in by
its caller; it only decides freshness (which reading is "last", event
lifetimes).  With ``same_threshold_for_group``, a meter answers only once
``quorum`` distinct group members (from the signed roster) have signed an
echo of the *same* event digest; with ``quorum > len(roster) / 2`` two
different events can never both be certified for one reading.  The event
digest covers the action, side, window and lifetime but not ``T``: the
threshold is applied by the utility on each meter's offer, so a meter
cannot check that every member got the same ``T`` (that would take a
zero-knowledge proof of the challenge); the one-bit bound holds regardless.

Settlement: during the event's window the meter emits, per interval, two
encrypted billing records (``dr_excess`` = Wh above the plan's cap,
``dr_rebate`` = Wh of headroom below it) under the household's Paillier key
(:func:`~privmeter.protocol.demand_settlement.event_records`); the utility bills them at the penalty and minus the
rebate price without learning either amount.  :func:`~privmeter.protocol.demand_settlement.event_adjustments` is
the household's plaintext counterpart for ``settlement.settle``.

Layout: this module holds the two state machines (:class:`DemandManager`,
:class:`MeterDemandAgent`); the wire messages and their signing contexts are
in :mod:`privmeter.protocol.demand_messages`, the meter's budget and the
threshold policy in :mod:`privmeter.protocol.demand_budget`, the bill-record
helpers in :mod:`privmeter.protocol.demand_settlement`.

Units: readings compared are instantaneous power in W (signed, export
negative); energy Wh per interval; intervals ``floor(unix / interval_seconds)``.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privmeter.crypto import numtheory as nt
from privmeter.crypto.elgamal import DEFAULT_GROUP, get_group
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    BudgetExceeded,
    LocalProtocolError,
    MalformedMessage,
    NoFreshReading,
    PolicyError,
    PrivmeterError,
    ReplayedMessage,
    StaleMessage,
    ThresholdEquivocation,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.protocol.comparison import (
    DEFAULT_BITS,
    DEFAULT_RADIX,
    MIN_GROUP_BITS,
    MeterComparison,
    UtilityComparison,
)
from privmeter.protocol.demand_budget import MAX_READING_AGE, ComparisonBudget, choose_threshold
from privmeter.protocol.demand_messages import (
    ANSWER_CONTEXT,
    CLOCK_SKEW_S,
    DIRECTIVE_CONTEXT,
    ECHO_CONTEXT,
    EVENT_CONTEXT,
    MAX_EVENT_LIFETIME_S,
    OFFER_CONTEXT,
    QUERY_CONTEXT,
    ComparisonAnswer,
    ComparisonQuery,
    DemandEvent,
    Directive,
    Echo,
    EchoBundle,
    LoadInstruction,
    Offer,
)
from privmeter.protocol.records import canonical
from privmeter.protocol.states import Machine, Refusal, register

__all__ = [
    "MANAGER_METER",
    "METER_EVENT",
    "DemandManager",
    "ManagerInput",
    "ManagerMeterState",
    "MeterDemandAgent",
    "MeterEventState",
    "MeterInput",
]


# -- utility side -------------------------------------------------------------------------


class ManagerMeterState(enum.Enum):
    """One meter of an open event, as the utility sees it."""

    IDLE = "idle"  # no offer from it yet
    OFFERED = "offered"  # its signed offer kept
    QUERIED = "queried"  # the challenge on its offer sent
    ANSWERED = "answered"  # its bit recorded
    DIRECTED = "directed"  # a directive sent to it


class ManagerInput(enum.Enum):
    ECHO = "echo"  # Echo (kept in every state: the bundle is the group's, not a step)
    OFFER = "offer"  # Offer
    QUERY = "query"  # local: a challenge built on the offer and sent
    ANSWER = "answer"  # ComparisonAnswer
    DIRECTIVE = "directive"  # local: a directive sent (wrong side of T only)


_MS, _MN = ManagerMeterState, ManagerInput
_LOCAL = Refusal(LocalProtocolError, "the manager's own step out of order")
MANAGER_METER = register(
    Machine(
        "demand event, one meter (manager)",
        ManagerMeterState,
        ManagerInput,
        _MS.IDLE,
        {
            _MS.IDLE: {_MN.ECHO: _MS.IDLE, _MN.OFFER: _MS.OFFERED},
            _MS.OFFERED: {_MN.ECHO: _MS.OFFERED, _MN.QUERY: _MS.QUERIED},
            _MS.QUERIED: {_MN.ECHO: _MS.QUERIED, _MN.ANSWER: _MS.ANSWERED},
            _MS.ANSWERED: {_MN.ECHO: _MS.ANSWERED, _MN.DIRECTIVE: _MS.DIRECTED},
            _MS.DIRECTED: {_MN.ECHO: _MS.DIRECTED},
        },
        {
            **{
                (st, _MN.OFFER): Refusal(ReplayedMessage, "meter already made an offer")
                for st in (_MS.OFFERED, _MS.QUERIED, _MS.ANSWERED, _MS.DIRECTED)
            },
            **{
                (st, _MN.ANSWER): Refusal(UnexpectedMessage, "answer to no outstanding query")
                for st in (_MS.IDLE, _MS.OFFERED)
            },
            **{
                (st, _MN.ANSWER): Refusal(ReplayedMessage, "meter already answered")
                for st in (_MS.ANSWERED, _MS.DIRECTED)
            },
        },
        default=_LOCAL,
    )
)


@dataclass(slots=True)
class _Event:
    msg: DemandEvent
    sessions: dict[str, UtilityComparison]
    queries: dict[str, int]
    results: dict[str, bool]
    echoes: dict[str, Echo]
    threshold: int
    offers: dict[str, Offer] = field(default_factory=dict)
    states: dict[str, ManagerMeterState] = field(default_factory=dict)
    # the meters in state directed (an index kept with ``states``, read by the dashboards)
    directed: set[str] = field(default_factory=set)

    def state(self, meter_id: str) -> ManagerMeterState:
        return self.states.get(meter_id, ManagerMeterState.IDLE)


class DemandManager:
    """The utility's side of demand management for one group (sans-IO).

    ``roster`` maps each meter id of the group to its certified verify key.
    Thresholds, signs, limits and results stay inside this object; nothing
    here does I/O or reads a clock (``now`` is passed in, unix seconds).  The
    utility holds no comparison key: each meter brings a one-use key in its
    :class:`Offer` (see :mod:`privmeter.protocol.comparison`).
    ``min_group_bits``: the smallest comparison group accepted from a meter
    (below 2048 only for tests, which also allows the insecure test group).
    """

    def __init__(
        self,
        signing_key: SigningKey,
        group_id: str,
        roster: Mapping[str, VerifyKey],
        *,
        cmin_w: int,
        cmax_w: int,
        level_above_w: int,
        level_below_w: int,
        duration_minutes: int = 30,
        bits: int = DEFAULT_BITS,
        radix: int = DEFAULT_RADIX,
        interval_seconds: int = 900,
        lifetime_s: int = 300,
        quorum: int | None = None,
        min_group_bits: int = MIN_GROUP_BITS,
    ) -> None:
        if cmin_w > cmax_w:
            raise LocalProtocolError("Cmin must not exceed Cmax")
        self.signing_key = signing_key
        self.group_id = group_id
        self.roster = dict(roster)
        self.cmin_w, self.cmax_w = cmin_w, cmax_w
        self.level_above_w, self.level_below_w = level_above_w, level_below_w
        self.duration_minutes = duration_minutes
        self.bits, self.radix = bits, radix
        self.interval_seconds = interval_seconds
        self.lifetime_s = lifetime_s
        self.quorum = quorum if quorum is not None else len(self.roster) // 2 + 1
        self.min_group_bits = min_group_bits
        self.events: dict[str, _Event] = {}
        self.bad_offers = 0
        self._next_query = 1
        self._counter = 0

    # -- opening an event ------------------------------------------------------------
    def check_total(
        self, total_w: int, *, interval: int, now: int, rng: nt.RandomSource = nt.SYSTEM_RNG
    ) -> DemandEvent | None:
        """Open an event if ``total_w`` is outside ``[Cmin, Cmax]``; else ``None``."""
        if self.cmin_w <= total_w <= self.cmax_w:
            return None
        n = len(self.roster)
        if total_w > self.cmax_w:
            side, action, level = "above", "curtail", self.level_above_w
            gap = total_w - self.cmax_w
        else:
            side, action, level = "below", "take_more", self.level_below_w
            gap = self.cmin_w - total_w
        t = choose_threshold(total_w, n, gap, level, side, bits=self.bits)
        return self.open_event(
            t, side=side, action=action, start_interval=interval + 1, now=now, rng=rng
        )

    def open_event(
        self,
        threshold: int,
        *,
        side: str,
        action: str,
        start_interval: int,
        now: int,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
    ) -> DemandEvent:
        """Open an event with an explicit threshold (tests, operators)."""
        self._counter += 1
        eid = hashlib.sha256(
            b"privmeter.dr.event-id"
            + self.group_id.encode()
            + self._counter.to_bytes(8, "big")
            + rng.getrandbits(128).to_bytes(16, "big")
        ).hexdigest()[:32]
        half = 1 << (self.bits - 1)
        if not -half < threshold < half:
            raise LocalProtocolError(
                f"threshold {threshold!r} outside (-2**{self.bits - 1}, 2**{self.bits - 1})"
            )
        fields: dict[str, Any] = {
            "event_id": eid,
            "group_id": self.group_id,
            "action": action,
            "side": side,
            "start_interval": start_interval,
            "duration_minutes": self.duration_minutes,
            "issued_at": now,
            "expires_at": now + self.lifetime_s,
            "bits": self.bits,
            "radix": self.radix,
        }
        unsigned = DemandEvent(**fields, signature=bytes(64))
        ev = DemandEvent(
            **fields, signature=self.signing_key.sign(EVENT_CONTEXT, unsigned.signed_payload())
        )
        self.events[eid] = _Event(ev, {}, {}, {}, {}, threshold)
        return ev

    def _event(self, event_id: str) -> _Event:
        e = self.events.get(event_id)
        if e is None:
            raise UnexpectedMessage("no such event", event_id=event_id)
        return e

    # -- echoes ------------------------------------------------------------------------
    def receive_echo(self, echo: Echo) -> None:
        e = self._event(echo.event_id)
        vk = self.roster.get(echo.meter_id)
        if vk is None:
            raise UnknownParty("echo from a meter outside the group", meter_id=echo.meter_id)
        vk.verify(ECHO_CONTEXT, echo.signed_payload(), echo.signature)
        if echo.digest != e.msg.digest() or echo.group_id != self.group_id:
            raise UnexpectedMessage("echo of another event digest", meter_id=echo.meter_id)
        MANAGER_METER.next(e.state(echo.meter_id), ManagerInput.ECHO, meter_id=echo.meter_id)
        e.echoes[echo.meter_id] = echo

    def echo_bundle(self, event_id: str, *, limit: int | None = None) -> EchoBundle:
        """The echoes collected so far, or the first ``limit`` (meters need ``quorum``)."""
        e = self._event(event_id)
        ids = sorted(e.echoes)[: limit if limit is not None else None]
        return EchoBundle(event_id=event_id, echoes=tuple(e.echoes[m] for m in ids))

    # -- comparisons ---------------------------------------------------------------------
    def receive_offer(self, off: Offer) -> None:
        """Keep a meter's signed offer (validated when its challenge is built)."""
        e = self._event(off.event_id)
        vk = self.roster.get(off.meter_id)
        if vk is None:
            raise UnknownParty("offer from a meter outside the group", meter_id=off.meter_id)
        nxt = MANAGER_METER.next(e.state(off.meter_id), ManagerInput.OFFER, meter_id=off.meter_id)
        vk.verify(OFFER_CONTEXT, off.signed_payload(), off.signature)
        e.offers[off.meter_id] = off
        e.states[off.meter_id] = nxt

    def offered(self, event_id: str) -> set[str]:
        return set(self._event(event_id).offers)

    def queries(
        self,
        event_id: str,
        *,
        now: int,
        meters: Sequence[str] | None = None,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
    ) -> list[ComparisonQuery]:
        """One signed challenge per meter of the group (or of ``meters``) that made an offer.

        A meter whose offer is malformed is skipped (counted in ``bad_offers``).
        """
        e = self._event(event_id)
        out = []
        for m in meters if meters is not None else sorted(self.roster):
            if m not in self.roster:
                raise LocalProtocolError(f"{m!r} is not in the group")
            if e.state(m) is not ManagerMeterState.OFFERED:  # no offer, or already challenged
                continue
            off = e.offers[m]
            nxt = MANAGER_METER.next(e.state(m), ManagerInput.QUERY, meter_id=m)
            try:
                sess = UtilityComparison(
                    off.offer,
                    e.threshold,
                    bits=self.bits,
                    radix=self.radix,
                    min_group_bits=self.min_group_bits,
                    allow_insecure=self.min_group_bits < MIN_GROUP_BITS,
                    rng=rng,
                )
            except PrivmeterError:
                self.bad_offers += 1
                continue
            qid = self._next_query
            self._next_query += 1
            payload = canonical(event_id, m, qid, now, sess.challenge.digest())
            out.append(
                ComparisonQuery(
                    event_id=event_id,
                    meter_id=m,
                    query_id=qid,
                    issued_at=now,
                    challenge=sess.challenge,
                    signature=self.signing_key.sign(QUERY_CONTEXT, payload),
                )
            )
            e.queries[m] = qid
            e.sessions[m] = sess
            e.states[m] = nxt
        return out

    def receive_answer(self, ans: ComparisonAnswer, *, now: int) -> bool:
        """Validate an answer and record ``[x >= T]`` for that meter; returns it."""
        e = self._event(ans.event_id)
        vk = self.roster.get(ans.meter_id)
        if vk is None:
            raise UnknownParty("answer from a meter outside the group", meter_id=ans.meter_id)
        if now > e.msg.expires_at + CLOCK_SKEW_S:
            raise StaleMessage("answer after the event expired", meter_id=ans.meter_id)
        if e.queries.get(ans.meter_id) != ans.query_id:
            raise UnexpectedMessage("answer to no outstanding query", meter_id=ans.meter_id)
        nxt = MANAGER_METER.next(e.state(ans.meter_id), ManagerInput.ANSWER, meter_id=ans.meter_id)
        sess = e.sessions[ans.meter_id]
        if ans.challenge_digest != sess.challenge.digest():
            raise UnexpectedMessage("answer to another challenge", meter_id=ans.meter_id)
        vk.verify(ANSWER_CONTEXT, ans.signed_payload(), ans.signature)
        bit = sess.receive(ans.zero_found)
        e.results[ans.meter_id] = bit
        e.states[ans.meter_id] = nxt
        return bit

    def results(self, event_id: str) -> dict[str, bool]:
        """meter id -> ``[x >= T]`` for the meters that answered."""
        return dict(self._event(event_id).results)

    def targets(self, event_id: str) -> set[str]:
        e = self._event(event_id)
        want = e.msg.side == "above"
        return {m for m, b in e.results.items() if b == want}

    def directives(self, event_id: str, *, now: int) -> list[Directive]:
        """Signed directives to exactly the meters on the wrong side (each once)."""
        e = self._event(event_id)
        out = []
        for m in sorted(self.targets(event_id)):
            if e.state(m) is not ManagerMeterState.ANSWERED:  # directed already
                continue
            nxt = MANAGER_METER.next(e.state(m), ManagerInput.DIRECTIVE, meter_id=m)
            payload = canonical(
                event_id, m, e.msg.action, e.msg.start_interval, e.msg.duration_minutes, now
            )
            out.append(
                Directive(
                    event_id=event_id,
                    meter_id=m,
                    action=e.msg.action,
                    start_interval=e.msg.start_interval,
                    duration_minutes=e.msg.duration_minutes,
                    issued_at=now,
                    signature=self.signing_key.sign(DIRECTIVE_CONTEXT, payload),
                )
            )
            e.states[m] = nxt
            e.directed.add(m)
        return out


# -- meter side ---------------------------------------------------------------------------


class MeterEventState(enum.Enum):
    """One demand event, as the meter sees it."""

    IDLE = "idle"  # not accepted (an unknown event id)
    OFFERED = "offered"  # accepted: offer and echo sent; the group's echoes awaited
    CERTIFIED = "certified"  # quorum of echoes of the same digest (or the plan asks none)
    ANSWERED = "answered"  # one signed bit released, the one-use key erased
    DIRECTED = "directed"  # a directive applied


class MeterInput(enum.Enum):
    EVENT = "event"  # DemandEvent
    ECHOES = "echoes"  # EchoBundle
    CERTIFY = "certify"  # local: the quorum reached (at once when the plan asks no echoes)
    QUERY = "query"  # ComparisonQuery
    DIRECTIVE = "directive"  # Directive


_ME, _MI = MeterEventState, MeterInput
_OUTSIDE = Refusal(UnexpectedMessage, "message outside any accepted event")
METER_EVENT = register(
    Machine(
        "demand event (meter)",
        MeterEventState,
        MeterInput,
        _ME.IDLE,
        {
            _ME.IDLE: {_MI.EVENT: _ME.OFFERED},
            _ME.OFFERED: {_MI.ECHOES: _ME.OFFERED, _MI.CERTIFY: _ME.CERTIFIED},
            _ME.CERTIFIED: {_MI.ECHOES: _ME.CERTIFIED, _MI.QUERY: _ME.ANSWERED},
            _ME.ANSWERED: {_MI.ECHOES: _ME.ANSWERED, _MI.DIRECTIVE: _ME.DIRECTED},
            _ME.DIRECTED: {_MI.ECHOES: _ME.DIRECTED},
        },
        {
            **{
                (st, _MI.EVENT): Refusal(ReplayedMessage, "event id already seen")
                for st in (_ME.OFFERED, _ME.CERTIFIED, _ME.ANSWERED, _ME.DIRECTED)
            },
            **{
                (st, _MI.CERTIFY): Refusal(LocalProtocolError, "event already certified")
                for st in (_ME.CERTIFIED, _ME.ANSWERED, _ME.DIRECTED)
            },
            (_ME.OFFERED, _MI.QUERY): Refusal(
                UnexpectedMessage, "event not certified by the group's echoes"
            ),
            (_ME.ANSWERED, _MI.QUERY): Refusal(ReplayedMessage, "this event was already answered"),
            (_ME.DIRECTED, _MI.QUERY): Refusal(ReplayedMessage, "this event was already answered"),
            (_ME.OFFERED, _MI.DIRECTIVE): Refusal(
                UnexpectedMessage, "directive for an event this meter did not answer"
            ),
            (_ME.CERTIFIED, _MI.DIRECTIVE): Refusal(
                UnexpectedMessage, "directive for an event this meter did not answer"
            ),
            (_ME.DIRECTED, _MI.DIRECTIVE): Refusal(ReplayedMessage, "directive already applied"),
        },
        default=_OUTSIDE,
    )
)


@dataclass(slots=True)
class _MeterEvent:
    msg: DemandEvent
    digest: bytes
    session: MeterComparison
    reading_interval: int
    state: MeterEventState = MeterEventState.OFFERED
    answered_query: int | None = None


class MeterDemandAgent:
    """A meter's side of demand management (sans-IO): budget, validity, answers, directives.

    ``now`` is always the meter's own clock, passed in by its caller (the
    service reads the OS clock); the agent never takes a time from a peer.
    ``key_group``: the named group of the meter's one-use comparison keys
    (:mod:`privmeter.crypto.elgamal`); the meter generates them itself.
    """

    def __init__(
        self,
        meter_id: str,
        group_id: str,
        signing_key: SigningKey,
        headend_key: VerifyKey,
        budget: ComparisonBudget,
        *,
        roster: Mapping[str, VerifyKey] | None = None,
        quorum: int | None = None,
        cap_w: int | None = None,
        max_event_minutes: int = 240,
        max_bits: int = 32,
        key_group: str = DEFAULT_GROUP,
        allow_insecure_group: bool = False,
    ) -> None:
        self.meter_id = meter_id
        self.group_id = group_id
        self.signing_key = signing_key
        self.headend_key = headend_key
        self.budget = budget
        self.key_group = get_group(key_group, allow_insecure=allow_insecure_group)
        self.roster = dict(roster or {})
        if budget.same_threshold_for_group:
            if quorum is None:  # a strict majority, and never below the plan's group size
                quorum = max(len(self.roster) // 2 + 1, budget.min_group_size)
            if quorum < max(budget.min_group_size, 1) or len(self.roster) < quorum:
                raise LocalProtocolError(
                    f"quorum {quorum} must be >= min_group_size {budget.min_group_size} "
                    f"and <= roster size {len(self.roster)}"
                )
        self.quorum = quorum or 0
        self.cap_w = cap_w
        self.max_event_minutes = max_event_minutes
        self.max_bits = max_bits
        self.events: dict[str, _MeterEvent] = {}
        self._accepted_per_interval: dict[int, int] = {}

    @classmethod
    def from_plan(
        cls,
        plan: Any,
        meter_id: str,
        group_id: str,
        signing_key: SigningKey,
        headend_key: VerifyKey,
        *,
        budget: ComparisonBudget | None = None,
        **kw: Any,
    ) -> MeterDemandAgent:
        """Budget, cap and maximum event length from a :class:`privmeter.grid.tariff.plans.Plan`
        (``budget``: a ledger the meter already keeps, e.g. restored after a restart)."""
        dr = plan.demand_response
        kw.setdefault("cap_w", dr.cap_w if dr is not None else None)
        kw.setdefault("max_event_minutes", dr.max_event_minutes if dr is not None else 240)
        return cls(
            meter_id,
            group_id,
            signing_key,
            headend_key,
            budget if budget is not None else ComparisonBudget.from_plan(plan),
            **kw,
        )

    def _fresh(self, ev: DemandEvent, now: int) -> None:
        if now + CLOCK_SKEW_S < ev.issued_at:
            raise StaleMessage("event issued in the future", event_id=ev.event_id)
        if now > ev.expires_at:
            raise StaleMessage("event expired", event_id=ev.event_id)

    def state(self, event_id: str) -> MeterEventState:
        """The event's state (:data:`METER_EVENT`; ``idle`` for an unknown id)."""
        me = self.events.get(event_id)
        return MeterEventState.IDLE if me is None else me.state

    def _step(self, event_id: str, inp: MeterInput) -> tuple[_MeterEvent, MeterEventState]:
        """The accepted event and its state after ``inp``; the table's refusal otherwise."""
        nxt = METER_EVENT.next(self.state(event_id), inp, event_id=event_id)
        return self.events[event_id], nxt

    def receive_event(
        self,
        ev: DemandEvent,
        *,
        reading_interval: int | None,
        reading_w: int | None,
        now: int,
        rng: nt.RandomSource = nt.SYSTEM_RNG,
    ) -> tuple[Offer, Echo]:
        """Validate and accept an event for the reading of ``reading_interval`` (W).

        Returns the signed offer (a fresh one-use key and the encrypted
        digits of that reading) and the signed echo of the event's digest.
        The reading must be the meter's own, of one of its clock's last
        :data:`MAX_READING_AGE` intervals (else :class:`~privmeter.errors.NoFreshReading`),
        and have budget left (checked here, charged when answering).
        """
        if not isinstance(ev, DemandEvent):
            raise MalformedMessage(f"expected DemandEvent, got {type(ev).__name__}")
        METER_EVENT.next(self.state(ev.event_id), MeterInput.EVENT, event_id=ev.event_id)
        self.headend_key.verify(EVENT_CONTEXT, ev.signed_payload(), ev.signature)
        if ev.group_id != self.group_id:
            raise UnexpectedMessage("event for another group", event_id=ev.event_id)
        self._fresh(ev, now)
        if ev.duration_minutes > self.max_event_minutes:
            raise PolicyError(
                f"event of {ev.duration_minutes} min exceeds the plan's {self.max_event_minutes}"
            )
        if ev.bits > self.max_bits:
            raise MalformedMessage(f"{ev.bits}-bit comparison exceeds the meter's {self.max_bits}")
        current = now // self.budget.interval_seconds
        if (
            reading_interval is None
            or reading_w is None
            or not current - MAX_READING_AGE <= reading_interval <= current
        ):
            raise NoFreshReading(
                f"no reading of the last {MAX_READING_AGE} intervals to compare",
                event_id=ev.event_id,
                interval=reading_interval,
            )
        if self._accepted_per_interval.get(reading_interval, 0) >= max(
            self.budget.comparisons_per_interval, 0
        ):
            raise BudgetExceeded(
                "no more events accepted for this reading", interval=reading_interval
            )
        self.budget.check(reading_interval)
        session = MeterComparison(self.key_group, reading_w, bits=ev.bits, radix=ev.radix, rng=rng)
        digest = ev.digest()
        me = _MeterEvent(ev, digest, session, reading_interval)
        if not self.budget.same_threshold_for_group:  # no echoes asked: certified at once
            me.state = METER_EVENT.next(me.state, MeterInput.CERTIFY, event_id=ev.event_id)
        self.events[ev.event_id] = me
        self._accepted_per_interval = {
            k: v
            for k, v in self._accepted_per_interval.items()
            if k >= reading_interval - MAX_READING_AGE
        }
        self._accepted_per_interval[reading_interval] = (
            self._accepted_per_interval.get(reading_interval, 0) + 1
        )
        payload = canonical(ev.event_id, self.group_id, self.meter_id, digest)
        echo = Echo(
            event_id=ev.event_id,
            group_id=self.group_id,
            meter_id=self.meter_id,
            digest=digest,
            signature=self.signing_key.sign(ECHO_CONTEXT, payload),
        )
        unsigned = Offer(
            event_id=ev.event_id,
            meter_id=self.meter_id,
            reading_interval=reading_interval,
            offer=session.offer,
            signature=bytes(64),
        )
        offer = Offer(
            event_id=ev.event_id,
            meter_id=self.meter_id,
            reading_interval=reading_interval,
            offer=session.offer,
            signature=self.signing_key.sign(OFFER_CONTEXT, unsigned.signed_payload()),
        )
        return offer, echo

    def receive_echoes(self, bundle: EchoBundle, *, now: int) -> bool:
        """Certify an event once ``quorum`` group members echoed the same digest."""
        me, _ = self._step(bundle.event_id, MeterInput.ECHOES)
        self._fresh(me.msg, now)
        if me.state is not MeterEventState.OFFERED:
            return True
        good: set[str] = set()
        for echo in bundle.echoes:
            vk = self.roster.get(echo.meter_id)
            if vk is None or echo.meter_id in good or echo.event_id != bundle.event_id:
                continue
            vk.verify(ECHO_CONTEXT, echo.signed_payload(), echo.signature)
            if echo.group_id != self.group_id or echo.digest != me.digest:
                raise ThresholdEquivocation(
                    "a group member was shown another broadcast",
                    event_id=bundle.event_id,
                    meter_id=echo.meter_id,
                )
            good.add(echo.meter_id)
            if len(good) >= self.quorum:
                me.state = METER_EVENT.next(me.state, MeterInput.CERTIFY, event_id=me.msg.event_id)
                return True
        return False

    def receive_query(self, q: ComparisonQuery, *, now: int) -> ComparisonAnswer:
        """Answer one challenge on this event's offer with one signed bit, within budget.

        Every check that can refuse (signature, event, certification,
        freshness, budget, the challenge's shape and elements) runs on public
        data before the key is used; then the budget is charged (and saved),
        every value is zero-tested and the key erased.
        """
        if not isinstance(q, ComparisonQuery):
            raise MalformedMessage(f"expected ComparisonQuery, got {type(q).__name__}")
        self.headend_key.verify(QUERY_CONTEXT, q.signed_payload(), q.signature)
        if q.meter_id != self.meter_id:
            raise UnexpectedMessage("query for another meter", meter_id=q.meter_id)
        me, nxt = self._step(q.event_id, MeterInput.QUERY)
        self._fresh(me.msg, now)
        if (
            abs(q.issued_at - now) > CLOCK_SKEW_S + MAX_EVENT_LIFETIME_S
            or q.issued_at + CLOCK_SKEW_S < me.msg.issued_at
        ):
            raise StaleMessage("query outside the event's lifetime", event_id=q.event_id)
        me.session.check(q.challenge)
        self.budget.charge(me.reading_interval)
        me.state, me.answered_query = nxt, q.query_id
        zero = me.session.answer(q.challenge)
        digest = q.challenge.digest()
        payload = canonical(q.event_id, self.meter_id, q.query_id, digest, int(zero))
        return ComparisonAnswer(
            event_id=q.event_id,
            meter_id=self.meter_id,
            query_id=q.query_id,
            challenge_digest=digest,
            zero_found=zero,
            signature=self.signing_key.sign(ANSWER_CONTEXT, payload),
        )

    def receive_directive(self, d: Directive, *, now: int) -> LoadInstruction:
        """Check a directive against its event and turn it into a load instruction."""
        if not isinstance(d, Directive):
            raise MalformedMessage(f"expected Directive, got {type(d).__name__}")
        self.headend_key.verify(DIRECTIVE_CONTEXT, d.signed_payload(), d.signature)
        if d.meter_id != self.meter_id:
            raise UnexpectedMessage("directive for another meter", meter_id=d.meter_id)
        me, nxt = self._step(d.event_id, MeterInput.DIRECTIVE)
        ev = me.msg
        if (d.action, d.start_interval, d.duration_minutes) != (
            ev.action,
            ev.start_interval,
            ev.duration_minutes,
        ):
            raise UnexpectedMessage("directive differs from its event", event_id=d.event_id)
        if now > ev.expires_at + CLOCK_SKEW_S or d.issued_at + CLOCK_SKEW_S < ev.issued_at:
            raise StaleMessage("directive outside the event's lifetime", event_id=d.event_id)
        me.state = nxt
        return LoadInstruction(
            event_id=d.event_id,
            action=d.action,
            start_interval=d.start_interval,
            duration_minutes=d.duration_minutes,
            limit_w=self.cap_w,
        )
