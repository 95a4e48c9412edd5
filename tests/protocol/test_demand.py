"""Demand-management flow: plaintext agreement, budget, binary search, echoes, bad messages."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from privmeter.crypto import dgk
from privmeter.crypto.signing import SigningKey
from privmeter.errors import (
    BudgetExceeded,
    InvalidSignature,
    PolicyError,
    ReplayedMessage,
    StaleMessage,
    ThresholdEquivocation,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.grid.curtailment import apply_directive
from privmeter.grid.plans import builtin_plan
from privmeter.protocol import demand as dm
from privmeter.protocol.codec import decode, encode

NOW = 1_700_000_100  # inside interval 1_888_889 (900 s)
GROUP = "feeder-7"


def wire(msg):  # every message crosses the codec
    return decode(encode(msg), expect=type(msg))


@pytest.fixture(scope="module")
def dkey() -> dgk.DGKPrivateKey:
    _, sk = dgk.generate_keypair(512, subgroup_bits=48, rng=random.Random(11), insecure_for_tests=True)
    return sk


class Group:
    """A head-end and ``n`` meters in memory."""

    def __init__(self, dkey: dgk.DGKPrivateKey, n: int = 12, *, same: bool = True, per_interval: int = 1,
                 per_day: int = 4, quorum: int | None = None, cmin: int = 5_000, cmax: int = 15_000,
                 seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.he = SigningKey.from_seed(b"H" * 32)
        self.keys = {f"m{i:02d}": SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(n)}
        self.roster = {m: k.verify_key for m, k in self.keys.items()}
        self.mgr = dm.DemandManager(dkey, self.he, GROUP, self.roster, cmin_w=cmin, cmax_w=cmax,
                                    level_above_w=1000, level_below_w=2000, bits=16, quorum=quorum)
        self.agents = {
            m: dm.MeterDemandAgent(
                m, GROUP, k, self.he.verify_key, dkey.public_key,
                dm.ComparisonBudget(comparisons_per_interval=per_interval, comparisons_per_day=per_day,
                                    same_threshold_for_group=same, min_group_size=3),
                roster=self.roster, quorum=quorum, cap_w=1000,
            )
            for m, k in self.keys.items()
        }

    def announce(self, ev: dm.DemandEvent, now: int = NOW, meters=None) -> None:
        for m in meters or self.agents:
            self.mgr.receive_echo(wire(self.agents[m].receive_event(wire(ev), now=now)))
        bundle = wire(self.mgr.echo_bundle(ev.event_id))
        for m in meters or self.agents:
            self.agents[m].receive_echoes(bundle, now=now)

    def compare(self, ev: dm.DemandEvent, readings: dict[str, int], now: int = NOW) -> None:
        for q in self.mgr.queries(ev.event_id, now=now, meters=sorted(readings)):
            ans = self.agents[q.meter_id].receive_query(wire(q), reading_w=readings[q.meter_id], now=now, rng=self.rng)
            self.mgr.receive_answer(wire(ans), now=now)


def test_whole_flow_matches_plaintext_and_curtailment_lowers_the_next_total(dkey) -> None:
    g = Group(dkey, cmax=11_000)
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
    g.announce(ev)
    g.compare(ev, readings)
    t = g.mgr.events[ev.event_id].threshold
    expected = dm.plaintext_targets(readings, t, "above", bits=16)
    assert g.mgr.targets(ev.event_id) == expected
    assert g.mgr.results(ev.event_id) == {m: x >= t for m, x in readings.items()}
    assert 0 < len(expected) < len(readings)
    after = dict(minutes)
    for d in g.mgr.directives(ev.event_id, now=NOW):
        assert d.meter_id in expected
        ins = g.agents[d.meter_id].receive_directive(wire(d), now=NOW)
        assert ins.limit_w == 1000 and ins.action == "curtail"
        res = apply_directive(minutes[d.meter_id], deferrable_w=np.full(60, deferrable[d.meter_id]),
                              start_minute=0, duration_minutes=ins.duration_minutes, action=ins.action,
                              limit_w=ins.limit_w)
        after[d.meter_id] = res.minute_w
    assert g.mgr.directives(ev.event_id, now=NOW) == []  # each meter directed once
    new_total = sum(int(a[1]) for a in after.values())
    assert new_total < total
    shed = sum(min(deferrable[m], max(readings[m] - 1000, 0)) for m in expected)
    assert total - new_total == shed


def test_below_cmin_targets_meters_below_threshold(dkey) -> None:
    g = Group(dkey, cmin=30_000, cmax=60_000)
    readings = {m: 200 * i for i, m in enumerate(sorted(g.agents))}
    ev = g.mgr.check_total(sum(readings.values()), interval=NOW // 900, now=NOW, rng=g.rng)
    assert ev is not None and ev.side == "below" and ev.action == "take_more"
    g.announce(ev)
    g.compare(ev, readings)
    t = g.mgr.events[ev.event_id].threshold
    assert g.mgr.targets(ev.event_id) == {m for m, x in readings.items() if x < t}
    assert g.mgr.check_total(40_000, interval=1, now=NOW) is None


def test_threshold_policy() -> None:
    # above: a larger excess needs a lower threshold (more households)
    t_small = dm.choose_threshold(20_000, 10, 1_000, 1_000, "above")
    t_big = dm.choose_threshold(20_000, 10, 8_000, 1_000, "above")
    assert 1_000 <= t_big < t_small
    assert dm.choose_threshold(20_000, 10, 10**9, 1_000, "above") == 1_000
    # below: a larger deficit needs a higher threshold
    b_small = dm.choose_threshold(5_000, 10, 500, 2_000, "below")
    b_big = dm.choose_threshold(5_000, 10, 5_000, 2_000, "below")
    assert 0 < b_small < b_big <= 2_000
    assert dm.choose_threshold(10**9, 1, 10**9, 10**9, "above", bits=16) == 2**15 - 1


def test_budget_per_interval_and_day(dkey) -> None:
    g = Group(dkey, same=False, per_interval=1, per_day=2)
    a = g.agents["m00"]
    day_start = NOW - NOW % 86400
    times = [day_start + 10, day_start + 10 + 900, day_start + 10 + 1800]
    for i, now in enumerate(times):
        ev = g.mgr.open_event(100, side="above", action="curtail", start_interval=now // 900 + 1, now=now)
        if i == 2:
            # accepted (one per interval) but the day's comparisons are used up
            a.receive_event(wire(ev), now=now)
            q = g.mgr.queries(ev.event_id, now=now, meters=["m00"])[0]
            before = a.budget.used_today(now)
            with pytest.raises(BudgetExceeded):
                a.receive_query(wire(q), reading_w=50, now=now)
            assert a.budget.used_today(now) == before
            assert a.events[ev.event_id].answered_query is None
            continue
        a.receive_event(wire(ev), now=now)
        q = g.mgr.queries(ev.event_id, now=now, meters=["m00"])[0]
        g.mgr.receive_answer(wire(a.receive_query(wire(q), reading_w=50, now=now)), now=now)
        # a second event in the same interval is refused
        ev2 = g.mgr.open_event(100, side="above", action="curtail", start_interval=1, now=now)
        with pytest.raises(BudgetExceeded):
            a.receive_event(wire(ev2), now=now)
    # the next day the budget is fresh
    later = day_start + 86400 + 5
    ev = g.mgr.open_event(100, side="above", action="curtail", start_interval=later // 900, now=later)
    a.receive_event(wire(ev), now=later)
    q = g.mgr.queries(ev.event_id, now=later, meters=["m00"])[0]
    g.mgr.receive_answer(wire(a.receive_query(wire(q), reading_w=500, now=later)), now=later)


@pytest.mark.parametrize("budget", [1, 3, 5])
def test_binary_search_learns_at_most_budget_bits(dkey, budget: int) -> None:
    """An adaptive utility bisects one meter's reading; it is stopped after ``budget`` bits."""
    bits = 16
    g = Group(dkey, same=False, per_interval=1, per_day=budget)
    meter = g.agents["m03"]
    secret = 12_345
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1)  # reading in [lo, hi)
    day_start = NOW - NOW % 86400
    learned = 0
    for k in range(bits):
        now = day_start + 900 * k + 1
        t = (lo + hi) // 2
        ev = g.mgr.open_event(t, side="above", action="curtail", start_interval=now // 900 + 1, now=now)
        meter.receive_event(wire(ev), now=now)
        q = g.mgr.queries(ev.event_id, now=now, meters=["m03"])[0]
        try:
            ans = meter.receive_query(wire(q), reading_w=secret, now=now, rng=g.rng)
        except BudgetExceeded:
            break
        if g.mgr.receive_answer(wire(ans), now=now):
            lo = t
        else:
            hi = t
        learned += 1
        assert lo <= secret < hi
    assert learned == budget
    assert hi - lo >= 2 ** (bits - budget)


def test_same_threshold_needs_a_quorum_of_echoes(dkey) -> None:
    g = Group(dkey, n=6, quorum=4)
    ev = g.mgr.open_event(500, side="above", action="curtail", start_interval=1, now=NOW)
    echoes = [g.agents[m].receive_event(wire(ev), now=NOW) for m in sorted(g.agents)[:3]]
    for e in echoes:
        g.mgr.receive_echo(e)
    a = g.agents["m00"]
    assert a.receive_echoes(wire(g.mgr.echo_bundle(ev.event_id)), now=NOW) is False
    q = g.mgr.queries(ev.event_id, now=NOW, meters=["m00"])[0]
    with pytest.raises(UnexpectedMessage):
        a.receive_query(wire(q), reading_w=10, now=NOW)
    g.mgr.receive_echo(g.agents["m03"].receive_event(wire(ev), now=NOW))
    assert a.receive_echoes(wire(g.mgr.echo_bundle(ev.event_id)), now=NOW) is True
    a.receive_query(wire(q), reading_w=10, now=NOW)


def test_different_threshold_for_one_meter_is_detected(dkey) -> None:
    """The head-end shows m00 a different T: m00 sees others' echoes on another digest."""
    g = Group(dkey, n=6, quorum=4)
    ev_all = g.mgr.open_event(500, side="above", action="curtail", start_interval=1, now=NOW)
    fields = {f.name: getattr(ev_all, f.name) for f in dataclasses.fields(ev_all)}
    fields["threshold"] = g.mgr.open_event(90, side="above", action="curtail", start_interval=1,
                                           now=NOW).threshold
    fields.pop("signature")
    unsigned = dm.DemandEvent(**fields, signature=bytes(64))
    ev_target = dm.DemandEvent(**fields, signature=g.he.sign(dm.EVENT_CONTEXT, unsigned.signed_payload()))
    others = [g.agents[m].receive_event(wire(ev_all), now=NOW) for m in sorted(g.agents)[1:]]
    g.agents["m00"].receive_event(wire(ev_target), now=NOW)
    bundle = dm.EchoBundle(event_id=ev_all.event_id, echoes=tuple(others))
    with pytest.raises(ThresholdEquivocation):
        g.agents["m00"].receive_echoes(wire(bundle), now=NOW)
    q = g.mgr.queries(ev_all.event_id, now=NOW, meters=["m00"])[0]
    with pytest.raises(UnexpectedMessage):
        g.agents["m00"].receive_query(wire(q), reading_w=100, now=NOW)
    # echoes from outside the roster and duplicates do not count
    forged = dm.Echo(event_id=ev_all.event_id, group_id=GROUP, meter_id="intruder", digest=ev_target.digest(),
                     signature=bytes(64))
    dup = dm.EchoBundle(event_id=ev_all.event_id, echoes=(forged,) * 5)
    assert g.agents["m00"].receive_echoes(wire(dup), now=NOW) is False


def test_meter_rejects_bad_events(dkey) -> None:
    g = Group(dkey, same=False)
    a = g.agents["m01"]
    ev = g.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW)
    forged = dataclasses.replace(ev, duration_minutes=ev.duration_minutes + 1)
    with pytest.raises(InvalidSignature):
        a.receive_event(forged, now=NOW)
    with pytest.raises(StaleMessage):
        a.receive_event(ev, now=ev.expires_at + 1)
    with pytest.raises(StaleMessage):
        a.receive_event(ev, now=NOW - 3600)
    other = Group(dkey, same=False)
    other.mgr.group_id = "feeder-8"
    with pytest.raises(UnexpectedMessage):
        a.receive_event(other.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW),
                        now=NOW)
    long = dm.DemandManager(dkey, g.he, GROUP, g.roster, cmin_w=0, cmax_w=1, level_above_w=1,
                            level_below_w=1, duration_minutes=600, bits=16)
    with pytest.raises(PolicyError):
        a.receive_event(long.open_event(10, side="above", action="curtail", start_interval=1, now=NOW), now=NOW)
    assert a.events == {}
    a.receive_event(wire(ev), now=NOW)
    with pytest.raises(ReplayedMessage):
        a.receive_event(wire(ev), now=NOW + 1)


def test_meter_rejects_bad_queries_and_directives(dkey) -> None:
    g = Group(dkey, same=False, per_interval=2)
    a = g.agents["m02"]
    ev = g.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW)
    q = g.mgr.queries(ev.event_id, now=NOW, meters=["m02"])[0]
    with pytest.raises(UnexpectedMessage):  # out of event: not yet accepted
        a.receive_query(wire(q), reading_w=50, now=NOW)
    a.receive_event(wire(ev), now=NOW)
    with pytest.raises(InvalidSignature):
        a.receive_query(dataclasses.replace(q, query_id=q.query_id + 1), reading_w=50, now=NOW)
    q_other = g.mgr.queries(ev.event_id, now=NOW, meters=["m03"])[0]
    with pytest.raises(UnexpectedMessage):
        a.receive_query(wire(q_other), reading_w=50, now=NOW)
    with pytest.raises(StaleMessage):
        a.receive_query(wire(q), reading_w=50, now=ev.expires_at + 1)
    # no directive before an answer
    g.mgr.events[ev.event_id].results["m02"] = True  # the head-end pretends
    d = g.mgr.directives(ev.event_id, now=NOW)[0]
    with pytest.raises(UnexpectedMessage):
        a.receive_directive(wire(d), now=NOW)
    del g.mgr.events[ev.event_id].results["m02"]
    g.mgr.events[ev.event_id].directed.clear()
    ans = a.receive_query(wire(q), reading_w=50, now=NOW)
    with pytest.raises(ReplayedMessage):
        a.receive_query(wire(q), reading_w=50, now=NOW)
    assert g.mgr.receive_answer(wire(ans), now=NOW) is True
    d = g.mgr.directives(ev.event_id, now=NOW)[0]
    with pytest.raises(InvalidSignature):
        a.receive_directive(dataclasses.replace(d, action="take_more"), now=NOW)
    bad = dm.Directive(event_id=d.event_id, meter_id="m02", action="shift", start_interval=d.start_interval,
                       duration_minutes=d.duration_minutes, issued_at=NOW, signature=bytes(64))
    payload = bad.signed_payload()
    bad = dataclasses.replace(bad, signature=g.he.sign(dm.DIRECTIVE_CONTEXT, payload))
    with pytest.raises(UnexpectedMessage):  # directive differs from its event
        a.receive_directive(bad, now=NOW)
    with pytest.raises(StaleMessage):
        a.receive_directive(wire(d), now=ev.expires_at + 3600)
    ins = a.receive_directive(wire(d), now=NOW)
    assert ins == dm.LoadInstruction(event_id=ev.event_id, action="curtail", start_interval=1,
                                     duration_minutes=30, limit_w=1000)
    with pytest.raises(ReplayedMessage):
        a.receive_directive(wire(d), now=NOW)


def test_utility_rejects_bad_answers(dkey) -> None:
    g = Group(dkey, same=False)
    ev = g.mgr.open_event(10, side="above", action="curtail", start_interval=1, now=NOW)
    for m in ("m04", "m05"):
        g.agents[m].receive_event(wire(ev), now=NOW)
    q4, q5 = g.mgr.queries(ev.event_id, now=NOW, meters=["m04", "m05"])
    a4 = g.agents["m04"].receive_query(wire(q4), reading_w=5, now=NOW)
    a5 = g.agents["m05"].receive_query(wire(q5), reading_w=50, now=NOW)
    with pytest.raises(UnknownParty):
        g.mgr.receive_answer(dataclasses.replace(a4, meter_id="stranger"), now=NOW)
    with pytest.raises(UnexpectedMessage):
        g.mgr.receive_answer(dataclasses.replace(a4, event_id="nope"), now=NOW)
    with pytest.raises(UnexpectedMessage):  # answer to a query it was not sent
        g.mgr.receive_answer(dataclasses.replace(a4, query_id=q5.query_id), now=NOW)
    with pytest.raises(InvalidSignature):  # m05's reply presented as m04's
        g.mgr.receive_answer(dataclasses.replace(a5, meter_id="m04", query_id=q4.query_id), now=NOW)
    with pytest.raises(StaleMessage):
        g.mgr.receive_answer(a4, now=ev.expires_at + 3600)
    assert g.mgr.results(ev.event_id) == {}
    assert g.mgr.receive_answer(wire(a4), now=NOW) is False
    with pytest.raises(ReplayedMessage):
        g.mgr.receive_answer(wire(a4), now=NOW)
    assert g.mgr.receive_answer(wire(a5), now=NOW) is True


def test_from_plan() -> None:
    plan = builtin_plan("economy7")
    b = dm.ComparisonBudget.from_plan(plan)
    assert (b.comparisons_per_interval, b.comparisons_per_day, b.same_threshold_for_group) == (1, 4, True)
    _, sk = dgk.generate_keypair(512, subgroup_bits=48, rng=random.Random(2), insecure_for_tests=True)
    keys = [SigningKey.from_seed(bytes([i]) * 32) for i in range(5)]
    roster = {f"m{i}": k.verify_key for i, k in enumerate(keys)}
    a = dm.MeterDemandAgent.from_plan(plan, "m0", "g", keys[0], keys[1].verify_key, sk.public_key, roster=roster)
    assert a.cap_w == 4000 and a.max_event_minutes == 180 and a.quorum == 5
