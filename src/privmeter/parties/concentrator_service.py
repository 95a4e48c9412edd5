"""A data concentrator as a long-running asyncio service (``privmeter concentrator``).

What it is for: the tree topology over real sockets.  The concentrator is a
transport :class:`~privmeter.net.transport.Server` for the meters of its
feeder (they authenticate with their meter keys and pin the concentrator's
key) and a client of the head-end (it authenticates with its own key, as
party ``dc-<group>``).  Every meter message goes up wrapped in a
``sys.relay`` envelope (:class:`~privmeter.parties.concentrator.Relayed`);
every head-end envelope comes down and is delivered to its meter.  It
prints ``LISTEN <port>`` once it accepts meters.

Security assumption: the concentrator is an untrusted relay (see
:mod:`privmeter.parties.concentrator`): payloads are end-to-end encrypted or
masked and meter-authenticated.  Guarantee: it relays only for the meters of
its feeder, and a failure on one meter's connection never affects another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from privmeter.crypto.signing import SigningKey, VerifyKey
from privmeter.errors import LocalProtocolError, PrivmeterError, TransportError
from privmeter.net.channel import ErrorMessage
from privmeter.net.handshake import TrustStore
from privmeter.net.transport import Connection, Server, Welcome, connect
from privmeter.parties.concentrator import Concentrator, Relayed
from privmeter.parties.messages import Bye

__all__ = ["ConcentratorService"]

log = logging.getLogger(__name__)


class ConcentratorService:
    """Meters below (server), head-end above (client)."""

    def __init__(
        self,
        relay: Concentrator,
        identity: SigningKey,
        meter_keys: dict[str, VerifyKey],
        *,
        headend: tuple[str, int],
        headend_key: VerifyKey,
        listen: tuple[str, int],
    ) -> None:
        self.relay = relay
        self.identity = identity
        self.trust = TrustStore((k, m) for m, k in meter_keys.items() if m in relay.meters)
        self.headend, self.headend_key, self.listen = headend, headend_key, listen
        self.server: Server | None = None
        self.upstream: Connection | None = None
        self.done = asyncio.Event()

    async def _from_meter(self, meter_id: str, msg: Any) -> list[Any]:
        if isinstance(msg, ErrorMessage):
            return []
        if self.upstream is None or self.upstream.closed:
            raise TransportError("no head-end connection")
        await self.upstream.send(self.relay.up(meter_id, msg))
        return []

    async def _from_headend(self, _peer: str, msg: Any) -> list[Any]:
        if isinstance(msg, Bye):
            if self.server is None:
                raise LocalProtocolError("the service is not started (no server)")
            await self.server.broadcast(msg)
            self.done.set()
            return []
        if isinstance(msg, ErrorMessage | Welcome):
            return []
        if not isinstance(msg, Relayed):
            raise TransportError(f"unexpected {type(msg).__name__} from the head-end")
        meter_id, inner = self.relay.down(msg)
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        with contextlib.suppress(PrivmeterError):  # a meter that is down misses it
            await self.server.send_to(meter_id, inner)
        return []

    async def start(self) -> int:
        self.upstream = await connect(
            self.headend[0],
            self.headend[1],
            self.identity,
            self.headend_key,
            handler=self._from_headend,
        )
        self.server = Server(
            self.listen[0],
            self.listen[1],
            self.identity,
            self.trust,
            self._from_meter,
            server_id=self.relay.concentrator_id,
        )
        await self.server.start()
        return self.server.port

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self.upstream is not None:
            await self.upstream.close()
