"""Front door over real TCP: meters' records reach their shards in batches; receipts after commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from privmeter.bench.fleet import make_world
from privmeter.cluster.frontdoor import FrontDoor
from privmeter.cluster.headend import start_cluster
from privmeter.cluster.localpg import LocalPostgres
from privmeter.errors import PrivmeterError
from privmeter.net.handshake import TrustStore
from privmeter.net.transport import Server, connect
from privmeter.protocol.codec import decode
from privmeter.protocol.records import Receipt, record_bytes, record_from_bytes


def test_front_door_batches_and_acknowledges_after_commit(
    pg: LocalPostgres, tmp_path: Path, paillier_small
) -> None:
    world = make_world(
        groups=3, per_group=4, intervals=2, household=paillier_small[1], min_survivors=3
    )
    head = start_cluster(
        dsn=pg.create_database("frontdoor"),
        headend_key=world.write_headend_key(tmp_path),
        plans=[world.plan_toml],
        groups=world.group_configs(),
        shards=2,
        backend="local",
        interval_seconds=60,
        min_key_bits=512,
    )
    head.register(world.registrations())
    door = FrontDoor(head)
    door.interval = world.first + 1
    trust = TrustStore((k.verify_key, m) for m, k in world.meter_keys.items())

    async def main() -> list[Receipt]:
        server = Server("127.0.0.1", 0, world.headend_key, trust, door.handle)
        await server.start()
        try:
            conns = {
                m: await connect(
                    "127.0.0.1", server.port, world.meter_keys[m], world.headend_key.verify_key
                )
                for m in world.meters
            }

            async def send(m: str, t: int) -> Receipt:
                rec = decode(world.records[(m, t)])
                return await conns[m].request(rec, expect=Receipt)

            receipts = await asyncio.gather(
                *(send(m, t) for t in (world.first, world.first + 1) for m in world.meters)
            )
            other = world.meters[0]  # a meter sending another meter's record is refused ...
            with pytest.raises(PrivmeterError):
                await conns[world.meters[1]].request(decode(world.records[(other, world.first)]))
            # ... and the same record again from its own meter (its receipt was lost, say) gets the
            # same receipt again, counted once
            again = await conns[other].request(
                decode(world.records[(other, world.first)]), expect=Receipt
            )
            assert again in receipts
            for c in conns.values():
                await c.close()
            return list(receipts)
        finally:
            await server.close()

    receipts = asyncio.run(main())
    assert len(receipts) == 2 * len(world.meters)
    for r in receipts:
        r.verify(world.headend_key.verify_key)
        logged = head.records(
            r.meter_id, r.interval, r.interval + 1
        )  # committed before the receipt
        assert len(logged) == 1 and record_bytes(record_from_bytes(logged[0])) == record_bytes(
            record_from_bytes(world.records[(r.meter_id, r.interval)])
        )
    assert door.batches < door.forwarded  # several meters' messages per shard call
    places = {(head.map.shard_of_meter(r.meter_id), r.seq) for r in receipts}
    assert (
        len(places) == len(receipts) == 2 * len(world.meters)
    )  # each record logged once, the resent one too
    head.close()
