"""``privmeter headend`` with ``[cluster]``: start the sharded head-end the config describes.

What it is for: :func:`start` checks what a cluster needs before anything
starts -- the ``cluster`` extra installed (Ray, psycopg), the PostgreSQL
database reachable -- each with a one-line error, then joins or starts the Ray
cluster (``address``: ``local``, ``auto``, ``HOST:PORT``), starts the shards
(:func:`privmeter.cluster.headend.start_cluster`), puts the groups back on the
shards that hold their data (:meth:`~privmeter.cluster.headend.ClusterHeadEnd.restore`)
and returns the pieces the deployed head-end runs on: the core's bookkeeping,
the link through a front door and the interval engine
(:mod:`privmeter.cluster.service`).  Nothing here runs unless a config has a
``[cluster]`` table: the embedded head-end never imports Ray or psycopg.

Security: the DSN names the utility's database (no password in the config:
``~/.pgpass``); the shards read the head-end's key file from ``state_dir``,
which must be at the same path on every Ray node (docs/scale.md).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from privmeter.app.config import ClusterConfig, HeadendConfig
from privmeter.errors import ConfigError
from privmeter.grid.tariff.plans import Plan
from privmeter.parties.registry import Registry

__all__ = ["ClusterRun", "check_installed", "check_postgres", "start"]

log = logging.getLogger("privmeter.headend")

EXTRA = 'pip install "privmeter[cluster]"'


def check_installed() -> None:
    """ConfigError (one line) unless Ray and psycopg are importable."""
    missing = [m for m in ("ray", "psycopg") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"the head-end's [cluster] settings need the cluster extra ({' and '.join(missing)} "
            f"not installed): {EXTRA}"
        )


def check_postgres(dsn: str, timeout_s: int = 10) -> None:
    """ConfigError (one line) unless the database answers."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=timeout_s) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"cannot reach PostgreSQL (store.postgres): {why}") from None


@dataclass
class ClusterRun:
    """What the deployed head-end runs on when sharded."""

    core: Any  # privmeter.cluster.service.ClusterCore
    link: Any  # privmeter.cluster.service.ClusterLink
    engine: Callable[[Any, Any], Any]  # (core, link) -> ClusterEngine
    placed: dict[str, int]  # group -> shard, restored from the shards' schemas

    def last_interval(self) -> int:
        """The last interval with a stored total (-1: none): a restarted head-end serves after it."""
        return max((t.interval for t in self.core.totals()), default=-1)

    def close(self) -> None:
        self.core.head.close()
        import sys

        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()


def start(
    cfg: HeadendConfig,
    signing_key: Any,
    plans: Mapping[str, tuple[Plan, str]],
    registry: Registry,
    *,
    interval_seconds: int,
) -> ClusterRun:
    cc: ClusterConfig | None = cfg.cluster
    if cc is None:
        raise ConfigError("no [cluster] in the config")
    check_installed()
    check_postgres(cc.postgres)
    from privmeter.cluster.frontdoor import FrontDoor
    from privmeter.cluster.headend import start_cluster
    from privmeter.cluster.ray_backend import connect_ray
    from privmeter.cluster.service import ClusterCore, ClusterEngine, ClusterLink

    key_file = cfg.state_dir / "headend.key.json"
    if cc.address == "local":  # a private Ray: one logical CPU per shard at least
        import os

        connect_ray(None, num_cpus=max(cc.shards, os.cpu_count() or 1))
    else:
        connect_ray(cc.address)
    head = start_cluster(
        dsn=cc.postgres,
        headend_key=str(key_file),
        plans=[t for _, t in plans.values()],
        groups=[],
        shards=cc.shards,
        backend="ray",
        address=None if cc.address == "local" else cc.address,
        interval_seconds=interval_seconds,
        min_key_bits=cfg.min_household_key_bits,
    )
    try:
        placed = head.restore()
    except BaseException:
        head.close()
        raise
    log.info(
        "cluster up: %d shards on Ray (%s), %d groups restored", cc.shards, cc.address, len(placed)
    )
    core = ClusterCore(head, signing_key, registry.member)
    link = ClusterLink(
        core,
        FrontDoor(head),
        round_timeout=cfg.round_timeout_s,
        round_idle=min(2.0, cfg.round_timeout_s),
    )
    return ClusterRun(core=core, link=link, engine=ClusterEngine, placed=placed)
