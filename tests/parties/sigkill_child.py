"""Child process of test_sigkill.py: a head-end core accepting records until it is killed.

Prints ``R <meter> <interval> <seq>`` after each record's receipt exists (the
record is committed) and ``T <interval> <total>`` after each stored total.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from privmeter.crypto.paillier import PaillierPrivateKey
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.parties.headend import HeadEndCore
from privmeter.parties.headend_store import HeadEndStore, StoredTotal
from privmeter.parties.meter import MeterEncryptor
from privmeter.protocol.records import make_record

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
T0 = 1_500_000
METERS = ("m0", "m1", "m2")


def keys() -> tuple[SigningKey, dict[str, SigningKey], PaillierPrivateKey]:
    he = SigningKey.from_seed(hashlib.sha256(b"he").digest())
    ms = {m: SigningKey.from_seed(hashlib.sha256(m.encode()).digest()) for m in METERS}
    sk = PaillierPrivateKey.from_json((VECTORS / "paillier_2048.json").read_text())
    return he, ms, sk


def reading(meter: str, t: int) -> int:
    return (t * 37 + len(meter) * 11 + int(meter[1:]) * 101) % 900 - 50


def core(db: str) -> HeadEndCore:
    he, ms, sk = keys()
    plan = builtin_plan("economy7")
    c = HeadEndCore(he, [plan], store=HeadEndStore(db), window_back=10**6)
    proof = prove_wellformed(sk)
    for m, k in ms.items():
        c.register(
            m,
            k.verify_key,
            sk.public_key,
            plan,
            wellformed_proof=proof,
            period_start=T0,
            period_intervals=100_000,
        )
    return c


def main() -> None:
    db, start = sys.argv[1], int(sys.argv[2])
    c = core(db)
    _, ms, sk = keys()
    enc = MeterEncryptor(sk.public_key)
    rng = random.Random(start)
    for t in range(start, start + 100_000):
        for m in METERS:
            rec = make_record(ms[m], m, t, sk.public_key, enc.encrypt(reading(m, t), rng))
            receipt = c.handle(m, rec, now=t * 900, interval=t)[0]
            print(f"R {m} {t} {receipt.seq}", flush=True)
        total = sum(reading(m, t) for m in METERS)
        c.store.put_total(StoredTotal("g", t, total, 3, 0))
        print(f"T {t} {total}", flush=True)


if __name__ == "__main__":
    main()
