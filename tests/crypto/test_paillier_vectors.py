"""Known-answer vectors (tests/vectors/paillier_kat.json), also checked against phe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from phe import paillier as phe

from privmeter.crypto.hazmat import paillier as hazmat
from privmeter.crypto.paillier import EncryptedNumber
from privmeter.crypto.paillier_proofs import prove_decryption, verify_decryption

KAT = json.loads((Path(__file__).parents[1] / "vectors" / "paillier_kat.json").read_text())
VECTORS: list[dict[str, Any]] = KAT["vectors"]


def _ids(v: dict[str, Any]) -> str:
    return f"{v['bits']}-{v['kind']}-{v['m'][:12]}"


@pytest.fixture
def keys(request, paillier_2048, paillier_3072):  # type: ignore[no-untyped-def]
    return {2048: paillier_2048, 3072: paillier_3072}


@pytest.mark.parametrize("vec", VECTORS, ids=_ids)
def test_known_answer(vec: dict[str, Any], keys) -> None:  # type: ignore[no-untyped-def]
    pk, sk = keys[vec["bits"]]
    m, c = int(vec["m"]), int(vec["c"], 16)
    if vec["kind"] == "textbook":
        r = int(vec["r"], 16)
        ct = pk.encrypt_with_r(m, r)
        # phe (g = n+1 too) produces the same ciphertext from the same r
        phe_pk = phe.PaillierPublicKey(pk.n)
        assert phe_pk.raw_encrypt(m % pk.n, r_value=r) == c
        # and the proof recovers exactly that r
        assert prove_decryption(sk, ct) == (m, r)
    else:
        rn = hazmat.djn_rn(pk.djn_table(), int(vec["a"], 16))
        ct = EncryptedNumber(pk, hazmat.raw_encrypt(pk.n, pk.nsquare, m % pk.n, rn))
    assert ct.value == c
    assert ct.to_bytes() == c.to_bytes(pk.nbytes, "big")
    assert sk.decrypt(pk.ciphertext(c)) == m
    got_m, got_r = prove_decryption(sk, ct)
    verify_decryption(pk, ct, got_m, got_r)
