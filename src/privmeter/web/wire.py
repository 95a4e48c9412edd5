"""How the demo's messages travel: in memory through the codec, or over loopback TCP.

What it is for: :class:`~privmeter.web.engine.DemoEngine` drives the
head-end core and the parties in phases (head-end -> parties, parties ->
head-end).  A wire carries one phase's batch and returns what arrived:

* :class:`MemoryWire` encodes and decodes every message with the wire codec.
* :class:`SocketWire` runs the real transport (:mod:`privmeter.net.transport`)
  on loopback: a head-end :class:`~privmeter.net.transport.Server` with the
  utility's identity and the scenario's trust store, one authenticated,
  encrypted connection per meter (its own Ed25519 key) and per household
  (``hh:<meter id>``), and the :class:`~privmeter.net.emulation.NetworkEmulator`
  on every link (latency, jitter, optional loss).  The asyncio loop runs in
  its own thread; a batch is sent concurrently on all connections and the
  call waits until every message arrived or ``timeout`` passed (an
  emulated loss is then simply missing from the result).

Security: the transport's (SIGMA-I style handshake, ChaCha20-Poly1305
records).  Guarantee: a message returned by :meth:`SocketWire.down` /
:meth:`SocketWire.up` crossed a real socket and was authenticated as coming
from its peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from privmeter.errors import TransportError
from privmeter.protocol.codec import decode, encode

__all__ = ["MemoryWire", "SocketWire"]

Batch = Mapping[str, Sequence[Any]]


class MemoryWire:
    """In-process delivery; every message crosses the codec."""

    kind = "memory"

    def describe(self) -> str:
        return "in memory (every message through the wire codec)"

    def down(self, batch: Batch, *, retries: int = 0) -> dict[str, list[Any]]:
        return {p: [decode(encode(m)) for m in ms] for p, ms in batch.items() if ms}

    def up(self, batch: Batch, *, retries: int = 0) -> dict[str, list[Any]]:
        return self.down(batch)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


class SocketWire:
    """Loopback TCP through the real transport, with the network emulator on the head-end's links."""

    kind = "tcp"

    def __init__(
        self,
        world: Any,
        *,
        latency_ms: float = 20.0,
        jitter_ms: float = 5.0,
        loss: float = 0.0,
        timeout: float | None = None,
        connect_timeout: float = 60.0,
    ) -> None:
        from privmeter.net.emulation import LinkProfile, NetworkEmulator

        self.world = world
        self.profile = LinkProfile(latency_ms=latency_ms, jitter_ms=jitter_ms, loss=loss)
        self.emulator = (
            None
            if self.profile.is_ideal
            else NetworkEmulator(self.profile, seed=world.scenario.seed)
        )
        self.timeout = (
            timeout if timeout is not None else max(1.0, 0.02 * (latency_ms + 4 * jitter_ms))
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="privmeter-demo-net", daemon=True
        )
        self._thread.start()
        self._up: dict[str, asyncio.Queue[Any]] = {}
        self._downq: dict[str, asyncio.Queue[Any]] = {}
        self._conns: dict[str, Any] = {}
        self.server: Any = None
        try:
            self._run(self._start(), connect_timeout)
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Any, timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def describe(self) -> str:
        p = self.profile
        s = f"loopback TCP, SIGMA-I + ChaCha20-Poly1305, emulated latency {p.latency_ms:g}±{p.jitter_ms:g} ms"
        if p.loss:
            s += f", loss {p.loss:.0%}"
        return s

    @property
    def port(self) -> int:
        return int(self.server.port)

    async def _start(self) -> None:
        from privmeter.net.transport import Server, connect
        from privmeter.sim.identities import household_identity
        from privmeter.sim.network import trust_for

        w = self.world
        ids = [h.meter_id for h in w.households]
        peers = ids + [f"hh:{m}" for m in ids]
        self._up = {p: asyncio.Queue() for p in peers}
        self._downq = {p: asyncio.Queue() for p in peers}

        def on_up(peer: str, msg: Any) -> None:
            q = self._up.get(peer)
            if q is not None:
                q.put_nowait(msg)

        self.server = Server(
            "127.0.0.1",
            0,
            w.headend_key,
            trust_for(w),
            on_up,
            emulation=self.emulator,
            idle_timeout=None,
        )
        await self.server.start()
        vk = w.headend_key.verify_key
        keys = {h.meter_id: h.signing_key for h in w.households}
        sem = asyncio.Semaphore(16)

        async def one(peer: str) -> None:
            ident = (
                household_identity(w.scenario.seed, peer[3:])
                if peer.startswith("hh:")
                else keys[peer]
            )
            q = self._downq[peer]

            def on_down(_sid: str, msg: Any) -> None:
                q.put_nowait(msg)

            async with sem:
                self._conns[peer] = await connect(
                    "127.0.0.1", self.server.port, ident, vk, handler=on_down
                )

        await asyncio.gather(*(one(p) for p in peers))

    async def _exchange(
        self, batch: Batch, *, downwards: bool, retries: int
    ) -> dict[str, list[Any]]:
        queues = self._downq if downwards else self._up
        want = {p: list(ms) for p, ms in batch.items() if ms}
        got: dict[str, list[Any]] = {p: [] for p in want}
        for p in want:  # anything still in flight from an earlier, timed-out phase is stale
            q = queues[p]
            while not q.empty():
                q.get_nowait()
        for _ in range(retries + 1):
            todo = {p: ms for p, ms in want.items() if not got[p]}
            if not todo:
                break

            async def send(p: str, ms: list[Any]) -> None:
                with contextlib.suppress(TransportError):
                    if downwards:
                        await self.server.send_many_to(p, ms)
                    else:
                        await self._conns[p].send_many(ms)

            await asyncio.gather(*(send(p, ms) for p, ms in todo.items()))

            async def recv(p: str, n: int) -> None:
                q = queues[p]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        while len(got[p]) < n:
                            got[p].append(await q.get())

            await asyncio.gather(*(recv(p, len(ms)) for p, ms in todo.items()))
        return {p: ms for p, ms in got.items() if ms}

    def down(self, batch: Batch, *, retries: int = 0) -> dict[str, list[Any]]:
        """Head-end -> peers; returns what each peer received."""
        got: dict[str, list[Any]] = self._run(
            self._exchange(batch, downwards=True, retries=retries), None
        )
        return got

    def up(self, batch: Batch, *, retries: int = 0) -> dict[str, list[Any]]:
        """Peers -> head-end; returns what the head-end received from each."""
        got: dict[str, list[Any]] = self._run(
            self._exchange(batch, downwards=False, retries=retries), None
        )
        return got

    def stats(self) -> dict[str, int]:
        s = self.server.stats if self.server is not None else None
        if s is None:
            return {}
        return {
            "connections": len(self._conns),
            "records_in": s.records_in,
            "records_out": s.records_out,
            "emulated_drops": s.emulated_drops,
        }

    def close(self) -> None:
        async def shut() -> None:
            for c in self._conns.values():
                with contextlib.suppress(Exception):
                    await c.close()
            if self.server is not None:
                with contextlib.suppress(Exception):
                    await self.server.close()

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._run(shut(), 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._loop.close()
