"""_numtheory: fixed-base tables, bucket multi-exponentiation, primes, CRT."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import _numtheory as nt


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=3, max_value=2**256),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=1, max_value=6),
    st.randoms(use_true_random=False),
)
def test_comb_and_window_tables(
    m: int, bits: int, rows: int, tables: int, rnd: random.Random
) -> None:
    base = rnd.randrange(m)
    comb = nt.CombTable(base, m, bits, rows, tables)
    win = nt.FixedBaseTable(base, m, bits, window=rows)
    for e in (0, 1, (1 << bits) - 1, rnd.getrandbits(bits)):
        assert comb.pow(e) == pow(base, e, m) == win.pow(e)
    with pytest.raises(ValueError):
        comb.pow(1 << bits)
    with pytest.raises(ValueError):
        comb.pow(-1)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=2, max_value=2**128),
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=2**40)), max_size=25
    ),
)
def test_bucket_multi_exp(m: int, pairs: list[tuple[int, int]]) -> None:
    bases = [b % m for b, _ in pairs]
    exps = [e for _, e in pairs]
    expected = 1 % m
    for b, e in zip(bases, exps, strict=True):
        expected = expected * pow(b, e, m) % m
    assert nt.bucket_multi_exp(bases, exps, m) % m == expected


def test_primes_and_crt(rng: random.Random) -> None:
    p = nt.random_prime(128, rng)
    q = nt.random_prime(128, rng)
    assert p.bit_length() == q.bit_length() == 128 and nt.is_prime(p) and nt.is_prime(q)
    assert (p * q).bit_length() == 256
    x = nt.random_below(p * q, rng)
    assert nt.crt_pair(x % p, p, x % q, q, nt.invert(q, p)) == x
    u = nt.random_unit(p * q, rng)
    assert nt.gcd(u, p * q) == 1
    assert nt.powmod(u, -1, p * q) == nt.invert(u, p * q)
    with pytest.raises(ValueError):
        nt.random_below(0, rng)
    with pytest.raises(ValueError):
        nt.random_prime(8, rng)
    with pytest.raises(ZeroDivisionError):
        nt.invert(p, p * q)


def test_public_surface() -> None:
    for name in nt.__all__:
        assert hasattr(nt, name)
