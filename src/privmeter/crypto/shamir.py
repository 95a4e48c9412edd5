"""Shamir t-of-n secret sharing over the Mersenne prime field GF(2**127 - 1).

What it is for: a meter splits its per-interval self-mask seed and its
per-interval recovery key among its neighbours, so that the head-end can
rebuild exactly one of the two (never both) for any meter from ``threshold``
neighbours' answers (secure aggregation, Bonawitz et al. CCS 2017).

Security: information-theoretic.  Any ``threshold - 1`` shares are
independent of the secret (the polynomial's other coefficients are uniform
in the field, drawn from the caller's ``rng``, the OS CSPRNG by default).
Secrets are integers in ``[0, PRIME)``; a 127-bit random seed therefore has
127 bits of entropy.

Guarantee: :func:`reconstruct` returns the secret whenever it is given at
least ``threshold`` correct shares with distinct, non-zero x-coordinates.
It does not detect wrong shares (a lying share-holder yields a wrong
secret); the aggregation protocol authenticates every share end to end
instead.  Lagrange coefficients are cached per x-set, because the same
neighbour sets recur every interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from privmeter.crypto._numtheory import SYSTEM_RNG, RandomSource

__all__ = [
    "PRIME",
    "SECRET_BITS",
    "SHARE_BYTES",
    "lagrange_at_zero",
    "reconstruct",
    "share",
    "share_from_bytes",
    "share_to_bytes",
]

PRIME = (1 << 127) - 1  # Mersenne prime: fast reduction, holds a 127-bit seed
SECRET_BITS = 127  # seeds drawn for sharing have this many random bits
SHARE_BYTES = 16  # one field element on the wire (big-endian)


def _check_xs(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ValueError("share x-coordinates must be distinct")
    for x in xs:
        if not isinstance(x, int) or not 0 < x < PRIME:
            raise ValueError(f"share x-coordinate must be in [1, PRIME), got {x!r}")


def share(secret: int, xs: Sequence[int], threshold: int, *,
          rng: RandomSource = SYSTEM_RNG) -> list[int]:
    """Shares ``f(x)`` for each ``x`` in ``xs`` of a random degree ``threshold-1``
    polynomial with ``f(0) = secret``."""
    if not isinstance(secret, int) or not 0 <= secret < PRIME:
        raise ValueError("secret must be an integer in [0, PRIME)")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold!r}")
    _check_xs(xs)
    coeffs = [secret] + [rng.getrandbits(128) % PRIME for _ in range(threshold - 1)]
    coeffs.reverse()  # Horner: highest degree first
    out = []
    for x in xs:
        acc = 0
        for c in coeffs:
            acc = acc * x + c  # x is small: reduce once at the end
        out.append(acc % PRIME)
    return out


@lru_cache(maxsize=65536)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients ``l_i`` with ``f(0) = sum l_i f(x_i)`` for ``deg f < len(xs)``.

    One modular inversion per x-set (Montgomery's batch trick), not one per point.
    """
    _check_xs(xs)
    m = len(xs)
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num *= xj
                den *= xj - xi
        nums.append(num % PRIME)
        dens.append(den % PRIME)
    prefix = [1] * (m + 1)
    for i, d in enumerate(dens):
        prefix[i + 1] = prefix[i] * d % PRIME
    inv = pow(prefix[m], -1, PRIME)
    out = [0] * m
    for i in range(m - 1, -1, -1):
        out[i] = nums[i] * (inv * prefix[i] % PRIME) % PRIME
        inv = inv * dens[i] % PRIME
    return tuple(out)


def reconstruct(points: Sequence[tuple[int, int]], threshold: int) -> int:
    """The secret from ``(x, share)`` points; uses the first ``threshold`` of them.

    Raises ``ValueError`` when fewer than ``threshold`` points are given.
    """
    if len(points) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(points)}")
    pts = points[:threshold]
    lam = lagrange_at_zero(tuple(x for x, _ in pts))
    acc = 0
    for li, (_, y) in zip(lam, pts, strict=True):
        if not 0 <= y < PRIME:
            raise ValueError("share outside the field")
        acc += li * y
    return acc % PRIME


def share_to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Decode one 16-byte share; raises ``ValueError`` if not a field element."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"share must be {SHARE_BYTES} bytes")
    v = int.from_bytes(data, "big")
    if v >= PRIME:
        raise ValueError("share outside the field")
    return v
