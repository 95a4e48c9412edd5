"""The head-end's interval loop, independent of how messages travel.

What it is for: one coroutine, :func:`drive`, runs a whole deployment for
a number of intervals -- epoch setup, then per interval: aggregation and
billing, demand-management events (event, echoes, comparisons, directives),
then a final flush and settlement -- against a :class:`Link` that delivers
messages to the meters and feeds their answers to the head-end core.  The
in-memory runner and the socket runner differ only in their ``Link``.

Security: none of its own; all checks are in the parties.  Guarantee: the
head-end core is the only party the driver talks to directly; the ground
truth is never consulted here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from privmeter.parties.headend import HeadEndCore
from privmeter.parties.messages import FeedPublished, SettleRequest, Tick
from privmeter.protocol.aggregation import AggregateResult
from privmeter.protocol.aggregation_messages import KeyAdvert
from privmeter.protocol.codec import encode
from privmeter.protocol.demand import ComparisonAnswer, Echo
from privmeter.protocol.settlement import BillProof, Dispute
from privmeter.sim.clock import SimClock

__all__ = ["DriveLog", "Link", "drive"]


class Link(Protocol):
    """Delivers head-end messages and hands the answers to the core."""

    async def exchange(self, outgoing: Mapping[str, Sequence[Any]], *, expect: type | tuple[type, ...] | None,
                       now: int, interval: int) -> set[str]:
        """Send; wait for an ``expect`` answer from each recipient (or the deadline); return who answered."""
        ...


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


async def drive(
    core: HeadEndCore,
    link: Link,
    groups: Mapping[str, Sequence[str]],
    *,
    first_interval: int,
    count: int,
    interval_seconds: int,
    clock: SimClock,
    feeds: Sequence[Any] = (),
    progress: Callable[[int, int], None] | None = None,
    settle: bool = True,
) -> DriveLog:
    """Run ``count`` intervals from ``first_interval`` (plus a warm-up and a drain interval)."""
    log = DriveLog()

    def lap(step: str, t0: float) -> None:
        log.step_wall[step] = log.step_wall.get(step, 0.0) + time.perf_counter() - t0

    members = sorted(m for ms in groups.values() for m in ms)
    warm = first_interval - 1
    now = warm * interval_seconds
    clock.advance(now)
    # price feeds (day-ahead: published before the first interval they price)
    t0 = time.perf_counter()
    for feed in feeds:
        core.publish_feed(feed)
        msg = FeedPublished(feed_json=feed.to_json())
        await link.exchange({m: [msg] for m in members}, expect=None, now=now, interval=warm)
    lap("feeds", t0)
    # aggregation epochs
    t0 = time.perf_counter()
    for g in groups:
        await link.exchange(core.new_epoch(g, warm), expect=KeyAdvert, now=now, interval=warm)
        await link.exchange(core.make_bundle(g), expect=None, now=now, interval=warm)
    lap("setup", t0)
    last = first_interval + count  # drain interval: finalises the last real one
    for t in range(warm, last + 1):
        tw = time.perf_counter()
        await clock.wait_until((t + 1) * interval_seconds)
        now = (t + 1) * interval_seconds  # the interval has ended: its reading exists
        t0 = time.perf_counter()
        outs = _merge(*(core.open_interval(g) for g in groups))
        expect = tuple({core.round_expect(g) for g in groups})
        got = await link.exchange(outs, expect=expect, now=now, interval=t)
        log.answered.append(len(got))
        lap("interval", t0)
        for g, ms in groups.items():
            t0 = time.perf_counter()
            oc = core.close_interval(g, now=now)
            lap("close", t0)
            if oc.result is not None:
                log.results.append((g, oc.result))
            if oc.event is not None:
                t0 = time.perf_counter()
                ev = oc.event
                await link.exchange({m: [ev] for m in ms}, expect=Echo, now=now, interval=t)
                await link.exchange(core.event_queries(ev.event_id, now=now), expect=ComparisonAnswer,
                                    now=now, interval=t)
                await link.exchange(core.event_directives(ev.event_id, now=now), expect=None,
                                    now=now, interval=t)
                log.events.append({"event_id": ev.event_id, "group": g, "interval": t})
                lap("demand", t0)
        log.interval_wall.append(time.perf_counter() - tw)
        if progress is not None:
            progress(t - warm + 1, last - warm + 1)
    # flush: every meter resends what it has not had a receipt for
    t0 = time.perf_counter()
    await link.exchange({m: [Tick(now=now, interval=last)] for m in members}, expect=None, now=now, interval=last)
    lap("flush", t0)
    if not settle:
        return log
    # settlement: one statement per meter for its billing period 0
    t0 = time.perf_counter()
    reqs: dict[str, list[Any]] = {}
    for m in members:
        st = core.statement(m, 0, now=now)
        reqs[m] = [SettleRequest(period=0, statement=encode(st))]
    got = await link.exchange(reqs, expect=(BillProof, Dispute), now=now, interval=last)
    log.settled = set(got)
    lap("settlement", t0)
    return log
