#!/usr/bin/env bash
# Install everything the tests need (Python packages, Debian's chromium for the browser
# tests and Debian's PostgreSQL for the cluster tests) and run the whole suite: lint, then
# pytest on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian chromium drives the browser tests (tests/web); installed only when they exist.
if [ -d tests/web ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! command -v chromium >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi
# Debian's PostgreSQL server binaries for the cluster tests (tests/cluster start their own
# server in a temporary directory; nothing is configured system-wide).
if [ -d tests/cluster ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check src tests scripts
python3 -m ruff format --check src tests scripts  # the one formatting (ruff format); run it before committing
lint-imports  # [tool.importlinter] in pyproject.toml: a lower layer never imports a higher one
# no import cycle between any two modules (function-level and TYPE_CHECKING imports included)
PYTHONPATH=src python3 -m pytest -q -n 0 -p no:cacheprovider tests/test_import_graph.py
# mypy --strict ([tool.mypy] in pyproject.toml): ~40 s cold, ~2 s from .mypy_cache
python3 -m mypy src
python3 -m pytest -n 2 "$@"
