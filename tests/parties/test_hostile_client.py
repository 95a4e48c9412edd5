"""A hostile client against the head-end service over real sockets.

Garbage, truncated frames, oversized frames, an unknown identity, forged and
replayed records, a flood of half-open connections: each gets a clear error
code or a closed connection, and an honest meter connected alongside keeps
being served (its records acknowledged with valid receipts).
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from privmeter.crypto.signing import SigningKey
from privmeter.errors import TransportError, UnknownParty
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import connect
from privmeter.parties.headend_service import NetLink, start_server
from privmeter.protocol.records import Receipt, make_record
from privmeter.sim.network import trust_for
from privmeter.sim.runner import make_core
from privmeter.sim.scenario import World


async def _raw(port: int, data: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    await w.drain()
    try:
        got = await asyncio.wait_for(r.read(), 5)
    finally:
        w.close()
    return got


async def _recv(conn, kind):  # next message of a kind (skips the welcome etc.)
    while True:
        msg = await conn.recv(timeout=5)
        if isinstance(msg, kind | ErrorMessage):
            return msg


def test_hostile_client(tiny_world: World) -> None:
    asyncio.run(_scenario(tiny_world))


async def _scenario(world: World) -> None:
    core = make_core(world)
    link = NetLink(core, round_timeout=2)
    server = await start_server(
        core,
        link,
        trust_for(world),
        host="127.0.0.1",
        port=0,
        max_handshakes=8,
        handshake_timeout=1.0,
    )
    port = server.port
    he_vk = core.signing_key.verify_key
    h0, h1 = world.households[0], world.households[1]
    t = world.first_interval + 2
    link.interval, link.now = t, (t + 1) * 900
    try:
        honest = await connect("127.0.0.1", port, h1.signing_key, he_vk)
        # 1. garbage: closed without a session
        assert b"privmeter" not in await _raw(port, b"\x00\x00\x00\x05hello-garbage" * 10)
        # 2. a truncated frame, then the peer vanishes
        await _raw(port, struct.pack(">I", 100) + b"x" * 10)
        # 3. an oversized frame header before any handshake
        await _raw(port, struct.pack(">I", 50 * 1024 * 1024) + b"y" * 64)
        # 4. an identity the head-end does not know
        with pytest.raises((UnknownParty, TransportError)):
            await connect("127.0.0.1", port, SigningKey.generate(), he_vk)
        # 5. a flood of half-open connections (beyond max_handshakes): refused or timed out
        flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(24)]
        await asyncio.sleep(1.5)
        for _, w in flood:
            w.close()
        assert server.stats.refused_capacity + server.stats.handshake_timeouts >= 16
        # 6. an authenticated meter sending a forged record, then a replay
        mal = await connect("127.0.0.1", port, h0.signing_key, he_vk)
        pk = h0.secret_key.public_key
        forged = make_record(h1.signing_key, h0.meter_id, t, pk, pk.encrypt(5))
        await mal.send(forged)
        err = await _recv(mal, Receipt)
        assert isinstance(err, ErrorMessage) and err.code == "invalid-signature"
        good = make_record(h0.signing_key, h0.meter_id, t, pk, pk.encrypt(5))
        await mal.send(good)
        rec = await _recv(mal, Receipt)
        assert isinstance(rec, Receipt)
        await mal.send(good)
        err = await _recv(mal, Receipt)
        assert isinstance(err, ErrorMessage) and err.code == "replay"
        # a record claiming to be from another meter than the authenticated one
        other = make_record(
            h1.signing_key,
            h1.meter_id,
            t,
            h1.secret_key.public_key,
            h1.secret_key.public_key.encrypt(1),
        )
        await mal.send(other)
        err = await _recv(mal, Receipt)
        assert isinstance(err, ErrorMessage) and err.code == "unknown-party"
        await mal.close()
        # 7. the honest meter is still served
        pk1 = h1.secret_key.public_key
        await honest.send(make_record(h1.signing_key, h1.meter_id, t, pk1, pk1.encrypt(42)))
        rec = await _recv(honest, Receipt)
        assert isinstance(rec, Receipt)
        rec.verify(he_vk)
        await honest.close()
        assert core.errors["invalid-signature"] == 1 and core.errors["replay"] == 1
    finally:
        await server.close()
