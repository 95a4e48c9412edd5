"""asyncio transport: an authenticated, encrypted message server and client.

What it is for: the parties (head-end, meters, households, concentrators)
run as long-running asyncio services on real TCP sockets.  This module is
the thin loop around the sans-IO layers: :mod:`~privmeter.net.framing`
(length-prefixed frames), :mod:`~privmeter.net.handshake` (mutual Ed25519
authentication, X25519 key exchange) and :mod:`~privmeter.net.channel`
(sealed records carrying :mod:`privmeter.protocol.codec` messages).

* :class:`Server` accepts connections, runs the handshake against its trust
  store, then hands every decoded message to ``handler(peer_id, message)``,
  which returns the messages to answer with (a list, ``None``, or an
  awaitable of either).  It can push to any connected peer
  (:meth:`Server.send_to`) and relays end-to-end sealed
  :class:`~privmeter.net.channel.RelayEnvelope` messages between peers.
* :func:`connect` opens a :class:`Connection` to a server whose key the
  client knows; ``send`` (one-way), ``request`` (awaits the reply),
  ``recv`` (server pushes).

Security assumption: the handshake's (see there).  Guarantees towards a
hostile peer: nothing is buffered beyond ``max_frame`` (4 MiB default;
4 KiB before authentication); at most ``max_connections`` sockets and
``max_handshakes`` unauthenticated ones exist at once, excess connections
are closed at once and a handshake must finish within
``handshake_timeout``; a frame that breaks framing or the channel (oversized,
truncated, tampered, replayed, reordered) gets one ``net.error`` frame and
the connection is closed; a message that decodes badly, or that the handler
rejects with a :class:`~privmeter.errors.PrivmeterError`, gets a
``net.error`` reply carrying only the error's ``code`` (details go to the
log) and the connection stays open.  A peer that stops reading for
``write_timeout`` while we have data for it is disconnected.  A failure on
one connection never affects another.  Connections idle longer than ``idle_timeout`` are closed;
an optional per-connection token bucket slows a flooding peer down (TCP
back-pressure: its records wait until tokens are available).

Handlers run sequentially per connection (messages are handled in the order
sent) and concurrently across connections; a handler should return quickly
and use :meth:`Server.send_to` for anything it learns later.  Per-message
overhead is one AEAD operation and one codec decode; there is no
per-message handshake, and :meth:`Connection.send_many` batches several
messages into one record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from privmeter.crypto.numtheory import SYSTEM_RNG, RandomSource
from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import (
    InvalidArgument,
    LocalProtocolError,
    MalformedMessage,
    PrivmeterError,
    TransportError,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.net.channel import (
    KIND_PUSH,
    PLAIN,
    ErrorMessage,
    RelayEnvelope,
    unpack_body,
)
from privmeter.net.connection import (
    Connection,
    Handler,
    Ping,
    Pong,
    ServerStats,
    Welcome,
    call_handler,
    close_writer,
)
from privmeter.net.emulation import NetworkEmulator
from privmeter.net.framing import DEFAULT_MAX_FRAME, encode_frame, read_frame
from privmeter.net.handshake import (
    HANDSHAKE_MAX_FRAME,
    ClientHandshake,
    HandshakeResult,
    ServerHandshake,
    Trust,
    plain_frame,
    read_plain,
    trust_key,
)
from privmeter.protocol.codec import decode, encode

__all__ = [
    "DEFAULT_SERVER_ID",
    "Connection",
    "Handler",
    "Ping",
    "Pong",
    "Server",
    "ServerStats",
    "Welcome",
    "connect",
]

log = logging.getLogger(__name__)

DEFAULT_SERVER_ID = "head-end"


# -- server -----------------------------------------------------------------------


class Server:
    """The accepting side: authenticates peers by its trust store, dispatches to ``handler``.

    ``trust(VerifyKey) -> party_id | None``: which identities may connect and
    under what name.  ``rate_limit=(records_per_second, burst)`` throttles
    each connection.  A peer that stops reading for ``write_timeout`` seconds
    while we have data for it is disconnected (a slow consumer must not
    stall :meth:`broadcast`).  ``relay=True`` forwards
    :class:`~privmeter.net.channel.RelayEnvelope` messages to their
    recipient (the envelope's ``sender`` must be the authenticated peer)
    without calling ``handler``.  ``on_connect`` / ``on_disconnect`` are
    called with the peer id.  ``clock`` replaces the emulator's time base
    (seconds since :meth:`start`), e.g. with a simulation's scaled clock.
    """

    def __init__(
        self,
        host: str,
        port: int,
        identity: SigningKey,
        trust: Trust,
        handler: Handler,
        *,
        server_id: str = DEFAULT_SERVER_ID,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_connections: int = 10_000,
        max_handshakes: int = 256,
        handshake_timeout: float = 10.0,
        idle_timeout: float | None = 600.0,
        rate_limit: tuple[float, float] | None = None,
        write_timeout: float | None = 30.0,
        emulation: NetworkEmulator | None = None,
        relay: bool = False,
        on_connect: Callable[[str], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        clock: Callable[[], float] | None = None,
        rng: RandomSource = SYSTEM_RNG,
    ) -> None:
        if max_handshakes < 1 or max_connections < 1:
            raise InvalidArgument("max_connections and max_handshakes must be >= 1")
        self.host = host
        self._port = port
        self.identity = identity
        self.trust = trust
        self.handler = handler
        self.server_id = server_id
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.rate_limit = rate_limit
        self.write_timeout = write_timeout
        self.emulation = emulation
        self.relay = relay
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.rng = rng
        self._clock = clock
        self.stats = ServerStats()
        self._server: asyncio.Server | None = None
        self._conns: dict[str, Connection] = {}
        self._sockets: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handshaking = 0
        self._t0 = 0.0
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen (``port=0`` picks a free port: see :attr:`port`)."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, limit=1 << 16, backlog=1024
        )

    def now(self) -> float:
        """The emulator's time base: ``clock()`` if given, else seconds since :meth:`start`."""
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time() - self._t0

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        if self._server is None:
            raise TransportError("the server did not start")
        await self._server.serve_forever()

    async def close(self) -> None:
        """Graceful shutdown: stop accepting, close every connection, wait for handlers."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn._shutdown("server shutting down")
        for w in list(self._sockets):
            w.close()
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- peers ----------------------------------------------------------------------

    @property
    def peers(self) -> list[str]:
        """Ids of the peers connected (authenticated) now."""
        return sorted(self._conns)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self._conns

    def connection(self, peer_id: str) -> Connection:
        conn = self._conns.get(peer_id)
        if conn is None or conn.closed:
            raise UnknownParty(f"peer {peer_id!r} is not connected", peer=peer_id)
        return conn

    async def send_to(self, peer_id: str, msg: Any) -> None:
        """Push ``msg`` to a connected peer (UnknownParty if it is not connected)."""
        await self.connection(peer_id).send(msg)

    async def send_many_to(self, peer_id: str, msgs: Sequence[Any]) -> None:
        await self.connection(peer_id).send_many(msgs)

    async def broadcast(self, msg: Any, peers: Sequence[str] | None = None) -> list[str]:
        """Push ``msg`` to ``peers`` (default: all connected), concurrently; returns who got it."""
        targets = [
            (pid, c)
            for pid in list(peers if peers is not None else self._conns)
            if (c := self._conns.get(pid)) is not None
        ]

        async def one(conn: Connection) -> bool:
            try:
                await conn.send(msg)
            except TransportError:
                return False
            return True

        ok = await asyncio.gather(*(one(c) for _, c in targets))
        return [pid for (pid, _), sent in zip(targets, ok, strict=True) if sent]

    # -- per connection -------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:
            raise TransportError("a connection accepted outside an asyncio task")
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels these top-level tasks; asyncio's stream callback would
            # log a cancelled task as an error, so end normally.
            pass
        finally:
            self._sockets.discard(writer)
            with contextlib.suppress(asyncio.CancelledError):
                await close_writer(writer)
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (
            self._closing
            or len(self._sockets) >= self.max_connections
            or self._handshaking >= self.max_handshakes
        ):
            self.stats.refused_capacity += 1
            writer.transport.abort()
            return
        self._sockets.add(writer)
        self.stats.accepted += 1
        self._handshaking += 1
        try:
            result = await self._handshake(reader, writer)
        finally:
            self._handshaking -= 1
        if result is None:
            return
        peer_id = result.peer_id
        if self.emulation is not None and self.emulation.is_down(peer_id, self.now()):
            self.stats.refused_outage += 1
            log.info("refusing %s: emulated outage", peer_id)
            return
        conn = Connection(
            reader,
            writer,
            result,
            local_id=self.server_id,
            max_frame=self.max_frame,
            idle_timeout=self.idle_timeout,
            handler=self._dispatch_handler,
            emulation=self.emulation,
            directions=("down", "up"),
            clock=self.now,
            stats=self.stats,
            rate_limit=self.rate_limit,
            write_timeout=self.write_timeout,
        )
        old = self._conns.get(peer_id)
        if old is not None:
            log.info("%s reconnected; closing its previous connection", peer_id)
            old._shutdown("replaced by a new connection")
        self._conns[peer_id] = conn
        self.stats.established += 1
        watchdog = None
        if self.emulation is not None:
            watchdog = asyncio.create_task(self._outage_watchdog(conn))
        try:
            welcome = Welcome(server_id=self.server_id, party_id=peer_id)
            await conn._send_record(KIND_PUSH, 0, [encode(welcome)], emulate=False)
            if self.on_connect is not None:
                self.on_connect(peer_id)
            await conn.run()
        except TransportError:
            pass
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            conn._shutdown("done")
            if self._conns.get(peer_id) is conn:
                del self._conns[peer_id]
                if self.on_disconnect is not None:
                    try:
                        self.on_disconnect(peer_id)
                    except Exception:
                        log.exception("on_disconnect(%r) failed", peer_id)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> HandshakeResult | None:
        hs = ServerHandshake(self.identity, self.trust, rng=self.rng)
        try:
            async with asyncio.timeout(self.handshake_timeout):
                for _ in range(2):
                    payload = await read_frame(reader, HANDSHAKE_MAX_FRAME)
                    if payload is None:
                        raise TransportError("peer closed the connection during the handshake")
                    out = hs.receive(payload)
                    if out is not None:
                        writer.write(encode_frame(out, max_frame=HANDSHAKE_MAX_FRAME))
                        await writer.drain()
        except TimeoutError:
            self.stats.handshake_timeouts += 1
            log.info("handshake timed out after %.1f s", self.handshake_timeout)
            return None
        except PrivmeterError as exc:
            self.stats.handshake_failures += 1
            self.stats.errors[exc.code] += 1
            log.info("handshake failed: %s", exc)
            if not isinstance(exc, TransportError):
                with contextlib.suppress(Exception):
                    writer.write(encode_frame(plain_frame(ErrorMessage(code=exc.code))))
                    await asyncio.wait_for(writer.drain(), 1.0)
            return None
        except (ConnectionError, OSError):
            self.stats.handshake_failures += 1
            return None
        return hs.result

    async def _dispatch_handler(self, peer_id: str, msg: Any) -> list[Any]:
        if self.relay and isinstance(msg, RelayEnvelope):
            if msg.sender != peer_id:
                raise MalformedMessage(f"relay envelope claims sender {msg.sender!r}", peer=peer_id)
            await self.send_to(msg.recipient, msg)
            return []
        return await call_handler(self.handler, peer_id, msg)

    async def _outage_watchdog(self, conn: Connection) -> None:
        if self.emulation is None:
            raise LocalProtocolError("outage watchdog without a network emulator")
        start = self.emulation.next_outage(conn.peer_id, self.now())
        if start is None:
            return
        await asyncio.sleep(max(0.0, start - self.now()))
        log.info("emulated outage of %s begins: closing its connection", conn.peer_id)
        conn._shutdown("emulated outage")


# -- client -----------------------------------------------------------------------


async def connect(
    host: str,
    port: int,
    identity: SigningKey,
    server_key: VerifyKey,
    *,
    server_id: str = DEFAULT_SERVER_ID,
    max_frame: int = DEFAULT_MAX_FRAME,
    handshake_timeout: float = 10.0,
    idle_timeout: float | None = None,
    handler: Handler | None = None,
    emulation: NetworkEmulator | None = None,
    rng: RandomSource = SYSTEM_RNG,
) -> Connection:
    """Connect, authenticate both ends, and return an open :class:`Connection`.

    The server must prove ``server_key``; it must also trust our
    ``identity``.  Errors: :class:`~privmeter.errors.UnknownParty` (server
    key not the expected one, or the server does not know us),
    :class:`~privmeter.errors.InvalidSignature`,
    :class:`~privmeter.errors.UnsupportedVersion`,
    :class:`~privmeter.errors.TransportError` (refused, closed, timed out).
    Pushes from the server go to ``handler`` if given, else to
    :meth:`Connection.recv`.  ``emulation`` applies a link profile to this
    connection (keyed by ``server_id``).
    """
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
    except OSError as exc:
        raise TransportError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    hs = ClientHandshake(identity, trust_key(server_key, server_id), rng=rng)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        async with asyncio.timeout(handshake_timeout):
            writer.write(encode_frame(hs.start()))
            await writer.drain()
            payload = await read_frame(reader, HANDSHAKE_MAX_FRAME)
            if payload is None:
                raise TransportError("server closed the connection during the handshake")
            try:
                writer.write(encode_frame(hs.receive(payload)))
            except PrivmeterError as exc:
                if not isinstance(exc, TransportError) and not _is_remote(payload):
                    with contextlib.suppress(Exception):
                        writer.write(encode_frame(plain_frame(ErrorMessage(code=exc.code))))
                        await writer.drain()
                raise
            await writer.drain()
            if hs.result is None:
                raise TransportError("the handshake ended without a session")
            payload = await read_frame(reader, max_frame)
            if payload is None:
                raise TransportError("server closed the connection after the handshake")
            if payload[:1] == bytes([PLAIN]):
                read_plain(payload, Welcome, "server")  # raises the server's error
            channel_check = hs.result.channel()
            kind, _, raws = unpack_body(channel_check.open(payload))
            welcome = decode(raws[0], max_bytes=max_frame) if raws else None
            if kind != KIND_PUSH or not isinstance(welcome, Welcome):
                raise UnexpectedMessage("server did not start with net.welcome")
    except TimeoutError:
        await close_writer(writer)
        raise TransportError(f"handshake with {host}:{port} timed out") from None
    except (PrivmeterError, ConnectionError, OSError) as exc:
        await close_writer(writer)
        if isinstance(exc, PrivmeterError):
            raise
        raise TransportError(f"connection to {host}:{port} lost during the handshake") from None
    conn = Connection(
        reader,
        writer,
        hs.result,
        local_id=welcome.party_id,
        max_frame=max_frame,
        idle_timeout=idle_timeout,
        handler=handler,
        emulation=emulation,
        directions=("up", "down"),
        clock=lambda: loop.time() - t0,
        stats=ServerStats(),
        channel=channel_check,  # it has already opened the welcome record
    )
    conn._reader_task = asyncio.create_task(conn.run())
    return conn


def _is_remote(payload: bytes) -> bool:
    """Whether a handshake payload was the server's own error (no need to answer it)."""
    try:
        return isinstance(decode(payload[1:], max_bytes=HANDSHAKE_MAX_FRAME), ErrorMessage)
    except PrivmeterError:
        return False
