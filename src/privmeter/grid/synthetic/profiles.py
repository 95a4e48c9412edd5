"""Realistic simulated households: richardsonpy (CREST) 1-minute loads with ground truth.

Purpose: generate, for N households, the 1-minute net power a meter would
see, together with the ground truth the privacy evaluation needs (who was
home, asleep or active; which appliance ran when) and the deferrable part of
the load that demand-management directives may move.

Model.  richardsonpy is the Python port of the CREST domestic electricity
model (Richardson et al. 2008/2010).  Per household we draw the number of
residents (1-5, UK household-size shares), let richardsonpy draw its
appliance ownership and a lighting configuration, simulate *active
occupancy* (number of residents at home and awake, a Markov chain in
10-minute steps, weekday/weekend matrices from the UK Time Use Survey) and
then each of its 33 appliances and the house's bulbs minute by minute.  The
lighting model is driven by clear-sky irradiance for the site (pvlib) scaled
by ``LIGHTING_CLEARNESS`` (average UK cloudiness), not by a weather file.

Occupancy mapping (documented ground truth, ``HouseholdProfile.occupancy``):
richardsonpy only knows the number of *active* occupants; an inactive house
is either empty or asleep.  We map per minute:

* ``2`` (home, active): active occupants > 0;
* ``1`` (home, asleep): no active occupant, within a run of inactivity that
  overlaps the core night 01:00-05:00, and the minute lies in 21:00-10:00;
* ``0`` (away): any other inactive minute (e.g. the working day).

The raw count is kept as ``active_occupants``.  Clock times are UTC: the
simulated day starts at UTC midnight of ``start`` (one hour off London
civil time in summer).

Units: integer W per minute; ``minute_w = load - pv`` (import +, export -).
Each appliance's power is rounded to whole W before summing, so
``deferrable_w`` is exactly the sum of the deferrable appliances' rounded W
and ``0 <= deferrable_w <= load``.

Determinism (guarantee): same parameters -> bit-identical profiles.
richardsonpy draws from Python's *global* ``random`` module (it never uses
numpy's RNG); each household seeds it with a SHA-256-derived seed and the
caller's ``random`` state is restored afterwards.  Not thread-safe (global
RNG); generation in several processes is safe.

Caching: every household's load and ground truth is stored as a compressed
``.npz`` (format ``PROFILE_FORMAT``) under the cache directory, written
atomically (temp file + rename), read with ``allow_pickle=False``, named and
checked by a SHA-256 of every generation parameter plus the privmeter and
richardsonpy versions.  A file that does not load or does not match is
regenerated, never trusted.  PV is recomputed (it is cheap and exact).

Security assumption: none; this is simulation input, not protocol data.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import multiprocessing
import os
import random
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privmeter import __version__
from privmeter.errors import DataFormatError, DependencyError, InvalidArgument
from privmeter.grid.devices.resample import interval_energy_wh, minutes_per_interval
from privmeter.grid.devices.source import IntervalReading
from privmeter.grid.synthetic.pv import LONDON, PvSystem, Site, clear_sky_ghi_w_m2, pv_minute_w

__all__ = [
    "APPLIANCES",
    "DEFERRABLE_APPLIANCES",
    "PROFILE_FORMAT",
    "HouseholdProfile",
    "SimSource",
    "default_cache_dir",
    "generate_households",
    "occupancy_states",
    "open_sim_source",
]

log = logging.getLogger(__name__)

PROFILE_FORMAT = 1  # version of the .npz cache layout; bump on any change
MINUTES_PER_DAY = 1440
LIGHTING_CLEARNESS = 0.5  # mean UK clearness index: clear-sky GHI x this drives the lights
# UK household sizes 1..5+ (ONS, Families and Households 2013, rounded)
HOUSEHOLD_SIZE_WEIGHTS = (0.29, 0.35, 0.16, 0.14, 0.06)
PV_KWP_CHOICES = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)  # typical UK domestic arrays
AUTO_POOL_MIN_DAYS = 8  # below ~1 s of work, a process pool costs more than it saves

# richardsonpy's Appliances.csv rows, in order (slugs of its "Device" column)
APPLIANCES: tuple[str, ...] = (
    "chest_freezer", "fridge_freezer", "refrigerator", "upright_freezer",
    "answer_machine", "cassette_cd_player", "clock", "cordless_telephone", "hi_fi",
    "iron", "vacuum", "fax", "personal_computer", "printer", "tv_1", "tv_2", "tv_3",
    "vcr_dvd", "tv_receiver_box", "hob", "oven", "microwave", "kettle", "small_cooking",
    "dish_washer", "tumble_dryer", "washing_machine", "washer_dryer", "deswh", "e_inst",
    "electric_shower", "storage_heaters", "other_electric_space_heating",
)  # fmt: skip
# wet appliances and thermal storage: can run later without loss of service
DEFERRABLE_APPLIANCES = frozenset(
    {"dish_washer", "tumble_dryer", "washing_machine", "washer_dryer", "deswh", "storage_heaters"}
)
_STANDARD_KWH_PER_YEAR = {1: 2700, 2: 3200, 3: 4000, 4: 4400, 5: 5500}  # richardsonpy SFH


def _ro(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class HouseholdProfile:
    """One simulated household, minute by minute from ``start_unix`` (UTC midnight).

    Arrays are read-only.  ``appliance_on`` maps each appliance in
    :data:`APPLIANCES` plus ``"lighting"`` to a bool array (True: running,
    i.e. drawing more than its standby power).
    """

    household_id: str
    start_unix: int
    minute_w: npt.NDArray[np.int64]  # net W: load - pv
    occupancy: npt.NDArray[np.int8]  # 0 away, 1 home asleep, 2 home active
    appliance_on: dict[str, npt.NDArray[np.bool_]]
    deferrable_w: npt.NDArray[np.int64]
    pv_w: npt.NDArray[np.int64] | None
    n_occupants: int = 0
    active_occupants: npt.NDArray[np.int8] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int8)
    )
    pv_kwp: float | None = None

    @property
    def minutes(self) -> int:
        return len(self.minute_w)

    @property
    def load_w(self) -> npt.NDArray[np.int64]:
        """Gross consumption in W (before PV)."""
        return self.minute_w if self.pv_w is None else self.minute_w + self.pv_w

    def interval_energy_wh(self, interval_seconds: int) -> npt.NDArray[np.int64]:
        return interval_energy_wh(self.minute_w, interval_seconds)


@dataclass(frozen=True, slots=True)
class SimSource:
    """A :class:`~privmeter.grid.devices.source.LoadSource` over a simulated profile."""

    profile: HouseholdProfile
    interval_seconds: int

    def readings(self) -> Iterator[IntervalReading]:
        m = minutes_per_interval(self.interval_seconds)
        energy = interval_energy_wh(self.profile.minute_w, self.interval_seconds)
        first = self.profile.start_unix // self.interval_seconds
        w = self.profile.minute_w
        for i, e in enumerate(energy.tolist()):
            yield IntervalReading(interval=first + i, energy_wh=e, power_w=int(w[(i + 1) * m - 1]))


def open_sim_source(profile: HouseholdProfile, interval_seconds: int) -> SimSource:
    """Readings of ``profile`` per interval: exact Wh (carry rule) and the last minute's W."""
    minutes_per_interval(interval_seconds)
    if profile.start_unix % interval_seconds:
        raise InvalidArgument(
            f"profile starts at {profile.start_unix}, not on a {interval_seconds} s boundary"
        )
    if profile.minutes % (interval_seconds // 60):
        raise InvalidArgument(f"profile length {profile.minutes} min is not whole intervals")
    return SimSource(profile, interval_seconds)


# --------------------------------------------------------------------- occupancy


def occupancy_states(active: npt.ArrayLike, start_unix: int) -> npt.NDArray[np.int8]:
    """Map richardsonpy's active-occupant count per minute to 0 away / 1 asleep / 2 active."""
    act = np.asarray(active)
    out = np.where(act > 0, 2, 0).astype(np.int8)
    minute_of_day = (start_unix // 60 + np.arange(len(act))) % MINUTES_PER_DAY
    core_night = (minute_of_day >= 60) & (minute_of_day < 300)
    sleep_hours = (minute_of_day >= 21 * 60) | (minute_of_day < 10 * 60)
    inactive = act <= 0
    # run boundaries of inactivity
    edges = np.diff(np.concatenate([[0], inactive.astype(np.int8), [0]]))
    for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if core_night[s:e].any():
            seg = sleep_hours[s:e]
            out[s:e][seg] = 1
    return out


# --------------------------------------------------------------------- generation


def _derive_seed(*parts: object) -> int:
    h = hashlib.sha256("|".join(str(p) for p in ("privmeter", *parts)).encode())
    return int.from_bytes(h.digest()[:8], "big")


def _params(index: int, seed: int, days: int, start: datetime.date, site: Site) -> dict[str, Any]:
    import richardsonpy

    return {
        "format": PROFILE_FORMAT,
        "privmeter": __version__,
        "richardsonpy": getattr(richardsonpy, "__version__", "?"),
        "index": index,
        "seed": seed,
        "days": days,
        "start": start.isoformat(),
        "site": [site.latitude, site.longitude, site.altitude_m],
        "lighting_clearness": LIGHTING_CLEARNESS,
        "household_size_weights": list(HOUSEHOLD_SIZE_WEIGHTS),
    }


def _cache_key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _unix(d: datetime.date) -> int:
    return int(datetime.datetime(d.year, d.month, d.day, tzinfo=datetime.UTC).timestamp())


def _simulate(params: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
    """Run richardsonpy for one household; returns the arrays stored in the cache."""
    import richardsonpy
    from richardsonpy.classes import appliance as app_model
    from richardsonpy.classes import lighting as light_model
    from richardsonpy.classes import occupancy as occ_model
    from richardsonpy.classes import stochastic_el_load_wrapper as wrapper

    base = Path(richardsonpy.__file__).parent / "inputs"
    start = datetime.date.fromisoformat(params["start"])
    days: int = params["days"]
    site = Site(
        latitude=params["site"][0], longitude=params["site"][1], altitude_m=params["site"][2]
    )
    hh_seed = _derive_seed("household", params["seed"], params["index"])
    own = random.Random(hh_seed)
    n_occ = own.choices(range(1, 6), weights=HOUSEHOLD_SIZE_WEIGHTS)[0]
    light_cfg = own.randrange(100)
    irradiance = clear_sky_ghi_w_m2(_unix(start), days * MINUTES_PER_DAY, site=site)
    irradiance *= LIGHTING_CLEARNESS

    saved = random.getstate()
    random.seed(own.getrandbits(64))
    try:
        occ = occ_model.Occupancy(n_occ, initial_day=start.isoweekday(), nb_days=days)
        appliances = app_model.Appliances(
            str(base / "Appliances.csv"),
            annual_consumption=0.91 * _STANDARD_KWH_PER_YEAR[n_occ],  # 9 % is lighting
            randomize_appliances=True,
        )
        bulbs = light_model.load_lighting_profile(str(base / "LightBulbs.csv"), index=light_cfg)
        profile = wrapper.ElectricityProfile(appliances, bulbs)
        app_w = np.zeros((len(APPLIANCES), days * MINUTES_PER_DAY), dtype=np.int64)
        app_on = np.zeros_like(app_w, dtype=bool)
        light_w = np.zeros(days * MINUTES_PER_DAY, dtype=np.int64)
        standby = np.array([row[5] for row in appliances.data], dtype=np.float64)
        for d in range(days):
            date = start + datetime.timedelta(days=d)
            occ_day = occ.occupancy[144 * d : 144 * (d + 1)]
            sl = slice(d * MINUTES_PER_DAY, (d + 1) * MINUTES_PER_DAY)
            lights = light_model.run_lighting_simulation(
                vOccupancyArray=occ_day,
                vBulbArray=bulbs,
                vIrradianceArray=irradiance[sl],
                light_mod_config=profile.lighting_config,
            )
            stats = profile.activity_statistics["we" if date.weekday() >= 5 else "wd"]
            apps = np.asarray(
                app_model.run_application_simulation(occ_day, appliances, stats, date.month),
                dtype=np.float64,
            )
            if apps.shape != (len(APPLIANCES), MINUTES_PER_DAY):
                raise DependencyError(f"richardsonpy returned appliance shape {apps.shape}")
            app_w[:, sl] = np.rint(apps).astype(np.int64)
            app_on[:, sl] = apps > standby[:, None] + 1e-9
            light_w[sl] = np.rint(np.sum(np.asarray(lights, dtype=np.float64), axis=0))
    finally:
        random.setstate(saved)

    active = np.repeat(np.asarray(occ.occupancy, dtype=np.int8), 10)
    deferrable_idx = [APPLIANCES.index(a) for a in sorted(DEFERRABLE_APPLIANCES)]
    return {
        "format": np.array(PROFILE_FORMAT, dtype=np.int64),
        "key": np.array(_cache_key(params)),
        "n_occupants": np.array(n_occ, dtype=np.int64),
        "load_w": app_w.sum(axis=0) + light_w,
        "light_w": light_w,
        "deferrable_w": app_w[deferrable_idx].sum(axis=0),
        "active_occupants": active,
        "appliance_on_bits": np.packbits(app_on, axis=1),
        "appliance_names": np.array(APPLIANCES),
    }


def _write_atomic(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(path: Path, params: dict[str, Any]) -> dict[str, npt.NDArray[Any]] | None:
    """The cached arrays if the file is intact and made from exactly ``params``."""
    minutes = params["days"] * MINUTES_PER_DAY
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # an .npz is a zip archive
                raise DataFormatError("not an npz archive")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        ok = (
            int(arrays["format"]) == PROFILE_FORMAT
            and str(arrays["key"]) == _cache_key(params)
            and tuple(str(s) for s in arrays["appliance_names"]) == APPLIANCES
            and arrays["load_w"].shape == (minutes,)
            and arrays["light_w"].shape == (minutes,)
            and arrays["deferrable_w"].shape == (minutes,)
            and arrays["active_occupants"].shape == (minutes,)
            and arrays["appliance_on_bits"].shape == (len(APPLIANCES), (minutes + 7) // 8)
            and arrays["load_w"].dtype == np.int64
            and bool(np.all(arrays["deferrable_w"] >= 0))
            and bool(np.all(arrays["deferrable_w"] <= arrays["load_w"]))
        )
    except FileNotFoundError:
        return None
    except (
        OSError,
        DataFormatError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
    ) as exc:
        log.warning("profile cache %s unreadable (%s); regenerating", path, exc)
        return None
    if not ok:
        log.warning("profile cache %s does not match its parameters; regenerating", path)
        return None
    return arrays


def _generate_to_file(params: dict[str, Any], path: str) -> str:
    """Worker: simulate one household and write its cache file (no arrays cross processes)."""
    _write_atomic(Path(path), _simulate(params))
    return path


def default_cache_dir() -> Path:
    """``$PRIVMETER_CACHE/profiles`` if set, else ``~/.cache/privmeter/profiles``."""
    root = os.environ.get("PRIVMETER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "privmeter") / "profiles"


def _assemble(
    arrays: dict[str, npt.NDArray[Any]],
    *,
    household_id: str,
    start_unix: int,
    pv: npt.NDArray[np.int64] | None,
    kwp: float | None,
) -> HouseholdProfile:
    minutes = len(arrays["load_w"])
    bits = np.unpackbits(arrays["appliance_on_bits"], axis=1, count=minutes).astype(bool)
    on = {name: _ro(bits[i].copy()) for i, name in enumerate(APPLIANCES)}
    on["lighting"] = _ro(arrays["light_w"] > 0)
    load = arrays["load_w"].astype(np.int64)
    active = arrays["active_occupants"].astype(np.int8)
    return HouseholdProfile(
        household_id=household_id,
        start_unix=start_unix,
        minute_w=_ro(load - pv if pv is not None else load),
        occupancy=_ro(occupancy_states(active, start_unix)),
        appliance_on=on,
        deferrable_w=_ro(arrays["deferrable_w"].astype(np.int64)),
        pv_w=None if pv is None else _ro(pv),
        n_occupants=int(arrays["n_occupants"]),
        active_occupants=_ro(active),
        pv_kwp=kwp,
    )


def generate_households(
    n: int,
    *,
    days: int,
    seed: int,
    start: datetime.date = datetime.date(2013, 1, 7),  # a Monday in the LCL dynamic-ToU year
    prosumer_share: float = 0.0,
    cache_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
    site: Site = LONDON,
    use_cache: bool = True,
    workers: int | None = None,
) -> list[HouseholdProfile]:
    """Simulate (or load from the cache) households ``0..n-1`` for ``days`` days.

    Household ``i`` depends only on ``(seed, i, days, start, site)``: asking
    for more households keeps the first ones.  Whether household ``i`` has PV
    (``prosumer_share`` of them, drawn per household) and its kWp likewise.
    ``workers``: processes for households not in the cache (``None``: up to 2
    when there is more than ~1 s of work; ``1``: in this process).
    ``progress(k)`` is called with the number of households ready so far.
    """
    if not isinstance(n, int) or n < 0:
        raise InvalidArgument(f"n must be a non-negative int, got {n!r}")
    if not isinstance(days, int) or not 1 <= days <= 3660:
        raise InvalidArgument(f"days must be an int within [1, 3660], got {days!r}")
    if not 0.0 <= prosumer_share <= 1.0:
        raise InvalidArgument(f"prosumer_share must be within [0, 1], got {prosumer_share!r}")
    start_unix = _unix(start)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    if not use_cache:
        tmpdir = tempfile.TemporaryDirectory(prefix="privmeter-profiles-")
        directory = Path(tmpdir.name)

    try:
        params = [_params(i, seed, days, start, site) for i in range(n)]
        paths = [directory / f"hh-{_cache_key(p)[:40]}.npz" for p in params]
        arrays: list[dict[str, npt.NDArray[Any]] | None] = [
            _read_cache(path, p) if use_cache else None
            for path, p in zip(paths, params, strict=True)
        ]
        done = sum(a is not None for a in arrays)
        if progress is not None and done:
            progress(done)
        missing = [i for i, a in enumerate(arrays) if a is None]
        n_workers = workers
        if n_workers is None:
            work_days = len(missing) * days
            n_workers = (
                min(2, os.cpu_count() or 1)
                if (len(missing) > 1 and work_days >= AUTO_POOL_MIN_DAYS)
                else 1
            )
        if n_workers <= 1 or len(missing) <= 1:
            for i in missing:
                a = _simulate(params[i])
                if use_cache:
                    _write_atomic(paths[i], a)
                arrays[i] = a
                done += 1
                if progress is not None:
                    progress(done)
        else:
            # fork is fast and safe while we are single-threaded; never fork a threaded parent
            method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
            ctx = multiprocessing.get_context(method)
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                futures = {
                    pool.submit(_generate_to_file, params[i], str(paths[i])): i for i in missing
                }
                for fut in as_completed(futures):
                    i = futures[fut]
                    fut.result()
                    got = _read_cache(paths[i], params[i])
                    if got is None:
                        raise DependencyError(f"worker output for household {i} is unreadable")
                    arrays[i] = got
                    done += 1
                    if progress is not None:
                        progress(done)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()

    pv_cache: dict[float, npt.NDArray[np.int64]] = {}
    out: list[HouseholdProfile] = []
    for i, maybe in enumerate(arrays):
        if maybe is None:
            raise DataFormatError(f"household {i}: its profile was not generated")
        kwp: float | None = None
        pv: npt.NDArray[np.int64] | None = None
        if prosumer_share > 0.0:
            u = random.Random(_derive_seed("pv", seed, i))
            if u.random() < prosumer_share:
                kwp = u.choice(PV_KWP_CHOICES)
                if kwp not in pv_cache:
                    pv_cache[kwp] = _ro(
                        pv_minute_w(
                            start_unix, days * MINUTES_PER_DAY, system=PvSystem(kwp=kwp), site=site
                        )
                    )
                pv = pv_cache[kwp]
        out.append(
            _assemble(maybe, household_id=f"hh{i:04d}", start_unix=start_unix, pv=pv, kwp=kwp)
        )
    return out
