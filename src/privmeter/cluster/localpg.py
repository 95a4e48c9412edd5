"""A throwaway PostgreSQL server in a temporary directory (tests, benchmarks, pilots on one machine).

What it is for: the sharded head-end needs a PostgreSQL database; the tests
and ``privmeter bench scale`` start their own with :class:`LocalPostgres`:
``initdb`` into a fresh directory, ``pg_ctl start`` listening only on a Unix
socket in that directory (port chosen free), trust authentication for the
one local user, and ``pg_ctl stop`` + removal at the end.  A production
deployment points the shards at its own PostgreSQL server with a DSN instead.

PostgreSQL refuses to run as root: when we are root, the server runs as the
``postgres`` system user if it exists (Debian's package creates it), else as
``nobody``, through ``runuser``.  Binaries are found with ``pg_config
--bindir`` or under ``/usr/lib/postgresql/*/bin`` (Debian's layout).

Security: the server accepts any local connection to its socket directory
(trust), which only its owner and root can reach (mode 0700 would lock the
server out of its own directory, so the directory is owned by the server's
user).  Durability as a real server: ``fsync`` and ``synchronous_commit`` on.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from privmeter.errors import ConfigError

__all__ = ["LocalPostgres", "postgres_bindir"]


def postgres_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (ConfigError if PostgreSQL is not installed)."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run(
            [found, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(d) / "initdb").exists():
            return Path(d)
    raise ConfigError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """``with LocalPostgres() as pg: connect(pg.dsn)``: a private server, removed on exit."""

    def __init__(self, *, user: str = "privmeter", dbname: str = "privmeter") -> None:
        self.bindir = postgres_bindir()
        self.user, self.dbname = user, dbname
        self.dir = Path(tempfile.mkdtemp(prefix="privmeter-pg-"))
        self.port = _free_port()
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            owner = "postgres"
            try:
                pw = pwd.getpwnam(owner)
            except KeyError:
                owner, pw = "nobody", pwd.getpwnam("nobody")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run_as = ["runuser", "-u", owner, "--"]
        self.started = False

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        return f"host={self.dir} port={self.port} user={self.user} dbname={dbname}"

    def create_database(self, dbname: str) -> str:
        """A fresh database on this server (one per run keeps runs apart); returns its DSN."""
        self._pg(
            str(self.bindir / "createdb"),
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            dbname,
        )
        return self.dsn_for(dbname)

    def _pg(self, *args: str) -> None:
        res = subprocess.run([*self._run_as, *args], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ConfigError(
                f"{Path(args[0]).name} failed: {(res.stderr or res.stdout).strip()[-500:]}"
            )

    def start(self) -> LocalPostgres:
        data = self.dir / "data"
        self._pg(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--no-sync",
        )
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses='' -c max_connections=50"
        self._pg(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-o",
            opts,
            "start",
        )
        self.started = True
        self.create_database(self.dbname)
        return self

    def stop(self) -> None:
        if self.started:
            self.started = False
            self._pg(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            )
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
