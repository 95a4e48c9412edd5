"""Hypothesis properties of the Paillier engine (512-bit insecure key: speed only)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto.paillier import RandomnessPool
from privmeter.crypto.paillier_proofs import prove_decryption, verify_decryption
from privmeter.errors import PlaintextOverflow

SMALL = 2**400  # well inside max_int of the 512-bit key
ints = st.integers(min_value=-SMALL, max_value=SMALL)
seeds = st.integers(min_value=0, max_value=2**32)


@settings(max_examples=40, deadline=None)
@given(ints, ints, seeds)
def test_addition_is_homomorphic(paillier_small, a: int, b: int, seed: int) -> None:
    pk, sk = paillier_small
    rng = random.Random(seed)
    ca, cb = pk.encrypt(a, rng=rng), pk.encrypt(b, rng=rng)
    assert sk.decrypt(ca + cb) == a + b
    assert sk.decrypt(ca - cb) == a - b
    assert sk.decrypt(ca + b) == a + b
    assert sk.decrypt(b + ca) == a + b
    assert sk.decrypt(-ca) == -a
    assert sk.decrypt(pk.sum([ca, cb, ca])) == 2 * a + b


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=-(2**200), max_value=2**200),
    st.integers(min_value=-(2**150), max_value=2**150),
    seeds,
)
def test_scalar_multiplication_incl_negative(paillier_small, a: int, k: int, seed: int) -> None:
    pk, sk = paillier_small
    ca = pk.encrypt(a, rng=random.Random(seed))
    assert sk.decrypt(ca * k) == a * k
    assert sk.decrypt(k * ca) == a * k


@settings(max_examples=25, deadline=None)
@given(ints, seeds)
def test_rerandomisation_changes_ciphertext_not_plaintext(
    paillier_small, a: int, seed: int
) -> None:
    pk, sk = paillier_small
    rng = random.Random(seed)
    c = pk.encrypt(a, rng=rng)
    c2 = c.rerandomize(rng=rng)
    assert c2.value != c.value
    assert sk.decrypt(c2) == a
    m, r = prove_decryption(sk, c2)
    verify_decryption(pk, c2, m, r)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**64), seeds)
def test_encoding_edges(paillier_small, delta: int, seed: int) -> None:
    pk, sk = paillier_small
    rng = random.Random(seed)
    top = pk.max_int
    for m in (top, -top, top - delta % top, -top + delta % top):
        assert sk.decrypt(pk.encrypt(m, rng=rng)) == m
    for m in (top + 1 + delta, -top - 1 - delta):
        with pytest.raises(PlaintextOverflow):
            pk.encrypt(m, rng=rng)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=2**64), seeds)
def test_overflow_detected_not_wrapped(paillier_small, extra: int, seed: int) -> None:
    pk, sk = paillier_small
    rng = random.Random(seed)
    top = pk.encrypt(pk.max_int, rng=rng)
    with pytest.raises(PlaintextOverflow):
        sk.decrypt(top + pk.encrypt(extra, rng=rng))
    with pytest.raises(PlaintextOverflow):
        sk.decrypt(-top - extra)
    with pytest.raises(PlaintextOverflow):
        sk.decrypt(top * 2)


def test_pool_encryption_and_exhaustion(paillier_small, rng: random.Random) -> None:
    pk, sk = paillier_small
    pool = RandomnessPool(pk)
    pool.fill(3, rng=rng)
    pool.fill(2, rng=rng, full=False)
    values = [pk.encrypt(m, pool=pool) for m in (5, -7, 0, 2**100, -(2**100))]
    assert [sk.decrypt(c) for c in values] == [5, -7, 0, 2**100, -(2**100)]
    assert len({c.value for c in values}) == 5  # no randomiser reused
    with pytest.raises(LookupError):
        pk.encrypt(1, pool=pool)
