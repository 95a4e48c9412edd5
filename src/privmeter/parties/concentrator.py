"""Data concentrators: the tree topology (meters -> concentrator -> head-end).

What it is for: in a tree deployment each data concentrator serves the meters
of one feeder.  It relays their messages to the head-end and the head-end's
messages to them, wrapped in :class:`Relayed` envelopes (codec tag
``sys.relay``) so one upstream connection carries a whole feeder; the
head-end aggregates each feeder's private total (masked aggregation inside
the feeder) and sums the feeders into the substation total: hierarchical
totals (:func:`hierarchical_totals`).

What a concentrator learns: no reading.  Every reading it relays is either
encrypted end to end (billing ciphertexts under household keys, Shamir
shares under pairwise keys) or masked (aggregation inputs); the one value in
clear is a household's paid bill, once per billing period (its proof is
addressed to the head-end, which learns the bill anyway).  Every payload is
authenticated by the meter (signatures, MACs), so a concentrator can drop
or delay messages (a dropout, handled by the protocols) but cannot read,
forge or redirect them: the head-end checks the envelope's meter belongs to
this concentrator *and* the inner message's own authentication.

Security assumption: concentrators are untrusted relays (honest-but-curious
or dropping).  Guarantee: :meth:`Concentrator.up` / :meth:`Concentrator.down`
refuse meters outside the concentrator's feeder
(:class:`~privmeter.errors.UnknownParty`) and payloads larger than its
``max_bytes`` (:class:`~privmeter.errors.MessageTooLarge`), either direction.

States: a deployed concentrator (``Concentrator(..., link=True)``, the
service of :mod:`privmeter.app.concentrator`) is ``new``, ``connected`` (the
head-end, no roster yet), ``detached`` (a roster, the head-end unreachable)
or ``relaying`` (both), moved along :data:`FEEDER_LINK`
(``docs/states.md``): it relays only while ``relaying``
(:class:`~privmeter.errors.UnknownParty` before the first roster, as for any
meter off the roster, which is checked first;
:class:`~privmeter.errors.TransportError` while the head-end is
unreachable).  An in-process relay (simulation, tests; ``link=False``) has no
link to lose and is ``relaying`` from the start.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from privmeter.errors import InvalidArgument, MessageTooLarge, TransportError, UnknownParty
from privmeter.parties.messages import Relayed

# A relay decodes every message the meters and the head-end exchange: one registry holds them all.
from privmeter.parties.wire import decode
from privmeter.protocol.codec import DEFAULT_MAX_BYTES, encode
from privmeter.protocol.states import Machine, Refusal, register

__all__ = [
    "FEEDER_LINK",
    "Concentrator",
    "FeederInput",
    "FeederState",
    "Relayed",
    "hierarchical_totals",
    "unwrap",
]


class FeederState(enum.Enum):
    """A concentrator's link between its feeder and the head-end."""

    NEW = "new"  # no signed roster, no head-end connection
    CONNECTED = "connected"  # the head-end connected, its roster not received yet
    DETACHED = "detached"  # a roster (kept across restarts), the head-end unreachable
    RELAYING = "relaying"  # a roster and the head-end: messages pass both ways


class FeederInput(enum.Enum):
    ROSTER = "roster"  # a newer head-end-signed roster of the feeder taken
    CONNECT = "connect"  # the upstream connection is up
    DISCONNECT = "disconnect"  # it is lost (or was never up)
    UP = "up"  # a meter's message, to wrap for the head-end
    DOWN = "down"  # a head-end envelope, for a meter


_F, _FI = FeederState, FeederInput
_UNREACHABLE = Refusal(TransportError, "the head-end is unreachable")
_NO_ROSTER = Refusal(UnknownParty, "no signed roster yet: no meter is behind this concentrator")
FEEDER_LINK = register(
    Machine(
        "feeder link (concentrator)",
        FeederState,
        FeederInput,
        _F.NEW,
        {
            _F.NEW: {_FI.ROSTER: _F.DETACHED, _FI.CONNECT: _F.CONNECTED, _FI.DISCONNECT: _F.NEW},
            _F.CONNECTED: {_FI.ROSTER: _F.RELAYING, _FI.DISCONNECT: _F.NEW},
            _F.DETACHED: {
                _FI.ROSTER: _F.DETACHED,
                _FI.CONNECT: _F.RELAYING,
                _FI.DISCONNECT: _F.DETACHED,
            },
            _F.RELAYING: {
                _FI.ROSTER: _F.RELAYING,
                _FI.DISCONNECT: _F.DETACHED,
                _FI.UP: _F.RELAYING,
                _FI.DOWN: _F.RELAYING,
            },
        },
        {
            **{(_F.DETACHED, inp): _UNREACHABLE for inp in (_FI.UP, _FI.DOWN)},
            **{
                (st, inp): _NO_ROSTER for st in (_F.NEW, _F.CONNECTED) for inp in (_FI.UP, _FI.DOWN)
            },
        },
        default=Refusal(TransportError, "already connected to the head-end"),
    )
)


def unwrap(env: Relayed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The inner message of an envelope, fully validated by the codec."""
    if len(env.payload) > max_bytes:
        raise MessageTooLarge(f"relayed payload of {len(env.payload)} bytes")
    return decode(env.payload, max_bytes=max_bytes)


class Concentrator:
    """A feeder's relay (sans-IO): wrap upstream, unwrap downstream, count bytes.

    ``link``: the relay has a head-end connection to watch (the deployed
    service): it starts ``new`` and relays only while ``relaying``
    (:data:`FEEDER_LINK`); without (in process) it is ``relaying`` from the start.
    """

    def __init__(
        self,
        concentrator_id: str,
        meters: Iterable[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        link: bool = False,
    ) -> None:
        if not 0 < max_bytes <= DEFAULT_MAX_BYTES:
            raise InvalidArgument(f"max_bytes must be within 1..{DEFAULT_MAX_BYTES}")
        self.concentrator_id = concentrator_id
        self.meters = frozenset(meters)
        self.max_bytes = max_bytes
        self.bytes_up: Counter[str] = Counter()
        self.bytes_down: Counter[str] = Counter()
        self.state = FeederState.NEW if link else FeederState.RELAYING

    def _next(self, inp: FeederInput, **context: object) -> FeederState:
        return FEEDER_LINK.next(self.state, inp, concentrator=self.concentrator_id, **context)

    def roster(self, meters: Iterable[str]) -> None:
        """A newer signed roster of the feeder: exactly these meters from now on."""
        nxt = self._next(FeederInput.ROSTER)
        self.meters, self.state = frozenset(meters), nxt

    def connected(self) -> None:
        """The upstream connection to the head-end is up."""
        self.state = self._next(FeederInput.CONNECT)

    def disconnected(self) -> None:
        """The upstream connection is lost (a no-op when it was not up)."""
        self.state = self._next(FeederInput.DISCONNECT)

    def _check(self, meter_id: str) -> None:
        if meter_id not in self.meters:
            raise UnknownParty(
                "meter is not behind this concentrator",
                meter_id=meter_id,
                concentrator=self.concentrator_id,
            )

    def up(self, meter_id: str, msg: Any) -> Relayed:
        """A meter's message, wrapped for the head-end."""
        self._check(meter_id)
        self._next(FeederInput.UP, meter_id=meter_id)
        data = encode(msg)
        if len(data) > self.max_bytes:
            raise MessageTooLarge(
                f"message of {len(data)} bytes, more than {self.max_bytes}", meter_id=meter_id
            )
        self.bytes_up[meter_id] += len(data)
        return Relayed(meter_id=meter_id, payload=data)

    def down(self, env: Relayed) -> tuple[str, Any]:
        """A head-end envelope: which meter, and the message to deliver."""
        self._check(env.meter_id)
        self._next(FeederInput.DOWN, meter_id=env.meter_id)
        inner = unwrap(env, max_bytes=self.max_bytes)
        self.bytes_down[env.meter_id] += len(env.payload)
        return env.meter_id, inner


def hierarchical_totals(
    feeder_totals: Mapping[str, Mapping[int, int | None]], parent: Mapping[str, str]
) -> dict[str, dict[int, int | None]]:
    """Sum feeder totals up the tree: ``parent`` maps a node to its parent (root has none).

    A node's total for an interval is None as soon as one of its children's
    is (an unmasked total cannot be partly known).
    """
    out: dict[str, dict[int, int | None]] = {k: dict(v) for k, v in feeder_totals.items()}
    for node in list(feeder_totals):
        p = parent.get(node)
        seen = {node}
        while p is not None:
            if p in seen:
                raise InvalidArgument(f"the tree has a cycle through {p!r}")
            seen.add(p)
            acc = out.setdefault(p, {})
            for t, v in feeder_totals[node].items():
                prev = acc.get(t, 0)
                acc[t] = None if v is None or prev is None else prev + v
            p = parent.get(p)
    return out
