"""The head-end's interval engine, independent of how messages travel and what the clock is.

What it is for: one object, :class:`IntervalEngine`, owns the steps the
utility's head-end runs -- price feeds, an aggregation epoch's setup, one
interval (aggregation and billing, then any demand-management event: event,
echoes, comparisons, directives), the flush of unacknowledged records, and the
settlement of a billing period -- against a :class:`Link` that delivers
messages to the meters and feeds their answers to the head-end core.  Two
loops drive those steps:

* :func:`drive` -- a bounded run of ``count`` intervals on a simulated clock,
  then a flush and the settlement of period 0 (``privmeter simulate``, the
  in-memory runner, the benchmarks);
* :func:`run_realtime` -- forever, on the wall clock: each interval is served
  when it has ended, a group gets a new epoch whenever it has none, skipped an
  interval (a restart, an outage of the head-end) or a member came back after
  losing its epoch secrets; a billing period is settled a few intervals after
  it closed, and households that were away get their statement when they are
  back (``privmeter headend --config``).

The in-memory runner, the socket runner and the deployed head-end differ only
in their ``Link`` and their clock.  It lives in ``parties`` (not ``app``) so
that the simulator, a layer below ``app``, drives the same code.

Security: none of its own; all checks are in the parties.  Guarantee: the
head-end core is the only party the engine talks to directly; the ground
truth is never consulted here; an interval is never aggregated twice by one
engine (after a skip, the new epoch starts at the next interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from privmeter.errors import PrivmeterError
from privmeter.parties.headend import HeadEndCore, IntervalOutcome
from privmeter.parties.messages import FeedPublished, Tick
from privmeter.protocol.aggregation import AggregateResult
from privmeter.protocol.aggregation_messages import KeyAdvert
from privmeter.protocol.demand_messages import ComparisonAnswer, DemandEvent, Echo
from privmeter.protocol.settlement import BillProof, Dispute

__all__ = ["Clock", "DriveLog", "IntervalEngine", "Link", "WallClock", "drive", "run_realtime"]

log = logging.getLogger(__name__)


class Link(Protocol):
    """Delivers head-end messages and hands the answers to the core."""

    async def exchange(
        self,
        outgoing: Mapping[str, Sequence[Any]],
        *,
        expect: type | tuple[type, ...] | None,
        now: int,
        interval: int,
    ) -> set[str]:
        """Send; wait for an ``expect`` answer from each recipient (or the deadline); return who answered."""
        ...


class Clock(Protocol):
    """Unix seconds: ``now()``, and a wait until a given time."""

    def now(self) -> int: ...

    async def wait_until(self, unix: int) -> None: ...

    def advance(self, unix: int) -> None: ...


class WallClock:
    """The machine's clock (NTP-disciplined in a deployment); ``advance`` does nothing."""

    def now(self) -> int:
        return int(time.time())

    async def wait_until(self, unix: int) -> None:
        delay = unix - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def advance(self, unix: int) -> None:
        return None


@dataclass
class DriveLog:
    """What the loop observed (the report's raw material; no ground truth)."""

    results: list[tuple[str, AggregateResult]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    step_wall: dict[str, float] = field(default_factory=dict)
    interval_wall: list[float] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    settled: set[str] = field(default_factory=set)


def _merge(*parts: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


class IntervalEngine:
    """The steps of the head-end's loop over one ``core`` and one ``link``."""

    def __init__(self, core: HeadEndCore, link: Link, log_: DriveLog | None = None) -> None:
        self.core = core
        self.link = link
        self.log = log_ if log_ is not None else DriveLog()

    def _lap(self, step: str, t0: float) -> None:
        self.log.step_wall[step] = self.log.step_wall.get(step, 0.0) + time.perf_counter() - t0

    async def publish_feeds(
        self, feeds: Iterable[Any], members: Sequence[str], *, now: int, interval: int
    ) -> None:
        """Day-ahead price feeds: published before the first interval they price."""
        t0 = time.perf_counter()
        for feed in feeds:
            self.core.publish_feed(feed)
            msg = FeedPublished(feed_json=feed.to_json())
            await self.link.exchange(
                {m: [msg] for m in members}, expect=None, now=now, interval=interval
            )
        self._lap("feeds", t0)

    async def setup(
        self,
        group: str,
        first_interval: int,
        *,
        now: int,
        interval: int | None = None,
        preamble: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """A new aggregation epoch for ``group`` starting at ``first_interval``
        (``interval``: the head-end's current interval, default the one before;
        ``preamble``: messages that precede the epoch request, e.g. the signed roster)."""
        t0 = time.perf_counter()
        warm = first_interval - 1 if interval is None else interval
        await self.link.exchange(
            _merge(preamble or {}, self.core.new_epoch(group, first_interval)),
            expect=KeyAdvert,
            now=now,
            interval=warm,
        )
        await self.link.exchange(self.core.make_bundle(group), expect=None, now=now, interval=warm)
        self._lap("setup", t0)

    async def interval(
        self,
        groups: Mapping[str, Sequence[str]],
        t: int,
        *,
        now: int,
        close: Callable[[str, int], IntervalOutcome] | None = None,
        on_event: Callable[[str, DemandEvent], None] | None = None,
    ) -> None:
        """Serve interval ``t`` (ended at ``now``) in every group of ``groups``.

        ``close(group, now)`` replaces the core's ``close_interval`` (the demo's
        operator controls act there); ``on_event(group, event)`` runs after an
        event's exchanges."""
        t0 = time.perf_counter()
        outs = _merge(*(self.core.open_interval(g) for g in groups))
        expect = tuple({self.core.round_expect(g) for g in groups})
        got = await self.link.exchange(outs, expect=expect, now=now, interval=t)
        self.log.answered.append(len(got))
        self._lap("interval", t0)
        for g, ms in groups.items():
            t0 = time.perf_counter()
            oc = close(g, now) if close is not None else self.core.close_interval(g, now=now)
            self._lap("close", t0)
            if oc.result is not None:
                self.log.results.append((g, oc.result))
            if oc.event is not None:
                await self.event(g, oc.event, ms, now=now, interval=t)
                if on_event is not None:
                    on_event(g, oc.event)

    async def event(
        self, group: str, ev: DemandEvent, members: Sequence[str], *, now: int, interval: int
    ) -> None:
        """A demand-management event: the event to the group, the comparisons, the directives."""
        t0 = time.perf_counter()
        await self.link.exchange(
            {m: [ev] for m in members}, expect=Echo, now=now, interval=interval
        )
        await self.link.exchange(
            self.core.event_queries(ev.event_id, now=now),
            expect=ComparisonAnswer,
            now=now,
            interval=interval,
        )
        await self.link.exchange(
            self.core.event_directives(ev.event_id, now=now),
            expect=None,
            now=now,
            interval=interval,
        )
        self.log.events.append({"event_id": ev.event_id, "group": group, "interval": interval})
        self._lap("demand", t0)

    async def flush(self, members: Sequence[str], *, now: int, interval: int) -> None:
        """Every meter resends what it has not had a receipt for."""
        t0 = time.perf_counter()
        await self.link.exchange(
            {m: [Tick(now=now, interval=interval)] for m in members},
            expect=None,
            now=now,
            interval=interval,
        )
        self._lap("flush", t0)

    async def settle(
        self, members: Sequence[str], period: int, *, now: int, interval: int
    ) -> set[str]:
        """Statements of ``period`` to ``members``; returns who answered (proof or dispute)."""
        t0 = time.perf_counter()
        reqs: dict[str, list[Any]] = {}
        for m in members:
            try:
                st = self.core.statement(m, period, now=now)
            except PrivmeterError as exc:  # e.g. prices still missing: try again later
                log.warning("no statement for %s period %d: %s", m, period, exc)
                continue
            reqs[m] = [self.core.settle_request(st, period)]
        got = await self.link.exchange(
            reqs, expect=(BillProof, Dispute), now=now, interval=interval
        )
        self.log.settled |= set(got)
        self._lap("settlement", t0)
        return got


async def drive(
    core: HeadEndCore,
    link: Link,
    groups: Mapping[str, Sequence[str]],
    *,
    first_interval: int,
    count: int,
    interval_seconds: int,
    clock: Clock,
    feeds: Sequence[Any] = (),
    progress: Callable[[int, int], None] | None = None,
    settle: bool = True,
) -> DriveLog:
    """Run ``count`` intervals from ``first_interval`` (plus a warm-up and the drain
    intervals that finalise the last real one: one, two for a sparse aggregation graph)."""
    eng = IntervalEngine(core, link)
    members = sorted(m for ms in groups.values() for m in ms)
    warm = first_interval - 1
    now = warm * interval_seconds
    clock.advance(now)
    await eng.publish_feeds(feeds, members, now=now, interval=warm)
    for g in groups:  # the epoch starts with the warm-up interval (no readings yet)
        await eng.setup(g, warm, now=now, interval=warm)
    # drain intervals: finalise the last real one (a sparse graph's total is final two closes later)
    last = first_interval + count + max((core.lag(g) for g in groups), default=1) - 1
    for t in range(warm, last + 1):
        tw = time.perf_counter()
        await clock.wait_until((t + 1) * interval_seconds)
        now = (t + 1) * interval_seconds  # the interval has ended: its reading exists
        await eng.interval(groups, t, now=now)
        eng.log.interval_wall.append(time.perf_counter() - tw)
        if progress is not None:
            progress(t - warm + 1, last - warm + 1)
    await eng.flush(members, now=now, interval=last)
    if settle:
        await eng.settle(members, 0, now=now, interval=last)
    return eng.log


@dataclass
class RealtimePlan:
    """What :func:`run_realtime` needs to know about the deployment, asked afresh every interval."""

    groups: Callable[[], Mapping[str, Sequence[str]]]  # group -> enrolled, active members
    connected: Callable[[str], bool]
    min_connected: Callable[[str], int]  # a group starts an epoch with at least this many connected
    period_of: Callable[[int], int]  # interval -> billing period
    period_end: Callable[[int], int]  # billing period -> its first interval after the end
    settled: Callable[[str, int], bool]  # (meter, period) -> proof or dispute received
    preamble: Callable[[str], Mapping[str, Sequence[Any]]] = lambda _g: {}  # sent before an epoch


async def run_realtime(
    eng: IntervalEngine,
    plan: RealtimePlan,
    *,
    interval_seconds: int,
    clock: Clock,
    stop: asyncio.Event,
    restarted: Callable[[], set[str]] = set,
    settle_after: int = 2,
    flush_every: int = 4,
    on_interval: Callable[[int], None] | None = None,
    first_interval: int | None = None,
    on_event: Callable[[str, DemandEvent], None] | None = None,
) -> None:
    """Serve every interval on ``clock`` until ``stop`` is set (see the module docstring).

    ``restarted()`` returns (and forgets) the meters that came back since the
    last call without their epoch secrets: their group gets a new epoch.  A
    billing period is settled ``settle_after`` intervals after its end (the
    meters' last records have arrived by then); a member without an answer
    is asked again every interval while it is connected.  ``first_interval``:
    serve nothing before it (a restarted head-end passes the interval after
    the last one it has a total for).  ``on_event(group, event)``: after each
    demand-management event's exchanges (echoes, comparisons, directives)."""
    epoch_next: dict[str, int] = {}  # group -> the interval its running epoch opens next
    rosters: dict[
        str, tuple[str, ...]
    ] = {}  # group -> the members its running epoch was set up for
    t = clock.now() // interval_seconds  # the interval in progress: served once it has ended
    if first_interval is not None:
        t = max(t, first_interval)
    while not stop.is_set():
        end = (t + 1) * interval_seconds
        waiter = asyncio.ensure_future(stop.wait())
        sleeper = asyncio.ensure_future(clock.wait_until(end))
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        for f in (waiter, sleeper):
            f.cancel()
        if stop.is_set():
            break
        now = clock.now()
        if now // interval_seconds > t + 1:  # we are late (suspended, overloaded): skip ahead
            log.warning("interval engine late by %d s: skipping to the current interval", now - end)
            t = now // interval_seconds - 1
        groups = {g: ms for g, ms in plan.groups().items() if ms}
        back = restarted()
        running: dict[str, Sequence[str]] = {}
        for g, ms in groups.items():
            live = [m for m in ms if plan.connected(m)]
            needs = (
                epoch_next.get(g) != t or rosters.get(g) != tuple(ms) or any(m in back for m in ms)
            )
            if needs:
                epoch_next.pop(g, None)
                if len(live) < plan.min_connected(g):
                    continue
                try:
                    await eng.setup(g, t, now=now, preamble=plan.preamble(g))
                except PrivmeterError as exc:  # too few adverts, ...: try again next interval
                    log.warning("epoch of %s at interval %d failed: %s", g, t, exc)
                    continue
                rosters[g] = tuple(ms)
            running[g] = ms
        if running:
            before = len(eng.log.results)
            await eng.interval(running, t, now=now, on_event=on_event)
            for g in running:
                epoch_next[g] = t + 1
            for g, res in eng.log.results[before:]:
                log.info(
                    "total group=%s interval=%d survivors=%d dropped=%d ok=%s",
                    g,
                    res.interval,
                    len(res.survivors),
                    len(res.dropped),
                    res.total is not None,
                )
        members = sorted(m for ms in groups.values() for m in ms)
        if members and (t % flush_every == 0):
            await eng.flush([m for m in members if plan.connected(m)], now=now, interval=t)
        # billing: a period closes on its boundary; statements go out settle_after intervals
        # later, and again every interval to members that have not answered (the last few periods)
        last_closed = plan.period_of(t - settle_after + 1) - 1
        for period in range(max(0, last_closed - 2), last_closed + 1):
            due = [m for m in members if plan.connected(m) and not plan.settled(m, period)]
            if due and t - settle_after + 1 >= plan.period_end(period):
                await eng.settle(due, period, now=now, interval=t)
        if on_interval is not None:
            on_interval(t)
        t += 1
