"""The error rule of ``privmeter/errors.py``: no ``raise`` in ``src/`` names a builtin exception.

Every error privmeter raises itself is a ``PrivmeterError`` (``InvalidArgument`` is also a
``ValueError``, ``InvalidArgumentType`` a ``TypeError``...).  This walks the source tree's
AST and fails on ``raise ValueError(...)``, ``raise TypeError``, ``raise RuntimeError(...)``,
``raise KeyError(...)`` and every other builtin exception class, except where a protocol of the
language asks for the builtin (below, each with its reason).
"""

from __future__ import annotations

import argparse
import ast
import builtins
from pathlib import Path

import pytest

import privmeter.errors as errors_module

SRC = Path(__file__).resolve().parents[1] / "src" / "privmeter"

BUILTIN_EXCEPTIONS = frozenset(
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type)
    and issubclass(getattr(builtins, name), BaseException)
)

# (exception, enclosing function) pairs a language protocol asks for, anywhere in src/.
PROTOCOL = {
    ("KeyError", "__missing__"): "dict subclasses signal a missing key with KeyError",
    ("KeyError", "__getitem__"): "the Mapping protocol",
    ("KeyError", "__delitem__"): "the MutableMapping protocol",
    ("IndexError", "__getitem__"): "the Sequence protocol",
    ("StopIteration", "__next__"): "the iterator protocol",
    ("StopAsyncIteration", "__anext__"): "the async iterator protocol",
    ("AttributeError", "__getattr__"): "attribute lookup protocol (hasattr, getattr default)",
}

# (path relative to src/privmeter, exception, enclosing function): the reason it stays.
ALLOWED = {
    ("sim/demo.py", "OSError", "_listen"): (
        "re-raises the socket's OSError with a clearer message and its errno: the CLI names "
        "EADDRINUSE by errno, and the machine's errors stay OSErrors"
    ),
}


def _abstract(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of (a docstring and) one ``raise``: with NotImplementedError, an abstract method."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def builtin_raises(path: Path) -> list[tuple[int, str, str, bool]]:
    """(line, exception, enclosing function, the function's body is just the raise) for each
    builtin raise."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str, str, bool]] = []

    def visit(node: ast.AST, fn: ast.FunctionDef | ast.AsyncFunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child)
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                name = None
                if isinstance(exc, ast.Name):
                    name = exc.id
                elif (
                    isinstance(exc, ast.Attribute)
                    and isinstance(exc.value, ast.Name)
                    and exc.value.id == "builtins"
                ):
                    name = exc.attr
                if name in BUILTIN_EXCEPTIONS:
                    found.append(
                        (
                            child.lineno,
                            name,
                            fn.name if fn else "<module>",
                            fn is not None and _abstract(fn),
                        )
                    )
            visit(child, fn)

    visit(tree, None)
    return found


def violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, name, fn, abstract in builtin_raises(path):
            if name == "NotImplementedError" and abstract:
                continue  # an abstract method's body: a subclass overrides it
            if (name, fn) in PROTOCOL or (rel, name, fn) in ALLOWED:
                continue
            out.append(f"src/privmeter/{rel}:{line}: raise {name} in {fn}()")
    return out


def test_no_builtin_exception_is_raised_in_src() -> None:
    bad = violations()
    assert not bad, (
        "raise a privmeter.errors class instead (InvalidArgument for a ValueError, "
        "InvalidArgumentType for a TypeError, or a more specific one; see errors.py):\n"
        + "\n".join(bad)
    )


def test_allow_list_entries_are_still_needed() -> None:
    """Every ALLOWED entry still names a builtin raise (the list only shrinks)."""
    used = set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for _, name, fn, _ in builtin_raises(path):
            used.add((rel, name, fn))
    assert set(ALLOWED) <= used, sorted(set(ALLOWED) - used)


def test_builtin_compatible_classes() -> None:
    """The classes that replace a builtin stay catchable as that builtin."""
    e = errors_module
    assert issubclass(e.InvalidArgument, ValueError)
    assert issubclass(e.InvalidArgumentType, TypeError)
    assert issubclass(e.InvalidState, RuntimeError)
    assert issubclass(e.NotFound, KeyError)
    assert issubclass(e.DependencyError, RuntimeError)
    assert issubclass(e.RandomnessPoolEmpty, LookupError)
    assert issubclass(e.RandomnessPoolEmpty, e.CryptoError)
    for cls in (e.InvalidArgument, e.InvalidArgumentType, e.InvalidState, e.NotFound):
        assert issubclass(cls, e.PrivmeterError)
    assert str(e.NotFound("no group 'g1'")) == "no group 'g1'"  # not KeyError's quoted repr
    assert str(e.InvalidArgument("bad", meter_id="m1")) == "bad [meter_id='m1']"


def test_the_rule_catches_a_builtin_raise(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        "class A:\n"
        "    def f(self):\n        raise ValueError('x')\n"
        "    def g(self):\n        '''abstract'''\n        raise NotImplementedError\n"
        "    def __missing__(self, k):\n        raise KeyError(k)\n"
        "def h():\n    raise builtins.RuntimeError\n"
    )
    assert builtin_raises(f) == [
        (3, "ValueError", "f", True),
        (6, "NotImplementedError", "g", True),
        (8, "KeyError", "__missing__", True),
        (10, "RuntimeError", "h", True),
    ]


@pytest.mark.parametrize(
    "exc",
    [
        errors_module.InvalidArgumentType("speed must be a number, got 'x'"),
        errors_module.InvalidState("model is not fitted"),
        errors_module.SelfCheckFailed("privmeter bill is wrong"),
    ],
)
def test_cli_reports_a_converted_error_in_one_line(
    exc: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TypeError or RuntimeError used to escape the CLI as a traceback; their privmeter
    replacements are one line on stderr and exit 2."""
    import privmeter.cli as cli

    def run(args: argparse.Namespace) -> int:
        raise exc

    class Parser:
        def parse_args(self, argv: list[str]) -> argparse.Namespace:
            return argparse.Namespace(_run=run)

    monkeypatch.setattr(cli, "build_parser", lambda argv: Parser())
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err == f"privmeter demo: error: {exc.args[0]}\n"
