"""A simulation key cached before h_s was derived from n is salvaged from its primes, not regenerated."""

from __future__ import annotations

import random
from pathlib import Path

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.paillier import PaillierPrivateKey, PaillierPublicKey
from privmeter.sim import scenario as S


def test_old_cached_key_keeps_its_primes_and_gets_the_derived_base(tmp_path: Path) -> None:
    sc = S.Scenario(
        households=6,
        days=1,
        key_bits=512,
        dgk_bits=1024,
        insecure_small_keys=True,
        cache_dir=tmp_path,
    )
    fresh = S.household_key(sc, 3)
    n = fresh.public_key.n
    x = nt.random_unit(n, random.Random(1))
    old = PaillierPrivateKey(PaillierPublicKey(n, pow((-x * x) % n, n, n * n)), fresh.p, fresh.q)
    path = tmp_path / f"keys-{sc.key_bits}-{sc.seed}" / "hh00003.json"
    path.write_text(old.to_json())
    again = S.household_key(sc, 3)
    assert again.public_key == fresh.public_key and (again.p, again.q) == (fresh.p, fresh.q)
    assert (
        PaillierPrivateKey.from_json(path.read_text(), min_bits=512).public_key == fresh.public_key
    )
