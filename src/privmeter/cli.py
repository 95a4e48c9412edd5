"""The ``privmeter`` command.

Each subcommand lives in the module that owns its logic; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``.  This file only maps
names to modules, so a command's code sits next to what it drives.

Errors: :func:`main` is the one place where a user's mistake becomes a
message.  Bad arguments (argparse, and the types in :mod:`privmeter.argtypes`),
every :class:`~privmeter.errors.PrivmeterError`, and the ``OSError`` /
``ValueError`` family (a missing file, a busy port, a number out of range) end
as one line on stderr, ``privmeter CMD: error: ...``, with exit status 2; a
missing optional dependency names the extra to install.  Nothing ends in a
traceback unless ``PRIVMETER_DEBUG=1`` asks for one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from privmeter import __version__
from privmeter.errors import PrivmeterError

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("privmeter.sim.demo", "run a local deployment with the live dashboard"),
    "simulate": (
        "privmeter.sim.cli",
        "simulate a neighbourhood over loopback sockets; write a report",
    ),
    "init": (
        "privmeter.app.init",
        "create a party's state directory: starter config and fresh keys",
    ),
    "headend": ("privmeter.app.headend", "run the utility's head-end (or invite / revoke meters)"),
    "enrol": (
        "privmeter.app.enrol",
        "enrol a household with the utility, using its one-time ticket",
    ),
    "household": ("privmeter.app.household", "run a household's meter agent and household agent"),
    "meter": ("privmeter.app.household", "the household service with another --source"),
    "concentrator": (
        "privmeter.app.concentrator",
        "run a feeder's data concentrator (an untrusted relay)",
    ),
    "keygen": ("privmeter.parties.keys", "generate household / meter / utility keys"),
    "audit": ("privmeter.parties.auditor", "check a billing statement offline, with no secret key"),
    "privacy": ("privmeter.privacy.cli", "measure what the utility can and cannot learn"),
}

BENCHMARKS: dict[str, tuple[str, str]] = {
    "paillier": ("privmeter.bench.paillier", "Paillier vs python-paillier (phe)"),
    "aggregation": ("privmeter.bench.aggregation", "masked aggregation vs Paillier aggregation"),
    "comparison": ("privmeter.bench.comparison", "secure comparison (meter-keyed) vs MPyC"),
    "headend": ("privmeter.bench.headend", "meters served per head-end core"),
    "scale": (
        "privmeter.bench.scale",
        "sharded head-end (Ray, PostgreSQL) at 1 and 2 shards vs one process",
    ),
}


# import name of an optional dependency -> (what it is, the extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "dsmr_parser": ("dsmr-parser", "meters"),
    "dlms_cosem": ("dlms-cosem", "meters"),
    "serial": ("pyserial", "meters"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``privmeter CMD: error: MESSAGE``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _chosen(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The command (and benchmark) named on the command line, before parsing."""
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else None
    benchmark = words[1] if command == "bench" and len(words) > 1 else None
    return command, benchmark


def _add(sub: Any, name: str, module: str, help_: str, load: bool) -> None:
    p = sub.add_parser(name, help=help_, description=help_)
    if load:  # import only the module of the command being run: start-up stays fast
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its module imported."""
    command, benchmark = _chosen(argv)
    parser = _Parser(
        prog="privmeter",
        description="Privacy-preserving smart metering: secure aggregation, private demand "
        "management and verifiable billing.",
    )
    parser.add_argument("--version", action="version", version=f"privmeter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        _add(sub, name, module, help_, name == command)
    bench = sub.add_parser("bench", help="benchmarks against the named peers")
    bsub = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, (module, help_) in BENCHMARKS.items():
        _add(bsub, name, module, help_, command == "bench" and name == benchmark)
    return parser


def _describe(exc: BaseException) -> str:
    """One line for the user: what went wrong, in their terms."""
    if isinstance(exc, ModuleNotFoundError):
        top = (exc.name or "").split(".")[0]
        dist, extra = OPTIONAL.get(top, (top, ""))
        if extra:
            return (
                f"this needs {dist}, an optional dependency: pip install -e '.[{extra}]' "
                f"in the privmeter checkout"
            )
        return f"missing Python module {top!r}: reinstall privmeter (pip install -e .)"
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        where = exc.filename if exc.filename is not None else None
        if exc.errno in (98, 48, 10048):  # EADDRINUSE (Linux, macOS, Windows)
            return f"{what}: another program is listening on that port; choose another with --port"
        return f"{where}: {what}" if where is not None else what
    if isinstance(exc, UnicodeDecodeError):
        return f"an input file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, PrivmeterError):
        msg = str(exc.args[0]) if exc.args else type(exc).__name__
        shown = {
            k: v
            for k, v in sorted(exc.context.items())
            if v not in (None, "") and str(v) not in msg
        }
        return msg + (f" ({', '.join(f'{k} {v}' for k, v in shown.items())})" if shown else "")
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, benchmark = _chosen(argv)
    prog = " ".join(w for w in ("privmeter", command, benchmark) if w)
    debug = os.environ.get("PRIVMETER_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        run = getattr(args, "_run", None)
        if run is None:
            parser.print_help()
            return 2
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (PrivmeterError, OSError, ValueError, ArithmeticError, ImportError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {_describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
