"""``privmeter bench scale``: the sharded head-end at 1 and 2 shards against the single-process one.

What it measures: the whole head-end path of every reading -- codec decode,
meter signature check, billing checks and encrypted accumulation, the masked
aggregation share (interval open, masked input, unmasking at close), the
durable group commit, the receipt -- on the same seeded world
(:mod:`privmeter.bench.fleet`: meters' signed, encrypted records generated
*beforehand*; masked inputs computed between the timed sections, so the
meters never compete with the head-end for the CPU; handshakes excluded):

* ``single_process``: one :class:`~privmeter.cluster.shard.ShardCore` in this
  process on SQLite (WAL, ``synchronous=FULL``): the embedded head-end (and
  ``single_process_on_postgres``: the same process on PostgreSQL, client side
  only -- the store's share of the difference);
* ``1`` and ``2`` shards: Ray actors (a private local Ray with 2 CPUs) on a
  private PostgreSQL (``fsync`` on), one message batch per shard per interval.

``readings_per_s`` = readings / wall time of the timed sections;
per-reading CPU of a shard = CPU of the shard processes (read from
``/proc``) during the timed sections / readings, also with their PostgreSQL
backends' CPU; ``shard_cost_ratio`` = shard's / single process's (whose CPU
includes its SQLite); ``efficiency`` = readings_per_s(2) / (2 x
readings_per_s(1)); ``cpu_efficiency`` = shard CPU per reading at 1 shard /
at 2 shards (does splitting add work per reading? 1.0: none; unlike the
wall-clock efficiency it does not depend on how many cores are free);
``identical``: every sharded run's totals and statements
(bills) equal the single-process run's.  ``two_nodes``: the 2-shard run again
on a Ray cluster of two nodes started on this machine (``ray start --head``
and ``ray start --address``), one shard placed on each.  ``ray_call_us``: the
round trip of one empty call to a shard (why messages travel in batches).

The machine is shared and has 2 cores; the coordinator, Ray's own processes
and PostgreSQL share them with the shards.  Read the ratios; the load average
before and after is reported.  Ray's token authentication is switched off
for these private, local clusters (``RAY_AUTH_MODE=disabled``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString

from privmeter.bench._common import add_json_flag, emit
from privmeter.bench.fleet import Fleet, RunLog, Stopwatch, World, make_world, run_world
from privmeter.cluster.headend import ClusterHeadEnd, start_cluster
from privmeter.cluster.localpg import LocalPostgres
from privmeter.errors import ConfigError

if TYPE_CHECKING:
    import psycopg

__all__ = ["add_arguments", "run"]

_TICK = os.sysconf("SC_CLK_TCK")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_json_flag(p)
    p.add_argument("--groups", type=int, default=8, help="feeder groups")
    p.add_argument("--per-group", type=int, default=50, help="meters per group")
    p.add_argument("--intervals", type=int, default=5, help="1-minute intervals")
    p.add_argument("--key-bits", type=int, default=3072)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-two-nodes", action="store_true", help="skip the run on two Ray nodes")


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by processes of this machine (0 for a gone one)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _measure(
    head: ClusterHeadEnd, world: World, *, dsn: str | None = None
) -> tuple[Stopwatch, RunLog]:
    """Run the world on ``head``; with ``dsn`` (PostgreSQL) also the shards' and their database
    backends' CPU, and the WAL and database bytes the run wrote (in ``log.bytes``)."""
    watch = Stopwatch()
    if dsn is None:
        return watch, run_world(head, world, Fleet(world), watch=watch)
    import psycopg

    info = head.info()
    shards, stores = [i["pid"] for i in info], [i["store_pid"] for i in info]
    watch.external = {"shard": lambda: _proc_cpu(shards), "postgres": lambda: _proc_cpu(stores)}
    with psycopg.connect(dsn, autocommit=True) as con:
        lsn0 = _scalar(con, "SELECT pg_current_wal_lsn()")
        size0 = _scalar(con, "SELECT pg_database_size(current_database())")
        log = run_world(head, world, Fleet(world), watch=watch)
        log.written["wal"] = int(
            _scalar(con, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,))
        )
        log.written["database"] = int(
            _scalar(con, "SELECT pg_database_size(current_database())")
        ) - int(size0)
    return watch, log


def _scalar(
    con: psycopg.Connection[Any], query: LiteralString, params: tuple[Any, ...] = ()
) -> Any:
    """The one value a one-row query returns (an LSN or a size: PostgreSQL's own type)."""
    row = con.execute(query, params).fetchone()
    if row is None:
        raise ConfigError(f"PostgreSQL returned no row for {query}")
    return row[0]


def _figures(watch: Stopwatch, readings: int) -> dict[str, float]:
    out = {
        "readings_per_s": readings / watch.wall,
        "coordinator_cpu_us": watch.cpu / readings * 1e6,
    }
    for k, v in watch.external_cpu.items():
        out[f"{k}_cpu_us"] = v / readings * 1e6
    return out


def _ratio(a: float, b: float) -> float | None:
    """``a / b`` to 3 places; None when ``b`` is 0 (a run too short for the clock's ticks)."""
    return round(a / b, 3) if b > 0 else None


def _same(a: RunLog, b: RunLog) -> bool:
    return a.totals == b.totals and a.statements == b.statements and bool(a.statements)


def _ray_call_us(head: ClusterHeadEnd, calls: int = 200) -> float:
    g = sorted(head.map.group_shard)[0]
    t0 = time.perf_counter()
    for _ in range(calls):
        head.needing_epoch([g])
    return (time.perf_counter() - t0) / calls * 1e6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive_nodes() -> list[dict[str, Any]]:
    """The Ray cluster's live nodes (``ray.nodes()`` rows)."""
    import ray

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]  # ray: untyped
    return [n for n in nodes if n["Alive"]]


class _TwoNodes:
    """``ray start --head`` and ``ray start --address`` on this machine (killed by process group)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _start(self, *args: str) -> None:
        ray_cli = str(Path(sys.executable).with_name("ray"))
        self.procs.append(
            subprocess.Popen(
                [ray_cli, "start", *args, "--num-cpus=1", "--disable-usage-stats", "--block"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def __enter__(self) -> _TwoNodes:
        import ray

        port = _free_port()
        self.address = f"{ray.util.get_node_ip_address()}:{port}"  # type: ignore[no-untyped-call]  # ray: untyped
        self._start("--head", f"--port={port}", "--include-dashboard=false")
        for _ in range(120):
            if (
                subprocess.run(
                    [
                        str(Path(sys.executable).with_name("ray")),
                        "health-check",
                        "--address",
                        self.address,
                    ],
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            ):
                break
            time.sleep(0.5)
        else:
            raise ConfigError("the Ray head node did not start")
        self._start(f"--address={self.address}")
        ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        for _ in range(120):
            if len(_alive_nodes()) >= 2:
                return self
            time.sleep(0.5)
        raise ConfigError("the second Ray node did not join")

    def node_ids(self) -> list[str]:
        return sorted(str(n["NodeID"]) for n in _alive_nodes())

    def __exit__(self, *exc: object) -> None:
        import ray

        ray.shutdown()
        for p in self.procs:  # our own `ray start` processes and everything they started
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def run(args: argparse.Namespace) -> int:
    from privmeter.cluster.ray_backend import WORKER_NICENESS

    os.environ.setdefault(
        "RAY_AUTH_MODE", "disabled"
    )  # private local clusters only (see docstring)
    os.environ.setdefault(WORKER_NICENESS, "0")  # shards at the priority of the single process
    try:
        import psycopg  # noqa: F401
        import ray
    except ImportError:
        print(
            'privmeter bench scale: needs the cluster extra: pip install "privmeter[cluster]"',
            file=sys.stderr,
        )
        return 2
    from privmeter.cluster.ray_backend import connect_ray

    load_before = os.getloadavg()
    world = make_world(
        groups=args.groups,
        per_group=args.per_group,
        intervals=args.intervals,
        key_bits=args.key_bits,
        seed=args.seed,
    )
    readings = len(world.records)
    fig: dict[str, dict[str, float]] = {}
    same: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="privmeter-scale-") as tmp, LocalPostgres() as pg:
        common: dict[str, Any] = {
            "headend_key": world.write_headend_key(Path(tmp)),
            "plans": [world.plan_toml],
            "groups": world.group_configs(),
            "interval_seconds": 60,
            "min_key_bits": min(args.key_bits, 2048),
        }
        head = start_cluster(
            dsn=f"sqlite:{Path(tmp) / 'single.db'}", shards=1, backend="local", **common
        )
        watch, base = _measure(head, world)
        head.close()
        fig["single_process"] = _figures(watch, readings)
        fig["single_process"]["cpu_us"] = watch.cpu / readings * 1e6
        dsn = pg.create_database("in_process")  # the same, on PostgreSQL: the store's share
        head = start_cluster(dsn=dsn, shards=1, backend="local", **common)
        watch, log = _measure(head, world)
        head.close()
        in_process_pg_us = watch.cpu / readings * 1e6
        same["in_process_postgres"] = _same(base, log)
        connect_ray(None, num_cpus=2)
        call_us = 0.0
        last = base
        for n in (1, 2):
            dsn = pg.create_database(f"shards{n}")
            head = start_cluster(dsn=dsn, shards=n, num_cpus=1, **common)
            watch, log = _measure(head, world, dsn=dsn)
            last = log
            if n == 1:
                call_us = _ray_call_us(head)
            head.close()
            fig[str(n)] = _figures(watch, readings)
            same[str(n)] = _same(base, log)
        ray.shutdown()
        two: dict[str, Any] = {}
        if not args.no_two_nodes:
            with _TwoNodes() as nodes:
                ids = nodes.node_ids()
                dsn = pg.create_database("two_nodes")
                head = start_cluster(dsn=dsn, shards=2, num_cpus=1, placement=ids[:2], **common)
                placed = sorted({i["node"] for i in head.info()})
                watch, log = _measure(head, world, dsn=dsn)
                head.close()
                two = {
                    "nodes": len(ids),
                    "shards_on_distinct_nodes": len(placed) == 2,
                    "identical": _same(base, log),
                    "readings_per_s": round(readings / watch.wall, 1),
                }
    single_us = fig["single_process"]["cpu_us"]
    one, two_ = fig["1"], fig["2"]
    result: dict[str, Any] = {
        "readings_per_s": {k: round(v["readings_per_s"], 1) for k, v in fig.items()},
        "shard_cost_ratio": _ratio(one["shard_cpu_us"], single_us),
        "shard_cost_ratio_with_postgres": _ratio(
            one["shard_cpu_us"] + one["postgres_cpu_us"], single_us
        ),
        "efficiency": _ratio(two_["readings_per_s"], 2 * one["readings_per_s"]),
        # the work per reading does not grow when the groups are split (1.0 = none added)
        "cpu_efficiency": _ratio(one["shard_cpu_us"], two_["shard_cpu_us"]),
        "identical": all(same.values()) and two.get("identical", True),
        "two_nodes": two,
        "per_reading_cpu_us": {
            "single_process": round(single_us, 1),
            "single_process_on_postgres": round(in_process_pg_us, 1),
            **{
                f"shards_{n}": {
                    "shard": round(fig[n]["shard_cpu_us"], 1),
                    "postgres_backend": round(fig[n]["postgres_cpu_us"], 1),
                    "coordinator": round(fig[n]["coordinator_cpu_us"], 1),
                }
                for n in ("1", "2")
            },
        },
        "ray_call_us": round(call_us, 1),
        "message_bytes": {k: round(v, 1) for k, v in last.sizes.items()},
        "postgres_bytes_per_reading": {k: round(v / readings, 1) for k, v in last.written.items()},
        "readings": readings,
        "meters": len(world.meters),
        "groups": len(world.groups),
        "intervals": world.intervals,
        "key_bits": args.key_bits,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": {"efficiency": 0.85, "shard_cost_ratio": 1.25},
    }
    rows = [[f"readings/s, {k}", str(v)] for k, v in result["readings_per_s"].items()]
    rows += [
        [k, str(result[k])]
        for k in (
            "shard_cost_ratio",
            "shard_cost_ratio_with_postgres",
            "efficiency",
            "identical",
            "ray_call_us",
        )
    ]
    emit(
        result,
        as_json=args.json,
        title="sharded head-end: 1 and 2 shards vs one process",
        rows=rows,
        columns=["what", "value"],
    )
    return 0
