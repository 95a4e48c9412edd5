"""Import of real half-hourly meter data from the Low Carbon London (LCL) trial.

Purpose: feed real households into the system.  The "SmartMeter Energy
Consumption Data in London Households" dataset (UK Power Networks, London
Datastore; 5,567 households, Nov 2011 - Feb 2014) comes in two layouts, both
accepted here:

* per-household extract: header ``,KWH/hh (per half hour) `` (empty first
  column name, trailing space), rows ``YYYY-MM-DD HH:MM:SS,<kWh>``;
* the dataset's own one-CSV layout: ``LCLid,stdorToU,DateTime,KWH/hh (per
  half hour) `` (later versions append ``Acorn,Acorn_grouped``), DateTime
  like ``2012-10-12 00:30:00.0000000``, missing readings as ``Null``.

Header names are compared after stripping spaces and ignoring case.

Conversion (guarantee): kWh are parsed as *decimal strings* (no binary
float) and rounded half-to-even to whole Wh, the meter's resolution, so the
float noise in the published files (``1.3150001``) becomes ``1315`` exactly.
Timestamps are the start of the half hour in UTC (the trial logged GMT: the
files hold 48 half hours on clock-change days).  The series is put on a
regular half-hour grid from its first to its last reading; a half hour with
no row or with ``Null`` is *missing* (``None``), never filled in.  A repeated
timestamp with the same value is ignored; with a different value it is an
error.  Any malformed row raises :class:`~privmeter.errors.DataFormatError`
naming the file and line.

The trial's real tariffs are exported as constants for plan examples, in the
project's price unit (milli-minor-units per kWh, here milli-pence/kWh).

Security assumption: none (input parsing); the parser is strict and bounded.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

from privmeter.errors import DataFormatError, InvalidArgument
from privmeter.grid.devices.resample import resample_energy
from privmeter.grid.devices.source import IntervalReading

__all__ = [
    "LCL_DTOU_PRICES",
    "LCL_FLAT_PRICE",
    "LCL_INTERVAL_SECONDS",
    "LclSeries",
    "LclSource",
    "lcl_builtin",
    "load_lcl",
    "parse_kwh_to_wh",
]

LCL_INTERVAL_SECONDS = 1800  # the trial's meters reported half-hourly
LCL_FLAT_PRICE = 14228  # 14.228 p/kWh, the standard (flat) tariff, milli-pence/kWh
LCL_DTOU_PRICES = {  # dynamic time-of-use group, 2013, day-ahead signals, milli-pence/kWh
    "High": 67200,  # 67.20 p/kWh
    "Normal": 11760,  # 11.76 p/kWh
    "Low": 3990,  # 3.99 p/kWh
}
BUILTIN_HOUSEHOLD = "MAC000060"
_KWH_HEADER = "kwh/hh (per half hour)"
_MAX_ABS_KWH = Decimal(1000)  # per half hour; far beyond any household connection


@dataclass(frozen=True, eq=False)
class LclSeries:
    """One household's half-hourly energy on a regular grid (``None`` = missing)."""

    household_id: str
    start_unix: int  # start of the first half hour, UTC
    energy_wh: tuple[int | None, ...]
    tariff_group: str | None = None  # "Std" or "ToU" (full layout only)
    interval_seconds: int = LCL_INTERVAL_SECONDS

    @property
    def end_unix(self) -> int:
        """End of the last half hour (exclusive)."""
        return self.start_unix + len(self.energy_wh) * self.interval_seconds

    @property
    def missing(self) -> int:
        return sum(v is None for v in self.energy_wh)

    def window(self, start: datetime.date, days: int) -> LclSeries:
        """The ``days`` whole UTC days from ``start`` (outside the data: missing)."""
        t0 = int(
            datetime.datetime(start.year, start.month, start.day, tzinfo=datetime.UTC).timestamp()
        )
        per_day = 86400 // self.interval_seconds
        first = (t0 - self.start_unix) // self.interval_seconds
        values: list[int | None] = []
        for k in range(first, first + days * per_day):
            values.append(self.energy_wh[k] if 0 <= k < len(self.energy_wh) else None)
        return LclSeries(
            household_id=self.household_id,
            start_unix=t0,
            energy_wh=tuple(values),
            tariff_group=self.tariff_group,
            interval_seconds=self.interval_seconds,
        )

    def to_source(self, interval_seconds: int = LCL_INTERVAL_SECONDS) -> LclSource:
        """A load source at ``interval_seconds`` (coarser: summed; finer: split evenly)."""
        if self.start_unix % interval_seconds and interval_seconds > self.interval_seconds:
            raise InvalidArgument(
                f"series starts at {self.start_unix}, not on a {interval_seconds} s boundary"
            )
        return LclSource(self, interval_seconds)

    def readings(self) -> Iterator[IntervalReading]:
        return self.to_source().readings()


@dataclass(frozen=True, slots=True)
class LclSource:
    """:class:`~privmeter.grid.devices.source.LoadSource` over an :class:`LclSeries` (no power: ``power_w`` None)."""

    series: LclSeries
    interval_seconds: int

    def readings(self) -> Iterator[IntervalReading]:
        values = resample_energy(
            self.series.energy_wh, self.series.interval_seconds, self.interval_seconds
        )
        first = self.series.start_unix // self.interval_seconds
        for i, v in enumerate(values):
            yield IntervalReading(interval=first + i, energy_wh=v, power_w=None)


def parse_kwh_to_wh(text: str) -> int:
    """Exact decimal kWh string -> whole Wh, rounded half-to-even.  Raises ValueError."""
    s = text.strip()
    if not s or len(s) > 40:
        raise InvalidArgument(f"expected a decimal kWh value, got {text!r}")
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise InvalidArgument(f"expected a decimal kWh value, got {text!r}") from None
    if not d.is_finite() or abs(d) > _MAX_ABS_KWH:
        raise InvalidArgument(f"kWh value out of range: {text!r}")
    return int((d * 1000).to_integral_value(rounding=ROUND_HALF_EVEN))


def _parse_time(text: str, _day_cache: dict[str, int] = {}) -> int:  # noqa: B006 (memo)
    """``YYYY-MM-DD HH:MM:SS[.0000000]`` (UTC) -> unix seconds on a half-hour boundary."""
    s = text.strip()
    main, dot, frac = s.partition(".")
    if dot and (not frac.isdigit() or frac.strip("0")):
        raise InvalidArgument(f"expected a whole-second timestamp, got {text!r}")
    day_txt, sep, clock = main.partition(" ")
    day = _day_cache.get(day_txt)
    if day is None:
        try:
            d = datetime.date.fromisoformat(day_txt) if len(day_txt) == 10 else None
        except ValueError:
            d = None
        if d is None or not sep:
            raise InvalidArgument(f"expected 'YYYY-MM-DD HH:MM:SS', got {text!r}")
        day = (d - datetime.date(1970, 1, 1)).days * 86400
        if len(_day_cache) < 100_000:
            _day_cache[day_txt] = day
    parts = clock.split(":")
    if (
        not sep
        or len(parts) != 3
        or not all(len(x) == 2 and x.isdigit() for x in parts)
        or int(parts[0]) > 23
        or int(parts[1]) > 59
        or int(parts[2]) > 59
    ):
        raise InvalidArgument(f"expected 'YYYY-MM-DD HH:MM:SS', got {text!r}")
    unix = day + int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])
    if unix % LCL_INTERVAL_SECONDS:
        raise InvalidArgument(f"timestamp is not on a half-hour boundary: {text!r}")
    return unix


def _norm(name: str) -> str:
    return name.strip().lower()


def _parse(
    lines: Iterator[str], source_name: str, household: str | None, default_id: str
) -> LclSeries:
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(f"{source_name}: empty file", path=source_name) from None
    cols = [_norm(c) for c in header]
    if len(cols) == 2 and cols[1] == _KWH_HEADER and cols[0] in ("", "datetime"):
        layout = "single"
        i_time, i_kwh, i_id, i_tariff = 0, 1, None, None
    elif "lclid" in cols and "datetime" in cols and _KWH_HEADER in cols:
        layout = "full"
        i_time, i_kwh, i_id = cols.index("datetime"), cols.index(_KWH_HEADER), cols.index("lclid")
        i_tariff = cols.index("stdortou") if "stdortou" in cols else None
    else:
        raise DataFormatError(
            f"{source_name}:1: not an LCL layout: expected ',KWH/hh (per half hour) ' or "
            f"'LCLid,stdorToU,DateTime,KWH/hh (per half hour) ', got {','.join(header)!r}",
            path=source_name,
            line=1,
        )
    width = len(cols)
    wanted = household
    if layout == "single":
        hh_id = household or default_id
    values: dict[int, int | None] = {}
    seen_ids: set[str] = set()
    tariff: str | None = None
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < width:
            raise DataFormatError(
                f"{source_name}:{line}: expected {width} columns, got {len(row)}: {row!r}",
                path=source_name,
                line=line,
            )
        if i_id is not None:
            rid = row[i_id].strip()
            if household is None:
                seen_ids.add(rid)
                if len(seen_ids) > 1:
                    raise DataFormatError(
                        f"{source_name}: holds several households ({', '.join(sorted(seen_ids))}, ...); "
                        "pass household=...",
                        path=source_name,
                    )
                wanted = rid
            if rid != wanted:
                continue
            if i_tariff is not None:
                tariff = row[i_tariff].strip() or tariff
        try:
            t = _parse_time(row[i_time])
            raw = row[i_kwh].strip()
            v = None if raw == "" or raw.lower() == "null" else parse_kwh_to_wh(raw)
        except ValueError as exc:
            raise DataFormatError(
                f"{source_name}:{line}: {exc}", path=source_name, line=line
            ) from None
        if t in values:
            if values[t] != v:
                raise DataFormatError(
                    f"{source_name}:{line}: second reading for {row[i_time].strip()!r} "
                    f"({v!r} Wh, first was {values[t]!r} Wh)",
                    path=source_name,
                    line=line,
                )
            continue
        values[t] = v
    if layout == "full":
        hh_id = wanted or ""
    if not values:
        who = f" for household {household!r}" if household else ""
        raise DataFormatError(f"{source_name}: no readings{who}", path=source_name)
    first, last = min(values), max(values)
    grid = tuple(
        values.get(t) for t in range(first, last + LCL_INTERVAL_SECONDS, LCL_INTERVAL_SECONDS)
    )
    return LclSeries(household_id=hh_id, start_unix=first, energy_wh=grid, tariff_group=tariff)


def load_lcl(path: str | Path, *, household: str | None = None) -> LclSeries:
    """Read one household from an LCL CSV in either layout (see the module docstring).

    ``household`` selects an ``LCLid`` in the one-CSV layout (required when
    the file holds several); for a per-household extract it names the series
    (default: the file name's stem).
    """
    p = Path(path)
    with p.open(newline="", encoding="utf-8-sig") as f:
        return _parse(iter(f), str(p), household, p.stem)


def lcl_builtin() -> LclSeries:
    """The real household MAC000060 shipped with the package (2011-12-10 .. 2014-02-27)."""
    ref = resources.files("privmeter").joinpath("data", "lcl", f"{BUILTIN_HOUSEHOLD}.csv")
    text = ref.read_text(encoding="utf-8-sig")
    return _parse(
        iter(io.StringIO(text, newline="")),
        f"<builtin {BUILTIN_HOUSEHOLD}>",
        None,
        BUILTIN_HOUSEHOLD,
    )
