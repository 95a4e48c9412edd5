"""Every privmeter module declares a curated public surface (``__all__``)
whose names exist, and the top-level package exports exactly its version."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import privmeter

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(privmeter.__path__, "privmeter.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    mod = importlib.import_module(name)
    if name.rsplit(".", 1)[-1].startswith("_") and not hasattr(mod, "__all__"):
        pytest.skip("private module")
    if mod.__file__ and mod.__file__.endswith("__init__.py") and not hasattr(mod, "__all__"):
        pytest.skip("namespace-only package")
    assert hasattr(mod, "__all__"), f"{name} has no __all__"
    for n in mod.__all__:
        assert hasattr(mod, n), f"{name}.__all__ names missing {n!r}"


def test_top_level_surface() -> None:
    assert privmeter.__all__ == ["__version__"]
    assert isinstance(privmeter.__version__, str)


def test_errors_tree_is_one_hierarchy() -> None:
    from privmeter import errors

    for n in errors.__all__:
        cls = getattr(errors, n)
        assert issubclass(cls, errors.PrivmeterError)
        assert n in errors.__doc__, f"{n} missing from the tree in errors.py's docstring"


def test_errors_tree_matches_the_classes() -> None:
    """The tree drawn in errors.py's docstring is the real class hierarchy (parent by parent)."""
    import re

    from privmeter import errors

    doc = errors.__doc__ or ""
    drawn: dict[str, str] = {}
    stack = ["PrivmeterError"]
    for line in doc.splitlines():
        m = re.match(r"^\s*((?:[│ ]   )*)[├└]── (\w+)", line)
        if m is None:
            continue
        depth = len(m.group(1)) // 4
        del stack[depth + 1 :]
        drawn[m.group(2)] = stack[depth]
        stack.append(m.group(2))
    assert set(drawn) == set(errors.__all__) - {"PrivmeterError"}
    for name, parent in drawn.items():
        assert getattr(errors, name).__bases__[0].__name__ == parent, name
