"""Attacks and malformed input: each fails with a specific error, state unchanged."""

from __future__ import annotations

import json
import random

import pytest

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.paillier import (
    CIPHERTEXT_FORMAT,
    DEFAULT_KEY_BITS,
    EncryptedNumber,
    PaillierPrivateKey,
    PaillierPublicKey,
    RandomnessPool,
    derived_base,
    generate_keypair,
)
from privmeter.crypto.paillier_proofs import (
    prove_decryption,
    prove_wellformed,
    verify_decryption,
    verify_wellformed,
    wellformedness_challenges,
)
from privmeter.errors import (
    BaseNotDerived,
    InvalidCiphertext,
    InvalidKey,
    InvalidProof,
    KeyMismatch,
    MalformedMessage,
    UnsupportedVersion,
)


def test_key_sizes(rng: random.Random) -> None:
    assert DEFAULT_KEY_BITS == 3072
    with pytest.raises(InvalidKey):
        generate_keypair(1024, rng=rng)
    with pytest.raises(InvalidKey):
        generate_keypair(2047, rng=rng, insecure_for_tests=True)
    pk, _sk = generate_keypair(256, rng=rng, insecure_for_tests=True)
    assert pk.bits == 256
    # small keys are also refused when loaded, unless the caller lowers min_bits
    with pytest.raises(InvalidKey):
        PaillierPublicKey.from_json(pk.to_json())
    assert PaillierPublicKey.from_json(pk.to_json(), min_bits=256) == pk


def test_generate_2048(rng: random.Random) -> None:
    pk, sk = generate_keypair(2048, rng=rng)
    assert pk.bits == 2048 and sk.p.bit_length() == sk.q.bit_length() == 1024
    sk.check()
    verify_wellformed(pk, prove_wellformed(sk))
    assert sk.decrypt(pk.encrypt(-99, rng=rng)) == -99


def test_malformed_ciphertexts(paillier_2048, rng: random.Random) -> None:
    pk, sk = paillier_2048
    for bad in (0, -5, pk.nsquare, pk.nsquare + 1, pk.n, pk.n * 7 % pk.nsquare, sk.p, sk.q * 3):
        with pytest.raises(InvalidCiphertext):
            pk.ciphertext(bad)
        with pytest.raises(InvalidCiphertext):
            sk.decrypt(EncryptedNumber(pk, bad))
        with pytest.raises(InvalidCiphertext):
            pk.validate(EncryptedNumber(pk, bad))
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext(True)  # type: ignore[arg-type]
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext_from_bytes(b"\x01" * (pk.nbytes - 1))
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext_from_bytes(b"\xff" * pk.nbytes)  # >= n^2
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext_from_bytes(bytes(pk.nbytes))  # 0
    c = pk.encrypt(5, rng=rng)
    assert pk.ciphertext_from_bytes(c.to_bytes()) == c


def test_wrong_key_id(paillier_2048, paillier_small, rng: random.Random) -> None:
    pk, sk = paillier_2048
    other_pk, _ = paillier_small
    foreign = other_pk.encrypt(5, rng=rng)
    with pytest.raises(KeyMismatch):
        sk.decrypt(foreign)
    with pytest.raises(KeyMismatch):
        pk.validate(foreign)
    with pytest.raises(KeyMismatch):
        pk.encrypt(1, rng=rng) + foreign
    with pytest.raises(KeyMismatch):
        pk.sum([pk.encrypt(1, rng=rng), foreign])
    pool = RandomnessPool(other_pk)
    pool.fill(1, rng=rng, full=False)
    with pytest.raises(KeyMismatch):
        pk.encrypt(1, pool=pool)
    assert len(pool) == 1  # refused before taking
    # same n but another DJN base is another key (and no valid one: h_s must be the derived base)
    twin = PaillierPublicKey(pk.n, pk.hs * pk.hs % pk.nsquare)
    assert twin.key_id != pk.key_id
    with pytest.raises(KeyMismatch):
        sk.decrypt(twin.encrypt(3, rng=rng))
    with pytest.raises(BaseNotDerived):
        twin.check()


def test_base_is_derived_from_n(paillier_2048, paillier_small, rng: random.Random) -> None:
    """Attack 5 (issue 12): an h_s with a hidden (1+n)**k factor is not an n-th residue,
    so the meter's encryptions would decrypt to garbage the owner could still "prove".
    Only the base derived from n is accepted, by check(), from_dict() and the key proof."""
    pk, sk = paillier_2048
    assert PaillierPublicKey.from_modulus(pk.n) == pk  # the vector key's base is the derived one
    assert pk.hs == derived_base(pk.n)
    k = rng.getrandbits(1000)
    bad = PaillierPublicKey(pk.n, pow(1 + pk.n, k, pk.nsquare) * pk.hs % pk.nsquare)
    with pytest.raises(BaseNotDerived):
        bad.check()
    with pytest.raises(BaseNotDerived):
        PaillierPublicKey.from_dict(bad.to_dict())
    bad_sk = PaillierPrivateKey(bad, sk.p, sk.q)
    with pytest.raises(BaseNotDerived):  # a valid proof about n does not vouch for h_s
        verify_wellformed(bad, prove_wellformed(bad_sk))
    # what the check prevents: the owner's key turns E(x) into E(x + k*a), and proves it
    c = bad.encrypt(5, rng=rng)
    m, r = prove_decryption(bad_sk, c)
    assert m != 5
    verify_decryption(bad, c, m, r)
    # every key made here passes
    small_pk, _ = paillier_small
    small_pk.check(min_bits=512)
    _, fresh = generate_keypair(512, rng=rng, insecure_for_tests=True)
    assert fresh.public_key.hs == derived_base(fresh.public_key.n)


def test_ciphertext_json(paillier_2048, rng: random.Random) -> None:
    pk, sk = paillier_2048
    c = pk.encrypt(-12, rng=rng)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["format"] == CIPHERTEXT_FORMAT
    assert sk.decrypt(pk.ciphertext_from_dict(d)) == -12
    with pytest.raises(UnsupportedVersion):
        pk.ciphertext_from_dict({**d, "format": "privmeter.paillier.ciphertext/9"})
    with pytest.raises(KeyMismatch):
        pk.ciphertext_from_dict({**d, "key_id": "00" * 16})
    with pytest.raises(MalformedMessage):
        pk.ciphertext_from_dict({**d, "c": "zz"})
    with pytest.raises(InvalidCiphertext):
        pk.ciphertext_from_dict({**d, "c": "0"})


def test_key_json_roundtrip_and_errors(paillier_2048) -> None:
    pk, sk = paillier_2048
    assert PaillierPublicKey.from_json(pk.to_json()) == pk
    sk2 = PaillierPrivateKey.from_json(sk.to_json())
    assert sk2.public_key.key_id == pk.key_id
    with pytest.raises(MalformedMessage):
        PaillierPublicKey.from_json("{not json")
    with pytest.raises(UnsupportedVersion):
        PaillierPublicKey.from_dict({**pk.to_dict(), "format": "privmeter.paillier.public-key/2"})
    with pytest.raises(InvalidKey):
        PaillierPublicKey.from_dict({**pk.to_dict(), "n": format(pk.n + 1, "x")})  # even
    with pytest.raises(InvalidKey):
        PaillierPublicKey.from_dict({**pk.to_dict(), "hs": format(pk.n, "x")})  # not a unit
    d = sk.to_dict()
    with pytest.raises(InvalidKey):
        PaillierPrivateKey.from_dict({**d, "q": format(sk.q + 2, "x")})
    with pytest.raises(InvalidKey):
        PaillierPrivateKey(pk, 1, pk.n)  # p*q = n but trivial: fails the nth-root setup
    with pytest.raises(InvalidKey):
        PaillierPrivateKey.from_primes(sk.p, sk.p + 2)


def test_forged_decryption_proofs(paillier_2048, rng: random.Random) -> None:
    pk, sk = paillier_2048
    c = pk.encrypt(1000, rng=rng)
    m, r = prove_decryption(sk, c)
    verify_decryption(pk, c, m, r)
    for fm, fr in ((m + 1, r), (m, r + 1), (-m, r), (m, pk.n - r), (m, 0), (m, sk.p), (2**4000, r)):
        with pytest.raises(InvalidProof):
            verify_decryption(pk, c, fm, fr)
    # a "proof" for one ciphertext does not transfer to another
    c2 = pk.encrypt(1000, rng=rng)
    with pytest.raises(InvalidProof):
        verify_decryption(pk, c2, m, r)
    # a malformed ciphertext is rejected before any proof check
    with pytest.raises(InvalidCiphertext):
        verify_decryption(pk, EncryptedNumber(pk, 0), m, r)


def _prime(bits: int, rng: random.Random, cond=lambda p: True) -> int:  # type: ignore[no-untyped-def]
    while True:
        p = nt.random_prime(bits, rng)
        if cond(p):
            return p


def _cheater_proof(pk: PaillierPublicKey, order: int) -> list[int]:
    """Best effort n-th roots without a valid key: rho**(n^-1 mod order)."""
    d = nt.invert(pk.n, order)
    return [nt.powmod(rho, d, pk.n) for rho in wellformedness_challenges(pk)]


def test_wellformedness_proof(paillier_2048, rng: random.Random) -> None:
    pk, sk = paillier_2048
    proof = prove_wellformed(sk)
    verify_wellformed(pk, proof)
    with pytest.raises(InvalidKey):
        verify_wellformed(pk, [*proof[:-1], (proof[-1] + 1) % pk.n])
    with pytest.raises(InvalidKey):
        verify_wellformed(pk, proof[:-1])


def test_wellformedness_rejects_p_squared_q(rng: random.Random) -> None:
    # n = p^2 q: gcd(n, phi(n)) = p; primes above the trial-division bound
    p = _prime(24, rng)
    q = _prime(24, rng, lambda q: nt.gcd(p * p * q, (p - 1) * (q - 1)) == 1)
    n = p * p * q
    pk = PaillierPublicKey.from_modulus(n)
    with pytest.raises(InvalidKey):
        verify_wellformed(pk, _cheater_proof(pk, (p - 1) * (q - 1)), min_bits=64)


def test_wellformedness_rejects_p_dividing_q_minus_1(rng: random.Random) -> None:
    p = _prime(24, rng)
    k = 1 << 20
    while not nt.is_prime(2 * k * p + 1):
        k += 1
    q = 2 * k * p + 1  # p | q - 1, so gcd(n, phi(n)) = p
    n = p * q
    pk = PaillierPublicKey.from_modulus(n)
    with pytest.raises(InvalidKey):
        PaillierPrivateKey(pk, p, q)  # the owner cannot even set the key up
    order = (p - 1) * (q - 1) // p
    with pytest.raises(InvalidKey):
        verify_wellformed(pk, _cheater_proof(pk, order), min_bits=32)


def test_wellformedness_rejects_small_factor(rng: random.Random) -> None:
    q = _prime(64, rng)
    pk = PaillierPublicKey.from_modulus(65521 * q)
    with pytest.raises(InvalidKey, match="small factor"):
        verify_wellformed(pk, [1] * 8, min_bits=32)
