"""``privmeter bench paillier``: the Paillier engine side by side with python-paillier (phe).

What it measures, in ONE process on one core (``time.process_time``), with
the same key (phe's key is built from our p and q) and the same ciphertexts:

* ``encrypt``       -- privmeter DJN fixed-base encryption vs ``phe`` ``encrypt``;
* ``encrypt_pool``  -- privmeter's online encryption with a pre-filled
  :class:`~privmeter.crypto.paillier.RandomnessPool` vs ``phe`` ``encrypt``
  (phe has no offline phase);
* ``decrypt``       -- CRT decryption in both (validation included for privmeter);
* ``add``           -- homomorphic addition of two ciphertexts;
* ``bill_month``    -- a 31-day bill: 2,976 quarter-hour readings, each raised
  to a 16-bit real-time price.  privmeter streams them through
  :class:`~privmeter.crypto.multiexp.StreamingMultiExp` as they "arrive";
  phe does what a phe user writes, ``sum(c * p)``.  ``floor_s`` is the cost of
  2,975 plain multiplications mod n**2 (gmpy2), the least any method needs.

Both bills are decrypted and checked against the plaintext bill.  Absolute
times on a shared machine are noise; the ratios are the result.

Layers: every timed privmeter operation goes through the safe API
(:mod:`privmeter.crypto.paillier`).  Only the untimed set-up of the month's
2,976 ciphertexts uses the raw layer (:mod:`privmeter.crypto.hazmat.paillier`:
``raw_encrypt`` with randomisers chained from two DJN ones), which is why
``privmeter.bench`` may import hazmat.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from phe import paillier as phe

from privmeter.argtypes import positive
from privmeter.bench._common import add_json_flag, cpu_per_call, emit, progress
from privmeter.crypto import numtheory as nt
from privmeter.crypto.hazmat import paillier as hazmat
from privmeter.crypto.multiexp import StreamingMultiExp
from privmeter.crypto.paillier import (
    EncryptedNumber,
    RandomnessPool,
    generate_keypair,
)
from privmeter.errors import SelfCheckFailed

T = TypeVar("T")

__all__ = ["MONTH_READINGS", "PRICE_BITS", "add_arguments", "measure", "run"]

MONTH_READINGS = 31 * 96  # a 31-day month of 15-minute intervals
PRICE_BITS = 16  # real-time prices in milli-pence per kWh fit in 16 bits
POOL_CALLS = 200  # online pool encryptions timed (pool filled beforehand)
BILL_REPEATS = 3  # bill_month and floor: best of 3 (each run is ~0.1 s, load spikes matter)
PHE_BILL_REPEATS = 2  # phe's bill takes ~1 s per run at 3072 bits


def _best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Minimum CPU time over ``repeats`` runs of ``fn`` and its (last) result."""
    best = float("inf")
    out: T
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bits",
        type=int,
        choices=(2048, 3072),
        default=3072,
        help="Paillier modulus size (default 3072)",
    )
    parser.add_argument(
        "--min-seconds",
        type=positive,
        default=1.0,
        help="CPU seconds spent per timed operation (default 1.0)",
    )
    parser.add_argument("--insecure-test-bits", type=int, default=None, help=argparse.SUPPRESS)
    add_json_flag(parser)


def _paired(
    ours: Callable[[], object], theirs: Callable[[], object], min_seconds: float, rounds: int = 3
) -> tuple[float, float]:
    """Per-call CPU of both, measured in alternating rounds; the best round of each."""
    a, b = [], []
    for _ in range(rounds):
        a.append(cpu_per_call(ours, min_seconds=min_seconds / rounds))
        b.append(cpu_per_call(theirs, min_seconds=min_seconds / rounds))
    return min(a), min(b)


def _phe_bill(cts: list[phe.EncryptedNumber], prices: list[int]) -> phe.EncryptedNumber:
    return sum(c * p for c, p in zip(cts, prices, strict=True))


def measure(
    bits: int,
    *,
    insecure: bool = False,
    min_seconds: float = 1.0,
    readings: int = MONTH_READINGS,
    show_progress: bool | None = False,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run every measurement and return the result object (see module docstring)."""
    rng: nt.RandomSource = random.Random(seed) if seed is not None else nt.SYSTEM_RNG
    data_rng = random.Random(seed if seed is not None else 2012)
    steps = 7
    with progress(show_progress) as bar:
        task = bar.add_task(f"paillier {bits}", total=steps)
        t0 = time.process_time()
        pk, sk = generate_keypair(bits, rng=rng, insecure_for_tests=insecure)
        keygen_s = time.process_time() - t0
        ppk = phe.PaillierPublicKey(pk.n)
        psk = phe.PaillierPrivateKey(ppk, sk.p, sk.q)
        t0 = time.process_time()
        pk.djn_table()
        table_s = time.process_time() - t0
        bar.advance(task)

        ops: dict[str, dict[str, float]] = {}

        def pair(name: str, ours: float, theirs: float) -> None:
            ops[name] = {"privmeter_s": ours, "phe_s": theirs, "speedup": theirs / ours}

        m = 123_456
        ours_enc, phe_enc = _paired(
            lambda: pk.encrypt(m, rng=rng), lambda: ppk.encrypt(m), min_seconds
        )
        pair("encrypt", ours_enc, phe_enc)
        bar.advance(task)

        pool = RandomnessPool(pk)
        pool.fill(POOL_CALLS, rng=rng, full=False)  # offline; the online cost is what we time
        t0 = time.process_time()
        for _ in range(POOL_CALLS):
            pk.encrypt(m, pool=pool)
        pair("encrypt_pool", (time.process_time() - t0) / POOL_CALLS, phe_enc)
        bar.advance(task)

        c = pk.encrypt(-m, rng=rng)
        pc = phe.EncryptedNumber(ppk, c.value)
        if not sk.decrypt(c) == psk.decrypt(pc) == -m:
            raise SelfCheckFailed("decryptions disagree")
        pair("decrypt", *_paired(lambda: sk.decrypt(c), lambda: psk.decrypt(pc), min_seconds))
        bar.advance(task)

        c2 = pk.encrypt(7, rng=rng)
        pc2 = phe.EncryptedNumber(ppk, c2.value)
        pair("add", *_paired(lambda: c + c2, lambda: pc + pc2, min_seconds / 2))
        bar.advance(task)

        # a month of signed readings (import +, PV export -) and 16-bit prices
        xs = [data_rng.randint(-400, 900) for _ in range(readings)]
        prices = [data_rng.getrandbits(PRICE_BITS) for _ in range(readings)]
        truth = sum(x * p for x, p in zip(xs, prices, strict=True))
        # cheap distinct randomisers: a chain of products of two DJN ones (not timed)
        table, abits = pk.djn_table(), pk.djn_exponent_bits
        rn = nt.mpz(hazmat.random_rn(table, abits, rng))
        step = hazmat.random_rn(table, abits, rng)
        cts: list[EncryptedNumber] = []
        for x in xs:
            rn = rn * step % pk.nsquare
            cts.append(
                EncryptedNumber(pk, hazmat.raw_encrypt(pk.n, pk.nsquare, pk.encode(x), int(rn)))
            )

        def ours() -> int:
            acc = StreamingMultiExp(pk.nsquare, PRICE_BITS)
            for ct, p in zip(cts, prices, strict=True):
                acc.add(ct.value, p)
            return acc.result()

        ours_bill, bill = _best_of(BILL_REPEATS, ours)
        if sk.decrypt(pk.ciphertext(bill)) != truth:
            raise SelfCheckFailed("privmeter bill is wrong")
        bar.advance(task)

        pcts = [phe.EncryptedNumber(ppk, ct.value) for ct in cts]
        phe_bill, pbill = _best_of(PHE_BILL_REPEATS, lambda: _phe_bill(pcts, prices))
        if psk.decrypt(pbill) != truth:
            raise SelfCheckFailed("phe bill is wrong")

        mvals = [nt.mpz(ct.value) for ct in cts]
        msq = nt.mpz(pk.nsquare)

        def floor() -> object:
            prod = mvals[0]
            for v in mvals[1:]:
                prod = prod * v % msq
            return prod

        floor_s, _ = _best_of(BILL_REPEATS, floor)
        pair("bill_month", ours_bill, phe_bill)
        bar.advance(task)

    return {
        "bits": bits,
        "operations": ops,
        "bill_month": {
            "privmeter_s": ours_bill,
            "floor_s": floor_s,
            "ratio_to_floor": ours_bill / floor_s,
            "phe_s": phe_bill,
            "phe_sampled": False,
            "readings": readings,
            "price_bits": PRICE_BITS,
            "window": StreamingMultiExp(pk.nsquare, PRICE_BITS).window,
            "repeats": {"privmeter": BILL_REPEATS, "floor": BILL_REPEATS, "phe": PHE_BILL_REPEATS},
            "verified": True,
        },
        "setup": {
            "keygen_s": keygen_s,
            "djn_table_build_s": table_s,
            "pool_calls": POOL_CALLS,
            "pool_fill": "djn",
            "timer": "process_time",
            "insecure_test_key": insecure,
        },
    }


def run(args: argparse.Namespace) -> int:
    insecure_bits = getattr(args, "insecure_test_bits", None)
    bits = insecure_bits if insecure_bits is not None else args.bits
    result = measure(
        bits, insecure=insecure_bits is not None, min_seconds=args.min_seconds, show_progress=None
    )
    rows = [
        [name, f"{v['privmeter_s'] * 1e3:.3f}", f"{v['phe_s'] * 1e3:.3f}", f"{v['speedup']:.1f}x"]
        for name, v in result["operations"].items()
    ]
    b = result["bill_month"]
    rows.append(
        [
            "bill_month floor (2,975 mults)",
            f"{b['floor_s'] * 1e3:.3f}",
            "",
            f"privmeter {b['ratio_to_floor']:.2f}x floor",
        ]
    )
    emit(
        result,
        as_json=args.json,
        title=f"Paillier, {bits}-bit n (CPU ms per operation)",
        rows=rows,
        columns=["operation", "privmeter ms", "phe ms", "speedup"],
    )
    return 0
