"""The aggregation benchmark runs end to end and reports the documented JSON shape."""

from __future__ import annotations

import json

from privmeter.cli import main
from privmeter.protocol.aggregation_messages import record_bytes


def test_bench_aggregation_quick_json(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["bench", "aggregation", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cases = out["cases"]
    assert {c["protocol"] for c in cases} == {"masked", "paillier"}
    for c in cases:
        assert set(c) >= {
            "protocol",
            "meters",
            "group_size",
            "dropout",
            "meter_s",
            "headend_s",
            "bytes_per_meter",
            "degree",
            "intervals_measured",
            "bytes_breakdown",
        }
        assert c["exact"] is True and c["intervals_failed"] == 0
        assert c["meter_s"] > 0 and c["headend_s"] > 0 and c["bytes_per_meter"] > 0
        assert c["intervals_measured"] >= 3
        if c["protocol"] == "masked":
            parts = c["bytes_breakdown"]
            assert set(parts) == {
                "masked_value",
                "shares",
                "recovery_pads",
                "reveals",
                "endorsement",
                "other",
            }
            assert abs(sum(parts.values()) - c["bytes_per_meter"]) < 1
            # one AEAD (b, z) record per neighbour; complete graphs add the view key
            rb = record_bytes(c["group_size"], c["degree"])
            assert parts["shares"] == rb * c["degree"]
        else:
            assert c["degree"] is None
    # the degree-64 meter row: masked only, labelled by its forced degree
    forced = [c for c in cases if c["degree_forced"]]
    assert forced and all(c["protocol"] == "masked" and c["degree"] == 64 for c in forced)
    s = out["summary"]
    assert s["targets"] == {
        "headend_10k_5pct_s": 1.0,
        "meter_64_s": 0.002,
        "headend_ratio": 10,
        "bytes_ratio": 50,
    }
    assert s["headend_10k_5pct_s"] is None and s["met"]["headend_10k_5pct_s"] is None  # no 10k case
    assert s["meter_64_s"] == max(c["meter_s"] for c in forced)
    assert [(r["meters"], r["group_size"]) for r in s["ratios_0pct"]] == [(20, 20)]
    assert all(
        isinstance(s["met"][k], bool) for k in ("meter_64_s", "headend_ratio", "bytes_ratio")
    )


def test_bench_aggregation_table_shows_targets(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["bench", "aggregation", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "issue 3 targets" in out and "degree 64" in out


def test_progress_on_a_terminal_even_with_json() -> None:
    """A long benchmark says how far it is on stderr when that is a terminal; stdout stays JSON."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "privmeter", "bench", "aggregation", "--quick", "--json"],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=300,
            env={**os.environ, "COLUMNS": "120"},
        )
        os.close(slave)
        slave = -1
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the pty's writer is gone
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert r.returncode == 0 and json.loads(r.stdout)["cases"]
    text = err.decode(errors="replace")
    assert "masked sum: 20 meters, groups of 20" in text and "Paillier baseline" in text
