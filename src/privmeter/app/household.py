"""``privmeter enrol`` and ``privmeter household``: a household's Raspberry Pi, deployed from its config.

What it is for: on a pilot the household's Pi sits beside the utility's
meter, reads it (P1 port, DLMS, or a CSV export) and runs two agents in one
process: the **meter agent** (:class:`~privmeter.parties.meter.MeterAgent`:
signs, encrypts under the household key, masks, answers comparisons within
the plan's budget) and the **household agent**
(:class:`~privmeter.parties.household.HouseholdAgent`: holds the Paillier
secret key and settles each bill from the meter's own readings).

* ``privmeter enrol --config household.toml --ticket TICKET`` enrols once
  (:mod:`privmeter.parties.enrolment`): it pins the head-end key from the
  ticket, sends the public keys, and saves the head-end's signed answer
  (group, plan, billing periods) as ``enrolment.json``;
* ``privmeter household --config household.toml`` runs forever: it connects
  (and reconnects, with back-off) to the pinned head-end -- or, with a
  ``[concentrator]`` table, to its feeder's data concentrator, whose key it
  takes only from the head-end's signed enrolment or roster (a relay can do
  to the meter no more than a lying head-end could: rosters and statements
  are signed by the head-end, the meter's answers are its own); it takes
  only signed rosters newer than the one it has, answers each interval on its own clock
  (``clock_skew_s``: a round for an interval that has not ended on this clock,
  give or take the tolerance, is ignored), keeps its readings, unacknowledged
  records, privacy ledgers and the bill proofs it gave in ``state.db`` (a
  restart loses nothing it reported and never pays a billing period twice),
  settles every statement, and stops cleanly on SIGTERM.
  Demand management: the meter's comparison agent is built on each signed
  roster (the first one after enrolment, every newer one, the saved one at
  start-up) around one comparison budget, saved in ``state.db`` before an
  answer leaves (a restart gives no fresh budget); directives are logged,
  counted and kept in ``state.db`` (their event windows' demand-response
  records continue after a restart).
  ``privmeter meter --config household.toml --source SPEC`` is the same with
  the config's source replaced.

Security assumption: the Pi is the household's; the meter signing key and
the Paillier secret key never leave ``state_dir``.  On a pilot the meter
agent runs on the household's own machine, so the utility trusts the
household's Pi for correct readings as it would trust a meter (the
tamper-resistant meter of ARCHITECTURE.md holds the signing key in a real
roll-out).  Guarantee: a message that fails a check is refused with an error
code and changes nothing; everything reported is saved before it is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

from privmeter.app.config import HouseholdConfig, concentrator_id, load_config
from privmeter.app.ops import (
    Heartbeat,
    HouseholdMetrics,
    serve_http,
    setup_logging,
    stop_on_signals,
)
from privmeter.app.state import HouseholdState, load_household, write_secret
from privmeter.crypto.elgamal import DEFAULT_GROUP, GROUPS
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import ConfigError, PrivmeterError, TransportError
from privmeter.grid.tariff.plan_toml import parse_plan
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import Connection, Welcome, connect
from privmeter.parties.enrolment import (
    Enrolled,
    EnrolRequest,
    RosterUpdate,
    Ticket,
    enrol_mac,
    verify_doc,
)
from privmeter.parties.household import HouseholdAgent
from privmeter.parties.messages import Bye, FeedPublished, Hello, SettleRequest
from privmeter.parties.meter import MeterAgent
from privmeter.parties.meter_feed import MeterFeed, MeterLoad, SourceReadings, round_of
from privmeter.parties.meter_state import MeterLedgerStore, restore_journal, sync_journal
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.demand_messages import ComparisonQuery, DemandEvent, Directive, EchoBundle
from privmeter.protocol.settlement import BillProof

__all__ = ["HouseholdService", "add_arguments", "add_enrol_arguments", "enrol", "run", "run_enrol"]

log = logging.getLogger("privmeter.household")


async def enrol(
    cfg: HouseholdConfig, st: HouseholdState, ticket: Ticket, *, force: bool = False
) -> dict[str, Any]:
    """Enrol with the head-end named by ``ticket``; saves and returns the signed enrolment."""
    if ticket.meter_id != cfg.meter_id:
        raise ConfigError(
            f"the ticket is for meter {ticket.meter_id!r}, this config is {cfg.meter_id!r}"
        )
    if st.enrolment() is not None and not force:
        raise ConfigError(
            f"{st.enrolment_path} exists: already enrolled (use --force to enrol again)"
        )
    req = EnrolRequest(
        meter_id=cfg.meter_id,
        household_key_json=st.public_json,
        plan_id=cfg.plan,
        mac=enrol_mac(
            ticket.mac_key(),
            meter_id=cfg.meter_id,
            meter_key=st.meter_key.verify_key,
            headend_key=ticket.headend_key,
            household_key_json=st.public_json,
            plan_id=cfg.plan,
        ),
    )
    conn = await connect(cfg.headend_host, cfg.headend_port, st.meter_key, ticket.headend_key)
    try:
        reply = await conn.request(req, expect=Enrolled)
    finally:
        await conn.close()
    doc = verify_doc(ticket.headend_key, reply.doc, reply.signature, kind="enrolled")
    plan = parse_plan(doc["plan_toml"], source="enrolment")
    if (doc["meter_id"], doc["plan_id"], doc["headend_key"]) != (
        cfg.meter_id,
        cfg.plan,
        ticket.headend_key.hex(),
    ) or plan.digest().hex() != doc["plan_digest"]:
        raise ConfigError("the head-end's enrolment answer does not match the request")
    saved = {
        "format": "privmeter.enrolment/1",
        "doc": reply.doc,
        "signature": reply.signature.hex(),
        "headend_key": ticket.headend_key.hex(),
        "roster": None,
    }
    write_secret(st.enrolment_path, saved, force=True)
    return doc


class HouseholdService:
    """The meter agent and the household agent of one home, on one connection."""

    def __init__(
        self, cfg: HouseholdConfig, st: HouseholdState, *, source: str | None = None
    ) -> None:
        saved = st.enrolment()
        if saved is None:
            raise ConfigError(
                f"not enrolled yet: run `privmeter enrol --config {cfg.path} --ticket TICKET`"
            )
        self.cfg, self.st, self.saved = cfg, st, saved
        self.headend_key = VerifyKey.from_hex(saved["headend_key"])
        doc = verify_doc(
            self.headend_key, saved["doc"], bytes.fromhex(saved["signature"]), kind="enrolled"
        )
        self.doc = doc
        self.plan = parse_plan(doc["plan_toml"], source="enrolment")
        self.interval_seconds = int(doc["interval_seconds"])
        self.metrics = HouseholdMetrics()
        self.ledger = MeterLedgerStore(st.dir / "state.db")
        self.roster_version = -1
        group_keys = {cfg.meter_id: st.meter_key.verify_key}
        demand = bool(doc.get("demand"))
        if saved.get("roster"):
            r = verify_doc(
                self.headend_key,
                saved["roster"]["doc"],
                bytes.fromhex(saved["roster"]["signature"]),
                kind="roster",
            )
            group_keys = {m: VerifyKey.from_hex(k) for m, k in r["members"].items()}
            self.roster_version = int(r["version"])
            demand = bool(r.get("demand", demand))
        from privmeter.grid.sources import open_source

        src = open_source(source or cfg.source, interval_seconds=self.interval_seconds)
        start = int(time.time()) // self.interval_seconds * self.interval_seconds
        load = MeterLoad(self.interval_seconds, start, fixed=SourceReadings(src))
        # the meter's own one-use comparison keys; its demand agent is built on each signed
        # roster (a restart rebuilds it from the saved one), its budget ledger is in state.db
        self.meter = MeterAgent(
            cfg.meter_id,
            st.meter_key,
            st.secret_key.public_key,
            self.headend_key,
            self.plan,
            self.interval_seconds,
            first_interval=load.first_interval,
            group=doc["group"],
            group_keys=group_keys,
            comparison_group=GROUPS[DEFAULT_GROUP],
            min_survivors=int(doc["min_survivors"]),
            ledger=self.ledger,
        )
        self.feed = MeterFeed(self.meter, load)  # pushes the source's readings into the meter
        self.meter.set_roster(group_keys, demand=demand)
        restored = restore_journal(self.ledger, self.meter)
        if restored:
            log.info("restored %d readings from %s", restored, st.dir / "state.db")
        paid = {k: decode(b, expect=BillProof) for k, b in self.ledger.paid(cfg.meter_id).items()}
        self.home = HouseholdAgent(
            cfg.meter_id,
            st.secret_key,
            self.plan,
            self.headend_key,
            lambda: (self.meter.local_readings, self.meter.local_adjustments),
            meter_key=st.meter_key.verify_key,
            period_start=int(doc["period_start"]),
            period_intervals=int(doc["period_intervals"]),
            paid=paid,
            on_paid=lambda k, proof: self.ledger.put_paid(cfg.meter_id, k, encode(proof)),
        )
        self.beat = Heartbeat(max_age_s=3 * self.interval_seconds + 120)
        self.conn: Connection | None = None
        self.upstream = (cfg.headend_host, cfg.headend_port, self.headend_key, "head-end")
        if cfg.concentrator_host is not None:
            self.upstream = (
                cfg.concentrator_host,
                cfg.concentrator_port,
                self._concentrator_key(),
                concentrator_id(doc["group"]),
            )

    def _concentrator_key(self) -> VerifyKey:
        """The feeder concentrator's key, as the head-end signed it (latest roster, else the enrolment)."""
        key = None
        if self.saved.get("roster"):
            key = verify_doc(
                self.headend_key,
                self.saved["roster"]["doc"],
                bytes.fromhex(self.saved["roster"]["signature"]),
                kind="roster",
            ).get("concentrator")
        key = key or self.doc.get("concentrator")
        if not key:
            raise ConfigError(
                f"{self.cfg.path}: [concentrator] is set, but the utility's signed enrolment names no "
                f"concentrator for group {self.doc['group']!r} (remove [concentrator], or run once "
                "without it to receive a newer roster)"
            )
        return VerifyKey.from_hex(key)

    def _roster(self, msg: RosterUpdate) -> None:
        r = verify_doc(self.headend_key, msg.doc, msg.signature, kind="roster")
        if r.get("group") != self.meter.group or self.cfg.meter_id not in r.get("members", {}):
            raise ConfigError("roster for another group, or without this meter")
        v = int(r["version"])
        if v < self.roster_version:
            log.warning("ignoring an older roster (version %d < %d)", v, self.roster_version)
            return
        changed = v != self.roster_version
        self.roster_version = v
        was = self.meter.demand is not None
        self.meter.set_roster(
            {m: VerifyKey.from_hex(k) for m, k in r["members"].items()},
            demand=bool(r.get("demand", self.doc.get("demand"))),
        )
        self.saved["roster"] = {"doc": msg.doc, "signature": msg.signature.hex()}
        write_secret(self.st.enrolment_path, self.saved, force=True)
        if changed:
            log.info(
                "roster version %d of %s: %d members",
                v,
                self.meter.group,
                len(self.meter.group_keys),
            )
        if changed or was != (self.meter.demand is not None):
            self._demand_state()

    def _demand_state(self) -> None:
        """Log whether the meter takes part in demand management, and its budget used today."""
        m = self.meter
        if m.budget is not None:
            self.metrics.comparisons_used_today.set(m.budget.used_today(int(time.time())))
        if m.demand is not None:
            log.info(
                "demand management: on (echo quorum %d of %d members; %d of %d comparisons of "
                "today's readings used)",
                m.demand.quorum,
                len(m.group_keys),
                m.budget.used_today(int(time.time())) if m.budget else 0,
                self.plan.privacy.comparisons_per_day,
            )
        elif self.roster_version < 0 and self.doc.get("demand"):
            log.info("demand management: waiting for the head-end's signed roster of %s", m.group)
        else:
            log.info("demand management: off (%s)", m.demand_error)

    def _demand_done(self, msg: Any, out: list[Any], now: int) -> None:
        """Count and log what the meter did with a demand-management message."""
        m = self.meter
        if isinstance(msg, ComparisonQuery):
            self.metrics.comparisons.labels("answered", "").inc()
            if m.budget is not None:
                self.metrics.comparisons_used_today.set(m.budget.used_today(now))
            log.info(
                "comparison of event %s answered (one bit; %d of %d comparisons of today's readings used)",
                msg.event_id,
                m.budget.used_today(now) if m.budget else 0,
                self.plan.privacy.comparisons_per_day,
            )
        elif isinstance(msg, Directive):
            ins = m.directives[-1]
            self.metrics.directives.labels(ins.action).inc()
            log.info(
                "directive for event %s: %s from interval %d for %d min (limit %s W)",
                ins.event_id,
                ins.action,
                ins.start_interval,
                ins.duration_minutes,
                ins.limit_w,
            )
        elif isinstance(msg, DemandEvent):
            log.info(
                "demand event %s (%s, meters %s T): offer and echo sent",
                msg.event_id,
                msg.action,
                msg.side,
            )

    async def handle(self, _peer: str, msg: Any) -> list[Any]:
        if isinstance(msg, ErrorMessage):
            log.info("error code %r from the head-end", msg.code)
            return []
        if isinstance(msg, Welcome | Bye):
            return []
        if isinstance(msg, RosterUpdate):
            self._roster(msg)
            return []
        now = int(time.time())
        t = round_of(msg)
        if t is not None:
            if (t + 1) * self.interval_seconds > now + self.cfg.clock_skew_s:
                self.metrics.rounds.labels("early").inc()
                log.warning("round for interval %d has not ended on this clock: ignored", t)
                return []
            if self.feed.needs_wait(t):  # the meter closes t a few s after its end
                await asyncio.to_thread(self.feed.wait_for, t, self.interval_seconds)
        if isinstance(msg, SettleRequest):
            out = self.home.handle(msg)
            kind = "paid" if isinstance(out[0], BillProof) else "dispute"
            self.metrics.settlements.labels(kind).inc()
            log.info("statement of period %d answered: %s", msg.period, kind)
            return out
        if isinstance(msg, FeedPublished):
            self.home.handle(msg)
        n = len(self.meter.local_readings)
        try:
            out = self.feed.handle(msg, now=now)
        except PrivmeterError as exc:
            if t is not None:
                self.metrics.rounds.labels("refused").inc()
            if isinstance(msg, DemandEvent | ComparisonQuery | EchoBundle | Directive):
                self.metrics.comparisons.labels("refused", exc.code).inc()
                log.warning(
                    "demand-management message %s refused: %s (%s)",
                    type(msg).__name__,
                    exc.code,
                    exc,
                )
            raise
        sync_journal(self.ledger, self.meter)  # saved before the answers leave
        if isinstance(msg, DemandEvent | ComparisonQuery | Directive):
            self._demand_done(msg, out, now)
        self.metrics.readings.inc(len(self.meter.local_readings) - n)
        if t is not None:
            self.metrics.rounds.labels("answered").inc()
            self.beat.beat()
        return out

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.2
        host, port, key, server_id = self.upstream
        while not stop.is_set():
            try:
                self.conn = await connect(
                    host, port, self.st.meter_key, key, server_id=server_id, handler=self.handle
                )
            except (TransportError, PrivmeterError) as exc:
                log.warning("cannot reach %s (%s); retrying in %.1f s", server_id, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.2
            self.metrics.connected.set(1)
            last = max(self.meter.local_readings) if self.meter.local_readings else -1
            log.info("connected to %s at %s:%d as %s", server_id, host, port, self.cfg.meter_id)
            try:
                await self.conn.send(
                    Hello(meter_id=self.cfg.meter_id, group=self.meter.group, last_interval=last)
                )
                closed = asyncio.ensure_future(self.conn.wait_closed())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for f in (closed, stopping):
                    f.cancel()
            except TransportError as exc:
                log.warning("connection lost: %s", exc)
            finally:
                self.metrics.connected.set(0)
                await self.conn.close()
            if not stop.is_set():
                log.warning("disconnected from %s; reconnecting", server_id)

    def close(self) -> None:
        self.feed.close(timeout=1.0)
        self.ledger.close()


async def serve(
    cfg: HouseholdConfig,
    st: HouseholdState,
    *,
    source: str | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    svc = HouseholdService(cfg, st, source=source)
    svc._demand_state()  # logged once the service is built (a config error stays one line)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    http = None
    if cfg.ops.http_port:
        http = await serve_http(
            cfg.ops.http_host,
            cfg.ops.http_port,
            svc.metrics.registry,
            lambda: {
                "ok": svc.beat.ok(),
                "role": "household",
                "meter_id": cfg.meter_id,
                "connected": bool(svc.conn is not None and not svc.conn.closed),
            },
        )
    print(
        f"household {cfg.meter_id} running (group {svc.meter.group}, plan {svc.plan.plan_id})",
        flush=True,
    )
    try:
        await svc.run(stop)
    finally:
        log.info("household stopping")
        if http is not None:
            http.close()
        svc.close()
    return 0


def _load(path: Path) -> tuple[HouseholdConfig, HouseholdState]:
    os.umask(0o077)  # state.db and enrolment.json: the household's only
    cfg = cast(HouseholdConfig, load_config(path, "household"))
    return cfg, load_household(cfg.state_dir)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, required=True, help="household.toml (see `privmeter init household`)"
    )
    p.add_argument("--source", default=None, help="read this meter instead of the config's source")


def run(args: argparse.Namespace) -> int:
    """Errors propagate to :func:`privmeter.cli.main` (one line on stderr)."""
    cfg, st = _load(args.config)
    setup_logging(cfg.ops.log_format)
    try:
        return asyncio.run(serve(cfg, st, source=args.source))
    except sqlite3.Error as exc:
        raise ConfigError(f"database in {cfg.state_dir}: {exc}") from None
    except KeyError as exc:
        raise ConfigError(f"{st.enrolment_path} lacks {exc}: enrol again") from None


def add_enrol_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, required=True, help="household.toml (see `privmeter init household`)"
    )
    p.add_argument(
        "--ticket",
        required=True,
        help="the one-time ticket from the utility (privmeter-enrol/1:...)",
    )
    p.add_argument("--force", action="store_true", help="enrol again (new meter or new keys)")


def run_enrol(args: argparse.Namespace) -> int:
    cfg, st = _load(args.config)
    try:
        doc = asyncio.run(enrol(cfg, st, Ticket.parse(args.ticket), force=args.force))
    except KeyError as exc:
        raise ConfigError(f"the head-end's enrolment answer lacks {exc}") from None
    print(
        f"enrolled {doc['meter_id']} in group {doc['group']} on plan {doc['plan_id']}; "
        f"head-end key {doc['headend_key']} pinned in {st.enrolment_path}"
    )
    return 0
