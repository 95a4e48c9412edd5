"""Shared plumbing for ``privmeter bench ...``: CPU timing, progress, output.

Benchmarks compare privmeter with a named peer *in the same run* and report
ratios; absolute times on shared machines are noise.  Timings use
``time.process_time`` (CPU of this process, one core) unless a benchmark
measures wall time on purpose and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["add_json_flag", "cpu_per_call", "emit", "progress", "stopwatch"]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object and nothing else"
    )


def cpu_per_call(
    fn: Callable[[], object], *, min_calls: int = 3, min_seconds: float = 0.5
) -> float:
    """Median-free robust estimate: CPU seconds per call over >= min_seconds of calls."""
    fn()  # warm caches (tables, imports)
    calls = 0
    start = time.process_time()
    while True:
        fn()
        calls += 1
        elapsed = time.process_time() - start
        if calls >= min_calls and elapsed >= min_seconds:
            return elapsed / calls


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["cpu_s"]``, ``t["wall_s"]``."""
    out: dict[str, float] = {}
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out["cpu_s"] = time.process_time() - c0
        out["wall_s"] = time.perf_counter() - w0


def progress(enabled: bool | None = None) -> Progress:
    """A rich progress bar on stderr.

    ``None`` (the commands' choice): shown when stderr is a terminal, also with ``--json``
    (the JSON goes to stdout, so a long benchmark still says how far it is); hidden when
    stderr is a file or a pipe, or when ``enabled`` is False.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def emit(
    result: dict[str, Any],
    *,
    as_json: bool,
    title: str,
    rows: list[list[str]] | None = None,
    columns: list[str] | None = None,
) -> None:
    """Print ``result`` as JSON (machines) or as a table (people)."""
    if as_json:
        json.dump(result, sys.stdout, indent=None, sort_keys=False)
        sys.stdout.write("\n")
        return
    console = Console()
    if rows and columns:
        table = Table(title=title)
        for c in columns:
            table.add_column(c, justify="right" if c != columns[0] else "left")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    else:
        console.print_json(json.dumps(result))
