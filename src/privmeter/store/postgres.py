"""PostgreSQL persistence for the billing ledger of a sharded head-end.

What it is for: :class:`PostgresBillingStore` implements
:class:`~privmeter.store.billing_store.BillingStore` on a PostgreSQL database
(psycopg 3), with the same contract as the SQLite store
(:mod:`privmeter.store.sqlite`): :meth:`~PostgresBillingStore.commit_record`
appends a record and applies its account change atomically.  It is the store
of one head-end *shard* (:mod:`privmeter.cluster`): many shards share one
database, each in its own PostgreSQL schema (``shard_0``, ``shard_1``, ...),
so each shard has its own signed-reading log with its own hash chain, and
shards never contend for a row or a lock.

Durability choices:

* every transaction commits with PostgreSQL's default ``synchronous_commit =
  on``: when ``COMMIT`` returns, the WAL is on disk;
* :meth:`~PostgresBillingStore.batch` is *group commit*: inside a batch the
  records are checked and accumulated one by one as usual, but their log rows
  and account cells are buffered and written at the end of the batch in a few
  bulk statements (``COPY`` for the log) inside **one** transaction; the
  caller releases the batch's receipts only after :meth:`batch` returned.
  If the flush or the ``COMMIT`` fails, nothing of the batch is durable and
  nothing of it may be acknowledged (the in-memory overlays are dropped);
* a record fails its checks before :meth:`commit_record` is called, so a
  rejected record never reaches the buffer; the other writes inside a batch
  (totals, statements...) run at once in a ``SAVEPOINT`` of the batch's
  transaction;
* single writer per schema: the store takes a session-level advisory lock
  named after its schema when it opens (waiting up to ``lock_wait`` seconds),
  so a restarted shard cannot write while a stale copy of itself still holds
  a connection; the lock goes with the connection;
* write-through caches as in the SQLite store: log head, accounts (LRU of
  ``cache_accounts``), the set of settled periods; any failed transaction
  drops them (the database is the truth).  :meth:`prefetch` reads in one
  query what a batch of records will look up (duplicate slots, accounts).

Schema version: table ``store_meta`` holds ``billing_schema`` =
:data:`SCHEMA_VERSION`; another version is refused
(:class:`~privmeter.errors.StoreError`).  Tables are SQLite's (see
``docs/billing.md``) with PostgreSQL types; the log is append-only (a trigger
rejects ``UPDATE`` and ``DELETE``) and hash-chained per schema.

Security assumption: the database is the head-end's own (its operators can
rewrite it, as they can rewrite the head-end); connections use whatever the
DSN says (a Unix socket or TLS).  Guarantee: as the SQLite store's.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from privmeter.errors import StoreError
from privmeter.store.billing_store import GENESIS, AccountCache, Registration, chain_step

__all__ = ["SCHEMA_VERSION", "PostgresBillingStore", "connect"]

SCHEMA_VERSION = 1
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY, verify_key BYTEA NOT NULL, paillier_public_key TEXT NOT NULL,
    plan_id TEXT NOT NULL, plan_digest BYTEA NOT NULL, period_start BIGINT NOT NULL,
    period_intervals BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    seq BIGINT PRIMARY KEY, meter_id TEXT NOT NULL, interval BIGINT NOT NULL, kind TEXT NOT NULL,
    event_id TEXT NOT NULL, record BYTEA NOT NULL, chain BYTEA NOT NULL,
    UNIQUE (meter_id, interval, kind, event_id));
CREATE OR REPLACE FUNCTION log_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'log is append-only'; END $$;
DROP TRIGGER IF EXISTS log_append_only ON log;
CREATE TRIGGER log_append_only BEFORE UPDATE OR DELETE ON log
    FOR EACH ROW EXECUTE FUNCTION log_append_only();
CREATE TABLE IF NOT EXISTS accounts (
    meter_id TEXT NOT NULL, period BIGINT NOT NULL, count BIGINT NOT NULL,
    PRIMARY KEY (meter_id, period));
CREATE TABLE IF NOT EXISTS cells (
    meter_id TEXT NOT NULL, period BIGINT NOT NULL, name TEXT NOT NULL, value BYTEA NOT NULL,
    PRIMARY KEY (meter_id, period, name));
CREATE TABLE IF NOT EXISTS statements (
    meter_id TEXT NOT NULL, period BIGINT NOT NULL, statement BYTEA NOT NULL,
    PRIMARY KEY (meter_id, period));
CREATE TABLE IF NOT EXISTS feeds (ord BIGSERIAL PRIMARY KEY, digest BYTEA UNIQUE NOT NULL, feed TEXT NOT NULL);
"""

Slot = tuple[str, int, str, str]


def _b(v: int) -> bytes:
    return int(v).to_bytes((int(v).bit_length() + 7) // 8 or 1, "big")


def _i(b: bytes) -> int:
    return int.from_bytes(b, "big")


def connect(dsn: str) -> Any:
    """An autocommit psycopg connection (explicit transactions only); StoreError if unreachable."""
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}".strip()) from None


class PostgresBillingStore:
    """A :class:`~privmeter.store.billing_store.BillingStore` in one PostgreSQL schema."""

    extra_schema = ""  # subclasses add their tables (created in the same transaction)

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "headend",
        cache_accounts: int = 50_000,
        lock_wait: float = 30.0,
    ) -> None:
        import psycopg
        from psycopg import sql

        if not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"schema name must match {_SCHEMA_NAME.pattern}, got {schema!r}")
        self._error: type[Exception] = psycopg.Error
        self.schema = schema
        self._accounts = AccountCache(cache_accounts)
        self._head_cache: tuple[int, bytes] | None = None
        self._settled: set[tuple[str, int]] | None = None
        # group commit state (see batch())
        self._batch_depth = 0
        self._pend_log: list[tuple[int, str, int, str, str, bytes, bytes]] = []
        self._pend_slots: dict[Slot, bytes] = {}
        # (meter, period) -> (count, all cells, cells to write, cells to delete)
        self._pend_acc: dict[tuple[str, int], tuple[int, dict[str, int], set[str], set[str]]] = {}
        self._pend_head: tuple[int, bytes] | None = None
        self._known: dict[Slot, bytes | None] = {}  # prefetched slots (None: certainly absent)
        self._pre_meters: set[str] = set()  # meters whose accounts were all prefetched ...
        self._pre_acc: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}  # ... into here
        self._conn = connect(dsn)
        try:
            self.backend_pid = int(self._conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            self._lock(schema, lock_wait)
            ident = sql.Identifier(schema)
            with self._conn.transaction():
                self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
                self._conn.execute(sql.SQL("SET search_path TO {}").format(ident))
                self._conn.execute(_SCHEMA + self.extra_schema)
                row = self._conn.execute(
                    "SELECT value FROM store_meta WHERE key = 'billing_schema'"
                ).fetchone()
                if row is None:
                    self._conn.execute(
                        "INSERT INTO store_meta VALUES ('billing_schema', %s)",
                        (str(SCHEMA_VERSION),),
                    )
                elif row[0] != str(SCHEMA_VERSION):
                    raise StoreError(
                        f"billing store {schema!r} has schema {row[0]}, expected {SCHEMA_VERSION}"
                    )
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open billing store {schema!r}: {exc}") from None
        except StoreError:
            self._conn.close()
            raise

    def _lock(self, schema: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            got = self._conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", ("privmeter:" + schema,)
            ).fetchone()[0]
            if got:
                return
            if time.monotonic() >= deadline:
                raise StoreError(f"another writer holds billing store {schema!r}")
            time.sleep(0.2)

    # -- plumbing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction (a SAVEPOINT inside a batch); caches dropped on failure."""
        try:
            with self._conn.transaction():
                yield
        except self._error as exc:
            self._drop_caches()
            raise StoreError(f"store transaction failed: {exc}") from None
        except BaseException:
            self._drop_caches()
            raise

    def _drop_caches(self) -> None:
        self._accounts.clear()
        self._head_cache = None
        self._settled = None

    def _q(self, query: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = self._conn.execute(query, args).fetchall()
        except self._error as exc:
            raise StoreError(f"store query failed: {exc}") from None
        return rows

    # -- group commit -------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around many records; their rows are written at the end (see module doc)."""
        if self._batch_depth:
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
            return
        self._batch_depth = 1
        try:
            with self._conn.transaction():
                yield
                self._flush()
        except BaseException as exc:
            self._reset_batch()
            self._drop_caches()
            if isinstance(exc, self._error):
                raise StoreError(f"batch commit failed: {exc}") from None
            raise
        finally:
            self._batch_depth = 0
        if self._pend_head is not None:
            self._head_cache = self._pend_head
        for (m, p), (count, cells, _dirty, _gone) in self._pend_acc.items():
            self._accounts.put(m, p, count, cells)
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._pend_log = []
        self._pend_slots = {}
        self._pend_acc = {}
        self._pend_head = None
        self._known = {}
        self._pre_meters = set()
        self._pre_acc = {}

    def _flush(self) -> None:
        cur = self._conn.cursor()
        if self._pend_log:
            with cur.copy(
                "COPY log (seq, meter_id, interval, kind, event_id, record, chain) FROM STDIN"
            ) as cp:
                for row in self._pend_log:
                    cp.write_row(row)
        if self._pend_acc:
            cur.executemany(
                "INSERT INTO accounts VALUES (%s, %s, %s) ON CONFLICT (meter_id, period) "
                "DO UPDATE SET count = EXCLUDED.count",
                [(m, p, c) for (m, p), (c, _cells, _dirty, _gone) in self._pend_acc.items()],
            )
            gone = [
                (m, p, n) for (m, p), (_c, _cells, _dirty, g) in self._pend_acc.items() for n in g
            ]
            if gone:
                cur.executemany(
                    "DELETE FROM cells WHERE meter_id = %s AND period = %s AND name = %s", gone
                )
            rows = [
                (m, p, n, _b(cells[n]))
                for (m, p), (_c, cells, dirty, _g) in self._pend_acc.items()
                for n in dirty
            ]
            if rows:
                cur.executemany(
                    "INSERT INTO cells VALUES (%s, %s, %s, %s) ON CONFLICT (meter_id, period, name) "
                    "DO UPDATE SET value = EXCLUDED.value",
                    rows,
                )

    def prefetch(self, slots: Iterable[Slot]) -> None:
        """Inside a batch: read once which of ``slots`` are logged, and their meters' open accounts."""
        want = [s for s in set(slots) if s not in self._known and s not in self._pend_slots]
        if not want or not self._batch_depth:
            return
        cols = list(zip(*want, strict=True))
        rows = self._q(
            "SELECT l.meter_id, l.interval, l.kind, l.event_id, l.record FROM log l JOIN "
            "unnest(%s::text[], %s::bigint[], %s::text[], %s::text[]) AS w(m, i, k, e) "
            "ON l.meter_id = w.m AND l.interval = w.i AND l.kind = w.k AND l.event_id = w.e",
            [list(c) for c in cols],
        )
        for s in want:
            self._known[s] = None
        for m, i, k, e, rec in rows:
            self._known[(m, int(i), k, e)] = bytes(rec)
        cached = self._accounts.meters()
        meters = sorted({s[0] for s in want} - cached - self._pre_meters)
        if meters:
            accs = self._q(
                "SELECT meter_id, period, count FROM accounts WHERE meter_id = ANY(%s)", (meters,)
            )
            cells: dict[tuple[str, int], dict[str, int]] = {}
            for m, p, name, value in self._q(
                "SELECT meter_id, period, name, value FROM cells WHERE meter_id = ANY(%s)",
                (meters,),
            ):
                cells.setdefault((m, int(p)), {})[name] = _i(bytes(value))
            for m, p, count in accs:
                self._pre_acc[(m, int(p))] = (int(count), cells.get((m, int(p)), {}))
            self._pre_meters.update(meters)

    # -- registrations -------------------------------------------------------------------------
    def get_meter(self, meter_id: str) -> Registration | None:
        rows = self._q(
            "SELECT meter_id, verify_key, paillier_public_key, plan_id, plan_digest, period_start, "
            "period_intervals FROM meters WHERE meter_id = %s",
            (meter_id,),
        )
        return _registration(rows[0]) if rows else None

    def meters(self) -> list[Registration]:
        """Every registered meter (a restarted shard rebuilds its registry from these)."""
        return [
            _registration(r)
            for r in self._q(
                "SELECT meter_id, verify_key, paillier_public_key, plan_id, plan_digest, period_start, "
                "period_intervals FROM meters ORDER BY meter_id"
            )
        ]

    def put_meter(self, reg: Registration) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT INTO meters VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (meter_id) DO UPDATE SET "
                "verify_key = EXCLUDED.verify_key, paillier_public_key = EXCLUDED.paillier_public_key, "
                "plan_id = EXCLUDED.plan_id, plan_digest = EXCLUDED.plan_digest, "
                "period_start = EXCLUDED.period_start, period_intervals = EXCLUDED.period_intervals",
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

    # -- log and accounts ----------------------------------------------------------------------
    def find_record(self, meter_id: str, interval: int, kind: str, event_id: str) -> bytes | None:
        slot = (meter_id, interval, kind, event_id)
        hit = self._pend_slots.get(slot)
        if hit is not None:
            return hit
        if slot in self._known:
            return self._known[slot]
        rows = self._q(
            "SELECT record FROM log WHERE meter_id = %s AND interval = %s AND kind = %s "
            "AND event_id = %s",
            slot,
        )
        return bytes(rows[0][0]) if rows else None

    def log_position(
        self, meter_id: str, interval: int, kind: str, event_id: str
    ) -> tuple[int, bytes] | None:
        """``(seq, chain)`` of a committed record (to send its receipt again), or None."""
        rows = self._q(
            "SELECT seq, chain FROM log WHERE meter_id = %s AND interval = %s AND kind = %s "
            "AND event_id = %s",
            (meter_id, interval, kind, event_id),
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def get_account(self, meter_id: str, period: int) -> tuple[int, dict[str, int]] | None:
        pend = self._pend_acc.get((meter_id, period))
        if pend is not None:
            return pend[0], dict(pend[1])
        if meter_id in self._pre_meters:  # prefetched in this batch: complete for this meter
            pre = self._pre_acc.get((meter_id, period))
            return None if pre is None else (pre[0], dict(pre[1]))
        hit = self._accounts.get(meter_id, period)
        if hit is not None:
            return hit
        rows = self._q(
            "SELECT count FROM accounts WHERE meter_id = %s AND period = %s", (meter_id, period)
        )
        if not rows:
            return None
        cells = {
            name: _i(bytes(v))
            for name, v in self._q(
                "SELECT name, value FROM cells WHERE meter_id = %s AND period = %s",
                (meter_id, period),
            )
        }
        self._accounts.put(meter_id, period, int(rows[0][0]), cells)
        return int(rows[0][0]), dict(cells)

    def _stage(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: Iterable[str],
    ) -> None:
        """Buffer an account change inside a batch (written by :meth:`_flush`)."""
        cur = self._pend_acc.get((meter_id, period))
        if cur is None:
            base = self.get_account(meter_id, period)
            cur = (0, dict(base[1]) if base else {}, set(), set())
        _c, cells, dirty, gone = cur
        for name in removed:
            cells.pop(name, None)
            dirty.discard(name)
            gone.add(name)
        cells.update(changed)
        dirty.update(changed)
        gone.difference_update(changed)
        self._pend_acc[(meter_id, period)] = (count, cells, dirty, gone)

    def _write_account(
        self,
        meter_id: str,
        period: int,
        count: int,
        changed: Mapping[str, int],
        removed: tuple[str, ...],
    ) -> None:
        self._conn.execute(
            "INSERT INTO accounts VALUES (%s, %s, %s) ON CONFLICT (meter_id, period) DO UPDATE SET count = %s",
            (meter_id, period, count, count),
        )
        cur = self._conn.cursor()
        if removed:
            cur.executemany(
                "DELETE FROM cells WHERE meter_id = %s AND period = %s AND name = %s",
                [(meter_id, period, n) for n in removed],
            )
        if changed:
            cur.executemany(
                "INSERT INTO cells VALUES (%s, %s, %s, %s) ON CONFLICT (meter_id, period, name) "
                "DO UPDATE SET value = EXCLUDED.value",
                [(meter_id, period, n, _b(v)) for n, v in changed.items()],
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
        slot = (meter_id, interval, kind, event_id)
        gone = tuple(removed)
        seq, head = self._head()
        chain = chain_step(head, record)
        if self._batch_depth:  # group commit: buffered, written by _flush before COMMIT
            if slot in self._pend_slots:
                raise StoreError(f"record {slot!r} already logged")
            self._pend_log.append((seq + 1, meter_id, interval, kind, event_id, record, chain))
            self._pend_slots[slot] = record
            self._pend_head = (seq + 1, chain)
            self._stage(meter_id, period, count, changed, gone)
            return seq + 1, chain
        with self._tx():
            self._conn.execute(
                "INSERT INTO log VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (seq + 1, meter_id, interval, kind, event_id, record, chain),
            )
            self._write_account(meter_id, period, count, changed, gone)
        self._head_cache = (seq + 1, chain)
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
        if self._batch_depth:
            self._stage(meter_id, period, count, changed, gone)
            return
        with self._tx():
            self._write_account(meter_id, period, count, changed, gone)
        self._accounts.apply(meter_id, period, count, changed, gone)

    def open_accounts(self) -> list[tuple[str, int]]:
        rows = self._q(
            "SELECT a.meter_id, a.period FROM accounts a LEFT JOIN statements s "
            "ON a.meter_id = s.meter_id AND a.period = s.period WHERE s.statement IS NULL "
            "ORDER BY a.meter_id, a.period"
        )
        return [(r[0], int(r[1])) for r in rows]

    def records(self, meter_id: str, start: int, end: int) -> list[bytes]:
        rows = self._q(
            "SELECT record FROM log WHERE meter_id = %s AND interval >= %s AND interval < %s "
            "ORDER BY interval, kind, event_id",
            (meter_id, start, end),
        )
        return [bytes(r[0]) for r in rows]

    def iter_log(self) -> Iterator[tuple[int, bytes, bytes]]:
        for seq, rec, chain in self._q("SELECT seq, record, chain FROM log ORDER BY seq"):
            yield int(seq), bytes(rec), bytes(chain)

    def _head(self) -> tuple[int, bytes]:
        if self._pend_head is not None:
            return self._pend_head
        if self._head_cache is not None:
            return self._head_cache
        rows = self._q("SELECT seq, chain FROM log ORDER BY seq DESC LIMIT 1")
        head = (0, GENESIS) if not rows else (int(rows[0][0]), bytes(rows[0][1]))
        if not self._batch_depth:
            self._head_cache = head
        return head

    def log_head(self) -> tuple[int, bytes]:
        return self._head()

    # -- statements and feeds -------------------------------------------------------------------
    def get_statement(self, meter_id: str, period: int) -> bytes | None:
        if self._settled is None:
            self._settled = {
                (m, int(p)) for m, p in self._q("SELECT meter_id, period FROM statements")
            }
        if (meter_id, period) not in self._settled:
            return None
        rows = self._q(
            "SELECT statement FROM statements WHERE meter_id = %s AND period = %s",
            (meter_id, period),
        )
        return bytes(rows[0][0]) if rows else None

    def put_statement(self, meter_id: str, period: int, statement: bytes) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT INTO statements VALUES (%s, %s, %s)", (meter_id, period, statement)
            )
            if self._settled is not None:
                self._settled.add((meter_id, period))

    def put_feed(self, digest: bytes, feed_json: str) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT INTO feeds (digest, feed) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (digest, feed_json),
            )

    def feeds(self) -> list[str]:
        return [r[0] for r in self._q("SELECT feed FROM feeds ORDER BY ord")]

    def close(self) -> None:
        self._conn.close()


def _registration(row: tuple[Any, ...]) -> Registration:
    return Registration(
        meter_id=row[0],
        verify_key=bytes(row[1]),
        paillier_public_key=row[2],
        plan_id=row[3],
        plan_digest=bytes(row[4]),
        period_start=int(row[5]),
        period_intervals=int(row[6]),
    )
