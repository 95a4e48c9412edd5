"""The ``--source`` registry: one string selects where a meter agent's readings come from.

Purpose: ``privmeter meter --source SPEC`` (and anything else that needs a
:class:`~privmeter.grid.devices.source.LoadSource`) turns a short spec into a source:

==============================  ===============================================
``p1:/dev/ttyUSB0``             DSMR P1 port on a serial device (115200 8N1;
                                ``?baudrate=9600&framing=7E1`` for v2.2/v3)
``p1-tcp:HOST:PORT``            P1 telegrams from a TCP bridge (ser2net, Wi-Fi
                                P1 dongles); ``[::1]:PORT`` for IPv6
``dlms:HOST[:PORT]``            DLMS/COSEM meter over TCP (default port 4059)
``csv:PATH``                    a ``privmeter-readings v1`` CSV file
``sim[:SEED]``                  a simulated household (richardsonpy/pvlib)
==============================  ===============================================

Options follow a ``?`` as ``key=value`` pairs joined by ``&`` (or are passed
as keyword arguments, which win): P1 ``spec`` (auto, v2.2, v3, v4, v5,
fluvius, sagemcom, iskra-ie, eon-hu, q3d), ``tz``, ``baudrate``, ``framing``,
``max_boundary_lag_s``, ``max_power_w``, ``reconnect_delay_s`` (``none``: end
at end of stream); DLMS ``auth`` (none, lls, hls-gmac), ``password_file``,
``client``, ``server``, ``profile`` (an OBIS code, or ``none`` for register
polling), keys in hex, ``tz``, ``poll_delay_s``; sim ``household``, ``days``,
``prosumer_share``.  Secrets belong in files (``password_file=``), not in
the spec, which shows up in process lists and logs.

The real-meter modules import ``dsmr-parser``/``dlms-cosem``/``pyserial``
(the ``meters`` extra), CSV and simulation modules their own dependencies;
each is imported only when its scheme is used.

Security assumption: the spec comes from the local operator, not a peer.
Guarantee: an unknown scheme, an unknown option or a malformed target raises
:class:`~privmeter.errors.ConfigError` naming what is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl

from privmeter.errors import ConfigError
from privmeter.grid.devices.source import LoadSource

__all__ = ["SCHEMES", "SourceSpec", "open_source", "parse_source_spec"]

SCHEMES: dict[str, str] = {
    "p1": "p1:/dev/ttyUSB0  DSMR P1 port on a serial device",
    "p1-tcp": "p1-tcp:HOST:PORT  P1 telegrams from a TCP bridge (ser2net)",
    "dlms": "dlms:HOST[:PORT]  DLMS/COSEM meter over TCP (port 4059)",
    "csv": "csv:PATH  privmeter-readings v1 CSV file",
    "sim": "sim[:SEED]  simulated household",
}


@dataclass(frozen=True, slots=True)
class SourceSpec:
    scheme: str
    target: str
    options: dict[str, str] = field(default_factory=dict)


def _schemes_text() -> str:
    return "; ".join(SCHEMES.values())


def parse_source_spec(spec: str) -> SourceSpec:
    """Split ``scheme:target?k=v&k=v``; ConfigError on an unknown scheme."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty --source; expected one of: {_schemes_text()}")
    body, _, query = spec.strip().partition("?")
    scheme, _, target = body.partition(":")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown source scheme {scheme!r} in {spec!r}; expected one of: {_schemes_text()}"
        )
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise ConfigError(
            f"malformed options {query!r} in {spec!r}: use key=value&key=value"
        ) from exc
    return SourceSpec(scheme, target, options)


def _host_port(target: str, default_port: int | None, spec: str) -> tuple[str, int]:
    if target.startswith("["):  # [IPv6]:port
        host, sep, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"malformed IPv6 address in {spec!r}: use [addr]:port")
    else:
        host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "")
    if not host:
        raise ConfigError(f"{spec!r}: host missing")
    if not port_text:
        if default_port is None:
            raise ConfigError(f"{spec!r}: port missing (HOST:PORT)")
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{spec!r}: port must be an integer, got {port_text!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{spec!r}: port must be within 1..65535, got {port}")
    return host, port


_NUMBER: dict[str, Callable[[str], Any]] = {
    "baudrate": int,
    "max_boundary_lag_s": int,
    "max_power_w": int,
    "read_timeout_s": float,
    "poll_delay_s": float,
    "poll_s": float,
    "backfill_intervals": int,
    "household": int,
    "days": int,
    "prosumer_share": float,
}


def _typed(options: Mapping[str, Any], allowed: set[str], spec: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for {spec!r}; "
            f"accepted: {', '.join(sorted(allowed))}"
        )
    for key, value in options.items():
        if isinstance(value, str) and key in _NUMBER:
            try:
                value = _NUMBER[key](value)
            except ValueError:
                raise ConfigError(f"option {key}={value!r} in {spec!r} is not a number") from None
        if key == "reconnect_delay_s" and isinstance(value, str):
            value = None if value.lower() in ("none", "") else float(value)
        out[key] = value
    return out


def _missing_extra(scheme: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{scheme} sources need the meter libraries: "
        f"pip install -e '.[meters]' in the privmeter checkout ({exc})"
    )


_P1_OPTIONS = {
    "spec",
    "tz",
    "max_boundary_lag_s",
    "max_power_w",
    "reconnect_delay_s",
    "read_timeout_s",
    "clock",
    "name",
}


def open_source(spec: str, *, interval_seconds: int, **options: Any) -> LoadSource:
    """The :class:`~privmeter.grid.devices.source.LoadSource` named by ``spec`` (see module doc)."""
    if not isinstance(interval_seconds, int) or interval_seconds <= 0:
        raise ConfigError(f"interval_seconds must be a positive int, got {interval_seconds!r}")
    parsed = parse_source_spec(spec)
    opts: dict[str, Any] = {**parsed.options, **options}
    scheme, target = parsed.scheme, parsed.target
    if scheme == "p1":
        if not target:
            raise ConfigError(f"{spec!r}: serial device missing (p1:/dev/ttyUSB0)")
        kw = _typed(opts, _P1_OPTIONS | {"baudrate", "framing"}, spec)
        kw.setdefault("reconnect_delay_s", 5.0)
        try:
            from privmeter.grid.devices.p1 import P1Source
        except ImportError as exc:
            raise _missing_extra(scheme, exc) from exc
        return P1Source.serial(target, interval_seconds=interval_seconds, **kw)
    if scheme == "p1-tcp":
        host, port = _host_port(target, None, spec)
        kw = _typed(opts, _P1_OPTIONS, spec)
        kw.setdefault("reconnect_delay_s", 5.0)
        try:
            from privmeter.grid.devices.p1 import P1Source
        except ImportError as exc:
            raise _missing_extra(scheme, exc) from exc
        return P1Source.tcp(host, port, interval_seconds=interval_seconds, **kw)
    if scheme == "dlms":
        try:
            from privmeter.grid.devices import dlms
        except ImportError as exc:
            raise _missing_extra(scheme, exc) from exc
        host, port = _host_port(target, dlms.DLMS_DEFAULT_PORT, spec)
        source_keys = {
            "poll_delay_s",
            "poll_s",
            "backfill_intervals",
            "max_boundary_lag_s",
            "clock",
            "name",
        }
        src_kw = _typed({k: v for k, v in opts.items() if k in source_keys}, source_keys, spec)
        settings = dlms.DlmsSettings.from_options(
            host, port, {k: v for k, v in opts.items() if k not in source_keys}
        )
        return dlms.DlmsSource(settings, interval_seconds=interval_seconds, **src_kw)
    if scheme == "csv":
        if not target:
            raise ConfigError(f"{spec!r}: file path missing (csv:PATH)")
        _typed(opts, set(), spec)
        from privmeter.grid.devices.csvsource import open_csv_source

        return cast(LoadSource, open_csv_source(target, interval_seconds))
    # sim[:seed]
    kw = _typed(opts, {"household", "days", "prosumer_share"}, spec)
    try:
        seed = int(target) if target else 0
    except ValueError:
        raise ConfigError(f"{spec!r}: seed must be an integer (sim:SEED)") from None
    from privmeter.grid.synthetic.profiles import generate_households, open_sim_source

    household = kw.pop("household", 0)
    if household < 0:
        raise ConfigError(f"household must be >= 0, got {household}")
    profiles = generate_households(household + 1, days=kw.pop("days", 1), seed=seed, **kw)
    return cast(LoadSource, open_sim_source(profiles[household], interval_seconds))
