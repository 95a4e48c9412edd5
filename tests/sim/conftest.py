"""Tiny simulation worlds for the parties' tests (512-bit keys: fast, insecure, tests only)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from privmeter.sim.scenario import Scenario, World, build


def tiny_scenario(tmp: Path, **kw: object) -> Scenario:
    base: dict[str, object] = dict(households=6, days=1, key_bits=512, dgk_bits=1024, insecure_small_keys=True,
                                   max_intervals=8, cache_dir=tmp, seed=7)
    base.update(kw)
    return Scenario(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sim_cache() -> Path:
    """A stable cache (profiles and test keys are content-addressed): later runs start fast."""
    d = Path(tempfile.gettempdir()) / "privmeter-test-simcache"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def tiny_world(sim_cache: Path) -> World:
    return build(tiny_scenario(sim_cache))
