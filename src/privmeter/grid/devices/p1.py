"""DSMR P1 port: a load source that reads a real smart meter's telegrams.

Purpose: let a household run privmeter's meter side on a small computer wired
to the meter's P1 port (Netherlands, Belgium, Luxembourg, Hungary, Ireland...),
either on a serial device (``/dev/ttyUSB0``) or through a TCP bridge
(ser2net-style).  Telegrams are framed and CRC-checked here and parsed by the
``dsmr-parser`` package (DSMR v2.2, v3, v4, v5, Fluvius e-MUCS, Sagemcom
T210-D-r plaintext, Iskra IE, E.ON Hungary, EasyMeter Q3D).

Three layers, each usable alone:

* :class:`P1Decoder` (bytes in, :class:`P1Sample` out): frames telegrams
  (``/`` ... ``!CRC\\r\\n``), drops garbage between telegrams, rejects bad CRCs,
  truncated and oversized telegrams with one log line each.
* :class:`P1Reconciler` (samples in, :class:`IntervalReading` out): turns
  cumulative registers into per-interval energy.
* :class:`P1Source` (a :class:`~privmeter.grid.devices.source.LoadSource`): the two
  above over a serial port, a TCP socket or recorded bytes; ``readings()``
  is a blocking iterator, ``areadings()`` the same as an async iterator.

:mod:`privmeter.grid.synthetic.p1_synth` writes telegrams (rewritten examples,
synthetic streams) for tests and demos.

Interval rule (how a telegram is assigned to an interval): a telegram's time
``t`` is its ``0-0:1.0.0`` timestamp (local time ``YYMMDDhhmmssX``, ``X`` = S
summer / W winter, resolved with the configured time zone; the flag picks the
right hour at the autumn clock change), or, for meters that send none (v2.2,
v3, Q3D), the receiver's clock.  It belongs to interval ``floor(t / I)``.  The
register at boundary ``B_k = k*I`` is taken from the first telegram with
``t >= B_k``, if that telegram came no later than ``B_k + max_boundary_lag_s``
(DSMR v5 sends every second, older meters every 10 s).  Interval ``k`` is
reported iff both of its boundaries are known; its energy is
``(import(B_k+1) - import(B_k)) - (export(B_k+1) - export(B_k))`` in whole Wh
(registers are parsed as :class:`~decimal.Decimal` and floored to Wh *before*
differencing, so the energies of consecutive intervals add up exactly to the
meter's register difference: no drift).  Export is negative.  ``power_w`` is
the last instantaneous import minus export power (``1-0:1.7.0`` - ``1-0:2.7.0``)
seen in the interval.

Bad input (each case logs one line naming what came): bad CRC, truncated or
oversized telegram, garbage between telegrams -> telegram dropped; a v4+
telegram without CRC -> dropped; a register going backwards (meter reset or
replaced) -> the interval in progress is reported missing and the new value
becomes the baseline; a register jump faster than ``max_power_w`` -> telegram
dropped; the meter clock going backwards -> telegrams dropped until it passes
the last accepted time, the interval in progress reported missing; a clock
jump forward, an outage, or no telegram near a boundary -> the intervals whose
boundaries are unknown are reported missing (``energy_wh=None``).  No reading
is ever invented; the protocols treat a missing interval as a dropped meter.

Security assumption: the P1 port is a local, read-only, unauthenticated
interface of a meter the household owns; the CRC-16 detects transmission
errors, not forgery.  Guarantee: every reported energy is an exact register
difference of telegrams that passed the checks above.
"""

from __future__ import annotations

import copy
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from dsmr_parser import telegram_specifications as _ts
from dsmr_parser.exceptions import ParseError as _DsmrParseError
from dsmr_parser.parsers import TelegramParser

from privmeter.errors import ConfigError, InvalidArgument, LocalProtocolError, TransportError
from privmeter.grid.devices.source import IntervalReading, readings_in_executor

__all__ = [
    "DEFAULT_BOUNDARY_LAG_S",
    "DEFAULT_MAX_POWER_W",
    "DEFAULT_TZ",
    "P1_CRC_POLY",
    "P1_SPECS",
    "P1Decoder",
    "P1Reconciler",
    "P1Sample",
    "P1Source",
    "format_p1_timestamp",
    "p1_crc16",
    "parse_p1_timestamp",
]

log = logging.getLogger(__name__)

DEFAULT_TZ = "Europe/Amsterdam"  # DSMR meters send CET/CEST local time
P1_CRC_POLY = 0xA001  # CRC-16/ARC: x^16+x^15+x^2+1 (0x8005) bit-reflected, init 0, no final xor
MAX_TELEGRAM_BYTES = 16_384  # largest DSMR telegram (v5 with 1024-char text) is ~3 KiB
DEFAULT_BOUNDARY_LAG_S = 30  # v4 sends every 10 s: tolerates two lost telegrams
DEFAULT_MAX_POWER_W = 100_000  # above any household connection (3 x 80 A x 400 V ~ 55 kW)

_SAGEMCOM_PLAIN = copy.deepcopy(_ts.SAGEMCOM_T210_D_R)
_SAGEMCOM_PLAIN["general_global_cipher"] = False  # the decrypted telegram is plain DSMR text

P1_SPECS: dict[str, dict[str, Any]] = {
    "v2.2": _ts.V2_2,
    "v3": _ts.V3,
    "v4": _ts.V4,
    "v5": _ts.V5,
    "fluvius": _ts.BELGIUM_FLUVIUS,
    "sagemcom": _SAGEMCOM_PLAIN,
    "iskra-ie": _ts.ISKRA_IE,
    "eon-hu": _ts.EON_HUNGARY,
    "q3d": _ts.Q3D,
}
_NEEDS_CRC = {"v4", "v5", "fluvius", "sagemcom", "eon-hu"}

_TRAILER = re.compile(r"!([0-9A-Fa-f]{0,4})\r\n")
_VERSION = re.compile(r"^1-3:0\.2\.8\((\d+)\)", re.MULTILINE)
_TIMESTAMP = re.compile(r"^0-0:1\.0\.0\((\d{12})([SW]?)\)", re.MULTILINE)
_IMPORT_TARIFFS = tuple(f"ELECTRICITY_USED_TARIFF_{i}" for i in range(1, 5))
_EXPORT_TARIFFS = tuple(f"ELECTRICITY_DELIVERED_TARIFF_{i}" for i in range(1, 5))
_EQUIPMENT = (
    "EQUIPMENT_IDENTIFIER",
    "BELGIUM_EQUIPMENT_IDENTIFIER",
    "Q3D_EQUIPMENT_IDENTIFIER",
    "EQUIPMENT_SERIAL_NUMBER",
)
_ENERGY_SCALE = {"kWh": Decimal(1000), "Wh": Decimal(1)}
_POWER_SCALE = {"kW": Decimal(1000), "W": Decimal(1)}


def _log_counted(name: str, count: int, msg: str, *args: object) -> None:
    """A warning the 1st, 10th, 100th... time (a 1 Hz meter must not flood the log)."""
    if count == 1 or str(count).rstrip("0") == "1":
        log.warning("%s: " + msg + " [%d so far]", name, *args, count)
    else:
        log.debug("%s: " + msg, name, *args)


# ------------------------------------------------------------------ CRC and time


def p1_crc16(data: bytes) -> int:
    """CRC-16/ARC over ``data`` (the telegram from ``/`` through ``!``), as DSMR v4+ sends it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ P1_CRC_POLY if crc & 1 else crc >> 1
    return crc


def _offsets(tz: ZoneInfo, year: int) -> tuple[int, int]:
    """(winter, summer) UTC offsets of ``tz`` in seconds (equal where there is no DST)."""
    jan = datetime(year, 1, 15, 12, tzinfo=tz).utcoffset()
    jul = datetime(year, 7, 15, 12, tzinfo=tz).utcoffset()
    if jan is None or jul is None:
        raise ConfigError(f"time zone {tz} has no UTC offset")
    a, b = int(jan.total_seconds()), int(jul.total_seconds())
    return min(a, b), max(a, b)


def parse_p1_timestamp(text: str, tz: str | ZoneInfo = DEFAULT_TZ) -> int:
    """Unix seconds of a P1 timestamp ``YYMMDDhhmmss[S|W]`` given in ``tz`` local time.

    The S/W flag chooses the summer/winter offset when the local time is
    ambiguous (the repeated hour in autumn).  Raises ValueError if malformed.
    """
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    m = re.fullmatch(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW]?)", text)
    if not m:
        raise InvalidArgument(f"P1 timestamp must be YYMMDDhhmmss[S|W], got {text!r}")
    yy, mo, dd, hh, mi, ss = (int(g) for g in m.groups()[:6])
    naive = datetime(2000 + yy, mo, dd, hh, mi, ss)  # raises ValueError on a bad date
    o1 = naive.replace(tzinfo=zone, fold=0).utcoffset()
    o2 = naive.replace(tzinfo=zone, fold=1).utcoffset()
    if o1 is None or o2 is None:
        raise ConfigError(f"time zone {zone} has no UTC offset")
    offset = o1
    if o1 != o2 and m.group(7):  # the repeated (or skipped) hour: the flag decides
        offset = max(o1, o2) if m.group(7) == "S" else min(o1, o2)
    return int((naive - datetime(1970, 1, 1) - offset).total_seconds())


def format_p1_timestamp(unix: int, tz: str | ZoneInfo = DEFAULT_TZ) -> str:
    """The P1 ``YYMMDDhhmmssX`` text of ``unix`` in ``tz`` (X = S in summer time, else W)."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    local = datetime.fromtimestamp(unix, zone)
    off = local.utcoffset()
    if off is None:
        raise ConfigError(f"time zone {zone} has no UTC offset")
    winter, summer = _offsets(zone, local.year)
    flag = "S" if winter != summer and int(off.total_seconds()) == summer else "W"
    return local.strftime("%y%m%d%H%M%S") + flag


# ------------------------------------------------------------------ decoding


@dataclass(frozen=True, slots=True)
class P1Sample:
    """One accepted telegram, reduced to what the meter agent needs (exact ints)."""

    unix: int  # telegram time (UTC seconds): meter timestamp, or receiver clock
    import_wh: int  # cumulative import register (all tariffs), floored to Wh
    export_wh: int  # cumulative export register (all tariffs), floored to Wh
    power_w: int | None  # instantaneous import - export, W
    received: float  # receiver clock when decoded (for plausibility over clock jumps)
    equipment_id: str | None = None
    spec: str = ""


def _detect_spec(text: str) -> str:
    header = text[: text.find("\r\n")] if "\r\n" in text else text[:40]
    if header.startswith("/FLU"):
        return "fluvius"
    if header.startswith("/ESY"):
        return "q3d"
    if header.startswith("/EST"):
        return "sagemcom"
    if header.startswith("/SAG"):
        return "eon-hu"
    if "MIE5" in header:
        return "iskra-ie"
    m = _VERSION.search(text)
    if m:
        return "v5" if m.group(1).startswith("5") else "v4"
    if _TIMESTAMP.search(text):
        return "v5"
    return "v3"


def _to_wh(obj: Any, name: str) -> Decimal:
    unit = getattr(obj, "unit", None)
    if unit not in _ENERGY_SCALE:
        raise InvalidArgument(f"{name}: expected kWh or Wh, got unit {unit!r}")
    return Decimal(obj.value) * _ENERGY_SCALE[unit]


def _to_w(obj: Any, name: str) -> Decimal:
    unit = getattr(obj, "unit", None)
    if unit not in _POWER_SCALE:
        raise InvalidArgument(f"{name}: expected kW or W, got unit {unit!r}")
    return Decimal(obj.value) * _POWER_SCALE[unit]


def _register(telegram: Any, total: str, tariffs: tuple[str, ...]) -> Decimal | None:
    obj = getattr(telegram, total, None)
    if obj is not None:
        return _to_wh(obj, total)
    parts = [getattr(telegram, t, None) for t in tariffs]
    present = [(t, p) for t, p in zip(tariffs, parts, strict=True) if p is not None]
    if not present:
        return None
    return sum((_to_wh(p, t) for t, p in present), Decimal(0))


class P1Decoder:
    """Bytes from a P1 port in, accepted :class:`P1Sample` out (sans-IO).

    ``spec``: ``"auto"`` (per telegram, from its header and version line) or
    a key of :data:`P1_SPECS`.  ``clock`` gives the receiver time (telegram
    time for meters without a timestamp).  ``stats`` counts outcomes.
    """

    def __init__(
        self,
        *,
        spec: str = "auto",
        tz: str = DEFAULT_TZ,
        clock: Callable[[], float] = time.time,
        name: str = "p1",
    ) -> None:
        if spec != "auto" and spec not in P1_SPECS:
            raise ConfigError(f"unknown P1 spec {spec!r}; known: auto, {', '.join(P1_SPECS)}")
        try:
            self._tz = ZoneInfo(tz)
        except Exception as exc:
            raise ConfigError(f"unknown time zone {tz!r}") from exc
        self._spec = spec
        self._clock = clock
        self._name = name
        self._buf = ""
        self._parsers = {
            k: TelegramParser(v, apply_checksum_validation=False) for k, v in P1_SPECS.items()
        }
        self.stats: Counter[str] = Counter()

    def _reject(self, reason: str, detail: str) -> None:
        self.stats[reason] += 1
        _log_counted(self._name, self.stats[reason], "telegram rejected (%s): %s", reason, detail)

    def feed(self, data: bytes) -> list[P1Sample]:
        """Add bytes; return the samples of every complete, valid telegram."""
        self._buf += data.decode("latin-1")  # lossless: CRC is over the raw bytes
        out: list[P1Sample] = []
        while True:
            start = self._buf.find("/")
            if start < 0:
                self._discard(len(self._buf) if len(self._buf) > MAX_TELEGRAM_BYTES else 0)
                return out
            self._discard(start)
            bang = self._buf.find("!")
            nxt = self._buf.find("/", 1)
            if 0 <= nxt and (bang < 0 or nxt < bang):
                self._reject("truncated", f"new telegram began after {nxt} bytes, before '!'")
                self._buf = self._buf[nxt:]
                continue
            if bang < 0:
                if len(self._buf) > MAX_TELEGRAM_BYTES:
                    self._reject("oversized", f"no '!' within {MAX_TELEGRAM_BYTES} bytes")
                    self._buf = self._buf[1:]
                    continue
                return out
            tail = self._buf[bang : bang + 7]
            m = _TRAILER.match(self._buf, bang)
            if m is None:
                if len(tail) < 7 and re.fullmatch(r"![0-9A-Fa-f]{0,4}\r?", tail):
                    return out  # trailer still arriving
                self._reject("malformed", f"bad trailer {tail!r}")
                self._buf = self._buf[bang + 1 :]
                continue
            telegram = self._buf[: m.end()]
            self._buf = self._buf[m.end() :]
            sample = self._decode(telegram, m.group(1))
            if sample is not None:
                out.append(sample)

    def _discard(self, n: int) -> None:
        if n <= 0:
            return
        junk = self._buf[:n]
        self._buf = self._buf[n:]
        if junk.strip(" \r\n\0"):
            self.stats["garbage"] += 1
            _log_counted(
                self._name,
                self.stats["garbage"],
                "discarded %d bytes between telegrams: %r",
                n,
                junk[:40],
            )

    def _decode(self, telegram: str, crc_text: str) -> P1Sample | None:
        spec = _detect_spec(telegram) if self._spec == "auto" else self._spec
        if crc_text:
            body = telegram[: telegram.rindex("!") + 1]
            crc = p1_crc16(body.encode("latin-1"))
            if crc != int(crc_text, 16):
                self._reject("crc", f"CRC {crc_text} sent, {crc:04X} computed")
                return None
        elif spec in _NEEDS_CRC:
            self._reject("no-crc", f"a {spec} telegram must carry a CRC")
            return None
        try:
            try:
                parsed = self._parsers[spec].parse(telegram, throw_ex=True)
            except _DsmrParseError:
                if not crc_text:  # no CRC: an unparsable line means corruption
                    raise
                # CRC-valid: the meter really sends a line dsmr-parser cannot read;
                # skip that line (dsmr-parser logs it) and keep the rest.
                self.stats["lenient"] += 1
                parsed = self._parsers[spec].parse(telegram, throw_ex=False)
            import_wh = _register(parsed, "ELECTRICITY_IMPORTED_TOTAL", _IMPORT_TARIFFS)
            export_wh = _register(parsed, "ELECTRICITY_EXPORTED_TOTAL", _EXPORT_TARIFFS)
            usage = getattr(parsed, "CURRENT_ELECTRICITY_USAGE", None)
            delivery = getattr(parsed, "CURRENT_ELECTRICITY_DELIVERY", None)
            power: int | None = None
            if usage is not None:
                net = _to_w(usage, "1.7.0")
                if delivery is not None:
                    net -= _to_w(delivery, "2.7.0")
                power = int(net.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
            m = _TIMESTAMP.search(telegram)
            received = self._clock()
            unix = parse_p1_timestamp(m.group(1) + m.group(2), self._tz) if m else int(received)
        except (_DsmrParseError, ValueError, InvalidOperation, ArithmeticError) as exc:
            self._reject("parse", f"{spec}: {exc}")
            return None
        if import_wh is None and export_wh is None:
            self._reject("no-register", f"{spec}: no active-energy register (1.8.x / 2.8.x)")
            return None
        equipment = None
        for name in _EQUIPMENT:
            obj = getattr(parsed, name, None)
            if obj is not None and obj.value is not None:
                equipment = str(obj.value)
                break
        self.stats["accepted"] += 1
        return P1Sample(
            unix=unix,
            import_wh=int((import_wh or Decimal(0)).to_integral_value(rounding=ROUND_FLOOR)),
            export_wh=int((export_wh or Decimal(0)).to_integral_value(rounding=ROUND_FLOOR)),
            power_w=power,
            received=received,
            equipment_id=equipment,
            spec=spec,
        )


# ------------------------------------------------------------------ reconciliation


class P1Reconciler:
    """Samples in, one :class:`IntervalReading` per closed interval out, in order (sans-IO).

    Implements the interval rule of the module docstring.  ``push`` returns
    the intervals a sample closes; ``tick(meter_now)`` closes intervals whose
    end boundary passed with no telegram (a silent meter); ``tick`` takes the
    *meter's* time estimate, so replays and skewed clocks are handled.
    """

    def __init__(
        self,
        interval_seconds: int,
        *,
        max_boundary_lag_s: int = DEFAULT_BOUNDARY_LAG_S,
        max_power_w: int = DEFAULT_MAX_POWER_W,
        stall_grace_s: int = 60,
        name: str = "p1",
    ) -> None:
        if not isinstance(interval_seconds, int) or interval_seconds <= 0:
            raise ConfigError(f"interval_seconds must be a positive int, got {interval_seconds!r}")
        if not 0 <= max_boundary_lag_s < interval_seconds:
            raise ConfigError(
                f"max_boundary_lag_s must be within [0, {interval_seconds}), got {max_boundary_lag_s}"
            )
        self.interval_seconds = interval_seconds
        self._lag = max_boundary_lag_s
        self._max_power = max_power_w
        self._grace = stall_grace_s
        self._name = name
        self._last: P1Sample | None = None
        self._cur: int | None = None
        self._start: tuple[int, int] | None = None  # registers at the start of _cur, if known
        self._power: int | None = None
        self._next_emit: int | None = None  # every interval below this has been reported
        self._clock_back = 0
        self.stats: Counter[str] = Counter()

    def _warn(self, reason: str, msg: str, *args: object) -> None:
        self.stats[reason] += 1
        _log_counted(self._name, self.stats[reason], msg, *args)

    def push(self, s: P1Sample) -> list[IntervalReading]:
        last, size = self._last, self.interval_seconds
        if last is not None:
            if s.unix < last.unix:
                if self._clock_back == 0:
                    self._warn(
                        "clock-back",
                        "meter clock went backwards (%d -> %d); ignoring telegrams until it "
                        "passes %d, interval %s reported missing",
                        last.unix,
                        s.unix,
                        last.unix,
                        self._cur,
                    )
                self._clock_back += 1
                self._start = None
                return []
            if self._clock_back:
                log.warning(
                    "%s: meter clock recovered after %d ignored telegrams",
                    self._name,
                    self._clock_back,
                )
                self._clock_back = 0
            d_imp, d_exp = s.import_wh - last.import_wh, s.export_wh - last.export_wh
            if d_imp < 0 or d_exp < 0 or s.equipment_id != last.equipment_id:
                what = (
                    "meter replaced"
                    if s.equipment_id != last.equipment_id
                    else "register went backwards (meter reset?)"
                )
                self._warn(
                    "replaced" if s.equipment_id != last.equipment_id else "reset",
                    "%s: import %d -> %d Wh, export %d -> %d Wh; interval %s reported "
                    "missing, new baseline taken",
                    what,
                    last.import_wh,
                    s.import_wh,
                    last.export_wh,
                    s.export_wh,
                    self._cur,
                )
                self._start = None
            else:
                dt = max(s.unix - last.unix, s.received - last.received, 1.0)
                allowed = self._max_power * dt / 3600 + 2
                if d_imp > allowed or d_exp > allowed:
                    self._warn(
                        "implausible",
                        "telegram rejected: registers rose by +%d/-%d Wh in %.0f s "
                        "(more than %d W)",
                        d_imp,
                        d_exp,
                        dt,
                        self._max_power,
                    )
                    return []
        self._last = s
        j = s.unix // size
        lag_ok = s.unix - j * size <= self._lag
        regs = (s.import_wh, s.export_wh)
        if self._cur is None:
            self._cur, self._next_emit = j, j
            self._start = regs if lag_ok else None
            if not lag_ok:
                log.info(
                    "%s: started %d s into interval %d; it is reported missing",
                    self._name,
                    s.unix - j * size,
                    j,
                )
            self._power = s.power_w
            return []
        out: list[IntervalReading] = []
        if j == self._cur:
            if s.power_w is not None:
                self._power = s.power_w
            return out
        cur = self._cur
        if self._start is not None and j == cur + 1 and lag_ok:
            energy = (s.import_wh - self._start[0]) - (s.export_wh - self._start[1])
            out.append(IntervalReading(interval=cur, energy_wh=energy, power_w=self._power))
        else:
            out.append(IntervalReading(interval=cur, energy_wh=None, power_w=self._power))
            if self._start is not None:
                self._warn(
                    "late-boundary",
                    "first telegram after the end of interval %d came %d s late (> %d s); "
                    "interval %d reported missing",
                    cur,
                    s.unix - (cur + 1) * size,
                    self._lag,
                    cur,
                )
        if j > cur + 1:
            self._warn(
                "gap",
                "no telegram in intervals %d..%d (outage or clock jump); reported missing",
                cur + 1,
                j - 1,
            )
            out.extend(IntervalReading(interval=k, energy_wh=None) for k in range(cur + 1, j))
        self._cur, self._power = j, s.power_w
        self._start = regs if lag_ok else None
        return self._emit(out)

    def tick(self, meter_now: float) -> list[IntervalReading]:
        """Close, as missing, every interval that ended more than lag+grace ago with no telegram."""
        if self._cur is None or self._next_emit is None:
            return []
        size, out = self.interval_seconds, []
        k = self._next_emit
        while (k + 1) * size + self._lag + self._grace <= meter_now:
            out.append(
                IntervalReading(
                    interval=k, energy_wh=None, power_w=self._power if k == self._cur else None
                )
            )
            k += 1
        if out:
            self._warn(
                "stall",
                "no telegram since %s; intervals %d..%d reported missing",
                self._last.unix if self._last else None,
                out[0].interval,
                out[-1].interval,
            )
        return self._emit(out)

    def _emit(self, readings: list[IntervalReading]) -> list[IntervalReading]:
        if self._next_emit is None:
            raise LocalProtocolError("P1: readings emitted before the source started")
        fresh = [r for r in readings if r.interval >= self._next_emit]
        if fresh:
            self._next_emit = fresh[-1].interval + 1
        return fresh

    @property
    def last_sample(self) -> P1Sample | None:
        return self._last


# ------------------------------------------------------------------ transports


class _Reader(Protocol):
    def read(self) -> bytes | None: ...  # b"": nothing yet (timeout); None: end of stream
    def close(self) -> None: ...


class _SocketReader:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=10)
        except OSError as exc:
            raise TransportError(f"cannot connect to P1 bridge {host}:{port}: {exc}") from exc
        self._sock.settimeout(timeout)

    def read(self) -> bytes | None:
        try:
            data = self._sock.recv(4096)
        except TimeoutError:
            return b""
        except OSError as exc:
            log.warning("P1 socket error: %s", exc)
            return None
        return data or None

    def close(self) -> None:
        self._sock.close()


class _SerialReader:
    def __init__(self, device: str, timeout: float, settings: Mapping[str, Any]) -> None:
        import serial  # pyserial, part of the 'meters' extra

        self._serial_exc: type[Exception] = serial.SerialException
        try:
            self._port = serial.Serial(port=device, timeout=timeout, **settings)
        except (serial.SerialException, ValueError) as exc:
            raise TransportError(f"cannot open P1 serial device {device}: {exc}") from exc

    def read(self) -> bytes | None:
        try:
            data: bytes = self._port.read(1)
            if data and self._port.in_waiting:
                data += self._port.read(self._port.in_waiting)
            return data
        except (self._serial_exc, OSError) as exc:
            log.warning("P1 serial device closed: %s", exc)
            return None

    def close(self) -> None:
        try:
            self._port.cancel_read()
        finally:
            self._port.close()


class _BytesReader:
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)

    def read(self) -> bytes | None:
        return next(self._it, None)

    def close(self) -> None:
        pass


_FRAMING = {"8N1": (8, "N", 1), "7E1": (7, "E", 1)}


class P1Source:
    """A :class:`~privmeter.grid.devices.source.LoadSource` reading a DSMR P1 port.

    Build with :meth:`serial`, :meth:`tcp` or :meth:`replay`.  ``readings()``
    blocks on the device and yields each interval when it closes;
    ``areadings()`` runs the same loop in a worker thread for asyncio callers.
    ``close()`` (any thread) ends both within ``read_timeout_s``.
    ``latest_power_w`` is the most recent instantaneous net power, for
    demand-management comparisons between interval ends.
    """

    def __init__(
        self,
        open_reader: Callable[[], _Reader],
        *,
        interval_seconds: int,
        spec: str = "auto",
        tz: str = DEFAULT_TZ,
        max_boundary_lag_s: int = DEFAULT_BOUNDARY_LAG_S,
        max_power_w: int = DEFAULT_MAX_POWER_W,
        reconnect_delay_s: float | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "p1",
    ) -> None:
        self.interval_seconds = interval_seconds
        self._open = open_reader
        self._clock = clock
        self._reconnect = reconnect_delay_s
        self._name = name
        self.decoder = P1Decoder(spec=spec, tz=tz, clock=clock, name=name)
        self.reconciler = P1Reconciler(
            interval_seconds,
            max_boundary_lag_s=max_boundary_lag_s,
            max_power_w=max_power_w,
            name=name,
        )
        self._closed = threading.Event()
        self.connected = threading.Event()  # set while the device/socket is open

    @classmethod
    def serial(
        cls,
        device: str,
        *,
        interval_seconds: int,
        baudrate: int = 115200,
        framing: str = "8N1",
        read_timeout_s: float = 1.0,
        **kw: Any,
    ) -> P1Source:
        """DSMR v4/v5: 115200 8N1 (the default); v2.2/v3: ``baudrate=9600, framing="7E1"``."""
        if framing not in _FRAMING:
            raise ConfigError(f"framing must be one of {sorted(_FRAMING)}, got {framing!r}")
        bits, parity, stop = _FRAMING[framing]
        settings = {"baudrate": baudrate, "bytesize": bits, "parity": parity, "stopbits": stop}
        kw.setdefault("name", f"p1:{device}")
        return cls(
            lambda: _SerialReader(device, read_timeout_s, settings),
            interval_seconds=interval_seconds,
            **kw,
        )

    @classmethod
    def tcp(
        cls, host: str, port: int, *, interval_seconds: int, read_timeout_s: float = 1.0, **kw: Any
    ) -> P1Source:
        """A raw TCP stream of telegrams (ser2net, ESP-Link, most P1 Wi-Fi dongles)."""
        kw.setdefault("name", f"p1-tcp:{host}:{port}")
        return cls(
            lambda: _SocketReader(host, port, read_timeout_s),
            interval_seconds=interval_seconds,
            **kw,
        )

    @classmethod
    def replay(cls, chunks: Iterable[bytes], *, interval_seconds: int, **kw: Any) -> P1Source:
        """Recorded bytes (e.g. a capture file split in chunks), decoded exactly as live."""
        kw.setdefault("name", "p1-replay")
        return cls(lambda: _BytesReader(chunks), interval_seconds=interval_seconds, **kw)

    @property
    def latest_power_w(self) -> int | None:
        last = self.reconciler.last_sample
        return last.power_w if last is not None else None

    def readings(self) -> Iterator[IntervalReading]:
        reader = self._connect()
        rx_clock: float | None = None
        try:
            while not self._closed.is_set():
                if reader is None:
                    if self._reconnect is None or self._closed.wait(self._reconnect):
                        return
                    reader = self._connect()
                    continue
                data = reader.read()
                if data is None:
                    log.info("%s: end of stream", self._name)
                    self.connected.clear()
                    reader.close()
                    reader = None
                    continue
                for sample in self.decoder.feed(data) if data else ():
                    rx_clock = self._clock()
                    yield from self.reconciler.push(sample)
                if rx_clock is not None and (last := self.reconciler.last_sample) is not None:
                    # a silent (or garbage-only) meter: close intervals by meter-time estimate
                    yield from self.reconciler.tick(last.unix + self._clock() - rx_clock)
        finally:
            self.connected.clear()
            if reader is not None:
                reader.close()

    def _connect(self) -> _Reader | None:
        try:
            reader = self._open()
        except TransportError as exc:
            if self._reconnect is None:
                raise
            log.warning("%s: %s; retrying in %.0f s", self._name, exc, self._reconnect)
            return None
        self.connected.set()
        return reader

    def areadings(self) -> AsyncIterator[IntervalReading]:
        """``readings()`` for asyncio: the blocking loop runs in the default executor."""
        return readings_in_executor(self.readings(), self.close)

    def close(self) -> None:
        self._closed.set()
