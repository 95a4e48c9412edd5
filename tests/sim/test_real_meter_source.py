"""A real meter in a simulated neighbourhood: a DSMR v5 P1 stream feeds one meter agent (issue 8).

Six households; ``m00003`` reads synthesized DSMR v5 telegrams (built from the
shared example telegram) through a loopback TCP P1 bridge (``p1-tcp:``).  The
truth for that meter is computed here from the registers the synthesizer
returns with each telegram (import/export differences at the interval
boundaries), independently of the P1 decoder; the other meters' truth is
their simulated load.  Totals must be exact and the P1 household's bill must
be proven and audited.  A telegram gap around a boundary makes the source
report two intervals missing: the meter sends no reading for them, is
counted as dropped, nothing is billed, and the totals stay exact.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from privmeter.cli import main
from privmeter.errors import ConfigError
from privmeter.grid.devices.source import IntervalReading
from privmeter.grid.synthetic.p1_synth import synthesize_telegrams
from privmeter.parties.meter_feed import MeterLoad, SourceReadings
from privmeter.sim.parties import main as parties_main
from privmeter.sim.runner import run_memory
from privmeter.sim.scenario import Scenario, attach_sources, build, parse_source_args

from ..conftest import tiny_scenario

IV = 900
N = 4  # intervals simulated
P1_METER = "m00003"


def _telegrams(
    test_data: Path, first: int, gap: range | None = None
) -> tuple[bytes, dict[int, int]]:
    """DSMR v5 stream covering intervals first..first+N-1; returns (bytes, truth per interval)."""
    with open(test_data / "dsmr" / "v5.txt", newline="", encoding="latin-1") as f:
        template = f.read()
    rng = random.Random(8)
    b0 = first * IV
    start = b0 - 30  # the stream starts mid-interval, before the first boundary
    powers = [rng.randint(-1500, 4000) for _ in range((30 + N * IV) // 10)]
    tel = list(
        synthesize_telegrams(
            template, start_unix=start, power_w=powers, import_wh=4_426, export_wh=2_444
        )
    )
    by_t = {t.unix: t for t in tel}

    def net(u: int) -> int:
        return by_t[u].import_wh - by_t[u].export_wh

    truth = {first + k: net(b0 + (k + 1) * IV) - net(b0 + k * IV) for k in range(N)}
    kept = [t for t in tel if gap is None or t.unix not in gap]
    return b"".join(t.text.encode("latin-1") for t in kept), truth


@contextmanager
def _p1_bridge() -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection TCP P1 bridge (like ser2net); put the payload in the list before connecting."""
    srv = socket.create_server(("127.0.0.1", 0))
    payload: list[bytes] = []

    def run() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            data = payload[0]
            for i in range(0, len(data), 1400):
                conn.sendall(data[i : i + 1400])

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield srv.getsockname()[1], payload
    finally:
        srv.close()
        th.join(timeout=10)


def _spec(port: int) -> str:
    return f"p1-tcp:127.0.0.1:{port}?spec=v5&reconnect_delay_s=none"


def _sim_truth(
    world, t: int
) -> int:  # the simulated neighbours (no demand management: loads unchanged)
    return sum(h.load.energy_wh(t) or 0 for h in world.households if h.meter_id != P1_METER)


def _bill(plan, readings: dict[int, int], lo: int, hi: int) -> int:
    energy = sum(
        wh * plan.tariff.price_at(t, plan.interval_seconds, None) for t, wh in readings.items()
    )
    return energy + int(plan.fixed_charge(range(lo, hi)))


def test_p1_meter_in_memory_neighbourhood(test_data, sim_cache, paillier_2048):
    sim = build(tiny_scenario(sim_cache, demand=False, max_intervals=N))
    first = sim.first_interval
    data, truth = _telegrams(test_data, first)
    assert all(v != 0 for v in truth.values())
    with _p1_bridge() as (port, payload):
        payload.append(data)
        world = build(
            tiny_scenario(sim_cache, demand=False, max_intervals=N, sources={P1_METER: _spec(port)})
        )
        spec = next(h for h in world.households if h.meter_id == P1_METER)
        assert spec.source == _spec(port) and spec.truth_kwh_profile == "source"
        spec.secret_key = paillier_2048[1]  # the real household: a 2048-bit key
        rep = run_memory(world)
    series = rep["aggregation"]["series"]
    assert [r["interval"] for r in series] == list(range(first, first + N))
    for r in series:
        assert r["total_wh"] == _sim_truth(sim, r["interval"]) + truth[r["interval"]]
        assert r["dropped"] == 0 and r["survivors"] == 6
    assert rep["aggregation"]["max_abs_error"] == 0
    bills = {b["meter_id"]: b for b in rep["billing"]["bills"]}
    p1 = bills[P1_METER]
    assert p1["records"] == N and p1["energy_wh"] == sum(truth.values())
    assert p1["proven"] == p1["truth"] == _bill(spec.plan, truth, first, first + N)
    assert p1["audited"] is True and p1["status"] != "missing"
    assert rep["billing"]["verified"] == rep["billing"]["households"] == 6


def test_p1_gap_drops_the_meter_over_loopback_sockets(test_data, sim_cache, tmp_path):
    """``privmeter simulate --source m00003=p1-tcp:...``: head-end, fleet process, TCP bridge."""
    first = build(tiny_scenario(sim_cache, demand=False, max_intervals=N)).first_interval
    b1 = (first + 1) * IV
    data, truth = _telegrams(
        test_data, first, gap=range(b1 - 20, b1 + 60)
    )  # boundary 1 seen too late
    out = tmp_path / "out"
    with _p1_bridge() as (port, payload):
        payload.append(data)
        code = main(
            [
                "simulate",
                "--households",
                "6",
                "--days",
                "1",
                "--max-intervals",
                str(N),
                "--seed",
                "7",
                "--key-bits",
                "512",
                "--dgk-bits",
                "1024",
                "--insecure-small-keys",
                "--no-demand",
                "--cache-dir",
                str(sim_cache),
                "--out",
                str(out),
                "--fleets",
                "1",
                "--source",
                f"{P1_METER}={_spec(port)}",
            ]
        )
    rep = json.loads((out / "report.json").read_text())
    assert code == 0
    assert rep["scenario"]["sources"] == {P1_METER: _spec(port)}
    sim = build(tiny_scenario(sim_cache, demand=False, max_intervals=N))
    missing = {first, first + 1}  # both intervals touching the late boundary
    for r in rep["aggregation"]["series"]:
        t = r["interval"]
        p1 = 0 if t in missing else truth[t]
        assert r["total_wh"] == _sim_truth(sim, t) + p1
        assert (r["dropped"], r["survivors"]) == ((1, 5) if t in missing else (0, 6))
    bills = {b["meter_id"]: b for b in rep["billing"]["bills"]}
    p1_bill = bills[P1_METER]
    billed = {t: v for t, v in truth.items() if t not in missing}
    assert p1_bill["records"] == N - 2 and p1_bill["energy_wh"] == sum(billed.values())
    assert (
        p1_bill["proven"]
        == p1_bill["truth"]
        == _bill(sim.households[3].plan, billed, first, first + N)
    )
    assert rep["billing"]["verified"] == rep["billing"]["households"] == 6


class _ListSource:
    interval_seconds = IV

    def __init__(self, readings: list[IntervalReading], fail: bool = False) -> None:
        self._r, self._fail = readings, fail

    def readings(self) -> Iterator[IntervalReading]:
        yield from self._r
        if self._fail:
            raise OSError("cable pulled")


def test_source_readings_missing_and_failed_sources():
    rs = [
        IntervalReading(interval=10, energy_wh=5, power_w=20),
        IntervalReading(interval=11, energy_wh=None),
    ]
    feed = SourceReadings(_ListSource(rs, fail=True))
    load = MeterLoad(IV, 10 * IV, fixed=feed)
    assert [load.energy_wh(t) for t in (9, 10, 11, 12)] == [None, 5, None, None]
    assert load.first_interval == 10 and feed.ended and isinstance(feed.error, OSError)
    assert dict(feed) == {10: 5, 11: None}
    feed.close()


def test_source_arguments():
    assert parse_source_args(["m1=p1-tcp:h:1?spec=v5", "m2=csv:a=b.csv"]) == {
        "m1": "p1-tcp:h:1?spec=v5",
        "m2": "csv:a=b.csv",
    }
    assert parse_source_args(["p1:/dev/ttyUSB0?spec=v5"], ["m7"]) == {
        "m7": "p1:/dev/ttyUSB0?spec=v5"
    }
    with pytest.raises(ConfigError, match="METER_ID=SPEC"):
        parse_source_args(["p1:/dev/ttyUSB0"], ["m1", "m2"])
    with pytest.raises(ConfigError, match="repeated"):
        parse_source_args(["m1=sim", "m1=sim:2"])
    with pytest.raises(ConfigError, match="unknown source scheme"):
        Scenario(sources={"m00001": "modbus:x"})
    sc = Scenario(sources={"m00001": "csv:x.csv"})
    assert replace(sc).sources == {"m00001": "csv:x.csv"}


def test_unknown_meter_and_meter_cli_errors(tiny_world, sim_cache, tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown meter"):
        attach_sources(list(tiny_world.households), {"m99999": "sim"})
    from privmeter.sim.scenario import scenario_json

    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario_json(tiny_scenario(sim_cache))))
    code = parties_main(
        [
            "meter",
            "--scenario",
            str(scen),
            "--fleet",
            "0/2",
            "--headend-key",
            "00" * 32,
            "--source",
            "p1-tcp:127.0.0.1:1",
        ]
    )
    assert code == 1 and "METER_ID=SPEC" in capsys.readouterr().err
    code = parties_main(
        [
            "meter",
            "--scenario",
            str(scen),
            "--fleet",
            "0/2",
            "--headend-key",
            "00" * 32,
            "--source",
            "m00001=p1-tcp:127.0.0.1:1",
        ]
    )
    assert code == 1 and "not in this fleet" in capsys.readouterr().err
