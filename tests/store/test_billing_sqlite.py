"""The SQLite (WAL) billing store: same results as memory, append-only, versioned, crash-safe."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest

from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ReplayedMessage, StoreError
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.tariffs import Tariff
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import (
    BillAccumulator,
    make_record,
    price_bits,
    record_bytes,
    record_from_bytes,
)
from privmeter.store.billing_store import GENESIS, MemoryBillingStore, chain_step
from privmeter.store.sqlite import SCHEMA_VERSION, SqliteBillingStore, read_log

DAY0 = 1699920000 // 900

PLAN_SRC = """
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.tariffs import Tariff
PLAN = Plan(plan_id="t-flat", name="Flat", currency="GBP", interval_seconds=900,
            tariff=Tariff(kind="flat", price=14228), standing_charge_per_day=45_000)
"""


def flat_plan() -> Plan:
    return Plan(
        plan_id="t-flat",
        name="Flat",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="flat", price=14228),
        standing_charge_per_day=45_000,
    )


def _ledger(store, keys, register: bool = True) -> BillingLedger:
    pk, sk = keys
    ledger = BillingLedger(
        SigningKey.from_seed(b"h" * 32), [flat_plan()], store=store, min_key_bits=512
    )
    if register:
        ledger.register(
            "m1",
            SigningKey.from_seed(b"m" * 32).verify_key,
            pk,
            flat_plan(),
            wellformed_proof=prove_wellformed(sk),
            period_start=DAY0,
            period_intervals=96,
        )
    return ledger


def _records(pk, n: int, seed: int = 3):
    r = random.Random(seed)
    meter = SigningKey.from_seed(b"m" * 32)
    readings = {DAY0 + i: r.randint(-500, 2000) for i in range(n)}
    recs = [make_record(meter, "m1", t, pk, pk.encrypt(x, rng=r)) for t, x in readings.items()]
    return readings, recs


def test_sqlite_matches_memory_and_survives_reopen(paillier_small, tmp_path: Path) -> None:
    pk, sk = paillier_small
    readings, recs = _records(pk, 96)
    mem = _ledger(MemoryBillingStore(), paillier_small)
    db = tmp_path / "b.sqlite"
    disk = _ledger(SqliteBillingStore(db), paillier_small)
    for rec in recs[:50]:
        assert mem.receive(rec, current_interval=rec.interval) == disk.receive(
            rec, current_interval=rec.interval
        )
    disk.store.close()
    disk = _ledger(
        SqliteBillingStore(db), paillier_small, register=False
    )  # restart: registration is persisted
    with pytest.raises(ReplayedMessage):
        disk.receive(recs[10], current_interval=recs[10].interval)
    for rec in recs[50:]:
        assert mem.receive(rec, current_interval=rec.interval) == disk.receive(
            rec, current_interval=rec.interval
        )
    a, b = mem.statement("m1", 0, now=5), disk.statement("m1", 0, now=5)
    assert a == b
    assert sk.decrypt(pk.ciphertext_from_bytes(b.bill_ciphertext)) == flat_plan().total_charge(
        readings, range(DAY0, DAY0 + 96)
    )
    disk.store.close()
    disk = _ledger(SqliteBillingStore(db), paillier_small, register=False)
    assert disk.statement("m1", 0, now=99) == b  # statements are stored, issued once
    assert [row[1] for row in read_log(db)] == [row[1] for row in mem.store.iter_log()]
    disk.store.close()


def test_log_is_append_only_and_schema_versioned(paillier_small, tmp_path: Path) -> None:
    pk, _ = paillier_small
    db = tmp_path / "b.sqlite"
    ledger = _ledger(SqliteBillingStore(db), paillier_small)
    _, recs = _records(pk, 2)
    ledger.receive(recs[0], current_interval=DAY0)
    ledger.store.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for stmt in ("UPDATE log SET record = x'00'", "DELETE FROM log"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(stmt)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema"):
        SqliteBillingStore(db)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a privmeter"):
        SqliteBillingStore(other)


CHILD = PLAN_SRC + textwrap.dedent("""
import sys
import msgpack
import json
from privmeter.crypto.paillier import PaillierPublicKey
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ReplayedMessage
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import record_from_bytes
from privmeter.store.sqlite import SqliteBillingStore

db, keyfile, recfile = sys.argv[1:4]
keys = json.loads(open(keyfile).read())
pk = PaillierPublicKey.from_dict(keys["pk"], min_bits=512)
store = SqliteBillingStore(db)
ledger = BillingLedger(SigningKey.from_seed(b"h" * 32), [PLAN], store=store, min_key_bits=512)
if store.get_meter("m1") is None:
    ledger.register("m1", SigningKey.from_seed(b"m" * 32).verify_key, pk, PLAN,
                    wellformed_proof=keys["proof"], period_start=DAY0_, period_intervals=96)
print("ready", flush=True)
for data in msgpack.unpackb(open(recfile, "rb").read()):
    rec = record_from_bytes(data)
    try:
        receipt = ledger.receive(rec, current_interval=rec.interval)
    except ReplayedMessage:
        continue
    print(receipt.seq, rec.interval, flush=True)
print("done", flush=True)
""").replace("DAY0_", str(DAY0))


def _check_consistent(db: Path, pk) -> int:
    store = SqliteBillingStore(db)
    try:
        head = GENESIS
        logged = []
        for seq, rec, chain in store.iter_log():
            head = chain_step(head, rec)
            assert chain == head, f"hash chain broken at {seq}"
            logged.append(record_from_bytes(rec))
        count, cells = store.get_account("m1", 0) or (0, {})
        assert count == len(logged)
        acc = BillAccumulator(pk, price_bits(flat_plan()))
        for rec in logged:
            acc.add(pk.ciphertext_from_bytes(rec.ciphertext).value, 14228)
        assert BillAccumulator(pk, price_bits(flat_plan()), cells).value() == acc.value()
        return len(logged)
    finally:
        store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_stream_loses_no_acknowledged_record(paillier_small, tmp_path: Path) -> None:
    pk, sk = paillier_small
    readings, recs = _records(pk, 96, seed=8)
    db, keyfile, recfile = tmp_path / "b.sqlite", tmp_path / "pk.json", tmp_path / "recs.bin"
    keyfile.write_text(json.dumps({"pk": pk.to_dict(), "proof": prove_wellformed(sk)}))
    recfile.write_bytes(msgpack.packb([record_bytes(r) for r in recs]))
    cmd = [sys.executable, "-c", CHILD, str(db), str(keyfile), str(recfile)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    acked: list[int] = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        while len(acked) < 40:
            line = child.stdout.readline().split()
            acked.append(int(line[1]))
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: the child is inside receive()
    finally:
        child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    n = _check_consistent(db, pk)
    assert n >= len(acked)
    store = SqliteBillingStore(db)
    try:
        for t in acked:  # every acknowledged record is in the log, byte for byte
            assert store.find_record("m1", t, "energy", "") is not None
    finally:
        store.close()
    # restart and finish the stream: replays of logged records are refused, the rest accepted
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=True)
    assert out.stdout.splitlines()[-1] == "done"
    assert _check_consistent(db, pk) == 96
    store = SqliteBillingStore(db)
    ledger = BillingLedger(
        SigningKey.from_seed(b"h" * 32), [flat_plan()], store=store, min_key_bits=512
    )
    st_ = ledger.statement("m1", 0, now=0)
    assert sk.decrypt(pk.ciphertext_from_bytes(st_.bill_ciphertext)) == flat_plan().total_charge(
        readings, range(DAY0, DAY0 + 96)
    )
    store.close()
