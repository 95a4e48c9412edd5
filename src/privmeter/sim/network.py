"""Run a scenario over loopback TCP: head-end in this process, meter fleets as subprocesses.

What it is for: ``privmeter simulate`` (default mode) starts the head-end
core behind a transport server (SQLite WAL store in ``DIR/headend.db``),
spawns ``fleets`` processes of ``privmeter meter`` (each one asyncio loop
holding its share of the meters, one authenticated connection per meter,
plus the households, which answer statements on their meter's line), drives
the intervals, and checks the results against the truth the fleets report
when they exit (the fleets simulate the physical households, so they know
the true loads; the head-end never sees them).

Network emulation: latency, jitter, loss and bandwidth are applied by the
transport's :class:`~privmeter.net.emulation.NetworkEmulator` on every
meter link; meter outages are seeded per (meter, interval) in the fleet (a
meter that is down ignores the round), so the aggregation's dropout
recovery and the billing's late records are exercised for real.

Security: as the transport's.  Guarantee: the report's truth comes from the
fleets' exit files and is read only by :func:`privmeter.sim.runner.check`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privmeter.errors import TransportError
from privmeter.net.emulation import LinkProfile, NetworkEmulator
from privmeter.net.handshake import TrustStore
from privmeter.parties.engine import drive
from privmeter.parties.headend_service import NetLink, start_server
from privmeter.parties.headend_store import HeadEndStorage, HeadEndStore
from privmeter.parties.messages import Bye
from privmeter.sim.clock import SimClock
from privmeter.sim.identities import concentrator_key, household_identity
from privmeter.sim.runner import check, make_core
from privmeter.sim.scenario import Scenario, World, build, scenario_json

__all__ = ["emulator_for", "headend_main", "resume_point", "run_network", "trust_for"]


def trust_for(world: World) -> TrustStore:
    trust = TrustStore((h.signing_key.verify_key, h.meter_id) for h in world.households)
    for h in world.households:  # households on their own line (``privmeter household``)
        trust.add(
            household_identity(world.scenario.seed, h.meter_id).verify_key, f"hh:{h.meter_id}"
        )
    if world.scenario.topology == "tree":
        for g in world.groups:
            trust.add(concentrator_key(world.scenario.seed, f"dc-{g}").verify_key, f"dc-{g}")
    return trust


def emulator_for(sc: Scenario) -> NetworkEmulator | None:
    prof = LinkProfile(
        latency_ms=sc.latency_ms,
        jitter_ms=sc.jitter_ms,
        loss=sc.loss,
        bandwidth_bps=sc.bandwidth_bps,
    )
    return None if prof.is_ideal else NetworkEmulator(prof, seed=sc.seed)


async def _wait_connected(
    link: NetLink,
    ids: list[str],
    timeout: float,
    procs: list[asyncio.subprocess.Process] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = [m for m in ids if not link.connected(m)]
        if not missing:
            return
        if procs and any(p.returncode not in (None, 0) for p in procs):
            raise TransportError("a meter fleet exited before connecting")
        if time.monotonic() > deadline:
            raise TransportError(
                f"{len(missing)} meters did not connect within {timeout:.0f} s "
                f"(first: {missing[0]})"
            )
        await asyncio.sleep(0.05)


def resume_point(store: HeadEndStorage, groups: Any, first: int, count: int) -> int:
    """Where a restarted head-end carries on in ``[first, first + count]``: just
    after the last interval with a stored total in any group.  Never before
    it: aggregating an interval twice would give two totals of one interval
    (differencing), so an interval that was not unmasked before the restart
    stays without a total."""
    last = first - 1
    for g in groups:
        for t in store.totals(g):
            if first <= t.interval < first + count:
                last = max(last, t.interval)
    return last + 1


async def headend_main(
    sc: Scenario,
    *,
    host: str,
    port: int,
    db: Path,
    speed: float = 0.0,
    round_timeout: float = 30.0,
    wait_meters: float = 60.0,
    report: Path | None = None,
) -> int:
    """``python -m privmeter.sim.parties headend``: serve a scenario's meters and drive it (no truth, no check).

    Restarted on the same ``db`` it resumes (:func:`resume_point`): intervals
    up to the last stored total are not aggregated again, a new aggregation
    epoch starts after it, and the settlement covers the whole billing period
    from the stored records (meters resend what was never acknowledged)."""
    world = build(sc)
    core = make_core(world, HeadEndStore(db))
    start = resume_point(core.store, world.groups, world.first_interval, sc.intervals)
    link = NetLink(core, round_timeout=round_timeout)
    server = await start_server(
        core, link, trust_for(world), host=host, port=port, emulation=emulator_for(sc)
    )
    print(
        f"head-end listening on {host}:{server.port}, key {core.signing_key.verify_key.hex()}",
        flush=True,
    )
    if start > world.first_interval:
        print(
            f"resuming at interval {start}: {start - world.first_interval} of {sc.intervals} "
            "already aggregated",
            flush=True,
        )
    ids = [h.meter_id for h in world.households]
    try:
        await _wait_connected(link, ids, wait_meters)
        log = await drive(
            core,
            link,
            world.groups,
            first_interval=start,
            count=world.first_interval + sc.intervals - start,
            interval_seconds=sc.interval_seconds,
            clock=SimClock(world.first_interval * sc.interval_seconds, speed=speed),
            feeds=list(world.feeds.values()),
        )
        await server.broadcast(Bye(reason="run complete"))
        if report is not None:  # what the head-end itself knows (no truth here)
            report.write_text(
                json.dumps(
                    {
                        "format": "privmeter.headend.summary/1",
                        "totals": [
                            [t.group, t.interval, t.total, t.survivors, t.dropped]
                            for t in core.totals()
                        ],
                        "events": core.store.events(),
                        "settlements": [
                            [m, p, kind, bill] for m, p, kind, _a, bill in core.settlements()
                        ],
                        "answered_settlement": sorted(log.settled),
                        "headend_cpu_s": round(sum(core.cpu.values()), 3),
                    },
                    indent=1,
                )
            )
    finally:
        await server.close()
        core.store.close()
    return 0


async def _run(
    world: World,
    out: Path,
    fleets: int,
    speed: float,
    round_timeout: float,
    progress: Callable[[int, int], None] | None,
    audit_dir: Path | None,
) -> dict[str, Any]:
    sc = world.scenario
    db = out / "headend.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    store = HeadEndStore(db)
    core = make_core(world, store)
    link = NetLink(core, round_timeout=round_timeout)
    server = await start_server(
        core, link, trust_for(world), host="127.0.0.1", port=0, emulation=emulator_for(sc)
    )
    scen_path = out / "scenario.json"
    scen_path.write_text(json.dumps(scenario_json(sc), indent=1))
    procs = []
    env = dict(os.environ)
    via: list[str] = []
    hexkey = core.signing_key.verify_key.hex()
    if sc.topology == "tree":  # one concentrator process per feeder, then the meters behind them
        for g in sorted(world.groups):
            cp = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "privmeter.sim.parties",
                "concentrator",
                "--scenario",
                str(scen_path),
                "--group",
                g,
                "--host",
                "127.0.0.1",
                "--port",
                str(server.port),
                "--headend-key",
                hexkey,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            procs.append(cp)
            if cp.stdout is None:
                raise TransportError("concentrator process has no stdout pipe")
            line = (await asyncio.wait_for(cp.stdout.readline(), 300)).decode().split()
            if len(line) != 2 or line[0] != "LISTEN":
                raise TransportError(f"concentrator of {g} did not start")
            via += ["--via", f"{g}={line[1]}"]
    n_aux = len(procs)
    for k in range(fleets):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "privmeter.sim.parties",
                "meter",
                "--scenario",
                str(scen_path),
                "--fleet",
                f"{k}/{fleets}",
                "--host",
                "127.0.0.1",
                "--port",
                str(server.port),
                "--headend-key",
                hexkey,
                "--truth",
                str(out / f"fleet-{k}.json"),
                *via,
                env=env,
            )
        )
    t0 = time.perf_counter()
    try:
        await _wait_connected(link, [h.meter_id for h in world.households], 300.0, procs)
        connect_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        log = await drive(
            core,
            link,
            world.groups,
            first_interval=world.first_interval,
            count=sc.intervals,
            interval_seconds=sc.interval_seconds,
            clock=SimClock(world.first_interval * sc.interval_seconds, speed=speed),
            feeds=list(world.feeds.values()),
            progress=progress,
        )
        wall = time.perf_counter() - t0
        await server.broadcast(Bye(reason="run complete"))
        codes = [await asyncio.wait_for(p.wait(), 120) for p in procs][n_aux:]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        stats = server.stats
        await server.close()
    truth: dict[str, dict[int, int]] = {}
    adjust: dict[str, dict[tuple[str, str, int], int]] = {}
    bytes_up: dict[str, int] = {}
    bytes_down: dict[str, int] = {}
    fleet_cpu = []
    for k in range(fleets):
        d = json.loads((out / f"fleet-{k}.json").read_text())
        fleet_cpu.append(d["cpu_s"])
        for m, v in d["meters"].items():
            truth[m] = {int(t): wh for t, wh in v["readings"].items()}
            adjust[m] = {(a[0], a[1], int(a[2])): int(a[3]) for a in v["adjustments"]}
            bytes_up[m], bytes_down[m] = v["bytes_up"], v["bytes_down"]
    res = check(world, core, log, truth=truth, adjustments_of=adjust)
    n = max(len(bytes_up), 1)
    res["performance"].update(
        {
            "mode": "network",
            "fleets": fleets,
            "fleet_exit_codes": codes,
            "connect_s": round(connect_s, 3),
            "wall_s": round(wall, 3),
            "fleet_cpu_s": fleet_cpu,
            "bytes_per_meter_up": round(sum(bytes_up.values()) / n, 1),
            "bytes_per_meter_down": round(sum(bytes_down.values()) / n, 1),
        }
    )
    res["bytes_per_meter"] = {
        m: {"up": bytes_up[m], "down": bytes_down[m]} for m in sorted(bytes_up)
    }
    res["network"].update(
        {
            "transport": {
                "established": stats.established,
                "records_in": stats.records_in,
                "records_out": stats.records_out,
                "emulated_drops": stats.emulated_drops,
                "errors": dict(stats.errors),
            },
            "emulation": {
                "latency_ms": sc.latency_ms,
                "jitter_ms": sc.jitter_ms,
                "loss": sc.loss,
                "bandwidth_bps": sc.bandwidth_bps,
                "dropout": sc.dropout,
            },
        }
    )
    if audit_dir is not None:
        from privmeter.sim.bundle import write_audit_bundles

        write_audit_bundles(world, core, audit_dir)
    store.close()
    return res


def run_network(
    world: World,
    out: Path,
    *,
    fleets: int = 2,
    speed: float = 0.0,
    round_timeout: float = 30.0,
    progress: Callable[[int, int], None] | None = None,
    audit_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``world`` over loopback sockets (see the module docstring); returns the checked results.

    ``audit_dir``: also write every household's audit bundle there (:mod:`privmeter.sim.bundle`).
    """
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(world, out, fleets, speed, round_timeout, progress, audit_dir))
