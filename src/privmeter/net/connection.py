"""One authenticated, encrypted connection: the record loop both ends share.

What it is for: after the handshake (:mod:`privmeter.net.handshake`) a
:class:`Connection` owns the socket.  It seals outgoing messages into
records (:mod:`privmeter.net.channel`), reads and opens incoming ones,
routes replies to waiting requests, hands pushes and requests to a handler
(or to :meth:`Connection.recv`), and applies the network emulator and the
per-connection limits.  :mod:`privmeter.net.transport` builds connections:
:class:`~privmeter.net.transport.Server` on the accepting side,
:func:`~privmeter.net.transport.connect` on the connecting side.

Security assumption: the handshake's.  Guarantees: a frame that breaks
framing or the channel (oversized, truncated, tampered, replayed,
reordered) gets one ``net.error`` frame and the connection is closed; a
message that decodes badly, or that the handler rejects with a
:class:`~privmeter.errors.PrivmeterError`, gets a ``net.error`` reply
carrying only the error's ``code`` (details go to the log) and the
connection stays open; a peer idle longer than ``idle_timeout``, or not
reading for ``write_timeout`` while we have data for it, is disconnected.
Messages of one connection are handled in the order sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from privmeter.crypto.signing import VerifyKey
from privmeter.errors import (
    InvalidArgument,
    InvalidArgumentType,
    LocalProtocolError,
    MalformedMessage,
    MessageTooLarge,
    PrivmeterError,
    TransportError,
    UnexpectedMessage,
)
from privmeter.net.channel import (
    KIND_PUSH,
    KIND_REPLY,
    KIND_REQUEST,
    Channel,
    ErrorMessage,
    pack_body,
    remote_error,
    unpack_body,
)
from privmeter.net.emulation import NetworkEmulator
from privmeter.net.framing import encode_frame, read_frame
from privmeter.net.handshake import HandshakeResult
from privmeter.protocol.codec import decode, encode, message

__all__ = [
    "RECORD_OVERHEAD",
    "Connection",
    "Handler",
    "Ping",
    "Pong",
    "ServerStats",
    "Welcome",
    "call_handler",
    "close_writer",
]

log = logging.getLogger(__name__)

RECORD_OVERHEAD = 1 + 8 + 16 + 5  # frame type, counter, AEAD tag, body header
_DRAIN_CHECK_BYTES = 64 * 1024  # asyncio's default high-water mark
INTERNAL_ERROR_CODE = "error"  # PrivmeterError.code: says nothing about what went wrong

Handler = Callable[[str, Any], "Sequence[Any] | Awaitable[Sequence[Any] | None] | None"]
"""``handler(peer_id, message)`` -> messages to answer with (or an awaitable of them)."""


@message("net.welcome")
@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """The server's first sealed record: who it is and who it took the client for."""

    server_id: str
    party_id: str


@message("net.ping")
@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    nonce: int

    def __post_init__(self) -> None:
        if not 0 <= self.nonce < 1 << 64:
            raise InvalidArgument("ping nonce out of range")


@message("net.pong")
@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    nonce: int

    def __post_init__(self) -> None:
        if not 0 <= self.nonce < 1 << 64:
            raise InvalidArgument("pong nonce out of range")


@dataclass(slots=True)
class ServerStats:
    """Counters for tests, benchmarks and the operator."""

    accepted: int = 0
    refused_capacity: int = 0  # max_connections / max_handshakes reached: closed at once
    refused_outage: int = 0  # emulated outage
    handshake_failures: int = 0
    handshake_timeouts: int = 0
    established: int = 0
    closed_on_error: int = 0
    idle_closed: int = 0
    records_in: int = 0
    records_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0  # frames of established connections, headers included
    bytes_out: int = 0
    emulated_drops: int = 0
    throttled: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # code -> count (sent or closed with)


class _TokenBucket:
    __slots__ = ("burst", "rate", "t", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and burst >= 1):
            raise InvalidArgument("rate_limit must be (records/s > 0, burst >= 1)")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = now

    def wait(self, now: float) -> float:
        """Take one token; seconds to wait before it is available (0 if now)."""
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


async def call_handler(handler: Handler, peer_id: str, msg: Any) -> list[Any]:
    out = handler(peer_id, msg)
    if inspect.isawaitable(out):
        out = await out
    if out is None:
        return []
    if not isinstance(out, list | tuple):
        raise InvalidArgumentType(
            f"handler must return a list of messages, got {type(out).__name__}"
        )
    return list(out)


class Connection:
    """One authenticated, encrypted connection (either end).

    Created by :func:`connect` (client side) or by :class:`Server`; not
    constructed directly.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        result: HandshakeResult,
        *,
        local_id: str,
        max_frame: int,
        idle_timeout: float | None,
        handler: Handler | None,
        emulation: NetworkEmulator | None,
        directions: tuple[str, str],
        clock: Callable[[], float],
        stats: ServerStats,
        rate_limit: tuple[float, float] | None = None,
        write_timeout: float | None = 30.0,
        channel: Channel | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._channel: Channel = channel if channel is not None else result.channel()
        self.peer_id = result.peer_id
        self.peer_key: VerifyKey = result.peer_key
        self.session_id = result.session_id
        self.local_id = local_id
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self._handler = handler
        self._emu = emulation
        self._dir_out, self._dir_in = directions
        self._clock = clock
        self.stats = stats
        self.write_timeout = write_timeout
        self._bucket = (
            _TokenBucket(rate_limit[0], rate_limit[1], clock()) if rate_limit is not None else None
        )
        self._pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._next_ref = 1
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._outq: asyncio.Queue[tuple[float, bytes] | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._last_rx = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self.close_reason = ""
        self._ping_nonce = 0

    # -- state --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _shutdown(self, reason: str) -> None:
        """Close the socket and fail everything waiting (idempotent, synchronous)."""
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(TransportError(f"connection closed: {reason}", peer=self.peer_id))
        self._pending.clear()
        self._inbox.put_nowait(_CLOSED)
        if self._outq is not None:
            self._outq.put_nowait(None)
        self._writer.close()
        log.debug("connection %s<->%s closed: %s", self.local_id, self.peer_id, reason)

    async def close(self) -> None:
        """Close the connection (pending requests fail with TransportError)."""
        self._shutdown("closed locally")
        current = asyncio.current_task()
        for task in (self._reader_task, self._writer_task):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await close_writer(self._writer)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending ------------------------------------------------------------------

    async def send(self, msg: Any) -> None:
        """Send one message one-way (the peer's handler may answer with pushes)."""
        await self._send_record(KIND_PUSH, 0, [encode(msg)])

    async def send_many(self, msgs: Sequence[Any]) -> None:
        """Send several messages one-way in a single record (one AEAD, one frame)."""
        if not msgs:
            return
        await self._send_record(KIND_PUSH, 0, [encode(m) for m in msgs])

    async def request_all(self, msg: Any, *, timeout: float | None = 30.0) -> list[Any]:
        """Send ``msg`` and return every message of the peer's reply.

        A reply that is a single ``net.error`` is raised as the matching
        :mod:`privmeter.errors` class; no reply within ``timeout`` seconds
        (e.g. an emulated loss) raises :class:`~privmeter.errors.TransportError`.
        """
        if self.closed:
            raise TransportError(f"connection closed: {self.close_reason}", peer=self.peer_id)
        ref = self._next_ref
        self._next_ref = ref + 1 if ref < 0xFFFFFFFF else 1
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = fut
        try:
            await self._send_record(KIND_REQUEST, ref, [encode(msg)])
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError:
            raise TransportError(
                f"no reply from {self.peer_id!r} within {timeout} s", peer=self.peer_id
            ) from None
        finally:
            self._pending.pop(ref, None)
        if len(reply) == 1 and isinstance(reply[0], ErrorMessage):
            raise remote_error(reply[0].code, self.peer_id)
        return reply

    async def request(
        self, msg: Any, *, expect: type[Any] | None = None, timeout: float | None = 30.0
    ) -> Any:
        """Send ``msg`` and return the peer's single reply message (of class ``expect``)."""
        reply = await self.request_all(msg, timeout=timeout)
        if len(reply) != 1:
            raise UnexpectedMessage(f"expected one reply message, got {len(reply)}")
        if expect is not None and type(reply[0]) is not expect:
            raise UnexpectedMessage(f"expected {expect.__name__}, got {type(reply[0]).__name__}")
        return reply[0]

    async def ping(self, *, timeout: float | None = 10.0) -> None:
        """Round trip a ``net.ping`` (keeps the connection from idling out)."""
        self._ping_nonce += 1
        pong = await self.request(Ping(nonce=self._ping_nonce), expect=Pong, timeout=timeout)
        if pong.nonce != self._ping_nonce:
            raise UnexpectedMessage("pong for another ping")

    async def _send_record(
        self, kind: int, ref: int, msgs: list[bytes], *, emulate: bool = True
    ) -> None:
        if self.closed:
            raise TransportError(f"connection closed: {self.close_reason}", peer=self.peer_id)
        body = pack_body(kind, ref, msgs)
        if len(body) + RECORD_OVERHEAD > self.max_frame:
            raise LocalProtocolError(
                f"record of {len(body)} bytes exceeds the {self.max_frame}-byte frame limit"
            )
        if self._emu is not None and emulate:
            d = self._emu.decide(
                self.peer_id, self._dir_out, len(body) + RECORD_OVERHEAD, self._clock()
            )
            if d.drop:
                self.stats.emulated_drops += 1
                return
            frame = encode_frame(self._channel.seal(body), max_frame=self.max_frame)
            self._count_out(len(msgs), len(frame))
            if self._outq is None:
                self._outq = asyncio.Queue()
                self._writer_task = asyncio.create_task(self._delayed_writer())
            self._outq.put_nowait((d.deliver_at, frame))
            return
        frame = encode_frame(self._channel.seal(body), max_frame=self.max_frame)
        self._count_out(len(msgs), len(frame))
        self._writer.write(frame)
        if not await self._drain():
            raise TransportError(
                f"connection to {self.peer_id!r} lost: {self.close_reason}", peer=self.peer_id
            )

    async def _drain(self) -> bool:
        """Wait for the socket buffer; close a peer that stops reading (False if closed).

        Only a full buffer costs a timer: below the high-water mark ``drain`` returns at once.
        """
        try:
            if self._writer.transport.get_write_buffer_size() > _DRAIN_CHECK_BYTES:
                async with asyncio.timeout(self.write_timeout):
                    await self._writer.drain()
            else:
                await self._writer.drain()
        except TimeoutError:
            self.stats.errors["slow-consumer"] += 1
            log.info("%s is not reading; closing its connection", self.peer_id)
            self._shutdown(f"peer not reading for {self.write_timeout} s")
            self._writer.transport.abort()
            return False
        except (ConnectionError, RuntimeError) as exc:
            self._shutdown(f"write failed: {type(exc).__name__}")
            return False
        return not self.closed

    def _count_out(self, n: int, nbytes: int) -> None:
        self.stats.records_out += 1
        self.stats.bytes_out += nbytes
        self.stats.messages_out += n

    async def _delayed_writer(self) -> None:
        if self._outq is None:
            raise LocalProtocolError("delayed writer without an emulated link")
        while True:
            item = await self._outq.get()
            if item is None:
                return
            at, frame = item
            wait = at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.closed:
                return
            self._writer.write(frame)
            if not await self._drain():
                return

    async def _send_error_and_close(self, exc: PrivmeterError) -> None:
        self.stats.errors[exc.code] += 1
        self.stats.closed_on_error += 1
        log.info("closing %s<->%s: %s", self.local_id, self.peer_id, exc)
        if not self.closed:
            with contextlib.suppress(Exception):
                payload = self._channel.seal(
                    pack_body(KIND_PUSH, 0, [encode(ErrorMessage(code=exc.code))])
                )
                self._writer.write(encode_frame(payload, max_frame=self.max_frame))
                await asyncio.wait_for(self._writer.drain(), 1.0)
        self._shutdown(f"{exc.code}: {exc}")

    # -- receiving ----------------------------------------------------------------

    async def recv(self, *, timeout: float | None = None) -> Any:
        """The next pushed message (when no handler is set); TransportError once closed."""
        try:
            async with asyncio.timeout(timeout):
                item = await self._inbox.get()
        except TimeoutError:
            raise TransportError(
                f"nothing from {self.peer_id!r} within {timeout} s", peer=self.peer_id
            ) from None
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)
            raise TransportError(f"connection closed: {self.close_reason}", peer=self.peer_id)
        return item

    async def run(self) -> None:
        """The reader loop; returns when the connection is closed."""
        try:
            await self._read_loop()
        except asyncio.CancelledError:
            self._shutdown("cancelled")
            raise
        except Exception as exc:  # a bug here must not take the server down
            log.exception("reader loop of %s<->%s failed", self.local_id, self.peer_id)
            self._shutdown(f"internal error: {type(exc).__name__}")
        finally:
            self._shutdown("reader finished")

    def _idle_check(self) -> None:
        """Timer callback: close if nothing arrived for ``idle_timeout`` (re-armed lazily)."""
        if self.closed or self.idle_timeout is None:
            return
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_rx
        if quiet >= self.idle_timeout:
            self.stats.idle_closed += 1
            self._shutdown("idle timeout")
            self._writer.transport.abort()  # do not wait for a peer that may not read
        else:
            self._idle_timer = loop.call_later(self.idle_timeout - quiet, self._idle_check)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        if self.idle_timeout is not None:
            # One timer per connection, re-armed only when it fires: no per-frame cost.
            self._idle_timer = loop.call_later(self.idle_timeout, self._idle_check)
        reader, max_frame = self._reader, self.max_frame
        while not self.closed:
            try:
                payload = await read_frame(reader, max_frame)
                self._last_rx = loop.time()
            except MessageTooLarge as exc:
                await self._send_error_and_close(exc)
                return
            except TransportError as exc:
                self.stats.errors[exc.code] += 1
                self.stats.closed_on_error += 1
                log.info("closing %s<->%s: %s", self.local_id, self.peer_id, exc)
                self._shutdown(str(exc))
                return
            except (ConnectionError, OSError) as exc:
                self._shutdown(f"connection lost: {type(exc).__name__}")
                return
            if payload is None:
                self._shutdown("closed by peer")
                return
            try:
                body = self._channel.open(payload)
            except PrivmeterError as exc:
                await self._send_error_and_close(exc)
                return
            self.stats.records_in += 1
            self.stats.bytes_in += len(payload) + 4
            if self._emu is not None:
                d = self._emu.decide(self.peer_id, self._dir_in, len(payload), self._clock())
                if d.drop:
                    self.stats.emulated_drops += 1
                    continue
                wait = d.deliver_at - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            if self._bucket is not None:
                wait = self._bucket.wait(self._clock())
                if wait > 0:
                    self.stats.throttled += 1
                    await asyncio.sleep(wait)
            await self._dispatch(body)

    async def _dispatch(self, body: bytes) -> None:
        try:
            kind, ref, raws = unpack_body(body)
        except MalformedMessage as exc:
            await self._reply_error(KIND_PUSH, 0, exc)
            return
        if kind == KIND_REPLY:
            fut = self._pending.pop(ref, None)
            if fut is None or fut.done():
                log.debug("reply %d from %s matches no pending request", ref, self.peer_id)
                return
            try:
                fut.set_result([decode(r, max_bytes=self.max_frame) for r in raws])
            except PrivmeterError as exc:
                fut.set_exception(exc)
            return
        self.stats.messages_in += len(raws)
        answers: list[bytes] = []
        for raw in raws:
            try:
                msg = decode(raw, max_bytes=self.max_frame)
                out = await self._handle(msg)
                answers.extend(encode(m) for m in out)
            except PrivmeterError as exc:
                self.stats.errors[exc.code] += 1
                log.info("%s from %s rejected: %s", self.local_id, self.peer_id, exc)
                answers.append(encode(ErrorMessage(code=exc.code)))
                if kind == KIND_REQUEST:
                    answers = answers[-1:]
                    break
            except Exception:
                self.stats.errors[INTERNAL_ERROR_CODE] += 1
                log.exception(
                    "handler of %s failed on a message from %s", self.local_id, self.peer_id
                )
                answers.append(encode(ErrorMessage(code=INTERNAL_ERROR_CODE)))
                if kind == KIND_REQUEST:
                    answers = answers[-1:]
                    break
        if self.closed:
            return
        with contextlib.suppress(TransportError):
            if kind == KIND_REQUEST:
                await self._send_record(KIND_REPLY, ref, answers)
            elif answers:
                await self._send_record(KIND_PUSH, 0, answers)

    async def _reply_error(self, kind: int, ref: int, exc: PrivmeterError) -> None:
        self.stats.errors[exc.code] += 1
        log.info("%s from %s rejected: %s", self.local_id, self.peer_id, exc)
        with contextlib.suppress(TransportError):
            await self._send_record(kind, ref, [encode(ErrorMessage(code=exc.code))])

    async def _handle(self, msg: Any) -> list[Any]:
        if isinstance(msg, Ping):
            return [Pong(nonce=msg.nonce)]
        if self._handler is None:
            if isinstance(msg, Pong | Welcome):
                raise UnexpectedMessage(f"unsolicited {type(msg).__name__}")
            self._inbox.put_nowait(msg)
            return []
        return await call_handler(self._handler, self.peer_id, msg)


class _Closed:
    __slots__ = ()


_CLOSED = _Closed()


async def close_writer(writer: asyncio.StreamWriter, grace: float = 1.0) -> None:
    """Close a socket; abort it if the peer does not let the buffer drain within ``grace``."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), grace)
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:  # TimeoutError, or the connection already failed
        writer.transport.abort()
