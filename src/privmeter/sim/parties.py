"""The parties of a simulated world as separate processes (``python -m privmeter.sim.parties``).

What it is for: ``privmeter simulate`` (network mode) and the tests run a
scenario's head-end, meter fleets, households and concentrators as separate
processes over loopback TCP.  Every key here is derived from the scenario's
seed (:mod:`privmeter.sim.scenario`), so these commands are for simulation
only; a deployment runs ``privmeter headend|household|concentrator --config``
(:mod:`privmeter.app`), where each party generates its own keys.

``python -m privmeter.sim.parties headend --scenario scenario.json --db he.db``
serves the scenario's meters (see :func:`privmeter.sim.network.headend_main`);
``... meter --scenario FILE --fleet k/K --headend-key HEX`` runs every K-th
meter (and its household) from k (seeded outages: a meter that the scenario
puts offline ignores that interval's round); ``... household --scenario FILE
--meter ID --readings CSV`` runs one household agent on its own line (with
``--ready-fd FD``, it writes ``ready <meter id>`` and a newline to the file
descriptor FD, inherited from the parent, once its connection to the head-end
is up, then closes FD: the parent's handshake; end of file without that line
means the household failed before connecting);
``... concentrator --scenario FILE --group G`` relays a feeder's meters.

Security: simulation keys from the seed.  Never use these for real households.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from privmeter.argtypes import at_least, listen_port, non_negative, port, positive, verify_key_hex
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import ConfigError, PrivmeterError
from privmeter.files import read_json_file
from privmeter.parties.concentrator import Concentrator
from privmeter.parties.concentrator_service import ConcentratorService
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.household_service import serve
from privmeter.parties.meter_service import MeterFleet
from privmeter.parties.meter_state import MeterLedgerStore
from privmeter.sim.identities import concentrator_key, household_identity, is_offline
from privmeter.sim.network import headend_main
from privmeter.sim.runner import close_sources, make_meters

__all__ = ["main"]


def _scenario(path: Path):  # type: ignore[no-untyped-def]
    from privmeter.sim.scenario import scenario_from_json

    return scenario_from_json(read_json_file(path, "scenario"))


# -- headend --------------------------------------------------------------------------------


def _headend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        type=Path,
        required=True,
        help="scenario.json written by `privmeter simulate --out DIR` (or by hand)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=listen_port, default=7700)
    p.add_argument("--db", type=Path, required=True, help="SQLite store (WAL); reopened on restart")
    p.add_argument(
        "--speed",
        type=non_negative,
        default=0.0,
        help="0 = as fast as the meters answer; 1 = real time; N = N x real time",
    )
    p.add_argument(
        "--round-timeout", type=positive, default=30.0, help="seconds to wait for a round's answers"
    )
    p.add_argument(
        "--wait-meters", type=positive, default=60.0, help="seconds to wait for meters to connect"
    )
    p.add_argument(
        "--report", type=Path, default=None, help="write the checked results here (JSON)"
    )


def _headend(args: argparse.Namespace) -> int:
    sc = _scenario(args.scenario)
    return asyncio.run(
        headend_main(
            sc,
            host=args.host,
            port=args.port,
            db=args.db,
            speed=args.speed,
            round_timeout=args.round_timeout,
            wait_meters=args.wait_meters,
            report=args.report,
        )
    )


# -- meter fleet ----------------------------------------------------------------------------


def _meter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario", type=Path, required=True, help="scenario.json (see `privmeter simulate`)"
    )
    p.add_argument("--fleet", default="0/1", help="k/K: this process runs every K-th meter from k")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=7700)
    p.add_argument(
        "--headend-key",
        type=verify_key_hex,
        required=True,
        help="the head-end's Ed25519 public key (hex)",
    )
    p.add_argument(
        "--truth", type=Path, default=None, help="write the households' true loads here on exit"
    )
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="SQLite file for the meters' privacy ledgers (kept across restarts)",
    )
    p.add_argument(
        "--via",
        action="append",
        default=[],
        metavar="GROUP=PORT",
        help="tree topology: meters of GROUP connect to the concentrator on PORT",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="[METER_ID=]SPEC",
        help="read a real meter (p1:/dev/ttyUSB0, p1-tcp:HOST:PORT, dlms:HOST[:PORT], csv:PATH, "
        "sim); METER_ID= when the fleet runs more than one meter; repeatable",
    )


def _meter(args: argparse.Namespace) -> int:
    from privmeter.sim.scenario import attach_sources, build, parse_source_args

    c0 = time.process_time()
    sc = _scenario(args.scenario)
    k, _, kk = args.fleet.partition("/")
    k_i, k_n = int(k), int(kk or 1)
    world = build(sc)
    ids = [h.meter_id for i, h in enumerate(world.households) if i % k_n == k_i]
    sources = parse_source_args(args.source, ids)
    if set(sources) - set(ids):
        raise ConfigError(
            f"--source for meter(s) not in this fleet: {sorted(set(sources) - set(ids))}"
        )
    attach_sources(world.households, sources)
    ledger = MeterLedgerStore(args.state) if args.state is not None else None
    meters, homes, feeds = make_meters(world, ids, ledger=ledger)
    via: dict[str, tuple[int, VerifyKey, str]] = {}
    if args.via:
        ports = dict(v.split("=", 1) for v in args.via)
        for h in world.households:
            if h.meter_id in meters and h.group in ports:
                cid = f"dc-{h.group}"
                via[h.meter_id] = (
                    int(ports[h.group]),
                    concentrator_key(sc.seed, cid).verify_key,
                    cid,
                )
    fleet = MeterFleet(
        feeds,
        homes,
        host=args.host,
        port=args.port,
        headend_key=VerifyKey.from_hex(args.headend_key),
        offline=lambda m, t: is_offline(sc.seed, m, t, sc.dropout),
        via=via,
    )

    async def run() -> None:
        await fleet.connect_all()
        await fleet.run_until_bye()

    try:
        asyncio.run(run())
    finally:
        close_sources(feeds)
        if ledger is not None:
            ledger.close()
    if args.truth is not None:
        args.truth.write_text(
            json.dumps(
                {
                    "cpu_s": round(time.process_time() - c0, 3),
                    "errors": fleet.errors,
                    "meters": fleet.truth(),
                }
            )
        )
    return 0


# -- household ------------------------------------------------------------------------------


def _household_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario", type=Path, required=True, help="scenario.json (see `privmeter simulate`)"
    )
    p.add_argument("--meter", required=True, help="the meter id of this household")
    p.add_argument(
        "--readings", type=Path, required=True, help="the meter's local-port export (CSV v1)"
    )
    p.add_argument("--adjustments", type=Path, default=None, help="demand-response amounts (JSON)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=7700)
    p.add_argument(
        "--headend-key",
        type=verify_key_hex,
        required=True,
        help="the head-end's Ed25519 public key (hex)",
    )
    p.add_argument(
        "--ready-fd",
        type=at_least(0),
        default=None,
        help="once connected, write 'ready <meter id>' and a newline to this inherited file "
        "descriptor and close it (a parent's handshake)",
    )


def _ready_fd(fd: int, meter_id: str) -> Callable[[], None]:
    """The handshake of ``--ready-fd``: one line on ``fd``, then ``fd`` closed."""

    def ready() -> None:
        try:
            os.write(fd, f"ready {meter_id}\n".encode())
        except OSError as exc:
            raise ConfigError(f"--ready-fd {fd}: cannot write the ready line: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    return ready


def _household(args: argparse.Namespace) -> int:
    from privmeter.grid.devices.csvsource import open_csv_source
    from privmeter.sim.scenario import build

    sc = _scenario(args.scenario)
    # the user's files first (quick to check), then the world (keys take a while)
    readings = {
        r.interval: r.energy_wh
        for r in open_csv_source(args.readings, sc.interval_seconds).readings()
        if r.energy_wh is not None
    }
    adjustments: dict[tuple[str, str, int], int] = {}
    if args.adjustments is not None:
        try:
            for kind, eid, t, wh in read_json_file(args.adjustments, "adjustments"):
                adjustments[(str(kind), str(eid), int(t))] = int(wh)
        except (TypeError, ValueError):
            raise ConfigError(
                f"adjustments file {str(args.adjustments)!r}: expected a JSON list of "
                f"[kind, event id, interval, Wh]"
            ) from None
    world = build(sc)
    spec = next((h for h in world.households if h.meter_id == args.meter), None)
    if spec is None:
        raise ConfigError(f"no meter {args.meter!r} in the scenario")
    agent = HouseholdAgent(
        args.meter,
        spec.secret_key,
        spec.plan,
        world.headend_key.verify_key,
        lambda: (readings, adjustments),
        meter_key=spec.signing_key.verify_key,
        period_start=world.first_interval,
        period_intervals=sc.intervals,
    )
    answers = asyncio.run(
        serve(
            agent,
            household_identity(sc.seed, args.meter),
            host=args.host,
            port=args.port,
            headend_key=VerifyKey.from_hex(args.headend_key),
            ready=None if args.ready_fd is None else _ready_fd(args.ready_fd, args.meter),
        )
    )
    for a in answers:
        print(type(a).__name__, getattr(a, "bill", getattr(a, "reason", "")))
    return 0


# -- concentrator ---------------------------------------------------------------------------


def _concentrator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario", type=Path, required=True, help="scenario.json (see `privmeter simulate`)"
    )
    p.add_argument("--group", required=True, help="the feeder (group id) this concentrator serves")
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument(
        "--listen-port", type=listen_port, default=0, help="port for meters (0: pick one, printed)"
    )
    p.add_argument("--host", default="127.0.0.1", help="head-end host")
    p.add_argument("--port", type=port, default=7700, help="head-end port")
    p.add_argument(
        "--headend-key",
        type=verify_key_hex,
        required=True,
        help="the head-end's Ed25519 public key (hex)",
    )


def _concentrator(args: argparse.Namespace) -> int:
    from privmeter.sim.scenario import build

    sc = _scenario(args.scenario)
    world = build(sc)
    members = world.groups.get(args.group)
    if not members:
        raise ConfigError(f"no group {args.group!r} in the scenario")
    cid = f"dc-{args.group}"
    keys = {h.meter_id: h.signing_key.verify_key for h in world.households}
    svc = ConcentratorService(
        Concentrator(cid, members),
        concentrator_key(sc.seed, cid),
        keys,
        headend=(args.host, args.port),
        headend_key=VerifyKey.from_hex(args.headend_key),
        listen=(args.listen_host, args.listen_port),
    )

    async def run() -> None:
        port = await svc.start()
        print(f"LISTEN {port}", flush=True)
        await svc.done.wait()
        await asyncio.sleep(0.2)  # let the bye reach the meters
        await svc.close()

    asyncio.run(run())
    return 0


ROLES = {
    "headend": (_headend_args, _headend),
    "meter": (_meter_args, _meter),
    "household": (_household_args, _household),
    "concentrator": (_concentrator_args, _concentrator),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m privmeter.sim.parties",
        description="a simulated world's parties as processes (seeded keys)",
    )
    sub = parser.add_subparsers(dest="role", required=True)
    for name, (add, run) in ROLES.items():
        sp = sub.add_parser(name)
        add(sp)
        sp.set_defaults(_run=run)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        return 130
    except (PrivmeterError, OSError, sqlite3.Error) as exc:
        print(f"privmeter.sim.parties {args.role}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
