"""``privmeter bench comparison``: the meter-keyed secure comparison vs MPyC, and a 1,000-meter event.

What it measures, side by side in one run:

* per comparison, for 16, 24 and 32 bits, in the meters' default group
  (ffdhe3072, ~128-bit security, like the Paillier default): the meter's
  CPU (a fresh one-use key, the encrypted one-hot digits of its reading;
  then checking the challenge and zero-testing every value), the utility's
  CPU (check the offer, build, blind, re-randomise and shuffle the
  challenge, read the bit) and the bytes on the wire per meter (offer,
  challenge, answer bit), for the default radix (4) and for radix 2;
* MPyC's secure comparison ``x >= t`` over ``secint(bits)`` (secure numpy
  arrays, one batch): **three local MPyC processes on loopback** started
  with ``-M3 -I i``; we report party 0's CPU per comparison.  MPyC needs
  three non-colluding parties with an honest majority; ours needs none
  (two parties, the meter holds a one-use key): the comparison is of cost,
  not of trust model;
* one demand-management event over 1,000 meters end to end: the utility in
  this process, the meters in two forked worker processes (both cores),
  every message encoded with the wire codec, signed and verified.  Wall
  time, and CPU of the utility and of all meters.

Timings are ``time.process_time`` (CPU of one process) unless named
``wall``; on a shared machine only ratios within one run mean much.
Readings for the event are synthetic (exponential, mean 1.2 kW, seeded).
No pickle: the worker processes are forked and exchange codec-encoded bytes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import random
import socket
import subprocess
import sys
import time
from typing import Any

import msgpack

from privmeter.argtypes import at_least
from privmeter.bench._common import add_json_flag, emit, progress
from privmeter.crypto import elgamal
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import DependencyError, SelfCheckFailed, TransportError
from privmeter.protocol import comparison as cmp
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.demand import DemandManager, MeterDemandAgent
from privmeter.protocol.demand_budget import ComparisonBudget, plaintext_targets
from privmeter.protocol.demand_messages import (
    ComparisonAnswer,
    ComparisonQuery,
    DemandEvent,
    Directive,
    Echo,
    EchoBundle,
    Offer,
)

__all__ = ["add_arguments", "run", "run_benchmark"]

BITS = (16, 24, 32)
MPYC_WORKER = r"""
import json, random, sys, time
import numpy as np
from mpyc.runtime import mpc
args = sys.argv[1:]
bits = int(args[args.index("--bits") + 1])
batch = int(args[args.index("--batch") + 1])
secint = mpc.SecInt(bits)
async def main():
    await mpc.start()
    r = random.Random(1000 + mpc.pid)
    half = 1 << (bits - 1)
    vals = np.array([r.randrange(-half, half) for _ in range(batch)], dtype=object)
    x = mpc.input(secint.array(vals), senders=0)
    t = mpc.input(secint.array(vals), senders=1)
    await mpc.barrier()
    c0, w0 = time.process_time(), time.perf_counter()
    out = await mpc.output(x >= t)
    c1, w1 = time.process_time(), time.perf_counter()
    await mpc.shutdown()
    if mpc.pid == 0:
        print(json.dumps({"cpu_s": (c1 - c0) / batch, "wall_s": (w1 - w0) / batch, "n": len(out)}))
mpc.run(main())
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser)
    parser.add_argument(
        "--samples", type=at_least(1), default=30, help="comparisons per configuration"
    )
    parser.add_argument(
        "--meters", type=at_least(1), default=1000, help="meters in the end-to-end event"
    )
    parser.add_argument(
        "--key-bits", type=int, default=3072, help="comparison group size: 2048 or 3072"
    )
    parser.add_argument(
        "--mpyc-batch", type=at_least(1), default=200, help="comparisons per MPyC batch"
    )
    parser.add_argument(
        "--quorum",
        type=at_least(1),
        default=8,
        help="echoes each meter checks before answering (same threshold for the group)",
    )
    parser.add_argument("--no-mpyc", action="store_true", help="skip the MPyC peer")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 512-bit INSECURE group, few samples, 20 meters",
    )
    parser.add_argument(
        "--bits", type=at_least(1), nargs="*", default=list(BITS), help="bit lengths"
    )


# -- per-comparison costs -------------------------------------------------------------


def _comparison_row(
    group: elgamal.Group, bits: int, radix: int, samples: int, rng: random.Random
) -> dict[str, Any]:
    half = 1 << (bits - 1)
    util = meter = offer_cpu = 0.0
    offer_bytes = challenge_bytes = answer_bytes = 0
    for _ in range(samples):
        t = rng.randrange(-half + 1, half)
        x = rng.randrange(-half, half)
        c0 = time.process_time()
        mc = cmp.MeterComparison(group, x, bits=bits, radix=radix)
        wire_offer = encode(mc.offer)
        c1 = time.process_time()
        uc = cmp.UtilityComparison(
            decode(wire_offer, expect=cmp.ComparisonOffer),
            t,
            bits=bits,
            radix=radix,
            allow_insecure=group.insecure,
        )
        wire_ch = encode(uc.challenge)
        c2 = time.process_time()
        zero = mc.answer(decode(wire_ch, expect=cmp.ComparisonChallenge))
        c3 = time.process_time()
        ok = uc.receive(zero)
        c4 = time.process_time()
        if ok != (x >= t):
            raise SelfCheckFailed(f"comparison wrong for x={x}, T={t}")
        offer_cpu += c1 - c0
        meter += (c1 - c0) + (c3 - c2)
        util += (c2 - c1) + (c4 - c3)
        offer_bytes, challenge_bytes = len(wire_offer), len(wire_ch)
        answer_bytes = 1
    return {
        "bits": bits,
        "radix": radix,
        "digits": cmp.num_digits(bits, radix),
        "utility_s": util / samples,
        "meter_s": meter / samples,
        "meter_offer_s": offer_cpu / samples,
        "bytes": offer_bytes + challenge_bytes + answer_bytes,
        "offer_bytes": offer_bytes,
        "challenge_bytes": challenge_bytes,
    }


def _free_base_port(m: int = 3) -> int:
    for _ in range(50):
        base = random.randrange(20000, 60000)
        socks = []
        try:
            for i in range(m):
                s = socket.socket()
                socks.append(s)  # closed below even when the port is taken
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise TransportError("no free loopback ports for MPyC")


def mpyc_comparison(bits: int, batch: int, timeout: float = 300.0) -> dict[str, float]:
    """Run MPyC's batched ``x >= t`` with 3 local processes; party 0's CPU and wall per comparison."""
    base = _free_base_port()
    common = ["-M3", "-B", str(base), "--no-log", "--bits", str(bits), "--batch", str(batch)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MPYC_WORKER, *common, "-I", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2, 0)
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out0, err0 = outs[2]
    if procs[2].returncode != 0 or not out0.strip():
        raise DependencyError(f"MPyC party 0 failed: {err0.strip()[-400:]}")
    res = json.loads(out0.strip().splitlines()[-1])
    return {"cpu_s": float(res["cpu_s"]), "wall_s": float(res["wall_s"])}


# -- the 1,000-meter event -------------------------------------------------------------


def _meter_seed(i: int) -> bytes:
    return (b"bench-meter-%08d" % i).ljust(32, b"\0")


def _meter_worker(
    conn: Any,
    group_name: str,
    he_vk: bytes,
    ids: list[str],
    readings: dict[str, int],
    roster_hex: dict[str, str],
    quorum: int,
    now: int,
) -> None:
    """A forked process running a share of the meters; talks codec bytes over ``conn``."""
    c0 = time.process_time()
    group = elgamal.GROUPS[group_name]
    roster = {m: VerifyKey.from_hex(h) for m, h in roster_hex.items()}
    agents = {
        m: MeterDemandAgent(
            m,
            "feeder-1",
            SigningKey.from_seed(_meter_seed(int(m[1:]))),
            VerifyKey(he_vk),
            ComparisonBudget(
                comparisons_per_interval=1,
                comparisons_per_day=4,
                same_threshold_for_group=True,
                min_group_size=min(5, quorum),
            ),
            roster=roster,
            quorum=quorum,
            cap_w=1500,
            key_group=group.name,
            allow_insecure_group=group.insecure,
        )
        for m in ids
    }
    ev = decode(conn.recv_bytes(), expect=DemandEvent)
    riv = now // 900 - 1
    out: list[bytes] = []
    for m, a in agents.items():
        offer, echo = a.receive_event(ev, reading_interval=riv, reading_w=readings[m], now=now)
        out += [encode(offer), encode(echo)]
    conn.send_bytes(msgpack.packb(out))
    bundle = decode(conn.recv_bytes(), expect=EchoBundle)
    queries = [decode(b, expect=ComparisonQuery) for b in msgpack.unpackb(conn.recv_bytes())]
    chunk: list[bytes] = []
    for q in queries:
        a = agents[q.meter_id]
        if not a.receive_echoes(bundle, now=now):
            raise SelfCheckFailed("event not certified")
        chunk.append(encode(a.receive_query(q, now=now)))
        if len(chunk) >= 25:
            conn.send_bytes(msgpack.packb(chunk))
            chunk = []
    conn.send_bytes(msgpack.packb(chunk))
    conn.send_bytes(b"")
    directives = [decode(b, expect=Directive) for b in msgpack.unpackb(conn.recv_bytes())]
    applied = 0
    for d in directives:
        agents[d.meter_id].receive_directive(d, now=now)
        applied += 1
    conn.send_bytes(msgpack.packb([applied, time.process_time() - c0]))
    conn.close()


def event_benchmark(
    group: elgamal.Group, n_meters: int, *, quorum: int = 8, seed: int = 7
) -> dict[str, Any]:
    """One event over ``n_meters`` meters: utility here, meters in 2 forked workers."""
    rng = random.Random(seed)
    ids = [f"m{i:05d}" for i in range(n_meters)]
    keys = {m: SigningKey.from_seed(_meter_seed(i)) for i, m in enumerate(ids)}
    roster = {m: k.verify_key for m, k in keys.items()}
    readings = {m: int(rng.expovariate(1 / 1200)) for m in ids}
    quorum = min(quorum, n_meters)
    he = SigningKey.from_seed(b"bench-headend".ljust(32, b"\0"))
    total = sum(readings.values())
    mgr = DemandManager(
        he,
        "feeder-1",
        roster,
        cmin_w=total // 3,
        cmax_w=total * 3 // 4,
        level_above_w=1500,
        level_below_w=1500,
        quorum=quorum,
        min_group_bits=group.bits,
    )
    now = 1_750_000_000
    group.g_pow(1)  # the fixed-base table, built before the clock starts (as on a running meter)
    ctx = multiprocessing.get_context("fork")
    shares = [ids[0::2], ids[1::2]]
    conns, procs = [], []
    w0 = time.perf_counter()
    u0 = time.process_time()
    for share in shares:
        parent, child = ctx.Pipe()
        p = ctx.Process(
            target=_meter_worker,
            args=(
                child,
                group.name,
                he.verify_key.raw,
                share,
                {m: readings[m] for m in share},
                {m: vk.hex() for m, vk in roster.items()},
                quorum,
                now,
            ),
        )
        p.start()
        child.close()
        conns.append(parent)
        procs.append(p)
    try:
        ev = mgr.check_total(total, interval=now // 900, now=now)
        if ev is None:
            raise SelfCheckFailed("total inside [Cmin, Cmax]")
        wire_ev = encode(ev)
        for c in conns:
            c.send_bytes(wire_ev)
        for c in conns:
            for b in msgpack.unpackb(c.recv_bytes()):
                msg = decode(b)
                if isinstance(msg, Offer):
                    mgr.receive_offer(msg)
                else:
                    mgr.receive_echo(decode(b, expect=Echo))
        bundle = encode(mgr.echo_bundle(ev.event_id, limit=quorum))
        qs = mgr.queries(ev.event_id, now=now)
        by_meter = {q.meter_id: encode(q) for q in qs}
        for c, share in zip(conns, shares, strict=True):
            c.send_bytes(bundle)
            c.send_bytes(msgpack.packb([by_meter[m] for m in share]))
        open_conns = list(conns)
        while open_conns:
            for ready in multiprocessing.connection.wait(open_conns):
                c = conns[conns.index(ready)]  # type: ignore[arg-type]
                data = c.recv_bytes()
                if not data:
                    open_conns.remove(c)
                    continue
                for b in msgpack.unpackb(data):
                    mgr.receive_answer(decode(b, expect=ComparisonAnswer), now=now)
        dirs = mgr.directives(ev.event_id, now=now)
        for c, share in zip(conns, shares, strict=True):
            mine = set(share)
            c.send_bytes(msgpack.packb([encode(d) for d in dirs if d.meter_id in mine]))
        applied, meter_cpu = 0, 0.0
        for c in conns:
            a, cpu = msgpack.unpackb(c.recv_bytes())
            applied += a
            meter_cpu += cpu
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    utility_cpu = time.process_time() - u0
    wall = time.perf_counter() - w0
    threshold = mgr.events[ev.event_id].threshold
    expected = plaintext_targets(readings, threshold, ev.side, ev.bits)
    if mgr.targets(ev.event_id) != expected or applied != len(expected):
        raise SelfCheckFailed("event targets differ from the plaintext reference")
    return {
        "meters": n_meters,
        "wall_s": wall,
        "utility_cpu_s": utility_cpu,
        "meter_cpu_s": meter_cpu,
        "targets": len(expected),
        "quorum": quorum,
        "matches_plaintext": True,
    }


# -- driver ----------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(args.quick)
    key_bits = 512 if quick else args.key_bits
    samples = 2 if quick else args.samples
    meters = min(args.meters, 20) if quick else args.meters
    batch = 16 if quick else args.mpyc_batch
    rng = random.Random(2012)
    result: dict[str, Any] = {}
    with progress() as bar:
        task = bar.add_task("comparison group", total=None)
        c0 = time.process_time()
        group = elgamal.group_for_bits(key_bits, insecure_for_tests=quick)
        group.g_pow(1)
        result["group"] = {
            "name": group.name,
            "bits": group.bits,
            "exp_bits": group.exp_bits,
            "table_cpu_s": time.process_time() - c0,
            "insecure_quick_run": quick,
        }
        rows: list[dict[str, Any]] = []
        textbook: list[dict[str, Any]] = []
        bar.update(task, description="comparisons", total=len(args.bits) * 2, completed=0)
        for bits in args.bits:
            row = _comparison_row(group, bits, cmp.DEFAULT_RADIX, samples, rng)
            bar.advance(task)
            tb = _comparison_row(group, bits, 2, samples, rng)
            bar.advance(task)
            if not args.no_mpyc:
                mp = mpyc_comparison(bits, batch)
                row["mpyc_s"] = tb["mpyc_s"] = mp["cpu_s"]
                row["mpyc_wall_s"] = tb["mpyc_wall_s"] = mp["wall_s"]
            else:
                row["mpyc_s"] = tb["mpyc_s"] = None
            rows.append(row)
            textbook.append(tb)
        result["comparisons"] = rows
        result["textbook_radix2"] = textbook
        result["mpyc_mode"] = (
            f"3 local MPyC {__import__('mpyc').__version__} processes on loopback (-M3 -I i), "
            f"secint(bits) secure arrays, one batch of {batch} comparisons x >= t; "
            "mpyc_s = party 0 CPU per comparison"
            if not args.no_mpyc
            else "skipped"
        )
        bar.update(task, description=f"event over {meters} meters", total=None)
        result["event_1000"] = event_benchmark(group, meters, quorum=args.quorum)
    return result


def run(args: argparse.Namespace) -> int:
    result = run_benchmark(args)

    def ms(s: float | None) -> str:
        return "-" if s is None else f"{s * 1e3:.2f}"

    rows = []
    for label, group in (
        ("radix 4", result["comparisons"]),
        ("radix 2", result["textbook_radix2"]),
    ):
        for r in group:
            rows.append(
                [
                    f"{r['bits']} bits, {label}",
                    ms(r["utility_s"]),
                    ms(r["meter_s"]),
                    str(r["bytes"]),
                    ms(r["mpyc_s"]),
                ]
            )
    ev = result["event_1000"]
    rows.append(
        [
            f"event, {ev['meters']} meters",
            f"{ev['utility_cpu_s']:.2f} s cpu",
            f"{ev['meter_cpu_s']:.2f} s cpu",
            f"{ev['wall_s']:.2f} s wall",
            "-",
        ]
    )
    emit(
        result,
        as_json=args.json,
        title=f"Meter-keyed comparison ({result['group']['name']}) vs MPyC",
        rows=rows,
        columns=["case", "utility ms", "meter ms", "bytes", "MPyC ms/party"],
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(run(p.parse_args()))
