from privmeter.crypto.paillier_proofs import prove_decryption, verify_decryption


def test_roundtrip_and_proof(paillier_2048, rng):
    pk, sk = paillier_2048
    c = pk.encrypt(-1234, rng=rng) * 7 + pk.encrypt(10, rng=rng)
    assert sk.decrypt(c) == -1234 * 7 + 10
    m, r = prove_decryption(sk, c)
    verify_decryption(pk, c, m, r)


def test_djn_table_shape_changes_memory_not_ciphertexts(paillier_2048):
    import random

    from privmeter.crypto.paillier import PaillierPublicKey

    pk, sk = paillier_2048
    small = PaillierPublicKey(pk.n, pk.hs)
    small.size_djn_table(6, 2)
    a = pk.encrypt(-77, rng=random.Random(3))
    b = small.encrypt(-77, rng=random.Random(3))
    assert a.value == b.value
    assert (small.djn_table().rows, len(small.djn_table().tables)) == (6, 2)
    assert (pk.djn_table().rows, len(pk.djn_table().tables)) != (6, 2)
    assert sk.decrypt(b) == -77
