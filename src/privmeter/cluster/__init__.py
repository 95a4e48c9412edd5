"""privmeter.cluster: the head-end sharded by feeder group (Ray actors, PostgreSQL store).

Nothing here imports Ray at module import time: Ray is loaded only when a
cluster is actually started (:mod:`privmeter.cluster.ray_backend`), so the
embedded head-end (SQLite, one process) never pays for it.
"""
