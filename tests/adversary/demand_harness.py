"""A malicious head-end for demand management: it signs anything well formed.

It holds the utility's real head-end signing key, so every event, echo
bundle, query (with any challenge values) and tick it builds passes the
meter's signature checks.  Its challenges are computed from the meter's
offer the way the utility would, or crafted to read more than one bit.
Tests drive :class:`~privmeter.protocol.demand.MeterDemandAgent` with it and
check that the meter's outputs carry at most one bit per allowed comparison.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from privmeter.crypto import _numtheory as nt
from privmeter.crypto.elgamal import Group
from privmeter.crypto.signing import SigningKey
from privmeter.protocol.comparison import ComparisonChallenge, ComparisonOffer, UtilityComparison
from privmeter.protocol.demand_messages import (
    EVENT_CONTEXT,
    QUERY_CONTEXT,
    ComparisonQuery,
    DemandEvent,
)
from privmeter.protocol.records import canonical

GROUP = "feeder-x"


@dataclass
class LyingHeadEnd:
    """Builds signed messages of any content."""

    key: SigningKey = field(default_factory=lambda: SigningKey.from_seed(b"E" * 32))
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    counter: int = 0

    def event(
        self,
        *,
        now: int,
        bits: int = 16,
        radix: int = 4,
        side: str = "above",
        lifetime: int = 300,
        duration: int = 30,
    ) -> DemandEvent:
        self.counter += 1
        eid = hashlib.sha256(b"lie" + self.counter.to_bytes(8, "big")).hexdigest()[:32]
        fields = dict(
            event_id=eid,
            group_id=GROUP,
            action="curtail",
            side=side,
            start_interval=now // 900 + 1,
            duration_minutes=duration,
            issued_at=now,
            expires_at=now + lifetime,
            bits=bits,
            radix=radix,
        )
        unsigned = DemandEvent(**fields, signature=bytes(64))
        return DemandEvent(
            **fields, signature=self.key.sign(EVENT_CONTEXT, unsigned.signed_payload())
        )

    def query(
        self,
        ev: DemandEvent,
        meter_id: str,
        values: Sequence[int],
        offer_digest: bytes,
        *,
        now: int,
        query_id: int | None = None,
    ) -> ComparisonQuery:
        qid = self.counter if query_id is None else query_id
        ch = ComparisonChallenge(offer_digest=offer_digest, values=tuple(int(v) for v in values))
        sig = self.key.sign(QUERY_CONTEXT, canonical(ev.event_id, meter_id, qid, now, ch.digest()))
        return ComparisonQuery(
            event_id=ev.event_id,
            meter_id=meter_id,
            query_id=qid,
            issued_at=now,
            challenge=ch,
            signature=sig,
        )


def pairs(offer: ComparisonOffer) -> list[tuple[int, int]]:
    v = offer.values
    return [(v[k], v[k + 1]) for k in range(0, len(v), 2)]


def honest_values(offer: ComparisonOffer, threshold: int, rng: random.Random) -> tuple[int, ...]:
    """What an honest utility sends (and its sign is kept by the caller)."""
    uc = UtilityComparison(
        offer, threshold, bits=offer.bits, radix=offer.radix, allow_insecure=True, rng=rng
    )
    return uc.challenge.values


def combination_values(
    group: Group, offer: ComparisonOffer, coeffs: Sequence[Sequence[int]], consts: Sequence[int]
) -> tuple[int, ...]:
    """``D`` values, each an arbitrary linear combination (exponents) of the offer's ciphertexts plus a
    constant plaintext: the head-end computing any linear predicate it likes of the reading's digits."""
    p = group.p
    ps = pairs(offer)
    out: list[int] = []
    for row, c in zip(coeffs, consts, strict=True):
        a, b = 1, nt.powmod(group.g, c % group.q, p)
        for (x, y), k in zip(ps, row, strict=False):
            if k:
                a = a * nt.powmod(x, k % group.q, p) % p
                b = b * nt.powmod(y, k % group.q, p) % p
        out += [a, b]
    return tuple(out)
