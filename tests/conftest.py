"""Shared fixtures.

Paillier keys for tests are fixed known-answer keys in ``tests/vectors`` so
that the suite does not spend its time generating primes; tests that exercise
key generation itself generate their own.  Small insecure keys (512 bits,
``insecure_for_tests=True``) are for property tests that need many
operations; anything that claims security uses 2048 or 3072 bits.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest

from privmeter.crypto.paillier import (
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
)
from privmeter.sim.scenario import Scenario, World, build

VECTORS = Path(__file__).parent / "vectors"
TEST_DATA = Path(__file__).parent / "data"


def _load(bits: int) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    sk = PaillierPrivateKey.from_json((VECTORS / f"paillier_{bits}.json").read_text())
    return sk.public_key, sk


@pytest.fixture(scope="session")
def paillier_2048() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return _load(2048)


@pytest.fixture(scope="session")
def paillier_3072() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return _load(3072)


@pytest.fixture(scope="session")
def paillier_small() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A 512-bit key: fast, insecure, for property tests only."""
    return generate_keypair(512, rng=random.Random(512), insecure_for_tests=True)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20121104)


@pytest.fixture(scope="session")
def test_data() -> Path:
    """``tests/data`` (real DSMR P1 telegrams; sources and licence in its README)."""
    return TEST_DATA


# -- tiny simulation worlds (512-bit keys: fast, insecure, tests only) --------


def tiny_scenario(tmp: Path, **kw: object) -> Scenario:
    base: dict[str, object] = dict(
        households=6,
        days=1,
        key_bits=512,
        dgk_bits=1024,
        insecure_small_keys=True,
        max_intervals=8,
        cache_dir=tmp,
        seed=7,
    )
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
