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

from rich.console import Console
from rich.table import Table

from privmeter.argtypes import at_least, out_dir
from privmeter.privacy.report import EvalConfig, run_evaluation, summary_rows, write_html

__all__ = ["add_arguments", "run"]


def _group_sizes(text: str) -> tuple[int, ...]:
    """``--group-sizes``: comma-separated whole numbers >= 1."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated group sizes >= 1 (e.g. 5,10,50), got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = EvalConfig()
    parser.add_argument("--households", type=at_least(4), default=d.households,
                        help=f"simulated households (default {d.households})")
    parser.add_argument("--days", type=at_least(1), default=d.days, help=f"days (default {d.days})")
    parser.add_argument("--seed", type=int, default=d.seed, help="simulation and attack seed")
    parser.add_argument("--plan", default=d.plan, help=f"builtin plan (default {d.plan})")
    parser.add_argument("--group-sizes", type=_group_sizes, default=d.group_sizes,
                        help="comma-separated group sizes (default " + ",".join(map(str, d.group_sizes)) + ")")
    parser.add_argument("--out", type=out_dir, default=Path("privacy-report"),
                        help="output directory for privacy.json and privacy.html")
    parser.add_argument("--cache-dir", default=None, help="profile cache directory")
    parser.add_argument("--json", action="store_true", help="print the JSON object and nothing else")


def run(args: argparse.Namespace) -> int:
    sizes = tuple(args.group_sizes)
    cfg = EvalConfig(households=args.households, days=args.days, seed=args.seed,
                     plan=args.plan, group_sizes=sizes, cache_dir=args.cache_dir)
    err = Console(stderr=True)
    with err.status("privacy evaluation") as status:
        report = run_evaluation(
            cfg, progress=None if args.json else (lambda m: status.update(f"privacy: {m}")))
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
    table = Table(title="Occupancy attacks (gain over the time-of-day baseline)")
    for c in cols:
        table.add_column(c, justify="left" if c in ("view", "task") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    app = Table(title="Appliance switch-on detection (F1 gain, mean over appliances)")
    for c in ("view", "mean F1 gain", "appliances above baseline"):
        app.add_column(c)
    for s in report["appliance_summary"]:
        app.add_row(s["view"], f"{s['mean_f1_gain']:+.3f}", ", ".join(s["leaking"]) or "-")
    console.print(app)
    att = Table(title="Differencing and probing, protections off / on")
    for c in ("attack", "protections", "estimates", "exact", "refused", "error", "no-info error"):
        att.add_column(c)
    for d in report["differencing"]:
        att.add_row(f"differencing g={d['group_size']}", str(d["protections"]), str(d["estimates"]),
                    str(d["exact"]), str(d["refused"]), f"{d['rmse_wh']} Wh",
                    f"{d['victim_std_wh']} Wh")
    for p in report["probing"]:
        att.add_row("probing", str(p["protections"]), f"{p['bits_per_day']} bits/day", "-",
                    str(p["refused"]), f"{p['mae_w']} W", f"{p['baseline_mae_w']} W")
    console.print(att)
    nz = Table(title="Distributed Skellam noise: differencing error vs cost on totals")
    for c in ("eps/interval", "eps/day", "group", "noise std", "diff. RMSE", "total rel. error"):
        nz.add_column(c)
    for r in report["noise"]:
        nz.add_row(str(r["epsilon_per_interval"]), str(r["epsilon_per_day"]), str(r["group_size"]),
                   f"{r['noise_std_total_wh']} Wh", f"{r['rmse_wh']} Wh",
                   f"{r['total_relative_error']:.3f}")
    console.print(nz)
    led = report["ledger"]
    console.print(
        f"Ledger: privmeter {led['privmeter_mean_bits_per_day']} bits/day per household "
        f"(group {led['group_size']}, protections on); without protections "
        f"{led['unprotected_mean_bits_per_day']}; conventional meter "
        f"{led['conventional_bits_per_day']} bits/day by resolution (s)."
    )
    console.print(f"Wrote {out / 'privacy.json'} and {out / 'privacy.html'}")
    return 0
