"""The sharded head-end behind the deployed head-end's interval loop (``privmeter headend`` with ``[cluster]``).

What it is for: the deployed head-end (:mod:`privmeter.app.headend`) runs the
same enrolment, interval loop and settlement whether its head-end core is one
:class:`~privmeter.parties.headend.HeadEndCore` on SQLite or a
:class:`~privmeter.cluster.headend.ClusterHeadEnd` on Ray and PostgreSQL.
This module adapts the second to what the first offers:

* :class:`ClusterCore`: what the deployment's bookkeeping needs from a core
  (register and unregister meters, define groups, the settlements, the
  signing key).  Registrations wait until their group is placed on a shard,
  then go in one call per shard;
* :class:`ClusterLink`: the interval loop's link whose meters' messages go
  through a :class:`~privmeter.cluster.frontdoor.FrontDoor` (batched, one call
  per shard) instead of a local core; round answers are counted when their
  shard has committed them;
* :class:`ClusterEngine`: the interval engine whose steps are one call per
  shard, off the event loop (epochs, open and close of every group's
  interval, a billing period's statements with their logs).

What stays in the head-end process: the transport server (meters' handshakes
and channels: the front door), enrolment and the registry of members
(``registry.db``: the only writer of who is enrolled), the signed rosters and
the metrics.  What lives on the shards: every meter's records, accounts,
statements, settlements, every group's aggregation, totals and epochs, all in
PostgreSQL, so a restarted head-end process resumes from there (groups stay on
the shards that hold their data: :meth:`ClusterHeadEnd.restore`).

Security: as the single-process head-end's; the front door holds no key but
the head-end's channel identity.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from privmeter.cluster.frontdoor import FrontDoor
from privmeter.cluster.headend import ClusterHeadEnd
from privmeter.crypto.paillier import PaillierPublicKey
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import InvalidArgument, PrivmeterError, UnknownParty
from privmeter.grid.tariff.plans import Plan
from privmeter.net.channel import ErrorMessage
from privmeter.parties.engine import DriveLog, IntervalEngine
from privmeter.parties.headend import GroupConfig
from privmeter.parties.headend_service import NetLink
from privmeter.parties.headend_store import StoredTotal
from privmeter.parties.registry import Member
from privmeter.protocol.aggregation_messages import KeyAdvert, MaskedInput
from privmeter.protocol.codec import decode
from privmeter.protocol.settlement import BillProof, Dispute

__all__ = ["ClusterCore", "ClusterEngine", "ClusterLink"]

log = logging.getLogger(__name__)


class ClusterCore:
    """The head-end core's bookkeeping interface, on a :class:`ClusterHeadEnd` (see module doc)."""

    demand = False  # demand management does not run on a cluster yet (the config refuses it)

    def __init__(
        self, head: ClusterHeadEnd, signing_key: SigningKey, member: Callable[[str], Member | None]
    ) -> None:
        self.head = head
        self.signing_key = signing_key
        self.member = member
        self.concentrators: dict[
            str, frozenset[str]
        ] = {}  # none behind a cluster (see docs/scale.md)
        self._pending: dict[str, tuple[str, tuple[str, str, str, str, int, int]]] = {}
        self._lock = threading.Lock()

    def register(
        self,
        meter_id: str,
        verify_key: VerifyKey,
        household_pk: PaillierPublicKey,
        plan: Plan,
        *,
        wellformed_proof: Sequence[int],
        period_start: int,
        period_intervals: int,
    ) -> None:
        """Queue a registration; it reaches its shard (which runs the registration check) once its
        group is placed (:meth:`define_group`) and before the next call that needs it."""
        del household_pk, wellformed_proof  # the shard reads both from the member's key file
        m = self.member(meter_id)
        if m is None:
            raise UnknownParty("not enrolled", meter_id=meter_id)
        with self._lock:
            self._pending[meter_id] = (
                m.group,
                (
                    meter_id,
                    verify_key.hex(),
                    m.household_json,
                    plan.plan_id,
                    period_start,
                    period_intervals,
                ),
            )

    def flush(self) -> None:
        """Send the queued registrations whose group is placed (one call per shard)."""
        with self._lock:
            ready = {
                mid: gr for mid, gr in self._pending.items() if gr[0] in self.head.map.group_shard
            }
            if not ready:
                return
            self.head.register(
                [row for _, row in ready.values()], groups={m: g for m, (g, _) in ready.items()}
            )
            for mid in ready:
                del self._pending[mid]

    def unregister(self, meter_id: str) -> None:
        with self._lock:
            self._pending.pop(meter_id, None)
        self.head.unregister(meter_id)

    def define_group(self, cfg: GroupConfig) -> None:
        self.head.define_group(cfg)
        self.flush()

    def settlements(self) -> list[tuple[str, int]]:
        """(meter, period) of each answered statement: what the deployment polls every interval
        (the proofs stay on the shards; :meth:`ClusterHeadEnd.settlements` has them)."""
        self.flush()
        return self.head.settled()

    def totals(self) -> list[StoredTotal]:
        return self.head.totals()

    def new_epoch(self, group: str, first_interval: int) -> dict[str, list[Any]]:
        self.flush()
        return self.head.new_epoch(group, first_interval)

    def make_bundle(self, group: str) -> dict[str, list[Any]]:
        return self.head.make_bundle(group)


class ClusterLink(NetLink):
    """The interval loop's link; meters' messages go to their shards through a front door."""

    def __init__(self, core: ClusterCore, door: FrontDoor, **kw: Any) -> None:
        super().__init__(core, group_commit=False, **kw)  # type: ignore[arg-type]
        self.door = door

    def handle(self, peer: str, msg: Any) -> Any:
        if isinstance(msg, ErrorMessage):  # a peer's complaint: logged, never answered
            log.info("error code %r from %s", msg.code, peer)
            return []
        return self._forward(peer, msg)

    async def _forward(self, peer: str, msg: Any) -> list[Any]:
        pending = self.door.handle(peer, msg)
        out: list[Any] = (
            await pending if isinstance(pending, asyncio.Future) else pending
        )  # the shard's error
        relay = self.door.head.relay
        items = []
        while relay:
            items.append(relay.pop(0))
        self.relay(items)
        self.observe(type(msg), peer)
        return out

    async def exchange(
        self, outgoing: Mapping[str, Sequence[Any]], *, expect: Any, now: int, interval: int
    ) -> set[str]:
        self.door.now, self.door.interval = now, interval
        return await super().exchange(outgoing, expect=expect, now=now, interval=interval)


def _merge(*parts: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


class ClusterEngine(IntervalEngine):
    """The interval engine on a cluster: each step one call per shard, off the event loop."""

    def __init__(self, core: ClusterCore, link: ClusterLink, log_: DriveLog | None = None) -> None:
        super().__init__(core, link, log_)  # type: ignore[arg-type]
        self.cluster = core
        self.stale: set[str] = set()  # members of groups whose shard lost their epoch

    def take_stale(self) -> set[str]:
        """The members of groups whose shard had no epoch for them at the last interval (Ray
        restarted it: aggregation secrets are never stored), forgotten once returned: the
        interval loop gives those groups a new epoch, as for meters that came back."""
        out, self.stale = self.stale, set()
        return out

    async def setup(
        self,
        group: str,
        first_interval: int,
        *,
        now: int,
        interval: int | None = None,
        preamble: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        t0 = time.perf_counter()
        warm = first_interval - 1 if interval is None else interval
        epoch = await asyncio.to_thread(self.cluster.new_epoch, group, first_interval)
        await self.link.exchange(
            _merge(preamble or {}, epoch), expect=KeyAdvert, now=now, interval=warm
        )
        bundle = await asyncio.to_thread(self.cluster.make_bundle, group)
        await self.link.exchange(bundle, expect=None, now=now, interval=warm)
        self._lap("setup", t0)

    async def interval(
        self,
        groups: Mapping[str, Sequence[str]],
        t: int,
        *,
        now: int,
        close: Any = None,
        on_event: Any = None,
    ) -> None:
        """Serve interval ``t`` in every group of ``groups`` (no demand management: ``close`` and
        ``on_event`` are not supported on a cluster)."""
        if close is not None or on_event is not None:
            raise InvalidArgument("close and on_event hooks need a local head-end core")
        head = self.cluster.head
        t0 = time.perf_counter()
        opened = await asyncio.to_thread(head.open_intervals, list(groups))
        outs = {m: [decode(b) for b in bs] for m, bs in opened.items()}
        for g, ms in groups.items():
            if not any(m in opened for m in ms):  # no epoch on its shard: it restarted
                log.warning(
                    "group %s has no epoch on its shard (restarted?): a new one next interval", g
                )
                self.stale.update(ms)
        got = await self.link.exchange(outs, expect=MaskedInput, now=now, interval=t)
        self.log.answered.append(len(got))
        self._lap("interval", t0)
        t0 = time.perf_counter()
        closed = await asyncio.to_thread(head.close_results, list(groups), now=now, interval=t)
        self._lap("close", t0)
        for g in groups:
            self.log.results.extend((g, r) for r in closed[g])

    async def settle(
        self, members: Sequence[str], period: int, *, now: int, interval: int
    ) -> set[str]:
        t0 = time.perf_counter()
        reqs: dict[str, list[Any]] = {}
        found = await asyncio.to_thread(
            self.cluster.head.settle_requests, list(members), period, now=now
        )
        for m, r in found.items():
            if isinstance(r, PrivmeterError):  # e.g. prices still missing: try again later
                log.warning("no statement for %s period %d: %s", m, period, r)
                continue
            reqs[m] = [r]
        got = await self.link.exchange(
            reqs, expect=(BillProof, Dispute), now=now, interval=interval
        )
        self.log.settled |= set(got)
        self._lap("settlement", t0)
        return got
