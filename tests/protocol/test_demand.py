"""Demand-management flow: plaintext agreement, budget, binary search, echoes, bad messages."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from privmeter.crypto.signing import SigningKey
from privmeter.errors import (
    BudgetExceeded,
    InvalidSignature,
    NoFreshReading,
    PolicyError,
    ReplayedMessage,
    StaleMessage,
    ThresholdEquivocation,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.grid.synthetic.curtailment import apply_directive
from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.demand import DemandManager, MeterDemandAgent
from privmeter.protocol.demand_budget import ComparisonBudget, choose_threshold, plaintext_targets
from privmeter.protocol.demand_messages import (
    DIRECTIVE_CONTEXT,
    EVENT_CONTEXT,
    ComparisonQuery,
    DemandEvent,
    Directive,
    Echo,
    EchoBundle,
    LoadInstruction,
)

NOW = 1_700_000_100  # inside interval 1_888_889 (900 s)
GROUP = "feeder-7"
TEST_GROUP = "test512"  # the meters' comparison keys: a small, INSECURE group for speed


def wire(msg):  # every message crosses the codec
    return decode(encode(msg), expect=type(msg))


def last_interval(now: int) -> int:
    """The reading a meter compares at ``now``: that of the interval that just ended."""
    return now // 900 - 1


def manager(he: SigningKey, roster, **kw) -> DemandManager:
    kw.setdefault("bits", 16)
    return DemandManager(he, GROUP, roster, min_group_bits=512, **kw)


class Group:
    """A head-end and ``n`` meters in memory."""

    def __init__(
        self,
        n: int = 12,
        *,
        same: bool = True,
        per_interval: int = 1,
        per_day: int = 4,
        quorum: int | None = None,
        cmin: int = 5_000,
        cmax: int = 15_000,
        seed: int = 1,
    ) -> None:
        self.rng = random.Random(seed)
        self.he = SigningKey.from_seed(b"H" * 32)
        self.keys = {f"m{i:02d}": SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(n)}
        self.roster = {m: k.verify_key for m, k in self.keys.items()}
        self.mgr = manager(
            self.he,
            self.roster,
            cmin_w=cmin,
            cmax_w=cmax,
            level_above_w=1000,
            level_below_w=2000,
            quorum=quorum,
        )
        self.agents = {
            m: MeterDemandAgent(
                m,
                GROUP,
                k,
                self.he.verify_key,
                ComparisonBudget(
                    comparisons_per_interval=per_interval,
                    comparisons_per_day=per_day,
                    same_threshold_for_group=same,
                    min_group_size=3,
                ),
                roster=self.roster,
                quorum=quorum,
                cap_w=1000,
                key_group=TEST_GROUP,
                allow_insecure_group=True,
            )
            for m, k in self.keys.items()
        }

    def accept(self, m: str, ev: DemandEvent, x: int, now: int = NOW) -> Echo:
        """Meter ``m`` takes the event with reading ``x``; its offer goes to the head-end."""
        offer, echo = self.agents[m].receive_event(
            wire(ev), reading_interval=last_interval(now), reading_w=x, now=now, rng=self.rng
        )
        self.mgr.receive_offer(wire(offer))
        return wire(echo)

    def announce(self, ev: DemandEvent, readings: dict[str, int], now: int = NOW) -> None:
        for m in readings:
            self.mgr.receive_echo(self.accept(m, ev, readings[m], now))
        bundle = wire(self.mgr.echo_bundle(ev.event_id))
        for m in readings:
            self.agents[m].receive_echoes(bundle, now=now)

    def query(self, ev: DemandEvent, m: str, now: int = NOW) -> ComparisonQuery:
        return wire(self.mgr.queries(ev.event_id, now=now, meters=[m], rng=self.rng)[0])

    def compare(self, ev: DemandEvent, readings: dict[str, int], now: int = NOW) -> None:
        for q in self.mgr.queries(ev.event_id, now=now, meters=sorted(readings), rng=self.rng):
            ans = self.agents[q.meter_id].receive_query(wire(q), now=now)
            self.mgr.receive_answer(wire(ans), now=now)


def test_whole_flow_matches_plaintext_and_curtailment_lowers_the_next_total() -> None:
    g = Group(cmax=11_000)
    rng = random.Random(5)
    # one hour of 1-minute load per household: base + deferrable part
    base = {m: rng.randint(100, 900) for m in g.agents}
    deferrable = {m: rng.choice([0, 0, 800, 1500, 2500]) for m in g.agents}
    minutes = {m: np.full(60, base[m] + deferrable[m], dtype=np.int64) for m in g.agents}
    readings = {m: int(minutes[m][0]) for m in g.agents}
    total = sum(readings.values())
    assert total > 11_000
    ev = g.mgr.check_total(total, interval=NOW // 900, now=NOW, rng=g.rng)
    assert ev is not None and ev.side == "above" and ev.action == "curtail"
    g.announce(ev, readings)
    g.compare(ev, readings)
    t = g.mgr.events[ev.event_id].threshold
    expected = plaintext_targets(readings, t, "above", bits=16)
    assert g.mgr.targets(ev.event_id) == expected
    assert g.mgr.results(ev.event_id) == {m: x >= t for m, x in readings.items()}
    assert 0 < len(expected) < len(readings)
    after = dict(minutes)
    for d in g.mgr.directives(ev.event_id, now=NOW):
        assert d.meter_id in expected
        ins = g.agents[d.meter_id].receive_directive(wire(d), now=NOW)
        assert ins.limit_w == 1000 and ins.action == "curtail"
        res = apply_directive(
            minutes[d.meter_id],
            deferrable_w=np.full(60, deferrable[d.meter_id]),
            start_minute=0,
            duration_minutes=ins.duration_minutes,
            action=ins.action,
            limit_w=ins.limit_w,
        )
        after[d.meter_id] = res.minute_w
    assert g.mgr.directives(ev.event_id, now=NOW) == []  # each meter directed once
    new_total = sum(int(a[1]) for a in after.values())
    assert new_total < total
    shed = sum(min(deferrable[m], max(readings[m] - 1000, 0)) for m in expected)
    assert total - new_total == shed


def test_below_cmin_targets_meters_below_threshold() -> None:
    g = Group(cmin=30_000, cmax=60_000)
    readings = {m: 200 * i for i, m in enumerate(sorted(g.agents))}
    ev = g.mgr.check_total(sum(readings.values()), interval=NOW // 900, now=NOW, rng=g.rng)
    assert ev is not None and ev.side == "below" and ev.action == "take_more"
    g.announce(ev, readings)
    g.compare(ev, readings)
    t = g.mgr.events[ev.event_id].threshold
    assert g.mgr.targets(ev.event_id) == {m for m, x in readings.items() if x < t}
    assert g.mgr.check_total(40_000, interval=1, now=NOW) is None


def test_threshold_policy() -> None:
    # above: a larger excess needs a lower threshold (more households)
    t_small = choose_threshold(20_000, 10, 1_000, 1_000, "above")
    t_big = choose_threshold(20_000, 10, 8_000, 1_000, "above")
    assert 1_000 <= t_big < t_small
    assert choose_threshold(20_000, 10, 10**9, 1_000, "above") == 1_000
    # below: a larger deficit needs a higher threshold
    b_small = choose_threshold(5_000, 10, 500, 2_000, "below")
    b_big = choose_threshold(5_000, 10, 5_000, 2_000, "below")
    assert 0 < b_small < b_big <= 2_000
    assert choose_threshold(10**9, 1, 10**9, 10**9, "above", bits=16) == 2**15 - 1


def test_budget_per_reading_interval_and_day() -> None:
    g = Group(same=False, per_interval=1, per_day=2)
    a = g.agents["m00"]
    day_start = NOW - NOW % 86400
    times = [day_start + 910, day_start + 910 + 900, day_start + 910 + 1800]
    for i, now in enumerate(times):
        ev = g.mgr.open_event(
            100, side="above", action="curtail", start_interval=now // 900 + 1, now=now
        )
        if i == 2:  # the day's comparisons are used up: refused before any offer
            before = a.budget.state()
            with pytest.raises(BudgetExceeded):
                g.accept("m00", ev, 50, now)
            assert a.budget.state() == before and ev.event_id not in a.events
            continue
        g.accept("m00", ev, 50, now)
        g.mgr.receive_answer(wire(a.receive_query(g.query(ev, "m00", now), now=now)), now=now)
        # a second event on the same reading is refused
        ev2 = g.mgr.open_event(100, side="above", action="curtail", start_interval=1, now=now)
        with pytest.raises(BudgetExceeded):
            g.accept("m00", ev2, 50, now)
    # the readings of the next day have a fresh budget
    later = day_start + 86400 + 905
    ev = g.mgr.open_event(
        100, side="above", action="curtail", start_interval=later // 900, now=later
    )
    g.accept("m00", ev, 500, later)
    g.mgr.receive_answer(wire(a.receive_query(g.query(ev, "m00", later), now=later)), now=later)


def test_budget_is_charged_when_answering_and_checked_again() -> None:
    """Two events accepted on one reading (per_interval=2, per_day=1): the second answer is refused."""
    g = Group(same=False, per_interval=2, per_day=1)
    a = g.agents["m01"]
    evs = [
        g.mgr.open_event(100, side="above", action="curtail", start_interval=1, now=NOW)
        for _ in range(2)
    ]
    for ev in evs:
        g.accept("m01", ev, 50)
    g.mgr.receive_answer(wire(a.receive_query(g.query(evs[0], "m01"), now=NOW)), now=NOW)
    q = g.query(evs[1], "m01")
    before = a.budget.state()
    with pytest.raises(BudgetExceeded):
        a.receive_query(q, now=NOW)
    assert a.budget.state() == before and a.events[evs[1].event_id].answered_query is None


def test_meter_compares_only_a_fresh_reading_of_its_own_clock() -> None:
    g = Group(same=False)
    a = g.agents["m02"]
    ev = g.mgr.open_event(100, side="above", action="curtail", start_interval=1, now=NOW)
    for riv in (None, last_interval(NOW) - 3, last_interval(NOW) + 2):
        with pytest.raises(NoFreshReading):
            a.receive_event(wire(ev), reading_interval=riv, reading_w=5, now=NOW)
    assert a.events == {}


@pytest.mark.parametrize("budget", [1, 3, 5])
def test_binary_search_learns_at_most_budget_bits(budget: int) -> None:
    """An adaptive utility bisects one meter's (constant) load; it is stopped after ``budget`` bits."""
    bits = 16
    g = Group(same=False, per_interval=1, per_day=budget)
    secret = 12_345
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)  # reading in [lo, hi)
    day_start = NOW - NOW % 86400
    learned = 0
    for k in range(bits):
        now = day_start + 900 * (k + 1) + 1
        t = (lo + hi) // 2
        ev = g.mgr.open_event(
            t, side="above", action="curtail", start_interval=now // 900 + 1, now=now
        )
        try:
            g.accept("m03", ev, secret, now)
        except BudgetExceeded:
            break
        ans = g.agents["m03"].receive_query(g.query(ev, "m03", now), now=now)
        if g.mgr.receive_answer(wire(ans), now=now):
            lo = t
        else:
            hi = t
        learned += 1
        assert lo <= secret < hi
    assert learned == budget
    assert hi - lo >= 2 ** (bits - budget)


def test_same_event_needs_a_quorum_of_echoes() -> None:
    g = Group(n=6, quorum=4)
    ev = g.mgr.open_event(500, side="above", action="curtail", start_interval=1, now=NOW)
    for m in sorted(g.agents)[:3]:
        g.mgr.receive_echo(g.accept(m, ev, 10))
    a = g.agents["m00"]
    assert a.receive_echoes(wire(g.mgr.echo_bundle(ev.event_id)), now=NOW) is False
    q = g.query(ev, "m00")
    with pytest.raises(UnexpectedMessage):
        a.receive_query(q, now=NOW)
    g.mgr.receive_echo(g.accept("m03", ev, 10))
    assert a.receive_echoes(wire(g.mgr.echo_bundle(ev.event_id)), now=NOW) is True
    a.receive_query(q, now=NOW)


def test_different_event_for_one_meter_is_detected() -> None:
    """The head-end shows m00 another event (same id, other side): m00 sees others' echoes on another digest."""
    g = Group(n=6, quorum=4)
    ev_all = g.mgr.open_event(500, side="above", action="curtail", start_interval=1, now=NOW)
    fields = {f.name: getattr(ev_all, f.name) for f in dataclasses.fields(ev_all)}
    fields["side"] = "below"
    fields.pop("signature")
    unsigned = DemandEvent(**fields, signature=bytes(64))
    ev_target = DemandEvent(**fields, signature=g.he.sign(EVENT_CONTEXT, unsigned.signed_payload()))
    others = [g.accept(m, ev_all, 100) for m in sorted(g.agents)[1:]]
    g.accept("m00", ev_target, 100)
    bundle = EchoBundle(event_id=ev_all.event_id, echoes=tuple(others))
    with pytest.raises(ThresholdEquivocation):
        g.agents["m00"].receive_echoes(wire(bundle), now=NOW)
    q = g.query(ev_all, "m00")
    with pytest.raises(UnexpectedMessage):
        g.agents["m00"].receive_query(q, now=NOW)
    # echoes from outside the roster and duplicates do not count
    forged = Echo(
        event_id=ev_all.event_id,
        group_id=GROUP,
        meter_id="intruder",
        digest=ev_target.digest(),
        signature=bytes(64),
    )
    dup = EchoBundle(event_id=ev_all.event_id, echoes=(forged,) * 5)
    assert g.agents["m00"].receive_echoes(wire(dup), now=NOW) is False


def test_meter_rejects_bad_events() -> None:
    g = Group(same=False)
    a = g.agents["m01"]
    ev = g.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW)
    riv = last_interval(NOW)

    def take(e: DemandEvent, now: int = NOW) -> object:
        return a.receive_event(e, reading_interval=last_interval(now), reading_w=5, now=now)

    forged = dataclasses.replace(ev, duration_minutes=ev.duration_minutes + 1)
    with pytest.raises(InvalidSignature):
        take(forged)
    with pytest.raises(StaleMessage):
        take(ev, ev.expires_at + 1)
    with pytest.raises(StaleMessage):
        take(ev, NOW - 3600)
    other = Group(same=False)
    other.mgr.group_id = "feeder-8"
    with pytest.raises(UnexpectedMessage):
        take(other.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW))
    long = manager(
        g.he, g.roster, cmin_w=0, cmax_w=1, level_above_w=1, level_below_w=1, duration_minutes=600
    )
    with pytest.raises(PolicyError):
        take(long.open_event(10, side="above", action="curtail", start_interval=1, now=NOW))
    assert a.events == {}
    a.receive_event(wire(ev), reading_interval=riv, reading_w=5, now=NOW)
    with pytest.raises(ReplayedMessage):
        take(wire(ev), NOW + 1)


def test_meter_rejects_bad_queries_and_directives() -> None:
    g = Group(same=False, per_interval=2)
    a = g.agents["m02"]
    ev = g.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW)
    g.accept("m02", ev, 50)
    g.accept("m03", ev, 50)
    q = g.query(ev, "m02")
    with pytest.raises(InvalidSignature):
        a.receive_query(dataclasses.replace(q, query_id=q.query_id + 1), now=NOW)
    q_other = g.query(ev, "m03")
    with pytest.raises(UnexpectedMessage):
        a.receive_query(q_other, now=NOW)
    with pytest.raises(StaleMessage):
        a.receive_query(q, now=ev.expires_at + 1)
    # no directive before an answer (the head-end signs one anyway; its manager would not)
    early = Directive(
        event_id=ev.event_id,
        meter_id="m02",
        action="curtail",
        start_interval=1,
        duration_minutes=30,
        issued_at=NOW,
        signature=bytes(64),
    )
    early = dataclasses.replace(
        early, signature=g.he.sign(DIRECTIVE_CONTEXT, early.signed_payload())
    )
    with pytest.raises(UnexpectedMessage):
        a.receive_directive(wire(early), now=NOW)
    ans = a.receive_query(q, now=NOW)
    with pytest.raises(ReplayedMessage):
        a.receive_query(q, now=NOW)
    assert g.mgr.receive_answer(wire(ans), now=NOW) is True
    d = g.mgr.directives(ev.event_id, now=NOW)[0]
    with pytest.raises(InvalidSignature):
        a.receive_directive(dataclasses.replace(d, action="take_more"), now=NOW)
    bad = Directive(
        event_id=d.event_id,
        meter_id="m02",
        action="shift",
        start_interval=d.start_interval,
        duration_minutes=d.duration_minutes,
        issued_at=NOW,
        signature=bytes(64),
    )
    payload = bad.signed_payload()
    bad = dataclasses.replace(bad, signature=g.he.sign(DIRECTIVE_CONTEXT, payload))
    with pytest.raises(UnexpectedMessage):  # directive differs from its event
        a.receive_directive(bad, now=NOW)
    with pytest.raises(StaleMessage):
        a.receive_directive(wire(d), now=ev.expires_at + 3600)
    ins = a.receive_directive(wire(d), now=NOW)
    assert ins == LoadInstruction(
        event_id=ev.event_id, action="curtail", start_interval=1, duration_minutes=30, limit_w=1000
    )
    with pytest.raises(ReplayedMessage):
        a.receive_directive(wire(d), now=NOW)


def test_utility_rejects_bad_offers_and_answers() -> None:
    g = Group(same=False)
    ev = g.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW)
    off4, _ = g.agents["m04"].receive_event(
        wire(ev), reading_interval=last_interval(NOW), reading_w=5, now=NOW
    )
    with pytest.raises(InvalidSignature):  # m04's offer presented as m06's
        g.mgr.receive_offer(dataclasses.replace(off4, meter_id="m06"))
    with pytest.raises(UnknownParty):
        g.mgr.receive_offer(dataclasses.replace(off4, meter_id="stranger"))
    g.mgr.receive_offer(wire(off4))
    with pytest.raises(ReplayedMessage):
        g.mgr.receive_offer(wire(off4))
    g.accept("m05", ev, 50)
    q4, q5 = g.mgr.queries(ev.event_id, now=NOW, meters=["m04", "m05"], rng=g.rng)
    assert g.mgr.queries(ev.event_id, now=NOW, meters=["m04", "m06"]) == []  # one query per offer
    a4 = g.agents["m04"].receive_query(wire(q4), now=NOW)
    a5 = g.agents["m05"].receive_query(wire(q5), now=NOW)
    with pytest.raises(UnknownParty):
        g.mgr.receive_answer(dataclasses.replace(a4, meter_id="stranger"), now=NOW)
    with pytest.raises(UnexpectedMessage):
        g.mgr.receive_answer(dataclasses.replace(a4, event_id="nope"), now=NOW)
    with pytest.raises(UnexpectedMessage):  # answer to a query it was not sent
        g.mgr.receive_answer(dataclasses.replace(a4, query_id=q5.query_id), now=NOW)
    with pytest.raises(UnexpectedMessage):  # m05's answer presented as m04's
        g.mgr.receive_answer(dataclasses.replace(a5, meter_id="m04", query_id=q4.query_id), now=NOW)
    with pytest.raises(InvalidSignature):  # the bit flipped
        g.mgr.receive_answer(dataclasses.replace(a4, zero_found=not a4.zero_found), now=NOW)
    with pytest.raises(StaleMessage):
        g.mgr.receive_answer(a4, now=ev.expires_at + 3600)
    assert g.mgr.results(ev.event_id) == {}
    assert g.mgr.receive_answer(wire(a4), now=NOW) is False
    with pytest.raises(ReplayedMessage):
        g.mgr.receive_answer(wire(a4), now=NOW)
    assert g.mgr.receive_answer(wire(a5), now=NOW) is True


def test_from_plan() -> None:
    plan = builtin_plan("economy7")
    b = ComparisonBudget.from_plan(plan)
    assert (b.comparisons_per_interval, b.comparisons_per_day, b.same_threshold_for_group) == (
        1,
        4,
        True,
    )
    keys = [SigningKey.from_seed(bytes([i]) * 32) for i in range(5)]
    roster = {f"m{i}": k.verify_key for i, k in enumerate(keys)}
    a = MeterDemandAgent.from_plan(plan, "m0", "g", keys[0], keys[1].verify_key, roster=roster)
    assert a.cap_w == 4000 and a.max_event_minutes == 180 and a.quorum == 5
    assert a.key_group.name == "ffdhe3072"
