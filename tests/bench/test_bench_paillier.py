"""Smoke test of ``privmeter bench paillier`` on a tiny insecure key (no timing assertions)."""

from __future__ import annotations

import argparse
import json

from privmeter.bench import paillier as bench


def test_bench_paillier_json(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--json", "--insecure-test-bits", "256", "--min-seconds", "0.01"])
    assert bench.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bits"] == 256
    assert set(out["operations"]) == {"encrypt", "encrypt_pool", "decrypt", "add", "bill_month"}
    for v in out["operations"].values():
        assert v["privmeter_s"] > 0 and v["phe_s"] > 0 and v["speedup"] > 0
    assert out["bill_month"]["verified"] is True
    assert out["bill_month"]["readings"] == 31 * 96
    assert out["bill_month"]["ratio_to_floor"] > 0
