"""``privmeter simulate``: a neighbourhood end to end, with a report.

What it is for: one command builds a scenario (households, keys, plans),
runs every party -- by default over loopback TCP with the head-end in this
process and the meters in ``--fleets`` subprocesses; ``--in-memory`` runs
everything in one process through the same protocol objects -- and writes
``DIR/report.json`` and ``DIR/report.html``.  ``--lcl`` runs the real-data
scenario (LCL household MAC000060 billed on the trial's flat and dynamic
time-of-use tariffs).

Security: simulation keys come from the seed (cached); see
:mod:`privmeter.sim.scenario`.  Exit status 0 only when every total that was
unmasked is exact and every bill verified.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from privmeter.argtypes import at_least, fraction, iso_date, non_negative, out_dir, positive

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--households",
        type=at_least(1),
        default=20,
        help="households (at least min_survivors, default 20)",
    )
    p.add_argument("--days", type=at_least(1), default=1)
    p.add_argument(
        "--interval", default="15m", help="interval length (15m, 30m, ...); must match the plan"
    )
    p.add_argument("--topology", choices=("star", "ring", "tree"), default="star")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--out",
        type=out_dir,
        default=Path("sim-out"),
        help="directory for report.json, report.html and the per-household audit bundles",
    )
    p.add_argument("--plan", default="economy7", help="builtin plan name or TOML file")
    p.add_argument(
        "--prosumers", type=fraction, default=0.0, help="share of households with PV (0..1)"
    )
    p.add_argument(
        "--key-bits", type=at_least(1), default=3072, help="household Paillier key size (>= 2048)"
    )
    p.add_argument(
        "--dgk-bits",
        type=at_least(1),
        default=2048,
        help="the meters' comparison group: 2048 or 3072 bits",
    )
    p.add_argument(
        "--group-size",
        type=at_least(1),
        default=50,
        help="meters per feeder group (at least --min-survivors)",
    )
    p.add_argument(
        "--min-survivors",
        type=at_least(2),
        default=5,
        help="fewest meters whose total a feeder group publishes (default 5)",
    )
    p.add_argument("--no-demand", action="store_true", help="no demand management")
    p.add_argument(
        "--cmax-w", type=at_least(0), default=1200, help="utility's upper limit, W per household"
    )
    p.add_argument(
        "--cmin-w", type=at_least(0), default=50, help="utility's lower limit, W per household"
    )
    p.add_argument(
        "--dropout", type=fraction, default=0.0, help="probability a meter misses an interval"
    )
    p.add_argument("--latency-ms", type=non_negative, default=0.0)
    p.add_argument("--jitter-ms", type=non_negative, default=0.0)
    p.add_argument("--loss", type=fraction, default=0.0, help="message loss probability per record")
    p.add_argument("--bandwidth", type=positive, default=None, help="link bandwidth, bit/s")
    p.add_argument(
        "--start",
        type=iso_date,
        default=datetime.date(2013, 1, 7),
        help="first simulated day (UTC), YYYY-MM-DD",
    )
    p.add_argument(
        "--lcl", action="store_true", help="the real-data LCL scenario (use --interval 30m)"
    )
    p.add_argument(
        "--in-memory", action="store_true", help="all parties in this process, no sockets"
    )
    p.add_argument(
        "--fleets", type=at_least(1), default=2, help="meter fleet processes (network mode)"
    )
    p.add_argument(
        "--speed", type=non_negative, default=0.0, help="0 accelerated, 1 real time, N x real time"
    )
    p.add_argument("--round-timeout", type=positive, default=30.0)
    p.add_argument(
        "--max-intervals",
        type=at_least(1),
        default=None,
        help="stop after N intervals (quick runs)",
    )
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="METER_ID=SPEC",
        help="put a real meter into the neighbourhood: METER_ID (e.g. m00003) reads SPEC "
        "(p1:/dev/ttyUSB0, p1-tcp:HOST:PORT, dlms:HOST[:PORT], csv:PATH); repeatable",
    )
    p.add_argument("--insecure-small-keys", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from privmeter.sim.report import summary_lines, write_report
    from privmeter.sim.scenario import Scenario, build, parse_interval, parse_source_args

    sc = Scenario(
        households=args.households,
        days=args.days,
        interval_seconds=parse_interval(args.interval),
        topology=args.topology,
        seed=args.seed,
        plan=args.plan,
        prosumer_share=args.prosumers,
        key_bits=args.key_bits,
        dgk_bits=args.dgk_bits,
        insecure_small_keys=args.insecure_small_keys,
        group_size=args.group_size,
        min_survivors=args.min_survivors,
        demand=not args.no_demand,
        cmax_w_per_household=args.cmax_w,
        cmin_w_per_household=args.cmin_w,
        dropout=args.dropout,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        loss=args.loss,
        bandwidth_bps=args.bandwidth,
        start=args.start,
        lcl=args.lcl,
        max_intervals=args.max_intervals,
        cache_dir=args.cache_dir,
        sources=parse_source_args(args.source),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    from privmeter.bench._common import progress

    with progress() as bar:
        task = bar.add_task("building (profiles, keys)", total=None)

        def build_progress(stage: str, k: int, n: int) -> None:
            bar.update(task, description=f"building {stage}", completed=k, total=n)

        world = build(sc, progress=build_progress)
        bar.update(task, description="intervals", completed=0, total=sc.intervals + 2)

        def step(k: int, n: int) -> None:
            bar.update(task, completed=k, total=n)

        if args.in_memory:
            from privmeter.sim.runner import run_memory

            res = run_memory(world, progress=step, audit_dir=args.out / "audit")
        else:
            from privmeter.sim.network import run_network

            res = run_network(
                world,
                args.out,
                fleets=args.fleets,
                speed=args.speed,
                round_timeout=args.round_timeout,
                progress=step,
                audit_dir=args.out / "audit",
            )
    jp, hp = write_report(res, args.out)
    for line in summary_lines(res):
        print(line)
    print(f"wrote {jp} and {hp}")
    hint = sorted((args.out / "audit").glob("*/audit.txt"))
    if hint:
        print(f"audit bundles in {args.out / 'audit'}; check one bill with no secret key:")
        print("  " + hint[0].read_text(encoding="utf-8").strip())
    a, b = res["aggregation"], res["billing"]
    ok = (
        a["max_abs_error"] in (0, None)
        and a["intervals"] > 0
        and b["verified"] == b["households"]
        and b["max_abs_error"] == 0
    )
    return 0 if ok else 1
