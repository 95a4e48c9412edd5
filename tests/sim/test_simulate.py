"""``privmeter simulate`` end to end: loopback sockets, report files, real-data scenario."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from privmeter.cli import main
from privmeter.errors import ConfigError
from privmeter.sim.report import write_report
from privmeter.sim.runner import run_memory
from privmeter.sim.scenario import (
    Scenario,
    build,
    parse_interval,
    scenario_from_json,
    scenario_json,
)

from ..conftest import tiny_scenario

REQUIRED = [
    ("aggregation", "max_abs_error"),
    ("aggregation", "intervals"),
    ("billing", "households"),
    ("billing", "verified"),
    ("billing", "max_abs_error"),
    ("demand_response", "events"),
    ("performance", "headend_cpu_s"),
]


def test_simulate_over_loopback_sockets(tmp_path: Path, sim_cache: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--households",
            "6",
            "--days",
            "1",
            "--max-intervals",
            "6",
            "--seed",
            "7",
            "--key-bits",
            "512",
            "--dgk-bits",
            "1024",
            "--insecure-small-keys",
            "--cache-dir",
            str(sim_cache),
            "--out",
            str(out),
            "--fleets",
            "1",
            "--dropout",
            "0.05",
            "--min-survivors",
            "3",
            "--latency-ms",
            "1",
        ]
    )
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    for a, b in REQUIRED:
        assert b in rep[a]
    assert rep["aggregation"]["max_abs_error"] == 0
    assert rep["aggregation"]["intervals"] == 6
    assert rep["billing"]["verified"] == rep["billing"]["households"] == 6
    assert rep["billing"]["max_abs_error"] == 0
    assert rep["performance"]["mode"] == "network"
    assert rep["network"]["transport"]["established"] >= 6
    html = (out / "report.html").read_text()
    assert "cdn" not in html.lower().split("<body>")[1]  # charts work offline
    assert "Plotly" in html


def test_real_data_lcl_flat_and_dtou(sim_cache: Path) -> None:
    sc = tiny_scenario(
        sim_cache,
        lcl=True,
        interval_seconds=1800,
        max_intervals=12,
        start=datetime.date(2013, 3, 4),
    )
    res = run_memory(build(sc))
    bills = {b["meter_id"]: b for b in res["billing"]["bills"]}
    assert bills["lcl000"]["plan"] == "lcl-flat" and bills["lcl001"]["plan"] == "lcl-dtou"
    for m in ("lcl000", "lcl001"):  # MAC000060 itself, on each real tariff
        assert bills[m]["proven"] == bills[m]["truth"]
        assert bills[m]["audited"]
    # flat: 14.228 p/kWh on the real readings, exactly
    assert bills["lcl000"]["truth"] == bills["lcl000"]["energy_wh"] * 14228
    assert res["aggregation"]["max_abs_error"] == 0


def test_report_files(tmp_path: Path, tiny_world) -> None:  # type: ignore[no-untyped-def]
    res = run_memory(tiny_world)
    jp, hp = write_report(res, tmp_path)
    back = json.loads(jp.read_text())
    assert back["format"] == "privmeter.sim.report/1"
    assert hp.stat().st_size > 1_000_000  # plotly.js inlined
    # time axes show times: the first interval's start, not its number (1508352 -> "1.50836M")
    sc = tiny_world.scenario
    first = datetime.datetime.fromtimestamp(
        tiny_world.first_interval * sc.interval_seconds, datetime.UTC
    )
    html = hp.read_text()
    assert f'"x":["{first.isoformat()}"' in html.replace(", ", ",")
    assert f'"x":[{tiny_world.first_interval},' not in html.replace(", ", ",")
    assert "time (UTC, start of the interval)" in html


def test_parse_interval() -> None:
    assert parse_interval("15m") == 900
    assert parse_interval("30m") == 1800
    assert parse_interval("1m") == 60
    assert parse_interval("3600") == 3600
    for bad in ("7m", "abc", "30s", "0"):
        with pytest.raises(ConfigError):
            parse_interval(bad)


def test_scenario_json_roundtrip_and_validation(sim_cache: Path) -> None:
    sc = tiny_scenario(sim_cache)
    assert scenario_from_json(scenario_json(sc)) == sc
    with pytest.raises(ConfigError):
        scenario_from_json({**scenario_json(sc), "bogus": 1})
    with pytest.raises(ConfigError):
        Scenario(key_bits=1024)  # insecure without the explicit test-only flag
    with pytest.raises(ConfigError):
        Scenario(topology="mesh")
