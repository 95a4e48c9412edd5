"""DGK encryption: key vectors, homomorphism, zero test, validation, serialisation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.crypto import dgk
from privmeter.errors import InvalidCiphertext, InvalidKey, MalformedMessage, UnsupportedVersion

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@pytest.fixture(scope="module")
def dgk_3072() -> dgk.DGKPrivateKey:
    return dgk.DGKPrivateKey.from_json((VECTORS / "dgk_3072.json").read_text())


@pytest.fixture(scope="module")
def dgk_small() -> dgk.DGKPrivateKey:
    _, sk = dgk.generate_keypair(512, subgroup_bits=48, rng=random.Random(48), insecure_for_tests=True)
    return sk


def test_vector_key_parameters(dgk_3072: dgk.DGKPrivateKey) -> None:
    pk = dgk_3072.public_key
    assert pk.bits == 3072
    assert dgk_3072.vp.bit_length() == dgk.SUBGROUP_BITS == dgk_3072.vq.bit_length()
    assert pk.u == dgk.plaintext_prime(dgk.DEFAULT_MAX_BITS) == 67
    assert pk.rand_bits == dgk.RANDOMIZER_BITS == 640
    assert (dgk_3072.p - 1) % (pk.u * dgk_3072.vp) == 0
    assert (dgk_3072.q - 1) % (pk.u * dgk_3072.vq) == 0
    # g has order u*vp*vq, h has order vp*vq
    n = pk.n
    assert pow(pk.g, pk.u * dgk_3072.vp * dgk_3072.vq, n) == 1
    assert pow(pk.g, dgk_3072.vp * dgk_3072.vq, n) != 1
    assert pow(pk.h, dgk_3072.vp * dgk_3072.vq, n) == 1


def test_vector_roundtrip_and_zero_test(dgk_3072: dgk.DGKPrivateKey, rng: random.Random) -> None:
    pk = dgk_3072.public_key
    for m in (0, 1, 2, pk.u - 1, pk.u, -1):
        c = pk.encrypt(m, rng=rng)
        assert dgk_3072.decrypt(c) == m % pk.u
        assert dgk_3072.is_zero(c) == (m % pk.u == 0)


def test_homomorphism_small(dgk_small: dgk.DGKPrivateKey, rng: random.Random) -> None:
    pk = dgk_small.public_key
    a, b = pk.encrypt(5, rng=rng), pk.encrypt(9, rng=rng)
    assert dgk_small.decrypt(pk.add(a, b)) == 14
    assert dgk_small.decrypt(pk.neg(a)) == (-5) % pk.u
    assert dgk_small.decrypt(pk.mul_const(a, 3)) == 15
    r = pk.rerandomize(a, rng=rng)
    assert r != a and dgk_small.decrypt(r) == 5


@settings(max_examples=60, deadline=None)
@given(x=st.integers(min_value=-200, max_value=200), y=st.integers(min_value=-200, max_value=200),
       k=st.integers(min_value=-70, max_value=70), seed=st.integers(min_value=0, max_value=2**32))
def test_homomorphic_properties(dgk_small: dgk.DGKPrivateKey, x: int, y: int, k: int, seed: int) -> None:
    pk = dgk_small.public_key
    r = random.Random(seed)
    cx, cy = pk.encrypt(x, rng=r), pk.encrypt(y, rng=r)
    assert dgk_small.decrypt(pk.add(cx, cy)) == (x + y) % pk.u
    assert dgk_small.decrypt(pk.mul_const(cx, k)) == (k * x) % pk.u
    assert dgk_small.is_zero(pk.add(cx, pk.neg(cy))) == ((x - y) % pk.u == 0)


@pytest.mark.parametrize("bad", [0, -3, "12", 1.5, True])
def test_invalid_ciphertexts_rejected(dgk_small: dgk.DGKPrivateKey, bad: object) -> None:
    pk = dgk_small.public_key
    with pytest.raises(InvalidCiphertext):
        pk.validate_value(bad)
    with pytest.raises(InvalidCiphertext):
        dgk_small.is_zero(bad)  # type: ignore[arg-type]


def test_non_units_and_out_of_range_rejected(dgk_small: dgk.DGKPrivateKey) -> None:
    pk = dgk_small.public_key
    for bad in (pk.n, pk.n + 5, dgk_small.p, dgk_small.q * 3):
        with pytest.raises(InvalidCiphertext):
            pk.validate_value(bad)
        with pytest.raises(InvalidCiphertext):
            dgk_small.is_zero(bad)


def test_element_outside_subgroup_fails_decryption(dgk_small: dgk.DGKPrivateKey) -> None:
    pk = dgk_small.public_key
    # -1 is a unit but (almost surely) not in <g, h>
    with pytest.raises(InvalidCiphertext):
        dgk_small.decrypt(pk.n - 1)


def test_small_keys_refused_without_flag() -> None:
    with pytest.raises(InvalidKey):
        dgk.generate_keypair(1024)
    with pytest.raises(InvalidKey):
        dgk.generate_keypair(3072, subgroup_bits=128)


def test_json_roundtrip(dgk_small: dgk.DGKPrivateKey) -> None:
    sk2 = dgk.DGKPrivateKey.from_json(dgk_small.to_json(), min_bits=512)
    assert sk2.public_key == dgk_small.public_key
    pk2 = dgk.DGKPublicKey.from_json(dgk_small.public_key.to_json(), min_bits=512)
    assert pk2.key_id == dgk_small.public_key.key_id
    with pytest.raises(InvalidKey):  # too small for the default minimum
        dgk.DGKPublicKey.from_json(dgk_small.public_key.to_json())


def test_json_rejects_bad_input(dgk_small: dgk.DGKPrivateKey) -> None:
    d = dgk_small.public_key.to_dict()
    with pytest.raises(UnsupportedVersion):
        dgk.DGKPublicKey.from_dict({**d, "format": "privmeter.dgk.public-key/9"}, min_bits=512)
    with pytest.raises(MalformedMessage):
        dgk.DGKPublicKey.from_dict({**d, "n": "zz"}, min_bits=512)
    with pytest.raises(MalformedMessage):
        dgk.DGKPublicKey.from_json("{not json", min_bits=512)
    with pytest.raises(InvalidKey):
        dgk.DGKPublicKey.from_dict({**d, "u": 68}, min_bits=512)
    with pytest.raises(InvalidKey):
        dgk.DGKPublicKey.from_dict({**d, "g": "1"}, min_bits=512)
    sd = json.loads(dgk_small.to_json())
    sd["vp"] = format(dgk_small.vp + 2, "x")
    with pytest.raises(InvalidKey):
        dgk.DGKPrivateKey.from_dict(sd, min_bits=512)


def test_plaintext_prime() -> None:
    assert dgk.plaintext_prime(16) == 19
    assert dgk.plaintext_prime(24) == 29
    assert dgk.plaintext_prime(64) == 67
    with pytest.raises(ValueError):
        dgk.plaintext_prime(1)
