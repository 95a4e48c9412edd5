"""In-memory driver for a masked-aggregation group: N meters and a head-end.

What it is for: tests, the benchmark and fast simulations run whole groups
without sockets, delivering each party's output messages to the other side
as encoded bytes (so every message crosses the real codec).  Dropouts are
scripted per interval: a meter can miss an interval entirely (``offline``),
or send its answer without a reading (``no_reading``: it drops before
contributing but still helps unmask).  The runner, not the parties, decides
when an interval's deadline has passed.

Security: none of its own; it is the honest network.  Attack tests
subclass or bypass it to play a malicious head-end.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import PolicyError
from privmeter.protocol.aggregation import (
    AggregateResult,
    AggregationHeadEnd,
    AggregationMeter,
    EpochCache,
)
from privmeter.protocol.aggregation_messages import KeyBundle
from privmeter.protocol.codec import decode, encode
from privmeter.protocol.membership import MembershipPolicy

__all__ = ["GroupSimulation", "make_group"]

Reading = Callable[[str, int], Sequence[int] | int]


@dataclass
class GroupSimulation:
    """A head-end and its meters, wired in memory."""

    headend: AggregationHeadEnd
    meters: dict[str, AggregationMeter]
    bytes_up: int = 0  # meter -> head-end bytes, all intervals
    bytes_down: int = 0  # head-end -> meter bytes
    messages_up: int = 0
    results: list[AggregateResult] = field(default_factory=list)
    refusals: list[tuple[str, int]] = field(default_factory=list)  # (meter, interval)

    def setup(self) -> None:
        for m in self.meters.values():
            data = encode(m.advertise())
            self.bytes_up += len(data)
            self.headend.handle_advert(data)
        data = encode(self.headend.make_bundle())
        bundle = decode(data, expect=KeyBundle)  # once: it is the same broadcast for all
        for m in self.meters.values():
            self.bytes_down += len(data)
            m.handle_bundle(bundle)

    def step(
        self, reading: Reading, *, offline: Collection[str] = (), no_reading: Collection[str] = ()
    ) -> AggregateResult | None:
        """Run one interval; returns the result that became final (the previous one)."""
        starts = self.headend.open_interval_wire()
        t = self.headend.current
        for mid, data in starts.items():
            if mid in offline or mid not in self.meters:
                continue
            self.bytes_down += len(data)
            value = None if mid in no_reading else reading(mid, t)
            try:
                out = encode(self.meters[mid].handle_start(data, value))
            except PolicyError:  # the meter refuses by its plan (e.g. GroupTooSmall)
                self.refusals.append((mid, t))
                continue
            self.bytes_up += len(out)
            self.messages_up += 1
            self.headend.handle_input(out)
        res = self.headend.close_interval()
        if res is not None:
            self.results.append(res)
        return res


def make_group(
    n: int,
    *,
    group: str = "feeder-1",
    epoch: int = 1,
    min_survivors: int = 3,
    dim: int = 1,
    degree: int | None = None,
    first_interval: int = 1000,
    seed: int = 1,
    meter_keys: Mapping[str, SigningKey] | None = None,
    headend_key: SigningKey | None = None,
    membership: Mapping[str, MembershipPolicy] | None = None,
    share_verified: bool = True,
) -> GroupSimulation:
    """A fresh group of ``n`` meters with deterministic keys (``seed``);
    ``membership``: each meter's roster policy (by meter id), if any;
    ``share_verified``: the meters share one cache of verified adverts and
    endorsements (fast simulations; a benchmark turns it off so that each
    meter pays its own signature checks)."""
    rng = random.Random(seed)
    if meter_keys is None:
        meter_keys = {
            f"m{i:05d}": SigningKey.from_seed(rng.getrandbits(256).to_bytes(32, "big"))
            for i in range(n)
        }
    if headend_key is None:
        headend_key = SigningKey.from_seed(rng.getrandbits(256).to_bytes(32, "big"))
    registry: dict[str, VerifyKey] = {m: k.verify_key for m, k in meter_keys.items()}
    # the simulation's choice: its head-end and meters share one cache of epoch tables
    # (pure functions of the bundle, built once instead of n + 1 times)
    epochs = EpochCache()
    he = AggregationHeadEnd(
        headend_key,
        registry,
        group=group,
        epoch=epoch,
        first_interval=first_interval,
        min_survivors=min_survivors,
        dim=dim,
        degree=degree,
        rng=random.Random(rng.getrandbits(64)),
        epochs=epochs,
    )
    verified: set[bytes] = set()
    meters = {
        m: AggregationMeter(
            m,
            k,
            registry,
            headend_key.verify_key,
            group=group,
            epoch=epoch,
            min_survivors=min_survivors,
            dim=dim,
            verified=verified if share_verified else None,
            rng=random.Random(rng.getrandbits(64)),
            membership=(membership or {}).get(m),
            epochs=epochs,
        )
        for m, k in meter_keys.items()
    }
    return GroupSimulation(headend=he, meters=meters)
