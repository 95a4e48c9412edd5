"""Issue 12, attacks 2 and 4: a head-end that signs anything cannot read more than one bit per comparison.

Before the fix (commit "Adversary tests reproducing issue 12 attacks 2 ... and 4"), the utility owned the
DGK key: a key whose g had a smooth order plus a non-one-hot radix-2 broadcast read a whole 16-bit
reading from one reply, and ticking the meter's clock a day ahead each time ran a 16-step binary search
against one reading with a budget of one comparison a day.  Now the meter holds a one-use key of its
own and its budget is keyed on the compared reading's interval; these tests attack that.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.adversary.demand_harness import (
    GROUP,
    LyingHeadEnd,
    combination_values,
    honest_values,
    pairs,
)

from privmeter.crypto.elgamal import get_group
from privmeter.errors import (
    BudgetExceeded,
    InvalidCiphertext,
    MalformedMessage,
    NoFreshReading,
    PrivmeterError,
    ReplayedMessage,
    UnexpectedMessage,
)
from privmeter.parties.messages import Tick
from privmeter.protocol.comparison import num_digits
from privmeter.protocol.demand import MeterDemandAgent
from privmeter.protocol.demand_budget import ComparisonBudget
from privmeter.protocol.demand_messages import DemandEvent, Offer

SMALL = get_group("test512", allow_insecure=True)
NOW = 1_700_000_100
IV = 900


def meter(
    he: LyingHeadEnd, *, per_interval: int = 1, per_day: int = 4, max_bits: int = 32
) -> MeterDemandAgent:
    from privmeter.crypto.signing import SigningKey

    return MeterDemandAgent(
        "victim",
        GROUP,
        SigningKey.from_seed(b"V" * 32),
        he.key.verify_key,
        ComparisonBudget(
            comparisons_per_interval=per_interval,
            comparisons_per_day=per_day,
            same_threshold_for_group=False,
        ),
        key_group=SMALL.name,
        allow_insecure_group=True,
        max_bits=max_bits,
    )


def offer_for(
    agent: MeterDemandAgent, ev: DemandEvent, x: int, now: int, rng: random.Random
) -> Offer:
    off, _ = agent.receive_event(ev, reading_interval=now // IV - 1, reading_w=x, now=now, rng=rng)
    return off


# -- attack 2: keys and broadcasts -------------------------------------------------------------


def test_the_head_end_has_no_key_or_broadcast_to_send() -> None:
    """An event names only public parameters; the meter's key group is its own configuration."""
    names = {f.name for f in dataclasses.fields(DemandEvent)}
    assert names == {
        "event_id",
        "group_id",
        "action",
        "side",
        "start_interval",
        "duration_minutes",
        "issued_at",
        "expires_at",
        "bits",
        "radix",
        "signature",
    }
    he = LyingHeadEnd()
    off = offer_for(meter(he), he.event(now=NOW), 1234, NOW, random.Random(1))
    assert off.offer.group == "test512"  # chosen by the meter, never by the head-end


def test_a_challenge_built_to_read_every_digit_yields_one_bit() -> None:
    """The head-end asks D zero tests at once, one per digit ("is digit i equal to 1?"): the meter
    releases only whether any of them is zero, so readings fall into two classes, not 2**16."""
    he = LyingHeadEnd()
    classes: dict[bool, set[int]] = {True: set(), False: set()}
    rng = random.Random(2)
    d = num_digits(16, 4)
    for x in range(-300, 300, 7):
        agent = meter(he)
        ev = he.event(now=NOW)
        off = offer_for(agent, ev, x, NOW, rng)
        ps = pairs(off.offer)
        vals = [v for i in range(d) for v in ps[i * 4 + 1]]  # E([a_i = 1]): zero iff a_i != 1
        ans = agent.receive_query(
            he.query(ev, "victim", vals, off.offer.digest(), now=NOW), now=NOW
        )
        assert isinstance(ans.zero_found, bool)
        classes[ans.zero_found].add(x)
    # every such reading has a digit != 1, so all answer the same: the head-end learned nothing
    assert classes[False] == set() and len(classes[True]) > 80


def test_ciphertexts_of_an_earlier_comparison_are_useless_later() -> None:
    """Mixing attack: the head-end keeps event 1's encrypted digits and zero-tests them in event 2.
    Key 1 is erased; under key 2 they never test zero, whatever the earlier reading was."""
    he = LyingHeadEnd()
    rng = random.Random(3)
    for x in (0, 1, 5, 900, -40):
        agent = meter(he, per_interval=2)
        ev1 = he.event(now=NOW)
        off1 = offer_for(agent, ev1, x, NOW, rng)
        honest = honest_values(off1.offer, 100, rng)
        agent.receive_query(he.query(ev1, "victim", honest, off1.offer.digest(), now=NOW), now=NOW)
        ev2 = he.event(now=NOW)
        off2 = offer_for(agent, ev2, x, NOW, rng)
        old = [v for pair in pairs(off1.offer)[: len(honest) // 2] for v in pair]
        ans = agent.receive_query(
            he.query(ev2, "victim", old, off2.offer.digest(), now=NOW), now=NOW
        )
        assert ans.zero_found is False


def test_malformed_challenges_fail_with_specific_errors_before_the_key_is_used() -> None:
    he = LyingHeadEnd()
    rng = random.Random(4)
    agent = meter(he)
    ev = he.event(now=NOW, bits=8, radix=2)
    off = offer_for(agent, ev, 77, NOW, rng)
    good = honest_values(off.offer, 10, rng)
    dig = off.offer.digest()
    p = SMALL.p
    nonresidue = next(k for k in range(3, 100) if pow(k, SMALL.q, p) != 1)
    bads = [
        ((p - 1, *good[1:]), dig, InvalidCiphertext),  # order 2: outside the prime-order subgroup
        ((nonresidue, *good[1:]), dig, InvalidCiphertext),  # a non-residue
        (good[:-2], dig, MalformedMessage),  # one value short
        ((*good, *good[:2]), dig, MalformedMessage),  # one value too many
        (good, bytes(32), UnexpectedMessage),  # names another offer
    ]
    before = agent.budget.state()
    for vals, digest, err in bads:
        with pytest.raises(err):
            agent.receive_query(he.query(ev, "victim", vals, digest, now=NOW), now=NOW)
        assert agent.budget.state() == before and agent.events[ev.event_id].answered_query is None
    q = he.query(ev, "victim", good, dig, now=NOW)
    agent.receive_query(q, now=NOW)
    with pytest.raises(ReplayedMessage):
        agent.receive_query(q, now=NOW)
    with pytest.raises(ReplayedMessage):
        agent.receive_query(he.query(ev, "victim", good, dig, now=NOW, query_id=99), now=NOW)
    with pytest.raises(BudgetExceeded):  # another event on the same reading
        offer_for(agent, he.event(now=NOW), 77, NOW, rng)
    with pytest.raises(MalformedMessage):  # more bits than the meter compares
        offer_for(meter(he, max_bits=16), he.event(now=NOW, bits=24), 77, NOW, rng)


# -- attack 4: the head-end's clock ---------------------------------------------------------------


def test_days_of_ticks_give_one_reading_no_second_budget() -> None:
    """The old attack: a day later by the head-end's clock, the same reading again.  The meter's own
    clock decides which reading is fresh, and the budget is the reading's: refused either way."""
    he = LyingHeadEnd()
    rng = random.Random(5)
    agent = meter(he, per_interval=1, per_day=1)
    ev = he.event(now=NOW)
    off = offer_for(agent, ev, 12_345, NOW, rng)
    agent.receive_query(
        he.query(ev, "victim", honest_values(off.offer, 0, rng), off.offer.digest(), now=NOW),
        now=NOW,
    )
    for days in (1, 5, 30):
        later = NOW + days * 86_400
        ev = he.event(now=later)  # issued "days later": the meter's own clock says NOW
        with pytest.raises(PrivmeterError):
            offer_for(agent, ev, 12_345, NOW, rng)
        # even a meter whose own clock was moved that far cannot compare the old reading again
        with pytest.raises(NoFreshReading):
            agent.receive_event(
                ev, reading_interval=NOW // IV - 1, reading_w=12_345, now=later, rng=rng
            )
    # within the freshness window, the same reading stays spent
    with pytest.raises(BudgetExceeded):
        offer_for(agent, he.event(now=NOW + 300), 12_345, NOW + 300, rng)


def test_a_meter_agent_ignores_the_time_in_a_tick(tiny_world) -> None:
    from privmeter.sim.runner import make_meters

    meters, _, _ = make_meters(tiny_world, [tiny_world.households[0].meter_id])
    (m,) = meters.values()
    own = (tiny_world.first_interval + 2) * tiny_world.scenario.interval_seconds
    m.handle(Tick(now=own, interval=0), now=own)
    for days in (1, 7, 365):
        m.handle(Tick(now=own + days * 86_400, interval=0))
        assert m.now == own
    assert m.demand is not None


# -- property: whatever the head-end sends, at most one bit per allowed comparison ------------------

MOVES = st.lists(
    st.tuples(
        st.sampled_from(
            ["event", "honest", "digits", "combo", "garbage", "short", "replay", "tick"]
        ),
        st.integers(-(2**15) + 1, 2**15 - 1),
        st.integers(0, 2**32),
    ),
    min_size=1,
    max_size=8,
)


def run(moves: list, x: int, *, per_interval: int, per_day: int) -> list:
    """Drive one meter with ``moves``; the head-end's view: per move an error class or a bit."""
    he = LyingHeadEnd(rng=random.Random(9))
    agent = meter(he, per_interval=per_interval, per_day=per_day)
    rng = random.Random(11)  # the meter's randomness: identical for both readings
    now = NOW
    view: list = []
    cur: tuple | None = None  # (event, offer)
    last_q = None
    answered = False
    for kind, t, seed in moves:
        hrng = random.Random(seed)
        try:
            if kind == "tick":
                now += IV  # the meter's own clock moves on; its next reading is the same value
                view.append("tick")
                continue
            if kind == "event" or cur is None or (answered and kind != "replay"):
                ev = he.event(now=now, bits=16, radix=hrng.choice([2, 4, 16]))
                cur, answered = None, False
                cur = (ev, offer_for(agent, ev, x, now, rng))
                view.append(("offer", cur[1].reading_interval))
                if kind == "event":
                    continue
            ev, off = cur
            dig = off.offer.digest()
            d = num_digits(16, off.offer.radix)
            if kind == "honest":
                vals = honest_values(off.offer, t, hrng)
            elif kind == "digits":
                ps = pairs(off.offer)
                vals = tuple(v for pr in hrng.sample(ps, d) for v in pr)
            elif kind == "combo":
                n = len(pairs(off.offer))
                vals = combination_values(
                    SMALL,
                    off.offer,
                    [[hrng.randint(-2, 2) for _ in range(n)] for _ in range(d)],
                    [hrng.randint(-3, 3) for _ in range(d)],
                )
            elif kind == "garbage":
                vals = (SMALL.p - 1,) * (2 * d)
            elif kind == "short":
                vals = honest_values(off.offer, t, hrng)[:-2]
            else:  # replay the last query
                if last_q is None:
                    view.append("no-query")
                    continue
                view.append(("bit", agent.receive_query(last_q, now=now).zero_found))
                continue
            last_q = he.query(ev, "victim", vals, dig, now=now)
            view.append(("bit", agent.receive_query(last_q, now=now).zero_found))
            answered = True
        except PrivmeterError as exc:
            view.append(type(exc).__name__)
    return view


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    moves=MOVES,
    x1=st.integers(-(2**15), 2**15 - 1),
    x2=st.integers(-(2**15), 2**15 - 1),
    per_interval=st.integers(1, 2),
    per_day=st.integers(1, 3),
)
def test_lying_head_end_gets_at_most_one_bit_per_allowed_comparison(
    moves, x1, x2, per_interval, per_day
) -> None:
    v1 = run(moves, x1, per_interval=per_interval, per_day=per_day)
    v2 = run(moves, x2, per_interval=per_interval, per_day=per_day)
    # everything but the released bits is the same for both readings: errors, refusals, offers
    strip = [("bit",) if isinstance(e, tuple) and e[0] == "bit" else e for e in v1]
    assert strip == [("bit",) if isinstance(e, tuple) and e[0] == "bit" else e for e in v2]
    bits = [e for e in v1 if isinstance(e, tuple) and e[0] == "bit"]
    readings = {e[1] for e in v1 if isinstance(e, tuple) and e[0] == "offer"}
    assert len(bits) <= len(readings) * per_interval and len(bits) <= per_day
    # one bit each: an answer is one bool
    assert all(isinstance(b[1], bool) for b in bits)


@settings(max_examples=20, deadline=None)
@given(
    ts=st.lists(st.integers(-(2**15) + 1, 2**15 - 1), min_size=1, max_size=3),
    x1=st.integers(-(2**15), 2**15 - 1),
    x2=st.integers(-(2**15), 2**15 - 1),
)
def test_same_side_of_every_threshold_gives_the_same_view(ts, x1, x2) -> None:
    """With honest challenges, two readings on the same side of every threshold asked give identical
    answers (the sign the utility draws is the same in both runs)."""
    moves = []
    for i, t in enumerate(ts):
        moves += [("event", t, i), ("honest", t, 100 + i), ("tick", 0, 0)]
    v1 = run(moves, x1, per_interval=1, per_day=3)
    v2 = run(moves, x2, per_interval=1, per_day=3)
    if all((x1 >= t) == (x2 >= t) for t in ts):
        assert v1 == v2
