"""A head-end shard's store: the PostgreSQL billing store plus the head-end's own tables.

What it is for: :class:`PostgresHeadEndStore` is to
:class:`~privmeter.store.postgres.PostgresBillingStore` what
:class:`~privmeter.parties.headend_store.HeadEndStore` is to the SQLite
billing store: the same head-end tables (``he_totals``, ``he_events``,
``he_settlements``, ``he_meta``) with the same write-once rule for totals
and settlements, so a :class:`~privmeter.parties.headend.HeadEndCore` runs on
it unchanged.  One instance per shard, in the shard's own schema.

Guarantee: as the SQLite head-end store's -- a total is written once per
(group, interval); a second write with another value raises
:class:`~privmeter.errors.StoreError` (a restarted shard can never replace a
stored total by a different one).
"""

from __future__ import annotations

import json
from typing import Any

from privmeter.errors import StoreError
from privmeter.parties.headend_store import HEADEND_SCHEMA_VERSION, StoredTotal, _Common
from privmeter.store.postgres import PostgresBillingStore

__all__ = ["PostgresHeadEndStore"]


class PostgresHeadEndStore(PostgresBillingStore, _Common):
    """The billing store of one schema, extended with the head-end tables (see module doc)."""

    extra_schema = """
CREATE TABLE IF NOT EXISTS he_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS he_totals (
    grp TEXT NOT NULL, interval BIGINT NOT NULL, total BIGINT, survivors INTEGER NOT NULL,
    dropped INTEGER NOT NULL, error TEXT NOT NULL, PRIMARY KEY (grp, interval));
CREATE TABLE IF NOT EXISTS he_events (
    event_id TEXT PRIMARY KEY, grp TEXT NOT NULL, interval BIGINT NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS he_settlements (
    meter_id TEXT NOT NULL, period BIGINT NOT NULL, kind TEXT NOT NULL, answer BYTEA NOT NULL,
    bill NUMERIC, PRIMARY KEY (meter_id, period));
"""

    def __init__(self, dsn: str, *, schema: str = "headend", **kw: Any) -> None:
        super().__init__(dsn, schema=schema, **kw)
        with self._tx():
            row = self._q("SELECT value FROM he_meta WHERE key = 'schema'")
            if not row:
                self._conn.execute(
                    "INSERT INTO he_meta VALUES ('schema', %s)", (str(HEADEND_SCHEMA_VERSION),)
                )
            elif row[0][0] != str(HEADEND_SCHEMA_VERSION):
                raise StoreError(
                    f"head-end tables have schema {row[0][0]}, expected {HEADEND_SCHEMA_VERSION}"
                )

    def meta_get(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM he_meta WHERE key = %s", (key,))
        return None if not rows else str(rows[0][0])

    def meta_set(self, key: str, value: str) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT INTO he_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                "value = EXCLUDED.value",
                (key, value),
            )

    def put_total(self, t: StoredTotal) -> None:
        with self._tx():
            rows = self._q(
                "SELECT grp, interval, total, survivors, dropped, error FROM he_totals WHERE "
                "grp = %s AND interval = %s",
                (t.group, t.interval),
            )
            if rows:
                if StoredTotal.from_row(rows[0]) != t:
                    raise StoreError(
                        f"total of {t.group}/{t.interval} already stored with another value"
                    )
                return
            self._conn.execute(
                "INSERT INTO he_totals VALUES (%s, %s, %s, %s, %s, %s)",
                (t.group, t.interval, t.total, t.survivors, t.dropped, t.error),
            )

    def totals(self, group: str | None = None) -> list[StoredTotal]:
        q = "SELECT grp, interval, total, survivors, dropped, error FROM he_totals"
        args: tuple[Any, ...] = ()
        if group is not None:
            q += " WHERE grp = %s"
            args = (group,)
        return [StoredTotal.from_row(r) for r in self._q(q + " ORDER BY grp, interval", args)]

    def put_event(self, event_id: str, group: str, interval: int, info: dict[str, Any]) -> None:
        with self._tx():
            self._conn.execute(
                "INSERT INTO he_events VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE "
                "SET info = EXCLUDED.info",
                (event_id, group, interval, json.dumps(info, sort_keys=True)),
            )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for eid, grp, iv, info in self._q(
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
            self._conn.execute(
                "INSERT INTO he_settlements VALUES (%s, %s, %s, %s, %s) ON CONFLICT (meter_id, period) DO UPDATE "
                "SET kind = EXCLUDED.kind, answer = EXCLUDED.answer, bill = EXCLUDED.bill",
                (meter_id, period, kind, answer, bill),
            )

    def settled(self) -> list[tuple[str, int]]:
        """(meter, period) of every answered statement, without the answers (a cheap poll)."""
        return [
            (r[0], int(r[1]))
            for r in self._q(
                "SELECT meter_id, period FROM he_settlements ORDER BY meter_id, period"
            )
        ]

    def settlements(self) -> list[tuple[str, int, str, bytes, int | None]]:
        return [
            (r[0], int(r[1]), r[2], bytes(r[3]), None if r[4] is None else int(r[4]))
            for r in self._q(
                "SELECT meter_id, period, kind, answer, bill FROM he_settlements ORDER BY meter_id, period"
            )
        ]
