"""A front door: meter connections terminate here; their messages go to the shards in batches.

What it is for: a :class:`FrontDoor` is the handler of an ordinary
:class:`~privmeter.net.transport.Server` -- the same handshake, channel,
framing and size limits as the single-process head-end, so a meter reaches a
front door exactly as it reached the head-end (same trust model, same wire
format; it just has the front door's address in its configuration).  Run
one or more per node.

Each message is queued with the peer the channel authenticated; a flush
task sends everything queued to
:meth:`~privmeter.cluster.headend.ClusterHeadEnd.forward` in one go (one call
per shard, all shards concurrently), and while that call is in flight the
next batch accumulates -- so a busy front door sends few, large batches (a
Ray call costs about a millisecond; see ``privmeter bench scale``).  Each
message's replies go back on its own connection; a message its shard
rejected gets the error's code (``net.error``), like any rejected message;
a message whose shard died before committing gets code ``unavailable`` and
no receipt, so the meter resends it.

Security: as the transport's.  The front door holds no key but the
head-end's channel identity; it reads no reading (records are Paillier
ciphertexts, masked inputs are masked).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from privmeter.cluster.headend import ClusterHeadEnd
from privmeter.errors import PrivmeterError
from privmeter.net.channel import ErrorMessage
from privmeter.protocol.codec import decode, encode

__all__ = ["FrontDoor"]

log = logging.getLogger(__name__)


class FrontDoor:
    """The transport handler that batches meters' messages to their shards (see module doc)."""

    def __init__(self, head: ClusterHeadEnd, *, max_batch: int = 8192) -> None:
        self.head = head
        self.max_batch = max_batch
        self.now = 0  # set by the interval loop (as on the single-process head-end's link)
        self.interval = 0
        self.batches = 0
        self.forwarded = 0
        self._queue: list[tuple[str, bytes, asyncio.Future[list[Any]]]] = []
        self._task: asyncio.Task[None] | None = None

    def handle(self, peer: str, msg: Any) -> list[Any] | asyncio.Future[list[Any]]:
        """The :class:`~privmeter.net.transport.Server` handler."""
        if isinstance(msg, ErrorMessage):  # a peer's complaint: logged, never answered
            log.info("error code %r from %s", msg.code, peer)
            return []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((peer, encode(msg), fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # let this tick's messages from other connections join
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                results = await asyncio.to_thread(
                    self.head.forward,
                    [(p, d) for p, d, _ in batch],
                    now=self.now,
                    interval=self.interval,
                )
            except PrivmeterError as exc:
                results = [exc] * len(batch)
            self.batches += 1
            self.forwarded += len(batch)
            for (_, _, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, PrivmeterError):
                    fut.set_exception(res)
                else:
                    fut.set_result([decode(b) for b in res])
