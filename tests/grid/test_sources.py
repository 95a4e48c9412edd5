"""The --source registry, and real-meter sources feeding a neighbourhood total and a bill.

The end-to-end tests read three meters through ``open_source`` exactly as
``privmeter meter --source ...`` would: a DSMR v5 meter on a serial pty, a
Fluvius meter on a ser2net-style loopback socket (with an outage), and a CSV
meter.  Their readings feed the masked secure-aggregation protocol (run in
memory with two more meters: exact totals, the meter with a missing interval
dropped for it), a Paillier sum, and the head-end's
:class:`~privmeter.protocol.records.BillAccumulator` under a time-of-use
tariff; the household's decryption proof is verified with the public key
only, and the bill equals the one computed from the telegrams' registers.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import tty
from pathlib import Path

import pytest

from privmeter.crypto.paillier_proofs import prove_decryption, verify_decryption
from privmeter.errors import ConfigError
from privmeter.grid.devices.csvsource import write_csv_readings
from privmeter.grid.devices.dlms import DlmsSource
from privmeter.grid.devices.p1 import P1Source
from privmeter.grid.devices.source import IntervalReading, LoadSource
from privmeter.grid.sources import SCHEMES, open_source, parse_source_spec
from privmeter.grid.synthetic.p1_synth import synthesize_telegrams
from privmeter.protocol.records import BillAccumulator
from privmeter.sim.aggregation_group import make_group

IV = 900
B = 1_357_000_200 // IV * IV  # 2013-01-01, the LCL dynamic time-of-use year
K = B // IV
N = 4


# ------------------------------------------------------------------ parsing


def test_parse_specs():
    assert parse_source_spec("p1:/dev/ttyUSB0").target == "/dev/ttyUSB0"
    s = parse_source_spec("P1-TCP:meter.local:2001?spec=fluvius&tz=Europe/Brussels")
    assert (s.scheme, s.target, s.options) == (
        "p1-tcp",
        "meter.local:2001",
        {"spec": "fluvius", "tz": "Europe/Brussels"},
    )
    assert parse_source_spec("sim").target == ""


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("modbus:1.2.3.4", "unknown source scheme 'modbus'.*p1:/dev/ttyUSB0.*dlms:HOST"),
        ("", "empty --source"),
        ("p1:", "serial device missing"),
        ("p1-tcp:host", "port missing"),
        ("p1-tcp:host:99999", "1..65535"),
        ("p1-tcp:host:x", "must be an integer"),
        ("p1-tcp:[::1", "IPv6"),
        ("p1-tcp:h:1?bogus=1", "unknown option.*bogus"),
        ("p1-tcp:h:1?max_power_w=lots", "not a number"),
        ("p1-tcp:h:1?a=1&&", "malformed options"),
        ("csv:", "file path missing"),
        ("sim:abc", "seed must be an integer"),
        ("dlms:h?auth=lls", "password"),
        ("dlms:h?colour=red", "unknown DLMS option"),
    ],
)
def test_bad_specs_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        open_source(spec, interval_seconds=IV)


def test_every_scheme_is_documented():
    assert set(SCHEMES) == {"p1", "p1-tcp", "dlms", "csv", "sim"}


def test_dlms_spec_builds_settings(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("12345678")
    src = open_source(
        f"dlms:[::1]?auth=lls&password_file={pw}&client=32&profile=none",
        interval_seconds=IV,
        poll_s=5,
    )
    assert isinstance(src, DlmsSource) and isinstance(src, LoadSource)
    st = src.settings
    assert (st.host, st.port, st.client_address, st.password, st.profile_obis) == (
        "::1",
        4059,
        32,
        b"12345678",
        None,
    )


def test_csv_spec(tmp_path):
    rows = [
        IntervalReading(interval=K + k, energy_wh=e, power_w=None)
        for k, e in enumerate([120, -30, 0, 77])
    ]
    path = tmp_path / "m.csv"
    write_csv_readings(path, rows, IV)
    got = list(open_source(f"csv:{path}", interval_seconds=IV).readings())
    assert [r.energy_wh for r in got] == [120, -30, 0, 77]


def test_sim_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVMETER_CACHE", str(tmp_path))
    src = open_source("sim:5?days=1", interval_seconds=IV)
    got = list(src.readings())
    assert len(got) == 96 and all(isinstance(r.energy_wh, int) for r in got)


# ------------------------------------------------------------------ the neighbourhood


def _telegrams(test_data: Path, name: str, seed: int):
    with open(test_data / "dsmr" / f"{name}.txt", newline="", encoding="latin-1") as f:
        template = f.read()
    rng = random.Random(seed)
    powers = [rng.randint(-3000, 7000) for _ in range(N * IV // 10)]
    tel = list(
        synthesize_telegrams(
            template,
            start_unix=B,
            power_w=powers,
            tz="Europe/Amsterdam",
            import_wh=2_000_000,
            export_wh=300_000,
        )
    )
    net = {t.unix: t.import_wh - t.export_wh for t in tel}
    truth = [net[B + (k + 1) * IV] - net[B + k * IV] for k in range(N)]
    return tel, truth


def _tou_price(interval: int) -> int:
    """LCL dynamic ToU (milli-pence/kWh): High 16-19 h, Low 0-7 h, else Normal."""
    hour = (interval * IV // 3600) % 24
    return 67_200 if 16 <= hour < 19 else 3_990 if hour < 7 else 11_760


@pytest.fixture(scope="module")
def neighbourhood(test_data, tmp_path_factory):
    """Three meters read through ``open_source``: (readings per meter, truths per meter)."""
    tmp_path = tmp_path_factory.mktemp("nb")
    # meter A: DSMR v5 on a serial line (pty)
    tel_a, truth_a = _telegrams(test_data, "v5", 1)
    master, slave = os.openpty()
    tty.setraw(slave)
    src_a = open_source(
        f"p1:{os.ttyname(slave)}?reconnect_delay_s=none&read_timeout_s=0.2", interval_seconds=IV
    )

    def write_a():
        assert src_a.connected.wait(10)  # opening a serial port flushes its input
        os.write(master, b"".join(t.text.encode("latin-1") for t in tel_a))

    writer = threading.Thread(target=write_a, daemon=True)
    # meter B: Fluvius through a TCP bridge, silent for all of interval 2 (outage)
    tel_b, truth_b = _telegrams(test_data, "fluvius_v171", 2)
    sent_b = [t for t in tel_b if not B + 2 * IV <= t.unix < B + 3 * IV]
    srv = socket.create_server(("127.0.0.1", 0))

    def bridge():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"".join(t.text.encode("latin-1") for t in sent_b))

    server = threading.Thread(target=bridge, daemon=True)
    src_b = open_source(
        f"p1-tcp:127.0.0.1:{srv.getsockname()[1]}?reconnect_delay_s=none", interval_seconds=IV
    )
    # meter C: a CSV export
    truth_c = [311, 290, -45, 502]
    csv = tmp_path / "c.csv"
    write_csv_readings(
        csv, [IntervalReading(interval=K + k, energy_wh=e) for k, e in enumerate(truth_c)], IV
    )
    src_c = open_source(f"csv:{csv}", interval_seconds=IV)
    assert all(isinstance(s, LoadSource) for s in (src_a, src_b, src_c))

    writer.start()
    server.start()
    it_a = src_a.readings()
    try:
        got_a = [next(it_a) for _ in range(N)]
        got_b = list(src_b.readings())
    finally:
        assert isinstance(src_a, P1Source)
        src_a.close()
        list(it_a)
        writer.join(timeout=10)
        server.join(timeout=10)
        srv.close()
        os.close(master)
        os.close(slave)
    got_c = list(src_c.readings())
    return {"A": got_a, "B": got_b, "C": got_c}, {"A": truth_a, "B": truth_b, "C": truth_c}


def test_real_meter_readings_are_exact_and_never_invented(neighbourhood):
    got, truth = neighbourhood
    assert [r.energy_wh for r in got["A"]] == truth["A"]
    # the outage: boundary 2 and 3's start are unknown -> intervals 1, 2 missing, not invented
    assert [r.energy_wh for r in got["B"]] == [truth["B"][0], None, None, truth["B"][3]]
    assert [r.energy_wh for r in got["C"]] == truth["C"]
    for k in range(N):
        assert {g[k].interval for g in got.values()} == {K + k}


def test_neighbourhood_total_by_secure_aggregation(neighbourhood):
    """The real masked-aggregation protocol (in memory): exact totals, B dropped when missing."""
    got, _ = neighbourhood
    extra = {"D": [120, 80, 95, 60], "E": [-400, -350, 10, 0]}  # two more CSV-like meters
    values = {m: [r.energy_wh for r in g] for m, g in got.items()} | extra
    group = make_group(len(values), min_survivors=3, first_interval=K - 1, seed=8)
    ids = dict(zip(sorted(values), sorted(group.meters), strict=True))  # A..E -> meter ids
    group.setup()
    group.step(lambda mid, t: 0)  # enrolment interval K-1
    for k in range(N + 1):
        if k < N:
            missing = [ids[m] for m, v in values.items() if v[k] is None]
            group.step(
                lambda mid, t: {ids[m]: v for m, v in values.items()}[mid][t - K] or 0,
                no_reading=missing,
            )
        else:
            group.step(lambda mid, t: 0)  # flushes the last result
    results = {r.interval: r for r in group.results}
    for k in range(N):
        live = {m: v[k] for m, v in values.items() if v[k] is not None}
        r = results[K + k]
        assert r.total == (sum(live.values()),)
        assert set(r.dropped) == {ids[m] for m in values if m not in live}


def test_bill_from_p1_readings_verifies(neighbourhood, paillier_2048):
    """Meter A's readings billed by the head-end accumulator; proof checked with pk only."""
    pk, sk = paillier_2048
    got, truth = neighbourhood
    # the P1 readings also add up exactly under Paillier (the seed's aggregation variant)
    for k in (0, 3):
        live = [g[k].energy_wh for g in got.values() if g[k].energy_wh is not None]
        assert sk.decrypt(pk.sum(pk.encrypt(x) for x in live)) == sum(live)
    acc = BillAccumulator(pk, exp_bits=17)
    for r in got["A"]:
        acc.add(pk.encrypt(r.energy_wh).value, _tou_price(r.interval))
    bill_ct = pk.ciphertext(acc.value())
    bill, proof_r = prove_decryption(sk, bill_ct)
    verify_decryption(pk, bill_ct, bill, proof_r)
    assert bill == sum(x * _tou_price(K + k) for k, x in enumerate(truth["A"]))  # micro-pence
