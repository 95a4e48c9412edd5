"""A fleet of meters (and their households) as one asyncio service (``privmeter meter``).

What it is for: one process runs many :class:`~privmeter.parties.meter.MeterAgent`
objects, each with its own load source and its own authenticated, encrypted
connection to the head-end (:func:`privmeter.net.transport.connect`, the
meter's Ed25519 key as its identity).  The household of each meter lives
beside it: a ``sys.settle`` arriving on the meter's line is answered by the
:class:`~privmeter.parties.household.HouseholdAgent` from the meter's local
readings (the local port), never by the meter.

``--scenario FILE --fleet k/K`` takes every K-th household of a simulation
scenario starting at k (keys and profiles from the scenario's cache).  A
meter that the scenario puts in an outage for an interval ignores that
interval's round (seeded: the same meters drop in every run).  On
``sys.bye`` the fleet writes ``--truth FILE`` (what the simulated households
really consumed, bytes per meter, CPU) and exits.

``--source SPEC`` (one meter) or ``--source METER_ID=SPEC`` (repeatable), or
the scenario's ``sources`` field, makes a meter read a real meter instead of
its simulated household (:func:`privmeter.grid.sources.open_source`: ``p1:``,
``p1-tcp:``, ``dlms:``, ``csv:``, ``sim``).  Its readings are pumped in a
thread (:class:`~privmeter.parties.meter.SourceReadings`); before answering a
round the meter waits, off the event loop, until the source has closed that
interval.  An interval the source reports missing gets no reading: the meter
is dropped from that total and nothing is billed for it.

Security assumption: each meter holds only its own keys; the head-end's key
is pinned (``--headend-key``).  Guarantee: a message that fails a check is
answered with an error code and changes nothing; a dropped connection is
re-established with back-off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from privmeter.argtypes import port, verify_key_hex
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import ConfigError, PrivmeterError, TransportError
from privmeter.files import read_json_file
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import Connection, Welcome, connect
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import Bye, FeedPublished, Hello, SettleRequest
from privmeter.parties.meter import MeterAgent, SourceReadings
from privmeter.parties.meter_state import MeterLedgerStore
from privmeter.protocol.codec import encode

__all__ = ["MeterFleet", "add_arguments", "is_offline", "run"]

log = logging.getLogger(__name__)


def is_offline(seed: int, meter_id: str, interval: int, dropout: float) -> bool:
    """The seeded outage model: is ``meter_id`` down for ``interval``?"""
    if dropout <= 0:
        return False
    h = hashlib.sha256(f"privmeter-outage/{seed}/{meter_id}/{interval}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < dropout


def round_of(msg: Any) -> int | None:
    from privmeter.sim.runner import round_of as r

    return r(msg)


class MeterFleet:
    """Many meters, one event loop, one connection each."""

    def __init__(self, meters: dict[str, MeterAgent], households: dict[str, HouseholdAgent], *,
                 host: str, port: int, headend_key: VerifyKey, dropout: float = 0.0, seed: int = 0,
                 via: dict[str, tuple[int, VerifyKey, str]] | None = None) -> None:
        self.meters = meters
        self.households = households
        self.host, self.port = host, port
        self.headend_key = headend_key
        self.dropout, self.seed = dropout, seed
        self.conns: dict[str, Connection] = {}
        self.bytes_up: dict[str, int] = dict.fromkeys(meters, 0)
        self.bytes_down: dict[str, int] = dict.fromkeys(meters, 0)
        self.done = asyncio.Event()
        self.errors: dict[str, int] = {}
        self.via = via or {}  # tree: meter -> (concentrator port, its key, its id)

    def _handler(self, mid: str) -> Any:
        meter, home = self.meters[mid], self.households[mid]

        async def handle(_peer: str, msg: Any) -> list[Any]:
            self.bytes_down[mid] += len(encode(msg))
            if isinstance(msg, ErrorMessage):
                self.errors[msg.code] = self.errors.get(msg.code, 0) + 1
                return []
            if isinstance(msg, Bye):
                self.done.set()
                return []
            if isinstance(msg, Welcome):
                return []
            t = round_of(msg)
            if t is not None and is_offline(self.seed, mid, t, self.dropout):
                return []  # the meter is down for this interval: it never saw the round
            feed = meter.load.fixed
            if t is not None and isinstance(feed, SourceReadings) and not feed.ended:
                await asyncio.to_thread(feed.wait_for, t)  # a real meter closes t a few s after its end
            if isinstance(msg, SettleRequest):
                out = home.handle(msg)
            else:
                if isinstance(msg, FeedPublished):
                    home.handle(msg)
                out = meter.handle(msg)
            for m in out:
                self.bytes_up[mid] += len(encode(m))
            return list(out)

        return handle

    async def connect_all(self, *, concurrency: int = 32) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(mid: str) -> None:
            async with sem:
                delay = 0.1
                for _ in range(20):
                    try:
                        port, key, sid = self.via.get(mid, (self.port, self.headend_key, "head-end"))
                        conn = await connect(
                            self.host, port, self.meters[mid].signing_key, key, server_id=sid,
                            handler=self._handler(mid))
                        self.conns[mid] = conn
                        m = self.meters[mid]
                        last = max(m.local_readings) if m.local_readings else -1
                        await conn.send(Hello(meter_id=mid, group=m.group, last_interval=last))
                        return
                    except TransportError:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                raise TransportError(f"meter {mid} cannot reach the head-end")

        await asyncio.gather(*(one(m) for m in self.meters))

    async def run_until_bye(self) -> None:
        await self.done.wait()
        for c in self.conns.values():
            with contextlib.suppress(Exception):
                await c.close()

    def truth(self) -> dict[str, Any]:
        out = {}
        for mid, m in self.meters.items():
            first = m.load.first_interval
            last = max(m.local_readings) if m.local_readings else first
            readings = {str(t): wh for t in range(first, last + 1) if (wh := m.load.energy_wh(t)) is not None}
            out[mid] = {"readings": readings,
                        "adjustments": [[k[0], k[1], k[2], v] for k, v in sorted(m.local_adjustments.items())],
                        "bytes_up": self.bytes_up[mid], "bytes_down": self.bytes_down[mid]}
        return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, required=True, help="scenario.json (see `privmeter simulate`)")
    p.add_argument("--fleet", default="0/1", help="k/K: this process runs every K-th meter from k")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=7700)
    p.add_argument("--headend-key", type=verify_key_hex, required=True, help="the head-end's Ed25519 public key (hex)")
    p.add_argument("--truth", type=Path, default=None, help="write the households' true loads here on exit")
    p.add_argument("--state", type=Path, default=None,
                   help="SQLite file for the meters' privacy ledgers (kept across restarts)")
    p.add_argument("--via", action="append", default=[], metavar="GROUP=PORT",
                   help="tree topology: meters of GROUP connect to the concentrator on PORT")
    p.add_argument("--source", action="append", default=[], metavar="[METER_ID=]SPEC",
                   help="read a real meter (p1:/dev/ttyUSB0, p1-tcp:HOST:PORT, dlms:HOST[:PORT], csv:PATH, "
                        "sim); METER_ID= when the fleet runs more than one meter; repeatable")


def run(args: argparse.Namespace) -> int:
    from privmeter.sim.runner import close_sources, make_meters
    from privmeter.sim.scenario import attach_sources, build, parse_source_args, scenario_from_json

    logging.basicConfig(level=logging.WARNING)
    c0 = time.process_time()
    sc = scenario_from_json(read_json_file(args.scenario, "scenario"))
    k, _, kk = args.fleet.partition("/")
    k_i, k_n = int(k), int(kk or 1)
    try:
        world = build(sc)
        ids = [h.meter_id for i, h in enumerate(world.households) if i % k_n == k_i]
        sources = parse_source_args(args.source, ids)
        if set(sources) - set(ids):
            raise ConfigError(f"--source for meter(s) not in this fleet: {sorted(set(sources) - set(ids))}")
        attach_sources(world.households, sources)
        ledger = MeterLedgerStore(args.state) if args.state is not None else None
        meters, homes = make_meters(world, ids, ledger=ledger)
    except (PrivmeterError, sqlite3.Error) as exc:
        print(f"privmeter meter: {exc}")
        return 2
    via: dict[str, tuple[int, VerifyKey, str]] = {}
    if args.via:
        from privmeter.parties.concentrator_service import concentrator_key

        ports = dict(v.split("=", 1) for v in args.via)
        for h in world.households:
            if h.meter_id in meters and h.group in ports:
                cid = f"dc-{h.group}"
                via[h.meter_id] = (int(ports[h.group]), concentrator_key(sc.seed, cid).verify_key, cid)
    fleet = MeterFleet(meters, homes, host=args.host, port=args.port,
                       headend_key=VerifyKey.from_hex(args.headend_key), dropout=sc.dropout, seed=sc.seed,
                       via=via)

    async def main() -> None:
        await fleet.connect_all()
        await fleet.run_until_bye()

    try:
        asyncio.run(main())
    except (PrivmeterError, KeyboardInterrupt) as exc:
        print(f"privmeter meter: {exc}")
        return 1
    finally:
        close_sources(meters)
        if ledger is not None:
            ledger.close()
    if args.truth is not None:
        args.truth.write_text(json.dumps({"cpu_s": round(time.process_time() - c0, 3),
                                          "errors": fleet.errors, "meters": fleet.truth()}))
    return 0
