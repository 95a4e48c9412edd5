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
instead.  :func:`lagrange_many` computes the coefficients of many x-sets
with a single modular inversion, and a :class:`SubsetInterpolator` turns the
coefficients of a holder set, computed once per epoch, into those of
whichever of its holders answered (no inversion per interval).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from privmeter.crypto._numtheory import SYSTEM_RNG, RandomSource, mpz
from privmeter.errors import InvalidArgument

__all__ = [
    "PRIME",
    "SECRET_BITS",
    "SHARE_BYTES",
    "SubsetInterpolator",
    "interpolate_subsets",
    "lagrange_at_zero",
    "lagrange_many",
    "reconstruct",
    "share",
    "share_bytes",
    "share_from_bytes",
    "share_to_bytes",
    "subset_interpolators",
]

PRIME = (1 << 127) - 1  # Mersenne prime: fast reduction, holds a 127-bit seed
SECRET_BITS = 127  # seeds drawn for sharing have this many random bits
SHARE_BYTES = 16  # one field element on the wire (big-endian)


def _check_xs(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise InvalidArgument("share x-coordinates must be distinct")
    for x in xs:
        if not isinstance(x, int) or not 0 < x < PRIME:
            raise InvalidArgument(f"share x-coordinate must be in [1, PRIME), got {x!r}")


def share(
    secret: int, xs: Sequence[int], threshold: int, *, rng: RandomSource = SYSTEM_RNG
) -> list[int]:
    """Shares ``f(x)`` for each ``x`` in ``xs`` of a random degree ``threshold-1``
    polynomial with ``f(0) = secret``."""
    return [share_from_bytes(b) for b in share_bytes([secret], xs, threshold, rng=rng)]


def share_bytes(
    secrets: Sequence[int], xs: Sequence[int], threshold: int, *, rng: RandomSource = SYSTEM_RNG
) -> list[bytes]:
    """:func:`share` of several secrets at the same points, as wire bytes: for
    each ``x`` in ``xs``, the :func:`share_to_bytes` of every secret's share at
    ``x``, concatenated in the order of ``secrets``.

    Draws from ``rng`` exactly what successive :func:`share` calls would (each
    polynomial's coefficients of degree 1, 2, ... in turn), so given the same
    ``rng`` the shares are the same.  Every argument is checked before
    anything is drawn.  Evaluation is one packed product per coefficient (see
    :class:`_PowerTable`), not a Horner loop per point.
    """
    for secret in secrets:
        if not isinstance(secret, int) or not 0 <= secret < PRIME:
            raise InvalidArgument("secret must be an integer in [0, PRIME)")
    if not 1 <= threshold <= len(xs):
        raise InvalidArgument(f"threshold must be in [1, {len(xs)}], got {threshold!r}")
    _check_xs(xs)
    # a slot holds an unreduced f(x) (< threshold * PRIME**2), then the
    # reduced shares of every secret side by side
    slot = max((2 * 127 + threshold.bit_length() + 7) // 8, SHARE_BYTES * len(secrets))
    table = _power_table(tuple(xs), threshold, slot)
    mul = operator.mul
    packed = mpz(0)
    for secret in secrets:
        coeffs = [secret] + [rng.getrandbits(128) % PRIME for _ in range(threshold - 1)]
        packed = (packed << (8 * SHARE_BYTES)) + table.reduce(sum(map(mul, coeffs, table.cols)))
    data = packed.to_bytes(len(xs) * slot, "big")
    width = SHARE_BYTES * len(secrets)
    return [data[end - width : end] for end in range(slot, len(data) + 1, slot)]


class _PowerTable:
    """The powers of a fixed x-set, packed for evaluating many polynomials.

    Point ``j`` of ``xs`` owns a ``slot``-byte field of a big integer (the
    first point the most significant), and ``cols[i]`` holds ``x_j**i mod
    PRIME`` in slot ``j``.  Then ``sum_i c_i * cols[i]`` has ``f(x_j)``,
    unreduced, in slot ``j`` (the slot is wide enough for no carry to cross),
    and :meth:`reduce` takes every slot mod PRIME at once, by the Mersenne
    folding ``v = (v mod 2**127) + (v >> 127)  (mod PRIME)`` on whole integers.
    """

    __slots__ = ("cols", "hi", "lo", "ones")

    def __init__(self, xs: Sequence[int], threshold: int, slot: int) -> None:
        rows = []
        for x in xs:
            row = [1] * threshold
            p = 1
            for i in range(1, threshold):
                p = p * x % PRIME
                row[i] = p
            rows.append(row)
        n = len(xs)
        self.cols = tuple(
            mpz(int.from_bytes(b"".join(r[i].to_bytes(slot, "big") for r in rows), "big"))
            for i in range(threshold)
        )

        def every_slot(v: int) -> mpz:
            return mpz(int.from_bytes(v.to_bytes(slot, "big") * n, "big"))

        self.lo = every_slot(PRIME)  # bits [0, 127) of each slot
        self.hi = every_slot((1 << (8 * slot - 127)) - 1)  # what >> 127 leaves in a slot
        self.ones = every_slot(1)

    def reduce(self, acc: mpz) -> mpz:
        """Every slot of ``acc`` reduced mod PRIME into ``[0, PRIME)``."""
        lo, hi, ones = self.lo, self.hi, self.ones
        while True:
            carry = (acc >> 127) & hi
            if not carry:
                break
            acc = (acc & lo) + carry
        # every slot is now <= PRIME (< 2**127); a slot equal to PRIME becomes 0
        return acc - (((acc + ones) >> 127) & ones) * PRIME


# A meter's holder set is fixed for an epoch (one entry); 1024 holds a simulated group of
# 1000 meters, whose sets recur every interval.  An entry is (threshold * len(xs) * slot)
# bytes: 18 KB at degree 32, 70 KB at degree 64.
@lru_cache(maxsize=1024)
def _power_table(xs: tuple[int, ...], threshold: int, slot: int) -> _PowerTable:
    return _PowerTable(xs, threshold, slot)


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
            out[i] = _MANY_CACHE[sets[i]] = tuple(lam[k : k + m])
            k += m
    return out  # type: ignore[return-value]


def reconstruct(points: Sequence[tuple[int, int]], threshold: int) -> int:
    """The secret from ``(x, share)`` points; uses the first ``threshold`` of them.

    Raises ``ValueError`` when fewer than ``threshold`` points are given.
    """
    if len(points) < threshold:
        raise InvalidArgument(f"need {threshold} shares, got {len(points)}")
    pts = points[:threshold]
    lam = lagrange_at_zero(tuple(x for x, _ in pts))
    acc = 0
    for li, (_, y) in zip(lam, pts, strict=True):
        if not 0 <= y < PRIME:
            raise InvalidArgument("share outside the field")
        acc += li * y
    return acc % PRIME


class SubsetInterpolator:
    """f(0) from the shares of ANY subset (of at least ``threshold`` points) of
    one fixed x-set: the head-end's per-interval unmasking, vectorised by
    algebra rather than by caching.

    A meter's share holders are fixed for an epoch (its neighbours and
    itself); which of them answer changes every interval.  With the full
    set's coefficients ``L_j`` precomputed once, the coefficients for the
    present set ``X`` (absent set ``R``) are

        l_j = L_j * prod_{m in R} (x_m - x_j) / x_m

    so an interval costs one small-integer product per share and one
    multiplication by ``prod_{m in R} 1/x_m`` (inverses precomputed), never
    a modular inversion and never a new coefficient set.  Interpolating
    through every present share (more than ``threshold``) gives the same
    f(0) because ``deg f < threshold``.
    """

    __slots__ = ("inv", "lam", "xs")

    def __init__(self, xs: Sequence[int], lam: Sequence[int], inv: Sequence[int]) -> None:
        self.xs = tuple(xs)
        self.lam = tuple(lam)
        self.inv = tuple(inv)

    def at_zero(self, present: Sequence[int], ys: Sequence[int]) -> int:
        """f(0) from ``ys[i] = f(xs[present[i]])``, ``present`` distinct
        positions in any order.

        The caller guarantees at least ``threshold`` points with values in
        ``[0, PRIME)`` (see :func:`interpolate_subsets`)."""
        lam = self.lam
        if len(present) == len(lam):
            total: int = sum(map(operator.mul, map(lam.__getitem__, present), ys))
            return total % PRIME
        xs, inv = self.xs, self.inv
        absent = sorted(set(range(len(xs))).difference(present))
        xp = [xs[k] for k in present]
        coef = [lam[k] for k in present]
        for m in absent:  # coef_j *= (x_m - x_j), one C-level pass per absent holder
            xm = xs[m]
            coef = list(map(operator.mul, coef, [xm - x for x in xp]))
        acc: int = sum(map(operator.mul, coef, ys))
        acc %= PRIME
        for m in absent:
            acc = acc * inv[m] % PRIME
        return acc


def subset_interpolators(xsets: Sequence[tuple[int, ...]]) -> list[SubsetInterpolator]:
    """One :class:`SubsetInterpolator` per x-set: coefficients by
    :func:`lagrange_many` (one modular inversion for all sets) and the
    inverses of every distinct x by one more batch inversion."""
    lams = lagrange_many(xsets)
    distinct = sorted({x for xs in xsets for x in xs})
    prefix = [1] * (len(distinct) + 1)
    for k, x in enumerate(distinct):
        prefix[k + 1] = prefix[k] * x % PRIME
    inv_all = pow(prefix[-1], -1, PRIME) if distinct else 1
    inv: dict[int, int] = {}
    for k in range(len(distinct) - 1, -1, -1):
        inv[distinct[k]] = inv_all * prefix[k] % PRIME
        inv_all = inv_all * distinct[k] % PRIME
    return [
        SubsetInterpolator(xs, lam, [inv[x] for x in xs])
        for xs, lam in zip(xsets, lams, strict=True)
    ]


def interpolate_subsets(
    jobs: Sequence[tuple[SubsetInterpolator, Sequence[int], Sequence[int]]], threshold: int
) -> list[int]:
    """``ip.at_zero(present, ys)`` for each job, after checking every job has
    at least ``threshold`` points and every share is a field element (raises
    ``ValueError`` otherwise, before computing anything)."""
    for ip, present, ys in jobs:
        if len(present) != len(ys):
            raise InvalidArgument("positions and shares differ in length")
        if len(ys) < threshold:
            raise InvalidArgument(f"need {threshold} shares, got {len(ys)}")
        if ys and (min(ys) < 0 or max(ys) >= PRIME):
            raise InvalidArgument("share outside the field")
        if len(set(present)) != len(present) or (
            present and (min(present) < 0 or max(present) >= len(ip.xs))
        ):
            raise InvalidArgument("share positions must be distinct positions of the x-set")
    return [ip.at_zero(present, ys) for ip, present, ys in jobs]


def share_to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Decode one 16-byte share; raises ``ValueError`` if not a field element."""
    if len(data) != SHARE_BYTES:
        raise InvalidArgument(f"share must be {SHARE_BYTES} bytes")
    v = int.from_bytes(data, "big")
    if v >= PRIME:
        raise InvalidArgument("share outside the field")
    return v
