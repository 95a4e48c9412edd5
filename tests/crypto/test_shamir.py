"""Shamir sharing over GF(2**127-1): exact reconstruction, threshold privacy, MPyC cross-check."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import shamir
from privmeter.crypto._numtheory import mpz


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


def _horner_shares(secret: int, xs: list[int], threshold: int, rng: random.Random) -> list[int]:
    """The straightforward sharing :func:`shamir.share` must equal, draw for draw."""
    coeffs = [secret] + [rng.getrandbits(128) % shamir.PRIME for _ in range(threshold - 1)]
    out = []
    for x in xs:
        acc = 0
        for c in reversed(coeffs):
            acc = (acc * x + c) % shamir.PRIME
        out.append(acc)
    return out


def test_share_bytes_equals_horner_draw_for_draw() -> None:
    """Packed evaluation gives the reference shares and consumes the rng exactly
    as successive reference sharings would (so outputs stay byte-identical)."""
    gen = random.Random(3)
    p = shamir.PRIME
    for case in range(150):
        xs = list({gen.randrange(1, gen.choice([70, 10**6, p])) for _ in range(gen.randint(1, 70))})
        threshold = gen.randint(1, len(xs))
        secrets = [gen.choice([0, 1, p - 1, gen.randrange(p)]) for _ in range(gen.randint(1, 3))]
        ours, ref = random.Random(case), random.Random(case)
        got = shamir.share_bytes(secrets, xs, threshold, rng=ours)
        want = [_horner_shares(s, xs, threshold, ref) for s in secrets]
        assert got == [b"".join(shamir.share_to_bytes(w[j]) for w in want) for j in range(len(xs))]
        assert ours.getrandbits(64) == ref.getrandbits(64)
        assert shamir.share(secrets[0], xs, threshold, rng=random.Random(case)) == want[0]


def test_packed_reduction_at_the_field_edges() -> None:
    """Every slot is reduced into [0, PRIME), including values equal to PRIME,
    2**127 and the largest unreduced sum a slot can hold."""
    p = shamir.PRIME
    xs, threshold = (1, 2, 3, 4, 5, 6, 7, 8), 5
    slot = 33
    table = shamir._power_table(xs, threshold, slot)
    values = [0, p - 1, p, p + 1, 1 << 127, threshold * (p - 1) ** 2, 2 * p, (1 << 254) - 1]
    packed = mpz(int.from_bytes(b"".join(v.to_bytes(slot, "big") for v in values), "big"))
    data = int(table.reduce(packed)).to_bytes(slot * len(xs), "big")
    assert [int.from_bytes(data[k : k + slot], "big") for k in range(0, len(data), slot)] == [
        v % p for v in values
    ]


def test_share_bytes_checks_before_drawing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    with pytest.raises(ValueError):
        shamir.share_bytes([1, shamir.PRIME], [1, 2], 2, rng=rng)
    with pytest.raises(ValueError):
        shamir.share_bytes([1], [1, 2], 3, rng=rng)
    with pytest.raises(ValueError):
        shamir.share_bytes([1], [2, 2], 1, rng=rng)
    assert rng.getstate() == state
