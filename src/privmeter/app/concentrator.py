"""``privmeter concentrator``: a feeder's data concentrator, deployed from its config.

What it is for: in a tree deployment the households of one feeder connect
to their data concentrator instead of the head-end, and the concentrator
carries the whole feeder over one upstream connection (the topology of
:mod:`privmeter.parties.concentrator`: every meter message goes up in a
``sys.relay`` envelope naming the meter, every head-end envelope comes down
and goes to its meter).  ``privmeter concentrator --config concentrator.toml``
runs it forever on the wall clock, with ``/healthz`` and ``/metrics``
(:mod:`privmeter.app.ops`), and stops cleanly on SIGTERM.

How it is admitted: the utility installs its concentrators itself, so its
``headend.toml`` lists each one's public key under its feeder
(``[concentrators] feeder-1 = "<key>"``; the key comes from ``privmeter init
concentrator``), and the concentrator's config pins the head-end's key
(``headend.key``).  No ticket: a ticket authenticates a third party's key
from afar, while a concentrator is the utility's own box, provisioned by
the operator who has both files; the list is visible in one place and a
concentrator is removed by deleting its line (and restarting the head-end).
It connects as party ``dc-<group>`` and says hello; the head-end answers
with the feeder's roster, signed, and sends every newer one.

Who may connect below it: exactly the meters of the head-end's latest signed
roster of its feeder (``roster.json`` in ``state_dir``, kept across
restarts, replaced atomically only by a newer version); a meter leaving the
roster is disconnected.  Households pin the concentrator's key from the
head-end's signed enrolment or roster, so nobody else can pose as it.  While
the head-end is unreachable it admits no meter (they retry with back-off),
and when the upstream connection drops it disconnects them all: each says
hello again through the new connection, so the head-end knows who is
reachable.

Security assumption: the concentrator is an untrusted relay (see
:mod:`privmeter.parties.concentrator`): it learns who is connected and when,
message sizes and kinds, what the head-end sends in clear (rosters,
statements with their logs of ciphertexts) and each paid bill (a
household's proof carries its bill in clear for the head-end); readings are
masked or encrypted under household keys, every meter message is
signed or MAC'd by the meter and checked by the head-end, which also checks
that the envelope's meter belongs to this feeder.  Guarantee: it relays only
for the meters of its feeder's signed roster (either direction;
:class:`~privmeter.errors.UnknownParty`), refuses any message larger than
``max_message_bytes`` (:class:`~privmeter.errors.MessageTooLarge`), and a
slow or failing meter never holds up another (one delivery queue per meter).
It keeps no secret but its identity key and stores nothing it relays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any, cast

from privmeter.app.config import ConcentratorConfig, load_config
from privmeter.app.ops import ConcentratorMetrics, serve_http, setup_logging, stop_on_signals
from privmeter.app.state import load_concentrator
from privmeter.crypto.signing import VerifyKey
from privmeter.errors import (
    ConfigError,
    LocalProtocolError,
    MalformedMessage,
    PrivmeterError,
    TransportError,
    UnexpectedMessage,
    UnknownParty,
)
from privmeter.net.channel import ErrorMessage
from privmeter.net.transport import Connection, Server, Welcome, connect
from privmeter.parties.concentrator import Concentrator, Relayed
from privmeter.parties.enrolment import RosterUpdate, verify_doc
from privmeter.parties.keys import write_json_atomic
from privmeter.parties.messages import Bye, Hello

__all__ = ["ConcentratorService", "add_arguments", "run", "serve"]

log = logging.getLogger("privmeter.concentrator")

ROSTER_FORMAT = "privmeter.roster/1"
QUEUE_LIMIT = 256  # messages waiting for one meter; beyond, the meter is too slow and misses them
FRAME_SLACK = 64 * 1024  # framing and envelope overhead above max_message_bytes


class ConcentratorService:
    """Meters of one feeder below (server), the head-end above (client)."""

    def __init__(self, cfg: ConcentratorConfig) -> None:
        self.cfg = cfg
        self.cid = cfg.concentrator_id
        self.identity = load_concentrator(cfg.state_dir)
        self.headend_key = VerifyKey.from_hex(cfg.headend_key)
        self.relay = Concentrator(self.cid, (), max_bytes=cfg.max_message_bytes, link=True)
        self.metrics = ConcentratorMetrics()
        self.roster_version = -1
        self._keys: dict[bytes, str] = {}  # meter key -> meter id (the signed roster)
        self.roster_path = cfg.state_dir / "roster.json"
        self.server: Server | None = None
        self.upstream: Connection | None = None
        self._queues: dict[str, deque[Any]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._load_roster()

    # -- the feeder's roster -------------------------------------------------------------------
    def _load_roster(self) -> None:
        if not self.roster_path.exists():
            return
        try:
            saved = json.loads(self.roster_path.read_text())
            msg = RosterUpdate(doc=saved["doc"], signature=bytes.fromhex(saved["signature"]))
            self.apply_roster(msg, save=False)
        except (OSError, ValueError, KeyError, TypeError, PrivmeterError) as exc:
            raise ConfigError(
                f"{self.roster_path} is damaged or not signed by headend.key ({exc}); "
                "delete it: the head-end sends the roster again"
            ) from None

    def apply_roster(self, msg: RosterUpdate, *, save: bool = True) -> bool:
        """Take a head-end-signed roster of this feeder if it is newer; returns whether it was."""
        doc = verify_doc(self.headend_key, msg.doc, msg.signature, kind="roster")
        if doc.get("group") != self.cfg.group:
            raise UnknownParty("roster of another feeder", group=doc.get("group"))
        try:
            version = int(doc["version"])
            members = {str(m): VerifyKey.from_hex(k) for m, k in dict(doc["members"]).items()}
        except (KeyError, TypeError, ValueError):
            raise MalformedMessage("roster without a version or members") from None
        if version < self.roster_version or (version == self.roster_version and save):
            return False
        mine = doc.get("concentrator")
        if mine is not None and mine != self.identity.verify_key.hex():
            log.warning("the head-end's roster names another key for this feeder's concentrator")
        keys = {k.raw: m for m, k in members.items()}
        dropped = {m for k, m in self._keys.items() if keys.get(k) != m}
        self._keys, self.roster_version = keys, version
        self.relay.roster(members)
        self.metrics.roster.set(len(members))
        if save:
            write_json_atomic(
                self.roster_path,
                {"format": ROSTER_FORMAT, "doc": msg.doc, "signature": msg.signature.hex()},
                private=True,
            )
        log.info("roster version %d of %s: %d meters", version, self.cfg.group, len(members))
        for m in dropped:
            self._disconnect(m, "left the feeder's roster")
        return True

    def trust(self, key: VerifyKey) -> str | None:
        """Meters of the signed roster, and only while the head-end is reachable."""
        if self.upstream is None or self.upstream.closed:
            return None
        return self._keys.get(key.raw)

    def _disconnect(self, meter_id: str, why: str) -> None:
        if self.server is None or not self.server.is_connected(meter_id):
            return
        log.info("disconnecting %s: %s", meter_id, why)
        self._spawn(self.server.connection(meter_id).close())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- up: a meter's message -----------------------------------------------------------------
    async def from_meter(self, meter_id: str, msg: Any) -> list[Any]:
        if isinstance(msg, ErrorMessage):
            log.info("error code %r from %s", msg.code, meter_id)
            return []
        up = self.upstream
        if up is None or up.closed:
            self.relay.disconnected()
            self._disconnect(meter_id, "the head-end is unreachable")
            raise TransportError("the head-end is unreachable")
        try:
            env = self.relay.up(meter_id, msg)
        except PrivmeterError as exc:
            self.metrics.refused.labels("up", exc.code).inc()
            raise
        await up.send(env)
        self.metrics.messages.labels("up").inc()
        self.metrics.bytes.labels("up").inc(len(env.payload))
        return []

    # -- down: the head-end's messages ---------------------------------------------------------
    async def from_headend(self, _peer: str, msg: Any) -> list[Any]:
        if isinstance(msg, Welcome):
            return []
        if isinstance(msg, ErrorMessage):
            log.info("error code %r from the head-end (a relayed message refused)", msg.code)
            return []
        if isinstance(msg, RosterUpdate):
            self.apply_roster(msg)
            return []
        if isinstance(msg, Bye):
            for m in sorted(self.relay.meters):
                self._deliver(m, msg)
            return []
        if not isinstance(msg, Relayed):
            raise UnexpectedMessage(
                f"a concentrator does not take {type(msg).__name__} from the head-end"
            )
        try:
            meter_id, inner = self.relay.down(msg)
        except PrivmeterError as exc:
            self.metrics.refused.labels("down", exc.code).inc()
            raise
        if isinstance(inner, RosterUpdate):  # the meter's copy of its feeder's roster: ours too
            with contextlib.suppress(PrivmeterError):
                self.apply_roster(inner)
        self.metrics.messages.labels("down").inc()
        self.metrics.bytes.labels("down").inc(len(msg.payload))
        self._deliver(meter_id, inner)
        return []

    def _deliver(self, meter_id: str, msg: Any) -> None:
        """Queue for one meter (in order); a slow meter never holds up the others."""
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        if not self.server.is_connected(meter_id):
            self.metrics.refused.labels("down", "not-connected").inc()
            return
        q = self._queues.setdefault(meter_id, deque())
        if len(q) >= QUEUE_LIMIT:
            self.metrics.refused.labels("down", "queue-full").inc()
            return
        q.append(msg)
        w = self._workers.get(meter_id)
        if w is None or w.done():
            self._workers[meter_id] = asyncio.get_running_loop().create_task(self._drain(meter_id))

    async def _drain(self, meter_id: str) -> None:
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        q = self._queues[meter_id]
        while q:
            batch = list(q)
            q.clear()
            try:
                await self.server.send_many_to(meter_id, batch)
            except PrivmeterError:
                self.metrics.refused.labels("down", "not-connected").inc(len(batch))

    # -- lifecycle -----------------------------------------------------------------------------
    def _connected_changed(self, _peer: str) -> None:
        if self.server is None:
            raise LocalProtocolError("the service is not started (no server)")
        self.metrics.connected.set(len(self.server.peers))

    async def start(self) -> int:
        self.server = Server(
            self.cfg.listen_host,
            self.cfg.listen_port,
            self.identity,
            self.trust,
            self.from_meter,
            server_id=self.cid,
            max_frame=self.cfg.max_message_bytes + FRAME_SLACK,
            idle_timeout=3600.0,
            on_connect=self._connected_changed,
            on_disconnect=self._connected_changed,
        )
        await self.server.start()
        return self.server.port

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the upstream connection (with back-off) until ``stop``."""
        delay = 0.2
        host, port = self.cfg.headend_host, self.cfg.headend_port
        while not stop.is_set():
            try:
                conn = await connect(
                    host, port, self.identity, self.headend_key, handler=self.from_headend
                )
            except (TransportError, PrivmeterError) as exc:
                log.warning("cannot reach the head-end (%s); retrying in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.2
            self.upstream = conn
            self.relay.connected()
            self.metrics.upstream.set(1)
            log.info("connected to the head-end at %s:%d as %s", host, port, self.cid)
            try:
                await conn.send(Hello(meter_id=self.cid, group=self.cfg.group, last_interval=-1))
                closed = asyncio.ensure_future(conn.wait_closed())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for f in (closed, stopping):
                    f.cancel()
            except TransportError as exc:
                log.warning("head-end connection lost: %s", exc)
            finally:
                self.upstream = None
                self.relay.disconnected()
                self.metrics.upstream.set(0)
                await conn.close()
            if not stop.is_set():  # each meter says hello again through the next connection
                log.warning(
                    "disconnected from the head-end; dropping the feeder's meters and reconnecting"
                )
                if self.server is None:
                    raise LocalProtocolError("the service is not started (no server)")
                for m in self.server.peers:
                    self._disconnect(m, "the head-end connection was lost")

    def health(self) -> dict[str, Any]:
        up = self.upstream is not None and not self.upstream.closed
        return {
            "ok": up and self.roster_version >= 0,
            "role": "concentrator",
            "group": self.cfg.group,
            "upstream": up,
            "meters": len(self.relay.meters),
            "connected": 0 if self.server is None else len(self.server.peers),
        }

    async def close(self) -> None:
        for t in [*self._workers.values(), *self._tasks]:
            t.cancel()
        if self.server is not None:
            await self.server.close()
        if self.upstream is not None:
            await self.upstream.close()


async def serve(cfg: ConcentratorConfig, *, stop: asyncio.Event | None = None) -> int:
    """Run the concentrator until SIGTERM/SIGINT (or ``stop``)."""
    svc = ConcentratorService(cfg)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    port = await svc.start()
    http = None
    try:
        if cfg.ops.http_port:
            http = await serve_http(
                cfg.ops.http_host, cfg.ops.http_port, svc.metrics.registry, svc.health
            )
        print(
            f"concentrator {svc.cid} listening on {cfg.listen_host}:{port} for feeder {cfg.group}, "
            f"key {svc.identity.verify_key.hex()}",
            flush=True,
        )
        await svc.run(stop)
    finally:
        log.info("concentrator stopping")
        if http is not None:
            http.close()
        await svc.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        required=True,
        help="concentrator.toml (see `privmeter init concentrator`)",
    )


def run(args: argparse.Namespace) -> int:
    """Errors propagate to :func:`privmeter.cli.main` (one line on stderr)."""
    os.umask(0o077)  # roster.json: the concentrator's own
    cfg = cast(ConcentratorConfig, load_config(args.config, "concentrator"))
    setup_logging(cfg.ops.log_format)
    return asyncio.run(serve(cfg))
