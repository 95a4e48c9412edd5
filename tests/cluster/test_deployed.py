"""The deployed head-end on a cluster: ``privmeter headend --config`` with ``[cluster]`` and ``[store]``.

The head-end runs as its own process with a private Ray (``address = "local"``,
two shards) on the tests' PostgreSQL server; four households (``privmeter init``,
``enrol`` with a one-time ticket, ``household --config``) connect to its front
door on the wall clock with 3-second intervals.  Mid-run the head-end is stopped
and started again: it resumes from PostgreSQL (its group stays on the shard that
holds its data).  The households stop while it restarts and start again when it listens
(their own reconnection back-off is tested in tests/app/test_pilot.py).
The run ends when a billing period that closed after the restart has been
paid by every household.

Checks: every unmasked total equals the sum of the true readings of some set of
``survivors`` households (all four when nobody was missing); every paid bill
equals the bill recomputed here from the true readings, and an offline audit of
the shard's signed log and statement accepts the proof.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

import pytest
from tests.procs import csv_household as _csv_household
from tests.procs import free_port as _free_port
from tests.procs import headend_config
from tests.procs import run_cli as _run
from tests.procs import spawn as _spawn
from tests.procs import stop as _stop
from tests.procs import wait_for as _wait

from privmeter.cluster.localpg import LocalPostgres
from privmeter.cluster.pgstore import PostgresHeadEndStore
from privmeter.crypto.signing import VerifyKey
from privmeter.grid.tariff.plan_toml import load_plan
from privmeter.parties.registry import Registry
from privmeter.protocol.codec import decode
from privmeter.protocol.records import record_from_bytes
from privmeter.protocol.settlement import BillProof, Statement, audit

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

PLAN = Path(__file__).with_name("plan-3s.toml")
IV = 3
HOMES = 4
PERIOD = 6  # intervals per billing period (18 s)
SHARDS = 2


def _rows(dsn: str, table: str, where: str = "") -> list[tuple]:  # type: ignore[type-arg]
    import psycopg

    out: list[tuple] = []  # type: ignore[type-arg]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(SHARDS):
            try:
                out += conn.execute(f"SELECT * FROM shard_{i}.{table} {where}").fetchall()
            except psycopg.errors.UndefinedTable:
                pass
    return out


def test_deployed_headend_on_a_cluster(pg: LocalPostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    plan = load_plan(PLAN)
    dsn = pg.create_database("deployed")
    he_dir = tmp_path / "headend"
    port = _free_port()
    _run(["init", "headend", "--dir", str(he_dir)], capsys)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    he_cfg = headend_config(
        he_dir,
        listen={"port": port},
        billing={"plans": [str(PLAN)], "period_intervals": PERIOD, "start": today},
        aggregation={"min_survivors": 3, "round_timeout_s": 1.5},
        operations={"http_port": 0, "log_format": "text"},
        cluster={"address": "local", "shards": SHARDS},
        store={"postgres": dsn},
    )
    he_log = he_dir / "headend.log"
    procs = {"he": _spawn(["headend", "--config", str(he_cfg)], he_log)}
    now = int(time.time())
    truth: dict[str, dict[int, int]] = {}
    homes: list[Path] = []

    def full_totals() -> int:
        return len(_rows(dsn, "he_totals", f"WHERE survivors = {HOMES} AND total IS NOT NULL"))

    def paid() -> dict[int, int]:
        got: dict[int, int] = {}
        for _m, p, kind, *_ in _rows(dsn, "he_settlements"):
            if kind == "paid":
                got[p] = got.get(p, 0) + 1
        return got

    try:
        for i in range(HOMES):  # while the head-end starts its cluster
            mid = f"home-{i}"
            d = tmp_path / mid
            rng = random.Random(i)
            truth[mid] = {t: rng.randint(0, 400) for t in range(now // IV - 5, now // IV + 100)}
            _csv_household(d, mid, truth[mid], IV, "cluster-3s", port, capsys)
            homes.append(d)
        _wait(
            lambda: b"listening" in he_log.read_bytes() or procs["he"].poll() is not None,
            90,
            "the head-end to listen",
            he_log,
        )
        assert procs["he"].poll() is None, he_log.read_text()[-2000:]
        for i, d in enumerate(homes):
            ticket = _run(
                ["headend", "invite", "--config", str(he_cfg), "--meter", f"home-{i}"], capsys
            ).strip()
            assert "group feeder-1" in _run(
                ["enrol", "--config", str(d / "household.toml"), "--ticket", ticket], capsys
            )
        for i, d in enumerate(homes):
            procs[f"home-{i}"] = _spawn(
                ["household", "--config", str(d / "household.toml")], d / "household.log"
            )
        _wait(lambda: full_totals() >= 1, 90, "a total of all four households", he_log)
        # restart the head-end: it resumes from PostgreSQL.  The households stop meanwhile and
        # start when it listens again (their state.db keeps what is unacknowledged): their own
        # reconnection back-off, up to 30 s, is tested in tests/app/test_pilot.py
        _stop(procs["he"])
        assert procs["he"].returncode == 0, he_log.read_text()[-2000:]
        for i in range(HOMES):
            _stop(procs[f"home-{i}"])
        listening = he_log.read_bytes().count(b"listening")
        procs["he"] = _spawn(["headend", "--config", str(he_cfg)], he_log)
        _wait(
            lambda: (
                he_log.read_bytes().count(b"listening") > listening
                or procs["he"].poll() is not None
            ),
            90,
            "the head-end to listen again",
            he_log,
        )
        for i, d in enumerate(homes):
            procs[f"home-{i}"] = _spawn(
                ["household", "--config", str(d / "household.toml")], d / "household.log"
            )
        done_before = {p for p, c in paid().items() if c == HOMES}
        n = full_totals()
        _wait(lambda: full_totals() > n, 90, "a full total after the head-end restart", he_log)
        _wait(
            lambda: any(c == HOMES and p not in done_before for p, c in paid().items()),
            90,
            "a billing period paid by all four households after the restart",
            he_log,
        )
    finally:
        for p in procs.values():
            _stop(p)
    assert procs["he"].returncode == 0
    text = he_log.read_text()
    assert (
        text.count(f"cluster up: {SHARDS} shards") == 2 and "1 groups restored" in text
    )  # the restart found it
    # -- exact totals, from the shards' schemas -------------------------------------------------
    stores = [PostgresHeadEndStore(dsn, schema=f"shard_{i}") for i in range(SHARDS)]
    reg = Registry(he_dir / "registry.db")
    try:
        members = sorted(m.meter_id for m in reg.active())
        assert members == [f"home-{i}" for i in range(HOMES)]
        holding = [s for s in stores if s.totals()]
        assert len(holding) == 1  # one group: one shard holds it, before and after the restart
        store = holding[0]
        totals = [t for t in store.totals() if t.total is not None]
        assert len(totals) >= 2  # one before, one after the restart
        for t in totals:
            sums = {
                sum(truth[m].get(t.interval, 0) for m in c)
                for c in itertools.combinations(members, t.survivors)
            }
            assert t.total in sums, (t, sorted(sums))
            if t.survivors == HOMES:
                assert t.total == sum(truth[m][t.interval] for m in members)
        # -- every bill: proven, exact, audited without secrets -------------------------------
        he_key = VerifyKey.from_hex(
            json.loads((he_dir / "headend.pub.json").read_text())["verify_key"]
        )
        settled = store.settlements()
        assert any(c == HOMES for c in paid().values())
        for mid, p, kind, answer, bill in settled:
            assert kind == "paid", (mid, p, kind)
            m = reg.member(mid)
            assert m is not None
            st = decode(store.get_statement(mid, p), expect=Statement)
            expect = sum(
                truth[mid][t] * plan.tariff.price_at(t, IV, None)
                for t in range(st.start, st.end)
                if store.records(mid, t, t + 1)
            )
            assert bill == expect + int(plan.fixed_charge(range(st.start, st.end)))
            log = [record_from_bytes(r) for r in store.records(mid, st.start, st.end)]
            rep = audit(
                st,
                log,
                plan,
                None,
                decode(answer, expect=BillProof),
                headend_key=he_key,
                meter_key=m.meter_key,
                household_pk=m.household_pk(2048),
            )
            assert rep.bill == bill
    finally:
        for s in stores:
            s.close()
        reg.close()
