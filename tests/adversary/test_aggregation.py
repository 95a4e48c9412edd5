"""Masked aggregation against a lying head-end (issue 12, attack 1).

The bound under attack (docs/threat-model.md): whatever bundle degree and
announcements the head-end sends, from everything the meters reveal it can
compute the readings only as sums over sets of at least ``min_survivors``
meters.  The harness (``aggregation_harness.py``) plays the head-end with its
real signing key against honest meters and computes every such sum.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from privmeter.errors import (
    EquivocationRefused,
    GroupTooSmall,
    IsolationRefused,
    MalformedMessage,
    PrivmeterError,
)
from privmeter.protocol.aggregation_messages import default_degree, graph_seed, ring

from .aggregation_harness import Knowledge, LyingHeadEnd, Reading


def reading(meter: str, t: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:4], "big") % 9000 - 1000


def _primed(n: int, **kw: int) -> LyingHeadEnd:
    h = LyingHeadEnd(n, **kw)
    assert h.setup() == {}
    h.interval(reading)  # shares for the next interval
    return h


def test_isolating_a_meter_by_dropping_its_neighbours_fails() -> None:
    """Attack 1: announce every neighbour of the victim as dropped (they are
    live), everyone else as surviving.  Before the fix the victim's holders
    revealed its self-mask seed and its neighbours' holders their recovery
    keys: the head-end read the victim's reading exactly."""
    h = _primed(40, min_survivors=3)  # sparse: degree 32 of 39 others
    victim = 7
    t = h.interval(reading)  # everyone sends y_t
    enrolled, _, _ = h.honest_view()
    dropped = frozenset(h.nbrs[victim])
    h.interval(reading, view=(enrolled, enrolled - dropped, dropped))
    assert h.lag == 2  # sparse: the lie is certified (everyone endorsed it), reveals come next
    h.interval(reading)
    kn = h.knowledge(t)
    # every holder of the victim's shares refused, with the specific error (and so
    # did the holders of its "dropped" neighbours: revealing their recovery keys
    # would strip the victim's pairwise masks)
    holders = {victim, *h.nbrs[victim]}
    assert holders <= set(h.refused[t + 2])
    assert all(isinstance(e, IsolationRefused) for e in h.refused[t + 2].values())
    assert kn.unmask(victim) is None and victim not in kn.b
    for members, _value in kn.learnable_sums():
        assert len(members) >= h.min_survivors


@pytest.mark.parametrize(
    ("n", "degree", "accepted"),
    [
        (36, 16, False),
        (36, 30, False),
        (36, 33, False),
        (36, 32, True),
        (36, 34, True),
        (20, 18, False),
        (20, 19, True),
    ],
)
def test_meters_fix_their_own_degree_floor(n: int, degree: int, accepted: bool) -> None:
    """A meter computes the least degree it accepts from the roster size
    (``default_degree``: 32 for 36 meters, the complete graph for 20); the
    head-end may ask for more, never for less (before issue 12: 16)."""
    h = LyingHeadEnd(n)
    refused = h.setup(degree)
    if accepted:
        assert refused == {}
    else:
        assert set(refused) == set(range(n))
        assert all(isinstance(e, MalformedMessage) for e in refused.values())


# -- any consistent lie: what the head-end can compute respects the bound --------------


@st.composite
def _lies(draw: st.DrawFn) -> dict[str, Any]:
    """A group, a degree the meters accept, a victim, and how to lie about it:
    the enrolled set of interval t (everyone, random, or starving the victim
    of enrolled neighbours) and the survivor/dropout split announced for it
    (random; isolating the victim but for ``keep`` neighbours; an island of the
    victim and ``keep`` neighbours, all around it dropped; or thinning its
    neighbours).  The sets are drawn in :func:`_attack`, once the graph
    is known, from the drawn seed ``rnd``."""
    n = draw(st.sampled_from([9, 14, 36, 36]))
    floor = default_degree(n)
    degree = draw(st.sampled_from([floor, floor + 2, n - 1])) if floor < n - 1 else n - 1
    return {
        "n": n,
        "degree": degree,
        "m": draw(st.integers(2, 6)),
        "victim": draw(st.integers(0, n - 1)),
        "keep": draw(st.integers(0, 3)),
        "enrol": draw(st.sampled_from(["all", "random", "starve"])),
        "split": draw(st.sampled_from(["random", "isolate", "island", "thin"])),
        "rnd": draw(st.integers(0, 2**32)),
        "delta": draw(st.integers(1, 10**6)),
        "seed": draw(st.integers(0, 3)),
    }


def _sets(lie: dict[str, Any], h: LyingHeadEnd) -> tuple[frozenset[int], frozenset[int]]:
    """The (enrolled, survivors) sets the lie announces, on ``h``'s graph."""
    rnd = random.Random(lie["rnd"])
    v = lie["victim"]
    nbrs = h.nbrs[v]
    kept = set(rnd.sample(nbrs, min(lie["keep"], len(nbrs))))
    everyone = set(range(h.n))
    enrolled = {
        "all": everyone,
        "random": {u for u in everyone if rnd.random() < 0.7},
        "starve": (everyone - set(nbrs)) | kept,
    }[lie["enrol"]]
    surv = {
        "random": {u for u in enrolled if rnd.random() < 0.6},
        "isolate": (enrolled - set(nbrs)) | (kept & enrolled),
        "island": enrolled & ((everyone - {w for u in kept | {v} for w in h.nbrs[u]}) | kept | {v}),
        "thin": {u for u in enrolled if rnd.random() < (0.1 if u in nbrs else 0.9)},
    }[lie["split"]]
    return frozenset(enrolled), frozenset(surv)


def _lie(split: str, enrol: str = "all", keep: int = 0, m: int = 3) -> dict[str, Any]:
    return {
        "n": 36,
        "degree": 32,
        "m": m,
        "victim": 5,
        "keep": keep,
        "enrol": enrol,
        "split": split,
        "rnd": 1,
        "delta": 1000,
        "seed": 0,
    }


def _examples(test: Callable[..., None]) -> Callable[..., None]:
    """The lies that read a sum over fewer than ``min_survivors`` meters before
    the fix, always tried first: the victim alone, an island of 3 (victim and
    2 neighbours, everything around them dropped), the victim starved of
    enrolled neighbours."""
    for lie in (_lie("isolate"), _lie("island", keep=2, m=4), _lie("random", enrol="starve")):
        test = example(lie=lie)(test)
    return test


def _attack(lie: dict[str, Any], read: Reading = reading) -> tuple[LyingHeadEnd, Knowledge]:
    h = LyingHeadEnd(lie["n"], min_survivors=lie["m"], seed=lie["seed"])
    assert h.setup(lie["degree"]) == {}
    h.interval(read)
    everyone = frozenset(range(h.n))
    enrolled, surv = _sets(lie, h)
    t = h.interval(read, view=(enrolled, frozenset(), frozenset()))
    assert set(h.inputs[t]) == set(
        everyone
    )  # the enrolled lie is not refused: nothing to check yet
    h.interval(read, view=(everyone, surv, enrolled - surv))
    if h.lag == 2:  # sparse: the certificate of that announcement, and the reveals
        h.interval(read)
    return h, h.knowledge(t)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lies())
@_examples
def test_any_consistent_lie_yields_only_sums_over_min_survivors(lie: dict[str, Any]) -> None:
    h, kn = _attack(lie)
    t = kn.interval
    assert all(isinstance(e, GroupTooSmall) for e in h.refused[t + h.lag].values())
    for members, value in kn.learnable_sums():
        assert len(members) >= lie["m"], (sorted(members), lie)
        assert value == (sum(reading(h.roster[u], t) for u in members),)  # the harness is right
    assert all(kn.unmask(u) is None for u in range(h.n))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lies())
@_examples
def test_two_worlds_differing_in_the_victim_look_the_same(lie: dict[str, Any]) -> None:
    """World B moves ``delta`` Wh from the victim to a partner in its learnable
    set if that has at least ``min_survivors`` meters (else it only changes the
    victim's reading): every sum the bound allows is the same, and so is
    everything the head-end can compute."""
    h, kn = _attack(lie)
    v = lie["victim"]
    sums = kn.learnable_sums()
    partner = next((min(m - {v}) for m, _ in sums if v in m and len(m) >= lie["m"]), None)
    ids = h.roster

    def moved(meter: str, t: int) -> int:
        base = reading(meter, t)
        if t != kn.interval:
            return base
        if meter == ids[v]:
            return base + lie["delta"]
        return base - lie["delta"] if partner is not None and meter == ids[partner] else base

    h2, kn2 = _attack(lie, moved)
    assert kn2.learnable_sums() == sums
    assert {w: type(e) for w, e in h2.refused[kn.interval + h.lag].items()} == {
        w: type(e) for w, e in h.refused[kn.interval + h.lag].items()
    }
    assert [kn2.unmask(u) for u in range(h.n)] == [kn.unmask(u) for u in range(h.n)]


# -- equivocation: different signed announcements to different meters --------------


def _correct_reads(h: LyingHeadEnd, kn: Knowledge) -> list[frozenset[int]]:
    """The sets whose sum the head-end computed right (a wrong value is noise)."""
    t = kn.interval
    return [
        m for m, value in kn.learnable_sums() if value == (sum(reading(h.roster[u], t) for u in m),)
    ]


def test_equivocating_announcements_cannot_isolate_a_meter() -> None:
    """Complete graph of 12, ``min_survivors`` 3.  Every meter is told that the
    victim and two others survived, a different pair per meter, so each
    announcement on its own passes every check (3 connected survivors), and
    each other meter is announced dropped to at least 7 of the 12 holders
    (the threshold).  Without view pads this rebuilt the victim's self mask
    and every recovery key around it; now shares revealed under different
    announcements do not combine."""
    h = _primed(12, min_survivors=3)
    victim = 0
    t = h.interval(reading)
    everyone = frozenset(range(h.n))
    views = {}
    for w in range(h.n):
        surv = frozenset({victim, 1 + (2 * w) % 11, 1 + (2 * w + 1) % 11})
        views[w] = (everyone, surv, everyone - surv)
    h.interval(reading, per_meter=views)
    kn = h.knowledge(t)
    assert h.refused[t + 1] == {}  # each announcement alone is acceptable
    assert kn.b == {} and kn.z == {}  # no two holders saw the same one
    assert kn.unmask(victim) is None and _correct_reads(h, kn) == []


@pytest.mark.parametrize("n", [12, 40])
def test_enrolled_set_equivocation_cannot_isolate_a_meter(n: int) -> None:
    """Complete graph of 12, or sparse of 40.  The victim alone is told that
    only two neighbours are enrolled (it masks with those two masks only);
    everyone else is told the truth, then that those two dropped.  Their
    recovery keys give both masks; the holders' b-shares carry a pad bound
    to the enrolled set they were told (in every graph since the v2
    records), so the rebuilt self-mask seed is not the victim's."""
    h = _primed(n, min_survivors=3)
    victim = 0
    a, b = h.nbrs[victim][:2]
    everyone = frozenset(range(h.n))
    t = h.interval(
        reading, per_meter={victim: (frozenset({victim, a, b}), frozenset(), frozenset())}
    )
    h.interval(reading, view=(everyone, everyone - {a, b}, frozenset({a, b})))
    if h.lag == 2:
        h.interval(reading)
    kn = h.knowledge(t)
    # its own view does not partition: it refuses (sparse: already at t+1, where the
    # certificate of the announcement of t is not the one it was shown)
    refused = set().union(*(h.refused[t + k] for k in range(1, h.lag + 1)))
    assert refused == {victim}
    assert victim in kn.b and {a, b} <= set(kn.z)  # the head-end rebuilt "something"
    assert kn.unmask(victim) != (reading(h.roster[victim], t),)
    assert all(len(m) >= 3 for m in _correct_reads(h, kn))


@st.composite
def _equivocations(draw: st.DrawFn) -> dict[str, Any]:
    """A complete graph and, per meter, one of a few lies (so that some are
    shared by a majority): each lie an enrolled set for interval t and a
    survivor/dropout split of it, drawn as in :func:`_lies`."""
    n = draw(st.sampled_from([9, 14]))
    pool = draw(
        st.lists(
            _lies().map(lambda lie: {**lie, "n": n, "degree": n - 1, "victim": lie["victim"] % n}),
            min_size=1,
            max_size=3,
        )
    )
    return {
        "n": n,
        "m": draw(st.integers(2, 5)),
        "pool": pool,
        "pick": draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n)),
        "pick_e": draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n)),
    }


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_equivocations())
def test_any_equivocation_in_a_complete_graph_yields_only_sums_over_min_survivors(
    eq: dict[str, Any],
) -> None:
    h = LyingHeadEnd(eq["n"], min_survivors=eq["m"])
    assert h.setup() == {}
    h.interval(reading)
    lies = [_sets({**lie, "m": eq["m"]}, h) for lie in eq["pool"]]
    nothing: frozenset[int] = frozenset()
    t = h.interval(
        reading, per_meter={w: (lies[i][0], nothing, nothing) for w, i in enumerate(eq["pick_e"])}
    )
    everyone = frozenset(range(h.n))
    h.interval(
        reading,
        per_meter={
            w: (everyone, lies[i][1], lies[i][0] - lies[i][1]) for w, i in enumerate(eq["pick"])
        },
    )
    kn = h.knowledge(t)
    assert all(isinstance(e, PrivmeterError) for e in h.refused[t + 1].values())
    assert all(len(m) >= eq["m"] for m in _correct_reads(h, kn))


@pytest.mark.parametrize("shift", [0, 1, -1])
def test_equivocation_in_a_sparse_graph_cannot_isolate_a_meter(shift: int) -> None:
    """40 meters, degree 32.  Cut the ring at the victim: meters on the half
    ending at it are told the victim's left neighbours dropped, meters on the
    other half that its right neighbours dropped.  Each announcement passes
    every check; each left neighbour's holders are mostly on the left, each
    right neighbour's on the right, and the victim's majority on the left.
    Before the consistency round this read the victim's reading.  Now each
    meter endorses the one announcement it was shown, and a holder reveals
    only under a certificate of a committee quorum (here 17 of the 33
    committee members, the first of the ring order): at most one half's
    announcement can be certified; the other half's meters are sent that
    certificate and refuse (``EquivocationRefused``) or get none, and the
    certified half alone does not isolate the victim.  ``shift`` moves the
    cut by one either way."""
    h = _primed(40, min_survivors=3)
    victim = 7
    order = ring(h.n, graph_seed(h.bundle().adverts))
    p = order.index(victim)
    at = {order[(p + d) % h.n]: d for d in range(-19, 21)}  # -19..0 left half, 1..20 right
    half = h.degree // 2
    left = frozenset(u for u, d in at.items() if -half <= d < 0)
    right = frozenset(u for u, d in at.items() if 0 < d <= half)
    t = h.interval(reading)
    everyone = frozenset(range(h.n))
    views = {
        w: (everyone, everyone - (left if d <= shift else right), left if d <= shift else right)
        for w, d in at.items()
    }
    h.interval(reading, per_meter=views)
    assert h.refused[t + 1] == {}  # each announcement alone is acceptable, and endorsed
    h.interval(reading)
    kn = h.knowledge(t)
    assert len(h.committee) == 33 and h.quorum == 17
    certified = set(h.decided[t + 2].values())
    assert len(certified) <= 1  # quorum intersection: one announcement at most
    for w, (_, surv, drop) in views.items():
        if certified and (surv, drop) not in certified:  # shown the other half's view
            assert isinstance(h.refused[t + 2].get(w), EquivocationRefused)
    assert kn.unmask(victim) is None, f"read {kn.unmask(victim)} of {reading(h.roster[victim], t)}"
    assert all(len(m) >= h.min_survivors for m in _correct_reads(h, kn))


@st.composite
def _sparse_equivocations(draw: st.DrawFn) -> dict[str, Any]:
    """A sparse graph (>= 34 meters) and, per meter, one of a few lies, drawn
    as in :func:`_equivocations`; a lie may also be the cut of the ring at
    the victim (see the test above) with a drawn cut position."""
    n = draw(st.sampled_from([36, 40]))
    floor = default_degree(n)
    degree = draw(st.sampled_from([floor, floor + 2]))
    pool = draw(
        st.lists(
            _lies().map(lambda lie: {**lie, "n": n, "degree": degree, "victim": lie["victim"] % n}),
            min_size=1,
            max_size=3,
        )
    )
    return {
        "n": n,
        "degree": degree,
        "m": draw(st.integers(2, 5)),
        "pool": pool,
        "pick": draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n)),
        "pick_e": draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n)),
        "cut": draw(st.one_of(st.none(), st.integers(-3, 3))),
    }


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sparse_equivocations())
def test_any_equivocation_in_a_sparse_graph_yields_only_sums_over_min_survivors(
    eq: dict[str, Any],
) -> None:
    """Random per-meter announcements of the enrolled set and of the
    survivor/dropout split (or the ring cut at a drawn position) in a sparse
    graph: whatever certificates the head-end can assemble from the meters'
    endorsements (each meter is sent the one for what it was shown, else
    the most endorsed one), it ends up with sums over at least
    ``min_survivors`` meters only."""
    h = LyingHeadEnd(eq["n"], min_survivors=eq["m"])
    assert h.setup(eq["degree"]) == {}
    assert h.lag == 2
    h.interval(reading)
    lies = [_sets({**lie, "m": eq["m"]}, h) for lie in eq["pool"]]
    nothing: frozenset[int] = frozenset()
    t = h.interval(
        reading, per_meter={w: (lies[i][0], nothing, nothing) for w, i in enumerate(eq["pick_e"])}
    )
    everyone = frozenset(range(h.n))
    if eq["cut"] is None:
        views = {
            w: (everyone, lies[i][1], lies[i][0] - lies[i][1]) for w, i in enumerate(eq["pick"])
        }
    else:
        v = eq["pool"][0]["victim"]
        order = ring(h.n, graph_seed(h.bundle().adverts))
        p = order.index(v)
        at = {order[(p + d) % h.n]: d for d in range(-(h.n // 2) + 1, h.n // 2 + 1)}
        half = h.degree // 2
        left = frozenset(u for u, d in at.items() if -half <= d < 0)
        right = frozenset(u for u, d in at.items() if 0 < d <= half)
        views = {
            w: (
                everyone,
                everyone - (left if d <= eq["cut"] else right),
                left if d <= eq["cut"] else right,
            )
            for w, d in at.items()
        }
    h.interval(reading, per_meter=views)
    h.interval(reading)
    kn = h.knowledge(t)
    for k in (1, 2):
        assert all(isinstance(e, PrivmeterError) for e in h.refused[t + k].values())
    assert all(len(m) >= eq["m"] for m in _correct_reads(h, kn)), eq
