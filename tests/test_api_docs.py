"""docs/api.md's examples run, and give what the page says (doctest)."""

from __future__ import annotations

import doctest
from pathlib import Path

import privmeter.aggregation
import privmeter.billing
import privmeter.demand
import privmeter.keys

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_api_md_examples_pass() -> None:
    failures, tried = doctest.testfile(
        str(API_DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert tried > 20
    assert failures == 0, f"{failures} of {tried} examples in docs/api.md failed (output above)"


def test_task_modules_name_only_what_exists() -> None:
    for mod in (privmeter.keys, privmeter.billing, privmeter.aggregation, privmeter.demand):
        assert mod.__all__ == sorted(mod.__all__, key=lambda n: (not n.isupper(), n))
        for name in mod.__all__:
            assert getattr(mod, name) is not None, f"{mod.__name__}.{name}"
        assert f"`{mod.__name__}`" in API_DOC.read_text(encoding="utf-8")
