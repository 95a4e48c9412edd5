"""Shared fixtures for the dashboard tests: a small demo deployment (6 homes, one feeder, 2048-bit keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from privmeter.web.engine import DemoConfig, DemoEngine


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys and load profiles generated once per session (2048-bit keys: real size, fast)."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture
def make_engine(demo_cache: Path, tmp_path: Path) -> Iterator[Callable[..., DemoEngine]]:
    engines: list[DemoEngine] = []

    def make(**kw: object) -> DemoEngine:
        opts: dict[str, object] = {
            "households": 6,
            "days": 2,
            "group_size": 6,
            "bill_intervals": 2,
            "key_bits": 2048,
            "prosumer_share": 0.0,
            "cmin_w_per_household": 0,
            "speed": 1800.0,
            "data_dir": tmp_path / f"run{len(engines)}",
            "cache_dir": demo_cache,
            "transport": "tcp",
            "latency_ms": 2.0,
            "jitter_ms": 1.0,
        }
        opts.update(kw)
        e = DemoEngine(DemoConfig(**opts))  # type: ignore[arg-type]
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.stop()
