from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from privmeter.errors import ConfigError, DataFormatError
from privmeter.grid.devices.lcl import (
    LCL_DTOU_PRICES,
    LCL_FLAT_PRICE,
    lcl_builtin,
    load_lcl,
    parse_kwh_to_wh,
)
from privmeter.grid.devices.source import LoadSource

PACKAGE_DATA = Path(__file__).resolve().parents[2] / "src" / "privmeter" / "data"


def _utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime.datetime(y, mo, d, h, mi, tzinfo=datetime.UTC).timestamp())


@pytest.fixture(scope="module")
def builtin():  # type: ignore[no-untyped-def]
    return lcl_builtin()


def test_builtin_household(builtin) -> None:  # type: ignore[no-untyped-def]
    s = builtin
    assert s.household_id == "MAC000060" and s.interval_seconds == 1800
    assert s.start_unix == _utc(2011, 12, 10)
    assert s.end_unix == _utc(2014, 2, 28)
    assert len(s.energy_wh) == 811 * 48  # regular grid over 811 days
    assert s.missing == 144  # three whole days have no rows
    assert s.energy_wh[:4] == (82, 30, 57, 30)
    assert s.energy_wh[-3:] == (655, 267, 239)
    # "2011-12-11 18:30:00,1.3150001": float noise rounded to the meter's 1 Wh
    assert s.energy_wh[(_utc(2011, 12, 11, 18, 30) - s.start_unix) // 1800] == 1315
    missing_days = {
        datetime.datetime.fromtimestamp(s.start_unix + i * 1800, datetime.UTC).date()
        for i, v in enumerate(s.energy_wh)
        if v is None
    }
    assert missing_days == {
        datetime.date(2012, 10, 18),
        datetime.date(2012, 12, 12),
        datetime.date(2012, 12, 29),
    }


def test_builtin_matches_repository_file_and_independent_parse(builtin) -> None:  # type: ignore[no-untyped-def]
    path = (
        PACKAGE_DATA / "lcl" / "MAC000060.csv"
    )  # the file in the checkout, not the installed copy
    assert load_lcl(path).energy_wh == builtin.energy_wh
    # independent check: float parse + round agrees with the exact decimal parse here
    rows = path.read_text().splitlines()[1:]
    assert sum(round(float(r.split(",")[1]) * 1000) for r in rows) == sum(
        v for v in builtin.energy_wh if v is not None
    )


def test_clock_change_days_have_48_half_hours(builtin) -> None:  # type: ignore[no-untyped-def]
    for day in (datetime.date(2013, 3, 31), datetime.date(2013, 10, 27)):
        w = builtin.window(day, 1)
        assert len(w.energy_wh) == 48 and w.missing == 0


def test_window_and_source(builtin) -> None:  # type: ignore[no-untyped-def]
    w = builtin.window(datetime.date(2013, 1, 1), 2)
    assert w.start_unix == _utc(2013, 1, 1) and len(w.energy_wh) == 96
    src = w.to_source(3600)
    assert isinstance(src, LoadSource)
    hourly = list(src.readings())
    assert len(hourly) == 48 and hourly[0].interval == _utc(2013, 1, 1) // 3600
    assert hourly[0].energy_wh == w.energy_wh[0] + w.energy_wh[1]  # type: ignore[operator]
    quarter = list(w.to_source(900).readings())
    assert sum(r.energy_wh or 0 for r in quarter) == sum(v or 0 for v in w.energy_wh)
    assert [r.interval for r in w.readings()][:2] == [
        _utc(2013, 1, 1) // 1800,
        _utc(2013, 1, 1) // 1800 + 1,
    ]
    outside = builtin.window(datetime.date(2011, 12, 9), 1)
    assert outside.missing == 48  # before the data: missing, not zero
    assert LCL_FLAT_PRICE == 14228 and LCL_DTOU_PRICES["High"] == 67200


FULL = (
    "LCLid,stdorToU,DateTime,KWH/hh (per half hour) ,Acorn,Acorn_grouped\n"
    "MAC000002,Std,2012-10-12 00:30:00.0000000, 0 ,ACORN-A,Affluent\n"
    "MAC000002,Std,2012-10-12 01:00:00.0000000, 0.0815,ACORN-A,Affluent\n"
    "MAC000002,Std,2012-10-12 01:30:00.0000000,Null,ACORN-A,Affluent\n"
    "MAC000002,Std,2012-10-12 02:30:00.0000000,1.3150001,ACORN-A,Affluent\n"
    "MAC000003,ToU,2012-10-12 00:00:00.0000000,0.2,ACORN-P,Adversity\n"
    "MAC000003,ToU,2012-10-12 00:30:00.0000000,0.3,ACORN-P,Adversity\n"
)


def test_full_dataset_layout(tmp_path: Path) -> None:
    p = tmp_path / "block_0.csv"
    p.write_text(FULL)
    a = load_lcl(p, household="MAC000002")
    assert a.household_id == "MAC000002" and a.tariff_group == "Std"
    assert a.start_unix == _utc(2012, 10, 12, 0, 30)
    # 01:30 is Null, 02:00 has no row: both missing; 0.0815 -> 82 Wh (half-to-even on 81.5)
    assert a.energy_wh == (0, 82, None, None, 1315)
    b = load_lcl(p, household="MAC000003")
    assert b.tariff_group == "ToU" and b.energy_wh == (200, 300)
    with pytest.raises(DataFormatError, match="several households"):
        load_lcl(p)
    with pytest.raises(DataFormatError, match="no readings for household 'MAC999999'"):
        load_lcl(p, household="MAC999999")
    # the original four-column version, one household: no household= needed
    q = tmp_path / "one.csv"
    q.write_text(
        "LCLid,stdorToU,DateTime,KWH/hh (per half hour) \n"
        + "MAC1,Std,2013-01-01 00:00:00.0000000,1.5\n"
    )
    assert load_lcl(q).energy_wh == (1500,)


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("2013-01-01 00:00:00,abc\n", 2, "decimal kWh"),
        ("2013-01-01 00:15:00,0.1\n", 2, "half-hour boundary"),
        ("2013-01-01,0.1\n", 2, "YYYY-MM-DD HH:MM:SS"),
        ("2013-01-01 00:00:00.5000000,0.1\n", 2, "whole-second"),
        ("2013-01-01 00:00:00,0.1\n2013-01-01 00:00:00,0.2\n", 3, "second reading"),
        ("2013-01-01 00:00:00,0.1\n2013-01-01 00:30:00\n", 3, "expected 2 columns"),
        ("2013-01-01 00:00:00,1e9\n", 2, "out of range"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, body: str, line: int, what: str) -> None:
    p = tmp_path / "MAC1.csv"
    p.write_text(",KWH/hh (per half hour) \n" + body)
    with pytest.raises(DataFormatError, match=what) as exc:
        load_lcl(p)
    assert f"MAC1.csv:{line}:" in str(exc.value) and exc.value.context["line"] == line
    assert isinstance(exc.value, ConfigError)


def test_single_layout_details(tmp_path: Path) -> None:
    p = tmp_path / "MAC000123.csv"
    p.write_text(
        ",KWH/hh (per half hour) \n2013-01-01 00:00:00,0.1\n2013-01-01 00:00:00,0.1\n\n2013-01-01 01:00:00,Null\n"
    )
    s = load_lcl(p)
    assert s.household_id == "MAC000123" and s.energy_wh == (
        100,
        None,
        None,
    )  # identical duplicate ignored
    assert load_lcl(p, household="renamed").household_id == "renamed"
    bad = tmp_path / "x.csv"
    bad.write_text("time,value\n")
    with pytest.raises(DataFormatError, match=r"x.csv:1: not an LCL layout"):
        load_lcl(bad)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        load_lcl(empty)


def test_parse_kwh_exact() -> None:
    assert parse_kwh_to_wh("0.082") == 82
    assert parse_kwh_to_wh(" 1.3150001 ") == 1315
    assert parse_kwh_to_wh("0.0005") == 0  # half to even
    assert parse_kwh_to_wh("0.0015") == 2
    assert parse_kwh_to_wh("-0.25") == -250
    for bad in ("", "nan", "inf", "1,5", "0x10"):
        with pytest.raises(ValueError):
            parse_kwh_to_wh(bad)
