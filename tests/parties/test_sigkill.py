"""SIGKILL the head-end at an arbitrary moment, restart it: nothing acknowledged is lost.

The child (``sigkill_child.py``) runs a real :class:`HeadEndCore` on a SQLite
WAL store and prints each record's receipt and each total after it is
committed.  We kill it with SIGKILL twice at seeded random moments, restart
on the same file, and check: every acknowledged record is in the log, every
acknowledged total is stored, the log's hash chain is intact, and the bill
settled from the restarted head-end's accumulator verifies against the
household's own readings of exactly the logged intervals.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from privmeter.parties.headend_store import HeadEndStore
from privmeter.protocol.records import record_from_bytes
from privmeter.protocol.settlement import BillProof, check_proof, records_from_log, settle
from privmeter.store.billing_store import GENESIS, chain_step

CHILD = Path(__file__).with_name("sigkill_child.py")
sys.path.insert(0, str(CHILD.parent))
import sigkill_child as child  # noqa: E402


def _run_and_kill(db: Path, start: int, lines_before_kill: int) -> list[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CHILD.parent), *sys.path]))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.split())
            if len(seen) >= lines_before_kill:
                os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the next record may be half-written
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return seen


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "headend.db"
    rng = random.Random(5)
    acked: list[list[str]] = []
    start = child.T0
    for _ in range(2):
        acked += _run_and_kill(db, start, rng.randint(15, 40))
        start = max(int(x[2]) for x in acked if x[0] == "R") + 1
    store = HeadEndStore(db)
    try:
        for kind, *rest in acked:
            if kind == "R":
                m, t = rest[0], int(rest[1])
                assert store.find_record(m, t, "energy", "") is not None, (m, t)
        totals = {t.interval: t.total for t in store.totals("g")}
        for kind, *rest in acked:
            if kind == "T":
                assert totals[int(rest[0])] == int(rest[1])
        head = GENESIS
        for _seq, rec, chain in store.iter_log():
            head = chain_step(head, rec)
            assert chain == head
    finally:
        store.close()
    # restart and settle: the accumulator must match the log exactly
    core = child.core(str(db))
    he, _, sk = child.keys()
    logged = {}
    for _seq, rec, _chain in core.store.iter_log():
        r = record_from_bytes(rec)
        logged.setdefault(r.meter_id, {})[r.interval] = child.reading(r.meter_id, r.interval)
    for m in child.METERS:
        st = core.statement(m, 0, now=10**9)
        plan = core.ledger.plans["economy7"]
        req = core.settle_request(st, 0)
        ans = settle(
            st,
            headend_key=he.verify_key,
            meter_key=child.keys()[1][m].verify_key,
            secret_key=sk,
            meter_id=m,
            plan=plan,
            period=range(st.start, st.end),
            readings=logged.get(m, {}),
            records=records_from_log(req.log),
        )
        assert isinstance(ans, BillProof), ans
        assert check_proof(st, ans, sk.public_key, plan) == ans.bill
    core.store.close()
