"""Enrolment: a household joins the utility's system, over the authenticated transport.

What it is for: a household's Raspberry Pi has generated its own keys (the
meter's Ed25519 signing key, the household's Paillier key with its
well-formedness proof).  The utility must learn the public halves bound to a
meter id; the household must learn, authenticated by the utility, its feeder
group, the group's roster (meter keys), the plan and the billing periods.

How: **a one-time enrolment ticket**, handed to the household out of band
(printed on the installation letter, shown once in the utility's portal):

    privmeter-enrol/1:<meter id>:<head-end Ed25519 key, hex>:<128-bit secret, base32>

* the head-end key in the ticket is what the household pins: it connects
  over the usual transport (X25519 + Ed25519 handshake) to exactly that key,
  so nobody else can answer its enrolment (no trust on first use needed);
* its meter key is its transport identity: unknown to the head-end yet, it
  is admitted as the provisional party ``enrol-<key>`` that may send one
  message, :class:`EnrolRequest`;
* the request carries an HMAC-SHA256 under the secret over the meter id, the
  meter key, the head-end key, the household public key file and the chosen
  plan: only the holder of the ticket can bind keys to that meter id, and a
  relay cannot swap any of them.  The head-end stores only the MAC key
  derived from the secret; a ticket works once and expires (:class:`Ticket`).

Why a one-time code rather than a key fingerprint checked by phone: the
household types one string, and the same string authenticates both ways
(the head-end key inside it, the secret proving the household); a
fingerprint would still need a second channel for the utility to learn which
meter id the key belongs to.  128 bits make offline guessing hopeless even
for an observer of the (encrypted) exchange.

After enrolment the head-end signs (:func:`sign_doc`) what the meter must
trust: :class:`Enrolled` (group, plan text, billing periods, interval,
minimum survivors, comparison key) and every :class:`RosterUpdate` (the
group's meters and their keys, versioned: a meter takes only newer ones).

States (the head-end's, per meter id): :class:`EnrolmentState`, moved only
along :data:`ENROLMENT` (``docs/states.md``) by the operator's ``invite``
(``--replace``) and ``revoke`` and the household's ``enrol``; the
:class:`~privmeter.parties.registry.Registry` derives the state from its
tables (``invites.used``/``expires``, ``members.status`` =
:class:`MemberStatus`, format unchanged) and checks the table before any
change.

Security assumption: the ticket reaches the right household (like a
letter with a PIN).  Guarantee: a request whose MAC, key binding or Paillier
key proof fails changes nothing (:class:`~privmeter.errors.InvalidSignature`,
:class:`~privmeter.errors.InvalidProof`); a used or expired ticket is refused.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    ConfigError,
    InvalidArgument,
    InvalidSignature,
    MalformedMessage,
    UnknownParty,
)
from privmeter.protocol.codec import check_id, message
from privmeter.protocol.states import Machine, Refusal, register

__all__ = [
    "ENROLMENT",
    "ENROL_PREFIX",
    "TICKET_FORMAT",
    "EnrolRequest",
    "Enrolled",
    "EnrolmentInput",
    "EnrolmentState",
    "MemberStatus",
    "RosterUpdate",
    "Ticket",
    "enrol_mac",
    "enrol_peer",
    "peer_key",
    "sign_doc",
    "verify_doc",
]

TICKET_FORMAT = "privmeter-enrol/1"
ENROL_PREFIX = "enrol-"  # provisional party id of an unknown key: enrol-<base64url key>
_DOC_CONTEXT = b"privmeter.headend-doc/1"
_MAC_CONTEXT = b"privmeter.enrol-mac/1"
_KEY_CONTEXT = b"privmeter.enrol-key/1"
MAX_DOC = 256 * 1024


class MemberStatus(enum.StrEnum):
    """A member's status as the registry stores it (``members.status``: these strings)."""

    ACTIVE = "active"
    REVOKED = "revoked"


class EnrolmentState(enum.Enum):
    """One meter id, as the head-end's registry sees it (derived from its tables)."""

    NEW = "new"  # no member, no open ticket (never invited, or its ticket expired)
    INVITED = "invited"  # an open ticket and no active member (new, or revoked before)
    ACTIVE = "active"  # an active member, no open ticket
    REINVITED = "reinvited"  # an active member and an open ticket for new keys (--replace)
    REVOKED = "revoked"  # a revoked member, no open ticket


class EnrolmentInput(enum.Enum):
    INVITE = "invite"  # the operator: a one-time ticket
    REPLACE = "invite --replace"  # the operator: a ticket for an enrolled meter's new keys
    ENROL = "enrol"  # the household's EnrolRequest (ticket, MAC, keys checked after)
    REVOKE = "revoke"  # the operator: the meter leaves


_N, _NI = EnrolmentState, EnrolmentInput
_NO_TICKET = Refusal(UnknownParty, "no open enrolment ticket for this meter")
_NOT_ACTIVE = Refusal(ConfigError, "no active meter")
ENROLMENT = register(
    Machine(
        "enrolment (head-end registry)",
        EnrolmentState,
        EnrolmentInput,
        _N.NEW,
        {
            _N.NEW: {_NI.INVITE: _N.INVITED, _NI.REPLACE: _N.INVITED},
            _N.INVITED: {_NI.INVITE: _N.INVITED, _NI.REPLACE: _N.INVITED, _NI.ENROL: _N.ACTIVE},
            _N.ACTIVE: {_NI.REPLACE: _N.REINVITED, _NI.REVOKE: _N.REVOKED},
            _N.REINVITED: {
                _NI.REPLACE: _N.REINVITED,
                _NI.ENROL: _N.ACTIVE,
                _NI.REVOKE: _N.REVOKED,
            },
            _N.REVOKED: {_NI.INVITE: _N.INVITED, _NI.REPLACE: _N.INVITED},
        },
        {
            **{(st, _NI.ENROL): _NO_TICKET for st in (_N.NEW, _N.ACTIVE, _N.REVOKED)},
            **{(st, _NI.REVOKE): _NOT_ACTIVE for st in (_N.NEW, _N.INVITED, _N.REVOKED)},
            **{
                (st, _NI.INVITE): Refusal(
                    ConfigError, "meter is enrolled; use --replace for a new meter or new keys"
                )
                for st in (_N.ACTIVE, _N.REINVITED)
            },
        },
    )
)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A one-time enrolment ticket (see the module docstring)."""

    meter_id: str
    headend_key: VerifyKey
    secret: bytes

    @classmethod
    def new(cls, meter_id: str, headend_key: VerifyKey) -> Ticket:
        return cls(meter_id, headend_key, secrets.token_bytes(16))  # OS CSPRNG, 128 bits

    def __str__(self) -> str:
        code = base64.b32encode(self.secret).decode().rstrip("=").lower()
        return f"{TICKET_FORMAT}:{self.meter_id}:{self.headend_key.hex()}:{code}"

    @classmethod
    def parse(cls, text: str) -> Ticket:
        parts = text.strip().split(":")
        if len(parts) != 4 or parts[0] != TICKET_FORMAT:
            raise ConfigError(f"not an enrolment ticket (expected {TICKET_FORMAT}:METER:KEY:CODE)")
        _, meter_id, key_hex, code = parts
        try:
            check_id(meter_id, "meter_id")
            key = VerifyKey.from_hex(key_hex)
            secret = base64.b32decode(code.upper() + "=" * (-len(code) % 8))
        except (ValueError, TypeError, MalformedMessage):
            raise ConfigError("enrolment ticket is damaged (meter id, key or code)") from None
        if len(secret) != 16:
            raise ConfigError("enrolment ticket code must hold 128 bits")
        return cls(meter_id, key, secret)

    def mac_key(self) -> bytes:
        """The HMAC key both sides derive from the secret (the head-end stores only this)."""
        return hashlib.sha256(_KEY_CONTEXT + self.secret).digest()


def enrol_peer(key: VerifyKey) -> str:
    """The provisional party id of a key the head-end does not know yet."""
    return ENROL_PREFIX + base64.urlsafe_b64encode(key.raw).decode().rstrip("=")


def peer_key(peer: str) -> VerifyKey:
    """The key inside a provisional party id (:func:`enrol_peer`)."""
    if not peer.startswith(ENROL_PREFIX):
        raise MalformedMessage("not a provisional enrolment peer", peer=peer)
    raw = base64.urlsafe_b64decode(peer[len(ENROL_PREFIX) :] + "=")
    return VerifyKey.from_hex(raw.hex())


def enrol_mac(
    mac_key: bytes,
    *,
    meter_id: str,
    meter_key: VerifyKey,
    headend_key: VerifyKey,
    household_key_json: str,
    plan_id: str,
) -> bytes:
    """HMAC-SHA256 under the ticket's :meth:`Ticket.mac_key` over everything the request binds."""
    body = json.dumps(
        [
            meter_id,
            meter_key.hex(),
            headend_key.hex(),
            hashlib.sha256(household_key_json.encode()).hexdigest(),
            plan_id,
        ],
        separators=(",", ":"),
    ).encode()
    return hmac.new(mac_key, _MAC_CONTEXT + body, hashlib.sha256).digest()


def sign_doc(key: SigningKey, doc: dict[str, Any]) -> tuple[str, bytes]:
    """Canonical JSON of ``doc`` and the head-end's signature over it."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return text, key.sign(_DOC_CONTEXT, text.encode())


def verify_doc(key: VerifyKey, text: str, signature: bytes, *, kind: str) -> dict[str, Any]:
    """Check a signed head-end document of ``kind``; returns it parsed."""
    key.verify(_DOC_CONTEXT, text.encode(), signature)
    try:
        doc = json.loads(text)
    except ValueError:
        raise MalformedMessage("signed document is not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise InvalidSignature(f"signed document is not a {kind!r}")
    return doc


@message("sys.enrol")
@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolRequest:
    """Household -> head-end: bind my keys to ``meter_id`` (the transport identity is the meter key)."""

    meter_id: str
    household_key_json: str  # privmeter.keys/1 public household file: Paillier key + proof
    plan_id: str
    mac: bytes

    def __post_init__(self) -> None:
        check_id(self.meter_id, "meter_id")
        check_id(self.plan_id, "plan_id")
        if not 0 < len(self.household_key_json) <= 64 * 1024 or len(self.mac) != 32:
            raise InvalidArgument("household key size or mac length out of range")


@message("sys.enrolled")
@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolled:
    """Head-end -> household: the signed enrolment (``kind = "enrolled"`` JSON)."""

    doc: str
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 < len(self.doc) <= MAX_DOC or len(self.signature) != 64:
            raise InvalidArgument("document size or signature length out of range")


@message("sys.roster")
@dataclass(frozen=True, slots=True, kw_only=True)
class RosterUpdate:
    """Head-end -> meter: the signed roster of its group (``kind = "roster"`` JSON)."""

    doc: str
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 < len(self.doc) <= MAX_DOC or len(self.signature) != 64:
            raise InvalidArgument("document size or signature length out of range")
