"""The command line: every command is listed, and only the one being run is imported."""

from __future__ import annotations

import subprocess
import sys

from privmeter.cli import BENCHMARKS, COMMANDS, build_parser


def test_every_command_parses_its_own_arguments() -> None:
    for name in COMMANDS:
        action = build_parser([name])._subparsers._group_actions[0]  # type: ignore[union-attr]
        assert action.choices[name]._defaults.get("_run") is not None, name
    for name in BENCHMARKS:
        p = build_parser(["bench", name])
        args = p.parse_args(["bench", name, "--json"])
        assert args.json is True and callable(args._run)


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys; from privmeter.cli import build_parser; build_parser(['--help']);"
        "print(sorted(m for m in sys.modules if m.startswith(('privmeter.sim', 'privmeter.web',"
        " 'privmeter.parties', 'privmeter.bench', 'privmeter.privacy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
