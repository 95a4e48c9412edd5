"""The head-end's persistent state: the billing store plus totals, events and settlements.

What it is for: :class:`HeadEndStore` is the one SQLite (WAL) file a
head-end keeps.  It *is* a :class:`~privmeter.store.sqlite.SqliteBillingStore`
(registrations, the signed-reading log, the encrypted bill accumulators,
statements, price feeds) extended with the head-end's own tables:

* ``he_totals``   group, interval -> private total (Wh), survivors, dropped;
* ``he_events``   demand-management events (JSON summary: threshold side,
  action, window, targets count; a deployed head-end adds its threshold, each
  meter's comparison bit, the compared reading's interval and the meters
  directed -- never a reading);
* ``he_settlements`` meter, period -> the household's answer to its
  statement (proof or dispute, codec bytes) and the proven bill;
* ``he_meta``     key -> value (schema version of these tables, run info).

Durability: every accepted record is committed before its receipt leaves the
head-end.  :meth:`HeadEndStore.batch` groups many records into one
transaction (*group commit*): each record runs in its own ``SAVEPOINT`` (a
failure rolls back only that record), and the receipts of a batch are
released only after the batch's ``COMMIT`` returns, so a SIGKILL at any
moment loses nothing that was acknowledged.  ``synchronous=FULL`` (inherited)
makes a commit durable across power loss too.

:class:`MemoryHeadEndStore` is the same interface in dictionaries (tests and
the fast in-memory simulation).  :class:`HeadEndStorage` is that interface as
a typing Protocol -- what a :class:`~privmeter.parties.headend.HeadEndCore`
and a cluster shard (:class:`~privmeter.cluster.shard.ShardCore`) call on
their store; these two and the PostgreSQL store of a shard
(:class:`~privmeter.cluster.pgstore.PostgresHeadEndStore`) satisfy it, which
mypy checks where each is handed to a core.

Security assumption: the file is the head-end's own (an attacker who can
write it can also rewrite the head-end).  Guarantee: the log is append-only
and hash-chained (see :mod:`privmeter.store.sqlite`); totals and settlements
are written once per key (a second write with another value raises
:class:`~privmeter.errors.StoreError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from privmeter.errors import StoreError
from privmeter.store.billing_store import BillingStore, MemoryBillingStore
from privmeter.store.sqlite import SqliteBillingStore

__all__ = [
    "HEADEND_SCHEMA_VERSION",
    "HeadEndStorage",
    "HeadEndStore",
    "MemoryHeadEndStore",
    "StoredTotal",
]

HEADEND_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS he_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS he_totals (
    grp TEXT NOT NULL, interval INTEGER NOT NULL, total INTEGER,
    survivors INTEGER NOT NULL, dropped INTEGER NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (grp, interval));
CREATE TABLE IF NOT EXISTS he_events (
    event_id TEXT PRIMARY KEY, grp TEXT NOT NULL, interval INTEGER NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS he_settlements (
    meter_id TEXT NOT NULL, period INTEGER NOT NULL, kind TEXT NOT NULL,
    answer BLOB NOT NULL, bill INTEGER, PRIMARY KEY (meter_id, period));
"""


@dataclass(frozen=True, slots=True)
class StoredTotal:
    """One group total as persisted (``total`` None: the interval could not be unmasked)."""

    group: str
    interval: int
    total: int | None
    survivors: int
    dropped: int
    error: str = ""

    @classmethod
    def from_row(cls, r: tuple[Any, ...]) -> StoredTotal:
        """From a ``he_totals`` row ``(grp, interval, total, survivors, dropped, error)``."""
        return cls(r[0], int(r[1]), None if r[2] is None else int(r[2]), int(r[3]), int(r[4]), r[5])


class HeadEndStorage(BillingStore, Protocol):
    """A head-end's store: the billing store (registrations, the signed-reading log, the
    encrypted accumulators, statements, feeds) plus the head-end's tables (see the module
    docstring); ``batch`` groups what runs inside it into one commit."""

    def put_total(self, t: StoredTotal) -> None: ...

    def totals(self, group: str | None = None) -> list[StoredTotal]: ...

    def put_event(self, event_id: str, group: str, interval: int, info: dict[str, Any]) -> None: ...

    def events(self) -> list[dict[str, Any]]: ...

    def put_settlement(
        self, meter_id: str, period: int, kind: str, answer: bytes, bill: int | None
    ) -> None: ...

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]: ...

    def meta_get(self, key: str) -> str | None: ...

    def meta_set(self, key: str, value: str) -> None: ...

    def batch(self) -> contextlib.AbstractContextManager[None]: ...


class _Common:
    """The head-end tables' interface (both implementations)."""

    def put_total(self, t: StoredTotal) -> None:
        raise NotImplementedError

    def totals(self, group: str | None = None) -> list[StoredTotal]:
        raise NotImplementedError

    def put_event(self, event_id: str, group: str, interval: int, info: dict[str, Any]) -> None:
        raise NotImplementedError

    def events(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def put_settlement(
        self, meter_id: str, period: int, kind: str, answer: bytes, bill: int | None
    ) -> None:
        raise NotImplementedError

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        raise NotImplementedError

    def meta_get(self, key: str) -> str | None:
        raise NotImplementedError

    def meta_set(self, key: str, value: str) -> None:
        raise NotImplementedError

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class MemoryHeadEndStore(MemoryBillingStore, _Common):
    """Everything in dictionaries (tests, in-memory simulation)."""

    def __init__(self) -> None:
        super().__init__()
        self._totals: dict[tuple[str, int], StoredTotal] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self._settlements: dict[tuple[str, int], tuple[str, int, str, bytes, int | None]] = {}
        self._meta: dict[str, str] = {}

    def meta_get(self, key: str) -> str | None:
        return self._meta.get(key)

    def meta_set(self, key: str, value: str) -> None:
        self._meta[key] = value

    def put_total(self, t: StoredTotal) -> None:
        old = self._totals.get((t.group, t.interval))
        if old is not None and old != t:
            raise StoreError(f"total of {t.group}/{t.interval} already stored with another value")
        self._totals[(t.group, t.interval)] = t

    def totals(self, group: str | None = None) -> list[StoredTotal]:
        return [v for k, v in sorted(self._totals.items()) if group is None or k[0] == group]

    def put_event(self, event_id: str, group: str, interval: int, info: dict[str, Any]) -> None:
        self._events[event_id] = dict(info, event_id=event_id, group=group, interval=interval)

    def events(self) -> list[dict[str, Any]]:
        return sorted(self._events.values(), key=lambda e: (e["interval"], e["event_id"]))

    def put_settlement(
        self, meter_id: str, period: int, kind: str, answer: bytes, bill: int | None
    ) -> None:
        self._settlements[(meter_id, period)] = (meter_id, period, kind, answer, bill)

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        return [v for _, v in sorted(self._settlements.items())]


class HeadEndStore(SqliteBillingStore, _Common):
    """The billing store's SQLite file, extended with the head-end tables (see module doc)."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, cache_accounts: int = 50_000
    ) -> None:
        super().__init__(path, readonly=readonly, cache_accounts=cache_accounts)
        self._batch_depth = 0
        if readonly:
            return
        try:
            self._db.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
            row = self._db.execute("SELECT value FROM he_meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO he_meta VALUES ('schema', ?)", (str(HEADEND_SCHEMA_VERSION),)
                )
            elif row[0] != str(HEADEND_SCHEMA_VERSION):
                raise StoreError(
                    f"head-end tables have schema {row[0]}, expected {HEADEND_SCHEMA_VERSION}"
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot set up head-end tables in {self.path!r}: {exc}") from None

    # -- group commit ----------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around many records; each record still atomic (SAVEPOINT)."""
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a batch: {exc}") from None
        self._batch_depth = 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._batch_depth = 0
            if not ok:
                self._drop_caches()
            try:
                self._db.execute("COMMIT" if ok else "ROLLBACK")
            except sqlite3.Error as exc:
                self._drop_caches()
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"batch commit failed: {exc}") from None

    def _tx(self) -> Any:  # the parent's per-record transaction, nested as a savepoint in a batch
        if self._batch_depth:
            # one constant name: SQLite resolves it to the innermost savepoint, and the
            # statement cache keeps the three statements compiled (a fresh name per record
            # recompiled them every time)
            return _Savepoint(self._db, self._drop_caches)
        return super()._tx()

    # -- head-end tables -----------------------------------------------------------------
    def meta_get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM he_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO he_meta VALUES (?, ?)", (key, value))

    def put_total(self, t: StoredTotal) -> None:
        with self._tx():
            row = self._db.execute(
                "SELECT grp, interval, total, survivors, dropped, error FROM he_totals WHERE grp = ? AND "
                "interval = ?",
                (t.group, t.interval),
            ).fetchone()
            if row is not None:
                if StoredTotal.from_row(row) != t:
                    raise StoreError(
                        f"total of {t.group}/{t.interval} already stored with another value"
                    )
                return
            self._db.execute(
                "INSERT INTO he_totals VALUES (?, ?, ?, ?, ?, ?)",
                (t.group, t.interval, t.total, t.survivors, t.dropped, t.error),
            )

    def totals(self, group: str | None = None) -> list[StoredTotal]:
        q = "SELECT grp, interval, total, survivors, dropped, error FROM he_totals"
        args: tuple[Any, ...] = ()
        if group is not None:
            q += " WHERE grp = ?"
            args = (group,)
        return [
            StoredTotal.from_row(r) for r in self._db.execute(q + " ORDER BY grp, interval", args)
        ]

    def put_event(self, event_id: str, group: str, interval: int, info: dict[str, Any]) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO he_events VALUES (?, ?, ?, ?)",
                (event_id, group, interval, json.dumps(info, sort_keys=True)),
            )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for eid, grp, iv, info in self._db.execute(
            "SELECT event_id, grp, interval, info FROM he_events ORDER BY interval, event_id"
        ):
            d = json.loads(info)
            d.update(event_id=eid, group=grp, interval=int(iv))
            out.append(d)
        return out

    def put_settlement(
        self, meter_id: str, period: int, kind: str, answer: bytes, bill: int | None
    ) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO he_settlements VALUES (?, ?, ?, ?, ?)",
                (meter_id, period, kind, answer, bill),
            )

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        return [
            (r[0], int(r[1]), r[2], bytes(r[3]), None if r[4] is None else int(r[4]))
            for r in self._db.execute(
                "SELECT meter_id, period, kind, answer, bill FROM he_settlements ORDER BY meter_id, period"
            )
        ]


class _Savepoint:
    """``SAVEPOINT`` ... ``RELEASE`` (``ROLLBACK TO`` on any exception) inside a batch."""

    __slots__ = ("_db", "_on_rollback")

    def __init__(self, db: sqlite3.Connection, on_rollback: Callable[[], None]) -> None:
        self._db, self._on_rollback = db, on_rollback

    def __enter__(self) -> None:
        try:
            self._db.execute("SAVEPOINT rec")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open a savepoint: {exc}") from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                self._on_rollback()
                self._db.execute("ROLLBACK TO rec")
            self._db.execute("RELEASE rec")
        except sqlite3.Error as err:
            raise StoreError(f"savepoint failed: {err}") from None
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"store transaction failed: {exc}") from exc
