"""Simulation scenarios: who takes part, with which keys, loads, plans and limits.

What it is for: :class:`Scenario` is the full description of one run of
``privmeter simulate`` (households, days, interval, topology, seed, plan,
prosumers, key sizes, network emulation, dropouts, demand limits);
:func:`build` turns it into a :class:`World`: key material, household load
profiles (richardsonpy via :func:`privmeter.grid.synthetic.profiles.generate_households`,
cached), the plan, groups and, for real-time tariffs, the day-ahead price
feed.  ``Scenario(lcl=True)`` is the real-data scenario: the LCL household
MAC000060 billed on the trial's flat and dynamic time-of-use tariffs.

Keys: simulation keys are generated from the scenario seed (deterministic)
and cached under the cache directory (``keys-<bits>-<seed>/``), so a second
run starts fast.  They are for simulation only: a deployment uses
``privmeter keygen``.  Key sizes below 2048 bits need
``insecure_small_keys=True`` (tests only).

The ground truth (every household's true readings) lives in the
:class:`World` for checking the results; no party object reads it except a
meter reading its own household's load.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from privmeter.crypto import elgamal
from privmeter.crypto.paillier import MIN_KEY_BITS, PaillierPrivateKey, generate_keypair
from privmeter.crypto.signing import SigningKey
from privmeter.errors import BaseNotDerived, ConfigError, PlanError
from privmeter.grid.synthetic.profiles import (
    HouseholdProfile,
    default_cache_dir,
    generate_households,
)
from privmeter.grid.tariff.plan_toml import builtin_plan, builtin_plan_names, load_plan
from privmeter.grid.tariff.plans import Plan
from privmeter.grid.tariff.pricefeed import PriceFeed, demo_feed_signing_key
from privmeter.parties.meter_feed import MeterLoad

__all__ = [
    "TOPOLOGIES",
    "HouseholdSpec",
    "Scenario",
    "World",
    "attach_sources",
    "build",
    "comparison_group",
    "day_ahead_prices",
    "household_key",
    "parse_interval",
    "parse_source_args",
    "scenario_from_json",
    "scenario_json",
    "synthetic_homes",
]

TOPOLOGIES = ("star", "ring", "tree")


def parse_interval(text: str) -> int:
    """``15m`` / ``30m`` / ``1m`` / ``900`` / ``1h`` -> seconds (must divide a day)."""
    s = text.strip().lower()
    try:
        if s.endswith("m"):
            v = int(s[:-1]) * 60
        elif s.endswith("h"):
            v = int(s[:-1]) * 3600
        elif s.endswith("s"):
            v = int(s[:-1])
        else:
            v = int(s)
    except ValueError:
        raise ConfigError(f"interval {text!r}: expected e.g. 15m, 30m, 900") from None
    if v < 60 or v % 60 or 86400 % v:
        raise ConfigError(f"interval {text!r}: must be whole minutes dividing a day")
    return v


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One simulation run (see the module docstring); every field has a CLI option."""

    households: int = 20
    days: int = 1
    interval_seconds: int = 900
    topology: str = "star"
    seed: int = 1
    plan: str = "economy7"  # builtin name or a TOML path
    prosumer_share: float = 0.0
    key_bits: int = 3072
    dgk_bits: int = 2048
    insecure_small_keys: bool = False  # tests only: allow keys below 2048 bits
    group_size: int = 50
    min_survivors: int = 5
    demand: bool = True
    cmax_w_per_household: int = 1200
    cmin_w_per_household: int = 50
    dropout: float = 0.0  # probability a meter misses an interval (seeded outages)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    bandwidth_bps: float | None = None
    start: datetime.date = datetime.date(2013, 1, 7)
    lcl: bool = False  # the real-data scenario (MAC000060)
    max_intervals: int | None = None  # cut the run short (tests)
    cache_dir: Path | None = None
    # meter id -> load source spec (privmeter.grid.sources): that meter reads a real meter
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ConfigError(f"topology must be one of {TOPOLOGIES}, got {self.topology!r}")
        if self.households < 1 or self.days < 1:
            raise ConfigError("need at least one household and one day")
        if self.key_bits < MIN_KEY_BITS and not self.insecure_small_keys:
            raise ConfigError(f"--key-bits {self.key_bits} is insecure (minimum {MIN_KEY_BITS})")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.prosumer_share <= 1.0:
            raise ConfigError("dropout must be in [0, 1) and prosumer share in [0, 1]")
        if self.min_survivors < 2:
            raise ConfigError("min_survivors must be at least 2")
        m = self.min_survivors
        if (
            self.households < m and not self.lcl
        ):  # the LCL scenario adds simulated neighbours itself
            raise ConfigError(
                f"at least {m} households are needed: a feeder group has at least "
                f"min_survivors = {m} meters (got {self.households})"
            )
        if self.group_size < m:
            raise ConfigError(
                f"a feeder group has at least min_survivors = {m} meters; "
                f"group size {self.group_size} is too small"
            )
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError(f"loss is a probability below 1 (e.g. 0.01), got {self.loss!r}")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ConfigError("latency and jitter must be 0 ms or more")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ConfigError(f"bandwidth must be positive (bit/s), got {self.bandwidth_bps!r}")
        if self.max_intervals is not None and self.max_intervals < 1:
            raise ConfigError(f"max_intervals must be at least 1, got {self.max_intervals!r}")
        if not isinstance(self.sources, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.sources.items()
        ):
            raise ConfigError(
                'sources must map meter ids to source specs, e.g. {"m00003": "csv:m3.csv"}'
            )
        from privmeter.grid.sources import parse_source_spec

        for spec in self.sources.values():
            parse_source_spec(
                spec
            )  # an unknown scheme or malformed options fail here, before any work

    @property
    def intervals(self) -> int:
        n = self.days * 86400 // self.interval_seconds
        return min(n, self.max_intervals) if self.max_intervals else n


@dataclass(slots=True)
class HouseholdSpec:
    """One household and its meter: ids, keys, plan, load, ground truth."""

    meter_id: str
    group: str
    signing_key: SigningKey
    secret_key: PaillierPrivateKey
    plan: Plan
    load: MeterLoad
    truth_kwh_profile: str = ""  # "sim", "lcl" or "source"
    source: str | None = (
        None  # load source spec: the meter reads it (the load above is then unused)
    )


@dataclass(slots=True)
class World:
    scenario: Scenario
    headend_key: SigningKey
    comparison_group: (
        elgamal.Group | None
    )  # the meters' one-use comparison keys (None: no demand management)
    households: list[HouseholdSpec]
    groups: dict[str, list[str]]
    first_interval: int
    plans: dict[str, Plan]
    feeds: dict[str, PriceFeed] = field(default_factory=dict)  # plan id -> day-ahead feed
    build_seconds: float = 0.0

    @property
    def last_interval(self) -> int:
        return self.first_interval + self.scenario.intervals - 1


# -- keys ------------------------------------------------------------------------------


def _seeded(seed: int, *parts: object) -> random.Random:
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(h[:16], "big"))


def _key_dir(sc: Scenario) -> Path:
    base = sc.cache_dir if sc.cache_dir is not None else default_cache_dir()
    d = Path(base) / f"keys-{sc.key_bits}-{sc.seed}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def household_key(sc: Scenario, index: int) -> PaillierPrivateKey:
    """Household ``index``'s simulation key (deterministic from the seed; cached)."""
    path = _key_dir(sc) / f"hh{index:05d}.json"
    min_bits = sc.key_bits if sc.insecure_small_keys else MIN_KEY_BITS
    if path.exists():
        try:
            return PaillierPrivateKey.from_json(
                path.read_text(), min_bits=min(min_bits, sc.key_bits)
            )
        except (
            BaseNotDerived
        ):  # cached before h_s was derived from n: same primes, the base re-derived
            try:
                d = json.loads(path.read_text())
                sk = PaillierPrivateKey.from_primes(
                    int(d["p"], 16), int(d["q"], 16), min_bits=min(min_bits, sc.key_bits)
                )
                _write_atomic(path, sk.to_json())
                return sk
            except Exception:
                path.unlink(missing_ok=True)
        except Exception:
            path.unlink(missing_ok=True)
    _, sk = generate_keypair(
        sc.key_bits,
        rng=_seeded(sc.seed, "paillier", index),
        insecure_for_tests=sc.insecure_small_keys,
    )
    _write_atomic(path, sk.to_json())
    return sk


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def comparison_group(sc: Scenario) -> elgamal.Group:
    """The group of the meters' own comparison keys for ``dgk_bits`` (test group below 2048, tests only)."""
    return elgamal.group_for_bits(sc.dgk_bits, insecure_for_tests=sc.dgk_bits < 2048)


# -- prices ------------------------------------------------------------------------------


def day_ahead_prices(plan: Plan, first: int, count: int, seed: int) -> dict[int, int]:
    """The utility's published real-time prices for ``count`` intervals (seeded, documented).

    ``lcl-dtou``: the trial's three real prices (Low 3.99, Normal 11.76,
    High 67.20 p/kWh); the trial's actual day-ahead signal calendar is not
    shipped, so the schedule is synthetic: Normal by default, High on a
    seeded share of evening-peak half hours (16:00-20:00 UTC), Low on a
    seeded share of night half hours (00:00-06:00).  Other real-time plans:
    a seeded daily curve within the plan's bounds (cheap nights, dear
    evenings).
    """
    rng = _seeded(seed, "prices", plan.plan_id)
    secs = plan.interval_seconds
    allowed = (
        sorted(plan.tariff.allowed_prices or ())
        if getattr(plan.tariff, "allowed_prices", None)
        else []
    )
    out: dict[int, int] = {}
    for t in range(first, first + count):
        minute = (t * secs % 86400) // 60
        hour = minute // 60
        if len(allowed) >= 3:
            low, normal, high = allowed[0], allowed[len(allowed) // 2], allowed[-1]
            p = normal
            if 16 <= hour < 20 and rng.random() < 0.35:
                p = high
            elif hour < 6 and rng.random() < 0.6:
                p = low
        else:
            lo, hi = int(plan.min_price), int(plan.max_price)
            base = 0.15 + 0.1 * (7 <= hour < 23) + 0.35 * (16 <= hour < 20)
            p = int(lo + (hi - lo) * min(1.0, base + rng.uniform(-0.05, 0.05)))
            p = min(max(p, lo), hi)
        out[t] = p
    return out


def _load_plan(name: str) -> Plan:
    if name in builtin_plan_names():
        return builtin_plan(name)
    return load_plan(name)


# -- building -------------------------------------------------------------------------------


def synthetic_homes(
    sc: Scenario, *, progress: Callable[[int], None] | None = None
) -> list[HouseholdProfile]:
    """The scenario's simulated households, the i-th behind meter ``m{i:05d}`` (profiles cached
    in ``sc.cache_dir``; the same seed gives the same households)."""
    return generate_households(
        sc.households,
        days=sc.days,
        seed=sc.seed,
        start=sc.start,
        prosumer_share=sc.prosumer_share,
        cache_dir=sc.cache_dir,
        progress=progress,
    )


def build(sc: Scenario, *, progress: Callable[[str, int, int], None] | None = None) -> World:
    """Keys, loads, plans, groups and feeds for a scenario (profiles and keys cached)."""
    import time

    t0 = time.perf_counter()
    rng = _seeded(sc.seed, "world")
    headend = SigningKey.from_seed(rng.getrandbits(256).to_bytes(32, "big"))
    dk = comparison_group(sc) if sc.demand else None
    specs: list[HouseholdSpec] = []
    plans: dict[str, Plan] = {}
    if sc.lcl:
        specs, first = _lcl_households(sc, plans)
    else:
        plan = _load_plan(sc.plan)
        if plan.interval_seconds != sc.interval_seconds:
            raise ConfigError(
                f"plan {plan.plan_id!r} bills {plan.interval_seconds} s intervals; "
                f"run with --interval {plan.interval_seconds // 60}m"
            )
        plans[plan.plan_id] = plan
        homes = synthetic_homes(
            sc, progress=(lambda k: progress("profiles", k, sc.households)) if progress else None
        )
        first = homes[0].start_unix // sc.interval_seconds
        for i, h in enumerate(homes):
            if progress:
                progress("keys", i + 1, sc.households)
            specs.append(
                HouseholdSpec(
                    meter_id=f"m{i:05d}",
                    group="",
                    signing_key=_meter_key(sc, i),
                    secret_key=household_key(sc, i),
                    plan=plan,
                    load=MeterLoad(sc.interval_seconds, h.start_unix, h.minute_w, h.deferrable_w),
                    truth_kwh_profile="sim",
                )
            )
    attach_sources(specs, sc.sources)
    groups: dict[str, list[str]] = {}
    size = max(sc.group_size, sc.min_survivors)
    n_groups = max(1, len(specs) // size)
    for i, s in enumerate(specs):
        g = f"feeder-{(i % n_groups) + 1:03d}"
        s.group = g
        groups.setdefault(g, []).append(s.meter_id)
    world = World(sc, headend, dk, specs, groups, first, plans)
    for plan in plans.values():
        if plan.tariff.kind == "realtime":
            fid = plan.tariff.feed_id
            if fid is None:
                raise PlanError(f"real-time plan {plan.plan_id!r} names no price feed")
            prices = day_ahead_prices(plan, first, sc.intervals, sc.seed)
            world.feeds[plan.plan_id] = PriceFeed.publish(
                demo_feed_signing_key(fid), fid, plan.interval_seconds, prices
            )
    world.build_seconds = time.perf_counter() - t0
    return world


def attach_sources(specs: Iterable[HouseholdSpec], sources: Mapping[str, str]) -> None:
    """Give the meters named in ``sources`` a load source (ConfigError on an unknown meter id).

    The household's simulated load is replaced by an empty one: what the
    meter measures is known only once the source reports it.
    """
    specs = list(specs)
    by_id = {h.meter_id: h for h in specs}
    unknown = sorted(set(sources) - set(by_id))
    if unknown:
        ids = [h.meter_id for h in specs]
        raise ConfigError(
            f"--source for unknown meter(s) {', '.join(unknown)}; "
            f"this scenario has {ids[0]}..{ids[-1]}"
            if ids
            else "no meters"
        )
    for mid, spec in sources.items():
        h = by_id[mid]
        h.source = spec
        h.truth_kwh_profile = "source"
        h.load = MeterLoad(
            h.load.interval_seconds, h.load.first_interval * h.load.interval_seconds, fixed={}
        )


def parse_source_args(
    values: Iterable[str], meter_ids: Iterable[str] | None = None
) -> dict[str, str]:
    """``--source`` values -> {meter id: spec}.

    ``METER_ID=SPEC`` names the meter; a bare ``SPEC`` (no ``=`` before the
    scheme's ``:``) is allowed only when ``meter_ids`` holds exactly one meter.
    """
    ids = list(meter_ids) if meter_ids is not None else None
    out: dict[str, str] = {}
    for v in values:
        head = v.split(":", 1)[0]
        if "=" in head:
            mid, _, spec = v.partition("=")
        elif ids is not None and len(ids) == 1:
            mid, spec = ids[0], v
        else:
            raise ConfigError(f"--source {v!r}: say which meter reads it (--source METER_ID=SPEC)")
        mid = mid.strip()
        if not mid or mid in out:
            raise ConfigError(f"--source {v!r}: empty or repeated meter id")
        out[mid] = spec.strip()
    return out


def _meter_key(sc: Scenario, i: int) -> SigningKey:
    return SigningKey.from_seed(
        hashlib.sha256(f"privmeter-sim-meter/{sc.seed}/{i}".encode()).digest()
    )


def _lcl_households(sc: Scenario, plans: dict[str, Plan]) -> tuple[list[HouseholdSpec], int]:
    """MAC000060 twice: once on the trial's flat tariff, once on its dynamic ToU tariff.

    Each copy is a separate meter and household key; the readings are the
    real half-hourly readings of ``days`` days from ``start`` (the LCL
    dToU year 2013).  A group needs ``min_survivors`` members, so the two
    real meters are joined by simulated neighbours (the same real series
    shifted by whole days), which are aggregated but whose bills are also
    checked.
    """
    from privmeter.grid.devices.lcl import lcl_builtin

    if sc.interval_seconds != 1800:
        raise ConfigError(
            "the LCL scenario runs at the trial's 30-minute interval (--interval 30m)"
        )
    series = lcl_builtin()
    flat, dtou = builtin_plan("lcl-flat"), builtin_plan("lcl-dtou")
    plans[flat.plan_id] = flat
    plans[dtou.plan_id] = dtou
    n = max(sc.households, sc.min_survivors + 1)
    specs = []
    first = None
    for i in range(n):
        win = series.window(sc.start + datetime.timedelta(days=7 * (i // 2)), sc.days)
        src = win.to_source(1800)
        readings = {r.interval: r.energy_wh for r in src.readings()}
        base = min(readings)
        if first is None:
            first = base
        # align every copy on the same simulated calendar (real readings, shifted)
        fixed = {first + (t - base): v for t, v in readings.items()}
        plan = flat if i % 2 == 0 else dtou
        specs.append(
            HouseholdSpec(
                meter_id=f"lcl{i:03d}",
                group="",
                signing_key=_meter_key(sc, 10_000 + i),
                secret_key=household_key(sc, 10_000 + i),
                plan=plan,
                load=MeterLoad(1800, first * 1800, fixed=fixed),
                truth_kwh_profile="lcl",
            )
        )
    if first is None:
        raise ConfigError("the LCL scenario needs at least one household")
    return specs, first


def scenario_json(sc: Scenario) -> dict[str, object]:
    d = {k: getattr(sc, k) for k in sc.__dataclass_fields__}
    d["start"] = sc.start.isoformat()
    d["cache_dir"] = None if sc.cache_dir is None else str(sc.cache_dir)
    d["sources"] = dict(sc.sources)
    out: dict[str, object] = json.loads(json.dumps(d))
    return out


def scenario_from_json(d: dict[str, object]) -> Scenario:
    """Inverse of :func:`scenario_json` (unknown keys are errors)."""
    if not isinstance(d, dict):
        raise ConfigError("scenario must be a JSON object")
    known = set(Scenario.__dataclass_fields__)
    extra = set(d) - known
    if extra:
        raise ConfigError(f"unknown scenario keys {sorted(extra)}")
    kw = dict(d)
    if isinstance(kw.get("start"), str):
        try:
            kw["start"] = datetime.date.fromisoformat(str(kw["start"]))
        except ValueError:
            raise ConfigError(
                f"scenario start: expected a date YYYY-MM-DD, got {kw['start']!r}"
            ) from None
    if kw.get("cache_dir") is not None:
        kw["cache_dir"] = Path(str(kw["cache_dir"]))
    try:
        return Scenario(**kw)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"bad scenario: {exc}") from None
