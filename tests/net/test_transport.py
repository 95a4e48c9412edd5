"""The transport over real loopback sockets, including a hostile client."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from privmeter.crypto.keyagreement import AgreementKey
from privmeter.crypto.signing import SigningKey
from privmeter.errors import (
    BudgetExceeded,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    PrivmeterError,
    TransportError,
    UnknownParty,
)
from privmeter.net.channel import (
    KIND_PUSH,
    KIND_REPLY,
    KIND_REQUEST,
    Channel,
    ErrorMessage,
    RelayCipher,
    RelayEnvelope,
    pack_body,
    unpack_body,
)
from privmeter.net.emulation import LinkProfile, NetworkEmulator, OutageSchedule
from privmeter.net.framing import encode_frame, read_frame
from privmeter.net.handshake import (
    ClientHandshake,
    ClientHello,
    TrustStore,
    plain_frame,
    trust_key,
)
from privmeter.net.transport import Server, Welcome, connect
from privmeter.protocol.codec import decode, encode, message

HOST = "127.0.0.1"
SERVER = SigningKey.from_seed(b"H" * 32)
M1 = SigningKey.from_seed(b"1" * 32)
M2 = SigningKey.from_seed(b"2" * 32)
STRANGER = SigningKey.from_seed(b"X" * 32)
TRUST = TrustStore([(M1.verify_key, "meter-1"), (M2.verify_key, "meter-2")])


@message("test.net.ask")
@dataclass(frozen=True, slots=True, kw_only=True)
class Ask:
    x: int


@message("test.net.answer")
@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    x: int
    who: str


@message("test.net.note")
@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    seq: int


class App:
    def __init__(self) -> None:
        self.notes: list[tuple[str, int]] = []

    async def __call__(self, peer: str, msg: Any) -> list[Any] | None:
        if isinstance(msg, Ask):
            if msg.x < 0:
                raise BudgetExceeded("detail that must stay in the log", meter_id=peer)
            if msg.x == 13:
                raise RuntimeError("a bug in the handler")
            return [Answer(x=2 * msg.x, who=peer)]
        if isinstance(msg, Note):
            self.notes.append((peer, msg.seq))
            return None
        raise MalformedMessage(f"unexpected {type(msg).__name__}")


def run(make: Callable[..., Awaitable[None]], **server_kw: Any) -> App:
    app = App()

    async def go() -> None:
        async with Server(HOST, 0, SERVER, TRUST, app, **server_kw) as srv:
            await asyncio.wait_for(make(srv, app), 20)

    asyncio.run(go())
    return app


async def client(srv: Server, key: SigningKey = M1, **kw: Any):
    return await connect(HOST, srv.port, key, SERVER.verify_key, **kw)


async def raw_session(srv: Server, key: SigningKey = M1):
    """A hand-driven client: handshake by hand, then free to send anything."""
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    hs = ClientHandshake(key, trust_key(SERVER.verify_key, "head-end"))
    writer.write(encode_frame(hs.start()))
    writer.write(encode_frame(hs.receive(await read_frame(reader, 4096))))
    ch = hs.result.channel()
    _, _, raws = unpack_body(ch.open(await read_frame(reader)))
    assert isinstance(decode(raws[0]), Welcome)
    return reader, writer, ch


async def read_error(reader: asyncio.StreamReader, ch: Channel | None) -> str:
    payload = await asyncio.wait_for(read_frame(reader), 5)
    assert payload is not None
    if ch is None:
        msg = decode(payload[1:])
    else:
        _, _, raws = unpack_body(ch.open(payload))
        msg = decode(raws[0])
    assert isinstance(msg, ErrorMessage)
    return msg.code


async def assert_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()


async def still_serving(srv: Server, key: SigningKey = M2) -> None:
    async with await client(srv, key) as c:
        assert await c.request(Ask(x=21), expect=Answer) == Answer(x=42, who=c.local_id)


# -- the happy path -----------------------------------------------------------------


def test_request_push_and_send_to():
    async def go(srv: Server, app: App) -> None:
        async with await client(srv) as c:
            assert c.local_id == "meter-1" and c.peer_id == "head-end"
            assert srv.peers == ["meter-1"]
            assert await c.request(Ask(x=5)) == Answer(x=10, who="meter-1")
            assert await c.request_all(Ask(x=1)) == [Answer(x=2, who="meter-1")]
            await c.send(Note(seq=1))
            await c.send_many([Note(seq=2), Note(seq=3)])
            await c.ping()
            await srv.send_to("meter-1", Note(seq=99))
            assert await c.recv(timeout=5) == Note(seq=99)
            assert await srv.broadcast(Note(seq=100)) == ["meter-1"]
            assert await c.recv(timeout=5) == Note(seq=100)
            with pytest.raises(UnknownParty):
                await srv.send_to("meter-2", Note(seq=0))
            assert srv.stats.bytes_in == c.stats.bytes_out > 0
            assert 0 < c.stats.bytes_in < srv.stats.bytes_out  # the welcome is read by connect
        assert app.notes == [("meter-1", 1), ("meter-1", 2), ("meter-1", 3)]

    run(go)


def test_concurrent_clients_and_requests():
    async def go(srv: Server, app: App) -> None:
        c1, c2 = await client(srv, M1), await client(srv, M2)
        r = await asyncio.gather(*(c.request(Ask(x=i)) for i in range(20, 40) for c in (c1, c2)))
        assert sorted((a.who, a.x) for a in r) == sorted(
            (w, 2 * i) for i in range(20, 40) for w in ("meter-1", "meter-2")
        )
        await c1.close()
        await c2.close()

    run(go)


def test_handler_errors_send_code_only_and_connection_survives(caplog):
    caplog.set_level(logging.INFO, logger="privmeter.net")

    async def go(srv: Server, app: App) -> None:
        async with await client(srv) as c:
            with pytest.raises(BudgetExceeded) as ei:
                await c.request(Ask(x=-1))
            assert "detail" not in str(ei.value)
            with pytest.raises(PrivmeterError):
                await c.request(Ask(x=13))  # a handler bug: code "error", nothing else
            await c.send(Ask(x=-1))  # one-way: the error comes back as a push
            assert await c.recv(timeout=5) == ErrorMessage(code="budget")
            assert await c.request(Ask(x=4)) == Answer(x=8, who="meter-1")
        assert srv.stats.errors["budget"] == 2

    run(go)
    assert "detail that must stay in the log" in caplog.text


def test_server_shutdown_fails_pending_and_closes_clients():
    async def go() -> None:
        gate = asyncio.Event()

        async def slow(peer: str, msg: Any) -> list[Any]:
            await gate.wait()
            return []

        srv = Server(HOST, 0, SERVER, TRUST, slow)
        await srv.start()
        c = await client(srv)
        pending = asyncio.create_task(c.request(Ask(x=1), timeout=10))
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(srv.close())
        await asyncio.sleep(0.05)
        gate.set()
        await closing
        with pytest.raises(TransportError):
            await pending
        await asyncio.wait_for(c.wait_closed(), 5)
        with pytest.raises(TransportError):
            await c.send(Note(seq=1))
        await c.close()

    asyncio.run(go())


def test_reconnect_replaces_previous_connection():
    async def go(srv: Server, app: App) -> None:
        c1 = await client(srv)
        c2 = await client(srv)
        await asyncio.wait_for(c1.wait_closed(), 5)
        assert await c2.request(Ask(x=3)) == Answer(x=6, who="meter-1")
        assert srv.peers == ["meter-1"]
        await c1.close()
        await c2.close()

    run(go)


# -- authentication -------------------------------------------------------------------


class Impostor:
    def __init__(self, claimed: SigningKey, real: SigningKey) -> None:
        self.verify_key = claimed.verify_key
        self._real = real

    def sign(self, context: bytes, payload: bytes) -> bytes:
        return self._real.sign(context, payload)


def test_wrong_server_key():
    async def go(srv: Server, app: App) -> None:
        with pytest.raises(UnknownParty):
            await connect(HOST, srv.port, M1, STRANGER.verify_key)
        await still_serving(srv)

    run(go)


def test_untrusted_client():
    async def go(srv: Server, app: App) -> None:
        with pytest.raises(UnknownParty):
            await client(srv, STRANGER)
        assert srv.stats.handshake_failures == 1
        await still_serving(srv)

    run(go)


def test_bad_signature_handshake():
    async def go(srv: Server, app: App) -> None:
        with pytest.raises(InvalidSignature):
            await client(srv, Impostor(M1, STRANGER))  # type: ignore[arg-type]
        assert srv.peers == []
        await still_serving(srv)

    run(go)


def test_impostor_server():
    async def go() -> None:
        fake = Server(HOST, 0, Impostor(SERVER, STRANGER), TRUST, App())  # type: ignore[arg-type]
        async with fake:
            with pytest.raises(InvalidSignature):
                await client(fake)

    asyncio.run(go())


def test_unsupported_version():
    async def go(srv: Server, app: App) -> None:
        reader, writer = await asyncio.open_connection(HOST, srv.port)
        writer.write(
            encode_frame(plain_frame(ClientHello(versions=(9,), ephemeral=os.urandom(32))))
        )
        assert await read_error(reader, None) == "version"
        await assert_closed(reader, writer)

    run(go)


# -- the hostile client ---------------------------------------------------------------


def test_tampered_ciphertext():
    async def go(srv: Server, app: App) -> None:
        reader, writer, ch = await raw_session(srv)
        rec = bytearray(ch.seal(pack_body(KIND_REQUEST, 1, [encode(Ask(x=1))])))
        rec[12] ^= 0x01
        writer.write(encode_frame(bytes(rec)))
        assert await read_error(reader, ch) == "invalid-ciphertext"
        await assert_closed(reader, writer)
        await still_serving(srv)

    run(go)


def test_replayed_frame():
    async def go(srv: Server, app: App) -> None:
        reader, writer, ch = await raw_session(srv)
        rec = ch.seal(pack_body(KIND_PUSH, 0, [encode(Note(seq=1))]))
        writer.write(encode_frame(rec))
        writer.write(encode_frame(rec))
        assert await read_error(reader, ch) == "replay"
        await assert_closed(reader, writer)
        assert app.notes == [("meter-1", 1)]  # the replay was not delivered
        await still_serving(srv)

    run(go)


@pytest.mark.parametrize("after_handshake", [False, True])
def test_garbage_bytes(after_handshake):
    async def go(srv: Server, app: App) -> None:
        if after_handshake:
            reader, writer, _ = await raw_session(srv)
        else:
            reader, writer = await asyncio.open_connection(HOST, srv.port)
        junk = random.Random(1).randbytes(3000)
        writer.write(encode_frame(junk[:1000]) + junk)
        await reader.read()  # one error frame at most, then closed
        writer.close()
        await writer.wait_closed()
        await still_serving(srv)
        assert srv.stats.closed_on_error + srv.stats.handshake_failures == 1

    run(go)


def test_truncated_frame():
    async def go(srv: Server, app: App) -> None:
        reader, writer, ch = await raw_session(srv)
        frame = encode_frame(ch.seal(pack_body(KIND_PUSH, 0, [encode(Note(seq=1))])))
        writer.write(frame[:-5])
        writer.write_eof()
        await assert_closed(reader, writer)
        await still_serving(srv)
        assert srv.stats.errors["transport"] == 1
        assert app.notes == []

    run(go)


@pytest.mark.parametrize("after_handshake", [False, True])
def test_oversized_frame(after_handshake):
    async def go(srv: Server, app: App) -> None:
        if after_handshake:
            reader, writer, ch = await raw_session(srv)
        else:
            reader, writer = await asyncio.open_connection(HOST, srv.port)
            ch = None
        writer.write((64 * 1024 + 1).to_bytes(4, "big") + b"x" * 100)  # then it stops
        assert await read_error(reader, ch) == "too-large"
        await assert_closed(reader, writer)
        await still_serving(srv)

    run(go, max_frame=64 * 1024)


def test_client_refuses_oversized_record():
    async def go(srv: Server, app: App) -> None:
        async with await client(srv, max_frame=1024) as c:
            big = RelayEnvelope(
                sender="meter-1",
                recipient="meter-2",
                context="c",
                nonce=bytes(12),
                ciphertext=bytes(5000),
            )
            with pytest.raises(LocalProtocolError):  # we never send what the peer must refuse
                await c.send(big)
            assert await c.request(Ask(x=1)) == Answer(x=2, who="meter-1")

    run(go)


def test_malformed_message_in_valid_record_keeps_connection():
    async def go(srv: Server, app: App) -> None:
        reader, writer, ch = await raw_session(srv)
        bad = encode(Ask(x=1)).replace(b"test.net.ask", b"test.net.zzz")
        writer.write(encode_frame(ch.seal(pack_body(KIND_REQUEST, 7, [bad]))))
        kind, ref, raws = unpack_body(ch.open(await read_frame(reader)))
        assert (kind, ref, decode(raws[0])) == (KIND_REPLY, 7, ErrorMessage(code="malformed"))
        writer.write(encode_frame(ch.seal(pack_body(KIND_REQUEST, 8, [encode(Ask(x=2))]))))
        kind, ref, raws = unpack_body(ch.open(await read_frame(reader)))
        assert (kind, ref, decode(raws[0])) == (KIND_REPLY, 8, Answer(x=4, who="meter-1"))
        writer.write(encode_frame(ch.seal(b"\x09\x00")))  # a body that does not parse
        assert decode(unpack_body(ch.open(await read_frame(reader)))[2][0]).code == "malformed"
        writer.close()
        await writer.wait_closed()

    run(go)


def test_connection_flood():
    async def go(srv: Server, app: App) -> None:
        legit = await client(srv)
        flood = []
        for _ in range(200):
            flood.append(await asyncio.open_connection(HOST, srv.port))
            if len(flood) % 20 == 0:
                assert await legit.request(Ask(x=len(flood))) == Answer(
                    x=2 * len(flood), who="meter-1"
                )
        await asyncio.sleep(0.05)
        # beyond max_handshakes: closed at once (how many depends on how fast we opened them)
        assert srv.stats.refused_capacity >= 1
        # the excess was closed at once, the rest by the handshake timeout
        for reader, writer in flood:
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert srv.stats.handshake_timeouts >= 1
        assert srv.stats.refused_capacity + srv.stats.handshake_timeouts == 200
        await still_serving(srv)  # a new client gets in once the flood is gone
        assert await legit.request(Ask(x=1)) == Answer(x=2, who="meter-1")
        await legit.close()
        for _, writer in flood:
            await writer.wait_closed()

    run(go, max_handshakes=32, handshake_timeout=0.5)


def test_max_connections():
    async def go(srv: Server, app: App) -> None:
        c1 = await client(srv, M1)
        with pytest.raises(TransportError):
            await client(srv, M2)
        assert await c1.request(Ask(x=1)) == Answer(x=2, who="meter-1")
        await c1.close()

    run(go, max_connections=1)


def test_idle_timeout_and_ping():
    async def go(srv: Server, app: App) -> None:
        c = await client(srv)
        for _ in range(4):
            await asyncio.sleep(0.1)
            await c.ping()  # keeps it alive past the idle limit
        await asyncio.wait_for(c.wait_closed(), 5)
        with pytest.raises(TransportError):
            await c.recv(timeout=1)
        assert srv.stats.idle_closed == 1
        await c.close()

    run(go, idle_timeout=0.6)


def test_rate_limit_throttles_without_losing():
    async def go(srv: Server, app: App) -> None:
        async with await client(srv) as c:
            await c.send_many([Note(seq=0)])
            for i in range(1, 12):
                await c.send(Note(seq=i))
            assert await c.request(Ask(x=1)) == Answer(x=2, who="meter-1")
        assert [s for _, s in app.notes] == list(range(12))
        assert srv.stats.throttled > 0

    run(go, rate_limit=(50.0, 2.0))


# -- relay ------------------------------------------------------------------------------


def test_relay_end_to_end_through_server():
    async def go(srv: Server, app: App) -> None:
        rng = random.Random(3)
        k1, k2 = AgreementKey.generate(rng), AgreementKey.generate(rng)
        s12 = k1.agree(k2.public, group="g", epoch=0, id_a="meter-1", id_b="meter-2")
        s21 = k2.agree(k1.public, group="g", epoch=0, id_a="meter-2", id_b="meter-1")
        r1 = RelayCipher(s12.aead_key, me="meter-1", peer="meter-2")
        r2 = RelayCipher(s21.aead_key, me="meter-2", peer="meter-1")
        c1, c2 = await client(srv, M1), await client(srv, M2)
        await c1.send(r1.seal("agg/share", b"share for meter-2"))
        env = await c2.recv(timeout=5)
        assert r2.open(env, context="agg/share") == b"share for meter-2"
        # meter-1 pretending to be meter-2 is refused by the relay
        spoof = dataclasses.replace(
            r1.seal("agg/share", b"x"), sender="meter-2", recipient="meter-1"
        )
        with pytest.raises(MalformedMessage):
            await c1.request(spoof)
        assert app.notes == []
        await c1.close()
        await c2.close()

    run(go, relay=True)


# -- emulation ----------------------------------------------------------------------------


def test_emulated_loss_matches_seeded_decisions():
    profile = LinkProfile(latency_ms=2.0, jitter_ms=1.0, loss=0.3)

    async def go(srv: Server, app: App) -> None:
        async with await client(srv) as c:
            for i in range(60):
                await c.send(Note(seq=i))
            replica = NetworkEmulator(profile, seed=11)
            expected = [i for i in range(60) if not replica.decide("meter-1", "up", 0, 0.0).drop]
            for _ in range(200):
                if len(app.notes) >= len(expected):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
            assert [s for _, s in app.notes] == expected
            assert srv.stats.emulated_drops == 60 - len(expected)

    run(go, emulation=NetworkEmulator(profile, seed=11))


def test_emulated_loss_on_requests_times_out():
    async def go(srv: Server, app: App) -> None:
        async with await client(srv) as c:
            with pytest.raises(TransportError):
                await c.request(Ask(x=1), timeout=0.2)

    run(go, emulation=NetworkEmulator(LinkProfile(loss=1.0)))


def test_emulated_outages():
    sched = OutageSchedule(windows={"meter-1": [(0.0, 100.0)], "meter-2": [(0.2, 1000.0)]})
    t = [0.0]  # the emulator's clock, set by the test: no wall-clock race

    async def go(srv: Server, app: App) -> None:
        with pytest.raises(TransportError):
            await client(srv, M1)  # down: refused right after the handshake
        c2 = await client(srv, M2)
        assert await c2.request(Ask(x=1)) == Answer(x=2, who="meter-2")
        await asyncio.wait_for(c2.wait_closed(), 5)  # its outage begins at 0.2 s
        assert c2.close_reason
        t[0] = 150.0
        async with await client(srv, M1) as c1:  # meter-1 is back
            assert await c1.request(Ask(x=2)) == Answer(x=4, who="meter-1")
        with pytest.raises(TransportError):
            await client(srv, M2)
        assert srv.stats.refused_outage == 2
        await c2.close()

    run(go, emulation=NetworkEmulator(outages=sched), clock=lambda: t[0])


def test_peer_that_stops_reading_is_dropped():
    async def go(srv: Server, app: App) -> None:
        _reader, writer, _ = await raw_session(srv, M1)  # never reads again
        c2 = await client(srv, M2)
        big = RelayEnvelope(
            sender="x", recipient="meter-1", context="c", nonce=bytes(12), ciphertext=bytes(1 << 20)
        )
        with pytest.raises(TransportError):
            for _ in range(200):  # fills both socket buffers, then times out
                await srv.send_to("meter-1", big)
        assert srv.stats.errors["slow-consumer"] == 1
        assert await srv.broadcast(Note(seq=1)) == ["meter-2"]
        assert await c2.recv(timeout=5) == Note(seq=1)
        assert await c2.request(Ask(x=1)) == Answer(x=2, who="meter-2")
        writer.close()
        await c2.close()

    run(go, write_timeout=0.3)
