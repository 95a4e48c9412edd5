"""Plan files: the TOML reader and validator for :class:`~privmeter.grid.tariff.plans.Plan`.

What it is for: a plan is written as a TOML file (format version
:data:`~privmeter.grid.tariff.plans.PLAN_FORMAT_VERSION`, schema in
``docs/plan-format.md``).  :func:`parse_plan` checks the document's shape
(tables, key names, types, ``HH:MM`` times, ISO dates) and builds the
:class:`~privmeter.grid.tariff.plans.Plan`, whose own constructor checks the
contents (bounds, tier alignment); :func:`load_plan` reads a file,
:func:`builtin_plan` one of the shipped examples.

Guarantee: errors are :class:`~privmeter.errors.PlanError` /
:class:`~privmeter.errors.TariffError` whose message starts with the source
and the field path (``plan.max_price``, ``tariff.tiers[1].start``), named
with the TOML key names, and whose ``context["field"]`` is that path;
unknown keys are errors (typos never pass silently); a file larger than
:data:`MAX_PLAN_BYTES` is refused before parsing.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import re
import tomllib
from importlib import resources
from typing import Any

from privmeter.errors import ConfigError, PlanError, TariffError
from privmeter.grid.tariff.plans import (
    PLAN_FORMAT_VERSION,
    DemandResponse,
    Plan,
    PrivacyBudget,
    _check_tz,
    _err,
    _is_int,
)
from privmeter.grid.tariff.tariffs import DAY_TYPES, MINUTES_PER_DAY, Tariff, TimeOfUseTier

__all__ = ["MAX_PLAN_BYTES", "builtin_plan", "builtin_plan_names", "load_plan", "parse_plan"]

MAX_PLAN_BYTES = 1 << 20  # a plan file is a few KiB; refuse anything absurd
_TIME_RE = re.compile(r"(\d{2}):(\d{2})")
_TOP_KEYS = ("version", "plan", "tariff", "demand_response", "privacy")
_PLAN_KEYS = (
    "id",
    "name",
    "description",
    "currency",
    "interval_seconds",
    "timezone",
    "min_price",
    "max_price",
    "standing_charge_per_day",
)
_TARIFF_KEYS = (
    "kind",
    "price",
    "timezone",
    "holidays",
    "tiers",
    "feed_id",
    "feed_key",
    "allowed_prices",
)
_KIND_KEYS = {
    "flat": ("price",),
    "tou": ("timezone", "holidays", "tiers"),
    "realtime": ("feed_id", "feed_key", "allowed_prices"),
}
_TIER_KEYS = ("name", "price", "start", "end", "days")
_DR_KEYS = ("cap_w", "penalty_price", "rebate_price", "max_event_minutes")
_PRIVACY_KEYS = (
    "comparisons_per_interval",
    "comparisons_per_day",
    "same_threshold_for_group",
    "min_group_size",
    "min_survivors",
    "max_membership_changes_per_day",
)
_TOML_NAMES = {"start_minute": "start", "end_minute": "end", "day_types": "days", "plan_id": "id"}
_REQUIRED = object()


def _table(v: Any, path: str, known: tuple[str, ...], cls: type[ConfigError]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _err(cls, path or "<document>", "a table", v)
    for k in v:
        if k not in known:
            p = f"{path}.{k}" if path else k
            hint = difflib.get_close_matches(k, known, n=1)
            raise cls(
                f"{p}: unknown key{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                f"expected one of {', '.join(known)}",
                field=p,
            )
    return v


def _get(
    t: dict[str, Any], key: str, path: str, cls: type[ConfigError], default: Any = _REQUIRED
) -> Any:
    if key in t:
        return t[key]
    if default is _REQUIRED:
        raise cls(f"{path}.{key}: required key is missing", field=f"{path}.{key}")
    return default


def _typed(v: Any, want: type, path: str, cls: type[ConfigError], what: str) -> Any:
    ok = _is_int(v) if want is int else isinstance(v, want)
    if not ok:
        raise _err(cls, path, what, v)
    return v


def _minute(v: Any, path: str, *, end: bool) -> int:
    if isinstance(v, _dt.time):
        if v.second or v.microsecond or v.tzinfo is not None:
            raise _err(TariffError, path, "a whole local minute 'HH:MM'", v.isoformat())
        m = v.hour * 60 + v.minute
    elif isinstance(v, str) and (mt := _TIME_RE.fullmatch(v)):
        h, mi = int(mt.group(1)), int(mt.group(2))
        if mi >= 60 or h > 24 or (h == 24 and (mi or not end)):
            raise _err(TariffError, path, "a time 'HH:MM' (00:00-23:59, or 24:00 as an end)", v)
        m = h * 60 + mi
    else:
        raise _err(TariffError, path, "a time 'HH:MM'", v)
    return MINUTES_PER_DAY if end and m == 0 else m


def _holiday(v: Any, path: str) -> str:
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        return v.isoformat()
    if isinstance(v, str):
        return v  # Tariff validates the ISO form and names the index
    raise _err(TariffError, path, "an ISO date 'YYYY-MM-DD'", v)


def _renamed(exc: ConfigError, prefix: str = "") -> ConfigError:
    """Same error with dataclass field names mapped to TOML key names (and a path prefix)."""
    f = str(exc.context.get("field", ""))
    msg = str(exc.args[0]) if exc.args else ""
    new_f = prefix + f
    for py, toml in _TOML_NAMES.items():
        new_f = re.sub(rf"\b{py}\b", toml, new_f)
    if f and msg.startswith(f):
        msg = new_f + msg[len(f) :]
    ctx = dict(exc.context)
    ctx["field"] = new_f
    return type(exc)(msg, **ctx)


def _parse_tariff(t: dict[str, Any], plan_tz: str) -> Tariff:
    _table(t, "tariff", _TARIFF_KEYS, TariffError)
    kind = _typed(
        _get(t, "kind", "tariff", TariffError),
        str,
        "tariff.kind",
        TariffError,
        "one of 'flat', 'tou', 'realtime'",
    )
    for k in t:
        if k != "kind" and kind in _KIND_KEYS and k not in _KIND_KEYS[kind]:
            raise TariffError(
                f"tariff.{k}: not allowed for a {kind!r} tariff (it takes {', '.join(_KIND_KEYS[kind])})",
                field=f"tariff.{k}",
            )
    kw: dict[str, Any] = {"kind": kind}
    if "price" in t:
        kw["price"] = t["price"]
    if "feed_id" in t:
        kw["feed_id"] = t["feed_id"]
    if "feed_key" in t:
        kw["feed_key"] = t["feed_key"]
    if "allowed_prices" in t:
        kw["allowed_prices"] = _typed(
            t["allowed_prices"],
            list,
            "tariff.allowed_prices",
            TariffError,
            "an array of int prices",
        )
    if "holidays" in t:
        hol = _typed(t["holidays"], list, "tariff.holidays", TariffError, "an array of ISO dates")
        kw["holidays"] = tuple(_holiday(h, f"tariff.holidays[{i}]") for i, h in enumerate(hol))
    if "timezone" in t:
        kw["timezone"] = t["timezone"]
    elif kind == "tou":
        kw["timezone"] = plan_tz
    if "tiers" in t:
        raw = _typed(
            t["tiers"], list, "tariff.tiers", TariffError, "an array of [[tariff.tiers]] tables"
        )
        tiers = []
        for i, r in enumerate(raw):
            p = f"tariff.tiers[{i}]"
            _table(r, p, _TIER_KEYS, TariffError)
            days = _typed(
                _get(r, "days", p, TariffError),
                list,
                f"{p}.days",
                TariffError,
                f"an array of day types {DAY_TYPES}",
            )
            try:
                tiers.append(
                    TimeOfUseTier(
                        name=_get(r, "name", p, TariffError),
                        price=_get(r, "price", p, TariffError),
                        start_minute=_minute(
                            _get(r, "start", p, TariffError), f"{p}.start", end=False
                        ),
                        end_minute=_minute(_get(r, "end", p, TariffError), f"{p}.end", end=True),
                        day_types=tuple(days),
                    )
                )
            except TariffError as exc:
                f = str(exc.context.get("field", ""))
                raise (exc if f.startswith("tariff.") else _renamed(exc, p + ".")) from None
        kw["tiers"] = tuple(tiers)
    try:
        return Tariff(**kw)
    except TariffError as exc:
        raise _renamed(exc) from None


def _plan_from_doc(doc: dict[str, Any]) -> Plan:
    _table(doc, "", _TOP_KEYS, PlanError)
    if "version" not in doc:
        raise PlanError("version: required key is missing (expected version = 1)", field="version")
    version = doc["version"]
    if not _is_int(version) or version != PLAN_FORMAT_VERSION:
        raise _err(
            PlanError,
            "version",
            f"{PLAN_FORMAT_VERSION} (the plan format this code reads)",
            version,
        )
    if "plan" not in doc:
        raise PlanError("plan: required table is missing", field="plan")
    pt = _table(doc["plan"], "plan", _PLAN_KEYS, PlanError)
    if "tariff" not in doc:
        raise TariffError("tariff: required table is missing", field="tariff")
    timezone = pt.get("timezone", "UTC")
    _check_tz(timezone, "plan.timezone", PlanError)
    tariff = _parse_tariff(_table(doc["tariff"], "tariff", _TARIFF_KEYS, TariffError), timezone)
    dr = None
    if "demand_response" in doc:
        d = _table(doc["demand_response"], "demand_response", _DR_KEYS, PlanError)
        dr = DemandResponse(**{k: _get(d, k, "demand_response", PlanError) for k in _DR_KEYS})
    pr = _table(doc.get("privacy", {}), "privacy", _PRIVACY_KEYS, PlanError)
    privacy = PrivacyBudget(**pr)
    kw = {k: pt[k] for k in _PLAN_KEYS if k in pt and k != "id"}
    for k in ("id", "name", "currency", "interval_seconds"):
        _get(pt, k, "plan", PlanError)
    try:
        return Plan(plan_id=pt["id"], tariff=tariff, demand_response=dr, privacy=privacy, **kw)
    except ConfigError as exc:
        raise _renamed(exc) from None


def parse_plan(text: str, *, source: str = "<string>") -> Plan:
    """Parse and validate a plan from TOML text.

    Errors are :class:`~privmeter.errors.PlanError` (or
    :class:`~privmeter.errors.TariffError` for the ``[tariff]`` table) with a
    message ``"<source>: <field path>: expected ..., got ..."`` and
    ``context["field"]`` = the field path.
    """
    if not isinstance(text, str):
        raise PlanError(f"{source}: expected TOML text (str), got {type(text).__name__}", field="")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        raise PlanError(f"{source}: plan file larger than {MAX_PLAN_BYTES} bytes", field="")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML: {exc}", field="") from None
    try:
        return _plan_from_doc(doc)
    except ConfigError as exc:
        msg = str(exc.args[0]) if exc.args else ""
        raise type(exc)(f"{source}: {msg}", **exc.context) from None


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and parse a plan file (UTF-8 TOML)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"{p}: cannot read plan file ({exc.strerror or exc})", field="") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlanError(f"{p}: plan file is not UTF-8", field="") from None
    return parse_plan(text, source=p)


def builtin_plan_names() -> tuple[str, ...]:
    """Names of the example plans shipped in ``privmeter/data/plans``."""
    root = resources.files("privmeter") / "data" / "plans"
    return tuple(sorted(e.name[:-5] for e in root.iterdir() if e.name.endswith(".toml")))


def builtin_plan(name: str) -> Plan:
    """One of the shipped example plans: ``lcl-flat``, ``lcl-dtou``, ``economy7``, ``realtime-demo``."""
    names = builtin_plan_names()
    if name not in names:
        raise PlanError(
            f"no built-in plan {name!r}; expected one of {', '.join(names)}", field="name"
        )
    res = resources.files("privmeter") / "data" / "plans" / f"{name}.toml"
    return parse_plan(res.read_text(encoding="utf-8"), source=f"<builtin {name}>")
