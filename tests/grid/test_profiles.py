from __future__ import annotations

import datetime
import random
from pathlib import Path

import numpy as np
import pytest

from privmeter.grid.devices.source import LoadSource
from privmeter.grid.synthetic import profiles
from privmeter.grid.synthetic.profiles import (
    APPLIANCES,
    DEFERRABLE_APPLIANCES,
    HouseholdProfile,
    default_cache_dir,
    generate_households,
    occupancy_states,
    open_sim_source,
)

START = datetime.date(2013, 6, 14)  # a Friday: one weekday, one weekend day
DAYS = 2
SEED = 2012


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@pytest.fixture(scope="module")
def homes(cache: Path) -> list[HouseholdProfile]:
    return generate_households(
        2, days=DAYS, seed=SEED, start=START, prosumer_share=0.5, cache_dir=cache, workers=1
    )


def _same(a: HouseholdProfile, b: HouseholdProfile) -> bool:
    return (
        a.household_id == b.household_id
        and np.array_equal(a.minute_w, b.minute_w)
        and np.array_equal(a.occupancy, b.occupancy)
        and np.array_equal(a.deferrable_w, b.deferrable_w)
        and a.appliance_on.keys() == b.appliance_on.keys()
        and all(np.array_equal(a.appliance_on[k], b.appliance_on[k]) for k in a.appliance_on)
    )


def test_deterministic_without_cache_and_restores_global_random(
    homes: list[HouseholdProfile],
) -> None:
    random.seed(99)
    state = random.getstate()
    fresh = generate_households(
        2, days=DAYS, seed=SEED, start=START, prosumer_share=0.5, use_cache=False, workers=1
    )
    assert random.getstate() == state  # the caller's RNG is untouched
    assert all(_same(a, b) for a, b in zip(homes, fresh, strict=True))
    assert not np.array_equal(homes[0].minute_w, homes[1].minute_w)


def test_arrays_aligned_and_consistent(homes: list[HouseholdProfile]) -> None:
    minutes = DAYS * 1440
    for p in homes:
        assert p.start_unix == 1371168000  # 2013-06-14T00:00Z
        assert p.minute_w.dtype == np.int64 and len(p.minute_w) == minutes
        assert p.occupancy.dtype == np.int8 and len(p.occupancy) == minutes
        assert len(p.active_occupants) == minutes and len(p.deferrable_w) == minutes
        assert set(p.appliance_on) == {*APPLIANCES, "lighting"}
        assert all(len(v) == minutes and v.dtype == bool for v in p.appliance_on.values())
        assert set(np.unique(p.occupancy)) <= {0, 1, 2}
        assert ((p.occupancy == 2) == (p.active_occupants > 0)).all()
        assert 1 <= p.n_occupants <= 5 and p.active_occupants.max() <= p.n_occupants
        load = p.load_w
        assert (load >= 0).all() and (p.deferrable_w >= 0).all() and (p.deferrable_w <= load).all()
        # ground truth agrees with the physics of the model: lights and TV need someone awake
        assert not (p.appliance_on["lighting"] & (p.occupancy != 2)).any()
        assert not (p.appliance_on["tv_1"] & (p.occupancy != 2)).any()
        # outside deferrable cycles the deferrable part is at most standby power
        running = np.zeros(minutes, dtype=bool)
        for name in DEFERRABLE_APPLIANCES:
            running |= p.appliance_on[name]
        assert (p.deferrable_w[~running] <= 3).all()
        # a household uses a plausible amount: 1-40 kWh a day
        assert 1.0 < load.sum() / 60 / 1000 / DAYS < 40.0
        with pytest.raises(ValueError):
            p.minute_w[0] = 1  # read-only


def test_prosumers_get_pv_on_top_of_the_same_load(
    homes: list[HouseholdProfile], cache: Path
) -> None:
    everyone = generate_households(
        2, days=DAYS, seed=SEED, start=START, prosumer_share=1.0, cache_dir=cache
    )
    nobody = generate_households(2, days=DAYS, seed=SEED, start=START, cache_dir=cache)
    for pv_home, plain in zip(everyone, nobody, strict=True):
        assert plain.pv_w is None and plain.pv_kwp is None
        assert pv_home.pv_w is not None and pv_home.pv_kwp is not None
        assert np.array_equal(pv_home.load_w, plain.minute_w)
        assert np.array_equal(pv_home.minute_w, plain.minute_w - pv_home.pv_w)
        assert (pv_home.pv_w[:120] == 0).all() and pv_home.pv_w[12 * 60] > 0
        assert (pv_home.minute_w < 0).any()  # exports at midsummer noon
    # share 0.5 picks a subset of the share-1.0 prosumers, same sizes
    for h, full in zip(homes, everyone, strict=True):
        assert h.pv_kwp is None or h.pv_kwp == full.pv_kwp


def test_cache_hit_miss_and_corruption(
    homes: list[HouseholdProfile], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted(cache.glob("hh-*.npz"))
    assert len(files) == 2 and not list(cache.glob(".tmp-*"))
    calls: list[int] = []
    real = profiles._simulate

    def counting(params: dict) -> dict:
        calls.append(params["index"])
        return real(params)

    monkeypatch.setattr(profiles, "_simulate", counting)
    # hit: nothing simulated
    first = generate_households(1, days=DAYS, seed=SEED, start=START, cache_dir=cache, workers=1)
    assert calls == [] and np.array_equal(first[0].load_w, homes[0].load_w)
    # corruption: garbage, truncation, or another household's (valid) file are all regenerated
    target = next(f for f in files if f != files[0])
    for bad in (b"not a zip", files[0].read_bytes()[:200], files[0].read_bytes()):
        target.write_bytes(bad)
        calls.clear()
        again = generate_households(
            2, days=DAYS, seed=SEED, start=START, prosumer_share=0.5, cache_dir=cache, workers=1
        )
        assert len(calls) == 1
        assert all(_same(a, b) for a, b in zip(homes, again, strict=True))
    # miss: other parameters give other files
    calls.clear()
    generate_households(1, days=1, seed=SEED + 1, start=START, cache_dir=cache, workers=1)
    assert calls == [0] and len(list(cache.glob("hh-*.npz"))) == 3


def test_progress_and_process_pool(homes: list[HouseholdProfile], tmp_path: Path) -> None:
    seen: list[int] = []
    pooled = generate_households(
        2, days=DAYS, seed=SEED, start=START, prosumer_share=0.5, cache_dir=tmp_path,
        workers=2, progress=seen.append,
    )  # fmt: skip
    assert seen == [1, 2]
    assert all(_same(a, b) for a, b in zip(homes, pooled, strict=True))


def test_sim_source_matches_minutes(homes: list[HouseholdProfile]) -> None:
    p = homes[0]
    src = open_sim_source(p, 900)
    assert isinstance(src, LoadSource)
    readings = list(src.readings())
    assert len(readings) == DAYS * 96
    assert [r.interval for r in readings] == list(
        range(p.start_unix // 900, p.start_unix // 900 + DAYS * 96)
    )
    assert sum(r.energy_wh or 0 for r in readings) == int(p.minute_w.sum()) // 60
    assert readings[3].power_w == int(p.minute_w[4 * 15 - 1])
    assert np.array_equal(p.interval_energy_wh(900), [r.energy_wh for r in readings])
    with pytest.raises(ValueError):
        open_sim_source(p, 7 * 60 * 60)  # 7 h does not divide the 2-day profile's start grid


def test_occupancy_mapping() -> None:
    day = 1440
    active = np.zeros(day, dtype=np.int8)
    active[7 * 60 : 8 * 60] = 2  # up 07:00-08:00
    # 08:00-17:00 inactive: out at work
    active[17 * 60 : 23 * 60] = 1  # home in the evening, asleep from 23:00
    s = occupancy_states(active, 1371168000)
    assert (s[: 7 * 60] == 1).all()  # night (run overlaps 01:00-05:00)
    assert (s[7 * 60 : 8 * 60] == 2).all()
    assert (s[8 * 60 : 17 * 60] == 0).all()  # away
    assert (s[17 * 60 : 23 * 60] == 2).all()
    assert (s[23 * 60 :] == 0).all()  # that run never reaches 01:00 in this one-day array
    two = occupancy_states(np.tile(active, 2), 1371168000)
    assert (two[23 * 60 : day + 7 * 60] == 1).all()  # crosses midnight: asleep


def test_validation_and_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_households(-1, days=1, seed=1)
    with pytest.raises(ValueError):
        generate_households(1, days=0, seed=1)
    with pytest.raises(ValueError):
        generate_households(1, days=1, seed=1, prosumer_share=2.0)
    monkeypatch.setenv("PRIVMETER_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "profiles"
    monkeypatch.delenv("PRIVMETER_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "privmeter" / "profiles"
    assert generate_households(0, days=1, seed=1, cache_dir=tmp_path) == []
