"""Big-integer arithmetic: the only module that imports gmpy2.

Everything else in privmeter calls these functions, so the acceleration
backend lives in one place (after MPyC's ``gmpy.py`` and phe's ``util.py``).

Randomness is passed in: every function that draws takes ``rng``, an object
with ``getrandbits(k)`` (``random.Random`` for deterministic tests, the
default :data:`SYSTEM_RNG` -- the OS CSPRNG -- otherwise).

Security property: primes come from :func:`random_prime`, which uses
gmpy2's Miller-Rabin (BPSW in ``is_prime``) with 50 rounds on candidates
whose top two bits are set, so ``p*q`` has exactly ``2*bits`` bits.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Protocol

import gmpy2
from gmpy2 import mpz

from privmeter.errors import InvalidArgument

__all__ = [
    "SYSTEM_RNG",
    "CombTable",
    "FixedBaseTable",
    "RandomSource",
    "bucket_multi_exp",
    "crt_pair",
    "gcd",
    "invert",
    "is_prime",
    "legendre",
    "mpz",
    "powmod",
    "powmod_mpz",
    "random_below",
    "random_prime",
    "random_unit",
]


class RandomSource(Protocol):
    """What privmeter needs from a random number generator."""

    def getrandbits(self, k: int, /) -> int: ...


SYSTEM_RNG: RandomSource = secrets.SystemRandom()

MILLER_RABIN_ROUNDS = 50  # error < 4**-50 per composite; far below other risks


def powmod(base: int, exp: int, mod: int) -> int:
    """``base**exp % mod`` (negative ``exp`` allowed when ``base`` is a unit)."""
    return int(gmpy2.powmod(base, exp, mod))


def powmod_mpz(base: int, exp: int, mod: int) -> mpz:
    """As :func:`powmod`, returning gmpy2's ``mpz`` (no conversion cost)."""
    return gmpy2.powmod(base, exp, mod)


def invert(a: int, mod: int) -> int:
    """Inverse of ``a`` modulo ``mod``; raises ``ZeroDivisionError`` if none."""
    return int(gmpy2.invert(a, mod))


def gcd(a: int, b: int) -> int:
    return int(gmpy2.gcd(a, b))


def is_prime(n: int) -> bool:
    return bool(gmpy2.is_prime(n, MILLER_RABIN_ROUNDS))


def legendre(a: int, p: int) -> int:
    """The Legendre symbol ``(a / p)`` for an odd prime ``p``: 1, -1 or 0."""
    return int(gmpy2.legendre(a, p))


def random_below(bound: int, rng: RandomSource = SYSTEM_RNG) -> int:
    """Uniform integer in ``[0, bound)`` by rejection sampling."""
    if bound <= 0:
        raise InvalidArgument(f"bound must be positive, got {bound!r}")
    k = bound.bit_length()
    while True:
        r = rng.getrandbits(k)
        if r < bound:
            return r


def random_unit(mod: int, rng: RandomSource = SYSTEM_RNG) -> int:
    """Uniform element of Z*_mod."""
    while True:
        r = random_below(mod, rng)
        if r > 0 and gmpy2.gcd(r, mod) == 1:
            return r


def random_prime(bits: int, rng: RandomSource = SYSTEM_RNG) -> int:
    """A random prime of exactly ``bits`` bits with the top two bits set."""
    if bits < 16:
        raise InvalidArgument(f"prime size must be at least 16 bits, got {bits!r}")
    top = (1 << (bits - 1)) | (1 << (bits - 2))
    while True:
        cand = mpz(rng.getrandbits(bits) | top | 1)
        # next_prime keeps the search cheap; stay inside the bit length.
        p = gmpy2.next_prime(cand - 2) if cand > 2 else cand
        if p.bit_length() == bits and gmpy2.is_prime(p, MILLER_RABIN_ROUNDS):
            return int(p)


def crt_pair(ap: int, p: int, aq: int, q: int, q_inv_p: int) -> int:
    """Garner recombination: x = ap mod p, x = aq mod q, ``q_inv_p = q^-1 mod p``."""
    h = ((ap - aq) * q_inv_p) % p
    return int(aq + h * q)


class FixedBaseTable:
    """Fixed-base windowed exponentiation ``base**e mod modulus`` for ``e < 2**max_bits``.

    Precomputes ``base**(j * 2**(w*i))`` for every window ``i`` and digit
    ``j``; an exponentiation then costs one multiplication per non-zero
    window (about ``max_bits / w``) and no squarings.  Memory is
    ``(max_bits / w) * (2**w - 1)`` residues.
    """

    __slots__ = ("base", "max_bits", "modulus", "table", "window")

    def __init__(self, base: int, modulus: int, max_bits: int, window: int = 6) -> None:
        if max_bits <= 0 or window <= 0:
            raise InvalidArgument("max_bits and window must be positive")
        self.base = int(base)
        self.modulus = int(modulus)
        self.max_bits = max_bits
        self.window = window
        m = mpz(modulus)
        cur = mpz(base) % m
        nwin = -(-max_bits // window)
        table: list[list[mpz]] = []
        for _ in range(nwin):
            row = [cur]
            acc = cur
            for _ in range((1 << window) - 2):
                acc = acc * cur % m
                row.append(acc)
            table.append(row)
            cur = acc * cur % m  # cur ** (2**window)
        self.table = table

    def pow(self, exp: int) -> mpz:
        if exp < 0 or exp.bit_length() > self.max_bits:
            raise InvalidArgument(
                f"exponent must be in [0, 2**{self.max_bits}), got {exp.bit_length()} bits"
            )
        m = mpz(self.modulus)
        mask = (1 << self.window) - 1
        acc = mpz(1)
        w = self.window
        i = 0
        e = int(exp)
        table = self.table
        while e:
            d = e & mask
            if d:
                acc = acc * table[i][d - 1] % m
            e >>= w
            i += 1
        return acc


class CombTable:
    """Fixed-base exponentiation by the Lim-Lee comb: ``base**e mod modulus``, ``e < 2**max_bits``.

    The exponent's ``max_bits`` bits are laid out as ``rows`` rows of
    ``a = ceil(max_bits / rows)`` columns; column ``c`` is a ``rows``-bit digit.
    ``tables`` tables hold, for every digit ``x``, the product of the rows'
    bases ``base**(2**(r*a))`` selected by ``x``, each table shifted by
    ``2**(s*b)`` with ``b = ceil(a / tables)``.  An exponentiation costs ``b``
    squarings and at most ``a`` multiplications; memory is
    ``tables * 2**rows`` residues.  For a 1536-bit exponent the default
    (12 rows, 4 tables) needs 32 squarings + 128 multiplications, against
    220 multiplications for a 7-bit windowed table using 1.7x the memory.
    """

    __slots__ = ("_m", "_ncols", "_span", "base", "max_bits", "modulus", "rows", "tables")

    def __init__(
        self, base: int, modulus: int, max_bits: int, rows: int = 12, tables: int = 4
    ) -> None:
        if max_bits <= 0 or rows <= 0 or tables <= 0:
            raise InvalidArgument("max_bits, rows and tables must be positive")
        if rows > 20:
            raise InvalidArgument(f"rows={rows!r} would need 2**{rows} residues per table")
        self.base = int(base)
        self.modulus = int(modulus)
        self.max_bits = max_bits
        self.rows = rows
        m = mpz(modulus)
        self._m = m
        a = -(-max_bits // rows)
        tables = min(tables, a)
        b = -(-a // tables)
        self._ncols = a
        self._span = b
        # row bases g_r = base ** (2 ** (r * a))
        g = [mpz(base) % m]
        for _ in range(rows - 1):
            x = g[-1]
            for _ in range(a):
                x = x * x % m
            g.append(x)
        out: list[list[mpz]] = []
        for s in range(tables):
            t = [mpz(1)] * (1 << rows)
            for r in range(rows):
                bit = 1 << r
                gr = g[r]
                t[bit] = gr
                for x in range(1, bit):
                    t[bit | x] = t[x] * gr % m
            out.append(t)
            if s + 1 < tables:
                nxt = []
                for x in g:
                    for _ in range(b):
                        x = x * x % m
                    nxt.append(x)
                g = nxt
        self.tables = out

    def digits(self, exp: int) -> list[int]:
        """The ``a`` column digits of ``exp`` (column 0 first)."""
        a, h = self._ncols, self.rows
        bits = format(exp, "b").zfill(a * h)[::-1]  # bits[k] = bit k of exp
        rows = [bits[r * a : (r + 1) * a] for r in range(h - 1, -1, -1)]  # top row first
        return [int("".join(col), 2) for col in zip(*rows, strict=True)]

    def pow(self, exp: int) -> mpz:
        """``base ** exp mod modulus`` for ``0 <= exp < 2**max_bits``."""
        if exp < 0 or exp.bit_length() > self.max_bits:
            raise InvalidArgument(
                f"exponent must be in [0, 2**{self.max_bits}), got {exp.bit_length()} bits"
            )
        digits = self.digits(int(exp))
        m = self._m
        b, a = self._span, self._ncols
        tables = self.tables
        acc: mpz | None = None
        for j in range(b - 1, -1, -1):
            if acc is not None:
                acc = acc * acc % m
            c = j
            for t in tables:
                if c >= a:
                    break
                d = digits[c]
                if d:
                    acc = t[d] if acc is None else acc * t[d] % m
                c += b
        return mpz(1) % m if acc is None else acc


def bucket_multi_exp(
    bases: Sequence[int], exps: Sequence[int], modulus: int, window: int | None = None
) -> int:
    """``prod(b_i ** e_i) mod modulus`` by Pippenger's bucket method.

    Exponents must be non-negative.  For ``N`` terms with ``b``-bit exponents
    and window ``c`` the cost is about ``ceil(b/c) * (N + 2**(c+1))``
    multiplications plus ``b`` squarings, against ``N * 1.5b`` for naive
    exponentiation.
    """
    if len(bases) != len(exps):
        raise InvalidArgument("bases and exponents differ in length")
    if not bases:
        return 1
    if any(e < 0 for e in exps):
        raise InvalidArgument("exponents must be non-negative")
    m = mpz(modulus)
    maxbits = max(int(e).bit_length() for e in exps)
    if maxbits == 0:
        return 1
    n = len(bases)
    if window is None:
        window = best_bucket_window(n, maxbits)
    mask = (1 << window) - 1
    nwin = -(-maxbits // window)
    mb = [mpz(b) % m for b in bases]
    result = mpz(1)
    for wi in range(nwin - 1, -1, -1):
        for _ in range(window):
            result = result * result % m
        shift = wi * window
        buckets: list[mpz | None] = [None] * (mask + 1)
        for b, e in zip(mb, exps, strict=True):
            d = (int(e) >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % m
        # sum_j j * bucket_j  (multiplicatively: prod bucket_j ** j) by running products
        running = mpz(1)
        total = mpz(1)
        have = False
        for j in range(mask, 0, -1):
            bj = buckets[j]
            if bj is not None:
                running = running * bj % m
                have = True
            if have:
                total = total * running % m
        result = result * total % m
    return int(result)


def best_bucket_window(n_terms: int, exp_bits: int) -> int:
    """Window minimising ``ceil(b/c) * (N + 2**(c+1)) + b`` multiplications."""
    best_c, best_cost = 1, None
    for c in range(1, 21):
        cost = -(-exp_bits // c) * (n_terms + (1 << (c + 1)))
        if best_cost is None or cost < best_cost:
            best_c, best_cost = c, cost
    return best_c


def product_mod(values: Iterable[int], modulus: int) -> int:
    """Product of ``values`` modulo ``modulus``."""
    m = mpz(modulus)
    acc = mpz(1)
    for v in values:
        acc = acc * v % m
    return int(acc)
