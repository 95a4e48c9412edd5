"""A seeded world of meters for the sharded head-end: the benchmark's and the fault tests' load.

What it is for: :func:`make_world` builds feeder groups of meters with their
signing keys, one household Paillier key (shared, to keep set-up fast: the
head-end's work per reading does not depend on it) and every reading and
signed, encrypted :class:`~privmeter.protocol.records.ReadingRecord`
*beforehand*, so that producing the meters' messages does not compete with
the head-end for the CPU.  :class:`Fleet` plays the meters' side: it answers
epoch requests and interval starts (masked aggregation), keeps every record
it has no receipt for and resends it each interval (as a real meter does).
:func:`run_world` drives any head-end with the
:class:`~privmeter.cluster.headend.ClusterHeadEnd` interface -- sharded on
Ray, or one in-process shard on SQLite (the single-process head-end) --
interval by interval, timing only the head-end's parts (open, messages,
close) with an optional :class:`Stopwatch`.

Everything is plain data and deterministic from the seed (keys included):
a simulation, never a deployment.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privmeter.bench.headend import PLAN_TOML, T0
from privmeter.cluster.headend import ClusterHeadEnd
from privmeter.crypto.paillier import PaillierPrivateKey, generate_keypair
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import PrivmeterError
from privmeter.grid.tariff.plan_toml import parse_plan
from privmeter.parties.headend import GroupConfig
from privmeter.parties.headend_store import StoredTotal
from privmeter.parties.keys import KEYFILE_FORMAT, HouseholdKeys, write_json_atomic
from privmeter.parties.messages import EpochRequest
from privmeter.parties.meter import MeterEncryptor
from privmeter.protocol.aggregation import AggregationMeter, EpochCache
from privmeter.protocol.aggregation_messages import IntervalStart, KeyBundle
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.records import ReadingRecord, Receipt, make_record, record_bytes
from privmeter.protocol.settlement import Statement

__all__ = ["Fleet", "RunLog", "Stopwatch", "World", "make_world", "run_world"]


@dataclass
class World:
    """Groups of meters, their keys and their (pre-generated) readings and records."""

    seed: int
    groups: dict[str, tuple[str, ...]]
    meter_keys: dict[str, SigningKey]
    headend_key: SigningKey
    household: PaillierPrivateKey
    first: int
    intervals: int
    min_survivors: int
    readings: dict[tuple[str, int], int]
    records: dict[tuple[str, int], bytes]  # codec bytes of each ReadingRecord
    plan_toml: str = PLAN_TOML

    @property
    def meters(self) -> list[str]:
        return sorted(self.meter_keys)

    def group_configs(self) -> list[GroupConfig]:
        return [
            GroupConfig(group_id=g, members=ms, min_survivors=self.min_survivors)
            for g, ms in sorted(self.groups.items())
        ]

    def registrations(self) -> list[tuple[str, str, str, str, int, int]]:
        plan_id = parse_plan(self.plan_toml).plan_id
        hh = json.dumps(HouseholdKeys(self.household).public_dict())  # the key file, with its proof
        return [
            (m, self.meter_keys[m].verify_key.hex(), hh, plan_id, self.first, self.intervals)
            for m in self.meters
        ]

    def write_headend_key(self, directory: Path) -> str:
        """The utility key file the shards load (as ``privmeter keygen utility`` writes it)."""
        path = directory / "utility.json"
        sk = self.headend_key
        write_json_atomic(
            path,
            {
                "format": KEYFILE_FORMAT,
                "role": "utility",
                "verify_key": sk.verify_key.hex(),
                "signing_seed": sk.seed().hex(),
            },
            private=True,
        )
        return str(path)

    def true_total(self, group: str, interval: int) -> int:
        return sum(self.readings[(m, interval)] for m in self.groups[group])


def _key(*parts: object) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256("/".join(map(str, parts)).encode()).digest())


def make_world(
    *,
    groups: int,
    per_group: int,
    intervals: int,
    key_bits: int = 3072,
    seed: int = 1,
    household: PaillierPrivateKey | None = None,
    min_survivors: int = 5,
) -> World:
    """A seeded world (see the module docstring); records are signed and encrypted here."""
    rng = random.Random(seed)
    if household is None:
        _, household = generate_keypair(
            key_bits, rng=random.Random(seed), insecure_for_tests=key_bits < 2048
        )
    pk = household.public_key
    enc = MeterEncryptor(pk)
    gs = {f"g{g:03d}": tuple(f"g{g:03d}m{j:04d}" for j in range(per_group)) for g in range(groups)}
    keys = {m: _key("scale-meter", seed, m) for ms in gs.values() for m in ms}
    readings: dict[tuple[str, int], int] = {}
    records: dict[tuple[str, int], bytes] = {}
    for t in range(T0, T0 + intervals):
        for m in sorted(keys):
            wh = rng.randrange(-500, 3000)
            readings[(m, t)] = wh
            records[(m, t)] = encode(make_record(keys[m], m, t, pk, enc.encrypt(wh, rng)))
    return World(
        seed=seed,
        groups=gs,
        meter_keys=keys,
        headend_key=_key("scale-headend", seed),
        household=household,
        first=T0,
        intervals=intervals,
        min_survivors=min(min_survivors, per_group),
        readings=readings,
        records=records,
    )


class Fleet:
    """The meters' side (see the module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.agg: dict[str, AggregationMeter] = {}
        self.epochs = EpochCache()  # the load generator's meters share their epoch tables
        self.unacked: dict[str, dict[int, bytes]] = {m: {} for m in world.meters}
        self.digests = {
            k: hashlib.sha256(record_bytes(_record(v))).digest() for k, v in world.records.items()
        }
        self.headend_vk: VerifyKey = world.headend_key.verify_key
        self.group_of = {m: g for g, ms in world.groups.items() for m in ms}
        self.rejected: Counter[str] = Counter()
        self.resent = 0
        self.bytes: Counter[str] = Counter()  # message kind -> bytes (codec, before the channel)
        self.messages: Counter[str] = Counter()  # message kind -> count

    def on_epoch(self, out: dict[str, list[Any]]) -> list[tuple[str, bytes]]:
        """Answer the epoch requests with fresh key adverts."""
        replies = []
        for m, msgs in sorted(out.items()):
            for msg in msgs:
                if isinstance(msg, EpochRequest):
                    g = self.group_of[m]
                    reg = {x: self.world.meter_keys[x].verify_key for x in self.world.groups[g]}
                    self.agg[m] = AggregationMeter(
                        m,
                        self.world.meter_keys[m],
                        reg,
                        self.headend_vk,
                        group=g,
                        epoch=msg.epoch,
                        min_survivors=self.world.min_survivors,
                        rng=random.Random(f"{self.world.seed}/{m}/{msg.epoch}"),
                        epochs=self.epochs,
                    )
                    replies.append((m, encode(self.agg[m].advertise())))
        return replies

    def on_bundle(self, out: dict[str, list[Any]]) -> None:
        for m, msgs in out.items():
            for msg in msgs:
                if isinstance(msg, KeyBundle):
                    self.agg[m].handle_bundle(msg)

    def answers(self, starts: dict[str, list[bytes]]) -> list[tuple[str, bytes]]:
        """Each started meter's masked reading for the interval."""
        out = []
        for m, msgs in sorted(starts.items()):
            for data in msgs:
                s = decode(data)
                if isinstance(s, IntervalStart):
                    t = s.announcement.interval
                    self._count("down:interval_start", data)
                    try:
                        out.append(
                            (
                                m,
                                encode(
                                    self.agg[m].handle_start(s, self.world.readings.get((m, t), 0))
                                ),
                            )
                        )
                        self._count("up:masked_input", out[-1][1])
                    except PrivmeterError as exc:  # the meter refuses (e.g. too few survivors)
                        self.rejected["meter:" + exc.code] += 1
        return out

    def due(self, interval: int | None) -> list[tuple[str, bytes]]:
        """The records to send now: every unacknowledged one, plus this interval's."""
        if interval is not None:
            for m in self.world.meters:
                rec = self.world.records.get((m, interval))
                if rec is not None:
                    self.unacked[m][interval] = rec
        out = [(m, data) for m in self.world.meters for t, data in sorted(self.unacked[m].items())]
        for _, d in out:
            self._count("up:record", d)
        self.resent += len(out) - (len(self.world.meters) if interval is not None else 0)
        return out

    def settle(self, items: Sequence[tuple[str, bytes]], results: Sequence[Any]) -> None:
        """Drop the records a valid receipt acknowledges; count the rest."""
        for (m, _data), res in zip(items, results, strict=True):
            if isinstance(res, PrivmeterError):
                self.rejected[res.code] += 1
                continue
            for data in res:
                r = decode(data)
                self._count("down:" + type(r).__name__.lower(), data)
                if isinstance(r, Receipt):
                    r.verify(self.headend_vk)
                    if self.digests.get((m, r.interval)) == r.record_digest:
                        self.unacked[m].pop(r.interval, None)

    def _count(self, kind: str, data: bytes) -> None:
        self.bytes[kind] += len(data)
        self.messages[kind] += 1

    def message_sizes(self) -> dict[str, float]:
        """Mean codec bytes per message, by kind (direction:kind)."""
        return {k: self.bytes[k] / self.messages[k] for k in sorted(self.messages)}

    def pending(self) -> int:
        return sum(len(v) for v in self.unacked.values())


def _record(data: bytes) -> ReadingRecord:
    rec: ReadingRecord = decode(data, expect=ReadingRecord)
    return rec


@dataclass
class Stopwatch:
    """Wall and CPU time of the timed sections: this process's, and other processes' (shards,
    database backends...) through ``external``: name -> function returning CPU seconds so far."""

    wall: float = 0.0
    cpu: float = 0.0
    sections: int = 0
    external: dict[str, Callable[[], float]] = field(default_factory=dict)
    external_cpu: dict[str, float] = field(
        default_factory=dict
    )  # CPU seconds per external process class

    @contextmanager
    def timed(self) -> Iterator[None]:
        e = {k: f() for k, f in self.external.items()}
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.process_time() - c
            for k, f in self.external.items():
                self.external_cpu[k] = self.external_cpu.get(k, 0.0) + (f() - e[k])
            self.sections += 1


@dataclass
class RunLog:
    totals: list[StoredTotal] = field(default_factory=list)
    statements: dict[str, Statement] = field(default_factory=dict)
    epochs: int = 0
    sizes: dict[str, float] = field(default_factory=dict)  # mean bytes per message, by kind
    written: dict[str, int] = field(default_factory=dict)  # bytes the store wrote, by kind


def _setup_epochs(head: ClusterHeadEnd, fleet: Fleet, groups: Sequence[str], first: int) -> None:
    for g in groups:
        adverts = fleet.on_epoch(head.new_epoch(g, first))
        head.forward(adverts, now=first * 60, interval=first - 1)
        fleet.on_bundle(head.make_bundle(g))


def run_world(
    head: ClusterHeadEnd,
    world: World,
    fleet: Fleet,
    *,
    watch: Stopwatch | None = None,
    hook: Callable[[int, str], None] | None = None,
    settle: bool = True,
) -> RunLog:
    """Run every interval of ``world`` (plus a warm-up and the drain intervals that make the
    last one final: one, or two for a sparse aggregation graph) on ``head``; see the
    module docstring.  ``hook(t, "forward")`` runs just before interval ``t``'s messages are
    forwarded, ``hook(t, "close")`` just before it is closed (fault tests)."""
    watch = watch if watch is not None else Stopwatch()
    groups = sorted(world.groups)
    log = RunLog()
    head.register(world.registrations())
    end = world.first + world.intervals
    last: dict[str, int] = {}  # group -> the last interval with a final total
    for t in range(world.first - 1, end + 2):  # a warm-up interval (the first epoch's), drains
        now = (t + 1) * 60
        stale = head.needing_epoch(groups)
        if stale:
            _setup_epochs(head, fleet, stale, t)
            log.epochs += 1
        with watch.timed():
            starts = head.open_intervals(groups)
        items = fleet.due(t if world.first <= t < end else None) + fleet.answers(starts)
        if hook is not None:
            hook(t, "forward")
        with watch.timed():
            results = head.forward(items, now=now, interval=t)
        fleet.settle(items, results)
        if hook is not None:
            hook(t, "close")
        with watch.timed():
            finals = head.close_intervals(groups, now=now, interval=t)
        log.totals.extend(x for g in groups for x in finals[g])
        last.update({g: max(x.interval for x in finals[g]) for g in groups if finals[g]})
        if t >= end and all(last.get(g, -1) >= end - 1 for g in groups):
            break
    for _ in range(3):  # flush: meters resend what has no receipt yet
        items = fleet.due(None)
        if not items:
            break
        fleet.settle(items, head.forward(items, now=(end + 1) * 60, interval=end))
    if settle:
        log.statements = head.statements(world.meters, 0, now=(end + 1) * 60)
    log.sizes = fleet.message_sizes()
    return log
