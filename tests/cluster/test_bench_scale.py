"""Smoke test of ``privmeter bench scale --json`` on a tiny world (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def test_bench_scale_json(pg) -> None:  # type: ignore[no-untyped-def]  # pg: PostgreSQL is installed
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "privmeter",
            "bench",
            "scale",
            "--json",
            "--groups",
            "2",
            "--per-group",
            "4",
            "--intervals",
            "2",
            "--key-bits",
            "1024",
            "--no-two-nodes",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads(out.stdout)
    assert d["identical"] is True
    assert set(d["readings_per_s"]) == {"single_process", "1", "2"}
    assert all(v > 0 for v in d["readings_per_s"].values())
    assert d["efficiency"] > 0
    for k in ("shard_cost_ratio", "shard_cost_ratio_with_postgres", "cpu_efficiency"):
        assert d[k] is None or d[k] >= 0, (
            k
        )  # None: too few readings for the CPU clock's 10 ms ticks
    assert d["readings"] == 2 * 4 * 2 and d["key_bits"] == 1024
    assert d["message_bytes"]["up:record"] > 0 and d["postgres_bytes_per_reading"]["wal"] > 0
