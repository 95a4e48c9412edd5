"""Operations for the deployed services: structured logs, ``/healthz``, Prometheus metrics, SIGTERM.

What it is for: every long-running party (head-end, household agent) logs
one JSON object per line (or plain text), serves ``GET /healthz`` (``200 ok``
while its loop is alive, ``503`` otherwise, with a small JSON body) and
``GET /metrics`` (Prometheus text format, :mod:`prometheus_client`) on the
``[operations]`` address of its config, and stops gracefully on SIGTERM or
SIGINT: the current interval finishes, connections close, databases are
closed (systemd's ``KillSignal=SIGTERM``).

Metric names (all prefixed ``privmeter_``): ``connected_meters``,
``intervals_total{result="unmasked|failed"}``, ``records_total{result="accepted|refused",reason}``,
``demand_events_total``, ``comparisons_total{result="answered|missing"}``,
``directives_total{action}``, ``settlements_total{kind}``, ``enrolments_total{result}``;
households: ``readings_total``, ``rounds_total{result}``, ``settlements_total{kind}``,
``connected``, ``comparisons_total{result="answered|refused",reason}``,
``comparisons_used_today``, ``directives_total{action}``; concentrators: ``connected_meters``,
``upstream_connected``, ``roster_meters``, ``relayed_messages_total{direction}``,
``relayed_bytes_total{direction}``, ``refused_total{direction,reason}``.

Security: the endpoint shows counts only (no meter ids, no readings); bind it
to localhost or a monitoring network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = [
    "ConcentratorMetrics",
    "HeadendMetrics",
    "HouseholdMetrics",
    "JsonFormatter",
    "serve_http",
    "setup_logging",
    "stop_on_signals",
]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, separators=(",", ":"))


def setup_logging(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class HeadendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = Gauge("privmeter_connected_meters", "meters connected now", registry=r)
        self.intervals = Counter(
            "privmeter_intervals", "group intervals closed", ["result"], registry=r
        )
        self.records = Counter(
            "privmeter_records", "billing records", ["result", "reason"], registry=r
        )
        self.events = Counter("privmeter_demand_events", "demand-management events", registry=r)
        self.comparisons = Counter(
            "privmeter_comparisons",
            "secure comparisons of demand-management events",
            ["result"],
            registry=r,
        )
        self.directives = Counter(
            "privmeter_directives", "demand-management directives sent", ["action"], registry=r
        )
        self.settlements = Counter(
            "privmeter_settlements", "settlement answers", ["kind"], registry=r
        )
        self.enrolments = Counter(
            "privmeter_enrolments", "enrolment requests", ["result"], registry=r
        )


class HouseholdMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = Gauge(
            "privmeter_connected", "1 while connected to the head-end", registry=r
        )
        self.readings = Counter("privmeter_readings", "interval readings reported", registry=r)
        self.rounds = Counter("privmeter_rounds", "head-end rounds", ["result"], registry=r)
        self.settlements = Counter(
            "privmeter_settlements", "statements answered", ["kind"], registry=r
        )
        self.comparisons = Counter(
            "privmeter_comparisons",
            "demand-management messages answered or refused",
            ["result", "reason"],
            registry=r,
        )
        self.comparisons_used_today = Gauge(
            "privmeter_comparisons_used_today",
            "comparisons charged on today's readings (the plan's budget)",
            registry=r,
        )
        self.directives = Counter(
            "privmeter_directives", "demand-management directives received", ["action"], registry=r
        )


class ConcentratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = Gauge("privmeter_connected_meters", "meters connected now", registry=r)
        self.upstream = Gauge(
            "privmeter_upstream_connected", "1 while connected to the head-end", registry=r
        )
        self.roster = Gauge(
            "privmeter_roster_meters", "meters of the feeder's signed roster", registry=r
        )
        self.messages = Counter(
            "privmeter_relayed_messages", "messages relayed", ["direction"], registry=r
        )
        self.bytes = Counter(
            "privmeter_relayed_bytes", "payload bytes relayed", ["direction"], registry=r
        )
        self.refused = Counter(
            "privmeter_refused", "messages refused", ["direction", "reason"], registry=r
        )


async def serve_http(
    host: str, port: int, registry: CollectorRegistry, health: Callable[[], dict[str, Any]]
) -> asyncio.Server:
    """``/healthz`` and ``/metrics`` over plain HTTP/1.0 (GET only); returns the started server."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 and parts[0] == "GET" else ""
            if path == "/metrics":
                status, ctype, body = (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    generate_latest(registry),
                )
            elif path == "/healthz":
                h = health()
                status = "200 OK" if h.get("ok") else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(h).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM / SIGINT (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


class Heartbeat:
    """When the service's loop last made progress (for ``/healthz``)."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def ok(self) -> bool:
        return time.monotonic() - self.last <= self.max_age_s
