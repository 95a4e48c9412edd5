"""Fixtures of the cluster tests: a private PostgreSQL server (started here, in a temporary
directory) and a fresh database schema per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from privmeter.cluster.localpg import LocalPostgres
from privmeter.errors import ConfigError

_names = itertools.count()


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    pytest.importorskip("psycopg")
    try:
        server = LocalPostgres().start()
    except ConfigError as exc:  # no PostgreSQL binaries: scripts/test.sh installs them
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def schema() -> str:
    """A schema name no other test uses (tests share one server)."""
    return f"t{next(_names)}"
