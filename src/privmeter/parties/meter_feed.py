"""What a meter measures, and how its readings reach the sans-IO meter core.

What it is for: :class:`~privmeter.parties.meter.MeterAgent` never reads a
load, a source or a clock: its service pushes each interval's reading in
(``agent.reading(interval, wh)``) before handing it the round of that
interval.  This module is that service side, shared by every runner of a
meter (the fleet service, the deployed household, the in-memory simulator,
the dashboard):

* :class:`MeterLoad` -- the quantity the meter measures: minute-resolution
  net power of a simulated household (a directive reshapes its future
  minutes), or fixed interval readings (a table, or a live
  :class:`SourceReadings`);
* :class:`SourceReadings` -- a real meter's
  :class:`~privmeter.grid.devices.source.LoadSource`, pumped by a daemon
  thread into a table (the only place a meter's readings are waited for);
* :class:`MeterFeed` -- one agent and its load: before a round it pushes the
  readings up to the round's interval into the agent, after a directive it
  applies the directive to the load; a service with a live source first
  waits (off its event loop) until the source has closed the interval
  (:meth:`MeterFeed.needs_wait`, :meth:`MeterFeed.wait_for`).

Security assumption: none beyond the meter's (the load is the household's
own).  Guarantee: a reading reaches the agent only through
:meth:`MeterAgent.reading`, on the caller's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privmeter.errors import LocalProtocolError
from privmeter.grid.devices.resample import interval_energy_wh
from privmeter.grid.devices.source import LoadSource
from privmeter.grid.synthetic.curtailment import apply_directive
from privmeter.parties.meter import CATCH_UP, MeterAgent
from privmeter.protocol.aggregation_messages import IntervalStart
from privmeter.protocol.demand_messages import LoadInstruction
from privmeter.protocol.ring import RingStart, RingToken

__all__ = ["MeterFeed", "MeterLoad", "SourceReadings", "round_of"]

log = logging.getLogger(__name__)


def round_of(msg: Any) -> int | None:
    """The interval a round message belongs to (outages are per meter and interval)."""
    if isinstance(msg, IntervalStart):
        return int(msg.announcement.interval)
    if isinstance(msg, RingStart | RingToken):
        return int(msg.round)
    return None


class SourceReadings(Mapping[int, int | None]):
    """A :class:`~privmeter.grid.devices.source.LoadSource`'s interval energies, as ``MeterLoad.fixed``.

    A daemon thread pumps ``source.readings()`` into a table.  Looking an
    interval up waits (up to ``wait_s``) until the source has reported that
    interval or has ended: a live meter closes an interval a few seconds
    after its end.  An interval the source reported missing, never reached
    before ending, or did not report within ``wait_s`` is ``None``: the
    meter sends no reading for it (dropped by aggregation, nothing billed).
    A source that fails is logged and counts as ended.  :meth:`take` hands
    the readings reported since the last call to a :class:`MeterFeed`.
    """

    def __init__(self, source: LoadSource, *, wait_s: float = 120.0) -> None:
        self.source = source
        self.interval_seconds = int(source.interval_seconds)
        self.wait_s = wait_s
        self.error: Exception | None = None
        self._values: dict[int, int | None] = {}
        self._fresh: list[tuple[int, int | None]] = []  # reported, not yet taken
        self._high = -1
        self._ended = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, name="privmeter-source", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for r in self.source.readings():
                with self._cond:
                    self._values[r.interval] = r.energy_wh
                    self._fresh.append((r.interval, r.energy_wh))
                    self._high = max(self._high, r.interval)
                    self._cond.notify_all()
        except Exception as exc:  # a broken source ends the feed; later intervals are missing
            log.warning("load source failed: %s: %s", type(exc).__name__, exc)
            self.error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def wait_for(self, interval: int, timeout: float | None = None) -> bool:
        """Wait until ``interval`` is reported or the source ended; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._ended or self._high >= interval,
                self.wait_s if timeout is None else timeout,
            )

    @property
    def ended(self) -> bool:
        return self._ended

    def take(self) -> tuple[list[tuple[int, int | None]], bool]:
        """The (interval, Wh) readings reported since the last call, and whether the source ended."""
        with self._cond:
            fresh, self._fresh = self._fresh, []
            return fresh, self._ended

    def get(self, interval: int, default: int | None = None) -> int | None:  # type: ignore[override]
        self.wait_for(interval)
        with self._cond:
            v = self._values.get(interval)
        return default if v is None else v

    def __getitem__(self, interval: int) -> int | None:
        self.wait_for(interval)
        with self._cond:
            return self._values[interval]

    def __iter__(self) -> Iterator[int]:
        with self._cond:
            return iter(sorted(self._values))

    def __len__(self) -> int:
        with self._cond:
            return len(self._values)

    def close(self, timeout: float = 5.0) -> None:
        """Close the source (if it can be closed) and wait briefly for the pump to stop."""
        closer = getattr(self.source, "close", None)
        if callable(closer):
            closer()
        self._thread.join(timeout)


@dataclass(slots=True)
class MeterLoad:
    """The household's load as the meter sees it.

    Either minute-resolution net power (simulated households: directives
    reshape the future minutes) or fixed interval readings (real data such as
    LCL, or a live :class:`SourceReadings` from a real meter: directives are
    recorded but cannot change what the meter measures).  A ``None`` reading
    is a missing interval.
    """

    interval_seconds: int
    start_unix: int = 0
    minute_w: npt.NDArray[np.int64] | None = None
    deferrable_w: npt.NDArray[np.int64] | None = None
    fixed: Mapping[int, int | None] | None = None
    _energy: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.minute_w is not None:
            self.minute_w = np.array(self.minute_w, dtype=np.int64)
            self.deferrable_w = (
                np.zeros_like(self.minute_w)
                if self.deferrable_w is None
                else np.array(self.deferrable_w, dtype=np.int64)
            )
            self._recompute()

    def _recompute(self) -> None:
        if self.minute_w is None:
            raise LocalProtocolError("the meter has no minute profile")
        e = interval_energy_wh(self.minute_w, self.interval_seconds)
        first = self.start_unix // self.interval_seconds
        self._energy = {first + i: int(v) for i, v in enumerate(e.tolist())}

    @property
    def first_interval(self) -> int:
        if self.fixed is not None and not isinstance(self.fixed, SourceReadings):
            return min(self.fixed) if self.fixed else 0
        return self.start_unix // self.interval_seconds

    def energy_wh(self, interval: int) -> int | None:
        """The true reading of ``interval`` (a :class:`SourceReadings` waits for it)."""
        if self.fixed is not None:
            return self.fixed.get(interval)
        return self._energy.get(interval)

    def apply(self, ins: LoadInstruction) -> None:
        """Carry out a directive from its start interval on (future minutes only)."""
        if self.minute_w is None or self.deferrable_w is None:
            return
        start_minute = (ins.start_interval * self.interval_seconds - self.start_unix) // 60
        if start_minute < 0 or start_minute >= len(self.minute_w):
            return
        dur = min(ins.duration_minutes, len(self.minute_w) - start_minute)
        res = apply_directive(
            self.minute_w,
            start_minute=start_minute,
            duration_minutes=dur,
            action=ins.action,
            deferrable_w=self.deferrable_w,
            limit_w=ins.limit_w,
        )
        self.minute_w = res.minute_w
        self.deferrable_w = res.deferrable_w
        self._recompute()


class MeterFeed:
    """One meter agent and the load it measures (see the module docstring).

    :meth:`handle` is ``agent.handle`` with the readings of a round pushed in
    first and any directive the agent accepted applied to the load after.
    A load in memory (a minute profile, a table) is read at the round, for
    every interval not pushed yet up to the round's (at most
    :data:`~privmeter.parties.meter.CATCH_UP` back): exactly what the meter
    would have measured by then.  A :class:`SourceReadings` hands over
    whatever its source reported; the service waits for it before the round
    (:meth:`needs_wait`, then :meth:`wait_for` in a thread).
    """

    __slots__ = ("_pushed", "agent", "load")

    def __init__(self, agent: MeterAgent, load: MeterLoad) -> None:
        self.agent = agent
        self.load = load
        self._pushed = load.first_interval - 1  # in-memory loads: last interval pushed

    @property
    def source(self) -> SourceReadings | None:
        fixed = self.load.fixed
        return fixed if isinstance(fixed, SourceReadings) else None

    def push_upto(self, interval: int) -> None:
        """Push the readings the meter has measured by the round of ``interval``."""
        src = self.source
        if src is not None:
            fresh, ended = src.take()
            for t, wh in fresh:
                self.agent.reading(t, wh)
            if ended:
                self.agent.end_of_readings()
            return
        for t in range(max(self._pushed + 1, interval - CATCH_UP), interval + 1):
            self.agent.reading(t, self.load.energy_wh(t))
        self._pushed = max(self._pushed, interval)

    def needs_wait(self, interval: int) -> bool:
        """Whether the round of ``interval`` should wait for a live source first."""
        if self.source is None:
            return False
        self.push_upto(interval)
        return self.agent.wants_reading(interval)

    def wait_for(self, interval: int, timeout: float | None = None) -> bool:
        """Block until the source has closed ``interval`` or ended (call it off the event loop)."""
        src = self.source
        return True if src is None else src.wait_for(interval, timeout)

    def handle(self, msg: Any, *, now: int | None = None) -> list[Any]:
        """Deliver one head-end message to the agent (readings pushed, directives applied)."""
        t = round_of(msg)
        if t is not None:
            self.push_upto(t)
        n = len(self.agent.directives)
        out = self.agent.handle(msg, now=now)
        for ins in self.agent.directives[n:]:
            self.load.apply(ins)
        return out

    def close(self, timeout: float = 5.0) -> None:
        """Close a live source (nothing to do for a load in memory)."""
        src = self.source
        if src is not None:
            src.close(timeout)
