"""One head-end shard: the feeder groups it owns, their meters' ledgers, on PostgreSQL.

What it is for: feeder groups are independent -- aggregation and demand
management run per group, and each meter's billing ledger belongs to its
group -- so the head-end splits by group.  A :class:`ShardCore` is an
ordinary :class:`~privmeter.parties.headend.HeadEndCore` restricted to its
groups, on its own PostgreSQL schema (``shard_<index>``,
:class:`~privmeter.cluster.pgstore.PostgresHeadEndStore`).  Ray runs it as an
actor (:mod:`privmeter.cluster.ray_backend`); tests also run it in-process.

Everything that crosses the shard's boundary is plain data: the
:class:`ShardSpec` as JSON text, messages as codec bytes
(:mod:`privmeter.protocol.codec`), results as tuples of strings, integers and
bytes.  Objects are never shipped (no pickle of our data; Ray ships only the
class's code).

Durability and restart: :meth:`ShardCore.handle_batch` runs a batch of
messages inside one group commit and returns only after ``COMMIT`` -- the
front door releases receipts only then, so a receipt always names a durable
record; and a meter that resends a record already logged (its receipt was
lost with a shard that died after ``COMMIT``) gets the same receipt again
(:func:`~privmeter.protocol.records.sign_receipt` is deterministic), the
record counted once.  A shard that starts (first time or after Ray restarted it,
anywhere) reloads its registrations from its schema and resumes: the log,
accumulators, statements and totals are all in PostgreSQL.  Aggregation
secrets are never persisted, so the interval that was in flight when a shard
died cannot be unmasked: :meth:`ShardCore.close_interval` reports it
*failed* (total ``None``, error ``"shard restarted"``), never a wrong total,
and the group needs a new epoch (:meth:`ShardCore.needs_epoch`).

Security assumption: as the head-end's (the shards are the utility's own
processes; the PostgreSQL DSN and the key file are the utility's).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from privmeter import errors
from privmeter.cluster.pgstore import PostgresHeadEndStore
from privmeter.crypto.paillier import PaillierPublicKey
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import PrivmeterError, ReplayedMessage, UnexpectedMessage
from privmeter.grid.tariff.plan_toml import parse_plan
from privmeter.parties.headend import GroupConfig, HeadEndCore
from privmeter.parties.headend_store import HeadEndStorage, HeadEndStore, StoredTotal
from privmeter.parties.keys import household_key_and_proof, load_keyfile, signing_key_from
from privmeter.protocol.aggregation import AggregateResult
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.records import ReadingRecord, sign_receipt

__all__ = [
    "MAX_LOST",
    "SHARD_RESTARTED",
    "Outcome",
    "ShardCore",
    "ShardSpec",
    "error_from",
    "group_config",
]

GROUPS_META = "cluster:groups"  # he_meta key: the groups defined at run time (JSON)
SHARDS_META = "cluster:shards"  # he_meta key (shard 0): the most shards the cluster ran with
SHARD_RESTARTED = "shard restarted: the interval's masking secrets are gone"
MAX_LOST = 96  # intervals reported failed at most, after a restart (a day of 15-minute intervals)
# one message's outcome: ("ok", replies as codec bytes) or (error class name, message)
Outcome = tuple[str, list[bytes] | str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardSpec:
    """What a shard needs to start (and to restart anywhere): JSON-able, no secrets inline."""

    index: int
    dsn: str  # PostgreSQL connection string (schema shard_<index>); "sqlite:PATH": embedded, no resume
    headend_key: str  # path of the utility key file (privmeter.keys/1), readable on every node
    plans: tuple[str, ...]  # the plans' TOML texts (public)
    groups: tuple[dict[str, Any], ...]  # GroupConfig fields of the groups this shard owns
    interval_seconds: int = 900
    min_key_bits: int = 2048
    window_back: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> str:
        return f"shard_{self.index}"

    def to_json(self) -> str:
        return json.dumps({"format": "privmeter.shard-spec/1", **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardSpec:
        d = json.loads(text)
        if d.pop("format", None) != "privmeter.shard-spec/1":
            raise errors.UnsupportedVersion("expected a privmeter.shard-spec/1")
        d["plans"] = tuple(d["plans"])
        d["groups"] = tuple(d["groups"])
        return cls(**d)


def group_config(d: dict[str, Any]) -> GroupConfig:
    return GroupConfig(**{**d, "members": tuple(d["members"])})


def error_from(name: str, message: str) -> PrivmeterError:
    """Rebuild an error a shard reported (by class name, only names in :mod:`privmeter.errors`)."""
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, PrivmeterError)):
        cls = PrivmeterError
    return cls(message)


class _StoredKeys(dict[str, PaillierPublicKey]):
    """Household keys read from the store on first use: a restarted shard serving many meters
    does not parse (and re-check) every key before it can serve again."""

    def __init__(self, store: HeadEndStorage, min_bits: int) -> None:
        super().__init__()
        self._store, self._min_bits = store, min_bits

    def __missing__(self, meter_id: str) -> PaillierPublicKey:
        reg = self._store.get_meter(meter_id)
        if reg is None:
            raise KeyError(meter_id)
        pk = PaillierPublicKey.from_json(reg.paillier_public_key, min_bits=self._min_bits)
        self[meter_id] = pk
        return pk


def _ray_node() -> str:
    """The Ray node this shard runs on ("" outside Ray; Ray is never imported here)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


class ShardCore:
    """A head-end core over some groups, on PostgreSQL (see the module docstring)."""

    def __init__(self, spec_json: str) -> None:
        spec = ShardSpec.from_json(spec_json)
        self.spec = spec
        self.store: HeadEndStorage
        # the PostgreSQL store's extras (batched prefetch, log positions, cheap settled list)
        self._pg: PostgresHeadEndStore | None = None
        if spec.dsn.startswith("sqlite:"):  # the embedded store: the single-process baseline
            self.store = HeadEndStore(spec.dsn.removeprefix("sqlite:"))
            regs = []
        else:
            self.store = self._pg = PostgresHeadEndStore(spec.dsn, schema=spec.schema)
            regs = self._pg.meters()
        plans = [parse_plan(t, source=f"<plan {i}>") for i, t in enumerate(spec.plans)]
        self.core = HeadEndCore(
            signing_key_from(load_keyfile(spec.headend_key)),
            plans,
            store=self.store,
            interval_seconds=spec.interval_seconds,
            min_key_bits=spec.min_key_bits,
            window_back=spec.window_back,
        )
        for g in spec.groups:
            self.core.define_group(group_config(g))
        for g in self._defined().values():  # groups defined at run time (a deployment's enrolment)
            self.core.define_group(group_config(g))
        for reg in regs:  # resume: registrations are durable
            self.core.registry[reg.meter_id] = VerifyKey(reg.verify_key)
        if regs:  # household keys (checked at registration) are parsed when first needed
            self.core.household_keys = _StoredKeys(self.store, spec.min_key_bits)
        self.resumed = bool(self.core.registry)
        self.started = time.time()
        self._cpu0 = time.process_time()

    # -- setup ---------------------------------------------------------------------------------
    def register(self, rows: Sequence[tuple[str, str, str, str, int, int]]) -> int:
        """Register meters: (meter id, verify key hex, household public key file JSON -- ``privmeter.keys/1``
        with its well-formedness proof --, plan id, period start, intervals per period).  Idempotent (a
        restarted cluster re-registers from its config); the key goes through the registration check."""
        plans = self.core.ledger.plans
        for meter_id, vk, hh, plan_id, start, per in rows:
            pk, proof = household_key_and_proof(json.loads(hh), min_bits=self.spec.min_key_bits)
            self.core.register(
                meter_id,
                VerifyKey.from_hex(vk),
                pk,
                plans[plan_id],
                wellformed_proof=proof,
                period_start=start,
                period_intervals=per,
            )
        return len(rows)

    def _defined(self) -> dict[str, dict[str, Any]]:
        raw = self.store.meta_get(GROUPS_META)
        out: dict[str, dict[str, Any]] = json.loads(raw) if raw else {}
        return out

    def define_group(self, group: dict[str, Any]) -> None:
        """Define (or redefine: a new roster) a group on this shard, durably: a restarted shard
        defines it again from its schema.  A redefined group has no epoch until the next one."""
        cfg = group_config(group)
        groups = self._defined()
        groups[cfg.group_id] = {**group, "members": list(cfg.members)}
        self.store.meta_set(GROUPS_META, json.dumps(groups, sort_keys=True))
        self.core.define_group(cfg)

    def groups(self) -> dict[str, list[str]]:
        """Every group this shard serves, with its members (how a restarted coordinator finds
        where its groups live)."""
        return {g: list(x.cfg.members) for g, x in sorted(self.core.groups.items())}

    def cluster_size(self, shards: int) -> int:
        """Record the number of shards the cluster runs with (on shard 0); refuse fewer than
        before: the groups of the missing shards live in their schemas."""
        before = int(self.store.meta_get(SHARDS_META) or 0)
        if shards < before:
            raise errors.ConfigError(
                f"the cluster ran with {before} shards: it cannot shrink to {shards} "
                "(their groups live in their shards' schemas)"
            )
        if shards > before:
            self.store.meta_set(SHARDS_META, str(shards))
        return before

    def unregister(self, meter_id: str) -> None:
        """A meter left or was revoked: its messages are refused (records and statements stay).
        Not durable on its own: the coordinator's registry is the authority and its front door
        refuses the meter at the handshake; a redefined roster leaves it out of the aggregation."""
        self.core.unregister(meter_id)

    def info(self) -> dict[str, Any]:
        """Where and since when this shard runs, and the CPU it used (benchmarks, fault tests)."""
        return {
            "index": self.spec.index,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node": _ray_node(),
            "resumed": self.resumed,
            "started": self.started,
            "store_pid": self._pg.backend_pid if self._pg is not None else 0,
            "cpu_s": time.process_time() - self._cpu0,
            "records": self.core.calls["records"],
        }

    # -- messages ----------------------------------------------------------------------------
    def handle_batch(
        self, now: int, interval: int, items: Sequence[tuple[str, bytes]]
    ) -> tuple[list[Outcome], list[tuple[str, bytes]]]:
        """Decode and handle ``(peer, message bytes)`` items in one group commit.

        Returns each item's outcome and the meter-to-meter payloads to relay;
        returns only after COMMIT (if it fails, it raises and nothing is acknowledged)."""
        out: list[Outcome] = []
        decoded: list[Any] = []
        for _peer, data in items:
            try:
                decoded.append(decode(data))
            except PrivmeterError as exc:
                decoded.append(exc)
        with self.store.batch():
            if self._pg is not None:
                self._pg.prefetch([m.slot for m in decoded if isinstance(m, ReadingRecord)])
            for (peer, _), msg in zip(items, decoded, strict=True):
                if isinstance(msg, PrivmeterError):
                    out.append((type(msg).__name__, str(msg)))
                    continue
                try:
                    replies = self.core.handle(peer, msg, now=now, interval=interval)
                except ReplayedMessage as exc:
                    again = self._receipt_again(msg)
                    out.append(("ok", again) if again else (type(exc).__name__, str(exc)))
                    continue
                except PrivmeterError as exc:
                    out.append((type(exc).__name__, str(exc)))
                    continue
                out.append(("ok", [encode(r) for r in replies]))
        relay = [(to, encode(m)) for to, m in self.core.outbox]
        self.core.outbox.clear()
        return out, relay

    def _receipt_again(self, msg: Any) -> list[bytes]:
        """A resent record that is already logged (its receipt was lost with a shard that died
        after COMMIT): the same receipt again, from the log.  Nothing is counted twice."""
        if not isinstance(msg, ReadingRecord) or self._pg is None:
            return []
        at = self._pg.log_position(*msg.slot)
        return [encode(sign_receipt(self.core.signing_key, msg, *at))] if at else []

    # -- aggregation, per group ---------------------------------------------------------------
    @staticmethod
    def _wire(out: dict[str, list[Any]]) -> dict[str, list[bytes]]:
        return {m: [encode(x) for x in msgs] for m, msgs in out.items()}

    def needs_epoch(self, group: str) -> bool:
        """True when the group has no running aggregation epoch (new, or this shard restarted)."""
        g = self.core.groups[group]
        return g.agg is None and g.ring is None

    def new_epoch(self, group: str, first_interval: int) -> dict[str, list[bytes]]:
        """Start an epoch at ``first_interval`` (its warm-up: self-mask seeds go one interval
        ahead, so the first interval of an epoch has no total).  A group whose epoch died with a
        previous shard process gets the intervals since its last total, up to the warm-up,
        reported failed (see :meth:`close_interval`)."""
        if self.needs_epoch(group):
            self._report_lost(group, first_interval)
        return self._wire(self.core.new_epoch(group, first_interval))

    def make_bundle(self, group: str) -> dict[str, list[bytes]]:
        return self._wire(self.core.make_bundle(group))

    def open_interval(self, group: str) -> dict[str, list[bytes]]:
        """Open the group's next interval; nothing if it has no epoch (this shard restarted since:
        the interval will be reported failed at close)."""
        if self.needs_epoch(group):
            return {}
        return self._wire(self.core.open_interval(group))

    def _close(self, group: str, now: int, interval: int) -> list[AggregateResult]:
        if self.needs_epoch(group):
            return [
                AggregateResult(t.interval, None, (), (), t.error)
                for t in self._report_lost(group, interval)
            ]
        res = self.core.close_interval(group, now=now).result
        return [] if res is None else [res]

    def close_interval(self, group: str, now: int, interval: int) -> list[tuple[Any, ...]]:
        """Close the group's open ``interval``; returns the totals that became final, each as
        ``(interval, total or None, survivors, dropped, error)``.  A group without a running
        epoch (this shard restarted mid-interval) reports every interval after its last stored
        total up to ``interval`` failed (stored so: total None, :data:`SHARD_RESTARTED`)."""
        return [
            (
                r.interval,
                None if r.total is None else r.total[0],
                len(r.survivors),
                len(r.dropped),
                r.error,
            )
            for r in self._close(group, now, interval)
        ]

    def close_results(
        self, groups: Sequence[str], now: int, interval: int
    ) -> list[list[tuple[Any, ...]]]:
        """As :meth:`close_many`, each total with who took part: ``(interval, total or None,
        survivors, dropped, error)`` with the meter ids (the deployed head-end's log)."""
        with self.store.batch():
            return [
                [
                    (
                        r.interval,
                        None if r.total is None else r.total[0],
                        list(r.survivors),
                        list(r.dropped),
                        r.error,
                    )
                    for r in self._close(g, now, interval)
                ]
                for g in groups
            ]

    def open_many(self, groups: Sequence[str]) -> dict[str, list[bytes]]:
        """:meth:`open_interval` of several groups in one call."""
        out: dict[str, list[bytes]] = {}
        for g in groups:
            out.update(self.open_interval(g))
        return out

    def close_many(
        self, groups: Sequence[str], now: int, interval: int
    ) -> list[list[tuple[Any, ...]]]:
        """:meth:`close_interval` of several groups in one call and one commit (one fsync per
        shard and interval, not one per group)."""
        with self.store.batch():
            return [self.close_interval(g, now, interval) for g in groups]

    def _report_lost(self, group: str, upto: int) -> list[StoredTotal]:
        """Store as failed the intervals after the group's last stored total, up to ``upto``
        (at most :data:`MAX_LOST`): they were open in a shard process that died."""
        done = [t.interval for t in self.store.totals(group)]
        if not done:
            return []
        lost = [
            StoredTotal(group, t, None, 0, 0, SHARD_RESTARTED)
            for t in range(max(max(done) + 1, upto - MAX_LOST + 1), upto + 1)
        ]
        for t in lost:
            self.store.put_total(t)
        return lost

    # -- settlement and queries ---------------------------------------------------------------
    def statement(self, meter_id: str, period: int, now: int) -> bytes:
        return encode(self.core.statement(meter_id, period, now=now))

    def settle_many(self, meters: Sequence[str], period: int, now: int) -> list[Outcome]:
        """Per meter, its statement of ``period`` with its log (the settle request, encoded) or the
        error (e.g. prices still missing): one call per shard for a whole billing period."""
        out: list[Outcome] = []
        for m in meters:
            try:
                st = self.core.statement(m, period, now=now)
                out.append(("ok", [encode(self.core.settle_request(st, period))]))
            except PrivmeterError as exc:
                out.append((type(exc).__name__, str(exc)))
        return out

    def totals(self) -> list[tuple[str, int, int | None, int, int, str]]:
        return [
            (t.group, t.interval, t.total, t.survivors, t.dropped, t.error)
            for t in self.store.totals()
        ]

    def records(self, meter_id: str, start: int, end: int) -> list[bytes]:
        return self.store.records(meter_id, start, end)

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        return self.store.settlements()

    def settled(self) -> list[tuple[str, int]]:
        """(meter, period) of every answered statement, without the answers."""
        if self._pg is not None:
            return self._pg.settled()
        return [(m, p) for m, p, *_ in self.store.settlements()]

    def check_group(self, group: str) -> None:
        if group not in self.core.groups:
            raise UnexpectedMessage("group not on this shard", group=group)

    def close(self) -> None:
        self.store.close()
