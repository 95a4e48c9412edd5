"""Raw Paillier (g = n+1) on integers: hazmat -- correct only when used exactly as documented.

No validation, ints in and out (see :mod:`privmeter.crypto.hazmat`).  Nothing
here checks that a ciphertext is in ``(0, n**2)`` or a unit, that a
plaintext is a residue of ``Z_n``, that a randomiser is ``r**n`` for a unit
``r``, or that a modulus or its factors make a valid key; nothing encodes
signed plaintexts (``m mod n``) or detects overflow.  The safe layer,
:mod:`privmeter.crypto.paillier` (keys, :class:`~privmeter.crypto.paillier.EncryptedNumber`,
validation, serialisation, key generation) and
:mod:`privmeter.crypto.paillier_proofs` (well-formedness and decryption
proofs), does all of that and calls these functions for the arithmetic.

Notation: ``n = p*q``, ``nsquare = n**2``; a *randomiser* ``rn`` is an n-th
residue mod n**2 (``r**n`` or the DJN ``h_s**a``); a ciphertext of the
residue ``m`` is ``(1 + m*n) * rn mod n**2``.  Moduli may be passed as ``int``
or as gmpy2 ``mpz`` (the safe keys pass ``mpz``, which is faster); every
function returns a Python ``int`` unless it says otherwise.

The security argument (DCR, the DJN short-exponent assumption, why ``h_s``
is derived from n) is in :mod:`privmeter.crypto.paillier` and
``docs/paillier.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from privmeter.crypto import _numtheory as nt

__all__ = [
    "DJN_COMB_ROWS",
    "DJN_COMB_TABLES",
    "CrtPrivateKey",
    "derived_base",
    "djn_exponent_bits",
    "djn_rn",
    "djn_table",
    "random_rn",
    "random_rn_full",
    "raw_add",
    "raw_encrypt",
    "raw_negate",
    "raw_pow",
    "raw_product",
    "rn_from_r",
]

DJN_COMB_ROWS = 12  # comb digit width: 2**12 residues per table
DJN_COMB_TABLES = 4  # 1536-bit exponent -> 32 squarings + <= 128 multiplications


# -- the DJN base and randomisers ------------------------------------------------
def derived_base(n: int) -> int:
    """The DJN base ``h_s`` of modulus ``n``: ``h**n mod n**2`` with ``h = -x**2 mod n``.

    ``x`` is a SHA-256 expansion of n (domain ``privmeter-paillier-djn-base-v1``,
    ``|n|/8 + 16`` bytes, reduced mod n, counter bumped until ``1 < x`` and
    ``gcd(x, n) = 1``): nothing up anyone's sleeve, and h_s is an n-th residue
    by construction, which anyone holding n can check by recomputing it
    (deciding n-th residuosity of a given h_s is the DCR problem itself).
    Needs ``n > 2`` with a unit above 1 (any odd composite); deterministic.
    """
    n = int(n)
    nlen = (n.bit_length() + 7) // 8
    counter = 0
    while True:
        material = b""
        block = 0
        while len(material) < nlen + 16:
            material += hashlib.sha256(
                b"privmeter-paillier-djn-base-v1"
                + n.to_bytes(nlen, "big")
                + counter.to_bytes(4, "big")
                + block.to_bytes(4, "big")
            ).digest()
            block += 1
        x = int.from_bytes(material, "big") % n
        counter += 1
        if x > 1 and nt.gcd(x, n) == 1:
            break
    return nt.powmod((-x * x) % n, n, n * n)


def djn_exponent_bits(n_bits: int) -> int:
    """The DJN exponent length for a ``n_bits``-bit modulus: ``ceil(n_bits / 2)``."""
    return -(-n_bits // 2)


def djn_table(
    hs: int,
    nsquare: int,
    exponent_bits: int,
    rows: int = DJN_COMB_ROWS,
    tables: int = DJN_COMB_TABLES,
) -> nt.CombTable:
    """The Lim-Lee comb table for ``hs**a mod nsquare``, ``a < 2**exponent_bits``.

    ``rows`` x ``tables`` trades memory for speed (12 x 4: 16,384 residues,
    12.6 MB at 3072 bits); every shape gives the same powers.
    """
    return nt.CombTable(hs, nsquare, exponent_bits, rows, tables)


def djn_rn(table: nt.CombTable, a: int) -> int:
    """``h_s**a mod n**2`` from the key's comb table; ``0 <= a < 2**table.max_bits`` unchecked."""
    return int(table.pow(a))


def random_rn(table: nt.CombTable, exponent_bits: int, rng: nt.RandomSource) -> int:
    """A fresh DJN randomiser ``h_s**a``, ``a`` uniform of ``exponent_bits`` bits.

    ``exponent_bits`` must be the table's (:func:`djn_exponent_bits` of n).
    """
    return int(table.pow(rng.getrandbits(exponent_bits)))


def random_rn_full(n: int, nsquare: int, rng: nt.RandomSource) -> int:
    """A fresh textbook randomiser ``r**n mod n**2``, ``r`` uniform in Z*_n (slow)."""
    return nt.powmod(nt.random_unit(n, rng), n, nsquare)


def rn_from_r(r: int, n: int, nsquare: int) -> int:
    """``r**n mod n**2`` for a given ``r`` (a unit of Z_n, unchecked)."""
    return nt.powmod(r, n, nsquare)


# -- encryption and homomorphic arithmetic ---------------------------------------
def raw_encrypt(n: int, nsquare: int, m_mod_n: int, rn: int) -> int:
    """``(1 + m n) * rn mod n**2`` for a residue ``0 <= m_mod_n < n``.

    Computed as ``rn + n * (m * rn mod n)`` (one half-size reduction instead
    of a full product mod n**2).  Also adds the plaintext ``m`` to a
    ciphertext passed as ``rn``.
    """
    return int((rn + n * (m_mod_n * nt.mpz(rn) % n)) % nsquare)


def raw_add(nsquare: int, a: int, b: int) -> int:
    """The ciphertext of the sum of two plaintexts: ``a * b mod n**2``."""
    return int(nt.mpz(a) * b % nsquare)


def raw_product(nsquare: int, values: Iterable[int]) -> int:
    """The ciphertext of the sum of many plaintexts: ``prod values mod n**2`` (1 if empty)."""
    acc = nt.mpz(1)
    for v in values:
        acc = acc * v % nsquare
    return int(acc)


def raw_pow(nsquare: int, c: int, k: int) -> int:
    """The ciphertext of ``k`` times the plaintext: ``c**k mod n**2`` for ``k >= 0``."""
    return int(nt.powmod_mpz(c, k, nsquare))


def raw_negate(nsquare: int, c: int) -> int:
    """The ciphertext of minus the plaintext: ``c**-1 mod n**2``.

    ``ZeroDivisionError`` if ``c`` is not a unit.
    """
    return nt.invert(c, nsquare)


# -- the private key: CRT decryption and n-th roots ------------------------------
def _h(g: int, p: int, psquare: int) -> int:
    """``L_p(g**(p-1) mod p**2)**-1 mod p`` with ``L_p(x) = (x - 1) / p``."""
    lp = (nt.powmod(g, p - 1, psquare) - 1) // p
    return nt.invert(lp, p)


class CrtPrivateKey:
    """CRT precomputations for the factors ``p < q`` of ``n``: raw decryption and n-th roots.

    Expects distinct primes of equal length with ``gcd(n, phi(n)) = 1``; does
    not check them.  Raises ``ZeroDivisionError`` when an inverse it needs
    does not exist (``gcd(n, phi(n)) != 1``, or factors that are not coprime).
    """

    __slots__ = (
        "_d_n_p",
        "_d_n_q",
        "_mp",
        "_mpm1",
        "_mps",
        "_mq",
        "_mqm1",
        "_mqs",
        "hp",
        "hq",
        "n",
        "p",
        "p_inv_q",
        "psquare",
        "q",
        "q_inv_p",
        "qsquare",
    )

    def __init__(self, p: int, q: int) -> None:
        self.p, self.q = int(p), int(q)
        self.n = self.p * self.q
        self.psquare, self.qsquare = self.p * self.p, self.q * self.q
        g = self.n + 1
        self.hp = _h(g, self.p, self.psquare)
        self.hq = _h(g, self.q, self.qsquare)
        self.q_inv_p = nt.invert(self.q, self.p)
        self.p_inv_q = nt.invert(self.p, self.q)
        # exponents that take n-th roots mod p and mod q (they exist iff gcd(n, p-1) = 1)
        self._d_n_p = nt.invert(self.n, self.p - 1)
        self._d_n_q = nt.invert(self.n, self.q - 1)
        mpz = nt.mpz
        self._mp, self._mq = mpz(self.p), mpz(self.q)
        self._mpm1, self._mqm1 = mpz(self.p - 1), mpz(self.q - 1)
        self._mps, self._mqs = mpz(self.psquare), mpz(self.qsquare)

    def raw_decrypt(self, c: int) -> int:
        """The plaintext residue in Z_n of ciphertext ``c`` (a unit of Z*_{n^2}, unchecked).

        CRT: ``m_p = L_p(c**(p-1) mod p**2) * h_p mod p`` and likewise for q,
        recombined by Garner (two half-size exponentiations, as phe does).
        """
        mc = nt.mpz(c)
        p, q = self._mp, self._mq
        mp = (nt.powmod_mpz(mc % self._mps, self._mpm1, self._mps) - 1) // p * self.hp % p
        mq = (nt.powmod_mpz(mc % self._mqs, self._mqm1, self._mqs) - 1) // q * self.hq % q
        return nt.crt_pair(mp, self.p, mq, self.q, self.q_inv_p)

    def is_unit(self, c: int) -> bool:
        """Whether ``c`` is prime to n (two cheap reductions instead of a gcd)."""
        return not (c % self._mp == 0 or c % self._mq == 0)

    def nth_root(self, x: int) -> int:
        """The ``r`` in ``[0, n)`` with ``r**n = x mod n``, for ``x`` a unit of Z_n.

        ``r = x**(n^-1 mod lambda)``, per prime and recombined by CRT.  With
        ``x = c mod n`` it is the randomness ``r`` of a ciphertext
        ``c = (1 + m n) r**n mod n**2`` whatever ``m`` is (``(1 + m n) = 1 mod n``).
        """
        rp = nt.powmod(x % self.p, self._d_n_p, self.p)
        rq = nt.powmod(x % self.q, self._d_n_q, self.q)
        return nt.crt_pair(rp, self.p, rq, self.q, self.q_inv_p)
