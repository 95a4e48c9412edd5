"""The comparison groups: RFC 7919 primes recomputed, subgroup checks, one-use keys."""

from __future__ import annotations

import random

import gmpy2
import pytest

from privmeter.crypto import elgamal as eg
from privmeter.errors import InvalidCiphertext, InvalidKey, LocalProtocolError


@pytest.mark.parametrize(
    ("name", "bits", "x"), [("ffdhe2048", 2048, 560316), ("ffdhe3072", 3072, 2625351)]
)
def test_rfc7919_primes(name: str, bits: int, x: int) -> None:
    ctx = gmpy2.get_context().copy()
    ctx.precision = bits + 200
    with gmpy2.context(ctx):
        e_scaled = int(gmpy2.floor(gmpy2.exp(1) * gmpy2.mpz(2) ** (bits - 130)))
    p = 2**bits - 2 ** (bits - 64) + (e_scaled + x) * 2**64 - 1
    grp = eg.GROUPS[name]
    assert grp.p == p and grp.bits == bits
    assert gmpy2.is_prime(p, 25) and gmpy2.is_prime(grp.q, 25)
    assert pow(grp.g, grp.q, p) == 1  # g = 2 has order q


def test_test_group_is_a_safe_prime_and_refused_by_default() -> None:
    grp = eg.GROUPS["test512"]
    assert gmpy2.is_prime(grp.p, 25) and gmpy2.is_prime(grp.q, 25) and pow(2, grp.q, grp.p) == 1
    with pytest.raises(InvalidKey):
        eg.get_group("test512")
    with pytest.raises(InvalidKey):
        eg.group_for_bits(1024)
    assert eg.group_for_bits(1024, insecure_for_tests=True) is grp
    assert (
        eg.group_for_bits(2048).name == "ffdhe2048" and eg.group_for_bits(4096).name == "ffdhe3072"
    )
    with pytest.raises(InvalidKey):
        eg.get_group("nope")


def test_one_use_key_zero_tests_once() -> None:
    rng = random.Random(1)
    grp = eg.get_group("test512", allow_insecure=True)
    key = eg.OneUseKey(grp, rng=rng)
    cts = [key.encrypt(m, rng=rng) for m in (0, 1, 0, 5)]
    for a, b in cts:
        grp.check_element(a)
        grp.check_element(b)
    assert key.zero_tests(cts) == [True, False, True, False]
    assert key.used
    with pytest.raises(LocalProtocolError):
        key.zero_tests(cts)
    with pytest.raises(LocalProtocolError):
        key.encrypt(0)
    for bad in (0, grp.p, grp.p - 1, True, "3"):
        with pytest.raises(InvalidCiphertext):
            grp.check_element(bad)
