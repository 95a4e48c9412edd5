"""The head-end billing store interface, and an in-memory implementation.

What it is for: :class:`~privmeter.protocol.billing.BillingLedger` is sans-IO;
everything it must remember goes through the small :class:`BillingStore`
interface below, so the same ledger runs in memory (tests, simulation) and on
SQLite (:mod:`privmeter.store.sqlite`, production).

What is stored:

* registrations (meter id -> Ed25519 verify key, household Paillier public
  key, plan id and digest, billing period layout);
* the append-only signed-reading log: every accepted record's canonical bytes
  with a global sequence number and a hash chain
  ``chain_i = SHA-256(chain_{i-1} || record_bytes_i)`` (``chain_0`` is
  :data:`GENESIS`), unique on (meter, interval, kind, event);
* one account per (meter, billing period): the record count and the
  accumulator *cells* (name -> residue mod n^2).  The ledger hands over only
  the cells a record changed, so a store can update them in place;
* issued statements and published price feeds.

Guarantee (the contract every store must keep): :meth:`BillingStore.commit_record`
appends the record and applies the account change atomically -- after a crash
either both are durable or neither is.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from privmeter.errors import StoreError

__all__ = [
    "GENESIS",
    "AccountCache",
    "BillingStore",
    "MemoryBillingStore",
    "Registration",
    "chain_step",
]

GENESIS = hashlib.sha256(b"privmeter.bill.log/1 genesis").digest()


def chain_step(prev: bytes, record: bytes) -> bytes:
    """One link of the log's hash chain: ``SHA-256(prev || record)``."""
    return hashlib.sha256(prev + record).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """What the head-end knows about one meter (and the household behind it)."""

    meter_id: str
    verify_key: bytes  # Ed25519, 32 raw bytes
    paillier_public_key: str  # JSON (privmeter.paillier.public-key/1)
    plan_id: str
    plan_digest: bytes
    period_start: int  # first interval of billing period 0
    period_intervals: int  # intervals per billing period


class BillingStore(Protocol):
    """Persistence for the billing ledger (see the module docstring)."""

    def get_meter(self, meter_id: str) -> Registration | None: ...

    def put_meter(self, reg: Registration) -> None: ...

    def find_record(
        self, meter_id: str, interval: int, kind: str, event_id: str
    ) -> bytes | None: ...

    def get_account(self, meter_id: str, period: int) -> tuple[int, dict[str, int]] | None: ...

    def commit_record(
        self,
        *,
        meter_id: str,
        interval: int,
        kind: str,
        event_id: str,
        record: bytes,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> tuple[int, bytes]: ...

    def commit_account(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> None: ...

    def open_accounts(self) -> list[tuple[str, int]]: ...

    def records(self, meter_id: str, start: int, end: int) -> list[bytes]: ...

    def iter_log(self) -> Iterable[tuple[int, bytes, bytes]]: ...

    def log_head(self) -> tuple[int, bytes]: ...

    def get_statement(self, meter_id: str, period: int) -> bytes | None: ...

    def put_statement(self, meter_id: str, period: int, statement: bytes) -> None: ...

    def put_feed(self, digest: bytes, feed_json: str) -> None: ...

    def feeds(self) -> list[str]: ...

    def close(self) -> None: ...


class MemoryBillingStore:
    """A :class:`BillingStore` in dictionaries (tests, fast simulation)."""

    def __init__(self) -> None:
        self._meters: dict[str, Registration] = {}
        self._log: list[tuple[int, bytes, bytes]] = []
        self._index: dict[tuple[str, int, str, str], bytes] = {}
        self._by_meter: dict[str, list[tuple[int, str, str, bytes]]] = {}
        self._accounts: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
        self._statements: dict[tuple[str, int], bytes] = {}
        self._feeds: dict[bytes, str] = {}
        self._head: bytes = GENESIS

    def get_meter(self, meter_id: str) -> Registration | None:
        return self._meters.get(meter_id)

    def put_meter(self, reg: Registration) -> None:
        self._meters[reg.meter_id] = reg

    def find_record(self, meter_id: str, interval: int, kind: str, event_id: str) -> bytes | None:
        return self._index.get((meter_id, interval, kind, event_id))

    def get_account(self, meter_id: str, period: int) -> tuple[int, dict[str, int]] | None:
        acc = self._accounts.get((meter_id, period))
        return None if acc is None else (acc[0], dict(acc[1]))

    def commit_record(
        self,
        *,
        meter_id: str,
        interval: int,
        kind: str,
        event_id: str,
        record: bytes,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> tuple[int, bytes]:
        key = (meter_id, interval, kind, event_id)
        if key in self._index:
            raise StoreError(f"record {key!r} already logged")
        self.commit_account(meter_id, period, count, changed, removed)
        self._head = chain_step(self._head, record)
        seq = len(self._log) + 1
        self._log.append((seq, record, self._head))
        self._index[key] = record
        bisect.insort(self._by_meter.setdefault(meter_id, []), (interval, kind, event_id, record))
        return seq, self._head

    def commit_account(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> None:
        _, cells = self._accounts.get((meter_id, period), (0, {}))
        cells = dict(cells)
        for name in removed:
            cells.pop(name, None)
        cells.update(changed)
        self._accounts[(meter_id, period)] = (count, cells)

    def open_accounts(self) -> list[tuple[str, int]]:
        return sorted(k for k in self._accounts if k not in self._statements)

    def records(self, meter_id: str, start: int, end: int) -> list[bytes]:
        rows = self._by_meter.get(meter_id, [])
        return [r[3] for r in rows if start <= r[0] < end]

    def iter_log(self) -> Iterable[tuple[int, bytes, bytes]]:
        return list(self._log)

    def log_head(self) -> tuple[int, bytes]:
        return len(self._log), self._head

    def get_statement(self, meter_id: str, period: int) -> bytes | None:
        return self._statements.get((meter_id, period))

    def put_statement(self, meter_id: str, period: int, statement: bytes) -> None:
        self._statements[(meter_id, period)] = statement

    def put_feed(self, digest: bytes, feed_json: str) -> None:
        self._feeds[digest] = feed_json

    def feeds(self) -> list[str]:
        return list(self._feeds.values())

    def close(self) -> None:
        pass


class AccountCache:
    """The accounts a durable store read or wrote last, least recently used evicted.

    ``limit`` accounts at most (0: caches nothing).  Each entry is
    (record count, cells); :meth:`get` hands out a copy of the cells, so a caller
    never edits the cache.  A store mirrors each committed change with
    :meth:`apply` and calls :meth:`clear` after any rollback (then re-reads on demand).
    """

    __slots__ = ("_rows", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._rows: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}

    def get(self, meter_id: str, period: int) -> tuple[int, dict[str, int]] | None:
        """The cached account (now the most recently used), or None."""
        hit = self._rows.pop((meter_id, period), None)
        if hit is None:
            return None
        self._rows[(meter_id, period)] = hit
        return hit[0], dict(hit[1])

    def put(self, meter_id: str, period: int, count: int, cells: Mapping[str, int]) -> None:
        """Remember an account as read from or written to the store."""
        if self.limit <= 0:
            return
        self._rows.pop((meter_id, period), None)
        self._rows[(meter_id, period)] = (count, dict(cells))
        while len(self._rows) > self.limit:
            del self._rows[next(iter(self._rows))]

    def apply(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> None:
        """Mirror a committed account change, if the account is cached (else it is read on next use)."""
        hit = self._rows.get((meter_id, period))
        if hit is None:
            return
        cells = dict(hit[1])
        for name in removed:
            cells.pop(name, None)
        cells.update(changed)
        self.put(meter_id, period, count, cells)

    def meters(self) -> set[str]:
        """The meters with at least one cached account."""
        return {m for (m, _p) in self._rows}

    def clear(self) -> None:
        self._rows.clear()
