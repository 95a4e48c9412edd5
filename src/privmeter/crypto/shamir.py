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
neighbour sets recur every interval; :func:`reconstruct_many` computes the
new ones of a whole interval with a single modular inversion.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from privmeter.crypto._numtheory import SYSTEM_RNG, RandomSource

__all__ = [
    "PRIME",
    "SECRET_BITS",
    "SHARE_BYTES",
    "lagrange_at_zero",
    "lagrange_many",
    "reconstruct",
    "reconstruct_many",
    "reconstruct_xy",
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


_MANY_CACHE: dict[tuple[int, ...], tuple[int, ...]] = {}
_MANY_CACHE_MAX = 65536
_SMALL_X = 1 << 20  # x-coordinates below this take the vectorised path


def lagrange_many(sets: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """:func:`lagrange_at_zero` for many x-sets at once (the head-end unmasks
    one seed per meter per interval, each with its own holder set).

    Sets seen before come from a cache.  For the others, the denominators
    ``prod_{j != i} (x_j - x_i)`` are multiplied exactly in int64 chunks by
    numpy (the x are small roster positions), and all of them are inverted
    with ONE modular inversion (Montgomery's trick across every set).
    """
    out: list[tuple[int, ...] | None] = [_MANY_CACHE.get(xs) for xs in sets]
    todo = [i for i, c in enumerate(out) if c is None]
    groups: dict[int, list[int]] = {}
    for i in todo:
        xs = sets[i]
        _check_xs(xs)
        if not xs or max(xs) >= _SMALL_X:
            out[i] = lagrange_at_zero(xs)
        else:
            groups.setdefault(len(xs), []).append(i)
    nums: list[int] = []
    dens: list[int] = []
    order: list[tuple[int, int]] = []  # (set index, size) in the order of nums/dens
    for m, idx in groups.items():
        arr = np.array([sets[i] for i in idx], dtype=np.int64)  # (S, m)
        diff = arr[:, None, :] - arr[:, :, None]  # diff[s, i, j] = x_j - x_i
        diff[:, np.arange(m), np.arange(m)] = 1
        g = max(1, 62 // max(1, int(arr.max()).bit_length()))  # |chunk product| < 2**62
        pad = -m % g
        if pad:
            diff = np.concatenate([diff, np.ones((len(idx), m, pad), dtype=np.int64)], axis=2)
        chunks = diff.reshape(len(idx), m, -1, g).prod(axis=3).tolist()
        prod = math.prod
        for s, i in enumerate(idx):
            xs = sets[i]
            total = prod(xs)
            nums.extend([total // x for x in xs])  # exact, < 2**(20 m): reduced below
            dens.extend(map(prod, chunks[s]))  # exact, nonzero mod PRIME (|x_j - x_i| < PRIME)
            order.append((i, m))
    if dens:
        prefix = [1] * (len(dens) + 1)
        for k, d in enumerate(dens):
            prefix[k + 1] = prefix[k] * d % PRIME
        inv = pow(prefix[-1], -1, PRIME)
        lam = [0] * len(dens)
        for k in range(len(dens) - 1, -1, -1):
            lam[k] = nums[k] * inv * prefix[k] % PRIME
            inv = inv * dens[k] % PRIME
        if len(_MANY_CACHE) > _MANY_CACHE_MAX:
            _MANY_CACHE.clear()
        k = 0
        for i, m in order:
            out[i] = _MANY_CACHE[sets[i]] = tuple(lam[k:k + m])
            k += m
    return out  # type: ignore[return-value]


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


def reconstruct_xy(xs: Sequence[int], ys: Sequence[int], threshold: int) -> int:
    """:func:`reconstruct` for points given as two parallel sequences (the
    head-end's batch path: one cached coefficient lookup and one C-level dot
    product per secret).  Uses the first ``threshold`` points; raises
    ``ValueError`` for too few points or a share outside the field."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(xs) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(xs)}")
    ys = ys[:threshold]
    if ys and (min(ys) < 0 or max(ys) >= PRIME):
        raise ValueError("share outside the field")
    lam = lagrange_at_zero(tuple(xs[:threshold]))
    return sum(map(operator.mul, lam, ys)) % PRIME


def reconstruct_many(points: Sequence[tuple[Sequence[int], Sequence[int]]],
                     threshold: int) -> list[int]:
    """:func:`reconstruct_xy` for many secrets, with :func:`lagrange_many`
    (one modular inversion for all new x-sets).  Raises ``ValueError`` if any
    secret has too few points or a share outside the field."""
    sets = []
    for xs, ys in points:
        if len(xs) != len(ys):
            raise ValueError("xs and ys differ in length")
        if len(xs) < threshold:
            raise ValueError(f"need {threshold} shares, got {len(xs)}")
        if threshold and (min(ys[:threshold]) < 0 or max(ys[:threshold]) >= PRIME):
            raise ValueError("share outside the field")
        sets.append(tuple(xs[:threshold]))
    lams = lagrange_many(sets)
    return [sum(map(operator.mul, lam, ys[:threshold])) % PRIME
            for lam, (_, ys) in zip(lams, points, strict=True)]


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
