"""Randomness and big-integer arithmetic for the layers above ``crypto`` (public).

What it is for: the protocol, party and transport code passes random sources
around (:class:`RandomSource`, :data:`SYSTEM_RNG`) and does a little modular
arithmetic of its own (the comparison's fixed-base tables, inverses).  This is
the supported surface for that; the implementation, and the only import of
gmpy2, stays in the private :mod:`privmeter.crypto._numtheory`, which code
outside ``privmeter.crypto`` does not import.

Randomness is passed in: every function that draws takes ``rng``, an object
with ``getrandbits(k)`` (``random.Random`` for deterministic tests, the
default :data:`SYSTEM_RNG` -- the OS CSPRNG -- otherwise).
"""

from __future__ import annotations

from privmeter.crypto._numtheory import (
    SYSTEM_RNG,
    FixedBaseTable,
    RandomSource,
    gcd,
    invert,
    mpz,
    powmod,
    powmod_mpz,
    random_below,
)

__all__ = [
    "SYSTEM_RNG",
    "FixedBaseTable",
    "RandomSource",
    "gcd",
    "invert",
    "mpz",
    "powmod",
    "powmod_mpz",
    "random_below",
]
