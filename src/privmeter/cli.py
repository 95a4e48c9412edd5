"""The ``privmeter`` command.

Each subcommand lives in the module that owns its logic; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``.  This file only maps
names to modules, so a command's code sits next to what it drives.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from privmeter import __version__

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("privmeter.sim.demo", "run a local deployment with the live dashboard"),
    "simulate": ("privmeter.sim.cli", "simulate a neighbourhood over loopback sockets; write a report"),
    "keygen": ("privmeter.parties.keys", "generate household / meter / utility keys"),
    "audit": ("privmeter.parties.auditor", "check a billing statement offline, with no secret key"),
    "headend": ("privmeter.parties.headend_service", "run the utility head-end service"),
    "meter": ("privmeter.parties.meter_service", "run one or a fleet of meters"),
    "household": ("privmeter.parties.household_service", "run a household agent"),
    "concentrator": ("privmeter.parties.concentrator_service", "run a data concentrator"),
    "privacy": ("privmeter.privacy.cli", "measure what the utility can and cannot learn"),
}

BENCHMARKS: dict[str, tuple[str, str]] = {
    "paillier": ("privmeter.bench.paillier", "Paillier vs python-paillier (phe)"),
    "aggregation": ("privmeter.bench.aggregation", "masked aggregation vs Paillier aggregation"),
    "comparison": ("privmeter.bench.comparison", "DGK comparison vs MPyC"),
    "headend": ("privmeter.bench.headend", "meters served per head-end core"),
}


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
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
