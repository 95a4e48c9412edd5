"""Streaming multi-exponentiation: ``prod(base_i ** e_i) mod modulus`` with constant state.

What it is for: the head-end bills a household on ciphertexts.  Each interval
a reading ``E(x_t)`` arrives and must be raised to its price ``p_t``; the bill
is ``E(sum x_t p_t) = prod E(x_t) ** p_t mod n**2``.  Computing every power
on arrival costs ~1.5 * |p| multiplications per reading; the methods here cost
far less and keep a fixed-size state that can be persisted between readings.

* :class:`StreamingMultiExp` -- Pippenger's bucket method made incremental,
  for real-time prices (any exponent below ``2**exp_bits``).  The exponent is
  cut into ``W = ceil(exp_bits / c)`` windows of ``c`` bits; bucket ``(i, d)``
  holds the product of every base whose ``i``-th window digit is ``d``.
  ``add`` costs at most ``W`` multiplications (one per non-zero digit) and
  ``result`` about ``W * 2**(c+1) + exp_bits`` -- independent of the number
  of terms.  With 16-bit prices the default ``c = 8`` bills a month of 2,976
  quarter-hours in about 2.35x the cost of merely multiplying the 2,976
  ciphertexts together (the floor any method needs).
* :class:`GroupedProduct` -- for time-of-use tariffs with few distinct
  prices: one bucket per price, one exponentiation per price at the end.

Security: this module is pure public arithmetic (no secrets, no randomness),
so it needs no assumption; it is exact for any modulus.  It does not check
that bases are units or under the right key -- callers validate ciphertexts
(:meth:`privmeter.crypto.paillier.PaillierPublicKey.validate`) first.

Guarantee: ``result()`` equals ``prod(base_i ** e_i) % modulus`` exactly, in
any order of ``add`` calls, after any number of ``state``/``from_state``
round trips and ``merge``\\s (multiplication mod ``modulus`` is commutative
and associative).  ``result`` does not consume the state: accumulation can
continue afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from privmeter.crypto import _numtheory as nt
from privmeter.errors import InvalidArgument, InvalidArgumentType

__all__ = [
    "DEFAULT_EXPECTED_TERMS",
    "GroupedProduct",
    "StreamingMultiExp",
    "default_window",
]

DEFAULT_EXPECTED_TERMS = 2976  # a 31-day month of 15-minute intervals: what one bill covers
MAX_WINDOW = 16  # 2**16 buckets per window is already far past any useful trade-off


def default_window(exp_bits: int, expected_terms: int = DEFAULT_EXPECTED_TERMS) -> int:
    """Window ``c`` minimising ``ceil(b/c) * (N + 2**(c+1))`` multiplications.

    ``N`` terms contribute ``ceil(b/c)`` multiplications each; the final
    combination costs ``2 * (2**c - 1)`` per window.  For 16-bit exponents and
    a month of readings this gives ``c = 8``.
    """
    if exp_bits <= 0:
        raise InvalidArgument(f"exp_bits must be positive, got {exp_bits!r}")
    best_c, best_cost = 1, -1
    for c in range(1, min(exp_bits, MAX_WINDOW) + 1):
        cost = -(-exp_bits // c) * (expected_terms + (1 << (c + 1)))
        if best_cost < 0 or cost < best_cost:
            best_c, best_cost = c, cost
    return best_c


def _check_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentType(f"{name} must be int, got {type(value).__name__}")
    return value


class StreamingMultiExp:
    """Incremental bucket (Pippenger) accumulation of ``prod(base ** exp) mod modulus``.

    ``StreamingMultiExp(modulus, exp_bits, window=None)`` accepts exponents in
    ``[0, 2**exp_bits)``.  For a negative exponent ``-e`` add the inverse of
    the base with exponent ``e`` (for a Paillier ciphertext: ``-ct``).

    State: ``ceil(exp_bits / window) * (2**window - 1)`` residues, whatever
    the number of terms; :meth:`state` lists them (``1`` for an empty bucket)
    window by window, digit ``1`` first.
    """

    __slots__ = (
        "_buckets",
        "_limit",
        "_m",
        "_mask",
        "_nwin",
        "_stride",
        "exp_bits",
        "modulus",
        "terms",
        "window",
    )

    def __init__(self, modulus: int, exp_bits: int, window: int | None = None) -> None:
        _check_int("modulus", modulus)
        _check_int("exp_bits", exp_bits)
        if modulus < 2:
            raise InvalidArgument(f"modulus must be at least 2, got {modulus!r}")
        if exp_bits <= 0:
            raise InvalidArgument(f"exp_bits must be positive, got {exp_bits!r}")
        if window is None:
            window = default_window(exp_bits)
        _check_int("window", window)
        if not 1 <= window <= MAX_WINDOW:
            raise InvalidArgument(f"window must be in [1, {MAX_WINDOW}], got {window!r}")
        self.modulus = int(modulus)
        self.exp_bits = exp_bits
        self.window = window
        self.terms = 0  # informational: number of add() calls since construction/from_state
        self._m = nt.mpz(modulus)
        self._limit = 1 << exp_bits
        self._mask = (1 << window) - 1
        self._stride = self._mask  # buckets per window (digit 0 has none)
        self._nwin = -(-exp_bits // window)
        # flat list: window i, digit d >= 1 lives at i * stride + d - 1; None = empty (== 1)
        self._buckets: list[nt.mpz | None] = [None] * (self._nwin * self._stride)

    # -- accumulation ---------------------------------------------------------
    def add(self, base: int, exp: int) -> None:
        """Multiply ``base ** exp`` into the accumulator (<= ceil(exp_bits/window) mults)."""
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise InvalidArgumentType(f"exponent must be int, got {type(exp).__name__}")
        if not 0 <= exp < self._limit:
            raise InvalidArgument(
                f"exponent must be in [0, 2**{self.exp_bits}), got {exp!r}"
                + ("; add the inverse base with -exp instead" if exp < 0 else "")
            )
        m = self._m
        b = nt.mpz(base)
        if not 0 <= b < m:
            b %= m
        self.terms += 1
        buckets = self._buckets
        mask, w, stride = self._mask, self.window, self._stride
        off = -1
        e = exp
        while e:
            d = e & mask
            if d:
                idx = off + d
                cur = buckets[idx]
                buckets[idx] = b if cur is None else cur * b % m
            e >>= w
            off += stride

    def add_many(self, pairs: Iterable[tuple[int, int]]) -> None:
        """``add`` each ``(base, exp)`` pair."""
        for base, exp in pairs:
            self.add(base, exp)

    def merge(self, other: StreamingMultiExp) -> None:
        """Fold ``other``'s terms into this accumulator (same modulus, exp_bits, window)."""
        if not isinstance(other, StreamingMultiExp):
            raise InvalidArgumentType(
                f"can only merge a StreamingMultiExp, got {type(other).__name__}"
            )
        if (other.modulus, other.exp_bits, other.window) != (
            self.modulus,
            self.exp_bits,
            self.window,
        ):
            raise InvalidArgument(
                "cannot merge accumulators with different parameters: "
                f"{(other.modulus.bit_length(), other.exp_bits, other.window)!r} vs "
                f"{(self.modulus.bit_length(), self.exp_bits, self.window)!r} (bits, exp_bits, window)"
            )
        m = self._m
        mine = self._buckets
        for idx, theirs in enumerate(other._buckets):
            if theirs is None:
                continue
            cur = mine[idx]
            mine[idx] = theirs if cur is None else cur * theirs % m
        self.terms += other.terms

    # -- result ----------------------------------------------------------------
    def _window_total(self, i: int) -> nt.mpz | None:
        """``prod_d bucket(i, d) ** d`` by running products (2 mults per bucket)."""
        m = self._m
        base = i * self._stride - 1
        buckets = self._buckets
        running: nt.mpz | None = None
        total: nt.mpz | None = None
        for d in range(self._mask, 0, -1):
            bj = buckets[base + d]
            if bj is not None:
                running = bj if running is None else running * bj % m
            if running is not None:
                total = running if total is None else total * running % m
        return total

    def result(self) -> int:
        """``prod(base_i ** e_i) mod modulus`` over every term added (state unchanged)."""
        m = self._m
        acc: nt.mpz | None = None
        for i in range(self._nwin - 1, -1, -1):
            if acc is not None:
                for _ in range(self.window):
                    acc = acc * acc % m
            t = self._window_total(i)
            if t is not None:
                acc = t if acc is None else acc * t % m
        return 1 % self.modulus if acc is None else int(acc)

    # -- persistence -----------------------------------------------------------
    def state(self) -> list[int]:
        """Bucket values window by window (digit 1 first); ``1`` marks an empty bucket."""
        return [1 if b is None else int(b) for b in self._buckets]

    @classmethod
    def from_state(
        cls, modulus: int, exp_bits: int, window: int, state: Sequence[int]
    ) -> StreamingMultiExp:
        """Rebuild an accumulator from :meth:`state` (validates length and ranges)."""
        acc = cls(modulus, exp_bits, window)
        if len(state) != len(acc._buckets):
            raise InvalidArgument(f"state must hold {len(acc._buckets)} buckets, got {len(state)}")
        buckets: list[nt.mpz | None] = []
        for v in state:
            _check_int("bucket value", v)
            if not 0 <= v < acc.modulus:
                raise InvalidArgument("bucket value outside [0, modulus)")
            buckets.append(None if v == 1 else nt.mpz(v))
        acc._buckets = buckets
        return acc

    def __repr__(self) -> str:
        return (
            f"StreamingMultiExp(modulus=<{self.modulus.bit_length()} bits>, "
            f"exp_bits={self.exp_bits}, window={self.window}, terms={self.terms})"
        )


class GroupedProduct:
    """``prod(base ** exp) mod modulus`` with one bucket per distinct exponent.

    For time-of-use tariffs: with ``k`` distinct prices, ``add`` is one
    multiplication and ``result`` ``k`` exponentiations.  Exponents may be any
    integer; a negative one needs the bucket to be a unit (it always is for
    valid Paillier ciphertexts).  ``state()`` maps exponent -> bucket product.
    """

    __slots__ = ("_buckets", "_m", "modulus", "terms")

    def __init__(self, modulus: int) -> None:
        _check_int("modulus", modulus)
        if modulus < 2:
            raise InvalidArgument(f"modulus must be at least 2, got {modulus!r}")
        self.modulus = int(modulus)
        self.terms = 0
        self._m = nt.mpz(modulus)
        self._buckets: dict[int, nt.mpz] = {}

    def add(self, base: int, exp: int) -> None:
        """Multiply ``base`` into the bucket of ``exp`` (one multiplication)."""
        _check_int("exponent", exp)
        m = self._m
        b = nt.mpz(base)
        if not 0 <= b < m:
            b %= m
        cur = self._buckets.get(exp)
        self._buckets[exp] = b if cur is None else cur * b % m
        self.terms += 1

    def merge(self, other: GroupedProduct) -> None:
        """Fold ``other``'s buckets into this one (same modulus)."""
        if not isinstance(other, GroupedProduct):
            raise InvalidArgumentType(
                f"can only merge a GroupedProduct, got {type(other).__name__}"
            )
        if other.modulus != self.modulus:
            raise InvalidArgument("cannot merge products under different moduli")
        m = self._m
        for e, b in other._buckets.items():
            cur = self._buckets.get(e)
            self._buckets[e] = b if cur is None else cur * b % m
        self.terms += other.terms

    def result(self) -> int:
        """``prod(bucket_e ** e) mod modulus`` (state unchanged)."""
        m = self._m
        acc = nt.mpz(1) % m
        for e, b in self._buckets.items():
            if e:
                acc = acc * nt.powmod_mpz(b, e, m) % m
        return int(acc)

    def state(self) -> dict[int, int]:
        """Exponent -> product of the bases added with it."""
        return {e: int(b) for e, b in self._buckets.items()}

    @classmethod
    def from_state(cls, modulus: int, state: Mapping[int, int]) -> GroupedProduct:
        """Rebuild from :meth:`state` (validates types and ranges)."""
        acc = cls(modulus)
        for e, v in state.items():
            _check_int("exponent", e)
            _check_int("bucket value", v)
            if not 0 <= v < acc.modulus:
                raise InvalidArgument("bucket value outside [0, modulus)")
            acc._buckets[e] = nt.mpz(v)
        return acc

    def __repr__(self) -> str:
        return (
            f"GroupedProduct(modulus=<{self.modulus.bit_length()} bits>, "
            f"groups={len(self._buckets)}, terms={self.terms})"
        )
