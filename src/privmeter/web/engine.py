"""The live demo deployment behind the dashboard: real parties, accelerated time, operator controls.

What it is for: :class:`DemoEngine` builds a complete local deployment from a
:class:`~privmeter.sim.scenario.Scenario` -- the utility's
:class:`~privmeter.parties.headend.HeadEndCore` on SQLite, one
:class:`~privmeter.parties.meter.MeterAgent` and one
:class:`~privmeter.parties.household.HouseholdAgent` per household, built by
:func:`privmeter.sim.runner.make_core` and :func:`~privmeter.sim.runner.make_meters`
as every runner builds them (billed over the demo's short period) -- and runs it interval by interval
in a background thread; each interval is one step of the interval engine that
``simulate`` and the deployed head-end drive too
(:class:`privmeter.parties.engine.IntervalEngine`: aggregation + billing,
demand-management events), paced by a wall clock the operator can pause and
speed up; the operator's forced event acts in the engine's ``close`` hook.  Messages travel
on a :mod:`~privmeter.web.wire`: by default (``transport="tcp"``) over
loopback TCP through the real transport -- one authenticated, encrypted
connection per meter and per household, the network emulator on every link --
or, with ``transport="memory"``, in process through the wire codec.  Each
delivery is phased (head-end -> parties, parties -> head-end, receipts), each
phase sent concurrently on all connections.

Controls: pause / resume / speed / one step are the scheduler's, here; the
operator's fault injection (force an event, take a meter offline, make the
utility cheat on a bill or probe a meter, make a household under-report) is
:class:`~privmeter.web.faults.Faults` (``engine.faults``), acting in the
engine's hooks.  What happens goes to the alert feed
(:class:`~privmeter.web.alerts.Alerts`); what the head-end saw, to a
:class:`~privmeter.web.snapshot_operator.HeadEndLog`.

Threading: the engine thread owns every party and the SQLite store (the
socket wire's asyncio loop runs in a thread of its own and only moves bytes); other
threads (the web server) only read published, immutable snapshots or run a
function on the engine thread with :meth:`DemoEngine.call` (so SQLite is
used from one thread).

Security: none of its own; every check is in the parties.  Guarantee: the
views (:mod:`privmeter.web.views`) never see the engine: the operator views get
an :class:`~privmeter.web.snapshot.OperatorSnapshot` (:meth:`DemoEngine.operator_snapshot`),
built by :mod:`privmeter.web.snapshot_operator` only from what the head-end core
holds and the head-end log (ciphertexts, masked inputs, totals, comparison
bits, statements); a household's true load reaches only the household and
privacy views, through a :class:`~privmeter.web.snapshot.HouseholdSnapshot`
(:mod:`privmeter.web.snapshot_household`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privmeter.crypto.paillier import MIN_KEY_BITS
from privmeter.errors import (
    AuditFailure,
    BudgetExceeded,
    ConfigError,
    InvalidProof,
    LocalProtocolError,
    NotFound,
    PrivmeterError,
)
from privmeter.parties.engine import IntervalEngine
from privmeter.parties.headend import HeadEndCore, IntervalOutcome
from privmeter.parties.headend_store import HeadEndStore, MemoryHeadEndStore
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import FeedPublished
from privmeter.parties.meter import MeterAgent
from privmeter.parties.meter_feed import MeterFeed, round_of
from privmeter.protocol.aggregation_messages import KeyAdvert
from privmeter.protocol.records import record_from_bytes
from privmeter.protocol.settlement import BillProof, Dispute, Statement, audit, statement_digest
from privmeter.sim.runner import make_core, make_meters
from privmeter.sim.scenario import Scenario, World, build
from privmeter.web.alerts import Alerts
from privmeter.web.faults import Faults
from privmeter.web.snapshot import HouseholdSnapshot, OperatorSnapshot, RunState
from privmeter.web.snapshot_household import household_snapshot, load_occupancy
from privmeter.web.snapshot_operator import HeadEndLog, operator_snapshot
from privmeter.web.views import overview
from privmeter.web.wire import MemoryWire, SocketWire

__all__ = ["DemoConfig", "DemoEngine"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    """One demo deployment (every field is a ``privmeter demo`` option)."""

    households: int = 24
    days: int = 2
    seed: int = 1
    key_bits: int = 2048  # household Paillier keys: 2048 starts fast; 3072 is the library default
    speed: float = 900.0  # simulated seconds per wall second (900: one 15-minute interval a second)
    group_size: int = 8  # meters per feeder
    min_survivors: int = 5
    bill_intervals: int = 16  # a billing period: 16 x 15 min = 4 h, so bills appear within a minute
    plan: str = "economy7"
    prosumer_share: float = 0.25
    topology: str = "star"
    data_dir: Path | None = None  # SQLite + key/profile cache; None: in memory, default cache
    cache_dir: Path | None = None  # keys and profiles; default ``data_dir / "cache"``
    insecure_small_keys: bool = False  # tests only
    dgk_bits: int = 2048
    cmin_w_per_household: int = 20  # the utility's private limits, W of average power per home
    cmax_w_per_household: int = 1200
    transport: str = (
        "tcp"  # "tcp": loopback sockets through the real transport; "memory": in process
    )
    latency_ms: float = 20.0  # the emulated network on every link (tcp only)
    jitter_ms: float = 5.0
    loss: float = 0.0
    max_intervals: int | None = None  # end the simulated period early (tests)

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "memory"):
            raise ConfigError(f"transport must be 'tcp' or 'memory', got {self.transport!r}")
        if not 0.0 <= self.loss < 1.0 or self.latency_ms < 0 or self.jitter_ms < 0:
            raise ConfigError("latency and jitter must be >= 0 ms and loss within [0, 1)")
        if self.topology != "star":
            raise ConfigError(f"the demo runs the robust star topology; got {self.topology!r}")
        if self.speed <= 0:
            raise ConfigError("speed must be positive")
        if self.bill_intervals < 1:
            raise ConfigError("bill_intervals must be at least 1")
        self.scenario()  # the scenario's checks (households and group size against min_survivors) up front

    def scenario(self) -> Scenario:
        cache = self.cache_dir
        if cache is None and self.data_dir is not None:
            cache = self.data_dir / "cache"
        return Scenario(
            households=self.households,
            days=self.days,
            seed=self.seed,
            key_bits=self.key_bits,
            dgk_bits=self.dgk_bits,
            insecure_small_keys=self.insecure_small_keys,
            group_size=self.group_size,
            min_survivors=self.min_survivors,
            plan=self.plan,
            prosumer_share=self.prosumer_share,
            cache_dir=cache,
            cmin_w_per_household=self.cmin_w_per_household,
            cmax_w_per_household=self.cmax_w_per_household,
            max_intervals=self.max_intervals,
        )


class _DemoLink:
    """The interval engine's :class:`~privmeter.parties.engine.Link` over the demo's wire."""

    def __init__(self, demo: DemoEngine) -> None:
        self.demo = demo

    async def exchange(
        self, outgoing: Mapping[str, Sequence[Any]], *, expect: Any, now: int, interval: int
    ) -> set[str]:
        return self.demo._deliver(outgoing, now=now, interval=interval, expect=expect)


class DemoEngine:
    """A running deployment; see the module docstring."""

    def __init__(
        self, config: DemoConfig, *, progress: Callable[[str, int, int], None] | None = None
    ) -> None:
        self.config = config
        t0 = time.perf_counter()
        self.world: World = build(config.scenario(), progress=progress)
        sc = self.world.scenario
        self.interval_seconds = sc.interval_seconds
        self.first = self.world.first_interval
        self.last = self.world.last_interval
        self.store_path: Path | None = None
        if config.data_dir is not None:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            self.store_path = config.data_dir / "headend.sqlite"
            for suffix in ("", "-wal", "-shm"):  # every demo is a fresh deployment
                Path(str(self.store_path) + suffix).unlink(missing_ok=True)
        self.specs = {h.meter_id: h for h in self.world.households}
        self.meter_ids = sorted(self.specs)
        self.groups = {g: sorted(ms) for g, ms in sorted(self.world.groups.items())}
        self.group_of = {m: g for g, ms in self.groups.items() for m in ms}
        self.build_seconds = time.perf_counter() - t0
        # state owned by the engine thread
        self.core: HeadEndCore | None = None
        self._engine: IntervalEngine | None = None
        self._now = 0
        self._event_context: dict[str, tuple[int | None, bool]] = {}  # group -> (trigger W, forced)
        self._wire: MemoryWire | SocketWire = MemoryWire()
        self.meters: dict[str, MeterAgent] = {}
        self.feeds: dict[str, MeterFeed] = {}  # each meter's load; rounds go through them
        self.homes: dict[str, HouseholdAgent] = {}
        self.paused = False
        self.speed = config.speed
        self.current = self.first - 1  # the last interval stepped
        self.finished = False
        self.alerts = Alerts(self._sim_time)
        self.log = HeadEndLog(self.groups)  # what the head-end saw, for the operator views
        self.household_bills: dict[tuple[str, int], int] = {}  # as the households computed them
        self.faults = Faults(
            groups=self.groups,
            meter_ids=self.meter_ids,
            alerts=self.alerts,
            core=self._running_core,
            deliver=self._deliver,
            current=lambda: self.current,
            interval_seconds=self.interval_seconds,
        )
        self.next_period: dict[str, int] = {m: 0 for m in self.meter_ids}
        self.step_seconds: deque[float] = deque(maxlen=50)
        self._occupancy: dict[str, Any] | None = None
        self._commands: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self.version = 0
        self.overview: dict[str, Any] = {}

    @property
    def transport(self) -> str:
        """How the parties' messages travel (for the footer)."""
        return self._wire.describe()

    def wire_stats(self) -> dict[str, int]:
        return self._wire.stats()

    def _sim_time(self) -> int:
        """Unix seconds of simulated time at the end of the interval running next."""
        return (self.current + 1) * self.interval_seconds

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread; returns once the deployment is set up (epochs, feeds)."""
        self._thread = threading.Thread(target=self._run, name="privmeter-demo", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    @property
    def stopping(self) -> bool:
        """True once a stop was requested (live streams end)."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the engine thread to stop (returns at once; :meth:`stop` also waits)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the engine thread (between intervals); its result in a future."""
        fut: Future[Any] = Future()
        self._commands.put((fn, fut))
        return fut

    def wait_version(self, seen: int, timeout: float) -> int:
        """Block until the published snapshot is newer than ``seen`` (or timeout)."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen, timeout=timeout)
            return self.version

    # -- the engine thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._setup()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        deadline = time.monotonic()
        try:
            while not self._stop.is_set():
                self._drain_commands()
                now = time.monotonic()
                if not self.paused and not self.finished and now >= deadline:
                    t0 = time.perf_counter()
                    try:
                        self._step()
                    except Exception as exc:  # a bug must not freeze the dashboard silently
                        self.paused = True
                        self.alerts.add(
                            "caught",
                            "engine-error",
                            f"engine paused after {type(exc).__name__}: {exc}",
                        )
                    self.step_seconds.append(time.perf_counter() - t0)
                    self._publish()
                    # keep the pace without bursts after a pause or a slow step
                    deadline = max(deadline + self.interval_seconds / self.speed, time.monotonic())
                    continue
                wait = 0.25 if self.paused or self.finished else max(0.0, min(0.25, deadline - now))
                try:
                    fn, fut = self._commands.get(timeout=wait)
                except queue.Empty:
                    continue
                self._exec(fn, fut)
        finally:
            with contextlib.suppress(Exception):
                self._wire.close()
            with contextlib.suppress(Exception):
                self._running_core().store.close()

    def _drain_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            self._exec(fn, fut)

    def _exec(self, fn: Callable[[], Any], fut: Future[Any]) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn())
        except BaseException as exc:
            fut.set_exception(exc)
        self._publish()

    def _setup(self) -> None:
        w = self.world
        sc = w.scenario
        store = (
            HeadEndStore(self.store_path) if self.store_path is not None else MemoryHeadEndStore()
        )
        # the parties as every runner builds them, billed over the demo's short period
        core = make_core(w, store, period_intervals=self.config.bill_intervals)
        self.core = core
        self._engine = IntervalEngine(core, _DemoLink(self))
        if self.config.transport == "tcp":
            self._wire = SocketWire(
                w,
                latency_ms=self.config.latency_ms,
                jitter_ms=self.config.jitter_ms,
                loss=self.config.loss,
            )
        self.meters, self.homes, self.feeds = make_meters(
            w, period_intervals=self.config.bill_intervals
        )
        now = (self.first - 1) * self.interval_seconds
        for feed in w.feeds.values():
            core.publish_feed(feed)
            self._deliver(
                {m: [FeedPublished(feed_json=feed.to_json())] for m in self.meter_ids},
                now=now,
                interval=self.first - 1,
                retries=3,
            )
        for g in self.groups:
            self._deliver(
                core.new_epoch(g, self.first - 1),
                now=now,
                interval=self.first - 1,
                expect=KeyAdvert,
                retries=3,
            )
            self._deliver(core.make_bundle(g), now=now, interval=self.first - 1, retries=3)
        self.alerts.add(
            "info",
            "start",
            f"deployment up: {len(self.meter_ids)} meters on {len(self.groups)} "
            f"feeders, {sc.key_bits}-bit household keys (built in {self.build_seconds:.1f} s)",
        )
        self._publish()

    # -- message delivery (in memory, through the codec) ----------------------------------------
    def _deliver(
        self,
        outgoing: Mapping[str, Sequence[Any]],
        *,
        now: int,
        interval: int,
        expect: type | tuple[type, ...] | None = None,
        skip_offline: bool = True,
        refusals: dict[str, str] | None = None,
        retries: int = 0,
    ) -> set[str]:
        """Head-end -> meters; answers -> head-end; receipts -> meters.  Errors are recorded, not raised.

        A meter's refusal goes to ``refusals`` (meter -> error name) if given, else to the alerts.
        On a lossy link a message is lost for good unless ``retries`` resends it (set-up uses that;
        an interval's lost masked input is what the aggregation's dropout recovery is for).
        """
        core = self._running_core()
        answered: set[str] = set()
        sent = {
            m: list(ms)
            for m, ms in outgoing.items()
            if ms and not (skip_offline and m in self.faults.offline)
        }
        ups: dict[str, list[Any]] = {}
        for mid, msgs in self._wire.down(sent, retries=retries).items():
            feed = self.feeds[mid]
            for msg in msgs:
                t = round_of(msg)
                if t is not None and feed.needs_wait(t):  # a real meter's source (engine thread)
                    feed.wait_for(t)
                try:
                    if isinstance(msg, FeedPublished):
                        self.homes[mid].handle(msg)
                    replies = feed.handle(msg, now=now)
                except PrivmeterError as exc:
                    if refusals is not None:
                        refusals[mid] = f"{type(exc).__name__}: {exc}"
                    else:
                        self._refused(mid, msg, exc, now)
                    continue
                ups.setdefault(mid, []).extend(replies)
        backs: dict[str, list[Any]] = {}
        with core.store.batch():
            for mid, msgs in self._wire.up(ups, retries=retries).items():
                for up in msgs:
                    self.log.saw(mid, up)
                    try:
                        back = core.handle(mid, up, now=now, interval=interval)
                    except PrivmeterError as exc:
                        self.alerts.add(
                            "warn",
                            "rejected",
                            f"head-end rejected {type(up).__name__} from "
                            f"{mid}: {type(exc).__name__}",
                            meter=mid,
                        )
                        continue
                    if expect is not None and isinstance(up, expect):
                        answered.add(mid)
                    backs.setdefault(mid, []).extend(back)
        for mid, msgs in self._wire.down(backs, retries=retries).items():
            for b in msgs:
                with contextlib.suppress(PrivmeterError):
                    self.feeds[mid].handle(b, now=now)
        return answered

    def _refused(self, mid: str, msg: Any, exc: PrivmeterError, now: int) -> None:
        self.alerts.add(
            "caught" if isinstance(exc, BudgetExceeded) else "warn",
            "meter-refused",
            f"meter {mid} refused {type(msg).__name__}: {type(exc).__name__}: {exc}",
            meter=mid,
            error=type(exc).__name__,
        )

    # -- one interval -----------------------------------------------------------------------------
    def _step(self) -> None:
        core = self._running_core()  # set up
        t = self.current + 1
        drain = max((core.lag(g) for g in self.groups), default=1)
        if t > self.last + drain:  # the drain interval(s) finalise the last real one
            self.finished = True
            self.alerts.add(
                "info",
                "end",
                "end of the simulated period: the dashboard keeps its final state; the controls are off",
            )
            return
        now = (t + 1) * self.interval_seconds
        self._now = now
        if self._engine is None:
            raise LocalProtocolError("the demo deployment is not set up yet")
        # the one interval engine (parties/engine.py), on this thread, over _deliver
        asyncio.run(
            self._engine.interval(
                self.groups, t, now=now, close=self._close, on_event=self._event_row
            )
        )
        self.current = t
        self._settle_due(now)

    def _close(self, g: str, now: int) -> IntervalOutcome:
        """The core's close of the interval, with the operator's forced event (a tightened Cmax
        for this interval) and the dashboard's bookkeeping; the engine runs the event."""
        core = self._running_core()
        grp = core.groups[g]
        with self.faults.tightened(g, grp.dm) as forced:
            oc = core.close_interval(g, now=now)
        res = oc.result
        if res is None:
            return oc
        total = res.total[0] if res.total is not None else None
        total_w = None if total is None else total * 3600 // self.interval_seconds
        self._event_context[g] = (total_w, forced)
        self.log.totals[g].append(
            {
                "interval": res.interval,
                "time": res.interval * self.interval_seconds,
                "total_w": total_w,
                "survivors": len(res.survivors),
                "dropped": sorted(res.dropped),
                "error": res.error,
                "cmin_w": grp.cfg.cmin_w,
                "cmax_w": grp.cfg.cmax_w,
            }
        )
        if res.dropped and total is not None:
            self.alerts.add(
                "ok",
                "recovered",
                f"{g}: total of interval {res.interval} recovered without "
                f"{', '.join(res.dropped)} ({len(res.survivors)} meters answered)",
                group=g,
            )
        if total is None:
            self.alerts.add(
                "caught",
                "refused-total",
                f"{g}: interval {res.interval} NOT unmasked "
                f"({len(res.survivors)} meters < the minimum group): {res.error}",
                group=g,
            )
        if forced:
            if oc.event is None:
                if total is None:
                    return oc  # try again at the next interval
                if grp.events_by_day[now // 86400] >= grp.cfg.max_events_per_day:
                    why = "the feeder's daily event budget is used"
                elif core.current_interval(g) <= grp.event_until:
                    why = "an event is already running"
                else:
                    why = "the total is below Cmin"
                self.alerts.add("warn", "event-refused", f"{g}: no event opened ({why})", group=g)
            self.faults.force_done(g)
        return oc

    def _event_row(self, g: str, ev: Any) -> None:
        """After the engine ran an event: its row and alert on the dashboard."""
        core = self._running_core()
        t, now = self.current + 1, self._now
        total_w, forced = self._event_context.get(g, (None, False))
        dm = core.groups[g].dm
        if dm is None:
            raise LocalProtocolError(f"feeder {g!r} runs no demand management")
        e = dm.events[ev.event_id]
        per = max(1, ev.duration_minutes * 60 // self.interval_seconds)
        row = {
            "event_id": ev.event_id,
            "group": g,
            "interval": t,
            "time": now,
            "forced": forced,
            "side": ev.side,
            "action": ev.action,
            "trigger_total_w": total_w,
            "cmin_w": core.groups[g].cfg.cmin_w,
            "cmax_w": core.groups[g].cfg.cmax_w,
            "threshold_w": e.threshold,
            "start_interval": ev.start_interval,
            "end_interval": ev.start_interval + per - 1,
            "echoes": len(e.echoes),
            "answered": sorted(e.results),
            "targets": sorted(e.directed),
        }
        self.log.events.append(row)
        self.alerts.add(
            "event",
            "event",
            f"{g}: demand event ({ev.action}, {ev.side} T) — {len(e.results)} "
            f"compared, directives to {len(e.directed)}: {', '.join(sorted(e.directed)) or 'none'}",
            group=g,
            event_id=ev.event_id,
        )

    # -- settlement ---------------------------------------------------------------------------------
    def _settle_due(self, now: int) -> None:
        b = self.config.bill_intervals
        due: list[tuple[str, int]] = []
        for m in self.meter_ids:
            if m in self.faults.offline:
                continue
            p = self.next_period[m]
            start = self.first + p * b
            end = start + b
            if end > self.current or end > self.last + 1:
                continue
            meter = self.meters[m]
            if not meter.local_readings or max(meter.local_readings) < end - 1:
                continue
            if any(k[1] < end for k in meter.unacked):
                continue
            due.append((m, p))
            self.next_period[m] = p + 1
        # every due statement goes out in one concurrent phase, every answer comes back in another
        issued = [(m, p, st) for m, p in due if (st := self._issue(m, p, now)) is not None]
        core = self._running_core()
        got = self._wire.down(
            {f"hh:{m}": [core.settle_request(st, p)] for m, p, st in issued}, retries=3
        )  # the household's own line, retransmitted if the link loses it
        answers: dict[str, list[Any]] = {}
        for m, p, _st in issued:
            row = self.log.bills[(m, p)]
            req = got.get(f"hh:{m}")
            if not req:
                row.update(status="undelivered", audit="the statement did not reach the household")
                continue
            ans = self.homes[m].handle(req[0])[0]
            if isinstance(ans, BillProof):
                self.household_bills[(m, p)] = ans.bill
                ans, under = self.faults.answer(m, ans)
                if under:
                    row["underreport"] = True
            answers[f"hh:{m}"] = [ans]
        arrived = self._wire.up(answers, retries=3)
        for m, p, st in issued:
            if f"hh:{m}" not in answers:
                continue
            up = arrived.get(f"hh:{m}")
            if not up:
                self.log.bills[(m, p)].update(
                    status="undelivered", audit="the household's answer did not reach the head-end"
                )
                continue
            self._settled(m, p, st, up[0], now)

    def _issue(self, m: str, p: int, now: int) -> Statement | None:
        """The head-end's statement for (m, p) (forged if the operator asked the utility to cheat)."""
        core = self._running_core()
        try:
            st = core.statement(m, p, now=now)
        except PrivmeterError as exc:
            self.alerts.add("warn", "statement", f"no statement for {m} period {p}: {exc}", meter=m)
            return None
        st, cheat = self.faults.statement(core, p, st)
        row: dict[str, Any] = {
            "meter_id": m,
            "period": p,
            "start": st.start,
            "end": st.end,
            "records": st.record_count,
            "issued_at": now,
            "statement": statement_digest(st).hex(),
            "ciphertext": st.bill_ciphertext.hex(),
            "fixed_charge": st.fixed_charge,
            "cheat": cheat,
            "underreport": False,
            "status": "issued",
            "bill": None,
            "audit": None,
        }
        self.log.bills[(m, p)] = row
        return st

    def _settled(self, m: str, p: int, st: Statement, up: Any, now: int) -> None:
        """The head-end checks the household's answer; the auditor re-checks a paid or disputed bill."""
        core = self._running_core()
        row = self.log.bills[(m, p)]
        cheat = bool(row["cheat"])
        try:
            core.handle(f"hh:{m}", up, now=now, interval=self.current)
        except InvalidProof as exc:
            row.update(status="invalid-proof", audit=f"InvalidProof: {exc}")
            self.alerts.add(
                "caught",
                "underreport",
                f"household {m} under-reported period {p} "
                f"(claimed {up.bill}): proof rejected — InvalidProof",
                meter=m,
            )
            return
        except PrivmeterError as exc:
            row.update(status="rejected", audit=f"{type(exc).__name__}: {exc}")
            return
        if isinstance(up, Dispute):
            row["status"] = "dispute:" + up.reason
            row["audit"] = self._audit(m, st, None)
            self.alerts.add(
                "caught" if cheat else "warn",
                "dispute",
                f"household {m} disputed the statement of period {p} "
                f"(reason: {up.reason}); auditor: {row['audit']}",
                meter=m,
            )
            return
        row.update(status="paid", bill=up.bill, audit=self._audit(m, st, up))

    def _audit(self, m: str, st: Statement, proof: BillProof | None) -> str:
        """A third-party audit from public data only (signed log, tariff, statement, proof)."""
        core = self._running_core()
        h = self.specs[m]
        records = [record_from_bytes(b) for b in core.store.records(m, st.start, st.end)]
        # a disputed statement has no proof: the audit fails (or passes) on the log before the proof
        claim = proof or BillProof(meter_id=m, statement_digest=statement_digest(st), bill=0, r=1)
        try:
            rep = audit(
                st,
                records,
                h.plan,
                self.world.feeds.get(h.plan.plan_id),
                claim,
                headend_key=self.world.headend_key.verify_key,
                meter_key=h.signing_key.verify_key,
                household_pk=h.secret_key.public_key,
                min_key_bits=min(self.world.scenario.key_bits, MIN_KEY_BITS),
            )
        except AuditFailure as exc:
            return f"FAILED: AuditFailure: {exc}"
        except PrivmeterError as exc:
            return f"FAILED: {type(exc).__name__}: {exc}"
        return f"verified: bill {rep.bill} from {rep.record_count} signed records"

    # -- controls (called through :meth:`call`) ----------------------------------------------------
    def set_paused(self, paused: bool) -> dict[str, Any]:
        self.paused = paused
        self.alerts.add("info", "control", "paused" if paused else "resumed")
        return {"paused": self.paused}

    def set_speed(self, speed: float) -> dict[str, Any]:
        if not 1 <= speed <= 100_000:
            raise ConfigError("speed must be within [1, 100000] simulated seconds per second")
        self.speed = float(speed)
        self.alerts.add("info", "control", f"speed x{self.speed:g}")
        return {"speed": self.speed}

    def step_once(self) -> dict[str, Any]:
        """Advance one interval now (also while paused)."""
        if not self.finished:
            self._step()
        return {"interval": self.current}

    def occupancy(self, meter: str) -> Any:
        """Ground-truth occupancy per minute (0 away, 1 asleep, 2 active) from the cached profiles."""
        if self._occupancy is None:
            self._occupancy = load_occupancy(self.world.scenario)
        return self._occupancy.get(meter)

    def _running_core(self) -> HeadEndCore:
        """The head-end core (:class:`~privmeter.errors.LocalProtocolError` before the deployment is set up)."""
        if self.core is None:
            raise LocalProtocolError("the demo deployment is not set up yet")
        return self.core

    def _meter(self, meter: str) -> MeterAgent:
        m = self.meters.get(meter)
        if m is None:
            raise NotFound(meter)
        return m

    # -- snapshots -----------------------------------------------------------------------------------
    def operator_snapshot(self, meters: Sequence[str] = ()) -> OperatorSnapshot:
        """What the head-end holds now, frozen (engine thread); with the
        :class:`~privmeter.web.snapshot.MeterHoldings` of each of ``meters`` that exists
        (the utility view of one household).  Built from head-end data only
        (:mod:`privmeter.web.snapshot_operator`)."""
        return operator_snapshot(
            self.core,
            self.log,
            self._run_state(),
            probes=self.faults.probes,
            alerts=self.alerts,
            meters=meters,
        )

    def _run_state(self) -> RunState:
        sc = self.world.scenario
        return RunState(
            status="finished" if self.finished else "paused" if self.paused else "running",
            paused=self.paused,
            speed=self.speed,
            current=self.current,
            first=self.first,
            last=self.last,
            interval_seconds=self.interval_seconds,
            days=sc.days,
            key_bits=sc.key_bits,
            dgk_bits=sc.dgk_bits,
            plan=sc.plan,
            bill_intervals=self.config.bill_intervals,
            transport=self.transport,
            network=self.wire_stats(),
            step_ms=round(1000 * sum(self.step_seconds) / len(self.step_seconds), 1)
            if self.step_seconds
            else None,
            offline=frozenset(self.faults.offline),
        )

    def household_snapshot(self, meter: str) -> HouseholdSnapshot:
        """One household's own view, frozen (engine thread); NotFound (a KeyError) for an unknown meter."""
        agent = self._meter(meter)
        return household_snapshot(
            agent,
            self.feeds[meter].load,
            self.log,
            household_bills=self.household_bills,
            probes=self.faults.probes,
            offline=meter in self.faults.offline,
            occupancy=self.occupancy(meter),
            current=self.current,
            interval_seconds=self.interval_seconds,
        )

    def _publish(self) -> None:
        snap = overview(self.operator_snapshot())
        with self._cond:
            self.overview = snap
            self.version += 1
            self._cond.notify_all()
