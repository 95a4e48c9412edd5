"""Paillier proofs on the safe keys: key well-formedness and correct decryption.

What it is for: a household registers its public key with a proof that
``gcd(n, phi(n)) = 1`` (so every ciphertext has exactly one decryption), and
settles each bill with a public proof ``(m, r)`` that ``E(bill)`` decrypts to
``m``; anyone checks both with the public key alone.

Layer: above :mod:`privmeter.crypto.paillier` (it takes and validates the
safe keys and ciphertexts) and :mod:`privmeter.crypto.hazmat.paillier` (the
n-th roots and the re-encryption are raw operations).

* :func:`prove_wellformed` / :func:`verify_wellformed`: n-th roots modulo n of
  :data:`WELLFORMED_ROUNDS` challenges hashed from the key id.  If
  ``gcd(n, phi(n)) != 1`` for a prime ``p | n``, at most a ``1/p`` fraction of
  Z*_n are n-th residues; trial division excludes ``p < 2**16``, so each
  round is answerable with probability ``<= 2**-16`` and eight give
  ``2**-128``.
* :func:`prove_decryption` (decrypts), :func:`prove_plaintext` (the holder
  already knows the plaintext and never decrypts: the household's
  settlement) and :func:`verify_decryption`: ``c = (1 + m n) r**n mod n**2``.
  Binding because ``x -> x**n`` is a bijection of Z*_n when
  ``gcd(n, phi(n)) = 1``.
"""

from __future__ import annotations

import hashlib

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.hazmat import paillier as _hz
from privmeter.crypto.paillier import (
    MIN_KEY_BITS,
    EncryptedNumber,
    PaillierPrivateKey,
    PaillierPublicKey,
)
from privmeter.errors import InvalidKey, InvalidProof, PlaintextOverflow, UnprovenKey

__all__ = [
    "WELLFORMED_ROUNDS",
    "prove_decryption",
    "prove_plaintext",
    "prove_wellformed",
    "verify_decryption",
    "verify_wellformed",
    "wellformedness_challenges",
]

WELLFORMED_ROUNDS = 8  # n-th-root challenges in the key proof: error <= 2**-128
SMALL_PRIME_BOUND = 1 << 16  # trial division bound used by the key proof

_SMALL_PRIMES: tuple[int, ...] = ()


def _small_primes() -> tuple[int, ...]:
    global _SMALL_PRIMES
    if not _SMALL_PRIMES:
        sieve = bytearray([1]) * SMALL_PRIME_BOUND
        sieve[0:2] = b"\x00\x00"
        for i in range(2, int(SMALL_PRIME_BOUND**0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
        _SMALL_PRIMES = tuple(i for i in range(SMALL_PRIME_BOUND) if sieve[i])
    return _SMALL_PRIMES


# -- key well-formedness -----------------------------------------------------------
def wellformedness_challenges(pk: PaillierPublicKey) -> list[int]:
    """Deterministic challenges rho_i in Z*_n for the key proof (Fiat-Shamir over the key id)."""
    out: list[int] = []
    counter = 0
    nlen = (pk.n.bit_length() + 7) // 8
    while len(out) < WELLFORMED_ROUNDS:
        material = b""
        block = 0
        while len(material) < nlen + 16:
            material += hashlib.sha256(
                b"privmeter-paillier-keyproof-v1"
                + pk.key_id
                + counter.to_bytes(4, "big")
                + block.to_bytes(4, "big")
            ).digest()
            block += 1
        rho = int.from_bytes(material, "big") % pk.n
        counter += 1
        if rho > 1 and nt.gcd(rho, pk.n) == 1:
            out.append(rho)
    return out


def prove_wellformed(sk: PaillierPrivateKey) -> list[int]:
    """n-th roots of the key's public challenges (see :func:`verify_wellformed`)."""
    n = sk.public_key.n
    crt = sk._crt
    return [crt.nth_root(rho) % n for rho in wellformedness_challenges(sk.public_key)]


def verify_wellformed(
    pk: PaillierPublicKey, proof: list[int], *, min_bits: int = MIN_KEY_BITS
) -> None:
    """Check the whole key: :meth:`~privmeter.crypto.paillier.PaillierPublicKey.check`
    (so h_s is the derived base) and a proof that gcd(n, phi(n)) = 1 (so
    decryption is unique).

    The owner gives n-th roots sigma_i of hash-derived rho_i mod n.  If
    gcd(n, phi(n)) != 1 for a prime p | n, at most a 1/p fraction of Z*_n
    are n-th residues; trial division excludes p < 2**16, so each round
    fails with probability <= 2**-16 and eight rounds give 2**-128.  This
    is what lets a verifier trust that a decryption proof is binding.
    Raises :class:`~privmeter.errors.BaseNotDerived` (h_s),
    :class:`~privmeter.errors.UnprovenKey` (the proof) or
    :class:`~privmeter.errors.InvalidKey` (size, small factor).
    """
    pk.check(min_bits=min_bits)
    for p in _small_primes():
        if pk.n % p == 0:
            raise InvalidKey(f"Paillier modulus has a small factor {p}")
    rhos = wellformedness_challenges(pk)
    if not isinstance(proof, list) or len(proof) != len(rhos):
        raise UnprovenKey("key proof has the wrong number of roots")
    for sigma, rho in zip(proof, rhos, strict=True):
        if not isinstance(sigma, int) or isinstance(sigma, bool) or not 0 < sigma < pk.n:
            raise UnprovenKey("key proof root out of range")
        if nt.powmod(sigma, pk.n, pk.n) != rho:
            raise UnprovenKey("key proof root does not verify")


# -- correct decryption ------------------------------------------------------------
def prove_decryption(sk: PaillierPrivateKey, ct: EncryptedNumber) -> tuple[int, int]:
    """Decrypt and return ``(m, r)``: the public proof of correct decryption.

    ``sk.decrypt`` validates ``ct`` (KeyMismatch, InvalidCiphertext,
    PlaintextOverflow); ``r`` is the n-th root of ``c mod n``.
    """
    m = sk.decrypt(ct)
    return m, sk._crt.nth_root(ct.value)


def prove_plaintext(sk: PaillierPrivateKey, ct: EncryptedNumber, m: int) -> int:
    """The ``r`` with ``c = (1 + m n) r**n mod n**2`` for a plaintext ``m`` the caller
    already knows, without decrypting; checked before it is returned.

    :class:`~privmeter.errors.InvalidProof` if ``ct`` does not encrypt ``m``
    (or ``m`` is not encodable); KeyMismatch / InvalidCiphertext for a bad
    ``ct``.  The household settles its bill this way: it rebuilt the bill
    from its own readings and only shows that ``E(bill)`` opens to it.
    """
    pk = sk.public_key
    pk.validate(ct)
    try:
        pk.encode(m)
    except (PlaintextOverflow, TypeError):
        raise InvalidProof("claimed plaintext outside the encodable range") from None
    r = sk._crt.nth_root(ct.value)
    verify_decryption(pk, ct, m, r)
    return r


def verify_decryption(pk: PaillierPublicKey, ct: EncryptedNumber, m: int, r: int) -> None:
    """Check ``c = (1 + m n) r**n mod n**2`` with the public key only.

    Raises :class:`~privmeter.errors.InvalidProof` if it does not hold
    (KeyMismatch / InvalidCiphertext for a bad ``ct``).
    """
    pk.validate(ct)
    if not isinstance(r, int) or not 0 < r < pk.n or nt.gcd(r, pk.n) != 1:
        raise InvalidProof("proof randomness r is not a unit of Z_n")
    try:
        mm = pk.encode(m)
    except (PlaintextOverflow, TypeError):
        raise InvalidProof("claimed plaintext outside the encodable range") from None
    rn = _hz.rn_from_r(r, pk.n, pk.nsquare)
    if _hz.raw_encrypt(pk.n, pk.nsquare, mm, rn) != ct.value:
        raise InvalidProof("c != (1 + m n) r^n mod n^2: the claimed decryption is wrong")
