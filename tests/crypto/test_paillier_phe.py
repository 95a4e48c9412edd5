"""Interoperability with python-paillier (phe), an independent implementation, both ways."""

from __future__ import annotations

import random

import pytest
from phe import paillier as phe

from privmeter.crypto.paillier import (
    EncryptedNumber,
    PaillierPrivateKey,
    PaillierPublicKey,
)
from privmeter.crypto.paillier_proofs import prove_decryption

MESSAGES = [0, 1, -1, 10**6, -(10**6), 2**200, -(2**200)]


def _phe_from_ours(sk: PaillierPrivateKey) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    ppk = phe.PaillierPublicKey(sk.public_key.n)
    return ppk, phe.PaillierPrivateKey(ppk, sk.p, sk.q)


def test_ours_to_phe(paillier_2048, rng: random.Random) -> None:
    pk, sk = paillier_2048
    ppk, psk = _phe_from_ours(sk)
    for m in MESSAGES:
        c = pk.encrypt(m, rng=rng)  # DJN randomness
        got = psk.decrypt(phe.EncryptedNumber(ppk, c.value))
        assert got == m
    # homomorphic results computed by us decrypt correctly in phe
    c = pk.encrypt(1234, rng=rng) * -3 + pk.encrypt(-55, rng=rng)
    assert psk.decrypt(phe.EncryptedNumber(ppk, c.value)) == 1234 * -3 - 55


def test_phe_to_ours(paillier_2048) -> None:
    pk, sk = paillier_2048
    ppk, _ = _phe_from_ours(sk)
    for m in MESSAGES:
        pc = ppk.encrypt(m)
        raw = pc.ciphertext(be_secure=False)
        assert sk.decrypt(pk.ciphertext(raw)) == m
    # phe's homomorphic operations, decrypted by us
    pc = ppk.encrypt(77) * 5 + ppk.encrypt(-3)
    assert sk.decrypt(pk.ciphertext(pc.ciphertext(be_secure=False))) == 77 * 5 - 3


def test_keys_from_phe_keygen() -> None:
    # a phe-generated key becomes ours (p, q), round trip both directions
    ppk, psk = phe.generate_paillier_keypair(n_length=2048)
    sk = PaillierPrivateKey.from_primes(psk.p, psk.q)
    pk = sk.public_key
    assert pk.n == ppk.n
    # same n always gives the same derived DJN base and key id
    assert PaillierPublicKey.from_modulus(ppk.n).key_id == pk.key_id
    rng = random.Random(7)
    for m in (0, 42, -42, 2**100):
        assert psk.decrypt(phe.EncryptedNumber(ppk, pk.encrypt(m, rng=rng).value)) == m
        assert sk.decrypt(pk.ciphertext(ppk.encrypt(m).ciphertext(be_secure=False))) == m
    # our decryption proof of a phe ciphertext verifies, with phe's own r
    r = 0xC0FFEE
    raw = ppk.raw_encrypt(31337, r_value=r)
    assert prove_decryption(sk, EncryptedNumber(pk, raw)) == (31337, r)


@pytest.mark.parametrize("m", [3, -3])
def test_mixed_sum_phe_and_ours(paillier_2048, rng: random.Random, m: int) -> None:
    pk, sk = paillier_2048
    ppk, psk = _phe_from_ours(sk)
    ours = pk.encrypt(m, rng=rng)
    theirs = pk.ciphertext(ppk.encrypt(100).ciphertext(be_secure=False))
    total = ours + theirs
    assert sk.decrypt(total) == m + 100
    assert psk.decrypt(phe.EncryptedNumber(ppk, total.value)) == m + 100
