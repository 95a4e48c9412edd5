"""Shared tiny population for the privacy tests: 16 households x 1 day, cached per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from privmeter.grid.synthetic.profiles import generate_households
from privmeter.privacy.views import Population


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Population:
    cache: Path = tmp_path_factory.mktemp("privacy-profiles")
    profiles = generate_households(16, days=1, seed=11, cache_dir=cache, workers=1)
    return Population.from_profiles(profiles)
