"""The project's bookkeeping holds together: one version, the licence, a changelog, a test timeout."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import privmeter

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_one_source_for_the_version() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "privmeter.__version__"
    }
    try:
        installed = importlib.metadata.version("privmeter")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree only
        return
    assert installed == privmeter.__version__


def test_licence_file_matches_the_metadata() -> None:
    licence = PYPROJECT["project"]["license"]["text"]
    first = (ROOT / "LICENSE").read_text(encoding="utf-8").splitlines()[0]
    assert first == f"{licence} License"


def test_changelog_names_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {privmeter.__version__}" in text


def test_every_test_has_a_timeout() -> None:
    timeout = int(PYPROJECT["tool"]["pytest"]["ini_options"]["timeout"])
    assert 60 <= timeout <= 1800
