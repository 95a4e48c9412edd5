"""The head-end as a long-running asyncio service on TCP (``privmeter headend``).

What it is for: :class:`NetLink` puts a :class:`~privmeter.parties.headend.HeadEndCore`
behind a :class:`privmeter.net.transport.Server` (mutually authenticated,
encrypted channels; length-framed, size-limited msgpack messages) and
implements the interval loop's :class:`~privmeter.parties.engine.Link`: it
pushes the head-end's messages to the connected meters and waits until each
has answered or the round's deadline passes (a meter that is down simply
misses the round; the protocols' dropout handling takes over).

The deployed head-end (``privmeter headend --config``, :mod:`privmeter.app.headend`)
and the simulated one (``sim/network.py``) both run it.  Killing
the process (even with SIGKILL) and restarting it on the same store loses
no acknowledged record, total, accumulator or statement: they are committed
before any receipt leaves.

Security assumption: the transport's (Ed25519 identities from the
deployment's trust store, X25519 + ChaCha20-Poly1305 channels).  Guarantee:
a peer that sends garbage, truncated or oversized frames, forged or replayed
messages gets an error code or a closed connection; other peers are served
as before (each connection is handled separately, and every core check
happens before any state change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from privmeter.errors import LocalProtocolError, PrivmeterError
from privmeter.net.channel import ErrorMessage
from privmeter.net.emulation import NetworkEmulator
from privmeter.net.handshake import TrustStore
from privmeter.net.transport import Server
from privmeter.parties.concentrator import Relayed, unwrap
from privmeter.parties.headend import HeadEndCore
from privmeter.parties.messages import Hello, SettleRequest
from privmeter.protocol.codec import encode
from privmeter.protocol.records import ReadingRecord

__all__ = ["NetLink", "start_server"]

MAX_BATCH = 512  # records per group commit

log = logging.getLogger(__name__)


class NetLink:
    """The interval loop's link over a transport :class:`~privmeter.net.transport.Server`."""

    def __init__(
        self,
        core: HeadEndCore,
        *,
        round_timeout: float = 30.0,
        round_idle: float = 2.0,
        group_commit: bool = True,
    ) -> None:
        self.core = core
        self.group_commit = group_commit
        self._commit_q: list[tuple[str, Any, asyncio.Future[list[Any]]]] = []
        self._commit_task: asyncio.Task[None] | None = None
        self.server: Server | None = None
        self.round_timeout = round_timeout
        self.round_idle = round_idle  # end a round early when no answer came for this long
        self.now = 0
        self.interval = 0
        self._expect: Any = None
        self._waiting: set[str] = set()
        self._answered: set[str] = set()
        self._done = asyncio.Event()
        self._progress = asyncio.Event()
        self._relay: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._relay_task: asyncio.Task[None] | None = None
        self.via: dict[str, str] = {}  # tree: meter -> its concentrator (refresh_via)
        self.hellos: set[str] = (
            set()
        )  # meters that said hello (reachable, also behind a concentrator)
        self.refresh_via()

    def refresh_via(self) -> None:
        """Re-read the core's concentrators (a deployment's feeders change as meters enrol)."""
        self.via = {m: c for c, ms in self.core.concentrators.items() for m in ms}

    def concentrator_lost(self, concentrator_id: str) -> None:
        """A concentrator disconnected: its meters are unreachable until they say hello again."""
        self.hellos -= self.core.concentrators.get(concentrator_id, frozenset())

    # the transport's handler
    def handle(self, peer: str, msg: Any) -> list[Any] | Awaitable[list[Any]]:
        if isinstance(msg, ErrorMessage):  # a peer's complaint: logged, never answered
            log.info("error code %r from %s", msg.code, peer)
            return []
        if self.group_commit and isinstance(msg, ReadingRecord):
            return self._queue_record(peer, msg)
        return self._handle_now(peer, msg)

    async def _queue_record(self, peer: str, msg: Any) -> list[Any]:
        """Group commit: records of many connections share one transaction; receipts after COMMIT."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._commit_q.append((peer, msg, fut))
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.get_running_loop().create_task(self._commit_loop())
        return await fut

    async def _commit_loop(self) -> None:
        while self._commit_q:
            await asyncio.sleep(0)  # let the other connections' records join this batch
            batch, self._commit_q = self._commit_q[:MAX_BATCH], self._commit_q[MAX_BATCH:]
            results: list[tuple[asyncio.Future[list[Any]], list[Any] | BaseException]] = []
            try:
                with self.core.store.batch():
                    for peer, msg, fut in batch:
                        try:
                            results.append((fut, self._handle_now(peer, msg)))
                        except (
                            PrivmeterError
                        ) as exc:  # this record only (its savepoint rolled back)
                            results.append((fut, exc))
            except PrivmeterError as exc:  # the COMMIT failed: nothing of the batch is acknowledged
                results = [(fut, exc) for _, _, fut in batch]
            for fut, res in results:  # receipts leave only now, after COMMIT
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _handle_now(self, peer: str, msg: Any) -> list[Any]:
        kind, owner = type(msg), peer
        if isinstance(msg, Relayed):  # tree: a meter's message via its concentrator
            kind, owner = type(unwrap(msg)), msg.meter_id
        out = self.core.handle(peer, msg, now=self.now, interval=self.interval)
        if self.core.outbox:  # meter-to-meter payloads (end-to-end sealed): relay in order
            self.relay(self.core.outbox)
            self.core.outbox.clear()
        self.observe(kind, owner, relayed=isinstance(msg, Relayed))
        return out

    def relay(self, items: Sequence[tuple[str, Any]]) -> None:
        """Pass meter-to-meter payloads on, in order."""
        for item in items:
            self._relay.put_nowait(item)
        if items and (self._relay_task is None or self._relay_task.done()):
            self._relay_task = asyncio.get_running_loop().create_task(self._relay_loop())

    def observe(self, kind: type, owner: str, *, relayed: bool = False) -> None:
        """A message of ``kind`` from ``owner`` was handled: note hellos and the round's answers."""
        if (
            kind is Hello
        ):  # reachable through its concentrator; a direct hello supersedes one relayed before
            (self.hellos.add if relayed else self.hellos.discard)(owner)
        owner = owner[3:] if owner.startswith("hh:") else owner
        if self._expect is not None and issubclass(kind, self._expect) and owner in self._waiting:
            self._answered.add(owner)
            self._progress.set()
            if self._answered >= self._waiting:
                self._done.set()

    async def _relay_loop(self) -> None:
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        while not self._relay.empty():
            peer, msg = self._relay.get_nowait()
            with contextlib.suppress(PrivmeterError):
                conc = self.via.get(peer)
                if conc is not None and not self.server.is_connected(peer):
                    await self.server.send_to(conc, Relayed(meter_id=peer, payload=encode(msg)))
                else:
                    await self.server.send_to(peer, msg)

    def connected(self, peer: str) -> bool:
        """Reachable now: connected directly, or said hello through its (connected) concentrator."""
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        if self.server.is_connected(peer):
            return True
        conc = self.via.get(peer)
        return conc is not None and peer in self.hellos and self.server.is_connected(conc)

    async def exchange(
        self, outgoing: Mapping[str, Sequence[Any]], *, expect: Any, now: int, interval: int
    ) -> set[str]:
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        self.now, self.interval = now, interval
        self._expect = expect
        self._answered = set()
        self._done = asyncio.Event()
        sent: set[str] = set()
        self._waiting = set()
        for mid, msgs in outgoing.items():
            peer = mid
            conc = self.via.get(mid)
            direct = self.server.is_connected(mid) or (
                isinstance(msgs[0], SettleRequest) and self.server.is_connected(f"hh:{mid}")
            )
            if conc is not None and not direct:  # tree: wrap for the meter's concentrator
                if not self.server.is_connected(conc) or mid not in self.hellos:
                    continue
                if expect is not None:
                    self._waiting.add(mid)
                with contextlib.suppress(PrivmeterError):
                    await self.server.send_many_to(
                        conc, [Relayed(meter_id=mid, payload=encode(m)) for m in msgs]
                    )
                    sent.add(mid)
                continue
            if isinstance(msgs[0], SettleRequest) and self.server.is_connected(f"hh:{mid}"):
                peer = f"hh:{mid}"  # the household on its own line answers its statement
            elif not self.server.is_connected(peer):
                continue
            if expect is not None:
                self._waiting.add(mid)
            with contextlib.suppress(PrivmeterError):
                await self.server.send_many_to(peer, list(msgs))
                sent.add(mid)
        self._waiting &= sent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.round_timeout
        while expect is not None and self._waiting and not self._answered >= self._waiting:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._progress = asyncio.Event()
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, self.round_idle))
            except TimeoutError:
                break  # nobody answered for round_idle seconds: the rest are down
        self._expect = None
        return set(self._answered)


async def start_server(
    core: HeadEndCore,
    link: NetLink,
    trust: TrustStore,
    *,
    host: str,
    port: int,
    emulation: NetworkEmulator | None = None,
    **kw: Any,
) -> Server:
    """Start the transport server for ``core`` (returns it started; ``port=0`` picks one)."""
    server = Server(host, port, core.signing_key, trust, link.handle, emulation=emulation, **kw)
    await server.start()
    link.server = server
    return server
