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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from privmeter.errors import MessageTooLarge, UnknownParty
from privmeter.parties.messages import Relayed

# A relay decodes every message the meters and the head-end exchange: one registry holds them all.
from privmeter.parties.wire import decode
from privmeter.protocol.codec import DEFAULT_MAX_BYTES, encode

__all__ = ["Concentrator", "Relayed", "hierarchical_totals", "unwrap"]


def unwrap(env: Relayed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The inner message of an envelope, fully validated by the codec."""
    if len(env.payload) > max_bytes:
        raise MessageTooLarge(f"relayed payload of {len(env.payload)} bytes")
    return decode(env.payload, max_bytes=max_bytes)


class Concentrator:
    """A feeder's relay (sans-IO): wrap upstream, unwrap downstream, count bytes."""

    def __init__(
        self, concentrator_id: str, meters: Iterable[str], *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if not 0 < max_bytes <= DEFAULT_MAX_BYTES:
            raise ValueError(f"max_bytes must be within 1..{DEFAULT_MAX_BYTES}")
        self.concentrator_id = concentrator_id
        self.meters = frozenset(meters)
        self.max_bytes = max_bytes
        self.bytes_up: Counter[str] = Counter()
        self.bytes_down: Counter[str] = Counter()

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
                raise ValueError(f"the tree has a cycle through {p!r}")
            seen.add(p)
            acc = out.setdefault(p, {})
            for t, v in feeder_totals[node].items():
                prev = acc.get(t, 0)
                acc[t] = None if v is None or prev is None else prev + v
            p = parent.get(p)
    return out
