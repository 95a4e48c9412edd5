"""Faults on a real Ray cluster with a real PostgreSQL: a shard killed mid-interval, a whole node lost.

Nothing accepted is lost, every total is exact or reported failed (never wrong), the meters'
unacknowledged records are resent and accepted, and every bill still proves and audits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from privmeter.bench.fleet import Fleet, World, make_world, run_world
from privmeter.cluster.headend import ClusterHeadEnd, start_cluster
from privmeter.cluster.localpg import LocalPostgres
from privmeter.cluster.shard import SHARD_RESTARTED

from .helpers import check_bills, check_exact

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _normal_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    from privmeter.cluster.ray_backend import WORKER_NICENESS

    monkeypatch.setenv(WORKER_NICENESS, "0")  # shards not starved by a busy machine


@pytest.fixture
def world(paillier_small) -> World:
    return make_world(
        groups=4, per_group=4, intervals=6, household=paillier_small[1], min_survivors=3
    )


def _start(world: World, pg: LocalPostgres, tmp_path: Path, db: str, **kw) -> ClusterHeadEnd:
    return start_cluster(
        dsn=pg.create_database(db),
        headend_key=world.write_headend_key(tmp_path),
        plans=[world.plan_toml],
        groups=world.group_configs(),
        shards=2,
        interval_seconds=60,
        min_key_bits=512,
        num_cpus=0.5,
        **kw,
    )


def _check_run(world: World, head: ClusterHeadEnd, log, fleet: Fleet, killed: int) -> int:
    """Exact-or-failed totals, failures only on the killed shard's groups, nothing pending, bills audit."""
    failed = check_exact(world, log, allow_failed=True)
    stored = head.totals()
    assert sorted(stored, key=lambda t: (t.group, t.interval)) == stored
    seen = {(t.group, t.interval) for t in stored}
    assert len(seen) == len(stored)  # each total once
    for g in world.groups:  # every real interval has a total or a reported failure
        assert {(g, t) for t in range(world.first, world.first + world.intervals)} <= seen
    lost = {t.group for t in stored if t.total is None}
    assert lost and all(head.map.shard_of_group(g) == killed for g in lost)
    assert all(t.error == SHARD_RESTARTED for t in stored if t.total is None)
    assert fleet.pending() == 0  # every record acknowledged in the end
    check_bills(world, head, log)
    return failed


@pytest.fixture
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def test_shard_killed_mid_interval(
    world: World, pg: LocalPostgres, tmp_path: Path, local_ray: None
) -> None:
    head = _start(world, pg, tmp_path, "kill_shard")
    fleet = Fleet(world)
    before = {i["index"]: i for i in head.info()}
    victim, t_kill = 0, world.first + 2
    dsn = pg.dsn_for("kill_shard")

    def kill_in_flight(t: int, stage: str) -> None:
        """Hold the victim's log table so its group commit blocks, kill it while blocked, release."""
        if (t, stage) != (t_kill, "forward"):
            return
        con = psycopg.connect(dsn)
        con.execute(f"LOCK TABLE shard_{victim}.log IN EXCLUSIVE MODE")

        def killer() -> None:
            for _ in range(200):  # wait until the shard's COPY waits on our lock
                waiting = con.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'COPY log%'"
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
            head.shards.kill(victim)  # type: ignore[attr-defined]
            time.sleep(0.5)
            con.rollback()
            con.close()

        threading.Thread(target=killer, daemon=True).start()

    try:
        log = run_world(head, world, fleet, hook=kill_in_flight)
        after = {i["index"]: i for i in head.info()}
        assert after[victim]["pid"] != before[victim]["pid"] and after[victim]["resumed"]
        assert after[1 - victim]["pid"] == before[1 - victim]["pid"]
        assert fleet.resent >= len(
            world.groups[head.map.groups_of(victim)[0]]
        )  # the lost batch came again
        assert (
            fleet.rejected["unavailable"] > 0
        )  # ... because it was refused, unacknowledged, when the shard died
        failed = _check_run(world, head, log, fleet, victim)
        assert 1 <= failed <= 3 * len(head.map.groups_of(victim))
    finally:
        head.close()


def test_worker_node_lost(world: World, pg: LocalPostgres, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        head = _start(world, pg, tmp_path, "kill_node", placement=[None, node.node_id])
        fleet = Fleet(world)
        on_node = [i["index"] for i in head.info() if i["node"] == node.node_id]
        assert on_node == [1]

        def lose_node(t: int, stage: str) -> None:
            if (t, stage) == (world.first + 3, "close"):
                cluster.remove_node(node, allow_graceful=False)  # SIGKILL: raylet and its workers
                for _ in range(
                    300
                ):  # the interval loop carries on once Ray has noticed (heartbeats)
                    if not any(n["Alive"] for n in ray.nodes() if n["NodeID"] == node.node_id):
                        break
                    time.sleep(0.1)

        log = run_world(head, world, fleet, hook=lose_node)
        moved = {i["index"]: i["node"] for i in head.info()}
        assert moved[1] not in ("", node.node_id)  # the shard runs on the surviving node now
        _check_run(world, head, log, fleet, 1)
        head.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
