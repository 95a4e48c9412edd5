"""privmeter.cluster: the head-end sharded by feeder group (Ray actors, PostgreSQL store).

Modules: ``shard`` (one shard: a head-end core over some groups, on its own
PostgreSQL schema), ``pgstore`` (its store), ``routing`` (which shard owns
which group; how calls reach the shards), ``ray_backend`` (the shards as Ray
actors), ``headend`` (the sharded head-end as one object), ``frontdoor``
(meters' connections, batched to the shards), ``service`` (the deployed
head-end's core, link and interval engine on a cluster: ``privmeter headend``
with ``[cluster]``), ``localpg`` (a throwaway local PostgreSQL server).  See
``docs/scale.md``.

Nothing here imports Ray at module import time: Ray is loaded only when a
cluster is actually started (:mod:`privmeter.cluster.ray_backend`), so the
embedded head-end (SQLite, one process) never pays for it.
"""

__all__: list[str] = []
