"""The PostgreSQL billing store: same results as memory, group commit, append-only, one writer."""

from __future__ import annotations

import random

import psycopg
import pytest

from privmeter.cluster.localpg import LocalPostgres
from privmeter.cluster.pgstore import PostgresHeadEndStore
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ReplayedMessage, StoreError
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.tariffs import Tariff
from privmeter.parties.headend_store import StoredTotal
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import make_record
from privmeter.store.billing_store import MemoryBillingStore
from privmeter.store.postgres import SCHEMA_VERSION, PostgresBillingStore

DAY0 = 1699920000 // 900


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
        for m in ("m1", "m2"):
            ledger.register(
                m,
                SigningKey.from_seed(m.encode() * 16).verify_key,
                pk,
                flat_plan(),
                wellformed_proof=prove_wellformed(sk),
                period_start=DAY0,
                period_intervals=96,
            )
    return ledger


def _records(pk, n: int, seed: int = 3):
    r = random.Random(seed)
    out = []
    for m in ("m1", "m2"):
        key = SigningKey.from_seed(m.encode() * 16)
        out += [
            make_record(key, m, DAY0 + i, pk, pk.encrypt(r.randint(-500, 2000), rng=r))
            for i in range(n)
        ]
    return sorted(out, key=lambda rec: (rec.interval, rec.meter_id))


def test_postgres_matches_memory_in_batches_and_after_reopen(
    pg: LocalPostgres, schema: str, paillier_small
) -> None:
    pk, _ = paillier_small
    recs = _records(pk, 96)
    mem = _ledger(MemoryBillingStore(), paillier_small)
    db = _ledger(PostgresBillingStore(pg.dsn, schema=schema), paillier_small)
    for rec in recs[:20]:  # one transaction per record
        assert mem.receive(rec, current_interval=rec.interval) == db.receive(
            rec, current_interval=rec.interval
        )
    store = db.store
    assert isinstance(store, PostgresBillingStore)
    for i in range(20, 120, 25):  # group commit, with prefetch
        chunk = recs[i : i + 25]
        with store.batch():
            store.prefetch(r.slot for r in chunk)
            got = [db.receive(r, current_interval=r.interval) for r in chunk]
        assert got == [mem.receive(r, current_interval=r.interval) for r in chunk]
    store.close()
    db = _ledger(
        PostgresBillingStore(pg.dsn, schema=schema), paillier_small, register=False
    )  # restart
    with pytest.raises(ReplayedMessage):
        db.receive(recs[30], current_interval=recs[30].interval)
    with db.store.batch():  # a replay inside a batch is refused too (prefetched as present)
        db.store.prefetch([recs[31].slot])  # type: ignore[attr-defined]
        with pytest.raises(ReplayedMessage):
            db.receive(recs[31], current_interval=recs[31].interval)
    for rec in recs[120:]:
        assert mem.receive(rec, current_interval=rec.interval) == db.receive(
            rec, current_interval=rec.interval
        )
    for m in ("m1", "m2"):
        a, b = mem.statement(m, 0, now=5), db.statement(m, 0, now=5)
        assert a == b
    assert list(db.store.iter_log()) == list(mem.store.iter_log())
    db.store.close()


def test_failed_batch_leaves_nothing_and_caches_recover(
    pg: LocalPostgres, schema: str, paillier_small
) -> None:
    pk, _ = paillier_small
    recs = _records(pk, 4)
    db = _ledger(PostgresBillingStore(pg.dsn, schema=schema), paillier_small)
    store = db.store
    assert isinstance(store, PostgresBillingStore)
    head = store.log_head()
    with pytest.raises(RuntimeError), store.batch():
        for r in recs[:3]:
            db.receive(r, current_interval=r.interval)
        raise RuntimeError("crash before COMMIT")
    assert store.log_head() == head
    assert store.get_account("m1", 0) is None
    for r in recs:  # all accepted again: nothing of the failed batch was durable
        db.receive(r, current_interval=r.interval)
    assert store.log_head()[0] == len(recs)
    store.close()


def test_append_only_versioned_and_single_writer(
    pg: LocalPostgres, schema: str, paillier_small
) -> None:
    pk, _ = paillier_small
    db = _ledger(PostgresHeadEndStore(pg.dsn, schema=schema, lock_wait=0.5), paillier_small)
    rec = _records(pk, 1)[0]
    db.receive(rec, current_interval=rec.interval)
    with pytest.raises(StoreError, match="another writer"):
        PostgresBillingStore(pg.dsn, schema=schema, lock_wait=0.3)
    store = db.store
    assert isinstance(store, PostgresHeadEndStore)
    store.put_total(StoredTotal("g", 1, 1234, 5, 0))
    store.put_total(StoredTotal("g", 1, 1234, 5, 0))  # the same again: fine
    with pytest.raises(StoreError, match="another value"):
        store.put_total(StoredTotal("g", 1, 999, 5, 0))
    store.close()
    with psycopg.connect(pg.dsn, autocommit=True) as con:
        for stmt in ("UPDATE log SET record = '\\x00'", "DELETE FROM log"):
            with pytest.raises(psycopg.Error, match="append-only"):
                con.execute(f"SET search_path TO {schema}; {stmt}")
        con.execute(
            f"UPDATE {schema}.store_meta SET value = %s WHERE key = 'billing_schema'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(StoreError, match="schema"):
        PostgresBillingStore(pg.dsn, schema=schema)
    with pytest.raises(StoreError, match="schema name"):
        PostgresBillingStore(pg.dsn, schema="x; DROP TABLE log")
