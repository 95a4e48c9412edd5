"""Every error privmeter raises, in one hierarchy.

Errors are named for what went wrong (after h11, httpx and pyca/cryptography).
Messages say what was expected and what came (``!r``).  Towards an untrusted
peer a party answers with one uninformative error code; the details go to the
log.  Crypto and protocol failures carry context (meter id, interval) where
one is known.

The rule (enforced by ``tests/test_error_rule.py``, which walks ``src/``):
every exception privmeter raises itself is a ``PrivmeterError``; no ``raise``
in ``src/`` names a builtin exception class.  Pick the most specific class
that says what went wrong:

- a malformed file or setting: ``DataFormatError`` (a readings file),
  ``PlanError``, ``TariffError``, ``ConfigError``;
- a peer's message or field: ``MalformedMessage`` and its siblings (a wire
  message's own ``__post_init__`` checks raise ``InvalidArgument``, which
  ``codec.decode`` turns into ``MalformedMessage`` naming the tag);
- a key, ciphertext or plaintext: ``InvalidKey``, ``InvalidCiphertext``,
  ``PlaintextOverflow``...;
- otherwise, a caller of a function passed a value outside its documented
  domain: ``InvalidArgument``, or a value of the wrong type:
  ``InvalidArgumentType``.

``InvalidArgument`` is also a ``ValueError`` and ``InvalidArgumentType`` a
``TypeError``, so a library caller's ``except ValueError`` / ``except
TypeError`` keeps working; the other builtin-compatible classes
(``InvalidState``, ``DependencyError``, ``NotFound``, ``RandomnessPoolEmpty``)
do the same for the builtin they replace, and their ``code`` is ``"error"``: a
peer is told of them as of any internal error, as it was of the builtin. The
specific classes are not ``ValueError``s: code that catches one names it (or
``PrivmeterError``). The allowed exceptions, each with its reason in the test:
``NotImplementedError`` in an abstract method, ``KeyError`` from
``__missing__``/``__getitem__`` (the mapping protocol), ``StopIteration`` from
``__next__``, and an ``OSError`` of the machine re-raised with a clearer
message but its ``errno`` (the CLI names EADDRINUSE by it). Errors of the
environment (``OSError`` from files and sockets) and of the standard library
propagate as they come.

::

    PrivmeterError
    ├── InvalidArgument                 a caller passed a value outside the documented
    │                                   domain (also a ValueError)
    ├── InvalidArgumentType             a caller passed a value of the wrong type
    │                                   (also a TypeError)
    ├── InvalidState                    called before the object is ready, e.g. a model
    │                                   before fit (also a RuntimeError)
    ├── NotFound                        no such group / meter / record in a lookup
    │                                   (also a KeyError)
    ├── DependencyError                 a third-party tool or worker process failed or
    │                                   returned something unusable (also a RuntimeError)
    ├── SelfCheckFailed                 a benchmark's result differs from its plaintext
    │                                   reference
    ├── ConfigError                     a plan, tariff or config file is invalid
    │   ├── PlanError
    │   ├── TariffError
    │   └── DataFormatError             a readings file (CSV, LCL) is malformed
    ├── CryptoError
    │   ├── InvalidKey                  a key fails validation / is too small
    │   │   ├── BaseNotDerived          a Paillier h_s other than the base derived from n
    │   │   └── UnprovenKey             a household key's well-formedness proof is
    │   │                               missing or does not verify
    │   ├── InvalidCiphertext           out of range, not a unit, malformed
    │   ├── KeyMismatch                 ciphertext made under another key id
    │   ├── PlaintextOverflow           value outside the encodable signed range
    │   ├── RandomnessPoolEmpty         a precomputed randomness pool is used up
    │   │                               (also a LookupError)
    │   ├── InvalidProof                a decryption proof does not verify
    │   └── InvalidSignature            a signature does not verify
    ├── ProtocolError
    │   ├── LocalProtocolError          we tried to break the protocol
    │   └── RemoteProtocolError         the peer broke it
    │       ├── MalformedMessage        does not decode / wrong types / bad field
    │       ├── MessageTooLarge         over the size limit
    │       ├── UnsupportedVersion      wire/file version we do not speak
    │       ├── UnexpectedMessage       legal message in the wrong state
    │       ├── ReplayedMessage         already seen (same id / nonce)
    │       ├── DuplicateReading        a second record for the same interval
    │       ├── StaleMessage            outside the freshness window
    │       ├── ThresholdEquivocation   group members were shown different broadcasts
    │       └── UnknownParty            meter / household not registered
    ├── PolicyError                     a party refuses, by its plan
    │   ├── BudgetExceeded              comparison budget used up
    │   ├── NoFreshReading              no reading of the meter's own last intervals to compare
    │   ├── GroupTooSmall               fewer than the plan's minimum
    │   │   └── IsolationRefused        revealing would unmask fewer survivors than the minimum
    │   │       └── EquivocationRefused the announcement is not endorsed by a committee quorum
    │   ├── MembershipChangeRefused     group roster change beyond the plan (overlap, daily limit)
    │   └── TariffRejected              tariff differs from the published one or
    │                                   breaks the plan's price bounds
    ├── BillingError
    │   ├── BillMismatch                the statement's bill differs from ours
    │   ├── BillOutOfBounds             a bill outside the bounds its plan allows
    │   ├── AlreadySettled              a second statement for a period already paid
    │   └── AuditFailure                an offline audit found an inconsistency
    │       └── RebuildMismatch         E(bill) is not the one rebuilt from the
    │                                   meter-signed records and the tariff
    ├── AggregationError                a round cannot complete
    ├── TransportError                  network / framing failure
    └── StoreError                      persistent state is unusable
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AggregationError",
    "AlreadySettled",
    "AuditFailure",
    "BaseNotDerived",
    "BillMismatch",
    "BillOutOfBounds",
    "BillingError",
    "BudgetExceeded",
    "ConfigError",
    "CryptoError",
    "DataFormatError",
    "DependencyError",
    "DuplicateReading",
    "EquivocationRefused",
    "GroupTooSmall",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidCiphertext",
    "InvalidKey",
    "InvalidProof",
    "InvalidSignature",
    "InvalidState",
    "IsolationRefused",
    "KeyMismatch",
    "LocalProtocolError",
    "MalformedMessage",
    "MembershipChangeRefused",
    "MessageTooLarge",
    "NoFreshReading",
    "NotFound",
    "PlaintextOverflow",
    "PlanError",
    "PolicyError",
    "PrivmeterError",
    "ProtocolError",
    "RandomnessPoolEmpty",
    "RebuildMismatch",
    "RemoteProtocolError",
    "ReplayedMessage",
    "SelfCheckFailed",
    "StaleMessage",
    "StoreError",
    "TariffError",
    "TariffRejected",
    "ThresholdEquivocation",
    "TransportError",
    "UnexpectedMessage",
    "UnknownParty",
    "UnprovenKey",
    "UnsupportedVersion",
]


class PrivmeterError(Exception):
    """Root of every privmeter error.

    ``context`` holds machine-readable details (``meter_id``, ``interval``...)
    for logs; ``code`` is the short, uninformative string a party may send to
    an untrusted peer.
    """

    code = "error"

    def __init__(self, message: str = "", **context: Any) -> None:
        super().__init__(message)
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        # Exception's str(), not a builtin base's: KeyError would quote the message.
        base = Exception.__str__(self)
        if self.context:
            extra = ", ".join(f"{k}={v!r}" for k, v in sorted(self.context.items()))
            return f"{base} [{extra}]"
        return base


class InvalidArgument(PrivmeterError, ValueError):
    """A caller passed a value outside the function's documented domain (a ValueError too)."""

    code = "error"  # towards a peer: an internal error, like any bug (says nothing)


class InvalidArgumentType(PrivmeterError, TypeError):
    """A caller passed a value of the wrong type (a TypeError too)."""

    code = "error"  # towards a peer: an internal error, like any bug (says nothing)


class InvalidState(PrivmeterError, RuntimeError):
    """An object used before it is ready, e.g. a model before ``fit`` (a RuntimeError too)."""

    code = "error"  # towards a peer: an internal error, like any bug (says nothing)


class NotFound(PrivmeterError, KeyError):
    """A lookup by name found nothing: a group, meter or record (a KeyError too)."""

    code = "error"  # towards a peer: an internal error, like any bug (says nothing)


class DependencyError(PrivmeterError, RuntimeError):
    """A third-party tool or worker process failed or returned something unusable."""

    code = "error"  # towards a peer: an internal error, like any bug (says nothing)


class SelfCheckFailed(PrivmeterError):
    """A benchmark's or demo's result differs from its plaintext reference."""

    code = "self-check"


class ConfigError(PrivmeterError):
    code = "config"


class PlanError(ConfigError):
    code = "plan"


class TariffError(ConfigError):
    code = "tariff"


class DataFormatError(ConfigError):
    """A readings file is malformed; the message names the file and line."""

    code = "data-format"


class CryptoError(PrivmeterError):
    code = "crypto"


class InvalidKey(CryptoError):
    code = "invalid-key"


class BaseNotDerived(InvalidKey):
    """A Paillier public key whose DJN base h_s is not the one derived from n.

    Only the derived base is an n-th residue by construction (nobody can tell
    an n-th residue from a non-residue without the factors); with any other
    h_s a meter's encryptions would not decrypt to its readings.
    """

    code = "invalid-key"


class UnprovenKey(InvalidKey):
    """A household key registered without a valid well-formedness proof (gcd(n, phi(n)) = 1)."""

    code = "invalid-key"


class InvalidCiphertext(CryptoError):
    code = "invalid-ciphertext"


class KeyMismatch(CryptoError):
    code = "key-mismatch"


class PlaintextOverflow(CryptoError):
    code = "overflow"


class RandomnessPoolEmpty(CryptoError, LookupError):
    """A precomputed randomness pool has nothing left: ``fill()`` it offline (a LookupError too)."""

    code = "error"  # towards a peer: an internal error, like any bug (says nothing)


class InvalidProof(CryptoError):
    code = "invalid-proof"


class InvalidSignature(CryptoError):
    code = "invalid-signature"


class ProtocolError(PrivmeterError):
    code = "protocol"


class LocalProtocolError(ProtocolError):
    code = "local-protocol"


class RemoteProtocolError(ProtocolError):
    code = "remote-protocol"


class MalformedMessage(RemoteProtocolError):
    code = "malformed"


class MessageTooLarge(RemoteProtocolError):
    code = "too-large"


class UnsupportedVersion(RemoteProtocolError):
    code = "version"


class UnexpectedMessage(RemoteProtocolError):
    code = "unexpected"


class ReplayedMessage(RemoteProtocolError):
    code = "replay"


class DuplicateReading(RemoteProtocolError):
    code = "duplicate"


class StaleMessage(RemoteProtocolError):
    code = "stale"


class ThresholdEquivocation(RemoteProtocolError):
    """The head-end showed members of one group different event broadcasts."""

    code = "equivocation"


class UnknownParty(RemoteProtocolError):
    code = "unknown-party"


class PolicyError(PrivmeterError):
    code = "policy"


class BudgetExceeded(PolicyError):
    code = "budget"


class NoFreshReading(PolicyError):
    """A meter compares only a reading of its own clock's last intervals (never one a peer picks)."""

    code = "no-fresh-reading"


class GroupTooSmall(PolicyError):
    code = "group-too-small"


class IsolationRefused(GroupTooSmall):
    """A meter refuses to reveal shares for an interval because, by the head-end's
    own announcement, some survivor it holds would be unmasked in a connected set
    of survivors smaller than the plan's minimum (aggregation isolation)."""

    code = "isolation-refused"


class EquivocationRefused(IsolationRefused):
    """A meter of a sparse graph refuses to reveal shares for an interval because
    the head-end's announcement deciding them is not certified: fewer than a
    quorum of the group's committee endorsed it, or a quorum endorsed another
    announcement than the one this meter was shown (aggregation equivocation)."""

    code = "equivocation-refused"


class MembershipChangeRefused(PolicyError):
    """A meter refuses a new group roster: overlapping groups or too many changes a day."""

    code = "membership-change-refused"


class TariffRejected(PolicyError):
    code = "tariff-rejected"


class BillingError(PrivmeterError):
    code = "billing"


class BillMismatch(BillingError):
    code = "bill-mismatch"


class BillOutOfBounds(BillingError):
    """A proven (or expected) bill outside ``Plan.bill_bounds`` for its period and record count."""

    code = "bill-bounds"


class AlreadySettled(BillingError):
    """The household already paid another statement for this billing period."""

    code = "settled"


class AuditFailure(BillingError):
    code = "audit"


class RebuildMismatch(AuditFailure):
    """The statement's E(bill) differs from the product rebuilt from the signed records."""

    code = "audit"


class AggregationError(PrivmeterError):
    code = "aggregation"


class TransportError(PrivmeterError):
    code = "transport"


class StoreError(PrivmeterError):
    code = "store"
