"""The raw Paillier layer (privmeter.crypto.hazmat.paillier) and its place under the safe API."""

from __future__ import annotations

import random

import pytest
from phe import paillier as phe

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.hazmat import paillier as hazmat
from privmeter.crypto.paillier import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey
from privmeter.crypto.paillier_proofs import prove_decryption
from privmeter.errors import InvalidCiphertext, PlaintextOverflow


def test_safe_api_is_the_raw_layer_plus_checks(paillier_2048) -> None:
    pk, sk = paillier_2048
    n, n2 = pk.n, pk.nsquare
    crt = hazmat.CrtPrivateKey(sk.p, sk.q)
    # the same DJN exponent gives the same ciphertext through either layer
    a = random.Random(5).getrandbits(pk.djn_exponent_bits)
    raw = hazmat.raw_encrypt(n, n2, -77 % n, hazmat.djn_rn(pk.djn_table(), a))
    assert raw == pk.encrypt(-77, rng=random.Random(5)).value
    assert crt.raw_decrypt(raw) == -77 % n
    # homomorphic operations
    c1, c2 = pk.encrypt(1234, rng=random.Random(1)), pk.encrypt(-55, rng=random.Random(2))
    assert hazmat.raw_add(n2, c1.value, c2.value) == (c1 + c2).value
    assert hazmat.raw_encrypt(n, n2, 9, c1.value) == (c1 + 9).value
    assert hazmat.raw_pow(n2, c1.value, 3) == (c1 * 3).value
    assert hazmat.raw_negate(n2, c1.value) == (-c1).value
    assert hazmat.raw_product(n2, [c1.value, c2.value, c1.value]) == pk.sum([c1, c2, c1]).value
    assert hazmat.raw_product(n2, []) == pk.zero().value == 1
    # the n-th root is the randomness of the ciphertext, whatever its plaintext
    r = 0xC0FFEE
    ct = pk.encrypt_with_r(31337, r)
    assert ct.value == hazmat.raw_encrypt(n, n2, 31337, hazmat.rn_from_r(r, n, n2))
    assert crt.nth_root(ct.value) == r
    assert prove_decryption(sk, ct) == (31337, r)
    assert hazmat.derived_base(n) == pk.hs


def test_raw_layer_matches_phe(paillier_2048) -> None:
    pk, sk = paillier_2048
    ppk = phe.PaillierPublicKey(pk.n)
    psk = phe.PaillierPrivateKey(ppk, sk.p, sk.q)
    crt = hazmat.CrtPrivateKey(sk.p, sk.q)
    for m, r in ((0, 3), (1, 0xABCDEF), (pk.n - 1, 2**300 + 1), (2**1000, 65537)):
        c = hazmat.raw_encrypt(pk.n, pk.nsquare, m, hazmat.rn_from_r(r, pk.n, pk.nsquare))
        assert c == ppk.raw_encrypt(m, r_value=r)
        assert crt.raw_decrypt(c) == psk.raw_decrypt(c) == m


def test_hazmat_does_not_validate_the_safe_api_does(paillier_2048) -> None:
    """The rule: raw functions take any ints and answer; the safe layer raises."""
    pk, sk = paillier_2048
    crt = hazmat.CrtPrivateKey(sk.p, sk.q)
    not_a_unit = sk.p * 12345
    assert not crt.is_unit(not_a_unit)
    crt.raw_decrypt(not_a_unit)  # an answer, meaningless
    with pytest.raises(InvalidCiphertext):
        sk.decrypt(EncryptedNumber(pk, not_a_unit))
    overflow = pk.n - 1 - pk.max_int  # in the band: decode refuses it
    c = hazmat.raw_encrypt(pk.n, pk.nsquare, overflow, 1)
    assert crt.raw_decrypt(c) == overflow
    with pytest.raises(PlaintextOverflow):
        sk.decrypt(pk.ciphertext(c))
    with pytest.raises(ZeroDivisionError):
        hazmat.raw_negate(pk.nsquare, pk.n)
    with pytest.raises(ZeroDivisionError):  # gcd(n, phi(n)) != 1: no n-th-root exponent
        hazmat.CrtPrivateKey(7, 43)


def test_the_safe_classes_carry_no_raw_operations() -> None:
    """Raw operations live in crypto.hazmat, proofs in crypto.paillier_proofs (issue 16)."""
    for cls, names in (
        (PaillierPublicKey, ("raw_encrypt", "djn_rn", "random_rn", "random_rn_full")),
        (PaillierPublicKey, ("verify_wellformed", "wellformedness_challenges")),
        (PaillierPrivateKey, ("raw_decrypt", "recover_r", "prove", "prove_wellformed")),
    ):
        for name in names:
            assert not hasattr(cls, name), f"{cls.__name__}.{name}"


def test_djn_table_shapes_give_the_same_powers(paillier_small) -> None:
    pk, _ = paillier_small
    bits = pk.djn_exponent_bits
    big = hazmat.djn_table(pk.hs, pk.nsquare, bits)
    small = hazmat.djn_table(pk.hs, pk.nsquare, bits, rows=5, tables=3)
    for a in (0, 1, 2**bits - 1, random.Random(9).getrandbits(bits)):
        assert hazmat.djn_rn(big, a) == hazmat.djn_rn(small, a) == nt.powmod(pk.hs, a, pk.nsquare)
