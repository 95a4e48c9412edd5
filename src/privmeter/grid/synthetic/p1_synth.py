"""Writing DSMR P1 telegrams: rewrite recorded examples, synthesize realistic streams.

Purpose: the shared example telegrams are single snapshots; tests, demos and
the simulated neighbourhood need *sequences* a real meter would send.
:func:`rewrite_telegram` changes a template's timestamp, registers and power
lines in the template's own units and digit layout and recomputes the CRC
(CRC-16/ARC, see :func:`privmeter.grid.devices.p1.p1_crc16`);
:func:`synthesize_telegrams` turns a power series into such a stream with
exact integer register accumulation, and returns the truth next to each
telegram so a test can compare the decoded readings with it.

Security assumption: none (test and demo tooling; a meter's own telegrams
are never rewritten on the read path).  Guarantee: registers are written
exactly or InvalidArgument (a ValueError) is raised; nothing is rounded except instantaneous
power, to the template line's resolution.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from privmeter.errors import DataFormatError, InvalidArgument
from privmeter.grid.devices.p1 import DEFAULT_TZ, format_p1_timestamp, p1_crc16

__all__ = ["SyntheticTelegram", "rewrite_telegram", "synthesize_telegrams"]

_TRAILER = re.compile(r"!([0-9A-Fa-f]{0,4})\r\n")
_TIMESTAMP = re.compile(r"^0-0:1\.0\.0\((\d{12})([SW]?)\)", re.MULTILINE)
_ENERGY_SCALE = {"kWh": Decimal(1000), "Wh": Decimal(1)}
_POWER_SCALE = {"kW": Decimal(1000), "W": Decimal(1)}


def _format_value(
    template_int: str, template_dec: str, value: Decimal, what: str, exact: bool
) -> str:
    places = len(template_dec)
    q = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    if exact and q != value:
        raise InvalidArgument(f"{what}: {value} is not representable with {places} decimals")
    if q < 0:
        raise InvalidArgument(f"{what}: P1 registers are unsigned, got {value}")
    width = len(template_int) + (places + 1 if places else 0)
    return format(q, f"0{width}.{places}f")


def rewrite_telegram(
    template: str,
    *,
    timestamp: int | None = None,
    tz: str | ZoneInfo = DEFAULT_TZ,
    registers_wh: Mapping[str, int] | None = None,
    power_w: Mapping[str, int] | None = None,
) -> str:
    """A copy of ``template`` with new timestamp/register/power values and a fresh CRC.

    Keys are OBIS ``C.D.E`` codes (``"1.8.1"``, ``"2.8.2"``, ``"1.7.0"``...);
    values are written in the unit and digit layout of the template's line
    (kWh with 3 decimals, Wh, kW, W): registers exactly or not at all
    (InvalidArgument; a template without the line: DataFormatError), power rounded to the line's resolution (it is a measurement).
    Used to build realistic telegram sequences from recorded examples.
    """
    text = template
    values: dict[str, tuple[Decimal, Mapping[str, Decimal], bool]] = {}
    for key, wh in (registers_wh or {}).items():
        values[key] = (Decimal(wh), _ENERGY_SCALE, True)
    for key, w in (power_w or {}).items():
        values[key] = (Decimal(w), _POWER_SCALE, False)
    for key, (value, scales, exact) in values.items():
        pat = re.compile(
            r"^(\d-\d:" + re.escape(key) + r"(?:\*255)?\()(\d+)(?:\.(\d+))?\*(\w+)\)",
            re.MULTILINE,
        )
        m = pat.search(text)
        if m is None:
            raise DataFormatError(f"template has no {key} line")
        unit = m.group(4)
        if unit not in scales:
            raise DataFormatError(f"{key}: unexpected unit {unit!r}")
        new = _format_value(m.group(2), m.group(3) or "", value / scales[unit], key, exact)
        text = text[: m.start()] + f"{m.group(1)}{new}*{unit})" + text[m.end() :]
    if timestamp is not None:
        m = _TIMESTAMP.search(text)
        if m is None:
            raise DataFormatError("template has no 0-0:1.0.0 timestamp line")
        stamp = format_p1_timestamp(timestamp, tz)
        text = text[: m.start(1)] + stamp + text[m.end(2) :]
    start, bang = text.find("/"), text.find("!")
    if start < 0 or bang < start:
        raise DataFormatError("template is not a P1 telegram (/ ... !)")
    trailer = _TRAILER.match(text, bang)
    if trailer is None:
        raise DataFormatError("template has no '!CRC\\r\\n' trailer")
    if trailer.group(1):  # the meter sends a CRC: recompute it
        crc = p1_crc16(text[start : bang + 1].encode("latin-1"))
        text = text[: bang + 1] + f"{crc:04X}\r\n" + text[trailer.end() :]
    return text


@dataclass(frozen=True, slots=True)
class SyntheticTelegram:
    """One telegram of :func:`synthesize_telegrams` with the truth it encodes."""

    unix: int
    import_wh: int  # all import tariffs together
    export_wh: int
    power_w: int
    text: str


def _has_line(template: str, key: str) -> bool:
    return (
        re.search(r"^\d-\d:" + re.escape(key) + r"(?:\*255)?\(", template, re.MULTILINE) is not None
    )


def synthesize_telegrams(
    template: str,
    *,
    start_unix: int,
    power_w: Iterable[int],
    step_s: int = 10,
    import_wh: int = 0,
    export_wh: int = 0,
    tz: str | ZoneInfo = DEFAULT_TZ,
) -> Iterator[SyntheticTelegram]:
    """Telegrams a meter shaped like ``template`` would send for a load series.

    ``power_w[i]`` is the net power (import +, export -) held during
    ``[start_unix + i*step_s, start_unix + (i+1)*step_s)``; one telegram is
    sent at the start of each step (registers floored to Wh, exact integer
    accumulation in W*s).  Import is booked on tariff 1 at night (23:00-07:00
    local, the Dutch low tariff) and tariff 2 by day when the template has
    both; total lines (``1.8.0``/``2.8.0``) are kept consistent.  For replay
    tests and demos: the examples become realistic streams.
    """
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    powers = list(power_w)
    if (
        not any(_has_line(template, k) for k in ("2.8.0", "2.8.1", "2.8.2"))
        and min(powers, default=0) < 0
    ):
        raise InvalidArgument("template has no export register (2.8.x): power must be >= 0")
    has_ts = _TIMESTAMP.search(template) is not None
    tariffs = {d: [k for k in (f"{d}.8.1", f"{d}.8.2") if _has_line(template, k)] for d in (1, 2)}
    totals = {d: _has_line(template, f"{d}.8.0") for d in (1, 2)}
    regs = {1: [import_wh, 0], 2: [export_wh, 0]}  # [tariff 1, tariff 2] in Wh
    acc = {1: [import_wh * 3600, 0], 2: [export_wh * 3600, 0]}  # W*s
    unix = start_unix
    for i in range(len(powers) + 1):
        p = powers[min(i, len(powers) - 1)] if powers else 0  # the load now (last one at the end)
        registers: dict[str, int] = {}
        for d in (1, 2):
            for t, key in enumerate(tariffs[d]):
                registers[key] = regs[d][t]
            if not tariffs[d] or totals[d]:
                registers[f"{d}.8.0"] = sum(regs[d])
        registers = {k: v for k, v in registers.items() if _has_line(template, k)}
        power = {
            k: v for k, v in (("1.7.0", max(p, 0)), ("2.7.0", max(-p, 0))) if _has_line(template, k)
        }
        text = rewrite_telegram(
            template,
            timestamp=unix if has_ts else None,
            tz=zone,
            registers_wh=registers,
            power_w=power,
        )
        yield SyntheticTelegram(unix, sum(regs[1]), sum(regs[2]), p, text)
        if i == len(powers):
            return
        hour = datetime.fromtimestamp(unix, zone).hour
        d = 1 if p >= 0 else 2
        t = 0 if (hour >= 23 or hour < 7 or len(tariffs[d]) < 2) else 1
        acc[d][t] += abs(p) * step_s
        for dd in (1, 2):
            regs[dd] = [a // 3600 for a in acc[dd]]
        unix += step_s
