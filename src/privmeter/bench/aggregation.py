"""``privmeter bench aggregation``: masked aggregation vs a Paillier baseline.

For each case (meters, group size, dropout) both protocols run side by side in
this process and we report CPU seconds per interval for one meter and for the
head-end, and bytes a meter sends per interval:

* ``masked``: :mod:`privmeter.protocol.aggregation` (pairwise + self masks,
  Shamir recovery, default sparse graph), one steady-state interval in which
  the dropouts of the previous interval are recovered; every message goes
  through the codec.
* ``paillier``: meters encrypt their reading under the utility's key (the
  project's own Paillier, DJN fixed-base encryption, 3072-bit by default) and
  MAC it exactly like the masked input (keyed BLAKE2b over the encoding with
  an empty tag, cut from the received bytes); per message the head-end pays
  the codec decode, the MAC check and the ciphertext validation
  (range and unit mod n^2), then multiplies survivors' ciphertexts and
  decrypts the total once per group.  The masked head-end pays the same
  three per-message steps (decode, MAC, size/roster checks).

Groups are independent, so for many groups (10,000 meters in groups of 200)
we run ``--groups`` of them (default 5; ``--full`` runs all) and scale the
head-end time by ``groups / groups_measured``; the JSON says so.
Timings are ``time.process_time`` (one core).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import random
import time
from dataclasses import dataclass
from typing import Any

from privmeter.bench._common import add_json_flag, emit, progress
from privmeter.crypto.paillier import generate_keypair
from privmeter.protocol.aggregation import input_mac
from privmeter.protocol.aggregation_sim import GroupSimulation, make_group
from privmeter.protocol.codec import decode, encode, message

__all__ = ["PaillierReading", "add_arguments", "run", "run_cases"]


@message("agg.bench.paillier")
@dataclass(frozen=True, slots=True, kw_only=True)
class PaillierReading:
    """The baseline's per-interval meter message: E(reading) and a MAC."""

    meter_id: str
    interval: int
    ciphertext: bytes
    tag: bytes


def _reading(meter: str, t: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{meter}/{t}".encode()).digest()[:4], "big") % 20_000 - 3_000


def _masked_case(group_size: int, dropout: float, seed: int) -> tuple[float, float, float, bool]:
    """(meter CPU per interval, head-end CPU per interval for the group, bytes up/meter, exact)."""
    g: GroupSimulation = make_group(group_size, seed=seed, min_survivors=3)
    g.setup()
    ids = sorted(g.meters)
    offline = set(random.Random(seed).sample(ids, int(group_size * dropout)))
    he = g.headend

    def step(off: set[str]) -> tuple[float, float, int, int, Any]:
        meter_cpu = head_cpu = 0.0
        nbytes = nmsg = 0
        c0 = time.process_time()
        starts = he.open_interval_wire()
        head_cpu += time.process_time() - c0
        t = he.current
        for mid, data in starts.items():
            if mid in off:
                continue
            c0 = time.process_time()
            out = encode(g.meters[mid].handle_start(data, _reading(mid, t)))
            c1 = time.process_time()
            he.handle_input(out)
            c2 = time.process_time()
            meter_cpu += c1 - c0
            head_cpu += c2 - c1
            nbytes += len(out)
            nmsg += 1
        c0 = time.process_time()
        res = he.close_interval()
        head_cpu += time.process_time() - c0
        return meter_cpu, head_cpu, nbytes, nmsg, res

    step(set())  # priming
    step(set())
    step(offline)  # dropouts happen
    meter_cpu, head_cpu, nbytes, nmsg, res = step(offline)  # ... and are recovered here
    exact = res is not None and res.total == (sum(_reading(m, res.interval) for m in res.survivors),)
    return meter_cpu / nmsg, head_cpu, nbytes / nmsg, exact


def _paillier_case(group_size: int, dropout: float, seed: int, pk: Any, sk: Any
                   ) -> tuple[float, float, float, bool]:
    rng = random.Random(seed)
    ids = [f"m{i:05d}" for i in range(group_size)]
    macs = {m: hashlib.sha256(f"mac/{m}".encode()).digest() for m in ids}
    offline = set(rng.sample(ids, int(group_size * dropout)))
    t = 1
    pk.djn_table()  # fixed-base table built once per key (offline cost)
    meter_cpu = head_cpu = 0.0
    msgs = []
    for m in ids:
        if m in offline:
            continue
        c0 = time.process_time()
        ct = pk.encrypt(_reading(m, t), rng=rng).to_bytes()
        body = PaillierReading(meter_id=m, interval=t, ciphertext=ct, tag=b"")
        msgs.append(encode(dataclasses.replace(body, tag=input_mac(macs[m], encode(body)))))
        meter_cpu += time.process_time() - c0
    c0 = time.process_time()
    acc = pk.zero()
    for data in msgs:
        msg = decode(data, expect=PaillierReading)
        if data[-22:-16] != b"\xa3tag\xc4\x10":  # tag last, 16 bytes (as for masked inputs)
            raise AssertionError("baseline message not in canonical form")
        want = input_mac(macs[msg.meter_id], data[:-18] + b"\xc4\x00")
        if not hmac.compare_digest(want, msg.tag):
            raise AssertionError("baseline MAC failed")
        acc = acc + pk.ciphertext_from_bytes(msg.ciphertext)
    total = sk.decrypt(acc)
    head_cpu = time.process_time() - c0
    exact = total == sum(_reading(m, t) for m in ids if m not in offline)
    return meter_cpu / len(msgs), head_cpu, sum(map(len, msgs)) / len(msgs), exact


def run_cases(sizes: list[tuple[int, int]], dropouts: list[float], *, key_bits: int,
              groups_measured: int, show_progress: bool) -> dict[str, Any]:
    pk, sk = generate_keypair(key_bits, insecure_for_tests=key_bits < 2048)
    cases = []
    with progress(show_progress) as bar:
        task = bar.add_task("aggregation", total=len(sizes) * len(dropouts) * 2)
        for meters, group_size in sizes:
            groups = max(1, meters // group_size)
            measured = min(groups, groups_measured)
            for dropout in dropouts:
                for proto in ("masked", "paillier"):
                    m_s = h_s = b = 0.0
                    exact = True
                    for gi in range(measured):
                        if proto == "masked":
                            r = _masked_case(group_size, dropout, seed=1 + gi)
                        else:
                            r = _paillier_case(group_size, dropout, 1 + gi, pk, sk)
                        m_s += r[0] / measured
                        h_s += r[1] * groups / measured
                        b += r[2] / measured
                        exact = exact and r[3]
                    cases.append({
                        "protocol": proto, "meters": meters, "group_size": group_size,
                        "dropout": dropout, "meter_s": m_s, "headend_s": h_s,
                        "bytes_per_meter": round(b, 1), "exact": exact,
                        "groups_measured": measured, "key_bits": key_bits if proto == "paillier" else None,
                    })
                    bar.advance(task)
    return {"cases": cases}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser)
    parser.add_argument("--full", action="store_true", help="run every group of the 10,000-meter case")
    parser.add_argument("--groups", type=int, default=5, help="groups measured per case (default 5)")
    parser.add_argument("--key-bits", type=int, default=3072, help="Paillier baseline key size")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke run (20 meters, 1,024-bit INSECURE baseline key)")


def run(args: argparse.Namespace) -> int:
    if args.quick:
        sizes, dropouts, bits, groups = [(20, 20)], [0.0, 0.2], 1024, 1
    else:
        sizes = [(100, 100), (1000, 1000), (10_000, 200)]
        dropouts, bits = [0.0, 0.05, 0.2], args.key_bits
        groups = 10**9 if args.full else args.groups
    result = run_cases(sizes, dropouts, key_bits=bits, groups_measured=groups,
                       show_progress=not args.json)
    rows = [[c["protocol"], str(c["meters"]), str(c["group_size"]), f"{c['dropout']:.0%}",
             f"{c['meter_s'] * 1e3:.3f}", f"{c['headend_s'] * 1e3:.1f}",
             f"{c['bytes_per_meter']:.0f}", "yes" if c["exact"] else "NO"] for c in result["cases"]]
    emit(result, as_json=args.json, title="aggregation: CPU per interval (one core)",
         rows=rows, columns=["protocol", "meters", "group", "dropout", "meter ms", "head-end ms",
                             "bytes/meter", "exact"])
    return 0 if all(c["exact"] for c in result["cases"]) else 1
