"""``privmeter bench headend`` (tiny, insecure keys) and the simulation clock."""

from __future__ import annotations

import asyncio
import json

import pytest

from privmeter.cli import main
from privmeter.sim.clock import SimClock


def test_bench_headend_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "headend",
            "--json",
            "--meters",
            "4",
            "--intervals",
            "2",
            "--group",
            "6",
            "--key-bits",
            "512",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["meters_per_core_at_1min"] > 0
    assert out["records"] == 8
    for k in (
        "total",
        "billing_end_to_end_over_tcp",
        "signature_verify",
        "persistence_sqlite_wal",
        "aggregation_headend_share",
    ):
        assert out["per_reading_us"][k] > 0
    assert out["transport"]["errors"] == {}


def test_sim_clock_accelerated_and_scaled() -> None:
    c = SimClock(1000)
    assert c.now() == 1000
    asyncio.run(c.wait_until(5000))
    assert c.now() == 5000
    c.advance(4000)  # never backwards
    assert c.now() == 5000
    fast = SimClock(0, speed=1e6)  # a million times real time
    asyncio.run(fast.wait_until(10_000))
    assert fast.now() >= 10_000
    with pytest.raises(ValueError):
        SimClock(0, speed=-1)
