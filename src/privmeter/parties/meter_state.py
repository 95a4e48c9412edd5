"""A meter's privacy ledgers on disk, so that what it has revealed survives a restart.

What it is for: the plan's privacy rules are enforced by the meter from two
small ledgers, the roster record (:class:`~privmeter.protocol.membership.
MembershipPolicy`: which rosters it served, which intervals it already gave a
reading for, roster changes per day) and the comparison budget
(:class:`~privmeter.protocol.demand_budget.ComparisonBudget`: comparisons answered
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

The same file keeps the meter's journal (:func:`sync_journal`,
:func:`restore_journal`): the readings and demand-response amounts it
reported (its household settles from them), and the billing records not yet
acknowledged by a head-end receipt (resent after a restart), and the
demand-management directives it received (the household's own record; after
a restart the meter keeps sending the event window's demand-response
records).  Tables ``readings(meter_id, interval, wh)``, ``adjustments(meter_id,
kind, event_id, interval, wh)``, ``unacked(meter_id, slot, record)``
(``record``: the canonical signed record bytes), ``directives(meter_id,
event_id, action, start_interval, duration_minutes, limit_w, received_at)``.
The household agent's payments live here too: ``paid(meter_id, period,
proof)`` (``proof``: the codec bytes of the one
:class:`~privmeter.protocol.settlement.BillProof` given for that billing
period), written before the proof leaves, so a restarted household never pays
a period twice (:meth:`MeterLedgerStore.put_paid`).

Security assumption: the file is the meter's own storage (not readable or
writable by the utility).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from privmeter.errors import AlreadySettled, ConfigError
from privmeter.protocol.demand_budget import ComparisonBudget
from privmeter.protocol.demand_messages import LoadInstruction
from privmeter.protocol.membership import MembershipPolicy
from privmeter.protocol.records import ReadingRecord, record_bytes, record_from_bytes

__all__ = ["FORMAT", "MeterLedgerStore", "attach", "restore_journal", "sync_journal"]

FORMAT = "privmeter.meter-ledger/1"


class JournalledMeter(Protocol):
    """What the journal reads from and gives back to a meter
    (:class:`privmeter.parties.meter.MeterAgent`, which imports this module)."""

    meter_id: str
    local_readings: dict[int, int]
    local_adjustments: dict[tuple[str, str, int], int]
    unacked: dict[tuple[str, int, str, str], ReadingRecord]
    directives: list[LoadInstruction]
    now: int

    def restore(
        self,
        readings: Mapping[int, int],
        adjustments: Mapping[tuple[str, str, int], int],
        unacked: Iterable[ReadingRecord],
        directives: Iterable[LoadInstruction] = (),
    ) -> None: ...


class MeterLedgerStore:
    """One SQLite file holding the ledgers of one or more meters (a fleet)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS ledger (meter_id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
        )
        self._db.executescript(_JOURNAL)
        self._saved: dict[str, tuple[set[int], set[tuple[str, str, int]], set[str], set[str]]] = {}

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
        self._db.execute(
            "INSERT OR REPLACE INTO ledger (meter_id, doc) VALUES (?, ?)",
            (meter_id, json.dumps(doc, separators=(",", ":"))),
        )

    def paid(self, meter_id: str) -> dict[int, bytes]:
        """The proofs the household of ``meter_id`` gave, per billing period (codec bytes)."""
        return {
            int(p): bytes(b)
            for p, b in self._db.execute(
                "SELECT period, proof FROM paid WHERE meter_id = ?", (meter_id,)
            )
        }

    def put_paid(self, meter_id: str, period: int, proof: bytes) -> None:
        """Record the one proof of ``period`` (one autocommitted statement: durable before it is sent).
        A second, different proof for a period already paid is refused."""
        row = self._db.execute(
            "SELECT proof FROM paid WHERE meter_id = ? AND period = ?", (meter_id, period)
        ).fetchone()
        if row is not None and bytes(row[0]) != proof:
            raise AlreadySettled(
                "a proof for this billing period was given before", meter_id=meter_id, period=period
            )
        self._db.execute(
            "INSERT OR IGNORE INTO paid (meter_id, period, proof) VALUES (?, ?, ?)",
            (meter_id, period, proof),
        )

    def close(self) -> None:
        self._db.close()


_JOURNAL = """
CREATE TABLE IF NOT EXISTS readings (meter_id TEXT NOT NULL, interval INTEGER NOT NULL, wh INTEGER NOT NULL,
    PRIMARY KEY (meter_id, interval));
CREATE TABLE IF NOT EXISTS adjustments (meter_id TEXT NOT NULL, kind TEXT NOT NULL, event_id TEXT NOT NULL,
    interval INTEGER NOT NULL, wh INTEGER NOT NULL, PRIMARY KEY (meter_id, kind, event_id, interval));
CREATE TABLE IF NOT EXISTS unacked (meter_id TEXT NOT NULL, slot TEXT NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (meter_id, slot));
CREATE TABLE IF NOT EXISTS paid (meter_id TEXT NOT NULL, period INTEGER NOT NULL, proof BLOB NOT NULL,
    PRIMARY KEY (meter_id, period));
CREATE TABLE IF NOT EXISTS directives (meter_id TEXT NOT NULL, event_id TEXT NOT NULL, action TEXT NOT NULL,
    start_interval INTEGER NOT NULL, duration_minutes INTEGER NOT NULL, limit_w INTEGER,
    received_at INTEGER NOT NULL, PRIMARY KEY (meter_id, event_id));
"""


def sync_journal(store: MeterLedgerStore, meter: JournalledMeter) -> None:
    """Save what ``meter`` reported since the last call (readings, DR amounts, directives
    received) and its unacknowledged records, in one transaction: call it before sending
    the meter's answers."""
    mid = meter.meter_id
    seen_r, seen_a, seen_u, seen_d = store._saved.setdefault(mid, (set(), set(), set(), set()))
    new_r = [(mid, t, wh) for t, wh in meter.local_readings.items() if t not in seen_r]
    new_a = [
        (mid, k[0], k[1], k[2], wh) for k, wh in meter.local_adjustments.items() if k not in seen_a
    ]
    unacked = {json.dumps(list(slot)): rec for slot, rec in meter.unacked.items()}
    gone = seen_u - set(unacked)
    fresh = [(mid, k, record_bytes(r)) for k, r in unacked.items() if k not in seen_u]
    new_d = [
        (mid, d.event_id, d.action, d.start_interval, d.duration_minutes, d.limit_w, meter.now)
        for d in meter.directives
        if d.event_id not in seen_d
    ]
    if not (new_r or new_a or gone or fresh or new_d):
        return
    db = store._db
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT OR REPLACE INTO readings VALUES (?, ?, ?)", new_r)
        db.executemany("INSERT OR REPLACE INTO adjustments VALUES (?, ?, ?, ?, ?)", new_a)
        db.executemany(
            "DELETE FROM unacked WHERE meter_id = ? AND slot = ?", [(mid, k) for k in gone]
        )
        db.executemany("INSERT OR REPLACE INTO unacked VALUES (?, ?, ?)", fresh)
        db.executemany("INSERT OR IGNORE INTO directives VALUES (?, ?, ?, ?, ?, ?, ?)", new_d)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    seen_r.update(t for _, t, _ in new_r)
    seen_a.update((k, e, t) for _, k, e, t, _ in new_a)
    seen_u.difference_update(gone)
    seen_u.update(k for _, k, _ in fresh)
    seen_d.update(e for _, e, *_ in new_d)


def restore_journal(store: MeterLedgerStore, meter: JournalledMeter) -> int:
    """Give a restarted ``meter`` back its readings, DR amounts, unacknowledged records and
    the directives it received; returns the number of readings restored."""
    mid = meter.meter_id
    db = store._db
    readings = {
        int(t): int(wh)
        for t, wh in db.execute("SELECT interval, wh FROM readings WHERE meter_id = ?", (mid,))
    }
    adjustments = {
        (str(k), str(e), int(t)): int(wh)
        for k, e, t, wh in db.execute(
            "SELECT kind, event_id, interval, wh FROM adjustments WHERE meter_id = ?", (mid,)
        )
    }
    unacked = [
        record_from_bytes(bytes(b))
        for (b,) in db.execute("SELECT record FROM unacked WHERE meter_id = ?", (mid,))
    ]
    directives = [
        LoadInstruction(
            event_id=str(e),
            action=str(a),
            start_interval=int(t),
            duration_minutes=int(d),
            limit_w=None if w is None else int(w),
        )
        for e, a, t, d, w in db.execute(
            "SELECT event_id, action, start_interval, duration_minutes, limit_w FROM directives "
            "WHERE meter_id = ? ORDER BY received_at, event_id",
            (mid,),
        )
    ]
    meter.restore(readings, adjustments, unacked, directives)
    store._saved[mid] = (
        set(readings),
        set(adjustments),
        {json.dumps(list(r.slot)) for r in unacked},
        {d.event_id for d in directives},
    )
    return len(readings)


def attach(
    store: MeterLedgerStore,
    meter_id: str,
    membership: MembershipPolicy,
    comparisons: ComparisonBudget | None,
) -> None:
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
        store.save(
            meter_id,
            {
                "format": FORMAT,
                "membership": membership.state(),
                "comparisons": None if comparisons is None else comparisons.state(),
            },
        )

    membership.on_change = save
    if comparisons is not None:
        comparisons.on_change = save
