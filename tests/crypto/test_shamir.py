"""Shamir sharing over GF(2**127-1): exact reconstruction, threshold privacy, MPyC cross-check."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import shamir


@settings(max_examples=60, deadline=None)
@given(secret=st.integers(0, shamir.PRIME - 1), n=st.integers(1, 30), data=st.data())
def test_any_threshold_subset_reconstructs(secret: int, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    shares = shamir.share(secret, xs, t, rng=random.Random(n))
    subset = data.draw(st.permutations(list(zip(xs, shares, strict=True))))[:t]
    assert shamir.reconstruct(subset, t) == secret


def test_fewer_than_threshold_is_refused_and_uninformative(rng: random.Random) -> None:
    xs = list(range(1, 8))
    shares = shamir.share(42, xs, 4, rng=rng)
    with pytest.raises(ValueError, match="need 4"):
        shamir.reconstruct(list(zip(xs, shares, strict=True))[:3], 4)
    # 3 shares are consistent with every secret: for any candidate s there is a
    # degree-3 polynomial through (0, s) and the three points.
    pts = list(zip(xs, shares, strict=True))[:3]
    for candidate in (0, 1, 42, shamir.PRIME - 1):
        lam = shamir.lagrange_at_zero((*[x for x, _ in pts], 100))
        # solve for the 4th share making f(0) = candidate
        partial = sum(li * y for li, (_, y) in zip(lam, pts, strict=False)) % shamir.PRIME
        y4 = (candidate - partial) * pow(lam[3], -1, shamir.PRIME) % shamir.PRIME
        assert shamir.reconstruct([*pts, (100, y4)], 4) == candidate


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        shamir.share(shamir.PRIME, [1, 2], 2)
    with pytest.raises(ValueError):
        shamir.share(1, [1, 1], 2)
    with pytest.raises(ValueError):
        shamir.share(1, [0, 1], 2)
    with pytest.raises(ValueError):
        shamir.share_from_bytes(shamir.PRIME.to_bytes(16, "big"))
    assert shamir.share_from_bytes(shamir.share_to_bytes(5)) == 5


def test_matches_mpyc_lagrange() -> None:
    """Cross-check reconstruction with MPyC's independent Shamir recombination."""
    thresha = pytest.importorskip("mpyc.thresha")
    finfields = pytest.importorskip("mpyc.finfields")
    field = finfields.GF(shamir.PRIME)
    secret = 123456789012345678901234567890
    xs = [3, 5, 9, 11]
    shares = shamir.share(secret, xs, 3, rng=random.Random(1))
    points = [(x, [field(y)]) for x, y in zip(xs, shares, strict=True)][:3]
    ours = shamir.reconstruct(list(zip(xs, shares, strict=True))[1:], 3)
    theirs = thresha.recombine(field, points)[0]
    assert int(theirs) == ours == secret
