"""The head-end's registry of enrolled meters and open enrolment tickets (SQLite, WAL).

What it is for: who may connect, under which meter id, in which feeder
group, on which plan, with which household Paillier key.  The operator's
commands (``privmeter headend invite|revoke``) and the running head-end
share the file: every handshake asks :meth:`Registry.meter_of` afresh, so a
revoked meter is refused at its next connection.

Lifecycle of a meter id: ``invite`` (a one-time ticket; only a MAC key
derived from its secret is stored) -> ``enrol`` (keys bound, ticket used up; status ``active``)
-> ``revoke`` (status ``revoked``) or a new ``invite`` for the same id with
``replace`` (meter replacement or key rotation: the next enrolment replaces
the keys).  A revoked or replaced meter key is *retired*: :meth:`Registry.trust`
refuses it at the transport handshake from then on.
Every change bumps the registry ``version``, which the roster of each group
carries (meters take only newer rosters).

Format: tables ``invites(meter_id, mac_key, grp, expires, used)`` and
``members(meter_id, grp, plan_id, meter_key, household_json, status, since)``
(``privmeter.registry/1`` in ``meta``).  The lifecycle above is
:data:`~privmeter.parties.enrolment.ENROLMENT`; a meter id's state
(:meth:`Registry.state`) is derived from these rows (an open ticket: unused
and not expired; ``status``: :class:`~privmeter.parties.enrolment.MemberStatus`),
so the format is unchanged, and every change checks the table first.

Security assumption: the file is the utility's; it holds public keys and
the MAC keys of open tickets only (a thief of this file could enrol in place
of a household whose ticket is still open: keep it 0600; tickets expire).  Guarantee: :meth:`Registry.enrol` checks the ticket, the
MAC, the key binding and the Paillier key's well-formedness proof before any
change (a failed enrolment leaves the registry as it was).
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privmeter.crypto.paillier import PaillierPublicKey
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import ConfigError, InvalidSignature, LocalProtocolError, UnknownParty
from privmeter.parties.enrolment import (
    ENROLMENT,
    EnrolmentInput,
    EnrolmentState,
    EnrolRequest,
    MemberStatus,
    Ticket,
    enrol_mac,
    enrol_peer,
)
from privmeter.parties.keys import household_key_and_proof, public_household_key

__all__ = ["FORMAT", "Member", "Registry"]

FORMAT = "privmeter.registry/1"
TICKET_TTL_S = 30 * 86400

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS invites (meter_id TEXT PRIMARY KEY, mac_key TEXT NOT NULL, grp TEXT,
    expires INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS retired (meter_key TEXT PRIMARY KEY, meter_id TEXT NOT NULL, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS members (meter_id TEXT PRIMARY KEY, grp TEXT NOT NULL, plan_id TEXT NOT NULL,
    meter_key TEXT NOT NULL, household_json TEXT NOT NULL, status TEXT NOT NULL, since INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Member:
    meter_id: str
    group: str
    plan_id: str
    meter_key: VerifyKey
    household_json: str
    status: MemberStatus

    def household_pk(self, min_bits: int) -> PaillierPublicKey:
        return public_household_key(json.loads(self.household_json), min_bits=min_bits)

    def household_key(self, min_bits: int) -> tuple[PaillierPublicKey, list[int]]:
        """The household's public key and its well-formedness proof, verified (registration)."""
        return household_key_and_proof(json.loads(self.household_json), min_bits=min_bits)


class Registry:
    """See the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('format', ?), ('version', '0')", (FORMAT,)
            )
        elif row[0] != FORMAT:
            raise ConfigError(f"{path}: registry format {row[0]!r}, expected {FORMAT!r}")

    def close(self) -> None:
        self._db.close()

    def version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='version'").fetchone()[0])

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='version'")

    def state(self, meter_id: str, *, now: int | None = None) -> EnrolmentState:
        """``meter_id``'s enrolment state (:data:`~privmeter.parties.enrolment.ENROLMENT`),
        from its member row and whether it has an open (unused, unexpired) ticket."""
        now = int(time.time()) if now is None else now
        row = self._db.execute(
            "SELECT expires, used FROM invites WHERE meter_id=?", (meter_id,)
        ).fetchone()
        ticket = row is not None and not row[1] and row[0] >= now
        m = self.member(meter_id)
        if m is not None and m.status is MemberStatus.ACTIVE:
            return EnrolmentState.REINVITED if ticket else EnrolmentState.ACTIVE
        if ticket:
            return EnrolmentState.INVITED
        return EnrolmentState.REVOKED if m is not None else EnrolmentState.NEW

    # -- operator ---------------------------------------------------------------------------
    def invite(
        self,
        meter_id: str,
        headend_key: VerifyKey,
        *,
        group: str | None = None,
        replace: bool = False,
        now: int | None = None,
        ttl_s: int = TICKET_TTL_S,
    ) -> Ticket:
        """A fresh one-time ticket for ``meter_id`` (``replace``: for an enrolled meter's new keys)."""
        now = int(time.time()) if now is None else now
        inp = EnrolmentInput.REPLACE if replace else EnrolmentInput.INVITE
        ENROLMENT.next(self.state(meter_id, now=now), inp, meter_id=meter_id)
        ticket = Ticket.new(meter_id, headend_key)
        self._db.execute(
            "INSERT OR REPLACE INTO invites VALUES (?, ?, ?, ?, 0)",
            (meter_id, ticket.mac_key().hex(), group, now + ttl_s),
        )
        return ticket

    def revoke(self, meter_id: str, *, now: int | None = None) -> None:
        """The meter leaves (or is stolen): refused from its next connection on."""
        now = int(time.time()) if now is None else now
        ENROLMENT.next(self.state(meter_id, now=now), EnrolmentInput.REVOKE, meter_id=meter_id)
        m = self.member(meter_id)
        if m is None:
            raise LocalProtocolError("an active meter without a member row")
        self._db.execute(
            "UPDATE members SET status=? WHERE meter_id=?", (MemberStatus.REVOKED.value, meter_id)
        )
        self._retire(m, now)
        self._db.execute("DELETE FROM invites WHERE meter_id=?", (meter_id,))
        self._bump()

    # -- enrolment ----------------------------------------------------------------------------
    def enrol(
        self,
        req: EnrolRequest,
        meter_key: VerifyKey,
        headend_key: VerifyKey,
        *,
        plans: set[str],
        min_bits: int,
        group_size: int,
        now: int | None = None,
    ) -> Member:
        """Check and record one enrolment (see the module docstring); returns the member."""
        now = int(time.time()) if now is None else now
        ENROLMENT.next(
            self.state(req.meter_id, now=now), EnrolmentInput.ENROL, meter_id=req.meter_id
        )
        row = self._db.execute(
            "SELECT mac_key, grp FROM invites WHERE meter_id=?", (req.meter_id,)
        ).fetchone()
        mac_key, grp = row
        if req.plan_id not in plans:
            raise ConfigError(
                f"plan {req.plan_id!r} is not offered; offered: {', '.join(sorted(plans))}"
            )
        try:
            hh = json.loads(req.household_key_json)
        except ValueError:
            raise ConfigError("household key is not JSON") from None
        if not isinstance(hh, dict):
            raise ConfigError("household key is not a JSON object")
        public_household_key(hh, min_bits=min_bits)  # InvalidProof / InvalidKey before any change
        if self.meter_of(meter_key) not in (None, req.meter_id):
            raise UnknownParty(
                "this meter key is enrolled for another meter", meter_id=req.meter_id
            )
        want = enrol_mac(
            bytes.fromhex(mac_key),
            meter_id=req.meter_id,
            meter_key=meter_key,
            headend_key=headend_key,
            household_key_json=req.household_key_json,
            plan_id=req.plan_id,
        )
        if not hmac.compare_digest(want, req.mac):
            raise InvalidSignature(
                "enrolment code does not match this meter's ticket", meter_id=req.meter_id
            )
        group = grp or self._assign_group(group_size)
        old = self.member(req.meter_id)
        with self._db:
            self._db.execute("BEGIN")
            if old is not None and old.meter_key != meter_key:
                self._retire(old, now)
            self._db.execute(
                "INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    req.meter_id,
                    group,
                    req.plan_id,
                    meter_key.hex(),
                    req.household_key_json,
                    MemberStatus.ACTIVE.value,
                    now,
                ),
            )
            self._db.execute("UPDATE invites SET used=1 WHERE meter_id=?", (req.meter_id,))
            self._bump()
        m = self.member(req.meter_id)
        if m is None:
            raise LocalProtocolError("the member vanished during the update")
        return m

    def _retire(self, m: Member, now: int) -> None:
        """An old key of a replaced or revoked meter: refused at the handshake from now on."""
        self._db.execute(
            "INSERT OR IGNORE INTO retired VALUES (?, ?, ?)",
            (m.meter_key.hex(), m.meter_id, now),
        )

    def _assign_group(self, group_size: int) -> str:
        counts: dict[str, int] = {}
        for (g,) in self._db.execute("SELECT grp FROM members WHERE status='active'"):
            counts[g] = counts.get(g, 0) + 1
        k = 1
        while counts.get(f"feeder-{k}", 0) >= group_size:
            k += 1
        return f"feeder-{k}"

    # -- queries ----------------------------------------------------------------------------
    def member(self, meter_id: str) -> Member | None:
        row = self._db.execute(
            "SELECT meter_id, grp, plan_id, meter_key, household_json, status FROM members "
            "WHERE meter_id=?",
            (meter_id,),
        ).fetchone()
        return None if row is None else _member(row)

    def active(self) -> list[Member]:
        return [
            _member(r)
            for r in self._db.execute(
                "SELECT meter_id, grp, plan_id, meter_key, household_json, status FROM members "
                "WHERE status='active' ORDER BY meter_id"
            )
        ]

    def trust(self, key: VerifyKey) -> str | None:
        """The transport's trust function: an active meter's id; ``None`` (refused at the
        handshake) for a retired key; otherwise the provisional id of an enrolment
        (:func:`~privmeter.parties.enrolment.enrol_peer`), which may only enrol."""
        mid = self.meter_of(key)
        if mid is not None:
            return mid
        if self._db.execute("SELECT 1 FROM retired WHERE meter_key=?", (key.hex(),)).fetchone():
            return None
        return enrol_peer(key)

    def since(self, meter_id: str) -> int:
        """When ``meter_id`` enrolled (unix seconds; 0 if never)."""
        row = self._db.execute("SELECT since FROM members WHERE meter_id=?", (meter_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def meter_of(self, key: VerifyKey) -> str | None:
        """The active meter whose key this is (None: unknown, revoked or replaced)."""
        row = self._db.execute(
            "SELECT meter_id FROM members WHERE meter_key=? AND status='active'", (key.hex(),)
        ).fetchone()
        return None if row is None else str(row[0])

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version(),
            "members": [
                {"meter_id": m.meter_id, "group": m.group, "plan": m.plan_id, "status": m.status}
                for m in (
                    _member(r)
                    for r in self._db.execute(
                        "SELECT meter_id, grp, plan_id, meter_key, household_json, status FROM members"
                    )
                )
            ],
        }


def _member(row: Any) -> Member:
    return Member(row[0], row[1], row[2], VerifyKey.from_hex(row[3]), row[4], MemberStatus(row[5]))
