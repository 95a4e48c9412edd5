"""``privmeter headend``: the utility's head-end, deployed from its config.

What it is for: ``privmeter headend --config headend.toml`` runs the head-end
forever on the wall clock (:func:`privmeter.parties.engine.run_realtime`): it
accepts the enrolled meters (and enrolment requests, see
:mod:`privmeter.parties.enrolment`), aggregates every interval of every
feeder group, bills every record, settles every billing period with every
household, runs demand management when ``demand.enabled`` (a total outside a
feeder's [Cmin, Cmax] starts an event: secure comparisons with each connected
meter, directives to the wrong side; :func:`record_event` keeps the event,
the threshold, the bits and the meters directed in ``headend.db``), and
serves ``/healthz`` and ``/metrics`` (:mod:`privmeter.app.ops`).
The operator's actions are subcommands on the same config:

* ``privmeter headend invite --config C --meter ID [--group G] [--replace]``
  prints a one-time enrolment ticket for the household (``--replace``: a new
  meter or new keys for an enrolled meter id);
* ``privmeter headend revoke --config C --meter ID``: the meter leaves (or
  was stolen); it is refused from its next connection on;
* ``privmeter headend members --config C``: who is enrolled, where.

State (``state_dir``): ``headend.key.json`` (its own keys; no comparison
key: meters draw their own), ``headend.db`` (records log, encrypted accounts, statements, totals,
events with their comparison bits, settlements; SQLite WAL), ``registry.db`` (public keys of enrolled
households; :mod:`privmeter.parties.registry`).  It holds no household or
meter secret: households generate theirs and send only public keys.  With a ``[cluster]``
table (:mod:`privmeter.app.cluster`, docs/scale.md) this process is the front
door, enrolment and the interval loop; records, statements, settlements and
totals live on Ray shards in PostgreSQL instead of ``headend.db``.

Security assumption: the transport's (Ed25519 identities, X25519 +
ChaCha20-Poly1305 channels).  Guarantee: a restart loses no acknowledged
record, total, accumulator, statement or enrolment; an interval aggregated
before a restart is never aggregated again (a new epoch starts after it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import sqlite3
from collections.abc import Awaitable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, cast

from privmeter.app.config import CONCENTRATOR_PREFIX, HeadendConfig, concentrator_id, load_config
from privmeter.app.ops import HeadendMetrics, Heartbeat, serve_http, setup_logging, stop_on_signals
from privmeter.app.state import load_headend
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import (
    ConfigError,
    LocalProtocolError,
    PrivmeterError,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.grid.tariff.plan_toml import parse_plan
from privmeter.grid.tariff.plans import Plan
from privmeter.net.transport import Server
from privmeter.parties.concentrator import Relayed, unwrap
from privmeter.parties.engine import IntervalEngine, RealtimePlan, WallClock, run_realtime
from privmeter.parties.enrolment import (
    ENROL_PREFIX,
    Enrolled,
    EnrolRequest,
    RosterUpdate,
    peer_key,
    sign_doc,
)
from privmeter.parties.headend import GroupConfig, HeadEndCore
from privmeter.parties.headend_service import NetLink
from privmeter.parties.headend_store import HeadEndStore
from privmeter.parties.keys import household_key_and_proof
from privmeter.parties.messages import Hello
from privmeter.parties.registry import Member, Registry
from privmeter.protocol.codec import encode
from privmeter.protocol.demand_messages import DemandEvent
from privmeter.protocol.periods import MONTHLY, period_bounds, period_of
from privmeter.protocol.records import ReadingRecord, check_household_key
from privmeter.protocol.settlement import BillProof, Dispute

__all__ = ["Deployment", "add_arguments", "load_plans", "record_event", "run", "serve"]

log = logging.getLogger("privmeter.headend")


def load_plans(specs: Sequence[str]) -> dict[str, tuple[Plan, str]]:
    """Plan id -> (plan, its TOML text) for built-in names and plan files; one interval for all."""
    out: dict[str, tuple[Plan, str]] = {}
    for spec in specs:
        if spec.endswith(".toml") or "/" in spec:
            try:
                text = Path(spec).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read plan {spec}: {exc.strerror or exc}") from None
        else:
            res = resources.files("privmeter") / "data" / "plans" / f"{spec}.toml"
            if not res.is_file():
                raise ConfigError(f"no built-in plan {spec!r}")
            text = res.read_text(encoding="utf-8")
        plan = parse_plan(text, source=spec)
        out[plan.plan_id] = (plan, text)
    intervals = {p.interval_seconds for p, _ in out.values()}
    if len(intervals) != 1:
        raise ConfigError(
            f"the offered plans must share one interval length, got {sorted(intervals)}"
        )
    return out


class Deployment:
    """The head-end's view of who is enrolled, kept in step with the core and the registry."""

    def __init__(
        self,
        cfg: HeadendConfig,
        core: HeadEndCore,
        registry: Registry,
        plans: Mapping[str, tuple[Plan, str]],
        metrics: HeadendMetrics,
    ) -> None:
        self.cfg, self.core, self.registry, self.plans, self.metrics = (
            cfg,
            core,
            registry,
            plans,
            metrics,
        )
        self.interval_seconds = next(iter(plans.values()))[0].interval_seconds
        start = datetime.datetime.fromisoformat(cfg.billing_start).replace(tzinfo=datetime.UTC)
        self.period_start = int(start.timestamp()) // self.interval_seconds
        if cfg.period_intervals is not None:
            self.period_intervals = cfg.period_intervals
        elif cfg.period_days is not None:
            self.period_intervals = cfg.period_days * 86400 // self.interval_seconds
        else:
            self.period_intervals = MONTHLY
        self.version = -1
        self.members: dict[str, Member] = {}
        self.since: dict[str, int] = {}
        self.group_members: dict[str, tuple[str, ...]] = {}
        self.back: set[str] = set()  # meters that said hello since the last interval
        self.server: Server | None = None
        self.link: NetLink | None = None
        # data concentrators from the config: party id -> (feeder group, key)
        self.concentrators: dict[str, tuple[str, VerifyKey]] = {
            concentrator_id(g): (g, VerifyKey.from_hex(k)) for g, k in cfg.concentrators
        }
        self._dc_by_key = {k.raw: cid for cid, (_g, k) in self.concentrators.items()}
        self._settled: set[tuple[str, int]] = set()
        self._closing: set[asyncio.Task[None]] = set()  # connections of revoked meters being closed

    # -- registry -> core ------------------------------------------------------------------
    def sync(self) -> None:
        """Register new members, forget revoked ones, redefine groups whose roster changed."""
        v = self.registry.version()
        self._settled = {(m, p) for m, p, *_ in self.core.settlements()}
        if v == self.version:
            return
        self.version = v
        active = {m.meter_id: m for m in self.registry.active()}
        for mid in set(self.members) - set(active):
            self.core.unregister(mid)
            log.info("meter %s left or was revoked", mid)
            if self.server is not None and self.server.is_connected(mid):
                task = asyncio.get_running_loop().create_task(self.server.connection(mid).close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        for mid, m in active.items():
            old = self.members.get(mid)
            if (
                old is None
                or old.meter_key != m.meter_key
                or old.household_json != m.household_json
                or old.plan_id != m.plan_id
            ):
                pk, proof = m.household_key(self.cfg.min_household_key_bits)
                self.core.register(
                    mid,
                    m.meter_key,
                    pk,
                    self.plans[m.plan_id][0],
                    wellformed_proof=proof,
                    period_start=self.period_start,
                    period_intervals=self.period_intervals,
                )
                self.since[mid] = self.registry.since(mid)
        self.members = active
        groups: dict[str, list[str]] = {}
        for m in active.values():
            groups.setdefault(m.group, []).append(m.meter_id)
        for g, ms in groups.items():
            roster = tuple(sorted(ms))
            if self.group_members.get(g) != roster:
                plan = self.plans[active[roster[0]].plan_id][0]
                dr = plan.demand_response  # as `privmeter simulate` configures a feeder
                self.core.define_group(
                    GroupConfig(
                        group_id=g,
                        members=roster,
                        min_survivors=self.cfg.min_survivors,
                        cmin_w=self.cfg.cmin_w_per_household * len(roster),
                        cmax_w=self.cfg.cmax_w_per_household * len(roster),
                        level_above_w=dr.cap_w if dr is not None else 3000,
                        event_minutes=min(
                            self.cfg.event_minutes, dr.max_event_minutes if dr is not None else 240
                        ),
                        max_events_per_day=plan.privacy.comparisons_per_day,
                        # what a meter of this plan requires before it answers (MeterDemandAgent)
                        echo_quorum=max(len(roster) // 2 + 1, plan.privacy.min_group_size),
                    )
                )
                self.group_members[g] = roster
        for g in set(self.group_members) - set(groups):
            del self.group_members[g]
        for cid, (
            g,
            _k,
        ) in self.concentrators.items():  # the registry changed: members, keys or both
            self.core.register_concentrator(cid, self.group_members.get(g, ()))
            self._push_roster(cid, g)
        if self.link is not None:
            self.link.refresh_via()

    def _push_roster(self, cid: str, group: str) -> None:
        """A feeder's roster changed: its connected concentrator learns who may connect now."""
        if self.server is None or not self.server.is_connected(cid):
            return
        task = asyncio.get_running_loop().create_task(self._send_quietly(cid, self.roster(group)))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _send_quietly(self, peer: str, msg: Any) -> None:
        with contextlib.suppress(PrivmeterError):
            if self.server is None:
                raise LocalProtocolError("the service is not started (no server)")
            await self.server.send_to(peer, msg)

    def groups(self) -> dict[str, tuple[str, ...]]:
        self.sync()
        return dict(self.group_members)

    def min_connected(self, group: str) -> int:
        sizes = [
            self.plans[self.members[m].plan_id][0].privacy.min_group_size
            for m in self.group_members.get(group, ())
        ]
        return max([self.cfg.min_survivors, *sizes])

    def connected(self, meter_id: str) -> bool:
        """Connected directly, or said hello through its feeder's connected concentrator."""
        if self.link is not None and self.link.server is not None:
            return self.link.connected(meter_id)
        return self.server is not None and self.server.is_connected(meter_id)

    def concentrator_of(self, group: str) -> str | None:
        """The key (hex) of the feeder's concentrator, if the config lists one."""
        k = self.concentrators.get(concentrator_id(group))
        return None if k is None else k[1].hex()

    def restarted(self) -> set[str]:
        back, self.back = self.back, set()
        return back

    def period_of(self, interval: int) -> int:
        return period_of(interval, self.period_start, self.period_intervals, self.interval_seconds)

    def period_end(self, period: int) -> int:
        return period_bounds(
            period, self.period_start, self.period_intervals, self.interval_seconds
        )[1]

    def settled(self, meter_id: str, period: int) -> bool:
        """Answered -- or nothing to settle: the period ended before the meter enrolled."""
        if self.period_end(period) * self.interval_seconds <= self.since.get(meter_id, 0):
            return True
        return (meter_id, period) in self._settled

    # -- signed documents ---------------------------------------------------------------------
    def roster(self, group: str) -> RosterUpdate:
        doc = {
            "kind": "roster",
            "group": group,
            "version": self.version,
            "demand": self.core.demand,
            "members": {
                m: self.members[m].meter_key.hex() for m in self.group_members.get(group, ())
            },
            "concentrator": self.concentrator_of(group),
        }
        text, sig = sign_doc(self.core.signing_key, doc)
        return RosterUpdate(doc=text, signature=sig)

    def preamble(self, group: str) -> dict[str, list[Any]]:
        msg = self.roster(group)
        return {m: [msg] for m in self.group_members.get(group, ())}

    def enrolled(self, m: Member) -> Enrolled:
        plan, text = self.plans[m.plan_id]
        doc = {
            "kind": "enrolled",
            "meter_id": m.meter_id,
            "group": m.group,
            "plan_id": m.plan_id,
            "plan_toml": text,
            "plan_digest": plan.digest().hex(),
            "interval_seconds": self.interval_seconds,
            "period_start": self.period_start,
            "period_intervals": self.period_intervals,
            "min_survivors": self.cfg.min_survivors,
            "headend_key": self.core.signing_key.verify_key.hex(),
            "demand": self.core.demand,
            "concentrator": self.concentrator_of(m.group),
        }
        text_, sig = sign_doc(self.core.signing_key, doc)
        return Enrolled(doc=text_, signature=sig)

    # -- the transport's handler --------------------------------------------------------------
    def trust(self, key: Any) -> str | None:
        cid = self._dc_by_key.get(key.raw)
        if cid is not None:
            return cid
        peer = self.registry.trust(key)
        return None if peer is None or peer.startswith(CONCENTRATOR_PREFIX) else peer

    def enrol(self, peer: str, msg: Any) -> list[Any]:
        if not isinstance(msg, EnrolRequest):
            raise UnexpectedMessage("an unenrolled key may only send an enrolment request")
        try:
            self._check_fits(msg)
            m = self.registry.enrol(
                msg,
                peer_key(peer),
                self.core.signing_key.verify_key,
                plans=set(self.plans),
                min_bits=self.cfg.min_household_key_bits,
                group_size=self.cfg.group_size,
            )
        except PrivmeterError as exc:
            self.metrics.enrolments.labels("refused").inc()
            log.warning("enrolment of %s refused: %s", msg.meter_id, exc)
            raise
        self.metrics.enrolments.labels("accepted").inc()
        log.info("meter %s enrolled in %s on plan %s", m.meter_id, m.group, m.plan_id)
        self.sync()
        return [self.enrolled(m)]

    def _check_fits(self, msg: EnrolRequest) -> None:
        """The registration check with the chosen plan (the largest bill of a period fits the
        key), before the registry records anything: the core's register runs it again."""
        entry = self.plans.get(msg.plan_id)
        if entry is None:
            return  # the registry refuses an unoffered plan
        try:
            doc = json.loads(msg.household_key_json)
        except ValueError:
            raise ConfigError("household key is not JSON") from None
        if not isinstance(doc, dict):
            raise ConfigError("household key is not a JSON object")
        pk, proof = household_key_and_proof(doc, min_bits=self.cfg.min_household_key_bits)
        longest = (
            self.period_intervals or 31 * 86400 // self.interval_seconds
        )  # MONTHLY: 31 days at most
        check_household_key(
            pk,
            proof,
            min_bits=self.cfg.min_household_key_bits,
            plan=entry[0],
            period_intervals=longest,
        )

    def handler(self, link: NetLink) -> Any:
        async def handle(peer: str, msg: Any) -> list[Any]:
            if peer.startswith(ENROL_PREFIX):
                return self.enrol(peer, msg)
            inner, relayed = msg, False
            if peer in self.concentrators:
                if isinstance(msg, Hello):  # the concentrator asks for its feeder's roster
                    group = self.concentrators[peer][0]
                    if (msg.meter_id, msg.group) != (peer, group):
                        raise UnknownParty(
                            "concentrator hello for another feeder", peer=peer, group=msg.group
                        )
                    log.info("concentrator %s connected (feeder %s)", peer, group)
                    return [self.roster(group)]
                if isinstance(msg, Relayed):  # the core checks the feeder and the inner message
                    inner, relayed = unwrap(msg), True
            try:
                out = link.handle(peer, msg)
                if isinstance(out, Awaitable):
                    out = await out
            except PrivmeterError as exc:
                if isinstance(inner, ReadingRecord):
                    self.metrics.records.labels("refused", exc.code).inc()
                raise
            if isinstance(inner, ReadingRecord):
                self.metrics.records.labels("accepted", "").inc()
            elif isinstance(inner, BillProof):
                self.metrics.settlements.labels("paid").inc()
            elif isinstance(inner, Dispute):
                self.metrics.settlements.labels("dispute").inc()
            elif isinstance(inner, Hello) and inner.meter_id in self.members:
                self.back.add(inner.meter_id)
                roster = self.roster(self.members[inner.meter_id].group)
                if relayed:
                    return [*out, Relayed(meter_id=inner.meter_id, payload=encode(roster))]
                return [*out, roster]
            return list(out)

        return handle


def record_event(
    core: HeadEndCore, store: HeadEndStore, metrics: HeadendMetrics, group: str, ev: DemandEvent
) -> dict[str, Any]:
    """After an event's exchanges: persist what the utility learnt (its threshold, one bit per
    answering meter, the meters directed; no reading) with the event in ``he_events``, count
    it in the metrics and log it.  Returns the stored event."""
    info = next(e for e in store.events() if e["event_id"] == ev.event_id)
    out = core.event_outcome(ev.event_id)
    interval = info["interval"]
    info = {k: v for k, v in info.items() if k not in ("event_id", "group", "interval")} | out
    store.put_event(ev.event_id, group, interval, info)
    members = len(core.groups[group].cfg.members)
    metrics.comparisons.labels("answered").inc(len(out["bits"]))
    metrics.comparisons.labels("missing").inc(members - len(out["bits"]))
    metrics.directives.labels(ev.action).inc(len(out["directed"]))
    log.info(
        "demand event %s in %s at interval %d: total %d W outside [%d, %d] W; %s to meters %s T "
        "from interval %d for %d min; %d echoes, %d of %d meters compared, %d directed",
        ev.event_id,
        group,
        interval,
        info["trigger_total_w"],
        info["cmin_w"],
        info["cmax_w"],
        ev.action,
        ev.side,
        ev.start_interval,
        ev.duration_minutes,
        info["echoes"],
        len(out["bits"]),
        members,
        len(out["directed"]),
    )
    return {**info, "event_id": ev.event_id, "group": group, "interval": interval}


async def serve(cfg: HeadendConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run the head-end until SIGTERM/SIGINT (or ``stop``)."""
    keys = load_headend(cfg.state_dir)
    plans = load_plans(cfg.plans)
    metrics = HeadendMetrics()
    registry = Registry(cfg.state_dir / "registry.db")
    interval_seconds = next(iter(plans.values()))[0].interval_seconds
    core: Any
    link: NetLink
    if cfg.cluster is None:  # one process on SQLite
        store = HeadEndStore(cfg.state_dir / "headend.db")
        core = HeadEndCore(
            keys.signing_key,
            [p for p, _ in plans.values()],
            store=store,
            demand=bool(cfg.demand),
            interval_seconds=interval_seconds,
            min_key_bits=cfg.min_household_key_bits,
        )
        link = NetLink(
            core, round_timeout=cfg.round_timeout_s, round_idle=min(2.0, cfg.round_timeout_s)
        )
        new_engine: Any = IntervalEngine
        first = max((x.interval for x in store.totals()), default=-1) + 1
        close_backend = store.close
    else:  # sharded over Ray on PostgreSQL (privmeter.app.cluster; docs/scale.md)
        from privmeter.app import cluster

        try:
            run_ = cluster.start(
                cfg, keys.signing_key, plans, registry, interval_seconds=interval_seconds
            )
        except BaseException:
            registry.close()
            raise
        core, link, new_engine = run_.core, run_.link, run_.engine
        first = run_.last_interval() + 1
        close_backend = run_.close
    dep = Deployment(cfg, core, registry, plans, metrics)
    try:
        dep.sync()
    except BaseException:
        close_backend()
        registry.close()
        raise
    dep.link = link
    link.refresh_via()

    def gone(peer: str) -> None:
        if peer in dep.concentrators:
            link.concentrator_lost(peer)
            log.info("concentrator %s disconnected", peer)
        metrics.connected.set(len(server.peers))

    server = Server(
        cfg.host,
        cfg.port,
        keys.signing_key,
        dep.trust,
        dep.handler(link),
        idle_timeout=max(600.0, 3.0 * interval_seconds),
        on_connect=lambda _p: metrics.connected.set(len(server.peers)),
        on_disconnect=gone,
    )
    await server.start()
    link.server = dep.server = server
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    beat = Heartbeat(max_age_s=3 * interval_seconds + 60)
    http = None
    if cfg.ops.http_port:
        http = await serve_http(
            cfg.ops.http_host,
            cfg.ops.http_port,
            metrics.registry,
            lambda: {
                "ok": beat.ok(),
                "role": "headend",
                "members": len(dep.members),
                "connected": len(server.peers),
            },
        )
    print(
        f"head-end listening on {cfg.host}:{server.port}, key {keys.signing_key.verify_key.hex()}",
        flush=True,
    )
    log.info(
        "head-end up: %d members, interval %d s, billing periods of %s from interval %d",
        len(dep.members),
        interval_seconds,
        f"{dep.period_intervals} intervals" if dep.period_intervals else "a calendar month (UTC)",
        dep.period_start,
    )
    eng = new_engine(core, link)
    seen = [0, 0]  # results, events already counted

    def on_interval(t: int) -> None:
        beat.beat()
        for _g, res in eng.log.results[seen[0] :]:
            metrics.intervals.labels("unmasked" if res.total is not None else "failed").inc()
        metrics.events.inc(len(eng.log.events) - seen[1])
        seen[:] = [len(eng.log.results), len(eng.log.events)]

    def on_event(
        group: str, ev: DemandEvent
    ) -> None:  # one process on SQLite (a cluster runs no events)
        record_event(core, core.store, metrics, group, ev)

    take_stale = getattr(eng, "take_stale", None)  # a cluster: groups whose shard restarted

    def restarted() -> set[str]:
        back = dep.restarted()
        return back | take_stale() if take_stale is not None else back

    plan = RealtimePlan(
        groups=dep.groups,
        connected=dep.connected,
        min_connected=dep.min_connected,
        period_of=dep.period_of,
        period_end=dep.period_end,
        settled=dep.settled,
        preamble=dep.preamble,
    )
    try:
        await run_realtime(
            eng,
            plan,
            interval_seconds=interval_seconds,
            clock=WallClock(),
            stop=stop,
            restarted=restarted,
            settle_after=cfg.settle_after_intervals,
            on_interval=on_interval,
            first_interval=first,
            on_event=on_event if cfg.cluster is None else None,
        )
    finally:
        log.info("head-end stopping")
        if http is not None:
            http.close()
        await server.close()
        close_backend()
        registry.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "invite", "revoke", "members"),
        help="run the service (default), or: invite / revoke a meter, list members",
    )
    p.add_argument(
        "--config", type=Path, required=True, help="headend.toml (see `privmeter init headend`)"
    )
    p.add_argument("--meter", default=None, help="invite / revoke: the meter id")
    p.add_argument("--group", default=None, help="invite: put the meter in this feeder group")
    p.add_argument(
        "--replace", action="store_true", help="invite: new meter or new keys for an enrolled id"
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run sharded on Ray: local (a private Ray), auto, or HOST:PORT; overrides cluster.address "
        "(needs store.postgres in the config and the cluster extra)",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="N",
        help="with a cluster: the number of shards; overrides cluster.shards",
    )


def run(args: argparse.Namespace) -> int:
    """Errors propagate to :func:`privmeter.cli.main` (one line on stderr)."""
    os.umask(0o077)  # databases and logs this process creates: the utility's only
    cfg = cast(
        HeadendConfig, load_config(args.config, "headend", cluster=args.cluster, shards=args.shards)
    )
    try:
        if args.action == "run":
            setup_logging(cfg.ops.log_format)
            return asyncio.run(serve(cfg))
        reg = Registry(cfg.state_dir / "registry.db")
        try:
            if args.action == "members":
                for m in reg.summary()["members"]:
                    print(f"{m['meter_id']}\t{m['group']}\t{m['plan']}\t{m['status']}")
                return 0
            if not args.meter:
                raise ConfigError(f"headend {args.action}: --meter is required")
            if args.action == "invite":
                if args.meter.startswith(CONCENTRATOR_PREFIX):
                    raise ConfigError(
                        f"meter ids starting with {CONCENTRATOR_PREFIX!r} are reserved for data "
                        "concentrators (listed in headend.toml [concentrators])"
                    )
                keys = load_headend(cfg.state_dir)
                print(
                    reg.invite(
                        args.meter,
                        keys.signing_key.verify_key,
                        group=args.group,
                        replace=args.replace,
                    )
                )
            else:
                reg.revoke(args.meter)
                print(f"revoked {args.meter}")
            return 0
        finally:
            reg.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"database in {cfg.state_dir}: {exc}") from None
