from privmeter.crypto.paillier import verify_decryption


def test_roundtrip_and_proof(paillier_2048, rng):
    pk, sk = paillier_2048
    c = pk.encrypt(-1234, rng=rng) * 7 + pk.encrypt(10, rng=rng)
    assert sk.decrypt(c) == -1234 * 7 + 10
    m, r = sk.prove(c)
    verify_decryption(pk, c, m, r)
