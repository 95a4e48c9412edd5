"""A pilot as separate processes: one head-end, six households, real time (issue 13's done-when test).

Each party has its own state directory and generates its own keys
(``privmeter init``); the utility invites each meter, each household enrols
with its one-time ticket over the transport; then the head-end and six
household services run on the wall clock with 3-second intervals.  One
household reads DSMR v5 P1 telegrams from a TCP bridge (synthesised for the
current time from the example telegram in tests/data), five read CSV exports.
Mid-run one household and then the head-end are stopped and restarted.  The
run ends when a billing period has closed and every household has paid it.

Checks: every unmasked total equals the sum of the true readings of some
set of ``survivors`` households (all six when nobody was missing); every
paid bill equals the bill recomputed here from the true readings, and an
offline audit (no secret key) of the head-end's signed log and statement
accepts the proof; the head-end's whole state (databases, WAL, log, files)
contains no household Paillier secret (p, q, lambda) and no meter signing
seed, and no two parties' state directories share a secret.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.procs import free_port as _free_port
from tests.procs import get as _get
from tests.procs import headend_config, write_config
from tests.procs import metric as _metric
from tests.procs import query as _query
from tests.procs import run_cli as _run
from tests.procs import spawn as _spawn
from tests.procs import stop as _stop
from tests.procs import wait_for as _wait

from privmeter.cli import main
from privmeter.grid.devices.csvsource import write_csv_readings
from privmeter.grid.devices.source import IntervalReading
from privmeter.grid.synthetic.p1_synth import synthesize_telegrams
from privmeter.grid.tariff.plan_toml import load_plan
from privmeter.parties.headend_store import HeadEndStore
from privmeter.parties.registry import Registry
from privmeter.protocol.codec import decode
from privmeter.protocol.records import record_from_bytes
from privmeter.protocol.settlement import BillProof, Statement, audit

pytestmark = pytest.mark.slow

PLAN = Path(__file__).with_name("plan-3s.toml")
IV = 3
N_HOMES = 6
P1_HOME = 0
RESTART_HOME = 2
PERIOD = 8  # intervals per billing period (24 s)


@contextlib.contextmanager
def _p1_bridge(data: bytes) -> Iterator[int]:
    """A one-connection TCP P1 bridge (like ser2net) sending ``data``."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            with conn:
                conn.sendall(data)
                time.sleep(120)  # keep the line open, as a meter does

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def _telegrams(test_data: Path, start: int, seconds: int) -> tuple[bytes, dict[int, int]]:
    with open(test_data / "dsmr" / "v5.txt", newline="", encoding="latin-1") as f:
        template = f.read()
    rng = random.Random(13)
    powers = [rng.randint(0, 4000) for _ in range(seconds)]
    tel = list(
        synthesize_telegrams(
            template, start_unix=start, power_w=powers, step_s=1, import_wh=4_426, export_wh=2_444
        )
    )
    net = {t.unix: t.import_wh - t.export_wh for t in tel}
    first = -(-start // IV)
    truth = {t: net[(t + 1) * IV] - net[t * IV] for t in range(first, (start + seconds) // IV - 1)}
    return b"".join(t.text.encode("latin-1") for t in tel), truth


def _secrets_of(d: Path) -> list[bytes]:
    """Every secret of a party, in the encodings it could leak in (hex, decimal, raw bytes)."""
    out: list[bytes] = []
    for f in d.glob("*.key.json"):
        doc = json.loads(f.read_text())
        if "signing_seed" in doc:
            seed = bytes.fromhex(doc["signing_seed"])
            out += [seed, seed.hex().encode()]
        sk = doc.get("paillier_private_key")
        if sk is not None:
            from privmeter.crypto.paillier import PaillierPrivateKey

            key = PaillierPrivateKey.from_dict(sk)
            for v in (key.p, key.q, math.lcm(key.p - 1, key.q - 1)):  # p, q, lambda
                out += [
                    str(v).encode(),
                    format(v, "x").encode(),
                    v.to_bytes((v.bit_length() + 7) // 8, "big"),
                ]
    return out


def _all_bytes(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file())


def test_pilot_six_households_real_time(tmp_path, capsys, test_data):
    plan = load_plan(PLAN)
    he_dir = tmp_path / "headend"
    port, he_http, hh_http = _free_port(), _free_port(), _free_port()
    _run(["init", "headend", "--dir", str(he_dir)], capsys)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    headend_config(
        he_dir,
        listen={"port": port},
        billing={"plans": [str(PLAN)], "period_intervals": PERIOD, "start": today},
        aggregation={"round_timeout_s": 1.5},
        operations={"http_port": he_http},
    )
    assert oct(he_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((he_dir / "headend.key.json").stat().st_mode & 0o777) == "0o600"
    he_log = he_dir / "headend.log"
    he = _spawn(["headend", "--config", str(he_dir / "headend.toml")], he_log)
    procs: dict[str, subprocess.Popen[bytes]] = {"he": he}
    now = int(time.time())
    p1_data, p1_truth = _telegrams(test_data, now, 150)
    truth: dict[str, dict[int, int]] = {}
    homes: list[Path] = []
    try:
        with _p1_bridge(p1_data) as p1_port:
            _wait(lambda: b"listening" in he_log.read_bytes(), 30, "the head-end to listen")
            for i in range(N_HOMES):
                mid = f"home-{i}"
                d = tmp_path / mid
                _run(
                    ["init", "household", "--dir", str(d), "--meter-id", mid, "--key-bits", "2048"],
                    capsys,
                )
                if i == P1_HOME:
                    source = f"p1-tcp:127.0.0.1:{p1_port}?spec=v5&max_boundary_lag_s=1&reconnect_delay_s=none"
                    truth[mid] = p1_truth
                else:
                    rng = random.Random(i)
                    truth[mid] = {
                        t: rng.randint(0, 400) for t in range(now // IV - 5, now // IV + 60)
                    }
                    write_csv_readings(
                        d / "readings.csv",
                        [IntervalReading(interval=t, energy_wh=wh) for t, wh in truth[mid].items()],
                        IV,
                    )
                    source = f"csv:{d / 'readings.csv'}"
                write_config(
                    d,
                    "household",
                    source=source,
                    plan="pilot-3s",
                    clock_skew_s=1,
                    headend={"port": port},
                    operations={"http_port": hh_http if i == 1 else 0},
                )
                ticket = _run(
                    ["headend", "invite", "--config", str(he_dir / "headend.toml"), "--meter", mid],
                    capsys,
                ).strip()
                assert ticket.startswith("privmeter-enrol/1:" + mid + ":")
                out = _run(
                    ["enrol", "--config", str(d / "household.toml"), "--ticket", ticket], capsys
                )
                assert "group feeder-1" in out
                # a ticket works once
                assert (
                    main(
                        [
                            "enrol",
                            "--config",
                            str(d / "household.toml"),
                            "--ticket",
                            ticket,
                            "--force",
                        ]
                    )
                    == 2
                )
                assert "privmeter enrol: error:" in capsys.readouterr().err
                homes.append(d)
            for i, d in enumerate(homes):
                procs[f"home-{i}"] = _spawn(
                    ["household", "--config", str(d / "household.toml")], d / "household.log"
                )
            db = he_dir / "headend.db"

            def full_totals() -> int:
                return len(
                    _query(db, "SELECT 1 FROM he_totals WHERE survivors = 6 AND total IS NOT NULL")
                )

            def paid_periods() -> dict[int, int]:
                got: dict[int, int] = {}
                for (p,) in _query(db, "SELECT period FROM he_settlements WHERE kind = 'paid'"):
                    got[p] = got.get(p, 0) + 1
                return got

            _wait(lambda: full_totals() >= 1, 40, "a total of all six households")
            # restart one household (its readings and ledgers are in its state.db)
            _stop(procs["home-2"])
            assert procs["home-2"].returncode == 0  # SIGTERM: a clean stop
            time.sleep(2 * IV)
            procs["home-2"] = _spawn(
                ["household", "--config", str(homes[RESTART_HOME] / "household.toml")],
                homes[RESTART_HOME] / "household.log",
            )
            n = full_totals()
            _wait(lambda: full_totals() > n, 40, "a full total after the household restart")
            # restart the head-end
            _stop(he)
            assert he.returncode == 0
            procs["he"] = he = _spawn(["headend", "--config", str(he_dir / "headend.toml")], he_log)
            done_before = {p for p, c in paid_periods().items() if c == N_HOMES}
            n = full_totals()
            _wait(lambda: full_totals() > n, 40, "a full total after the head-end restart")

            _wait(
                lambda: any(
                    c == N_HOMES and p not in done_before for p, c in paid_periods().items()
                ),
                60,
                "a billing period paid by all six households after the head-end restart",
            )
            # operations: health and Prometheus metrics of the head-end and of a household
            status, body = _get(he_http, "/healthz")
            assert status == 200 and json.loads(body)["members"] == N_HOMES
            metrics = _get(he_http, "/metrics")[1].decode()
            for name in (
                "privmeter_connected_meters",
                'privmeter_intervals_total{result="unmasked"}',
                'privmeter_records_total{reason="",result="accepted"}',
                'privmeter_settlements_total{kind="paid"}',
            ):
                assert _metric(metrics, name) > 0, name
            status, body = _get(hh_http, "/healthz")
            assert status == 200 and json.loads(body)["connected"] is True
            metrics = _get(hh_http, "/metrics")[1].decode()
            assert _metric(metrics, "privmeter_readings_total") > 0
            assert _metric(metrics, 'privmeter_rounds_total{result="answered"}') > 0
            assert _get(he_http, "/nothing")[0] == 404
    finally:
        for p in procs.values():
            _stop(p)
    assert procs["he"].returncode == 0
    # -- exact totals --------------------------------------------------------------------------
    store = HeadEndStore(he_dir / "headend.db")
    reg = Registry(he_dir / "registry.db")
    try:
        members = [m.meter_id for m in reg.active()]
        assert sorted(members) == [f"home-{i}" for i in range(N_HOMES)]
        totals = [t for t in store.totals() if t.total is not None]
        assert len(totals) >= 3
        for t in totals:
            sums = {
                sum(truth[m].get(t.interval, 0) for m in c)
                for c in itertools.combinations(members, t.survivors)
            }
            assert t.total in sums, (t, sorted(sums))
            if t.survivors == N_HOMES:
                assert t.total == sum(truth[m][t.interval] for m in members)
        # -- every bill: proven, exact, audited without secrets --------------------------------
        assert any(c == N_HOMES for c in _count(store).values())
        log_records: dict[str, list] = {}  # type: ignore[type-arg]
        for _seq, rec_bytes, _chain in store.iter_log():
            rec = record_from_bytes(rec_bytes)
            log_records.setdefault(rec.meter_id, []).append(rec)
        from privmeter.crypto.signing import VerifyKey

        he_key = VerifyKey.from_hex(
            json.loads((he_dir / "headend.pub.json").read_text())["verify_key"]
        )
        for mid, p, kind, answer, bill in store.settlements():
            assert kind == "paid", (mid, p, kind)
            m = reg.member(mid)
            assert m is not None
            st = decode(store.get_statement(mid, p), expect=Statement)
            reported = dict(
                _query(
                    homes[members.index(mid)] / "state.db",
                    f"SELECT interval, wh FROM readings WHERE meter_id = '{mid}'",
                )
            )
            mine = {t: wh for t, wh in reported.items() if st.start <= t < st.end}
            assert all(
                truth[mid][t] == wh for t, wh in mine.items()
            )  # the meter reported the truth
            expect = sum(wh * plan.tariff.price_at(t, IV, None) for t, wh in mine.items())
            assert bill == expect + int(plan.fixed_charge(range(st.start, st.end)))
            rep = audit(
                st,
                log_records.get(mid, []),
                plan,
                None,
                decode(answer, expect=BillProof),
                headend_key=he_key,
                meter_key=m.meter_key,
                household_pk=m.household_pk(2048),
            )
            assert rep.bill == bill
    finally:
        store.close()
        reg.close()
    # -- secrets: none in the head-end's state; no two parties share one -------------------------
    he_bytes = _all_bytes(he_dir)
    for d in homes:
        secrets_ = _secrets_of(d)
        assert len(secrets_) == 2 + 9  # meter seed (2 forms), p, q, lambda (3 forms each)
        for s in secrets_:
            assert s not in he_bytes, f"a secret of {d.name} is in the head-end's state"
        for other in [*homes, he_dir]:
            if other != d:
                other_bytes = _all_bytes(other)
                assert not any(s in other_bytes for s in secrets_), (d.name, other.name)
        assert oct(d.stat().st_mode & 0o777) == "0o700"
        for f in ("meter.key.json", "household.key.json", "enrolment.json", "state.db"):
            assert oct((d / f).stat().st_mode & 0o777) == "0o600"
    for f in ("headend.key.json", "headend.db", "registry.db"):
        assert oct((he_dir / f).stat().st_mode & 0o777) == "0o600", f
    for s in _secrets_of(he_dir):
        for d in homes:
            assert s not in _all_bytes(d)
    assert os.path.getsize(he_log) > 0


def _count(store: HeadEndStore) -> dict[int, int]:
    got: dict[int, int] = {}
    for _m, p, kind, _a, _b in store.settlements():
        if kind == "paid":
            got[p] = got.get(p, 0) + 1
    return got
