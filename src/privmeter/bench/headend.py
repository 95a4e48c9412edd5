"""``privmeter bench headend``: how many meters one head-end core serves at 1-minute resolution.

What it measures: the head-end's CPU per reading for everything it does with
one meter's reading each interval --

* billing, over real loopback TCP: a separate load-generator process
  prepares every meter's signed, encrypted readings *beforehand* (Paillier
  under the household key, Ed25519 meter signature), then connects one
  authenticated, encrypted connection per meter and streams them; the
  head-end (this process) decrypts the channel, decodes, checks key id,
  signature, freshness, replay and the ciphertext, folds the reading into the
  encrypted bill, appends it to the signed log in SQLite (WAL, one
  transaction per record, committed before the receipt) and signs and sends
  the receipt.  Measured as this process's CPU time from the first record
  to the last receipt, divided by the records;
* aggregation: the head-end's share of masked aggregation per meter and
  interval (announcement, MAC check and decode of each masked input,
  unmasking), measured in-process on a group of ``--group`` meters (the
  meters' own work is excluded).

``meters_per_core_at_1min = 60 s / (per-reading CPU)``: one core keeps up in
real time with that many meters reporting once a minute.  Breakdown of the
billing path from micro-measurements on the same records: signature check,
ciphertext check + accumulation, persistence (``persistence_sqlite_wal``: per
record in a group commit of 64, as served; ``..._1_per_commit``: one
transaction per record, for comparison), receipt signing; the rest is
transport (AEAD, framing, codec, asyncio).

Security: real key sizes (``--key-bits``, default 3072).  The machine is
shared: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from privmeter.argtypes import at_least
from privmeter.bench._common import add_json_flag, cpu_per_call, emit, progress
from privmeter.crypto.paillier import PaillierPrivateKey, generate_keypair
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import ConfigError, DependencyError, TransportError

__all__ = ["PLAN_TOML", "T0", "add_arguments", "run"]

T0 = 28_000_000  # a 1-minute interval index in 2023
_MICRO_BATCH = 64  # records per group commit in the persistence micro-measurement


def _meter_key(seed: int, i: int) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(f"bench-meter/{seed}/{i}".encode()).digest())


def _headend_key(seed: int) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(f"bench-headend/{seed}".encode()).digest())


PLAN_TOML = (  # the benchmarks' plan: flat price, 1-minute intervals
    'version = 1\n[plan]\nid = "bench-1min"\nname = "bench flat, 1-minute"\ncurrency = "GBP"\n'
    "interval_seconds = 60\nmin_price = 0\nmax_price = 100000\nstanding_charge_per_day = 0\n"
    '[tariff]\nkind = "flat"\nprice = 14228\n'
)


def _plan() -> Any:
    from privmeter.grid.tariff.plan_toml import parse_plan

    return parse_plan(PLAN_TOML, source="<bench>")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_json_flag(p)
    p.add_argument(
        "--meters", type=at_least(1), default=300, help="meters streamed by the load generator"
    )
    p.add_argument("--intervals", type=at_least(1), default=3, help="1-minute intervals per meter")
    p.add_argument("--group", type=at_least(2), default=200, help="meters in the aggregation group")
    p.add_argument("--key-bits", type=int, default=3072)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--key-file", type=Path, default=None, help=argparse.SUPPRESS)


# -- the load generator (a separate process) -------------------------------------------------


def _loadgen(args: argparse.Namespace) -> int:
    from privmeter.net.transport import connect
    from privmeter.parties.meter import MeterEncryptor
    from privmeter.protocol.records import Receipt, make_record

    if args.key_file is None:
        raise ConfigError("the load generator needs --key-file")
    pk = PaillierPrivateKey.from_json(args.key_file.read_text(), min_bits=256).public_key
    enc = MeterEncryptor(pk)
    rng = random.Random(args.seed)
    keys = [_meter_key(args.seed, i) for i in range(args.meters)]
    t0 = time.process_time()
    batches = [
        [
            make_record(
                keys[i], f"b{i:06d}", T0 + t, pk, enc.encrypt(rng.randrange(-500, 3000), rng)
            )
            for t in range(args.intervals)
        ]
        for i in range(args.meters)
    ]
    prep = time.process_time() - t0
    total = args.meters * args.intervals

    async def main() -> float:
        got = 0
        done = asyncio.Event()

        def on_push(_peer: str, msg: Any) -> list[Any]:
            nonlocal got
            if isinstance(msg, Receipt):
                got += 1
                if got == total:
                    done.set()
            return []

        he = _headend_key(args.seed).verify_key
        conns = []
        for i in range(args.meters):
            conns.append(await connect("127.0.0.1", args.port, keys[i], he, handler=on_push))
        print("READY", flush=True)
        w0 = time.perf_counter()
        for t in range(args.intervals):
            for i, c in enumerate(conns):
                await c.send(batches[i][t])
        await asyncio.wait_for(done.wait(), 600)
        wall = time.perf_counter() - w0
        for c in conns:
            await c.close()
        return wall

    wall = asyncio.run(main())
    print(
        json.dumps(
            {"prepare_cpu_s": round(prep, 3), "stream_wall_s": round(wall, 3), "receipts": total}
        ),
        flush=True,
    )
    return 0


# -- the head-end side -------------------------------------------------------------------------


async def _serve(
    args: argparse.Namespace, sk: PaillierPrivateKey, key_file: Path, db: Path
) -> dict[str, Any]:
    from privmeter.net.handshake import TrustStore
    from privmeter.parties.headend import HeadEndCore
    from privmeter.parties.headend_service import NetLink, start_server
    from privmeter.parties.headend_store import HeadEndStore

    plan = _plan()
    core = HeadEndCore(
        _headend_key(args.seed),
        [plan],
        store=HeadEndStore(db),
        interval_seconds=60,
        window_back=10**6,
        min_key_bits=min(args.key_bits, 2048),
    )
    trust = TrustStore()
    proof = prove_wellformed(sk)
    for i in range(args.meters):
        k = _meter_key(args.seed, i)
        core.register(
            f"b{i:06d}",
            k.verify_key,
            sk.public_key,
            plan,
            wellformed_proof=proof,
            period_start=T0,
            period_intervals=10**6,
        )
        trust.add(k.verify_key, f"b{i:06d}")
    link = NetLink(core)
    link.interval, link.now = T0 + args.intervals, (T0 + args.intervals) * 60
    total = args.meters * args.intervals
    marks: dict[str, float] = {}
    orig = link.handle

    def handle(peer: str, msg: Any) -> Any:
        if "c0" not in marks:
            marks["c0"] = time.process_time()
        return orig(peer, msg)

    link.handle = handle  # type: ignore[method-assign]
    server = await start_server(core, link, trust, host="127.0.0.1", port=0, max_handshakes=512)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "privmeter",
            "bench",
            "headend",
            "--loadgen",
            "--meters",
            str(args.meters),
            "--intervals",
            str(args.intervals),
            "--seed",
            str(args.seed),
            "--port",
            str(server.port),
            "--key-file",
            str(key_file),
            stdout=asyncio.subprocess.PIPE,
        )
        if proc.stdout is None:
            raise TransportError("load generator process has no stdout pipe")
        lines = []
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 900)
            if not line:
                break
            lines.append(line.decode().strip())
            if lines[-1].startswith("{"):
                marks["c1"] = time.process_time()  # every receipt has arrived at the load generator
        await proc.wait()
    finally:
        await server.close()
    core.store.close()
    if "c1" not in marks or proc.returncode != 0 or core.calls["records"] != total:
        raise DependencyError(f"load generator failed: {lines[-3:]}")
    gen = json.loads(lines[-1])
    return {
        "cpu_s": marks["c1"] - marks["c0"],
        "records": total,
        "billing_core_cpu_s": core.cpu["billing"],
        "loadgen": gen,
        "transport": {"records_in": server.stats.records_in, "errors": dict(server.stats.errors)},
    }


def _micro(sk: PaillierPrivateKey, db: Path, seed: int) -> dict[str, float]:
    """Per-step CPU of the billing path on one record (microseconds)."""
    from privmeter.parties.headend_store import HeadEndStore
    from privmeter.parties.meter import MeterEncryptor
    from privmeter.protocol.codec import decode, encode
    from privmeter.protocol.records import (
        RECEIPT_CONTEXT,
        BillAccumulator,
        canonical,
        make_record,
        price_bits,
        record_bytes,
        verify_record,
    )

    pk = sk.public_key
    mk = _meter_key(seed, 0)
    rec = make_record(mk, "b000000", T0, pk, MeterEncryptor(pk).encrypt(1234, random.Random(1)))
    vk = VerifyKey(mk.verify_key.raw)
    data = encode(rec)
    out: dict[str, float] = {}
    out["codec_decode"] = cpu_per_call(lambda: decode(data)) * 1e6
    out["signature_verify"] = cpu_per_call(lambda: verify_record(rec, vk)) * 1e6
    acc = BillAccumulator(pk, price_bits(_plan()))
    c = int.from_bytes(rec.ciphertext, "big")

    def check_and_add() -> None:
        acc.add(pk.ciphertext_from_bytes(rec.ciphertext).value, 14228)

    out["ciphertext_check_and_accumulate"] = cpu_per_call(check_and_add) * 1e6
    store = HeadEndStore(db)
    counter = iter(range(10**9))

    def persist() -> None:
        i = next(counter)
        store.find_record("b000000", i, "energy", "")
        store.get_account("b000000", 0)
        store.commit_record(
            meter_id="b000000",
            interval=i,
            kind="energy",
            event_id="",
            record=record_bytes(rec),
            period=0,
            count=i + 1,
            changed={"g14228": c},
            removed=(),
        )

    out["persistence_sqlite_wal_1_per_commit"] = cpu_per_call(persist) * 1e6

    def persist_batch() -> None:  # what the service does: group commit of up to MAX_BATCH records
        with store.batch():
            for _ in range(_MICRO_BATCH):
                persist()

    out["persistence_sqlite_wal"] = cpu_per_call(persist_batch) / _MICRO_BATCH * 1e6
    store.close()
    he = _headend_key(seed)
    payload = canonical("b000000", T0, "energy", "", b"x" * 32, 1, b"y" * 32)
    out["receipt_sign"] = cpu_per_call(lambda: he.sign(RECEIPT_CONTEXT, payload)) * 1e6
    return out


def _aggregation_us(n: int, intervals: int = 4) -> float:
    """Head-end CPU per meter per interval of masked aggregation (meters' work excluded)."""
    from privmeter.protocol.codec import encode
    from privmeter.sim.aggregation_group import make_group

    g = make_group(n, min_survivors=min(5, n))
    g.setup()
    he = g.headend
    cpu = 0.0
    for _ in range(intervals + 2):
        c0 = time.process_time()
        starts = he.open_interval()
        cpu += time.process_time() - c0
        t = he.current
        answers = [encode(g.meters[m].handle_start(encode(s), 100)) for m, s in starts.items()]
        c0 = time.process_time()
        for a in answers:
            he.handle_input(a)
        he.close_interval()
        cpu += time.process_time() - c0
        _ = t
    return cpu / ((intervals + 2) * n) * 1e6


def run(args: argparse.Namespace) -> int:
    if args.loadgen:
        return _loadgen(args)
    with progress() as bar, tempfile.TemporaryDirectory(prefix="privmeter-bench-") as tmp:
        task = bar.add_task("household key", total=3)
        _, sk = generate_keypair(
            args.key_bits, rng=random.Random(args.seed), insecure_for_tests=args.key_bits < 2048
        )
        key_file = Path(tmp) / "household.json"
        key_file.write_text(sk.to_json())
        os.chmod(key_file, 0o600)
        bar.update(task, description=f"{args.meters:,} meters streaming to the head-end over TCP")
        served = asyncio.run(_serve(args, sk, key_file, Path(tmp) / "headend.db"))
        bar.update(task, advance=1, description="per-reading micro-benchmarks")
        micro = _micro(sk, Path(tmp) / "micro.db", args.seed)
        bar.update(task, advance=1, description="aggregation share")
        agg = _aggregation_us(min(args.group, 1000))
        bar.advance(task)
    billing_us = served["cpu_s"] / served["records"] * 1e6
    core_us = served["billing_core_cpu_s"] / served["records"] * 1e6
    total_us = billing_us + agg
    result = {
        "meters_per_core_at_1min": int(60e6 / total_us),
        "per_reading_us": {
            "total": round(total_us, 1),
            "billing_end_to_end_over_tcp": round(billing_us, 1),
            "billing_core": round(core_us, 1),
            "transport_aead_framing_codec": round(billing_us - core_us, 1),
            "aggregation_headend_share": round(agg, 1),
            **{k: round(v, 1) for k, v in micro.items()},
        },
        "records": served["records"],
        "meters": args.meters,
        "key_bits": args.key_bits,
        "aggregation_group": min(args.group, 1000),
        "loadgen": served["loadgen"],
        "transport": served["transport"],
        "target": 100_000,
    }
    rows = [[k, f"{v}"] for k, v in result["per_reading_us"].items()]
    rows.insert(0, ["meters per core at 1 min", str(result["meters_per_core_at_1min"])])
    emit(
        result,
        as_json=args.json,
        title="head-end core: CPU per reading (us)",
        rows=rows,
        columns=["what", "value"],
    )
    return 0
