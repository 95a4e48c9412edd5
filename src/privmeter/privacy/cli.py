"""``privmeter privacy``: measure what the utility can and cannot learn.

Runs :func:`privmeter.privacy.report.run_evaluation` and writes
``DIR/privacy.json`` (the full report, format ``REPORT_FORMAT``) and
``DIR/privacy.html`` (tables and plotly charts, plotly.js inlined); prints
the occupancy table (rich) or, with ``--json``, the JSON object.  Household
profiles are simulated once and cached (``$PRIVMETER_CACHE``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from privmeter.argtypes import at_least, out_dir
from privmeter.privacy.report import EvalConfig, run_evaluation, summary_rows, write_html

__all__ = ["add_arguments", "run"]


def _table(console: Console, title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table that fits a terminal: no vertical rules, cells wrap at spaces and no column is
    narrower than its longest word, so nothing is cut off ("...") at 80 columns."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for i, name in enumerate(header):
        longest = max(
            len(w) for text in [name, *(r[i] for r in rows)] for w in text.split() or [""]
        )
        table.add_column(name, min_width=longest, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)


def _resolution(seconds: int) -> str:
    return (
        f"{seconds // 3600} h"
        if seconds % 3600 == 0
        else f"{seconds // 60} min"
        if seconds % 60 == 0
        else f"{seconds} s"
    )


def _group_sizes(text: str) -> tuple[int, ...]:
    """``--group-sizes``: comma-separated whole numbers >= 1."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated group sizes >= 1 (e.g. 5,10,50), got {text!r}"
        )
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = EvalConfig()
    parser.add_argument(
        "--households",
        type=at_least(4),
        default=d.households,
        help=f"simulated households (default {d.households})",
    )
    parser.add_argument("--days", type=at_least(1), default=d.days, help=f"days (default {d.days})")
    parser.add_argument("--seed", type=int, default=d.seed, help="simulation and attack seed")
    parser.add_argument("--plan", default=d.plan, help=f"builtin plan (default {d.plan})")
    parser.add_argument(
        "--group-sizes",
        type=_group_sizes,
        default=d.group_sizes,
        help="comma-separated group sizes (default " + ",".join(map(str, d.group_sizes)) + ")",
    )
    parser.add_argument(
        "--out",
        type=out_dir,
        default=Path("privacy-report"),
        help="output directory for privacy.json and privacy.html",
    )
    parser.add_argument("--cache-dir", default=None, help="profile cache directory")
    parser.add_argument(
        "--json", action="store_true", help="print the JSON object and nothing else"
    )


def run(args: argparse.Namespace) -> int:
    sizes = tuple(args.group_sizes)
    cfg = EvalConfig(
        households=args.households,
        days=args.days,
        seed=args.seed,
        plan=args.plan,
        group_sizes=sizes,
        cache_dir=args.cache_dir,
    )
    err = Console(stderr=True)
    with err.status("privacy evaluation") as status:
        report = run_evaluation(
            cfg, progress=None if args.json else (lambda m: status.update(f"privacy: {m}"))
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    write_html(report, out / "privacy.html")
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return 0
    console = Console()
    cols, rows = summary_rows(report)
    keep = [
        cols.index(c)
        for c in ("view", "acc", "baseline acc", "acc gain [95% CI]", "F1 gain [95% CI]")
    ]
    task_col = cols.index("task")
    for task in dict.fromkeys(r[task_col] for r in rows):
        _table(
            console,
            f"Occupancy {task}: the attack vs the time-of-day baseline (F1 and more in privacy.html)",
            ["view", "accuracy", "baseline", "gain [95% CI]", "F1 gain [95% CI]"],
            [[r[i] for i in keep] for r in rows if r[task_col] == task],
        )
    _table(
        console,
        "Appliance switch-on detection (F1 gain, mean over appliances)",
        ["view", "mean F1 gain", "appliances above baseline"],
        [
            [s["view"], f"{s['mean_f1_gain']:+.3f}", ", ".join(s["leaking"]) or "-"]
            for s in report["appliance_summary"]
        ],
    )
    att = [
        [
            f"differencing g={d['group_size']}",
            "on" if d["protections"] else "off",
            str(d["estimates"]),
            str(d["exact"]),
            str(d["refused"]),
            f"{d['rmse_wh']} Wh",
            f"{d['victim_std_wh']} Wh",
        ]
        for d in report["differencing"]
    ]
    att += [
        [
            "probing",
            "on" if p["protections"] else "off",
            f"{p['bits_per_day']} bits/day",
            "-",
            str(p["refused"]),
            f"{p['mae_w']} W",
            f"{p['baseline_mae_w']} W",
        ]
        for p in report["probing"]
    ]
    _table(
        console,
        "Differencing and probing, protections off / on",
        ["attack", "protections", "estimates", "exact", "refused", "error", "no-info error"],
        att,
    )
    _table(
        console,
        "Distributed Skellam noise: differencing error vs cost on totals",
        ["eps/interval", "eps/day", "group", "noise std", "diff. RMSE", "total rel. error"],
        [
            [
                str(r["epsilon_per_interval"]),
                str(r["epsilon_per_day"]),
                str(r["group_size"]),
                f"{r['noise_std_total_wh']} Wh",
                f"{r['rmse_wh']} Wh",
                f"{r['total_relative_error']:.3f}",
            ]
            for r in report["noise"]
        ],
    )
    led = report["ledger"]
    ledger = [
        [
            f"privmeter, group of {led['group_size']}, protections on",
            f"{led['privmeter_mean_bits_per_day']}",
        ],
        ["privmeter, protections off", f"{led['unprotected_mean_bits_per_day']}"],
    ]
    ledger += [
        [f"conventional meter, {_resolution(int(r))} readings", f"{bits}"]
        for r, bits in sorted(led["conventional_bits_per_day"].items(), key=lambda kv: int(kv[0]))
    ]
    _table(
        console,
        "Leakage ledger: bits learned per household per day",
        ["what the utility holds", "bits/day"],
        ledger,
    )
    console.print(f"Wrote {out / 'privacy.json'} and {out / 'privacy.html'}")
    return 0
