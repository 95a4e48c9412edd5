"""DLMS/COSEM (IEC 62056): a load source reading a meter's registers and load profile.

Purpose: a utility (or a household with access to its meter's DLMS port)
feeds privmeter's meter side from a real meter's data model over TCP (the
IEC 62056-47 wrapper, port 4059), using the ``dlms-cosem`` package for the
association (AARQ/AARE), GET services (normal and block transfer) and APDU
encoding.  Authentication comes from configuration (:class:`DlmsSettings`):
none, LLS (password) or HLS-GMAC (keys and system title, ciphered APDUs),
handled by ``dlms-cosem``.

What is read:

* profile mode (default, ``profile_obis`` set): the load profile (interface
  class 7, profile generic, default ``1.0.99.1.0.255``), selected by a range
  descriptor on its clock column; its capture objects (attribute 3) name the
  columns, the registers' scaler/unit (attribute 3 of class 3) scale them;
  the capture period (attribute 4) must divide the interval.  Each row is the
  cumulative import/export register at its capture time;
* register mode (``profile_obis=None``): the active-energy registers
  ``1.0.1.8.0.255`` (import) and ``1.0.2.8.0.255`` (export) polled every
  ``poll_s`` seconds, stamped with the receiver clock;
* in both, the instantaneous power registers ``1.0.1.7.0.255`` -
  ``1.0.2.7.0.255`` at each poll (:attr:`DlmsSource.latest_power_w`; also the
  ``power_w`` of the newest interval a poll closes).

Energy per interval follows exactly the rule of :mod:`privmeter.grid.devices.p1`
(the same :class:`~privmeter.grid.devices.p1.P1Reconciler`): a register sample at or
just after each boundary, differences of Wh-floored registers, missing
boundaries -> missing intervals, registers going backwards -> missing and
re-baselined.  Times in the meter's COSEM date-time use its deviation field;
an unspecified deviation means local time in ``tz`` (clock-status DST bit
decides the repeated autumn hour).

Security assumption: the link and the meter are whatever the configured
DLMS security provides (LLS sends the password in clear: use it on a
trusted link only).  Guarantee: every reported energy is an exact difference
of two register values the meter returned; a malformed or oversized answer
raises :class:`~privmeter.errors.MalformedMessage` /
:class:`~privmeter.errors.MessageTooLarge`, a failed association
:class:`~privmeter.errors.TransportError`; the source logs it and reports
the affected intervals missing.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dlms_cosem import cosem, enumerations, exceptions, utils
from dlms_cosem import time as dlms_time
from dlms_cosem.clients.dlms_client import DataResultError, DlmsClient, HLSError
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.protocol.wrappers import WrapperHeader, WrapperProtocolDataUnit

from privmeter.errors import ConfigError, MalformedMessage, MessageTooLarge, TransportError
from privmeter.grid.devices.p1 import DEFAULT_BOUNDARY_LAG_S, DEFAULT_TZ, P1Reconciler, P1Sample
from privmeter.grid.devices.source import IntervalReading, readings_in_executor

__all__ = [
    "DLMS_DEFAULT_PORT",
    "UNIT_W",
    "UNIT_WH",
    "DlmsMeter",
    "DlmsSettings",
    "DlmsSource",
    "ProfileRow",
    "cosem_datetime_to_unix",
]

log = logging.getLogger(__name__)

DLMS_DEFAULT_PORT = 4059  # IANA port of the DLMS/COSEM TCP wrapper (IEC 62056-47)
UNIT_W = 27  # Blue Book unit enum: active power, W
UNIT_WH = 30  # Blue Book unit enum: active energy, Wh
_AUTH = {
    "none": None,
    "lls": enumerations.AuthenticationMechanism.LLS,
    "hls-gmac": enumerations.AuthenticationMechanism.HLS_GMAC,
}
_CLOCK_OBIS = "0.0.1.0.0.255"


# ------------------------------------------------------------------ settings


def _hex_bytes(value: Any, name: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return bytes.fromhex(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name} must be hex, got {value!r}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class DlmsSettings:
    """How to reach and authenticate to one meter, and which objects to read."""

    host: str
    port: int = DLMS_DEFAULT_PORT
    client_address: int = 16  # public client; 1 = management client
    server_address: int = 1  # management logical device
    authentication: str = "none"  # none | lls | hls-gmac
    password: bytes | None = None  # LLS
    encryption_key: bytes | None = None  # HLS-GMAC / ciphered APDUs
    authentication_key: bytes | None = None
    client_system_title: bytes | None = None
    import_obis: str = "1.0.1.8.0.255"
    export_obis: str | None = "1.0.2.8.0.255"
    import_power_obis: str | None = "1.0.1.7.0.255"
    export_power_obis: str | None = "1.0.2.7.0.255"
    profile_obis: str | None = "1.0.99.1.0.255"  # None: poll the registers instead
    tz: str = DEFAULT_TZ
    timeout_s: float = 10.0
    max_apdu_bytes: int = 1 << 20  # a month of 15-min rows is ~100 KiB

    def __post_init__(self) -> None:
        if self.authentication not in _AUTH:
            raise ConfigError(
                f"authentication must be one of {sorted(_AUTH)}, got {self.authentication!r}"
            )
        if self.authentication == "lls" and not self.password:
            raise ConfigError("LLS authentication needs a password (password= or password_file=)")
        if self.authentication == "hls-gmac" and not (
            self.encryption_key and self.authentication_key
        ):
            raise ConfigError("HLS-GMAC needs encryption_key and authentication_key (hex)")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be within 1..65535, got {self.port}")
        for name in (
            "import_obis",
            "export_obis",
            "import_power_obis",
            "export_power_obis",
            "profile_obis",
        ):
            value = getattr(self, name)
            if value is not None:
                try:
                    cosem.Obis.from_string(value)
                except Exception as exc:
                    raise ConfigError(f"{name}: not an OBIS code: {value!r}") from exc
        try:
            ZoneInfo(self.tz)
        except Exception as exc:
            raise ConfigError(f"unknown time zone {self.tz!r}") from exc

    @classmethod
    def from_options(cls, host: str, port: int, options: Mapping[str, Any]) -> DlmsSettings:
        """Settings from string options (a ``--source`` query or a config file section).

        ``password_file`` reads the LLS password from a file (keeps it off the
        command line); keys and system title are hex; ``profile=none`` selects
        register mode.  Unknown options raise ConfigError.
        """
        opts = dict(options)
        kw: dict[str, Any] = {"host": host, "port": port}
        if "password_file" in opts:
            path = Path(str(opts.pop("password_file")))
            try:
                kw["password"] = path.read_bytes().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read password_file {path}: {exc}") from exc
        if "password" in opts:
            pw = opts.pop("password")
            kw["password"] = pw if isinstance(pw, bytes) else str(pw).encode()
        for key in ("encryption_key", "authentication_key", "client_system_title"):
            if key in opts:
                kw[key] = _hex_bytes(opts.pop(key), key)
        for key, target in (
            ("client", "client_address"),
            ("server", "server_address"),
            ("client_address", "client_address"),
            ("server_address", "server_address"),
        ):
            if key in opts:
                try:
                    kw[target] = int(opts.pop(key))
                except ValueError as exc:
                    raise ConfigError(f"{key} must be an integer") from exc
        if "auth" in opts:
            kw["authentication"] = str(opts.pop("auth"))
        if "profile" in opts:
            p = str(opts.pop("profile"))
            kw["profile_obis"] = None if p.lower() in ("none", "") else p
        for key in (
            "authentication",
            "import_obis",
            "export_obis",
            "import_power_obis",
            "export_power_obis",
            "tz",
        ):
            if key in opts:
                v = opts.pop(key)
                kw[key] = None if v in (None, "none") and key != "tz" else str(v)
        if "timeout_s" in opts:
            kw["timeout_s"] = float(opts.pop("timeout_s"))
        if opts:
            raise ConfigError(f"unknown DLMS option(s): {', '.join(sorted(opts))}")
        return cls(**kw)


# ------------------------------------------------------------------ transport


class _WrapperTransport:
    """IEC 62056-47 TCP wrapper transport for ``dlms-cosem``'s DlmsClient.

    Replaces the library's BlockingTcpTransport to fail cleanly on a closed
    connection (it would spin) and to bound the APDU size a peer can announce.
    """

    def __init__(self, settings: DlmsSettings) -> None:
        self.host, self.port = settings.host, settings.port
        self.client_logical_address = settings.client_address
        self.server_logical_address = settings.server_address
        self.timeout = settings.timeout_s
        self._max = settings.max_apdu_bytes
        self._sock: socket.socket | None = None

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise TransportError(
                f"cannot connect to DLMS meter {self.host}:{self.port}: {exc}"
            ) from exc

    def disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, apdu: bytes) -> bytes:
        if self._sock is None:
            raise TransportError("DLMS transport not connected")
        header = WrapperHeader(
            source_wport=self.client_logical_address,
            destination_wport=self.server_logical_address,
            length=len(apdu),
        )
        try:
            self._sock.sendall(WrapperProtocolDataUnit(apdu, header).to_bytes())
            reply = WrapperHeader.from_bytes(self._recv(8))
        except OSError as exc:
            raise TransportError(f"DLMS meter {self.host}:{self.port}: {exc}") from exc
        if reply.version != 1:
            raise MalformedMessage(f"wrapper version 1 expected, got {reply.version}")
        if reply.length > self._max:
            raise MessageTooLarge(f"meter announced a {reply.length}-byte APDU (max {self._max})")
        if reply.source_wport != self.server_logical_address:
            raise MalformedMessage(
                f"reply from wPort {reply.source_wport}, expected {self.server_logical_address}"
            )
        return self._recv(reply.length)

    def _recv(self, n: int) -> bytes:
        if self._sock is None:
            raise TransportError("DLMS: not connected")
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise TransportError(f"DLMS meter closed the connection ({len(buf)}/{n} bytes)")
            buf += chunk
        return bytes(buf)


# ------------------------------------------------------------------ data conversion


def cosem_datetime_to_unix(raw: bytes, tz: str | ZoneInfo = DEFAULT_TZ) -> int:
    """Unix seconds of a 12-byte COSEM date-time (deviation field, or local ``tz``)."""
    if not isinstance(raw, bytes | bytearray) or len(raw) != 12:
        raise MalformedMessage(f"COSEM date-time must be 12 bytes, got {raw!r}")
    try:
        local, _status = dlms_time.datetime_from_bytes(bytes(raw))
    except (ValueError, TypeError) as exc:
        raise MalformedMessage(f"bad COSEM date-time {bytes(raw).hex()}: {exc}") from exc
    naive = local.replace(tzinfo=None)
    deviation = raw[9:11]
    if deviation == b"\x80\x00":  # not specified: meter local time
        zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        dst = bool(raw[11] & 0x80) if raw[11] != 0xFF else False
        o1 = naive.replace(tzinfo=zone, fold=0).utcoffset()
        o2 = naive.replace(tzinfo=zone, fold=1).utcoffset()
        if o1 is None or o2 is None:
            raise MalformedMessage(f"DLMS clock: no UTC offset in time zone {zone}")
        offset = (max(o1, o2) if dst else min(o1, o2)) if o1 != o2 else o1
        return int((naive - datetime(1970, 1, 1) - offset).total_seconds())
    minutes = int.from_bytes(deviation, "big", signed=True)  # local - UTC, negated (Blue Book)
    return int((naive - datetime(1970, 1, 1)).total_seconds()) + minutes * 60


def _scaled(value: Any, scaler_unit: Any, expect_unit: int, what: str) -> Decimal:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"{what}: integer value expected, got {value!r}")
    if (
        not isinstance(scaler_unit, list)
        or len(scaler_unit) != 2
        or not all(isinstance(x, int) for x in scaler_unit)
    ):
        raise MalformedMessage(f"{what}: scaler_unit structure expected, got {scaler_unit!r}")
    scaler, unit = scaler_unit
    if unit != expect_unit:
        raise MalformedMessage(f"{what}: unit {expect_unit} expected, got {unit}")
    if not -10 <= scaler <= 10:
        raise MalformedMessage(f"{what}: scaler {scaler} out of range")
    return Decimal(value).scaleb(scaler)


def _floor(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One load-profile entry: cumulative registers (Wh, floored) at its capture time."""

    unix: int
    import_wh: int
    export_wh: int


class DlmsMeter:
    """One association with a meter (context manager): register and profile reads."""

    def __init__(self, settings: DlmsSettings) -> None:
        self.settings = settings
        self._client = DlmsClient(
            client_logical_address=settings.client_address,
            server_logical_address=settings.server_address,
            io_interface=_WrapperTransport(settings),
            authentication_method=_AUTH[settings.authentication],
            password=settings.password,
            encryption_key=settings.encryption_key,
            authentication_key=settings.authentication_key,
            client_system_title=settings.client_system_title,
            timeout=int(settings.timeout_s),
        )
        self._scalers: dict[str, Any] = {}

    def __enter__(self) -> DlmsMeter:
        self._client.connect()
        try:
            self._client.associate()
        except (exceptions.DlmsClientException, exceptions.LocalDlmsProtocolError, HLSError) as exc:
            self._client.disconnect()
            raise TransportError(
                f"meter {self.settings.host}:{self.settings.port} rejected "
                f"the association (check authentication settings): {exc}"
            ) from exc
        except Exception:
            self._client.disconnect()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._client.release_association()
        except Exception as err:  # a failed release must not mask the result
            log.debug("DLMS release failed: %s", err)
        finally:
            self._client.disconnect()

    def _get(
        self,
        interface: enumerations.CosemInterface,
        obis: str,
        attribute: int,
        access: RangeDescriptor | None = None,
    ) -> Any:
        attr = cosem.CosemAttribute(
            interface=interface, instance=cosem.Obis.from_string(obis), attribute=attribute
        )
        try:
            raw = self._client.get(attr, access_descriptor=access)
            return utils.parse_as_dlms_data(raw)
        except DataResultError as exc:
            raise MalformedMessage(f"GET {obis} attribute {attribute} failed: {exc}") from exc
        except (TransportError, MalformedMessage, MessageTooLarge):
            raise
        except Exception as exc:  # undecodable APDU or data
            raise MalformedMessage(f"GET {obis} attribute {attribute}: bad answer: {exc}") from exc

    def _scaler_unit(self, obis: str) -> Any:
        if obis not in self._scalers:
            self._scalers[obis] = self._get(enumerations.CosemInterface.REGISTER, obis, 3)
        return self._scalers[obis]

    def read_register(self, obis: str, unit: int = UNIT_WH) -> Decimal:
        """Value of a class-3 register in its base unit (Wh or W), exactly."""
        value = self._get(enumerations.CosemInterface.REGISTER, obis, 2)
        return _scaled(value, self._scaler_unit(obis), unit, obis)

    def read_power_w(self) -> int | None:
        """Instantaneous import - export power (W), or None if not configured."""
        s = self.settings
        if s.import_power_obis is None:
            return None
        p = self.read_register(s.import_power_obis, UNIT_W)
        if s.export_power_obis is not None:
            p -= self.read_register(s.export_power_obis, UNIT_W)
        return int(p.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))

    def read_profile(self, start_unix: int, end_unix: int) -> tuple[int, list[ProfileRow]]:
        """(capture period in s, rows captured in [start, end]) of the load profile."""
        s = self.settings
        if s.profile_obis is None:
            raise ConfigError("DLMS: no load profile OBIS code configured")
        pg = enumerations.CosemInterface.PROFILE_GENERIC
        captures = self._get(pg, s.profile_obis, 3)
        period = self._get(pg, s.profile_obis, 4)
        if not isinstance(period, int) or period <= 0:
            raise MalformedMessage(f"capture period must be a positive int, got {period!r}")
        columns = self._columns(captures)
        rng = RangeDescriptor(
            restricting_object=CaptureObject(
                cosem_attribute=cosem.CosemAttribute(
                    interface=enumerations.CosemInterface.CLOCK,
                    instance=cosem.Obis.from_string(_CLOCK_OBIS),
                    attribute=2,
                )
            ),
            from_value=datetime.fromtimestamp(start_unix, ZoneInfo("UTC")),
            to_value=datetime.fromtimestamp(end_unix, ZoneInfo("UTC")),
        )
        buffer = self._get(pg, s.profile_obis, 2, rng)
        return period, self._rows(buffer, columns, period)

    def _columns(self, captures: Any) -> dict[str, int]:
        if not isinstance(captures, list):
            raise MalformedMessage(f"capture_objects must be an array, got {captures!r}")
        index: dict[str, int] = {}
        for i, obj in enumerate(captures):
            if not (
                isinstance(obj, list) and len(obj) == 4 and isinstance(obj[1], bytes | bytearray)
            ):
                raise MalformedMessage(f"capture object {i} malformed: {obj!r}")
            obis = cosem.Obis.from_bytes(bytes(obj[1])).to_string(".")
            index.setdefault(obis, i)
        s = self.settings
        for need in (_CLOCK_OBIS, s.import_obis):
            if need not in index:
                raise MalformedMessage(f"load profile does not capture {need}")
        return index

    def _rows(self, buffer: Any, columns: dict[str, int], period: int) -> list[ProfileRow]:
        if not isinstance(buffer, list):
            raise MalformedMessage(f"profile buffer must be an array, got {type(buffer).__name__}")
        s = self.settings
        imp_su = self._scaler_unit(s.import_obis)
        exp_col = columns.get(s.export_obis) if s.export_obis else None
        exp_su = self._scaler_unit(s.export_obis) if exp_col is not None and s.export_obis else None
        rows: list[ProfileRow] = []
        last_t: int | None = None
        for n, entry in enumerate(buffer):
            if not isinstance(entry, list) or len(entry) <= max(columns.values()):
                raise MalformedMessage(f"profile row {n} malformed: {entry!r}")
            raw_t = entry[columns[_CLOCK_OBIS]]
            if raw_t is None:  # null-compressed clock: previous + capture period
                if last_t is None:
                    raise MalformedMessage(f"profile row {n} has no time and no predecessor")
                t = last_t + period
            else:
                t = cosem_datetime_to_unix(raw_t, s.tz)
            last_t = t
            imp = _floor(_scaled(entry[columns[s.import_obis]], imp_su, UNIT_WH, s.import_obis))
            exp = 0
            if exp_col is not None:
                exp = _floor(_scaled(entry[exp_col], exp_su, UNIT_WH, str(s.export_obis)))
            rows.append(ProfileRow(t, imp, exp))
        return rows


# ------------------------------------------------------------------ source


class DlmsSource:
    """A :class:`~privmeter.grid.devices.source.LoadSource` polling a DLMS/COSEM meter.

    ``poll(now)`` does one association and returns the intervals it closes;
    ``readings()`` polls ``poll_delay_s`` after every interval boundary
    (register mode: every ``poll_s``) and blocks between polls;
    ``areadings()`` runs that loop in a worker thread for asyncio callers.
    A failed poll is logged; intervals it should have closed are reported
    missing once their end is ``max_boundary_lag_s + 60`` s past.
    """

    def __init__(
        self,
        settings: DlmsSettings,
        *,
        interval_seconds: int,
        poll_delay_s: float = 30.0,
        poll_s: float = 10.0,
        backfill_intervals: int = 1,
        max_boundary_lag_s: int = DEFAULT_BOUNDARY_LAG_S,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.interval_seconds = interval_seconds
        self._name = name or f"dlms:{settings.host}:{settings.port}"
        self._clock = clock
        self._delay, self._poll_s, self._backfill = poll_delay_s, poll_s, backfill_intervals
        self.reconciler = P1Reconciler(
            interval_seconds, max_boundary_lag_s=max_boundary_lag_s, name=self._name
        )
        self._since: int | None = None  # newest profile row consumed
        self._closed = threading.Event()
        self.latest_power_w: int | None = None

    def poll(self, now: float | None = None) -> list[IntervalReading]:
        t = self._clock() if now is None else now
        out: list[IntervalReading] = []
        try:
            with DlmsMeter(self.settings) as meter:
                out = self._poll(meter, int(t))
                try:  # power is optional: its failure must not lose the energy just read
                    self.latest_power_w = meter.read_power_w()
                except MalformedMessage as exc:
                    log.warning("%s: power registers unreadable: %s", self._name, exc)
                    self.latest_power_w = None
        except (TransportError, MalformedMessage, MessageTooLarge) as exc:
            log.warning("%s: poll failed: %s", self._name, exc)
            return out + self.reconciler.tick(t)
        if out and out[-1].energy_wh is not None and self.latest_power_w is not None:
            last = out[-1]
            out[-1] = IntervalReading(
                interval=last.interval, energy_wh=last.energy_wh, power_w=self.latest_power_w
            )
        return out + self.reconciler.tick(t)

    def _poll(self, meter: DlmsMeter, now: int) -> list[IntervalReading]:
        s, size = self.settings, self.interval_seconds
        out: list[IntervalReading] = []
        if s.profile_obis is None:
            imp = _floor(meter.read_register(s.import_obis))
            exp = _floor(meter.read_register(s.export_obis)) if s.export_obis else 0
            sample = P1Sample(
                unix=now, import_wh=imp, export_wh=exp, power_w=None, received=float(now)
            )
            return self.reconciler.push(sample)
        start = (
            self._since + 1 if self._since is not None else ((now // size - self._backfill) * size)
        )
        period, rows = meter.read_profile(start, now)
        if size % period:
            raise ConfigError(
                f"load-profile capture period {period} s does not divide the interval ({size} s)"
            )
        for row in sorted(rows, key=lambda r: r.unix):
            if self._since is not None and row.unix <= self._since:
                continue  # the meter sent a row we already consumed
            self._since = row.unix
            out.extend(
                self.reconciler.push(
                    P1Sample(
                        unix=row.unix,
                        import_wh=row.import_wh,
                        export_wh=row.export_wh,
                        power_w=None,
                        received=float(row.unix),
                    )
                )
            )
        return out

    def readings(self) -> Iterator[IntervalReading]:
        size = self.interval_seconds
        while not self._closed.is_set():
            yield from self.poll()
            now = self._clock()
            if self.settings.profile_obis is None:
                wait = self._poll_s
            else:
                wait = (now // size + 1) * size + self._delay - now
            if self._closed.wait(max(wait, 0.0)):
                return

    def areadings(self) -> AsyncIterator[IntervalReading]:
        """``readings()`` for asyncio: the blocking loop runs in the default executor."""
        return readings_in_executor(self.readings(), self.close)

    def close(self) -> None:
        self._closed.set()
