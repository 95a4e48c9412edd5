"""Regenerate the Paillier vector files' h_s and the DJN known answers, independently of privmeter.

Usage: ``python3 tests/vectors/gen_paillier_vectors.py`` (from the repository root).

The key files ``paillier_<bits>.json`` keep their primes; their ``hs`` is
recomputed here from n alone, re-implementing the derivation documented in
docs/paillier.md (x = SHA-256 expansion of n under the domain
``privmeter-paillier-djn-base-v1``, h = -x^2 mod n, h_s = h^n mod n^2) with
hashlib and the built-in ``pow`` only.  Each ``kind=djn`` vector's ``c`` is
then recomputed as ``(1 + (m mod n) n) h_s^a mod n^2``; ``textbook`` vectors
do not involve h_s and are left as they are.  The output is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

HERE = Path(__file__).parent


def derived_base(n: int) -> int:
    nlen = (n.bit_length() + 7) // 8
    counter = 0
    while True:
        material = b""
        block = 0
        while len(material) < nlen + 16:
            material += hashlib.sha256(
                b"privmeter-paillier-djn-base-v1"
                + n.to_bytes(nlen, "big")
                + counter.to_bytes(4, "big")
                + block.to_bytes(4, "big")
            ).digest()
            block += 1
        x = int.from_bytes(material, "big") % n
        counter += 1
        if x > 1 and math.gcd(x, n) == 1:
            return pow((-x * x) % n, n, n * n)


def main() -> None:
    hs_of: dict[int, tuple[int, int]] = {}
    for bits in (2048, 3072):
        path = HERE / f"paillier_{bits}.json"
        d = json.loads(path.read_text())
        n = int(d["public_key"]["n"], 16)
        assert int(d["p"], 16) * int(d["q"], 16) == n
        hs = derived_base(n)
        d["public_key"]["hs"] = format(hs, "x")
        path.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")
        hs_of[bits] = (n, hs)
    kat_path = HERE / "paillier_kat.json"
    kat = json.loads(kat_path.read_text())
    for v in kat["vectors"]:
        if v["kind"] != "djn":
            continue
        n, hs = hs_of[v["bits"]]
        nsq = n * n
        c = (1 + (int(v["m"]) % n) * n) * pow(hs, int(v["a"], 16), nsq) % nsq
        v["c"] = format(c, "x")
    kat_path.write_text(json.dumps(kat, indent=1) + "\n")


if __name__ == "__main__":
    main()
