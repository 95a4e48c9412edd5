"""The generic meter-readings CSV format (``privmeter-readings v1``): reader and writer.

Purpose: a simple, documented, versioned text format for real or exported
meter data, so any meter's history can be replayed through the system.

Format v1 (UTF-8, ``,``-separated, one reading per line)::

    # privmeter-readings v1
    # interval_seconds: 900
    # meter: any free text (optional metadata lines are "# key: value")
    timestamp,energy_wh,power_w
    2013-01-01T00:00:00Z,123,410
    2013-01-01T00:15:00Z,,           <- missing reading: empty energy_wh
    1357000200,-45,-1200             <- unix seconds are accepted too

* Lines starting with ``#`` are comments.  The optional first comment
  ``# privmeter-readings v<N>`` names the version; only v1 is read.
  ``# interval_seconds: N`` declares the interval; without it the interval
  is the greatest common divisor of the gaps between timestamps.
* Header: ``timestamp`` and ``energy_wh`` required, ``power_w`` optional, in
  any order; any other column is an error (a typo must not be ignored).
* ``timestamp``: the *start* of the interval, ISO 8601 with an explicit UTC
  offset (``Z``, ``+01:00``) or integer unix seconds.  Naive local times are
  rejected: they are ambiguous at clock changes.  Timestamps must increase
  strictly and lie on interval boundaries (unix time multiple of the interval).
* ``energy_wh``: signed integer watt-hours of the interval (import +,
  export -); empty = missing.  ``power_w``: signed integer W at the end of
  the interval, or empty.
* Intervals between two rows that have no row are missing readings.

Reading (guarantee): a malformed file raises
:class:`~privmeter.errors.DataFormatError` whose message starts with
``<path>:<line>:`` and says what was expected and what came; nothing is
guessed or silently dropped.  :func:`open_csv_source` resamples exactly to
the caller's interval (coarser: summed, missing if any part is; finer:
split evenly with the carry rule of :mod:`privmeter.grid.devices.resample`).

Security assumption: none; the parser is strict and bounded (line length,
value magnitude).
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from privmeter.errors import DataFormatError, InvalidArgument
from privmeter.files import read_text_file
from privmeter.grid.devices.resample import resample_energy
from privmeter.grid.devices.source import IntervalReading

__all__ = [
    "CSV_FORMAT_VERSION",
    "CsvSource",
    "open_csv_source",
    "read_csv_readings",
    "write_csv_readings",
]

CSV_FORMAT_VERSION = 1
MAX_LINE_CHARS = 1000  # a v1 line is ~40 characters; refuse pathological input
MAX_ABS_VALUE = 10**12  # Wh or W per interval: far beyond any connection
_VERSION_RE = re.compile(r"^#\s*privmeter-readings\s+v(\d+)\s*$")
_META_RE = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")
_COLUMNS = ("timestamp", "energy_wh", "power_w")


@dataclass(frozen=True, slots=True)
class CsvSource:
    """A parsed readings file, already resampled to ``interval_seconds``."""

    path: str
    interval_seconds: int
    meta: dict[str, str]
    _readings: tuple[IntervalReading, ...]

    def readings(self) -> Iterator[IntervalReading]:
        return iter(self._readings)


def _fail(path: str, line: int, msg: str) -> DataFormatError:
    return DataFormatError(f"{path}:{line}: {msg}", path=path, line=line)


def _parse_ts(text: str) -> int:
    s = text.strip()
    if re.fullmatch(r"-?\d{1,12}", s):
        return int(s)
    try:
        t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise InvalidArgument(
            f"timestamp: expected ISO 8601 with offset or unix seconds, got {text!r}"
        ) from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidArgument(
            f"timestamp: expected an explicit UTC offset ('Z' or '+01:00'), got naive {text!r}"
        )
    if t.microsecond:
        raise InvalidArgument(f"timestamp: expected whole seconds, got {text!r}")
    return int(t.timestamp())


def _parse_int(text: str, name: str) -> int | None:
    s = text.strip()
    if s == "":
        return None
    if not re.fullmatch(r"[+-]?\d{1,13}", s):
        raise InvalidArgument(f"{name}: expected a signed integer or empty, got {text!r}")
    v = int(s)
    if abs(v) > MAX_ABS_VALUE:
        raise InvalidArgument(f"{name}: |value| above {MAX_ABS_VALUE}, got {text!r}")
    return v


def read_csv_readings(
    path: str | Path,
) -> tuple[int, dict[str, str], list[IntervalReading]]:
    """Parse a v1 file at its own interval: ``(interval_seconds, metadata, readings)``.

    Readings are on a regular grid from the first to the last row, gaps filled
    with missing (``energy_wh=None``) readings.
    """
    p = str(path)
    meta: dict[str, str] = {}
    header: list[str] | None = None
    rows: list[tuple[int, int, int | None, int | None]] = []  # line, ts, energy, power
    with io.StringIO(read_text_file(path, "readings"), newline="") as f:
        for lineno, raw in enumerate(f, start=1):
            if len(raw) > MAX_LINE_CHARS:
                raise _fail(p, lineno, f"line longer than {MAX_LINE_CHARS} characters")
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("#"):
                if header is not None:
                    continue
                m = _VERSION_RE.match(line.strip())
                if m:
                    if int(m.group(1)) != CSV_FORMAT_VERSION:
                        raise _fail(
                            p,
                            lineno,
                            f"expected privmeter-readings v{CSV_FORMAT_VERSION}, got v{m.group(1)}",
                        )
                    continue
                mm = _META_RE.match(line.strip())
                if mm:
                    meta[mm.group(1).lower()] = mm.group(2)
                continue
            cells = next(csv.reader([line]))
            if header is None:
                header = [c.strip().lower() for c in cells]
                unknown = [c for c in header if c not in _COLUMNS]
                if (
                    unknown
                    or "timestamp" not in header
                    or "energy_wh" not in header
                    or len(set(header)) != len(header)
                ):
                    raise _fail(
                        p,
                        lineno,
                        "header: expected columns timestamp,energy_wh[,power_w], got " + repr(line),
                    )
                continue
            if len(cells) != len(header):
                raise _fail(p, lineno, f"expected {len(header)} fields, got {len(cells)}: {line!r}")
            rec = dict(zip(header, cells, strict=True))
            try:
                ts = _parse_ts(rec["timestamp"])
                energy = _parse_int(rec["energy_wh"], "energy_wh")
                power = _parse_int(rec["power_w"], "power_w") if "power_w" in rec else None
            except ValueError as exc:
                raise _fail(p, lineno, str(exc)) from None
            if rows and ts <= rows[-1][1]:
                raise _fail(
                    p,
                    lineno,
                    f"timestamps must increase: {rec['timestamp'].strip()!r} after line {rows[-1][0]}",
                )
            rows.append((lineno, ts, energy, power))
    if header is None:
        raise _fail(p, 1, "no header line (expected timestamp,energy_wh[,power_w])")
    if not rows:
        raise _fail(p, 1, "no readings")

    if "interval_seconds" in meta:
        txt = meta["interval_seconds"]
        if not txt.isdigit() or not 1 <= int(txt) <= 86400:
            raise _fail(p, 1, f"interval_seconds: expected an integer in [1, 86400], got {txt!r}")
        interval = int(txt)
    else:
        if len(rows) < 2:
            raise _fail(p, rows[0][0], "one reading and no '# interval_seconds: N' line")
        interval = 0
        for (_, a, _, _), (_, b, _, _) in itertools.pairwise(rows):
            interval = math.gcd(interval, b - a)
        if interval < 60:
            raise _fail(p, rows[0][0], f"inferred interval {interval} s is below 60 s; declare it")
    for lineno, ts, _, _ in rows:
        if ts % interval:
            raise _fail(p, lineno, f"timestamp {ts} is not on a {interval} s interval boundary")

    first = rows[0][1] // interval
    out: list[IntervalReading] = []
    for _lineno, ts, energy, power in rows:
        k = ts // interval
        while first + len(out) < k:
            out.append(IntervalReading(interval=first + len(out), energy_wh=None, power_w=None))
        try:
            out.append(IntervalReading(interval=k, energy_wh=energy, power_w=power))
        except ValueError as exc:
            raise _fail(p, _lineno, str(exc)) from None
    return interval, meta, out


def open_csv_source(path: str | Path, interval_seconds: int) -> CsvSource:
    """Open a v1 readings file as a load source at ``interval_seconds``."""
    if not isinstance(interval_seconds, int) or interval_seconds < 1:  # seconds: real-time tests
        raise InvalidArgument(f"interval_seconds must be a positive int, got {interval_seconds!r}")
    file_interval, meta, readings = read_csv_readings(path)
    if file_interval == interval_seconds:
        return CsvSource(str(path), interval_seconds, meta, tuple(readings))
    if interval_seconds > file_interval and interval_seconds % file_interval == 0:
        # start on a coarse boundary: leading fine intervals before it cannot fill one
        skip = (-readings[0].interval) % (interval_seconds // file_interval)
        readings = readings[skip:]
    try:
        energy = resample_energy([r.energy_wh for r in readings], file_interval, interval_seconds)
    except ValueError as exc:
        raise DataFormatError(f"{path}: {exc}", path=str(path)) from None
    first = readings[0].interval * file_interval // interval_seconds if readings else 0
    if interval_seconds > file_interval:
        per = interval_seconds // file_interval
        powers = [readings[(i + 1) * per - 1].power_w for i in range(len(energy))]
    else:
        per = file_interval // interval_seconds
        powers = [readings[i // per].power_w for i in range(len(energy))]
    out = tuple(
        IntervalReading(interval=first + i, energy_wh=e, power_w=pw)
        for i, (e, pw) in enumerate(zip(energy, powers, strict=True))
    )
    return CsvSource(str(path), interval_seconds, meta, out)


def write_csv_readings(
    path: str | Path,
    readings: Iterable[IntervalReading],
    interval_seconds: int,
    *,
    meta: dict[str, str] | None = None,
) -> int:
    """Write readings in format v1 (ISO timestamps in UTC); returns the number of rows."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(f"# privmeter-readings v{CSV_FORMAT_VERSION}\n")
        f.write(f"# interval_seconds: {interval_seconds}\n")
        for k, v in sorted((meta or {}).items()):
            if (
                not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)
                or "\n" in v
                or k == "interval_seconds"
            ):
                raise InvalidArgument(f"bad metadata entry {k!r}: {v!r}")
            f.write(f"# {k}: {v}\n")
        f.write("timestamp,energy_wh,power_w\n")
        for r in readings:
            t = datetime.datetime.fromtimestamp(r.interval * interval_seconds, tz=datetime.UTC)
            ts = t.strftime("%Y-%m-%dT%H:%M:%SZ")
            e = "" if r.energy_wh is None else str(r.energy_wh)
            pw = "" if r.power_w is None else str(r.power_w)
            f.write(f"{ts},{e},{pw}\n")
            n += 1
    return n
