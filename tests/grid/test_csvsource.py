from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privmeter.errors import DataFormatError
from privmeter.grid.devices.csvsource import open_csv_source, read_csv_readings, write_csv_readings
from privmeter.grid.devices.source import IntervalReading, LoadSource

T0 = 1357000200  # 2013-01-01T00:30:00Z, on the 900 s and 1800 s grids

GOOD = """# privmeter-readings v1
# interval_seconds: 900
# meter: test meter
timestamp,energy_wh,power_w
2013-01-01T00:30:00Z,100,410
2013-01-01T00:45:00+00:00,,
2013-01-01T02:00:00+01:00,-45,-1200
1357003800,7,
"""


def _write(tmp_path: Path, text: str, name: str = "r.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_the_documented_example(tmp_path: Path) -> None:
    src = open_csv_source(_write(tmp_path, GOOD), 900)
    assert isinstance(src, LoadSource) and src.meta["meter"] == "test meter"
    got = list(src.readings())
    assert got == [
        IntervalReading(interval=T0 // 900, energy_wh=100, power_w=410),
        IntervalReading(interval=T0 // 900 + 1, energy_wh=None, power_w=None),
        IntervalReading(interval=T0 // 900 + 2, energy_wh=-45, power_w=-1200),  # 02:00+01 = 01:00Z
        IntervalReading(interval=T0 // 900 + 3, energy_wh=None, power_w=None),  # gap: missing
        IntervalReading(interval=T0 // 900 + 4, energy_wh=7, power_w=None),
    ]


def test_resampling_to_other_intervals(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)
    half = list(open_csv_source(p, 1800).readings())
    # 00:30-01:00 has a missing quarter -> missing; 01:00-01:30 is missing too (gap)
    assert [(r.interval, r.energy_wh) for r in half] == [
        (T0 // 1800, None),
        (T0 // 1800 + 1, None),
    ]
    five = list(open_csv_source(p, 300).readings())
    assert [r.energy_wh for r in five[:3]] == [33, 33, 34] and len(five) == 15
    assert five[6].energy_wh == -15 and five[6].power_w == -1200
    # the interval is inferred from the gaps (gcd) when not declared
    q = _write(tmp_path, "timestamp,energy_wh\n1357000200,5\n1357002000,6\n1357003800,1\n", "q.csv")
    interval, _meta, rs = read_csv_readings(q)
    assert interval == 1800 and [r.energy_wh for r in rs] == [5, 6, 1]
    hourly = list(open_csv_source(q, 3600).readings())  # starts at xx:30: first hour from 01:00
    assert [(r.interval, r.energy_wh) for r in hourly] == [(1357002000 // 3600, 7)]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        (
            "# privmeter-readings v2\ntimestamp,energy_wh\n",
            1,
            "expected privmeter-readings v1, got v2",
        ),
        ("timestamp,energy_kwh\n", 1, "header: expected columns"),
        ("timestamp,energy_wh,power_w,extra\n", 1, "header"),
        ("timestamp,energy_wh\n2013-01-01T00:00:00,5\n", 2, "naive"),
        (
            "timestamp,energy_wh\n2013-01-01T00:00:00Z,1.5\n",
            2,
            "energy_wh: expected a signed integer",
        ),
        ("timestamp,energy_wh\n1357000200,5\nyesterday,6\n", 3, "timestamp: expected ISO 8601"),
        ("timestamp,energy_wh\n1357000200,5\n1357000200,6\n", 3, "timestamps must increase"),
        ("timestamp,energy_wh\n1357000200,5\n1357000100,6\n", 3, "after line 2"),
        ("timestamp,energy_wh,power_w\n1357000200,5\n", 2, "expected 3 fields, got 2"),
        ("# interval_seconds: 900\ntimestamp,energy_wh\n\n1357000260,5\n", 4, "not on a 900 s"),
        ("# interval_seconds: 0\ntimestamp,energy_wh\n1357000200,5\n", 1, "interval_seconds"),
        ("timestamp,energy_wh\n1357000200,5\n", 2, "one reading"),
        ("timestamp,energy_wh\n1357000200,99999999999999\n", 2, "signed integer"),
        ("timestamp,energy_wh\n1357000200," + "1" * 2000 + "\n", 2, "longer than"),
        ("# nothing\n", 1, "no header"),
        ("timestamp,energy_wh\n", 1, "no readings"),
    ],
)
def test_format_errors_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = _write(tmp_path, text, "bad.csv")
    with pytest.raises(DataFormatError, match=what) as exc:
        open_csv_source(p, 900)
    assert str(exc.value).startswith(f"{p}:{line}:")
    assert exc.value.context["line"] == line


def test_requested_interval_must_fit(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)
    with pytest.raises(DataFormatError, match="neither divides"):
        open_csv_source(p, 1200)
    with pytest.raises(ValueError):
        open_csv_source(p, 0)


READING_VALUES = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-(10**6), 10**6)),
        st.one_of(st.none(), st.integers(-(10**5), 10**5)),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=40, deadline=None)
@given(values=READING_VALUES, first=st.integers(0, 10**6))
def test_write_read_round_trip(
    tmp_path_factory: pytest.TempPathFactory, values: list, first: int
) -> None:
    readings = [
        IntervalReading(interval=first + i, energy_wh=e, power_w=w)
        for i, (e, w) in enumerate(values)
    ]
    p = tmp_path_factory.mktemp("rt") / "out.csv"
    assert write_csv_readings(p, readings, 900, meta={"meter": "m-1"}) == len(readings)
    interval, meta, back = read_csv_readings(p)
    # the writer emits every interval, so the reader sees exactly the same grid
    assert interval == 900 and meta["meter"] == "m-1"
    assert back == readings


def test_writer_rejects_bad_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_csv_readings(tmp_path / "x.csv", [], 900, meta={"bad key": "v"})
    with pytest.raises(ValueError):
        write_csv_readings(tmp_path / "x.csv", [], 900, meta={"k": "two\nlines"})
