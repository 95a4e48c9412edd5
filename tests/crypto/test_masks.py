"""The mask PRG: determinism, domain separation, wrap-around sums, signed round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import masks

SEED = bytes(range(16))


def test_deterministic_and_separated() -> None:
    a = masks.expand(SEED, 4, domain=masks.DOMAIN_PAIR, interval=7)
    assert np.array_equal(a, masks.expand(SEED, 4, domain=masks.DOMAIN_PAIR, interval=7))
    assert not np.array_equal(a, masks.expand(SEED, 4, domain=masks.DOMAIN_PAIR, interval=8))
    assert not np.array_equal(a, masks.expand(SEED, 4, domain=masks.DOMAIN_SELF, interval=7))
    assert not np.array_equal(
        a, masks.expand(SEED, 4, domain=masks.DOMAIN_PAIR, interval=7, index=1)
    )
    assert a.dtype == np.uint64 and a.shape == (4,)
    long = masks.expand_bytes(SEED, 200, domain=1, interval=1)
    assert len(long) == 200 and long[:64] != long[64:128]


@settings(max_examples=40, deadline=None)
@given(
    seeds=st.lists(st.binary(min_size=16, max_size=16), max_size=20),
    dim=st.integers(1, 12),
    t=st.integers(0, 2**40),
)
def test_expand_sum_is_sum_mod_2_64(seeds: list[bytes], dim: int, t: int) -> None:
    total = [0] * dim
    for s in seeds:
        for i, v in enumerate(masks.expand(s, dim, domain=masks.DOMAIN_SELF, interval=t)):
            total[i] = (total[i] + int(v)) % masks.MODULUS
    got = masks.expand_sum(seeds, dim, domain=masks.DOMAIN_SELF, interval=t)
    assert [int(x) for x in got] == total


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=8))
def test_signed_round_trip(values: list[int]) -> None:
    assert masks.to_signed(masks.from_signed(values)) == tuple(values)


def test_masked_sum_cancels() -> None:
    """x + m and y - m sum to x + y mod 2**64, also for negative (export) readings."""
    m = masks.expand(SEED, 2, domain=masks.DOMAIN_PAIR, interval=3)
    a = masks.from_signed([-1500, 7]) + m
    b = masks.from_signed([200, -9]) - m
    assert masks.to_signed(a + b) == (-1300, -2)


def test_expand_each_is_expand_bytes_per_seed() -> None:
    seeds = [bytes([i]) * 16 for i in range(5)]
    for nbytes in (8, 24, 64, 65, 200):
        got = masks.expand_each(seeds, nbytes, domain=masks.DOMAIN_PAIR, interval=9)
        assert got == b"".join(
            masks.expand_bytes(s, nbytes, domain=masks.DOMAIN_PAIR, interval=9) for s in seeds
        )
    assert masks.expand_each([], 8, domain=masks.DOMAIN_PAIR, interval=9) == b""
    with pytest.raises(ValueError):
        masks.expand_each([SEED, SEED[:15]], 8, domain=masks.DOMAIN_PAIR, interval=9)


@settings(max_examples=40, deadline=None)
@given(
    seeds=st.lists(st.binary(min_size=16, max_size=16), max_size=70),
    dim=st.sampled_from([1, 3, 9]),
    t=st.integers(0, 2**40),
)
def test_expand_sum_ints_equals_numpy_expand_sum(seeds: list[bytes], dim: int, t: int) -> None:
    """The meter's pure-Python mask sum (dim 1 and 3 in practice; 9 crosses a
    BLAKE2b block) agrees with the head-end's numpy one."""
    got = masks.expand_sum_ints(seeds, dim, domain=masks.DOMAIN_PAIR, interval=t)
    assert got == [
        int(x) for x in masks.expand_sum(seeds, dim, domain=masks.DOMAIN_PAIR, interval=t)
    ]
