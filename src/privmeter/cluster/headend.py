"""The sharded head-end as one object: routes by group, batches per shard, reports shard faults.

What it is for: :class:`ClusterHeadEnd` is what the interval loop and the
front doors talk to.  It owns the :class:`~privmeter.cluster.routing.ShardMap`
and a :class:`~privmeter.cluster.routing.Shards` backend (Ray actors, or
in-process), and offers the head-end's operations:

* :meth:`ClusterHeadEnd.forward`: many meters' messages at once -- split by
  owning shard, one call per shard, all shards concurrently; each message
  gets its replies or its error.  A shard that died during the call
  acknowledges none of its messages (a
  :class:`~privmeter.errors.StoreError` each): the meters resend them;
* per group: :meth:`new_epoch`, :meth:`make_bundle`, :meth:`open_interval`,
  :meth:`close_intervals` (routed to the group's shard; a group whose shard
  restarted since its epoch began reports its open intervals failed, and
  :meth:`needing_epoch` lists it);
* per meter: :meth:`statement`, :meth:`records`, :meth:`settle_requests`;
  cluster-wide: :meth:`totals`, :meth:`settlements` (gathered from every shard);
* at run time (the deployed head-end, whose groups form as households enrol):
  :meth:`define_group` places a new group on the least loaded shard (a known
  group stays where its data is), durably in that shard's schema;
  :meth:`restore` rebuilds the placement from the shards after a restart.

:func:`start_cluster` builds it: writes nothing but the shard specs, starts
the shards (Ray: ``address`` ``"auto"``/``host:port``, or a private local
Ray; ``backend="local"``: in this process), registers the meters.

Guarantee: a message is acknowledged (its replies returned) only after its
shard's group commit; a total is either the exact unmasked sum or ``None``
with an error (:data:`~privmeter.cluster.shard.SHARD_RESTARTED` after a
shard restart) -- never a partial sum presented as a total.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from privmeter.cluster.routing import Call, LocalShards, ShardMap, Shards, ShardUnavailable
from privmeter.cluster.shard import ShardCore, ShardSpec, error_from
from privmeter.errors import InvalidArgument, PrivmeterError, StoreError
from privmeter.parties.headend import GroupConfig
from privmeter.parties.headend_store import StoredTotal
from privmeter.parties.messages import SettleRequest
from privmeter.protocol.aggregation import AggregateResult
from privmeter.protocol.codec import decode
from privmeter.protocol.settlement import Statement

__all__ = ["MAX_SHARD_BATCH", "ClusterHeadEnd", "start_cluster"]

MAX_SHARD_BATCH = 4096  # messages per shard call (a few MB of ciphertexts at 3072 bits)


def _raise(res: Any) -> Any:
    if isinstance(res, BaseException):
        raise res
    return res


class ClusterHeadEnd:
    """The head-end split over shards (see the module docstring)."""

    def __init__(self, shards: Shards, smap: ShardMap, *, control_timeout: float = 120.0) -> None:
        self.shards = shards
        self.map = smap
        self.control_timeout = control_timeout
        self.relay: list[tuple[str, Any]] = []  # meter-to-meter payloads to pass on (ring mode)

    # -- one call to one shard -----------------------------------------------------------------
    def _control(self, calls: Sequence[Call]) -> list[Any]:
        """Control calls (epochs, intervals, queries): a call that met a dead or restarting shard
        is retried until the shard is back (Ray restarts it; it reloads from PostgreSQL), for at
        most ``control_timeout`` seconds.  Safe: a restarted shard has only its durable state, and
        every control call on it either reads or reports the lost interval."""
        out = self.shards.call_many(calls)
        deadline = time.monotonic() + self.control_timeout
        while True:
            again = [k for k, r in enumerate(out) if isinstance(r, ShardUnavailable)]
            if not again or time.monotonic() > deadline:
                return out
            time.sleep(0.2)
            for k, r in zip(again, self.shards.call_many([calls[k] for k in again]), strict=True):
                out[k] = r

    def _call(self, shard: int, name: str, *args: Any) -> Any:
        return _raise(self._control([(shard, name, args)])[0])

    def _group_call(self, group: str, name: str, *args: Any) -> Any:
        return self._call(self.map.shard_of_group(group), name, group, *args)

    @staticmethod
    def _decoded(out: Mapping[str, list[bytes]]) -> dict[str, list[Any]]:
        return {m: [decode(b) for b in msgs] for m, msgs in out.items()}

    # -- setup -----------------------------------------------------------------------------------
    def register(
        self,
        rows: Iterable[tuple[str, str, str, str, int, int]],
        *,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        """(meter id, verify key hex, household public key file JSON, plan id, period start, intervals per period);
        ``groups``: meter id -> its group, for meters not yet on their group's roster."""
        per: dict[int, list[tuple[str, str, str, str, int, int]]] = {}
        for r in rows:
            g = (groups or {}).get(r[0])
            shard = self.map.shard_of_group(g) if g is not None else self.map.shard_of_meter(r[0])
            per.setdefault(shard, []).append(r)
        for res in self._control([(i, "register", (rs,)) for i, rs in sorted(per.items())]):
            _raise(res)

    def define_group(self, cfg: GroupConfig) -> int:
        """Define a group at run time (or give it a new roster): placed on a shard (a new group on
        the least loaded one, a known group where its data is), durably; returns the shard."""
        shard = self.map.place(cfg.group_id, cfg.members)
        self._call(shard, "define_group", _group_dict(cfg))
        return shard

    def unregister(self, meter_id: str) -> None:
        """A meter left or was revoked (see :meth:`ShardCore.unregister`)."""
        try:
            shard = self.map.shard_of_meter(meter_id)
        except PrivmeterError:
            return
        self._call(shard, "unregister", meter_id)
        self.map.forget_meter(meter_id)

    def restore(self) -> dict[str, int]:
        """Rebuild the group placement from the shards' schemas (a restarted coordinator: groups
        stay where their data is); refuses fewer shards than the cluster ran with.  Returns
        group -> shard."""
        _raise(self._control([(0, "cluster_size", (self.map.shards,))])[0])
        found = self._control([(i, "groups", ()) for i in range(self.map.shards)])
        for i, res in enumerate(found):
            for g, members in sorted(_raise(res).items()):
                self.map.place(g, members, shard=i)
        return dict(self.map.group_shard)

    def info(self) -> list[dict[str, Any]]:
        return [_raise(r) for r in self._control([(i, "info", ()) for i in range(self.map.shards)])]

    # -- messages ---------------------------------------------------------------------------------
    def forward(
        self, items: Sequence[tuple[str, bytes]], *, now: int, interval: int
    ) -> list[list[bytes] | PrivmeterError]:
        """Handle ``(authenticated peer, message bytes)`` items on their shards; per item its
        replies (codec bytes, ready for the meter's channel) or its error.  Routing needs only
        the peer (its meter's group): the message bytes go to the shard as they came, and the
        shard decodes them; the replies come back encoded and are not decoded here."""
        out: list[list[bytes] | PrivmeterError | None] = [None] * len(items)
        per: dict[int, list[int]] = {}
        for k, (peer, _msg) in enumerate(items):
            try:
                per.setdefault(self.map.shard_of_meter(peer), []).append(k)
            except PrivmeterError as exc:
                out[k] = exc
        calls: list[Call] = []
        owners: list[list[int]] = []
        for shard, ks in sorted(per.items()):
            for j in range(0, len(ks), MAX_SHARD_BATCH):
                part = ks[j : j + MAX_SHARD_BATCH]
                owners.append(part)
                calls.append((shard, "handle_batch", (now, interval, [items[k] for k in part])))
        for part, res in zip(owners, self.shards.call_many(calls), strict=True):
            if isinstance(res, BaseException):  # the shard died mid-call: nothing acknowledged
                err = res if isinstance(res, PrivmeterError) else StoreError(f"shard failed: {res}")
                for k in part:
                    out[k] = err
                continue
            outcomes, relay = res
            for k, (status, body) in zip(part, outcomes, strict=True):
                out[k] = list(body) if status == "ok" else error_from(status, str(body))
            self.relay.extend((to, decode(data)) for to, data in relay)
        return [o if o is not None else StoreError("not handled") for o in out]

    # -- aggregation, per group ----------------------------------------------------------------
    def new_epoch(self, group: str, first_interval: int) -> dict[str, list[Any]]:
        return self._decoded(self._group_call(group, "new_epoch", first_interval))

    def make_bundle(self, group: str) -> dict[str, list[Any]]:
        return self._decoded(self._group_call(group, "make_bundle"))

    def _by_shard(self, groups: Sequence[str]) -> dict[int, list[str]]:
        per: dict[int, list[str]] = {}
        for g in groups:
            per.setdefault(self.map.shard_of_group(g), []).append(g)
        return per

    def open_intervals(self, groups: Sequence[str]) -> dict[str, list[bytes]]:
        """Open the next interval of several groups (one call per shard, all concurrently); per
        meter its interval start, encoded (it goes to the meter as is)."""
        out: dict[str, list[bytes]] = {}
        for res in self._control(
            [(i, "open_many", (gs,)) for i, gs in sorted(self._by_shard(groups).items())]
        ):
            out.update(_raise(res))
        return out

    def close_intervals(
        self, groups: Sequence[str], *, now: int, interval: int
    ) -> dict[str, list[StoredTotal]]:
        """Close ``interval`` of several groups (one call and one commit per shard); per group
        the totals that became final."""
        per = sorted(self._by_shard(groups).items())
        out: dict[str, list[StoredTotal]] = {}
        for (_, gs), res in zip(
            per,
            self._control([(i, "close_many", (gs, now, interval)) for i, gs in per]),
            strict=True,
        ):
            for g, rows in zip(gs, _raise(res), strict=True):
                out[g] = [StoredTotal.from_row((g, *r)) for r in rows]
        return {g: out[g] for g in groups}

    def close_results(
        self, groups: Sequence[str], *, now: int, interval: int
    ) -> dict[str, list[AggregateResult]]:
        """As :meth:`close_intervals`, each total with the ids of who took part and who dropped."""
        per = sorted(self._by_shard(groups).items())
        out: dict[str, list[AggregateResult]] = {}
        for (_, gs), res in zip(
            per,
            self._control([(i, "close_results", (gs, now, interval)) for i, gs in per]),
            strict=True,
        ):
            for g, rows in zip(gs, _raise(res), strict=True):
                out[g] = [
                    AggregateResult(t, None if total is None else (total,), tuple(s), tuple(d), err)
                    for t, total, s, d, err in rows
                ]
        return {g: out[g] for g in groups}

    def needing_epoch(self, groups: Sequence[str]) -> list[str]:
        """The groups without a running epoch (new, or their shard restarted)."""
        res = self._control([(self.map.shard_of_group(g), "needs_epoch", (g,)) for g in groups])
        return [g for g, r in zip(groups, res, strict=True) if _raise(r)]

    # -- settlement and queries ------------------------------------------------------------------
    def statement(self, meter_id: str, period: int, *, now: int) -> Statement:
        st: Statement = decode(
            self._call(self.map.shard_of_meter(meter_id), "statement", meter_id, period, now),
            expect=Statement,
        )
        return st

    def statements(self, meters: Sequence[str], period: int, *, now: int) -> dict[str, Statement]:
        res = self._control(
            [(self.map.shard_of_meter(m), "statement", (m, period, now)) for m in meters]
        )
        return {m: decode(_raise(r), expect=Statement) for m, r in zip(meters, res, strict=True)}

    def settle_requests(
        self, meters: Sequence[str], period: int, *, now: int
    ) -> dict[str, SettleRequest | PrivmeterError]:
        """Per meter, its statement of ``period`` with its log, or why there is none yet (one
        call per shard, all concurrently)."""
        per: dict[int, list[str]] = {}
        for m in meters:
            per.setdefault(self.map.shard_of_meter(m), []).append(m)
        items = sorted(per.items())
        out: dict[str, SettleRequest | PrivmeterError] = {}
        for (_, ms), res in zip(
            items,
            self._control([(i, "settle_many", (ms, period, now)) for i, ms in items]),
            strict=True,
        ):
            for m, (status, body) in zip(ms, _raise(res), strict=True):
                out[m] = (
                    decode(body[0], expect=SettleRequest)
                    if status == "ok"
                    else error_from(status, str(body))
                )
        return out

    def records(self, meter_id: str, start: int, end: int) -> list[bytes]:
        return list(self._call(self.map.shard_of_meter(meter_id), "records", meter_id, start, end))

    def _everywhere(self, name: str) -> list[Any]:
        return [
            row
            for r in self._control([(i, name, ()) for i in range(self.map.shards)])
            for row in _raise(r)
        ]

    def totals(self) -> list[StoredTotal]:
        return sorted(
            (StoredTotal.from_row(r) for r in self._everywhere("totals")),
            key=lambda t: (t.group, t.interval),
        )

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        return sorted(self._everywhere("settlements"))

    def settled(self) -> list[tuple[str, int]]:
        """(meter, period) of every answered statement, from every shard (no answers shipped)."""
        return sorted((str(m), int(p)) for m, p in self._everywhere("settled"))

    def close(self) -> None:
        self.shards.close()


def start_cluster(
    *,
    dsn: str,
    headend_key: str,
    plans: Sequence[str],
    groups: Sequence[GroupConfig],
    shards: int,
    backend: str = "ray",
    address: str | None = None,
    interval_seconds: int = 900,
    min_key_bits: int = 2048,
    window_back: int | None = None,
    num_cpus: float = 1.0,
    placement: Sequence[str | None] | None = None,
) -> ClusterHeadEnd:
    """Start ``shards`` shards over ``groups`` (see the module docstring)."""
    smap = ShardMap({g.group_id: g.members for g in groups}, shards)
    by_id = {g.group_id: g for g in groups}
    specs = [
        ShardSpec(
            index=i,
            dsn=dsn,
            headend_key=headend_key,
            plans=tuple(plans),
            groups=tuple(_group_dict(by_id[g]) for g in smap.groups_of(i)),
            interval_seconds=interval_seconds,
            min_key_bits=min_key_bits,
            window_back=window_back,
        )
        for i in range(shards)
    ]
    backend_: Shards
    if backend == "local":
        backend_ = LocalShards([ShardCore(s.to_json()) for s in specs])
    elif backend == "ray":
        from privmeter.cluster.ray_backend import RayShards, connect_ray

        connect_ray(address)
        backend_ = RayShards(specs, num_cpus=num_cpus, placement=placement)
    else:
        raise InvalidArgument(f"backend must be 'ray' or 'local', got {backend!r}")
    return ClusterHeadEnd(backend_, smap)


def _group_dict(g: GroupConfig) -> dict[str, Any]:
    return dataclasses.asdict(g)
