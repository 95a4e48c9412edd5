"""Masked aggregation against a lying head-end (issue 12, attack 1).

The bound under attack (docs/threat-model.md): whatever bundle degree and
announcements the head-end sends, from everything the meters reveal it can
compute the readings only as sums over sets of at least ``min_survivors``
meters.  The harness (``aggregation_harness.py``) plays the head-end with its
real signing key against honest meters and computes every such sum.
"""

from __future__ import annotations

import hashlib

from privmeter.errors import IsolationRefused

from .aggregation_harness import LyingHeadEnd


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
    kn = h.knowledge(t)
    # every holder of the victim's shares refused, with the specific error
    holders = {victim, *h.nbrs[victim]}
    assert set(h.refused[t + 1]) == holders
    assert all(isinstance(e, IsolationRefused) for e in h.refused[t + 1].values())
    assert kn.unmask(victim) is None and victim not in kn.b
    for members, _value in kn.learnable_sums():
        assert len(members) >= h.min_survivors
