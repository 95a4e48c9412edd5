"""SQLite (WAL) persistence for the head-end billing ledger.

What it is for: :class:`SqliteBillingStore` implements
:class:`~privmeter.store.billing_store.BillingStore` on one SQLite file, so a
head-end that crashes or is killed restarts with every acknowledged record in
its log and every household's accumulator exactly as it was.

Durability choices:

* ``journal_mode=WAL``: readers (the query API, an auditor exporting the log)
  never block the writer;
* ``synchronous=FULL``: in WAL mode every commit fsyncs the WAL, so a record
  whose receipt was sent survives a power cut, not only a process crash
  (``NORMAL`` would risk losing the last commits on power loss -- unacceptable
  once the meter holds a signed receipt);
* each accepted record is **one** ``BEGIN IMMEDIATE`` transaction covering the
  log append and the account cells it changed, so log and accumulators can
  never disagree (a head-end groups many of them into one commit, see
  :mod:`privmeter.parties.headend_store`);
* write-through caches: the log head, the accounts (count + cells, at most
  ``cache_accounts`` of them, least recently used evicted) and the set of
  settled periods are kept in memory and updated only after their
  transaction succeeded; any rollback drops the caches (the file is the
  truth).  The store must be the file's only writer (readers are fine);
* the log is append-only: triggers abort any ``UPDATE`` or ``DELETE`` on it;
  each row carries ``chain = SHA-256(previous chain || record bytes)``.

Schema version: ``PRAGMA user_version`` = :data:`SCHEMA_VERSION`; a file with
another version is refused (:class:`~privmeter.errors.StoreError`) rather than
guessed at.  Tables: ``meters``, ``log``, ``accounts``, ``cells``,
``statements``, ``feeds`` (see ``docs/billing.md``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping

from privmeter.errors import StoreError
from privmeter.store.billing_store import GENESIS, AccountCache, Registration, chain_step

__all__ = ["SCHEMA_VERSION", "SqliteBillingStore", "read_log"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meters (
    meter_id TEXT PRIMARY KEY,
    verify_key BLOB NOT NULL,
    paillier_public_key TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    plan_digest BLOB NOT NULL,
    period_start INTEGER NOT NULL,
    period_intervals INTEGER NOT NULL
);
CREATE TABLE log (
    seq INTEGER PRIMARY KEY,
    meter_id TEXT NOT NULL,
    interval INTEGER NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT NOT NULL,
    record BLOB NOT NULL,
    chain BLOB NOT NULL,
    UNIQUE (meter_id, interval, kind, event_id)
);
CREATE TRIGGER log_append_only_u BEFORE UPDATE ON log BEGIN SELECT RAISE(ABORT, 'log is append-only'); END;
CREATE TRIGGER log_append_only_d BEFORE DELETE ON log BEGIN SELECT RAISE(ABORT, 'log is append-only'); END;
CREATE TABLE accounts (
    meter_id TEXT NOT NULL,
    period INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (meter_id, period)
);
CREATE TABLE cells (
    meter_id TEXT NOT NULL,
    period INTEGER NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (meter_id, period, name)
);
CREATE TABLE statements (
    meter_id TEXT NOT NULL,
    period INTEGER NOT NULL,
    statement BLOB NOT NULL,
    PRIMARY KEY (meter_id, period)
);
CREATE TABLE feeds (
    digest BLOB PRIMARY KEY,
    feed TEXT NOT NULL
);
"""


def _b(v: int) -> bytes:
    return int(v).to_bytes((int(v).bit_length() + 7) // 8 or 1, "big")


def _i(b: bytes) -> int:
    return int.from_bytes(b, "big")


class SqliteBillingStore:
    """A :class:`~privmeter.store.billing_store.BillingStore` on one SQLite file (WAL)."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, cache_accounts: int = 50_000
    ) -> None:
        self.path = os.fspath(path)
        self._caching = not readonly  # a reader sees another process's writes: it caches nothing
        self._accounts = AccountCache(cache_accounts if self._caching else 0)
        self._head_cache: tuple[int, bytes] | None = None
        self._settled: set[tuple[str, int]] | None = None  # None: not loaded (or dropped)
        try:
            if readonly:
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, isolation_level=None
                )
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and not readonly:
                if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    self._db.close()
                    raise StoreError(f"{self.path!r} is not a privmeter billing store")
                self._db.executescript(
                    f"BEGIN;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
                )
                version = SCHEMA_VERSION
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open billing store {self.path!r}: {exc}") from None
        if version != SCHEMA_VERSION:
            self._db.close()
            raise StoreError(
                f"billing store {self.path!r} has schema {version}, expected {SCHEMA_VERSION}"
            )

    # -- registrations -----------------------------------------------------------

    def get_meter(self, meter_id: str) -> Registration | None:
        row = self._db.execute(
            "SELECT meter_id, verify_key, paillier_public_key, plan_id, plan_digest, period_start, "
            "period_intervals FROM meters WHERE meter_id = ?",
            (meter_id,),
        ).fetchone()
        if row is None:
            return None
        return Registration(
            meter_id=row[0],
            verify_key=bytes(row[1]),
            paillier_public_key=row[2],
            plan_id=row[3],
            plan_digest=bytes(row[4]),
            period_start=row[5],
            period_intervals=row[6],
        )

    def put_meter(self, reg: Registration) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO meters VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    reg.meter_id,
                    reg.verify_key,
                    reg.paillier_public_key,
                    reg.plan_id,
                    reg.plan_digest,
                    reg.period_start,
                    reg.period_intervals,
                ),
            )

    # -- log and accounts -----------------------------------------------------------

    def find_record(self, meter_id: str, interval: int, kind: str, event_id: str) -> bytes | None:
        row = self._db.execute(
            "SELECT record FROM log WHERE meter_id = ? AND interval = ? AND kind = ? AND event_id = ?",
            (meter_id, interval, kind, event_id),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def get_account(self, meter_id: str, period: int) -> tuple[int, dict[str, int]] | None:
        hit = self._accounts.get(meter_id, period)
        if hit is not None:
            return hit
        row = self._db.execute(
            "SELECT count FROM accounts WHERE meter_id = ? AND period = ?", (meter_id, period)
        ).fetchone()
        if row is None:
            return None
        cells = {
            name: _i(value)
            for name, value in self._db.execute(
                "SELECT name, value FROM cells WHERE meter_id = ? AND period = ?",
                (meter_id, period),
            )
        }
        self._accounts.put(meter_id, period, int(row[0]), cells)
        return int(row[0]), dict(cells)

    def _drop_caches(self) -> None:
        """After any rollback: forget everything cached (re-read from the file on demand)."""
        self._accounts.clear()
        self._head_cache = None
        self._settled = None

    def _apply(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: tuple[str, ...],
    ) -> None:
        self._db.execute(
            "INSERT INTO accounts VALUES (?, ?, ?) ON CONFLICT (meter_id, period) DO UPDATE SET count = ?",
            (meter_id, period, count, count),
        )
        if removed:
            self._db.executemany(
                "DELETE FROM cells WHERE meter_id = ? AND period = ? AND name = ?",
                [(meter_id, period, name) for name in removed],
            )
        if len(changed) == 1:
            ((name, v),) = changed.items()
            self._db.execute(
                "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?)", (meter_id, period, name, _b(v))
            )
        elif changed:
            self._db.executemany(
                "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?)",
                [(meter_id, period, name, _b(v)) for name, v in changed.items()],
            )

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
        gone = tuple(removed)
        with self._tx():
            seq, head = self._head()
            chain = chain_step(head, record)
            self._db.execute(
                "INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq + 1, meter_id, interval, kind, event_id, record, chain),
            )
            self._apply(meter_id, period, count, changed, gone)
        if self._caching:
            self._head_cache = (seq + 1, chain)  # only after the record's transaction succeeded
        self._accounts.apply(meter_id, period, count, changed, gone)
        return seq + 1, chain

    def commit_account(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> None:
        gone = tuple(removed)
        with self._tx():
            self._apply(meter_id, period, count, changed, gone)
        self._accounts.apply(meter_id, period, count, changed, gone)

    def open_accounts(self) -> list[tuple[str, int]]:
        rows = self._db.execute(
            "SELECT a.meter_id, a.period FROM accounts a LEFT JOIN statements s "
            "ON a.meter_id = s.meter_id AND a.period = s.period WHERE s.statement IS NULL "
            "ORDER BY a.meter_id, a.period"
        )
        return [(r[0], int(r[1])) for r in rows]

    def records(self, meter_id: str, start: int, end: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT record FROM log WHERE meter_id = ? AND interval >= ? AND interval < ? "
            "ORDER BY interval, kind, event_id",
            (meter_id, start, end),
        )
        return [bytes(r[0]) for r in rows]

    def iter_log(self) -> Iterator[tuple[int, bytes, bytes]]:
        for seq, rec, chain in self._db.execute("SELECT seq, record, chain FROM log ORDER BY seq"):
            yield int(seq), bytes(rec), bytes(chain)

    def _head(self) -> tuple[int, bytes]:
        if self._head_cache is not None:
            return self._head_cache
        row = self._db.execute("SELECT seq, chain FROM log ORDER BY seq DESC LIMIT 1").fetchone()
        head = (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))
        if (
            self._caching and not self._db.in_transaction
        ):  # inside a transaction it may still roll back
            self._head_cache = head
        return head

    def log_head(self) -> tuple[int, bytes]:
        return self._head()

    # -- statements and feeds ----------------------------------------------------------

    def get_statement(self, meter_id: str, period: int) -> bytes | None:
        if self._settled is None and self._caching:
            self._settled = {
                (r[0], int(r[1]))
                for r in self._db.execute("SELECT meter_id, period FROM statements")
            }
        if (
            self._settled is not None and (meter_id, period) not in self._settled
        ):  # a negative cache: a miss is certain, a hit is re-read
            return None
        row = self._db.execute(
            "SELECT statement FROM statements WHERE meter_id = ? AND period = ?", (meter_id, period)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put_statement(self, meter_id: str, period: int, statement: bytes) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO statements VALUES (?, ?, ?)", (meter_id, period, statement)
            )
            if self._settled is not None:
                self._settled.add((meter_id, period))  # before COMMIT: a stale hit is only re-read

    def put_feed(self, digest: bytes, feed_json: str) -> None:
        with self._tx():
            self._db.execute("INSERT OR IGNORE INTO feeds VALUES (?, ?)", (digest, feed_json))

    def feeds(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT feed FROM feeds ORDER BY rowid")]

    def close(self) -> None:
        self._db.close()

    # -- plumbing ---------------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._drop_caches)


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception; then ``on_rollback()``)."""

    __slots__ = ("_db", "_on_rollback")

    def __init__(self, db: sqlite3.Connection, on_rollback: Callable[[], None]) -> None:
        self._db = db
        self._on_rollback = on_rollback

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a transaction: {exc}") from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._on_rollback()
                self._db.execute("ROLLBACK")
                raise StoreError(f"commit failed: {err}") from None
        else:
            self._on_rollback()
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"store transaction failed: {exc}") from exc


def read_log(path: str | os.PathLike[str]) -> list[tuple[int, bytes, bytes]]:
    """Every log row ``(seq, record bytes, chain)`` of a billing store file, read-only."""
    store = SqliteBillingStore(path, readonly=True)
    try:
        return list(store.iter_log())
    finally:
        store.close()
