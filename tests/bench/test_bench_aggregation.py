"""The aggregation benchmark runs end to end and reports the documented JSON shape."""

from __future__ import annotations

import json

from privmeter.cli import main


def test_bench_aggregation_quick_json(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["bench", "aggregation", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cases = out["cases"]
    assert {c["protocol"] for c in cases} == {"masked", "paillier"}
    for c in cases:
        assert set(c) >= {"protocol", "meters", "group_size", "dropout", "meter_s",
                          "headend_s", "bytes_per_meter"}
        assert c["exact"] is True and c["meter_s"] > 0 and c["bytes_per_meter"] > 0
