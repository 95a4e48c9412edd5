"""Meters enforce the plan's roster rules in masked aggregation: the defence
against differencing (a head-end that aggregates G and G - {victim} learns
the victim's reading as the difference).  ``protocol/membership.py`` holds the
rules; ``AggregationMeter(membership=...)`` applies them at every bundle and
every contributed reading, before any state change."""

from __future__ import annotations

import hashlib

import pytest

from privmeter.crypto.signing import SigningKey
from privmeter.errors import GroupTooSmall, MembershipChangeRefused
from privmeter.grid.tariff.plans import PrivacyBudget
from privmeter.protocol.aggregation_messages import KeyBundle
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.membership import MembershipPolicy
from privmeter.sim.aggregation_group import GroupSimulation, make_group

BUDGET = PrivacyBudget(min_group_size=5, min_survivors=3, max_membership_changes_per_day=1)
KEYS = {f"m{i:05d}": SigningKey.from_seed(hashlib.sha256(b"mk%d" % i).digest()) for i in range(12)}
HEADEND = SigningKey.from_seed(hashlib.sha256(b"he").digest())


def reading(meter: str, t: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:3], "big") - 5_000_000


def policies() -> dict[str, MembershipPolicy]:
    return {m: MembershipPolicy(m, BUDGET) for m in KEYS}


def group(
    ids: list[str],
    pol: dict[str, MembershipPolicy],
    *,
    epoch: int,
    first: int,
    name: str = "feeder-1",
) -> GroupSimulation:
    return make_group(
        len(ids),
        group=name,
        epoch=epoch,
        first_interval=first,
        meter_keys={m: KEYS[m] for m in ids},
        headend_key=HEADEND,
        membership=pol,
        seed=epoch,
        min_survivors=3,
    )


def run_exact(g: GroupSimulation, steps: int) -> None:
    for _ in range(steps):
        res = g.step(reading)
        if res is not None:
            assert res.error == "" and res.total == (
                sum(reading(m, res.interval) for m in res.survivors),
            )


def setup_all(g: GroupSimulation) -> dict[str, Exception]:
    """Run setup; return the meters that refused the bundle (and why)."""
    for m in g.meters.values():
        g.headend.handle_advert(encode(m.advertise()))
    bundle = decode(encode(g.headend.make_bundle()), expect=KeyBundle)
    refused = {}
    for mid, m in g.meters.items():
        try:
            m.handle_bundle(bundle)
        except (MembershipChangeRefused, GroupTooSmall) as exc:
            refused[mid] = exc
    return refused


def test_within_budget_every_total_is_exact() -> None:
    pol = policies()
    ids = sorted(KEYS)[:6]
    g = group(ids, pol, epoch=1, first=1000)
    assert setup_all(g) == {}
    run_exact(g, 5)
    assert all(pol[m].last_served == 1004 for m in ids)  # 1000 primes; 1001..1004 carry readings


def test_differencing_by_re_keying_is_refused_beyond_the_daily_budget() -> None:
    """G, then G - {victim} (one change: allowed), then G again (a second change
    the same day: refused by every meter, which keeps serving the current epoch)."""
    pol = policies()
    ids = sorted(KEYS)[:6]
    victim = ids[-1]
    g1 = group(ids, pol, epoch=1, first=1000)
    assert setup_all(g1) == {}
    run_exact(g1, 4)
    g2 = group(ids[:-1], pol, epoch=2, first=1010)
    assert setup_all(g2) == {}
    run_exact(g2, 4)
    g3 = group(ids, pol, epoch=3, first=1020)
    refused = setup_all(g3)
    assert set(refused) == set(ids) - {victim}  # the victim itself had no change: G2 never held it
    assert all(isinstance(e, MembershipChangeRefused) for e in refused.values())
    run_exact(g2, 3)  # epoch 2 unaffected


def test_a_second_group_for_an_interval_already_served_is_refused() -> None:
    pol = policies()
    a = group(sorted(KEYS)[:6], pol, epoch=1, first=1000, name="feeder-a")
    assert setup_all(a) == {}
    run_exact(a, 4)  # served 1001..1003 so far
    b = group(sorted(KEYS)[2:8], pol, epoch=1, first=1002, name="feeder-b")  # overlaps 1002
    refused = setup_all(b)
    shared = set(sorted(KEYS)[2:6])
    assert set(refused) == shared and all(
        isinstance(e, MembershipChangeRefused) for e in refused.values()
    )


def test_after_joining_another_group_the_meter_stops_contributing_to_the_old_one() -> None:
    """Two rosters for overlapping intervals never both get a reading from one meter."""
    pol = {
        m: MembershipPolicy(
            m, PrivacyBudget(min_group_size=5, min_survivors=3, max_membership_changes_per_day=5)
        )
        for m in KEYS
    }
    ids = sorted(KEYS)
    a = group(ids[:8], pol, epoch=1, first=1000, name="feeder-a")
    b = group(ids[5:], pol, epoch=1, first=1000, name="feeder-b")
    assert setup_all(a) == {} and setup_all(b) == {}  # both set up before any interval
    a.step(reading)  # priming: no readings
    a.step(reading)  # 1001: the shared meters now belong to feeder-b: they refuse feeder-a
    assert {m for m, _ in a.refusals} == set(ids[5:8])
    res = a.step(reading)  # 1002: they answer with shares only (not enrolled: nothing to serve)
    assert res is not None and set(res.survivors) == set(ids[:5])
    assert res.total == (sum(reading(m, 1001) for m in ids[:5]),)
    m = a.meters[ids[5]]
    starts = a.headend.open_interval()  # 1003: enrolled again, a reading would serve feeder-a
    with pytest.raises(MembershipChangeRefused):
        m.handle_start(starts[m.meter_id], 5)
    assert (
        m.handle_start(starts[m.meter_id], None).masked == ()
    )  # no reading: helps, does not serve


def test_a_new_epoch_cannot_get_a_second_total_of_an_interval_already_served() -> None:
    """Same roster, new epoch starting back at served intervals (e.g. a head-end
    that "restarts" a run): two totals of one interval with different
    survivors would be exact differencing, so each reading is given once."""
    pol = policies()
    ids = sorted(KEYS)[:6]
    g1 = group(ids, pol, epoch=1, first=1000)
    assert setup_all(g1) == {}
    run_exact(g1, 4)  # readings for 1001..1003
    g2 = group(ids, pol, epoch=2, first=1002)  # same roster: admitted (no change) ...
    assert setup_all(g2) == {}
    g2.step(reading)  # 1002 priming
    g2.step(reading)  # 1003: every meter refuses to give its 1003 reading again
    assert {m for m, t in g2.refusals if t == 1003} == set(ids)
    res = g2.step(reading)  # 1004 is new: served; 1003 had no survivors
    assert res is not None and res.total is None
    run_exact(g2, 3)


def test_roster_below_the_minimum_is_refused() -> None:
    pol = {m: MembershipPolicy(m, PrivacyBudget(min_group_size=6, min_survivors=3)) for m in KEYS}
    g = group(sorted(KEYS)[:5], pol, epoch=1, first=1000)
    refused = setup_all(g)
    assert set(refused) == set(sorted(KEYS)[:5])
    assert all(isinstance(e, GroupTooSmall) for e in refused.values())
