from __future__ import annotations

import json
from pathlib import Path

import pytest

from privmeter.privacy.report import EvalConfig, run_evaluation, write_html


def test_report_end_to_end(tmp_path: Path) -> None:
    cfg = EvalConfig(
        households=6,
        days=1,
        seed=3,
        group_sizes=(1, 5),
        resolutions=(900,),
        appliances=("kettle",),
        epsilons=(4.0,),
        noise_group_sizes=(5,),
        differencing_group=5,
        folds=3,
        victims=2,
        cache_dir=str(tmp_path / "cache"),
        workers=1,
    )
    rep = run_evaluation(cfg)
    json.dumps(rep)  # JSON-ready
    assert rep["format"] == 1 and rep["population"]["households"] == 6
    assert {r["view"] for r in rep["occupancy"]} >= {"conventional 15 min", "privmeter g=5 totals"}
    assert rep["cross_check"] and all(
        c["protocol_total_wh"] == c["plaintext_total_wh"] for c in rep["cross_check"]
    )
    assert rep["probing"][1]["bits_per_day"] <= 4
    assert len(rep["ledger"]["entries"]) == 6
    out = tmp_path / "p.html"
    write_html(rep, out)
    text = out.read_text()
    assert "cdn" not in text.lower().split("<body>")[1][:2000]
    assert "Plotly" in text and "<table>" in text


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from privmeter.cli import main

    rc = main(
        [
            "privacy",
            "--households",
            "5",
            "--days",
            "1",
            "--group-sizes",
            "5",
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--json",
        ]
    )
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert (tmp_path / "o" / "privacy.json").exists() and (tmp_path / "o" / "privacy.html").exists()
    assert rep["verdict"]["privmeter_rows"] >= 1


def test_console_tables_fit_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal report: every table within 80 columns, nothing cut off ("…"), no raw dict."""
    from privmeter.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    rc = main(
        [
            "privacy",
            "--households",
            "5",
            "--days",
            "1",
            "--group-sizes",
            "5",
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "Occupancy home/away" in out and "Leakage ledger" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "{'" not in out and "conventional meter, 15 min readings" in out
