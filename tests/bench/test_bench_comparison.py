"""Smoke test of ``privmeter bench comparison`` (tiny, insecure sizes; no timing assertions)."""

from __future__ import annotations

import json

import pytest

from privmeter.bench import comparison as bench
from privmeter.cli import main


def test_quick_run_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["bench", "comparison", "--quick", "--json", "--no-mpyc", "--bits", "16", "--meters", "12"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["comparisons"]
    assert row["bits"] == 16 and row["radix"] == 4
    for k in ("utility_s", "meter_s", "bytes"):
        assert row[k] > 0
    assert "mpyc_s" in row and out["mpyc_mode"] == "skipped"
    assert out["textbook_radix2"][0]["radix"] == 2
    ev = out["event_1000"]
    assert ev["meters"] == 12 and ev["matches_plaintext"] is True
    assert set(ev) >= {"wall_s", "utility_cpu_s", "meter_cpu_s"}


def test_mpyc_peer_runs() -> None:
    res = bench.mpyc_comparison(8, 4, timeout=120)
    assert res["cpu_s"] > 0 and res["wall_s"] > 0
