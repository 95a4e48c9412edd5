"""DGK encryption (Damgård, Geisler, Krøigaard 2007/2009) for secure comparison.

What it is for: the utility owns a DGK key pair; in a demand-management
event it encrypts the digits of its private threshold ``T`` under its own
public key, each meter combines them with its reading homomorphically, and
the utility learns only whether a blinded value is zero (see
:mod:`privmeter.protocol.comparison`).

The scheme
----------
* ``n = p*q`` with ``p = 2*u*v_p*r_p + 1`` and ``q = 2*u*v_q*r_q + 1``;
  ``u`` is a small prime (the plaintext space is ``Z_u``), ``v_p`` and
  ``v_q`` are ``t``-bit primes.
* ``g`` has order ``u*v_p*v_q`` and ``h`` order ``v_p*v_q`` in ``Z*_n``.
* ``E(m) = g**m * h**r mod n`` with ``r`` of :data:`RANDOMIZER_BITS` bits.
* Zero test by the key holder: ``E(m)**v_p mod p == 1`` iff ``m = 0 mod u``
  (``h**v_p = 1 mod p`` kills the randomness, ``g**v_p mod p`` has order
  ``u``).  This is one exponentiation with a 256-bit exponent modulo the
  1536-bit ``p`` -- the fast path; full decryption costs the same plus a
  table lookup over ``Z_u``.

Security assumptions
--------------------
* Factoring ``n`` and the DGK subgroup assumption (DGK 2009, with the
  correction that ``r`` be longer than ``2t`` bits).
* ``DEFAULT_KEY_BITS = 3072`` matches the Paillier default (~128-bit
  security); ``SUBGROUP_BITS = 256``: ``t`` is twice the security level so
  that Pollard-rho/lambda in the hidden order-``v`` subgroups costs 2**128.
* ``RANDOMIZER_BITS = 640 = 2.5 t``: ``h**r`` with ``r`` uniform on 640 bits
  is within statistical distance ``2**-128`` of uniform in ``<h>`` (order
  ``v_p*v_q`` < 2**512).  These are "short" exponents compared with ``|n|``
  (what makes encryption and the meter's re-randomisation cheap) but not
  short in the computational sense: no extra assumption beyond DGK's.
* Fixed-base tables (``_numtheory.FixedBaseTable``) for ``h``; ``g**m`` for
  ``m`` in ``Z_u`` is a lookup.

Guarantees
----------
* :meth:`DGKPublicKey.validate_value` rejects anything that is not a unit
  of ``Z_n`` in ``(0, n)``; :meth:`DGKPrivateKey.is_zero` validates first
  (cheaply: the key holder checks ``c mod p`` and ``c mod q``).
* Key ids (16 bytes of SHA-256 over the canonical public key) let messages
  name the key they were made under; a ciphertext set under another key is
  refused with :class:`~privmeter.errors.KeyMismatch` by the protocol layer.
* Keys serialise to versioned JSON (``privmeter.dgk.public-key/1``,
  ``privmeter.dgk.private-key/1``); no pickle.

Two safety levels: ``encrypt``/``is_zero``/``decrypt`` validate; the
``raw_*`` functions take residues and do not (hazmat, for inner loops whose
inputs were validated once).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from privmeter.crypto import _numtheory as nt
from privmeter.crypto._serial import JsonKey, hex_int, key_mapping, unhex_int
from privmeter.errors import (
    InvalidCiphertext,
    InvalidKey,
    MalformedMessage,
)

__all__ = [
    "DEFAULT_KEY_BITS",
    "DEFAULT_MAX_BITS",
    "MIN_KEY_BITS",
    "RANDOMIZER_BITS",
    "SUBGROUP_BITS",
    "DGKPrivateKey",
    "DGKPublicKey",
    "generate_keypair",
    "plaintext_prime",
]

DEFAULT_KEY_BITS = 3072  # same ~128-bit security as the Paillier default
MIN_KEY_BITS = 2048  # ~112-bit security; smaller only with insecure_for_tests
_HEX_MAX = 4096  # hex digits of the largest key value accepted from outside (16,384 bits)
SUBGROUP_BITS = 256  # t = 2 x 128: rho in the order-v subgroups costs 2**128
RANDOMIZER_BITS = 640  # 2.5 t: h**r within 2**-128 of uniform in <h>
DEFAULT_MAX_BITS = 64  # comparisons of up to 64-bit values; fixes u = 67
H_WINDOW = 7  # fixed-base window for h: 640-bit exponent -> ~92 multiplications

PUBLIC_KEY_FORMAT = "privmeter.dgk.public-key/1"
PRIVATE_KEY_FORMAT = "privmeter.dgk.private-key/1"


def plaintext_prime(max_bits: int) -> int:
    """The plaintext modulus ``u``: the smallest prime greater than ``max_bits + 2``.

    The comparison values are at most ``max_bits + 1`` (see
    :mod:`privmeter.protocol.comparison`), so they never wrap modulo ``u``.
    """
    if max_bits < 2:
        raise ValueError(f"max_bits must be at least 2, got {max_bits!r}")
    u = max_bits + 3
    while not nt.is_prime(u):
        u += 1
    return u




def _int_field(d: dict[str, Any], name: str, lo: int, hi: int) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise MalformedMessage(f"{name} must be an int in [{lo}, {hi}], got {v!r:.40}")
    return v


class DGKPublicKey(JsonKey):
    """A DGK public key ``(n, g, h, u)`` plus the randomiser length ``t``-derived bits."""

    JSON_WHAT = "DGK public key"

    __slots__ = ("_g_pows", "_h_table", "g", "h", "key_id", "n", "nbytes", "rand_bits", "u")

    def __init__(self, n: int, g: int, h: int, u: int, rand_bits: int = RANDOMIZER_BITS) -> None:
        self.n = int(n)
        self.g = int(g)
        self.h = int(h)
        self.u = int(u)
        self.rand_bits = int(rand_bits)
        self.nbytes = (self.n.bit_length() + 7) // 8
        nb = self.nbytes
        self.key_id = hashlib.sha256(
            b"privmeter-dgk-v1"
            + self.n.to_bytes(nb, "big")
            + self.g.to_bytes(nb, "big")
            + self.h.to_bytes(nb, "big")
            + self.u.to_bytes(8, "big")
            + self.rand_bits.to_bytes(4, "big")
        ).digest()[:16]
        self._h_table: nt.FixedBaseTable | None = None
        self._g_pows: list[nt.mpz] | None = None

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def max_bits(self) -> int:
        """Largest comparison bit length this key supports (``u > max_bits + 2``)."""
        return self.u - 3

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DGKPublicKey) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"DGKPublicKey(bits={self.bits}, u={self.u}, key_id={self.key_id.hex()})"

    # -- precomputation -------------------------------------------------------
    def h_table(self) -> nt.FixedBaseTable:
        """Fixed-base table for ``h`` (built once, on first use; ~4 MB at 3072 bits)."""
        if self._h_table is None:
            self._h_table = nt.FixedBaseTable(self.h, self.n, self.rand_bits, H_WINDOW)
        return self._h_table

    def g_pows(self) -> list[nt.mpz]:
        """``[g**0, ..., g**(u-1)] mod n``: encryption of a plaintext is a lookup."""
        if self._g_pows is None:
            m = nt.mpz(self.n)
            acc = nt.mpz(1)
            out = []
            for _ in range(self.u):
                out.append(acc)
                acc = acc * self.g % m
            self._g_pows = out
        return self._g_pows

    def precompute(self) -> DGKPublicKey:
        """Build both tables now (e.g. before a timed event); returns ``self``."""
        self.h_table()
        self.g_pows()
        return self

    # -- encryption -------------------------------------------------------------
    def random_hr(self, rng: nt.RandomSource = nt.SYSTEM_RNG) -> nt.mpz:
        """A fresh randomiser ``h**r mod n``, ``r`` uniform on ``rand_bits`` bits."""
        return self.h_table().pow(rng.getrandbits(self.rand_bits))

    def raw_encrypt(self, m: int, hr: int) -> nt.mpz:
        """Hazmat: ``g**m * hr mod n`` for ``m`` in ``[0, u)``; no checks. Use :meth:`encrypt`."""
        return self.g_pows()[m] * hr % self.n

    def encrypt(self, m: int, *, rng: nt.RandomSource = nt.SYSTEM_RNG) -> int:
        """Encrypt ``m`` (an int, reduced modulo ``u``)."""
        if not isinstance(m, int) or isinstance(m, bool):
            raise TypeError(f"plaintext must be int, got {type(m).__name__}")
        return int(self.raw_encrypt(m % self.u, self.random_hr(rng)))

    def rerandomize(self, c: int, *, rng: nt.RandomSource = nt.SYSTEM_RNG) -> int:
        return int(nt.mpz(c) * self.random_hr(rng) % self.n)

    # -- homomorphic operations ---------------------------------------------------
    def add(self, a: int, b: int) -> int:
        """``E(x) , E(y) -> E(x + y)``."""
        return int(nt.mpz(a) * b % self.n)

    def neg(self, a: int) -> int:
        """``E(x) -> E(-x)``."""
        return nt.invert(a, self.n)

    def mul_const(self, a: int, k: int) -> int:
        """``E(x) -> E(k x)`` for a public integer ``k`` (reduced modulo ``u``)."""
        return nt.powmod(a, k % self.u, self.n)

    # -- validation ----------------------------------------------------------------
    def validate_value(self, c: Any) -> int:
        """Check ``c`` is an int unit of ``Z_n`` in ``(0, n)``; return it."""
        if not isinstance(c, int) or isinstance(c, bool):
            raise InvalidCiphertext(f"DGK ciphertext must be int, got {type(c).__name__}")
        if not 0 < c < self.n:
            raise InvalidCiphertext("DGK ciphertext outside (0, n)")
        if nt.gcd(c, self.n) != 1:
            raise InvalidCiphertext("DGK ciphertext is not a unit of Z*_n")
        return c

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PUBLIC_KEY_FORMAT,
            "n": hex_int(self.n),
            "g": hex_int(self.g),
            "h": hex_int(self.h),
            "u": self.u,
            "rand_bits": self.rand_bits,
        }

    @classmethod
    def from_dict(cls, d: Any, *, min_bits: int = MIN_KEY_BITS) -> DGKPublicKey:
        d = key_mapping(d, PUBLIC_KEY_FORMAT, cls.JSON_WHAT)
        pk = cls(
            unhex_int(d.get("n"), "n", max_chars=_HEX_MAX),
            unhex_int(d.get("g"), "g", max_chars=_HEX_MAX),
            unhex_int(d.get("h"), "h", max_chars=_HEX_MAX),
            _int_field(d, "u", 5, 1 << 16),
            _int_field(d, "rand_bits", 16, 8192),
        )
        pk.check(min_bits=min_bits)
        return pk

    def check(self, *, min_bits: int = MIN_KEY_BITS) -> None:
        """Structural checks anyone can do: size, u prime, g and h units other than 1."""
        n = self.n
        if n.bit_length() < min_bits:
            raise InvalidKey(f"DGK modulus of {n.bit_length()} bits; at least {min_bits} required")
        if n % 2 == 0 or nt.is_prime(n) or math.isqrt(n) ** 2 == n:
            raise InvalidKey("DGK modulus must be an odd composite, not a square")
        if not nt.is_prime(self.u) or self.u < 5:
            raise InvalidKey(f"DGK plaintext modulus u={self.u} must be a prime >= 5")
        for name, v in (("g", self.g), ("h", self.h)):
            if not 1 < v < n or nt.gcd(v, n) != 1:
                raise InvalidKey(f"DGK {name} must be a unit of Z*_n other than 1")
        if nt.powmod(self.h, self.u, n) == 1:
            raise InvalidKey("DGK h has order dividing u")


class DGKPrivateKey(JsonKey):
    """The factorisation of ``n`` and the subgroup orders ``v_p``, ``v_q``."""

    JSON_WHAT = "DGK private key"

    __slots__ = ("_dec_table", "_gvp", "p", "public_key", "q", "vp", "vq")

    def __init__(self, public_key: DGKPublicKey, p: int, q: int, vp: int, vq: int) -> None:
        if p * q != public_key.n or p == q:
            raise InvalidKey("p * q does not equal the DGK modulus")
        u = public_key.u
        for prime, v in ((p, vp), (q, vq)):
            if (prime - 1) % (u * v):
                raise InvalidKey("u * v does not divide p - 1")
        if nt.powmod(public_key.h, vp, p) != 1 or nt.powmod(public_key.h, vq, q) != 1:
            raise InvalidKey("h does not have order v_p * v_q")
        self.public_key = public_key
        self.p, self.q, self.vp, self.vq = int(p), int(q), int(vp), int(vq)
        self._gvp = nt.powmod(public_key.g, self.vp, self.p)
        if self._gvp == 1 or nt.powmod(self._gvp, u, self.p) != 1:
            raise InvalidKey("g**v_p mod p does not have order u")
        self._dec_table: dict[int, int] | None = None

    def __repr__(self) -> str:
        return f"DGKPrivateKey(bits={self.public_key.bits}, key_id={self.public_key.key_id.hex()})"

    def validate_value(self, c: Any) -> int:
        """Cheap key-holder check: ``0 < c < n`` and ``c`` divisible by neither p nor q."""
        if not isinstance(c, int) or isinstance(c, bool):
            raise InvalidCiphertext(f"DGK ciphertext must be int, got {type(c).__name__}")
        if not 0 < c < self.public_key.n or c % self.p == 0 or c % self.q == 0:
            raise InvalidCiphertext("DGK ciphertext is not a unit of Z*_n in (0, n)")
        return c

    def raw_is_zero(self, c: int) -> bool:
        """Hazmat: ``c**v_p mod p == 1`` with no validation; use :meth:`is_zero`."""
        p = self.p
        return bool(nt.powmod_mpz(c % p, self.vp, p) == 1)

    def is_zero(self, c: int) -> bool:
        """Validate ``c`` and return whether it encrypts ``0 mod u``."""
        return self.raw_is_zero(self.validate_value(c))

    def decrypt(self, c: int) -> int:
        """Full decryption to ``Z_u`` (the same exponentiation plus a lookup)."""
        self.validate_value(c)
        if self._dec_table is None:
            table = {}
            acc = 1
            for m in range(self.public_key.u):
                table[acc] = m
                acc = acc * self._gvp % self.p
            self._dec_table = table
        x = int(nt.powmod_mpz(c % self.p, self.vp, self.p))
        found = self._dec_table.get(x)
        if found is None:
            raise InvalidCiphertext("DGK ciphertext is outside the subgroup <g, h>")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PRIVATE_KEY_FORMAT,
            "public_key": self.public_key.to_dict(),
            "p": hex_int(self.p),
            "q": hex_int(self.q),
            "vp": hex_int(self.vp),
            "vq": hex_int(self.vq),
        }

    @classmethod
    def from_dict(cls, d: Any, *, min_bits: int = MIN_KEY_BITS) -> DGKPrivateKey:
        d = key_mapping(d, PRIVATE_KEY_FORMAT, cls.JSON_WHAT)
        pk = DGKPublicKey.from_dict(d.get("public_key"), min_bits=min_bits)
        return cls(
            pk, unhex_int(d.get("p"), "p", max_chars=_HEX_MAX), unhex_int(d.get("q"), "q", max_chars=_HEX_MAX),
            unhex_int(d.get("vp"), "vp", max_chars=_HEX_MAX), unhex_int(d.get("vq"), "vq", max_chars=_HEX_MAX),
        )


def _structured_prime(bits: int, factor: int, rng: nt.RandomSource) -> int:
    """A prime ``p = 2*factor*r + 1`` of exactly ``bits`` bits."""
    rbits = bits - factor.bit_length() - 1
    if rbits < 16:
        raise InvalidKey("subgroup order too large for the modulus size")
    lo, hi = 1 << (bits - 1), 1 << bits
    while True:
        r = rng.getrandbits(rbits) | (1 << (rbits - 1))
        p = 2 * factor * r + 1
        if lo <= p < hi and nt.is_prime(p):
            return p


def _element_of_order(p: int, order_primes: tuple[int, ...], rng: nt.RandomSource) -> int:
    """An element of ``Z*_p`` whose order is exactly the product of ``order_primes``."""
    order = math.prod(order_primes)
    cof = (p - 1) // order
    while True:
        x = nt.powmod(nt.random_below(p - 3, rng) + 2, cof, p)
        if x != 1 and all(nt.powmod(x, order // f, p) != 1 for f in order_primes):
            return x


def generate_keypair(
    bits: int = DEFAULT_KEY_BITS,
    *,
    max_bits: int = DEFAULT_MAX_BITS,
    subgroup_bits: int = SUBGROUP_BITS,
    rand_bits: int | None = None,
    rng: nt.RandomSource = nt.SYSTEM_RNG,
    insecure_for_tests: bool = False,
) -> tuple[DGKPublicKey, DGKPrivateKey]:
    """Generate a DGK key pair for comparisons of up to ``max_bits`` bits.

    Sizes below :data:`MIN_KEY_BITS` / :data:`SUBGROUP_BITS` are refused
    unless ``insecure_for_tests=True``.  ``rand_bits`` defaults to
    ``2.5 * subgroup_bits``.
    """
    if bits % 2:
        raise InvalidKey(f"key size must be even, got {bits!r}")
    if not insecure_for_tests and (bits < MIN_KEY_BITS or subgroup_bits < SUBGROUP_BITS):
        raise InvalidKey(
            f"DGK with n={bits} bits, t={subgroup_bits} is insecure; "
            f"at least {MIN_KEY_BITS} and {SUBGROUP_BITS} required"
        )
    if rand_bits is None:
        rand_bits = subgroup_bits * 5 // 2
    u = plaintext_prime(max_bits)
    half = bits // 2
    while True:
        vp = nt.random_prime(subgroup_bits, rng)
        vq = nt.random_prime(subgroup_bits, rng)
        if vp == vq:
            continue
        p = _structured_prime(half, u * vp, rng)
        q = _structured_prime(half, u * vq, rng)
        if p != q and (p * q).bit_length() == bits:
            break
    n = p * q
    qinv = nt.invert(q, p)
    gp = _element_of_order(p, (u, vp), rng)
    gq = _element_of_order(q, (u, vq), rng)
    hp = _element_of_order(p, (vp,), rng)
    hq = _element_of_order(q, (vq,), rng)
    g = nt.crt_pair(gp, p, gq, q, qinv)
    h = nt.crt_pair(hp, p, hq, q, qinv)
    pk = DGKPublicKey(n, g, h, u, rand_bits)
    pk.check(min_bits=bits if insecure_for_tests else MIN_KEY_BITS)
    return pk, DGKPrivateKey(pk, p, q, vp, vq)
