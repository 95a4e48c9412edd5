"""A meter's privacy ledgers on disk, so that what it has revealed survives a restart.

What it is for: the plan's privacy rules are enforced by the meter from two
small ledgers, the roster record (:class:`~privmeter.privacy.membership.
MembershipPolicy`: which rosters it served, which intervals it already gave a
reading for, roster changes per day) and the comparison budget
(:class:`~privmeter.protocol.demand.ComparisonBudget`: comparisons answered
per interval and per day).  Kept only in memory, a restart would reset them:
a head-end could then re-run an interval the meter already served (a second
total of one interval: exact differencing) or ask for a day's comparisons
again.  :func:`attach` restores both from a :class:`MeterLedgerStore` and saves
them after every change, before the meter acts on it.

Format: SQLite (WAL, ``synchronous=FULL``), table ``ledger(meter_id TEXT
PRIMARY KEY, doc TEXT)``; ``doc`` is JSON ``{"format":
"privmeter.meter-ledger/1", "membership": <privmeter.membership/1>,
"comparisons": <privmeter.comparisons/1> | null}``.  Each save is one
autocommitted statement: a kill at any moment leaves the previous or the
new ledger, never a mix; the order "save, then send" means a crash can only
lose an answer, never forget one that left.

Security assumption: the file is the meter's own storage (not readable or
writable by the utility).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from privmeter.errors import ConfigError
from privmeter.privacy.membership import MembershipPolicy
from privmeter.protocol.demand import ComparisonBudget

__all__ = ["FORMAT", "MeterLedgerStore", "attach"]

FORMAT = "privmeter.meter-ledger/1"


class MeterLedgerStore:
    """One SQLite file holding the ledgers of one or more meters (a fleet)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS ledger (meter_id TEXT PRIMARY KEY, doc TEXT NOT NULL)")

    def load(self, meter_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT doc FROM ledger WHERE meter_id = ?", (meter_id,)).fetchone()
        if row is None:
            return None
        try:
            doc = json.loads(row[0])
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ConfigError(f"ledger of {meter_id!r} is not a {FORMAT} document")
        return doc

    def save(self, meter_id: str, doc: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO ledger (meter_id, doc) VALUES (?, ?)",
                         (meter_id, json.dumps(doc, separators=(",", ":"))))

    def close(self) -> None:
        self._db.close()


def attach(store: MeterLedgerStore, meter_id: str, membership: MembershipPolicy,
           comparisons: ComparisonBudget | None) -> None:
    """Restore ``membership`` and ``comparisons`` from ``store`` (if saved before),
    then save both after every change they record."""
    doc = store.load(meter_id)
    if doc is not None:
        try:
            membership.restore(doc["membership"])
            if comparisons is not None and doc.get("comparisons") is not None:
                comparisons.restore(doc["comparisons"])
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"ledger of {meter_id!r}: {exc}") from None

    def save() -> None:
        store.save(meter_id, {"format": FORMAT, "membership": membership.state(),
                              "comparisons": None if comparisons is None else comparisons.state()})

    membership.on_change = save
    if comparisons is not None:
        comparisons.on_change = save
