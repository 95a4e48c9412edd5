"""A household agent as a long-running asyncio service (``privmeter household``).

What it is for: the household's app, separate from its meter.  It connects to
the head-end with its own Ed25519 identity (party ``hh:<meter id>``), holds
the household's Paillier secret key, reads its own readings from its meter's
local port -- here a ``privmeter-readings v1`` CSV the meter exported
(:mod:`privmeter.grid.devices.csvsource`) plus, if there were demand-response
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

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import Welcome, connect
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import Bye

__all__ = ["serve"]

log = logging.getLogger(__name__)


async def serve(
    agent: HouseholdAgent,
    identity: SigningKey,
    *,
    host: str,
    port: int,
    headend_key: VerifyKey,
    ready: Callable[[], None] | None = None,
) -> list[Any]:
    """Connect, answer settle requests until ``sys.bye``; returns the answers given.

    ``ready`` is called once the authenticated connection to the head-end is up (a parent
    process waiting for this household before it starts the run uses it as its handshake).
    """
    done = asyncio.Event()

    def handle(_peer: str, msg: Any) -> list[Any]:
        if isinstance(msg, Bye):
            done.set()
            return []
        if isinstance(msg, ErrorMessage | Welcome):
            return []
        return agent.handle(msg)

    conn = await connect(host, port, identity, headend_key, handler=handle)
    log.info("household %s connected to %s:%d", agent.meter_id, host, port)
    try:
        if ready is not None:
            ready()
        await done.wait()
    finally:
        await conn.close()
    return list(agent.answers)
