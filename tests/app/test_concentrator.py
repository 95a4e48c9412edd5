"""A feeder behind a data concentrator, as separate processes (issue 13, item 3).

One head-end, one data concentrator for feeder-1 and four households on the
wall clock with 3-second intervals, each party with its own state directory
and keys.  The utility lists the concentrator's key in headend.toml; the
concentrator pins the head-end's key; households enrol directly with their
tickets, then two connect through the concentrator (``[concentrator]`` in
household.toml; its key comes from the head-end's signed enrolment) and two
directly.  Mid-run the concentrator is stopped and restarted.

Checks: every unmasked total is exactly the sum of the true readings of its
survivors (all four when nobody was missing); a billing period is paid by all
four, every bill equal to the bill recomputed from the true readings and
accepted by an offline audit; the households behind the concentrator really
went through it (its relayed-message counters, their logs); the concentrator
refuses a key outside its feeder's roster; it keeps only its key and the
signed roster (no household secret); each household's paid periods are in
its state.db.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from pathlib import Path

import pytest
from tests.procs import csv_household as _csv_household
from tests.procs import free_port as _free_port
from tests.procs import get as _get
from tests.procs import headend_config, write_config
from tests.procs import metric as _metric
from tests.procs import query as _query
from tests.procs import run_cli as _run
from tests.procs import spawn as _spawn
from tests.procs import stop as _stop
from tests.procs import wait_for as _wait

from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import UnknownParty
from privmeter.grid.tariff.plan_toml import load_plan
from privmeter.net.transport import connect
from privmeter.parties.enrolment import verify_doc
from privmeter.parties.headend_store import HeadEndStore
from privmeter.parties.registry import Registry
from privmeter.protocol.codec import decode
from privmeter.protocol.records import record_from_bytes
from privmeter.protocol.settlement import BillProof, Statement, audit

from .test_pilot import _all_bytes, _secrets_of

pytestmark = pytest.mark.slow

PLAN = Path(__file__).with_name("plan-3s-4.toml")
IV = 3
N_HOMES = 4
BEHIND = (2, 3)  # these households connect through the concentrator
PERIOD = 4  # intervals per billing period (12 s)


def _key_of(init_output: str) -> str:
    return next(
        line.split()[-1] for line in init_output.splitlines() if line.startswith("public key:")
    )


def test_feeder_behind_a_concentrator(tmp_path, capsys):
    plan = load_plan(PLAN)
    he_dir, dc_dir = tmp_path / "headend", tmp_path / "concentrator"
    port, dc_port, dc_http = _free_port(), _free_port(), _free_port()
    he_key = _key_of(_run(["init", "headend", "--dir", str(he_dir)], capsys))
    dc_key = _key_of(_run(["init", "concentrator", "--dir", str(dc_dir)], capsys))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    headend_config(
        he_dir,
        listen={"port": port},
        billing={"plans": [str(PLAN)], "period_intervals": PERIOD, "start": today},
        aggregation={"round_timeout_s": 1.5, "min_survivors": 3},
        concentrators={"feeder-1": dc_key},
        operations={"http_port": 0},
    )
    write_config(
        dc_dir,
        "concentrator",
        listen={"port": dc_port},
        headend={"port": port, "key": he_key},
        operations={"http_port": dc_http},
    )
    he_log, dc_log = he_dir / "headend.log", dc_dir / "concentrator.log"
    procs = {"he": _spawn(["headend", "--config", str(he_dir / "headend.toml")], he_log)}
    now = int(time.time())
    truth: dict[str, dict[int, int]] = {}
    homes = []
    try:
        _wait(lambda: b"listening" in he_log.read_bytes(), 30, "the head-end to listen")
        for i in range(N_HOMES):
            mid = f"home-{i}"
            d = tmp_path / mid
            rng = random.Random(i)
            truth[mid] = {t: rng.randint(0, 400) for t in range(now // IV - 5, now // IV + 60)}
            via = {"concentrator": {"host": "127.0.0.1", "port": dc_port}} if i in BEHIND else {}
            _csv_household(d, mid, truth[mid], IV, "pilot-3s-4", port, capsys, **via)
            ticket = _run(
                ["headend", "invite", "--config", str(he_dir / "headend.toml"), "--meter", mid],
                capsys,
            ).strip()
            assert "group feeder-1" in _run(
                ["enrol", "--config", str(d / "household.toml"), "--ticket", ticket], capsys
            )
            homes.append(d)
        procs["dc"] = _spawn(
            ["concentrator", "--config", str(dc_dir / "concentrator.toml")], dc_log
        )
        for i, d in enumerate(homes):
            procs[f"home-{i}"] = _spawn(
                ["household", "--config", str(d / "household.toml")], d / "household.log"
            )
        db = he_dir / "headend.db"

        def full_totals() -> int:
            return len(
                _query(
                    db, f"SELECT 1 FROM he_totals WHERE survivors = {N_HOMES} AND total IS NOT NULL"
                )
            )

        def paid_by_all() -> set[int]:
            got: dict[int, int] = {}
            for (p,) in _query(db, "SELECT period FROM he_settlements WHERE kind = 'paid'"):
                got[p] = got.get(p, 0) + 1
            return {p for p, c in got.items() if c == N_HOMES}

        _wait(lambda: full_totals() >= 1, 40, "a total of all four households")
        # restart the concentrator: its meters come back through the new one
        _stop(procs["dc"])
        assert procs["dc"].returncode == 0  # SIGTERM: a clean stop
        procs["dc"] = _spawn(
            ["concentrator", "--config", str(dc_dir / "concentrator.toml")], dc_log
        )
        n = full_totals()
        _wait(lambda: full_totals() > n, 40, "a full total after the concentrator restart")
        _wait(lambda: bool(paid_by_all()), 40, "a billing period paid by all four households")
        # operations: the concentrator's health and metrics
        status, body = _get(dc_http, "/healthz")
        health = json.loads(body)
        assert status == 200 and health["upstream"] is True and health["meters"] == N_HOMES, health
        assert health["connected"] == len(BEHIND), health
        metrics = _get(dc_http, "/metrics")[1].decode()
        assert _metric(metrics, 'privmeter_relayed_messages_total{direction="up"}') > 0
        assert _metric(metrics, 'privmeter_relayed_messages_total{direction="down"}') > 0
        assert _metric(metrics, "privmeter_roster_meters") == N_HOMES
        # a key outside the feeder's roster is refused at the handshake
        with pytest.raises(UnknownParty):
            asyncio.run(
                connect("127.0.0.1", dc_port, SigningKey.generate(), VerifyKey.from_hex(dc_key))
            )
    finally:
        for p in procs.values():
            _stop(p)
    assert procs["he"].returncode == 0 and procs["dc"].returncode == 0
    for i, d in enumerate(homes):
        via = "dc-feeder-1" if i in BEHIND else "head-end"
        assert f"connected to {via}".encode() in (d / "household.log").read_bytes(), d.name
    # -- exact totals, exact and audited bills ---------------------------------------------------
    store = HeadEndStore(he_dir / "headend.db")
    reg = Registry(he_dir / "registry.db")
    try:
        members = sorted(m.meter_id for m in reg.active())
        assert members == [f"home-{i}" for i in range(N_HOMES)]
        totals = [t for t in store.totals() if t.total is not None]
        assert sum(t.survivors == N_HOMES for t in totals) >= 2
        for t in totals:
            sums = {
                sum(truth[m][t.interval] for m in c)
                for c in itertools.combinations(members, t.survivors)
            }
            assert t.total in sums, (t, sorted(sums))
            if t.survivors == N_HOMES:
                assert t.total == sum(truth[m][t.interval] for m in members)
        log_records: dict[str, list] = {}  # type: ignore[type-arg]
        for _seq, rec_bytes, _chain in store.iter_log():
            rec = record_from_bytes(rec_bytes)
            log_records.setdefault(rec.meter_id, []).append(rec)
        paid = 0
        for mid, p, kind, answer, bill in store.settlements():
            assert kind == "paid", (mid, p, kind)
            m = reg.member(mid)
            assert m is not None
            st = decode(store.get_statement(mid, p), expect=Statement)
            d = homes[members.index(mid)]
            reported = dict(
                _query(
                    d / "state.db", f"SELECT interval, wh FROM readings WHERE meter_id = '{mid}'"
                )
            )
            mine = {t: wh for t, wh in reported.items() if st.start <= t < st.end}
            assert all(truth[mid][t] == wh for t, wh in mine.items())
            assert bill == sum(
                wh * plan.tariff.price_at(t, IV, None) for t, wh in mine.items()
            ) + int(plan.fixed_charge(range(st.start, st.end)))
            rep = audit(
                st,
                log_records.get(mid, []),
                plan,
                None,
                decode(answer, expect=BillProof),
                headend_key=VerifyKey.from_hex(he_key),
                meter_key=m.meter_key,
                household_pk=m.household_pk(2048),
            )
            assert rep.bill == bill
            # the household's own record of the proof it gave (never pays the period twice)
            assert _query(
                d / "state.db", f"SELECT 1 FROM paid WHERE meter_id = '{mid}' AND period = {p}"
            ), (mid, p)
            paid += 1
        assert paid >= N_HOMES
    finally:
        store.close()
        reg.close()
    # -- what the concentrator keeps: its key, its config, the signed roster; no household secret
    assert sorted(f.name for f in dc_dir.iterdir()) == [
        "concentrator.key.json",
        "concentrator.log",
        "concentrator.pub.json",
        "concentrator.toml",
        "roster.json",
    ]
    saved = json.loads((dc_dir / "roster.json").read_text())
    roster = verify_doc(
        VerifyKey.from_hex(he_key), saved["doc"], bytes.fromhex(saved["signature"]), kind="roster"
    )
    assert sorted(roster["members"]) == members and roster["concentrator"] == dc_key
    dc_bytes = _all_bytes(dc_dir)
    for d in homes:
        assert not any(s in dc_bytes for s in _secrets_of(d)), d.name
    assert oct((dc_dir / "roster.json").stat().st_mode & 0o777) == "0o600"
