"""A household agent as a long-running asyncio service (``privmeter household``).

What it is for: the household's app, separate from its meter.  It connects to
the head-end with its own Ed25519 identity (party ``hh:<meter id>``), holds
the household's Paillier secret key, reads its own readings from its meter's
local port -- here a ``privmeter-readings v1`` CSV the meter exported
(:mod:`privmeter.grid.csvsource`) plus, if there were demand-response
events, a JSON list ``[[kind, event_id, interval, wh], ...]`` -- and answers
every ``sys.settle`` with a :class:`~privmeter.protocol.settlement.BillProof`
or a :class:`~privmeter.protocol.settlement.Dispute`
(:class:`~privmeter.parties.household.HouseholdAgent`).  Price feeds
(``sys.feed``) are verified against the plan's feed key before use.

In ``privmeter simulate`` the households run inside the meter fleets (one
connection per home); this command is the same agent on its own line, for
deployments across machines.

Security assumption: the secret key never leaves this process; the head-end
key is pinned.  Guarantee: the household never decrypts anything but its
expected bill (see :mod:`privmeter.protocol.settlement`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

from privmeter.argtypes import port, verify_key_hex
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import ConfigError
from privmeter.files import read_json_file
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import Welcome, connect
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import Bye

__all__ = ["add_arguments", "household_identity", "run", "serve"]

log = logging.getLogger(__name__)


def household_identity(seed: int, meter_id: str) -> SigningKey:
    """The simulation's household identity key (deterministic from the scenario seed)."""
    return SigningKey.from_seed(hashlib.sha256(f"privmeter-sim-household/{seed}/{meter_id}".encode()).digest())


async def serve(agent: HouseholdAgent, identity: SigningKey, *, host: str, port: int,
                headend_key: VerifyKey) -> list[Any]:
    """Connect, answer settle requests until ``sys.bye``; returns the answers given."""
    done = asyncio.Event()

    def handle(_peer: str, msg: Any) -> list[Any]:
        if isinstance(msg, Bye):
            done.set()
            return []
        if isinstance(msg, ErrorMessage | Welcome):
            return []
        return agent.handle(msg)

    conn = await connect(host, port, identity, headend_key, handler=handle)
    print(f"household {agent.meter_id} connected to {host}:{port}", flush=True)
    try:
        await done.wait()
    finally:
        await conn.close()
    return list(agent.answers)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, required=True, help="scenario.json (see `privmeter simulate`)")
    p.add_argument("--meter", required=True, help="the meter id of this household")
    p.add_argument("--readings", type=Path, required=True, help="the meter's local-port export (CSV v1)")
    p.add_argument("--adjustments", type=Path, default=None, help="demand-response amounts (JSON)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=7700)
    p.add_argument("--headend-key", type=verify_key_hex, required=True, help="the head-end's Ed25519 public key (hex)")


def run(args: argparse.Namespace) -> int:
    from privmeter.grid.csvsource import open_csv_source
    from privmeter.sim.scenario import build, scenario_from_json

    logging.basicConfig(level=logging.WARNING)
    sc = scenario_from_json(read_json_file(args.scenario, "scenario"))
    # the user's files first (quick to check), then the world (keys take a while)
    readings = {r.interval: r.energy_wh for r in open_csv_source(args.readings, sc.interval_seconds).readings()
                if r.energy_wh is not None}
    adjustments: dict[tuple[str, str, int], int] = {}
    if args.adjustments is not None:
        try:
            for kind, eid, t, wh in read_json_file(args.adjustments, "adjustments"):
                adjustments[(str(kind), str(eid), int(t))] = int(wh)
        except (TypeError, ValueError):
            raise ConfigError(f"adjustments file {str(args.adjustments)!r}: expected a JSON list of "
                              f"[kind, event id, interval, Wh]") from None
    world = build(sc)
    spec = next((h for h in world.households if h.meter_id == args.meter), None)
    if spec is None:
        raise ConfigError(f"no meter {args.meter!r} in the scenario")
    agent = HouseholdAgent(args.meter, spec.secret_key, spec.plan, world.headend_key.verify_key,
                           lambda: (readings, adjustments), period_start=world.first_interval,
                           period_intervals=sc.intervals)
    answers = asyncio.run(serve(agent, household_identity(sc.seed, args.meter), host=args.host,
                                port=args.port, headend_key=VerifyKey.from_hex(args.headend_key)))
    for a in answers:
        print(type(a).__name__, getattr(a, "bill", getattr(a, "reason", "")))
    return 0
