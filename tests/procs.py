"""Helpers for the end-to-end tests that run privmeter's services as separate processes.

Used by tests/app/test_pilot.py, test_pilot_dr.py, test_concentrator.py,
test_enrol_live.py and tests/cluster/test_deployed.py: a free loopback port, the CLI in
this process, the head-end's config rewritten for a test (:func:`headend_config`), a
service as a child process (SIGTERM, then kill), polling with a deadline, read-only
SQLite queries, and the services' HTTP endpoints (/healthz, /metrics).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from privmeter.cli import main
from privmeter.grid.devices.csvsource import write_csv_readings
from privmeter.grid.devices.source import IntervalReading

__all__ = [
    "csv_household",
    "free_port",
    "get",
    "headend_config",
    "metric",
    "query",
    "run_cli",
    "spawn",
    "stop",
    "wait_for",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``privmeter ARGV`` in this process; asserts exit 0 and returns its stdout."""
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


# what every config of a test on this machine changes in its starter (``privmeter init ROLE``)
_LOCAL: dict[str, dict[str, Any]] = {
    "headend": {"listen": {"host": "127.0.0.1"}, "keys": {"min_household_key_bits": 2048}},
    "household": {"headend": {"host": "127.0.0.1"}},
    "concentrator": {"listen": {"host": "127.0.0.1"}, "headend": {"host": "127.0.0.1"}},
}


def write_config(directory: Path, role: str, **values: Any) -> Path:
    """Rewrite ``directory/ROLE.toml``, as ``privmeter init ROLE`` wrote it, for a test on this
    machine; returns its path.

    Servers listen on 127.0.0.1 and clients dial the head-end there (a head-end also accepts
    2048-bit household keys); then each keyword is merged in: a mapping is a table of the config,
    merged key by key (``headend={"port": port}``), a table the file lacks (``cluster``,
    ``concentrator``) added; anything else is a top-level key (``plan="pilot-3s"``).  The file
    is written back as plain TOML (the starter's comments dropped).
    """
    path = directory / f"{role}.toml"
    cfg: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    for key, value in [*_LOCAL[role].items(), *values.items()]:
        if isinstance(value, Mapping):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path.write_text(_toml(cfg), encoding="utf-8")
    return path


def headend_config(directory: Path, **tables: Mapping[str, Any]) -> Path:
    """:func:`write_config` of ``directory/headend.toml`` (``billing={"plans": ["pilot-3s"]}``)."""
    return write_config(directory, "headend", **tables)


def _toml(cfg: Mapping[str, Any]) -> str:
    """TOML text of a config: top-level keys, then one ``[table]`` per table (one level deep)."""

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"no TOML for {v!r} in a test config")

    lines = [f"{key(k)} = {value(v)}" for k, v in cfg.items() if not isinstance(v, Mapping)]
    for table, values in cfg.items():
        if isinstance(values, Mapping):
            lines += ["", f"[{key(table)}]", *(f"{key(k)} = {value(v)}" for k, v in values.items())]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != cfg:  # the test's config is exactly what the head-end reads
        raise ValueError(f"config does not round-trip through TOML: {cfg!r}")
    return text


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m privmeter ARGS`` as a child process, stdout and stderr appended to LOG."""
    with open(log, "ab") as f:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "privmeter", *args], stdout=f, stderr=f)


def stop(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the services' graceful shutdown), then kill after 15 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(
    cond: Callable[[], object], timeout: float, what: str, log: Path | None = None
) -> None:
    """Poll COND until it is true; on timeout fail with WHAT and the tail of LOG."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}".rstrip())


def query(db: Path, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of SQL on a service's SQLite database, read-only; [] while the table is missing."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    """GET http://127.0.0.1:PORT/PATH: (status, body), (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def metric(text: str, name: str) -> float:
    """The value of an unlabelled Prometheus metric NAME in a /metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def csv_household(
    d: Path,
    mid: str,
    readings: dict[int, int],
    interval_s: int,
    plan: str,
    port: int,
    capsys: pytest.CaptureFixture[str],
    **values: Any,
) -> Path:
    """``privmeter init household`` into D (2048-bit key), READINGS (interval -> Wh) as its
    CSV source, and its config written for a local test (:func:`write_config`): the CSV source,
    PLAN, the head-end on 127.0.0.1:PORT, no fixed HTTP port, 1 s clock skew, then VALUES.
    Returns the config's path."""
    run_cli(["init", "household", "--dir", str(d), "--meter-id", mid, "--key-bits", "2048"], capsys)
    write_csv_readings(
        d / "readings.csv",
        [IntervalReading(interval=t, energy_wh=wh) for t, wh in readings.items()],
        interval_s,
    )
    return write_config(
        d,
        "household",
        **{
            "source": f"csv:{d / 'readings.csv'}",
            "plan": plan,
            "clock_skew_s": 1,
            "headend": {"port": port},
            "operations": {"http_port": 0},
            **values,
        },
    )
