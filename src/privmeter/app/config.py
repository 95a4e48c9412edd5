"""Per-party configuration files (TOML, ``format = "privmeter.config/1"``).

What it is for: each deployed party -- the utility's head-end, a household
(its Raspberry Pi runs the meter agent and the household agent), a data
concentrator -- reads one TOML file.  ``privmeter init ROLE --dir DIR`` writes
a commented starter file (:func:`starter`); docs/deploy.md documents every
key.  Relative paths in a file are relative to the file's directory.

Rules: ``format`` must be present and equal :data:`CONFIG_FORMAT`; ``role``
must match the command reading the file; an unknown table or key is an error
(a misspelt key never silently falls back to a default); every value is
type- and range-checked here, so a service never starts on a bad file.
Errors are :class:`~privmeter.errors.ConfigError` naming the file and the key.

Security: a config file holds no secret (keys live in the state directory,
mode 0600); it may be world-readable.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privmeter.errors import ConfigError
from privmeter.protocol.codec import DEFAULT_MAX_BYTES

__all__ = [
    "CONCENTRATOR_PREFIX",
    "CONFIG_FORMAT",
    "MAX_RELAYED_BYTES",
    "ROLES",
    "ClusterConfig",
    "ConcentratorConfig",
    "HeadendConfig",
    "HouseholdConfig",
    "cluster_address",
    "cluster_settings",
    "concentrator_id",
    "load_config",
    "starter",
]

CONFIG_FORMAT = "privmeter.config/1"
ROLES = ("headend", "household", "concentrator")


@dataclass(frozen=True, slots=True)
class Ops:
    """``[operations]``: the HTTP endpoint for ``/healthz`` and ``/metrics`` (port 0: none)."""

    http_host: str = "127.0.0.1"
    http_port: int = 0
    log_format: str = "json"  # "json" (one object per line) or "text"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """``[cluster]`` + ``[store]``: the head-end sharded over Ray actors on PostgreSQL (docs/scale.md)."""

    address: str  # "local" (a private Ray started with the head-end), "auto", or "HOST:PORT"
    shards: int
    postgres: str  # libpq connection string or postgresql:// URI (no password: ~/.pgpass)


@dataclass(frozen=True, slots=True)
class HeadendConfig:
    path: Path
    state_dir: Path
    host: str = "0.0.0.0"
    port: int = 7700
    plans: tuple[str, ...] = ("economy7",)
    billing_start: str = "2026-01-01"  # first billing period starts at this UTC midnight
    period_days: int | None = None  # None (and no period_intervals): calendar months (UTC)
    period_intervals: int | None = None  # overrides period_days (short periods for tests)
    settle_after_intervals: int = 2
    group_size: int = 50
    min_survivors: int = 5
    round_timeout_s: float = 30.0
    min_household_key_bits: int = 2048
    demand: bool = False
    cmin_w_per_household: int = 50
    cmax_w_per_household: int = 1200
    concentrators: tuple[tuple[str, str], ...] = ()  # (group, the concentrator's Ed25519 key, hex)
    event_minutes: int = 30  # capped by each group's plan (max_event_minutes)
    ops: Ops = field(default_factory=Ops)
    cluster: ClusterConfig | None = None  # None: one process on SQLite (the embedded default)


@dataclass(frozen=True, slots=True)
class HouseholdConfig:
    path: Path
    state_dir: Path
    meter_id: str
    source: str
    plan: str
    headend_host: str = "127.0.0.1"
    headend_port: int = 7700
    clock_skew_s: int = 30
    concentrator_host: str | None = (
        None  # connect through the feeder's concentrator (its key: signed by the head-end)
    )
    concentrator_port: int = 7800
    ops: Ops = field(default_factory=Ops)


@dataclass(frozen=True, slots=True)
class ConcentratorConfig:
    path: Path
    state_dir: Path
    group: str
    headend_key: str  # the head-end's Ed25519 key (hex, its headend.pub.json): pinned
    listen_host: str = "0.0.0.0"
    listen_port: int = 7800
    headend_host: str = "127.0.0.1"
    headend_port: int = 7700
    max_message_bytes: int = DEFAULT_MAX_BYTES - 64 * 1024  # MAX_RELAYED_BYTES
    ops: Ops = field(default_factory=Ops)

    @property
    def concentrator_id(self) -> str:
        """Its party id at the head-end (and the name it gives itself to the meters)."""
        return concentrator_id(self.group)


CONCENTRATOR_PREFIX = "dc-"  # party ids of data concentrators; no meter id may start with it
MIN_MESSAGE_BYTES = 64 * 1024  # a feeder's key bundle must fit
MAX_RELAYED_BYTES = (
    DEFAULT_MAX_BYTES - 64 * 1024
)  # wrapped in an envelope, it still fits one head-end frame


def concentrator_id(group: str) -> str:
    """The party id of the data concentrator of feeder ``group``."""
    return CONCENTRATOR_PREFIX + group


_SCHEMA: dict[str, dict[str, dict[str, type | tuple[type, ...]]]] = {
    "headend": {
        "": {"format": str, "role": str, "state_dir": str},
        "listen": {"host": str, "port": int},
        "billing": {
            "plans": list,
            "start": str,
            "period_days": int,
            "period_intervals": int,
            "settle_after_intervals": int,
        },
        "aggregation": {"group_size": int, "min_survivors": int, "round_timeout_s": (int, float)},
        "keys": {"min_household_key_bits": int},
        "demand": {
            "enabled": bool,
            "cmin_w_per_household": int,
            "cmax_w_per_household": int,
            "event_minutes": int,
        },
        "concentrators": {"*": str},
        "operations": {"http_host": str, "http_port": int, "log_format": str},
        "cluster": {"address": str, "shards": int},
        "store": {"postgres": str},
    },
    "household": {
        "": {
            "format": str,
            "role": str,
            "state_dir": str,
            "meter_id": str,
            "source": str,
            "plan": str,
            "clock_skew_s": int,
        },
        "headend": {"host": str, "port": int},
        "concentrator": {"host": str, "port": int},
        "operations": {"http_host": str, "http_port": int, "log_format": str},
    },
    "concentrator": {
        "": {"format": str, "role": str, "state_dir": str, "group": str, "max_message_bytes": int},
        "listen": {"host": str, "port": int},
        "headend": {"host": str, "port": int, "key": str},
        "operations": {"http_host": str, "http_port": int, "log_format": str},
    },
}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "headend": (),
    "household": ("meter_id", "source", "plan"),
    "concentrator": ("group", "headend.key"),
}


def _flatten(doc: dict[str, Any], role: str, src: str) -> dict[str, Any]:
    schema = _SCHEMA[role]
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            if key not in schema or key == "":
                raise ConfigError(
                    f"{src}: unknown table [{key}]; expected one of "
                    f"{', '.join(sorted(k for k in schema if k))}"
                )
            table = schema[key]
            for k, v in value.items():
                if "*" in table:  # a free-form table: any key, one value type
                    out[f"{key}.{k}"] = _check(v, table["*"], f"{src}: {key}.{k}")
                    continue
                if k not in table:
                    raise ConfigError(
                        f"{src}: unknown key {key}.{k}; expected one of {', '.join(sorted(table))}"
                    )
                out[f"{key}.{k}"] = _check(v, table[k], f"{src}: {key}.{k}")
        else:
            if key not in schema[""]:
                raise ConfigError(
                    f"{src}: unknown key {key!r}; expected one of {', '.join(sorted(schema['']))}"
                )
            out[key] = _check(value, schema[""][key], f"{src}: {key}")
    return out


def _check(v: Any, want: type | tuple[type, ...], where: str) -> Any:
    if isinstance(v, bool) and want is not bool:
        raise ConfigError(f"{where}: expected {getattr(want, '__name__', want)}, got {v!r}")
    if not isinstance(v, want):
        raise ConfigError(f"{where}: expected {getattr(want, '__name__', want)}, got {v!r}")
    return v


def _port(v: int, where: str, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= v < 65536:
        raise ConfigError(f"{where}: port must be within {'0' if zero_ok else '1'}..65535, got {v}")
    return v


def _positive(v: int, where: str, lo: int = 1) -> int:
    if v < lo:
        raise ConfigError(f"{where}: expected an integer >= {lo}, got {v}")
    return v


def _ops(f: dict[str, Any], src: str) -> Ops:
    fmt = f.get("operations.log_format", "json")
    if fmt not in ("json", "text"):
        raise ConfigError(f"{src}: operations.log_format: expected 'json' or 'text', got {fmt!r}")
    return Ops(
        http_host=f.get("operations.http_host", "127.0.0.1"),
        http_port=_port(f.get("operations.http_port", 0), f"{src}: operations.http_port", True),
        log_format=fmt,
    )


def _key_hex(v: str, where: str) -> str:
    from privmeter.crypto.signing import VerifyKey
    from privmeter.errors import PrivmeterError

    try:
        return VerifyKey.from_hex(v).hex()
    except (ValueError, TypeError, PrivmeterError):
        raise ConfigError(
            f"{where}: expected an Ed25519 public key (64 hex digits, the verify_key of a "
            f"*.pub.json), got {v!r}"
        ) from None


def _group_id(g: str, where: str) -> str:
    from privmeter.protocol.codec import check_id

    try:
        check_id(g, "group")
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if len(concentrator_id(g)) > 64:
        raise ConfigError(f"{where}: group id too long for a concentrator id, got {g!r}")
    return g


MAX_SHARDS = 1024
_PASSWORD = re.compile(
    r"(^|\s)password\s*=|^postgres(ql)?://[^/@]*:[^/@]*@|[?&]password=", re.IGNORECASE
)


def cluster_address(address: str, where: str) -> str:
    """``local``, ``auto`` or ``HOST:PORT`` (ConfigError naming ``where`` otherwise)."""
    if address in ("local", "auto"):
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) < 65536:
        raise ConfigError(
            f'{where}: expected "local", "auto" or HOST:PORT of a Ray cluster, got {address!r}'
        )
    return address


def cluster_settings(
    address: str | None, shards: int | None, postgres: str | None, *, src: str, table: bool
) -> ClusterConfig | None:
    """The ``[cluster]`` and ``[store]`` tables checked together (None: no cluster)."""
    if not table:
        if postgres is not None:
            raise ConfigError(
                f"{src}: store.postgres is the sharded head-end's store: add a [cluster] table "
                "with shards = N (docs/scale.md), or remove it"
            )
        return None
    if shards is None:
        raise ConfigError(
            f"{src}: cluster.shards is missing: how many shards (shards = N in [cluster], "
            "or --shards N)"
        )
    if not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"{src}: cluster.shards: expected 1..{MAX_SHARDS}, got {shards}")
    if not postgres:
        raise ConfigError(
            f"{src}: the cluster needs store.postgres, the shards' PostgreSQL database "
            '(e.g. [store] postgres = "host=/var/run/postgresql dbname=privmeter")'
        )
    if _PASSWORD.search(postgres.strip()):
        raise ConfigError(
            f"{src}: store.postgres: no password in the config file (it may be world-readable); "
            "put it in ~/.pgpass or PGPASSFILE"
        )
    return ClusterConfig(
        address=cluster_address(address or "local", f"{src}: cluster.address"),
        shards=shards,
        postgres=postgres.strip(),
    )


def load_config(
    path: str | Path, role: str, *, cluster: str | None = None, shards: int | None = None
) -> HeadendConfig | HouseholdConfig | ConcentratorConfig:
    """Read, check and return the ``role``'s config file (see the module docstring).

    ``cluster``, ``shards`` (head-end; ``privmeter headend --cluster ADDRESS --shards N``):
    override ``cluster.address`` and ``cluster.shards`` -- with them, a config without a
    ``[cluster]`` table runs sharded too (it still needs ``store.postgres``)."""
    p = Path(path)
    src = str(p)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {src}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{src}: not valid TOML: {exc}") from None
    if doc.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"{src}: format must be {CONFIG_FORMAT!r}, got {doc.get('format')!r}")
    if doc.get("role") != role:
        raise ConfigError(f"{src}: this is a {doc.get('role')!r} config; expected role = {role!r}")
    f = _flatten(doc, role, src)
    for k in _REQUIRED[role]:
        if k not in f:
            raise ConfigError(f"{src}: required key {k!r} is missing")
    base = p.resolve().parent
    state = (base / f.get("state_dir", ".")).resolve()
    ops = _ops(f, src)
    if role == "headend":
        plans = f.get("billing.plans", ["economy7"])
        if not plans or not all(isinstance(x, str) and x for x in plans):
            raise ConfigError(
                f"{src}: billing.plans: expected a non-empty list of plan names or files"
            )
        plans = [x if "/" not in x and not x.endswith(".toml") else str(base / x) for x in plans]
        import datetime

        start = f.get("billing.start", "2026-01-01")
        try:
            datetime.date.fromisoformat(start)
        except ValueError:
            raise ConfigError(
                f"{src}: billing.start: expected a date YYYY-MM-DD, got {start!r}"
            ) from None
        cmin = _positive(
            f.get("demand.cmin_w_per_household", 50), f"{src}: demand.cmin_w_per_household", 0
        )
        cmax = _positive(
            f.get("demand.cmax_w_per_household", 1200), f"{src}: demand.cmax_w_per_household", 0
        )
        if cmin > cmax:
            raise ConfigError(
                f"{src}: demand.cmin_w_per_household ({cmin}) must not exceed "
                f"demand.cmax_w_per_household ({cmax})"
            )
        ev_min = f.get("demand.event_minutes", 30)
        if not 1 <= ev_min <= 1440:
            raise ConfigError(
                f"{src}: demand.event_minutes: expected 1..1440 minutes, got {ev_min}"
            )
        pi = f.get("billing.period_intervals")
        pd = f.get("billing.period_days")
        if pi is None and pd is None and not start.endswith("-01"):
            raise ConfigError(
                f"{src}: billing.start: monthly billing periods start on the 1st, got {start!r}"
            )
        concs: list[tuple[str, str]] = []
        for k, v in f.items():
            if k.startswith("concentrators."):
                g = _group_id(k.split(".", 1)[1], f"{src}: {k}")
                concs.append((g, _key_hex(v, f"{src}: {k}")))
        keys_ = [k for _, k in concs]
        if len(set(keys_)) != len(keys_):
            raise ConfigError(f"{src}: concentrators: one key is listed for two feeders")
        bits = f.get("keys.min_household_key_bits", 2048)
        if bits not in (2048, 3072, 4096):
            raise ConfigError(
                f"{src}: keys.min_household_key_bits: expected 2048, 3072 or 4096, got {bits}"
            )
        sharded = cluster_settings(
            cluster if cluster is not None else f.get("cluster.address"),
            shards if shards is not None else f.get("cluster.shards"),
            f.get("store.postgres"),
            src=src,
            table="cluster" in doc or cluster is not None or shards is not None,
        )
        if sharded is not None and f.get("demand.enabled", False):
            raise ConfigError(
                f"{src}: demand.enabled: demand management does not run on a sharded head-end yet "
                "(its shards hold the feeders); run it on one process, see docs/scale.md"
            )
        if sharded is not None and concs:
            raise ConfigError(
                f"{src}: concentrators: data concentrators cannot serve a sharded head-end yet "
                "(its front door routes by meter); see docs/scale.md"
            )
        return HeadendConfig(
            cluster=sharded,
            path=p,
            state_dir=state,
            host=f.get("listen.host", "0.0.0.0"),
            port=_port(f.get("listen.port", 7700), f"{src}: listen.port", True),
            plans=tuple(plans),
            billing_start=start,
            period_days=None if pd is None else _positive(pd, f"{src}: billing.period_days"),
            period_intervals=None
            if pi is None
            else _positive(pi, f"{src}: billing.period_intervals"),
            settle_after_intervals=_positive(
                f.get("billing.settle_after_intervals", 2), f"{src}: billing.settle_after_intervals"
            ),
            group_size=_positive(
                f.get("aggregation.group_size", 50), f"{src}: aggregation.group_size", 3
            ),
            min_survivors=_positive(
                f.get("aggregation.min_survivors", 5), f"{src}: aggregation.min_survivors", 2
            ),
            round_timeout_s=float(f.get("aggregation.round_timeout_s", 30.0)),
            min_household_key_bits=bits,
            demand=f.get("demand.enabled", False),
            cmin_w_per_household=cmin,
            cmax_w_per_household=cmax,
            event_minutes=ev_min,
            concentrators=tuple(sorted(concs)),
            ops=ops,
        )
    if role == "household":
        from privmeter.protocol.codec import check_id

        try:
            check_id(f["meter_id"], "meter_id")
        except ValueError as exc:
            raise ConfigError(f"{src}: meter_id: {exc}") from None
        if f["meter_id"].startswith(CONCENTRATOR_PREFIX):
            raise ConfigError(
                f"{src}: meter_id: ids starting with {CONCENTRATOR_PREFIX!r} are data concentrators'"
            )
        if ("concentrator.port" in f) and "concentrator.host" not in f:
            raise ConfigError(
                f"{src}: concentrator.host is missing (the [concentrator] table names its address)"
            )
        plan = f["plan"]
        if "/" in plan or plan.endswith(".toml"):
            plan = str(base / plan)
        return HouseholdConfig(
            path=p,
            state_dir=state,
            meter_id=f["meter_id"],
            source=f["source"],
            plan=plan,
            headend_host=f.get("headend.host", "127.0.0.1"),
            headend_port=_port(f.get("headend.port", 7700), f"{src}: headend.port"),
            clock_skew_s=_positive(f.get("clock_skew_s", 30), f"{src}: clock_skew_s", 0),
            concentrator_host=f.get("concentrator.host"),
            concentrator_port=_port(f.get("concentrator.port", 7800), f"{src}: concentrator.port"),
            ops=ops,
        )
    mmb = f.get("max_message_bytes", MAX_RELAYED_BYTES)
    if not MIN_MESSAGE_BYTES <= mmb <= MAX_RELAYED_BYTES:
        raise ConfigError(
            f"{src}: max_message_bytes: expected {MIN_MESSAGE_BYTES}..{MAX_RELAYED_BYTES}, got {mmb}"
        )
    return ConcentratorConfig(
        path=p,
        state_dir=state,
        group=_group_id(f["group"], f"{src}: group"),
        headend_key=_key_hex(f["headend.key"], f"{src}: headend.key"),
        listen_host=f.get("listen.host", "0.0.0.0"),
        listen_port=_port(f.get("listen.port", 7800), f"{src}: listen.port", True),
        headend_host=f.get("headend.host", "127.0.0.1"),
        headend_port=_port(f.get("headend.port", 7700), f"{src}: headend.port"),
        max_message_bytes=mmb,
        ops=ops,
    )


_STARTERS = {
    "headend": """# privmeter head-end (the utility).  Documented in docs/deploy.md.
format = "privmeter.config/1"
role = "headend"
state_dir = "."                  # keys (0600), headend.db, registry.db; relative to this file

[listen]
host = "0.0.0.0"                 # households and concentrators connect here (authenticated, encrypted)
port = 7700

[billing]
plans = ["economy7"]             # the plans households may choose: built-in names or TOML files
start = "{today}"               # the first billing period starts at this UTC midnight
                                 # billing periods are calendar months (UTC) unless one of:
# period_days = 7                # ... a fixed length in days
# period_intervals = 20          # ... a fixed number of intervals (short periods for tests)
settle_after_intervals = 2       # statements go out this many intervals after a period closed

[aggregation]
group_size = 50                  # meters per feeder group when households enrol
min_survivors = 5                # below this, no total is unmasked
round_timeout_s = 30

[keys]
min_household_key_bits = 3072    # refuse household Paillier keys below this (2048 or 3072)

[demand]
enabled = false                  # demand management: when a group's total leaves [Cmin, Cmax], secure
                                 # comparisons (each meter brings one-use keys) and directives (docs/deploy.md)
cmin_w_per_household = 50        # Cmin = this x the group's members (W of average power; private)
cmax_w_per_household = 1200      # Cmax = this x the group's members
event_minutes = 30               # an event's window (capped by the plan's max_event_minutes)

[concentrators]                  # data concentrators (untrusted relays, one per feeder group), if any:
# feeder-1 = "<its Ed25519 key>" # group = the verify_key of its concentrator.pub.json (printed by
                                 # `privmeter init concentrator`); it connects as party "dc-feeder-1"

[operations]
http_host = "127.0.0.1"          # /healthz and /metrics (Prometheus)
http_port = 9100                 # 0: no HTTP endpoint
log_format = "json"              # "json" lines or "text"

# Beyond one core: the head-end sharded by feeder group over Ray actors, on PostgreSQL
# (pip install "privmeter[cluster]"; docs/scale.md).  Without these tables: one process on SQLite.
# [cluster]
# address = "local"              # "local": a private Ray on this machine; "auto": the Ray cluster this
#                                # machine joined (`ray start`); or "HOST:PORT" of the Ray head
# shards = 2                     # feeder groups are spread over this many shards (never fewer later)
# [store]
# postgres = "host=/var/run/postgresql dbname=privmeter"   # libpq DSN or postgresql:// URI; password in ~/.pgpass
""",
    "household": """# privmeter household (the Raspberry Pi beside the meter).  Documented in docs/deploy.md.
format = "privmeter.config/1"
role = "household"
state_dir = "."                  # keys (0600), state.db, enrolment.json; relative to this file
meter_id = "{meter_id}"            # as on the enrolment ticket from the utility
source = "p1:/dev/ttyUSB0"       # p1:DEVICE, p1-tcp:HOST:PORT, dlms:HOST[:PORT], csv:PATH
plan = "economy7"                # the plan you chose (name or TOML file); the utility must offer it
clock_skew_s = 30                # tolerated difference between this clock (NTP) and the utility's

[headend]
host = "utility.example.org"
port = 7700

# [concentrator]                 # connect through your feeder's data concentrator instead (enrolment
# host = "dc.example.org"        # still goes to [headend]); its key comes signed from the head-end
# port = 7800

[operations]
http_host = "127.0.0.1"
http_port = 9101                 # 0: no HTTP endpoint
log_format = "json"
""",
    "concentrator": """# privmeter data concentrator (an untrusted relay for one feeder).  Documented in docs/deploy.md.
format = "privmeter.config/1"
role = "concentrator"
state_dir = "."                  # concentrator.key.json (0600), roster.json; relative to this file
group = "feeder-1"               # the feeder group it relays for (the head-end lists its key under it)
# max_message_bytes = 4128768    # refuse larger messages, either direction; the default, 4 MiB less
                                 # 64 KiB, is the most one head-end frame carries wrapped (a month's
                                 # statement with its log is ~3 MB at 15-minute intervals)

[listen]
host = "0.0.0.0"                 # the feeder's households connect here
port = 7800

[headend]
host = "utility.example.org"
port = 7700
key = ""                         # the head-end's Ed25519 key: verify_key of its headend.pub.json

[operations]
http_host = "127.0.0.1"
http_port = 9102                 # 0: no HTTP endpoint
log_format = "json"
""",
}


def starter(role: str, **values: str) -> str:
    """A commented starter config for ``role`` (``meter_id``, ``today`` filled in)."""
    import datetime

    values.setdefault("meter_id", "m-0001")
    values.setdefault("today", datetime.date.today().replace(day=1).isoformat())
    text = _STARTERS[role]
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text
