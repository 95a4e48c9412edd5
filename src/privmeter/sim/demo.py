"""``privmeter demo``: a complete local deployment with the live dashboard.

What it is for: the README's main command.  It builds a neighbourhood
(households with simulated loads, their meters and Paillier keys, the
utility's head-end on SQLite, feeders of ``--group-size`` meters), runs it in
accelerated time in a background thread (:class:`~privmeter.web.engine.DemoEngine`)
and serves the dashboard (:func:`~privmeter.web.app.create_app`) with
uvicorn at ``http://HOST:PORT`` until interrupted.

Start-up cost: keys are generated once from the seed and cached in the data
directory (``--data-dir``, default ``~/.cache/privmeter/demo``), load profiles
likewise, so the second start takes seconds.  Household keys default to
2048 bits (``--key-bits 3072`` for the library default; the first start then
takes longer); the dashboard's footer says which.

Security: binds to loopback by default; the dashboard has no authentication
(it is a local demonstration).  Guarantee: every figure the dashboard shows
comes from the running protocol objects.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from privmeter.argtypes import at_least, fraction, non_negative, port, positive

__all__ = ["add_arguments", "default_data_dir", "run"]


def default_data_dir() -> Path:
    import os

    root = os.environ.get("PRIVMETER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "privmeter") / "demo"


def _listen(host: str, port: int) -> socket.socket:
    """The dashboard's listening socket, bound now so that a busy port is reported first."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot serve on host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot serve on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: loopback only)"
    )
    p.add_argument("--port", type=port, default=8000, help="port (default 8000)")
    p.add_argument(
        "--households", type=at_least(1), default=24, help="number of households (default 24)"
    )
    p.add_argument(
        "--group-size",
        type=at_least(1),
        default=8,
        help="meters per feeder (default 8; at least 5, the feeder minimum)",
    )
    p.add_argument(
        "--topology",
        choices=("star",),
        default="star",
        help="aggregation topology (the robust star; the ring runs in `privmeter simulate`)",
    )
    p.add_argument(
        "--speed",
        type=positive,
        default=900.0,
        help="simulated seconds per wall second (default 900: one 15-minute interval a second)",
    )
    p.add_argument(
        "--days", type=at_least(1), default=2, help="simulated days before the run ends (default 2)"
    )
    p.add_argument(
        "--seed", type=int, default=1, help="seed for loads and simulation keys (default 1)"
    )
    p.add_argument(
        "--key-bits",
        type=int,
        choices=(2048, 3072),
        default=2048,
        help="household Paillier key size (default 2048 for a fast start; 3072 is the library default)",
    )
    p.add_argument(
        "--bill-every",
        type=at_least(1),
        default=16,
        metavar="INTERVALS",
        help="billing period in intervals (default 16 = 4 h, so bills appear within a minute)",
    )
    p.add_argument(
        "--plan", default="economy7", help="built-in plan name or plan TOML (default economy7)"
    )
    p.add_argument(
        "--prosumers", type=fraction, default=0.25, help="share of homes with PV (default 0.25)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="SQLite store and key/profile cache (default ~/.cache/privmeter/demo)",
    )
    p.add_argument(
        "--transport",
        choices=("tcp", "memory"),
        default="tcp",
        help="tcp (default): the parties talk over loopback sockets through the authenticated, "
        "encrypted transport with the network emulator; memory: in process, through the codec",
    )
    p.add_argument(
        "--latency",
        type=non_negative,
        default=20.0,
        metavar="MS",
        help="emulated one-way latency (default 20 ms)",
    )
    p.add_argument(
        "--jitter",
        type=non_negative,
        default=5.0,
        metavar="MS",
        help="emulated jitter (default 5 ms)",
    )
    p.add_argument(
        "--loss", type=fraction, default=0.0, help="emulated record loss probability (default 0)"
    )
    p.add_argument("--paused", action="store_true", help="start with the clock paused")


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from rich.console import Console

    from privmeter.web.app import create_app
    from privmeter.web.engine import DemoConfig, DemoEngine

    console = Console(stderr=True)
    data_dir = args.data_dir or default_data_dir()
    cfg = DemoConfig(
        households=args.households,
        days=args.days,
        seed=args.seed,
        key_bits=args.key_bits,
        speed=args.speed,
        group_size=args.group_size,
        bill_intervals=args.bill_every,
        plan=args.plan,
        prosumer_share=args.prosumers,
        topology=args.topology,
        data_dir=data_dir,
        transport=args.transport,
        latency_ms=args.latency,
        jitter_ms=args.jitter,
        loss=args.loss,
    )
    sock = _listen(args.host, args.port)  # a busy port fails here, before any work or URL
    with console.status(
        "building the neighbourhood (keys and profiles are cached after the first run)..."
    ):
        engine = DemoEngine(cfg)
        engine.paused = bool(args.paused)
        engine.start()
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        hosts = ["*"]  # the operator chose to expose the demo
    app = create_app(engine, allowed_hosts=hosts)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    console.print(
        f"[bold]privmeter demo[/bold]: {len(engine.meter_ids)} households on {len(engine.groups)} "
        f"feeders, {cfg.key_bits}-bit keys, built in {engine.build_seconds:.1f} s"
    )
    console.print(f"transport: {engine.transport}")
    console.print(f"dashboard: [bold cyan]{url}[/bold cyan]   (Ctrl-C to stop)")

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            engine.request_stop()  # live streams end, so the graceful shutdown is quick
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = _Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled gracefully
        pass
    finally:
        engine.stop()
    console.print("privmeter demo: stopped")
    return 0
