"""The shards as Ray actors: placed on any node, restarted (elsewhere if need be) when they die.

What it is for: :class:`RayShards` starts one Ray actor per
:class:`~privmeter.cluster.shard.ShardSpec` (``max_restarts=-1``: Ray
restarts a dead shard for ever, on another node if its node is gone; the
restarted shard reloads from PostgreSQL) and implements
:class:`~privmeter.cluster.routing.Shards` on them.  Calls that were in flight
when a shard died fail (``max_task_retries=0``: a batch is never applied
twice behind the caller's back); the caller reports them unacknowledged and
the meters resend.

:func:`connect_ray` joins a running cluster (``address``: ``"auto"`` for the
one this machine belongs to, or ``host:port``) or, with ``address=None``,
starts a private one on this machine.  This is the only module that imports
``ray``, and only when called.  Ray runs workers at niceness 15 by default;
the private clusters started here run the shards at normal priority
(:data:`WORKER_NICENESS`).

Arguments and results crossing Ray are JSON text, codec bytes, strings and
integers (see :mod:`privmeter.cluster.shard`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from privmeter.cluster.routing import Call, ShardUnavailable
from privmeter.cluster.shard import ShardCore, ShardSpec
from privmeter.errors import ConfigError

if TYPE_CHECKING:
    from ray.actor import ActorHandle

__all__ = ["WORKER_NICENESS", "RayShards", "connect_ray"]

# Ray starts worker processes (our shards) at niceness 15, below everything else on the node; a
# head-end shard is the node's main work, so the clusters started here run them at 0 (a cluster
# started with `ray start` takes the same environment variable).
WORKER_NICENESS = "RAY_worker_niceness"


def connect_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``"auto"``, ``host:port``) or start a local one."""
    try:
        import ray
    except ImportError:
        raise ConfigError('the cluster needs Ray: pip install "privmeter[cluster]"') from None
    if ray.is_initialized():
        return
    kw: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address is None:  # a private cluster, even if another one runs on this machine
        kw["num_cpus"] = num_cpus
        os.environ.setdefault(WORKER_NICENESS, "0")  # shards at normal priority (Ray's default: 15)
    try:
        ray.init(address=address or "local", **kw)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from None


class RayShards:
    """One restartable Ray actor per shard spec."""

    def __init__(
        self,
        specs: Sequence[ShardSpec],
        *,
        num_cpus: float = 1.0,
        placement: Sequence[str | None] | None = None,
        max_restarts: int = -1,
    ) -> None:
        """``placement``: per shard, a Ray node id to *prefer* (soft: the shard moves if it dies)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray = ray
        actor = ray.remote(ShardCore)
        self.actors: list[ActorHandle[ShardCore]] = []
        for k, spec in enumerate(specs):
            opts: dict[str, Any] = {
                "max_restarts": max_restarts,
                "max_task_retries": 0,
                "num_cpus": num_cpus,
                "name": f"privmeter-shard-{spec.index}",
            }
            node = placement[k] if placement else None
            if node is not None:
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    node_id=node, soft=True
                )
            # ray annotates options(...).remote() as ActorHandle | the class itself: it is the handle
            self.actors.append(actor.options(**opts).remote(spec.to_json()))  # type: ignore[arg-type]
        self.call_many([(k, "info", ()) for k in range(len(self.actors))])  # wait until all are up

    def call_many(self, calls: Sequence[Call]) -> list[Any]:
        refs = [getattr(self.actors[i], name).remote(*args) for i, name, args in calls]
        out: list[Any] = []
        for (i, name, _), ref in zip(calls, refs, strict=True):
            try:
                out.append(self._ray.get(ref))
            except self._ray.exceptions.RayTaskError as exc:  # the shard raised: its own error
                out.append(exc.cause if isinstance(exc.cause, Exception) else exc)
            except (
                self._ray.exceptions.RayError
            ) as exc:  # the shard died (or its node): not applied
                out.append(
                    ShardUnavailable(f"shard {i} unavailable during {name}: {type(exc).__name__}")
                )
        return out

    def kill(self, shard: int) -> None:
        """Kill a shard's process (fault tests); Ray restarts it."""
        self._ray.kill(self.actors[shard], no_restart=False)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a, no_restart=True)
