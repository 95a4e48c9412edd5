"""The SQLite store's write-through caches (log head, accounts, settled periods) never disagree with the file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ReplayedMessage, StaleMessage
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.tariffs import Tariff
from privmeter.parties.headend_store import HeadEndStore
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import make_record
from privmeter.store.billing_store import MemoryBillingStore
from privmeter.store.sqlite import SqliteBillingStore

DAY0 = 1699920000 // 900
METER = SigningKey.from_seed(b"m" * 32)


def _plan() -> Plan:
    return Plan(
        plan_id="t-flat",
        name="Flat",
        currency="GBP",
        interval_seconds=900,
        tariff=Tariff(kind="flat", price=14228),
        standing_charge_per_day=45_000,
    )


def _ledger(store, keys) -> BillingLedger:
    pk, sk = keys
    ledger = BillingLedger(
        SigningKey.from_seed(b"h" * 32), [_plan()], store=store, min_key_bits=512
    )
    ledger.register(
        "m1",
        METER.verify_key,
        pk,
        _plan(),
        wellformed_proof=prove_wellformed(sk),
        period_start=DAY0,
        period_intervals=96,
    )
    return ledger


def _records(pk, n: int):
    r = random.Random(7)
    return [
        make_record(METER, "m1", DAY0 + i, pk, pk.encrypt(r.randint(-500, 2000), rng=r))
        for i in range(n)
    ]


class _Boom(Exception):
    pass


def test_rolled_back_batch_leaves_no_trace_in_the_caches(paillier_small, tmp_path: Path) -> None:
    pk, _ = paillier_small
    recs = _records(pk, 6)
    mem = _ledger(MemoryBillingStore(), paillier_small)
    disk = _ledger(HeadEndStore(tmp_path / "h.db"), paillier_small)
    store = disk.store
    assert isinstance(store, HeadEndStore)
    with store.batch():
        assert disk.receive(recs[0], current_interval=DAY0 + 5) == mem.receive(
            recs[0], current_interval=DAY0 + 5
        )
    with (
        pytest.raises(_Boom),
        store.batch(),
    ):  # accepted, then the whole batch rolls back: never acknowledged
        disk.receive(recs[1], current_interval=DAY0 + 5)
        disk.receive(recs[2], current_interval=DAY0 + 5)
        raise _Boom
    with store.batch():
        with pytest.raises(ReplayedMessage):  # a failing record inside a batch: its savepoint only
            disk.receive(recs[0], current_interval=DAY0 + 5)
        for rec in recs[1:]:
            assert disk.receive(rec, current_interval=DAY0 + 5) == mem.receive(
                rec, current_interval=DAY0 + 5
            )
    assert store.log_head() == mem.store.log_head() == (6, mem.store.log_head()[1])
    assert store.get_account("m1", 0) == mem.store.get_account("m1", 0)
    assert disk.statement("m1", 0, now=1) == mem.statement("m1", 0, now=1)
    store.close()
    fresh = HeadEndStore(tmp_path / "h.db")  # the file agrees with what the caches said
    assert fresh.log_head() == mem.store.log_head()
    assert fresh.get_account("m1", 0) == mem.store.get_account("m1", 0)
    fresh.close()


@pytest.mark.parametrize("cache_accounts", [0, 1])
def test_tiny_or_no_cache_gives_the_same_receipts_and_statements(
    paillier_small, tmp_path: Path, cache_accounts: int
) -> None:
    pk, _ = paillier_small
    recs = _records(
        pk, 100
    )  # periods 0 and 1, interleaved so a one-account cache evicts every time
    order = [r for pair in zip(recs[:4], recs[96:], strict=True) for r in pair] + recs[4:96]
    mem = _ledger(MemoryBillingStore(), paillier_small)
    disk = _ledger(
        SqliteBillingStore(tmp_path / "b.db", cache_accounts=cache_accounts), paillier_small
    )
    for rec in order:
        now = max(rec.interval, DAY0 + 4)
        assert disk.receive(rec, current_interval=now) == mem.receive(rec, current_interval=now)
    assert disk.statement("m1", 0, now=1) == mem.statement("m1", 0, now=1)
    late = make_record(METER, "m1", DAY0 + 3, pk, pk.encrypt(1, rng=random.Random(1)))
    with pytest.raises(StaleMessage, match="settled"):  # the settled-period cache saw the statement
        disk.receive(late, current_interval=DAY0 + 5)
    assert disk.statement("m1", 1, now=2) == mem.statement("m1", 1, now=2)
    disk.store.close()


def test_account_cache_evicts_the_least_recently_used_and_mirrors_changes() -> None:
    from privmeter.store.billing_store import AccountCache

    cache = AccountCache(2)
    cache.put("a", 1, 1, {"x": 5})
    cache.put("b", 1, 1, {"x": 6})
    assert cache.get("a", 1) == (1, {"x": 5})  # a is now the most recently used
    cache.put("c", 1, 1, {"x": 7})  # evicts b
    assert cache.get("b", 1) is None
    assert cache.meters() == {"a", "c"}
    got = cache.get("a", 1)
    assert got is not None
    got[1]["x"] = 99  # a copy: the cache is not edited
    cache.apply("a", 1, 2, {"y": 8}, ["x"])
    assert cache.get("a", 1) == (2, {"y": 8})
    cache.apply("z", 1, 1, {"y": 1}, [])  # not cached: stays uncached
    assert cache.get("z", 1) is None
    cache.clear()
    assert cache.meters() == set()
    off = AccountCache(0)
    off.put("a", 1, 1, {})
    assert off.get("a", 1) is None
