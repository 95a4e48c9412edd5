"""A fleet of meters (and their households) as one asyncio service (simulated fleets).

What it is for: one process runs many :class:`~privmeter.parties.meter.MeterAgent`
objects, each with its own load source and its own authenticated, encrypted
connection to the head-end (:func:`privmeter.net.transport.connect`, the
meter's Ed25519 key as its identity).  The household of each meter lives
beside it: a ``sys.settle`` arriving on the meter's line is answered by the
:class:`~privmeter.parties.household.HouseholdAgent` from the meter's local
readings (the local port), never by the meter.

A simulated meter can be put in an outage for an interval (``offline``):
it ignores that interval's round.  :meth:`MeterFleet.truth` reports what
the simulated households really consumed (for ``privmeter simulate``'s
checks, ``sim/parties.py``).

Each meter is delivered its messages through its
:class:`~privmeter.parties.meter_feed.MeterFeed`, which pushes the readings of
a round into the sans-IO agent first.  A meter whose load is a
:class:`~privmeter.parties.meter_feed.SourceReadings` reads a real meter
(:func:`privmeter.grid.sources.open_source`: ``p1:``, ``p1-tcp:``, ``dlms:``,
``csv:``, ``sim``).  Its readings are pumped in a thread; before answering a
round the service waits, off the event loop, until the source has closed that
interval (the agent itself never waits).  An interval the source reports
missing gets no reading: the meter is dropped from that total and nothing is
billed for it.

Security assumption: each meter holds only its own keys; the head-end's key
is pinned.  Guarantee: a message that fails a check is
answered with an error code and changes nothing; a dropped connection is
re-established with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from privmeter.crypto.signing import VerifyKey
from privmeter.errors import TransportError
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import Connection, Welcome, connect
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import Bye, FeedPublished, Hello, SettleRequest, Tick
from privmeter.parties.meter_feed import MeterFeed, round_of
from privmeter.protocol.codec import encode

__all__ = ["MeterFleet"]

log = logging.getLogger(__name__)


class MeterFleet:
    """Many meters, one event loop, one connection each."""

    def __init__(
        self,
        feeds: dict[str, MeterFeed],
        households: dict[str, HouseholdAgent],
        *,
        host: str,
        port: int,
        headend_key: VerifyKey,
        offline: Callable[[str, int], bool] | None = None,
        via: dict[str, tuple[int, VerifyKey, str]] | None = None,
    ) -> None:
        self.feeds = feeds
        self.meters = {m: f.agent for m, f in feeds.items()}
        self.households = households
        self.host, self.port = host, port
        self.headend_key = headend_key
        self.offline = offline  # simulated outages: (meter, interval) -> down
        self.conns: dict[str, Connection] = {}
        self.bytes_up: dict[str, int] = dict.fromkeys(feeds, 0)
        self.bytes_down: dict[str, int] = dict.fromkeys(feeds, 0)
        self.done = asyncio.Event()
        self.errors: dict[str, int] = {}
        self.via = via or {}  # tree: meter -> (concentrator port, its key, its id)
        self.now = 0  # simulated time (see _sim_now)

    def _sim_now(self, msg: Any, t: int | None) -> int:
        """The simulated world's clock, as this fleet process sees the schedule advance.

        Simulation only: ``privmeter simulate`` runs the world faster than real
        time, so the fleet has no wall clock of its own to follow.  Privacy does
        not rest on it: a meter's comparison budget is keyed on its readings'
        own intervals (protocol/demand.py), never on this time.
        """
        if t is not None:
            self.now = max(self.now, (t + 1) * next(iter(self.meters.values())).interval_seconds)
        elif isinstance(msg, Tick):
            self.now = max(self.now, msg.now)
        return self.now

    def _handler(self, mid: str) -> Any:
        feed, home = self.feeds[mid], self.households[mid]

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
            if t is not None and self.offline is not None and self.offline(mid, t):
                return []  # the meter is down for this interval: it never saw the round
            if t is not None and feed.needs_wait(t):  # a real meter closes t a few s after its end
                await asyncio.to_thread(feed.wait_for, t)
            if isinstance(msg, SettleRequest):
                out = home.handle(msg)
            else:
                if isinstance(msg, FeedPublished):
                    home.handle(msg)
                out = feed.handle(msg, now=self._sim_now(msg, t))
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
                        port, key, sid = self.via.get(
                            mid, (self.port, self.headend_key, "head-end")
                        )
                        conn = await connect(
                            self.host,
                            port,
                            self.meters[mid].signing_key,
                            key,
                            server_id=sid,
                            handler=self._handler(mid),
                        )
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
        for mid, f in self.feeds.items():
            m = f.agent
            first = f.load.first_interval
            last = max(m.local_readings) if m.local_readings else first
            readings = {
                str(t): wh
                for t in range(first, last + 1)
                if (wh := f.load.energy_wh(t)) is not None
            }
            out[mid] = {
                "readings": readings,
                "adjustments": [
                    [k[0], k[1], k[2], v] for k, v in sorted(m.local_adjustments.items())
                ],
                "bytes_up": self.bytes_up[mid],
                "bytes_down": self.bytes_down[mid],
            }
        return out
