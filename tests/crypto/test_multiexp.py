"""StreamingMultiExp and GroupedProduct: exact against naive pow products."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.multiexp import (
    GroupedProduct,
    StreamingMultiExp,
    default_window,
)


def naive(pairs: list[tuple[int, int]], m: int) -> int:
    acc = 1 % m
    for b, e in pairs:
        acc = acc * pow(b, e, m) % m
    return acc


moduli = st.integers(min_value=2, max_value=2**200)
exp_bits_st = st.integers(min_value=1, max_value=24)


@st.composite
def problems(draw: st.DrawFn) -> tuple[int, int, int | None, list[tuple[int, int]]]:
    m = draw(moduli)
    bits = draw(exp_bits_st)
    window = draw(st.none() | st.integers(min_value=1, max_value=min(bits + 2, 10)))
    pairs = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=m - 1),
                st.integers(min_value=0, max_value=2**bits - 1),
            ),
            max_size=40,
        )
    )
    return m, bits, window, pairs


@settings(max_examples=150, deadline=None)
@given(problems())
def test_streaming_matches_naive(
    problem: tuple[int, int, int | None, list[tuple[int, int]]],
) -> None:
    m, bits, window, pairs = problem
    acc = StreamingMultiExp(m, bits, window)
    for b, e in pairs:
        acc.add(b, e)
    assert acc.result() == naive(pairs, m)
    assert acc.terms == len(pairs)


@settings(max_examples=60, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_state_roundtrip_merge_and_order(
    problem: tuple[int, int, int | None, list[tuple[int, int]]], rnd: random.Random
) -> None:
    m, bits, window, pairs = problem
    cut = len(pairs) // 2
    first = StreamingMultiExp(m, bits, window)
    first.add_many(pairs[:cut])
    # persist and restore mid-stream, then continue
    restored = StreamingMultiExp.from_state(m, bits, first.window, first.state())
    assert restored.result() == first.result()
    second = StreamingMultiExp(m, bits, first.window)
    shuffled = pairs[cut:]
    rnd.shuffle(shuffled)
    second.add_many(shuffled)
    restored.merge(second)
    assert restored.result() == naive(pairs, m)
    # result() does not consume: accumulation continues
    restored.add(3 % m, 1)
    assert restored.result() == naive([*pairs, (3 % m, 1)], m)


@settings(max_examples=60, deadline=None)
@given(
    moduli,
    st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=-50, max_value=2**20)),
        max_size=30,
    ),
)
def test_grouped_matches_naive(m: int, raw: list[tuple[int, int]]) -> None:
    # negative exponents need unit bases: use an odd prime modulus-independent trick, units only
    pairs = [(b % m, e) for b, e in raw if e >= 0 or nt.gcd(b % m, m) == 1]
    g = GroupedProduct(m)
    for b, e in pairs:
        g.add(b, e)
    expected = 1 % m
    for b, e in pairs:
        expected = expected * pow(b, e, m) % m
    assert g.result() == expected
    back = GroupedProduct.from_state(m, g.state())
    assert back.result() == expected
    other = GroupedProduct(m)
    other.add(2 % m, 5)
    back.merge(other)
    assert back.result() == expected * pow(2, 5, m) % m


def test_agrees_with_bucket_multi_exp_at_paillier_size(paillier_2048, rng: random.Random) -> None:
    pk, _ = paillier_2048
    n2 = pk.nsquare
    bases = [nt.random_below(n2, rng) for _ in range(300)]
    exps = [rng.getrandbits(16) for _ in range(300)]
    acc = StreamingMultiExp(n2, 16)
    for b, e in zip(bases, exps, strict=True):
        acc.add(b, e)
    assert acc.window == 8
    assert acc.result() == nt.bucket_multi_exp(bases, exps, n2)


def test_paillier_bill_is_exact(paillier_small, rng: random.Random) -> None:
    pk, sk = paillier_small
    readings = [rng.randint(-3000, 5000) for _ in range(200)]
    prices = [rng.getrandbits(16) for _ in range(200)]
    acc = StreamingMultiExp(pk.nsquare, 16)
    tou = GroupedProduct(pk.nsquare)
    for x, p in zip(readings, prices, strict=True):
        c = pk.encrypt(x, rng=rng)
        acc.add(c.value, p)
        tou.add(c.value, p % 3 + 14000)
    bill = sum(x * p for x, p in zip(readings, prices, strict=True))
    assert sk.decrypt(pk.ciphertext(acc.result())) == bill
    tou_bill = sum(x * (p % 3 + 14000) for x, p in zip(readings, prices, strict=True))
    assert sk.decrypt(pk.ciphertext(tou.result())) == tou_bill


def test_empty_and_default_window() -> None:
    assert StreamingMultiExp(97, 16).result() == 1
    assert GroupedProduct(97).result() == 1
    assert default_window(16) == 8
    s = StreamingMultiExp(97, 16)
    assert s.state() == [1] * (2 * 255)


def test_rejects_bad_inputs() -> None:
    s = StreamingMultiExp(97, 8, 4)
    with pytest.raises(ValueError, match="inverse base"):
        s.add(5, -1)
    with pytest.raises(ValueError):
        s.add(5, 256)
    with pytest.raises(TypeError):
        s.add(5, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.add(5, True)
    with pytest.raises(ValueError):
        StreamingMultiExp(97, 8, 0)
    with pytest.raises(ValueError):
        StreamingMultiExp(1, 8)
    with pytest.raises(ValueError):
        StreamingMultiExp.from_state(97, 8, 4, [1] * 3)
    with pytest.raises(ValueError):
        StreamingMultiExp.from_state(97, 8, 4, [97] * 30)
    with pytest.raises(ValueError):
        s.merge(StreamingMultiExp(97, 8, 2))
    with pytest.raises(ValueError):
        GroupedProduct.from_state(97, {3: 100})
    with pytest.raises(ValueError):
        GroupedProduct(97).merge(GroupedProduct(89))
    # a failed add leaves the state unchanged
    s.add(5, 3)
    before = s.state()
    with pytest.raises(ValueError):
        s.add(7, 1 << 8)
    assert s.state() == before and s.terms == 1
