"""Sharded head-end (shards in this process, PostgreSQL): same totals and bills as one process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from privmeter.bench.fleet import Fleet, make_world, run_world
from privmeter.cluster.headend import start_cluster
from privmeter.cluster.localpg import LocalPostgres
from privmeter.cluster.routing import ShardMap
from privmeter.cluster.service import ClusterCore, ClusterEngine
from privmeter.errors import ConfigError
from privmeter.parties.headend import GroupConfig

from .helpers import check_bills, check_exact


def test_shard_map_balances_and_is_stable() -> None:
    groups = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"], "d": ["d1", "d2"]}
    m = ShardMap(groups, 2)
    assert m.group_shard == ShardMap(dict(reversed(groups.items())), 2).group_shard
    assert sorted(sum(len(groups[g]) for g in m.groups_of(i)) for i in range(2)) == [4, 4]
    assert m.shard_of_meter("hh:c2") == m.shard_of_group("c")


def test_two_shards_equal_single_process(pg: LocalPostgres, tmp_path: Path, paillier_small) -> None:
    world = make_world(
        groups=3, per_group=5, intervals=3, household=paillier_small[1], min_survivors=3
    )
    key = world.write_headend_key(tmp_path)
    common = dict(
        headend_key=key,
        plans=[world.plan_toml],
        groups=world.group_configs(),
        backend="local",
        interval_seconds=60,
        min_key_bits=512,
    )
    single = start_cluster(dsn=f"sqlite:{tmp_path / 'single.db'}", shards=1, **common)
    one = run_world(single, world, Fleet(world))
    pg.create_database("two")
    sharded = start_cluster(dsn=pg.dsn_for("two"), shards=2, **common)
    two = run_world(sharded, world, Fleet(world))
    assert check_exact(world, one) == 0
    assert len(one.totals) == 3 * 3  # every interval of every group, exact
    assert two.totals == one.totals
    assert sharded.totals() == sorted(one.totals, key=lambda t: (t.group, t.interval))
    assert two.statements == one.statements
    check_bills(world, sharded, two)
    assert {i["index"]: i["records"] for i in sharded.info()} == {0: 10 * 3, 1: 5 * 3}
    single.close()
    sharded.close()


def test_groups_defined_at_run_time_stay_on_their_shard(
    pg: LocalPostgres, tmp_path: Path, paillier_small
) -> None:
    """The deployed head-end defines groups as households enrol: each goes to the least loaded
    shard, durably; a restarted coordinator finds them where their data is (also with more
    shards), and refuses fewer shards than before."""
    world = make_world(
        groups=3, per_group=3, intervals=2, household=paillier_small[1], min_survivors=3
    )
    kw = dict(
        dsn=pg.create_database("runtime"),
        headend_key=world.write_headend_key(tmp_path),
        plans=[world.plan_toml],
        groups=[],
        backend="local",
        interval_seconds=60,
        min_key_bits=512,
    )
    head = start_cluster(shards=2, **kw)
    assert head.restore() == {}
    placed = {g.group_id: head.define_group(g) for g in world.group_configs()}
    assert sorted(placed.values()) == [0, 0, 1]
    log = run_world(head, world, Fleet(world))
    assert check_exact(world, log) == 0 and len(log.totals) == 3 * 2
    check_bills(world, head, log)
    head.close()
    again = start_cluster(shards=3, **kw)
    try:
        assert again.restore() == placed
        assert again.totals() == sorted(log.totals, key=lambda t: (t.group, t.interval))
        again.shards.shards[1].store.put_settlement(world.meters[0], 0, "paid", b"proof", 7)  # type: ignore[attr-defined]
        assert (
            again.settled()
            == [(m, p) for m, p, *_ in again.settlements()]
            == [(world.meters[0], 0)]
        )
        extra = GroupConfig(group_id="g-new", members=("n1", "n2", "n3"), min_survivors=3)
        assert again.define_group(extra) == 2  # the new, empty shard
    finally:
        again.close()
    fewer = start_cluster(shards=2, **kw)
    try:
        with pytest.raises(ConfigError, match="cannot shrink to 2"):
            fewer.restore()
    finally:
        fewer.close()


def test_cluster_engine_gives_a_group_without_epoch_a_new_one(
    pg: LocalPostgres, tmp_path: Path, paillier_small
) -> None:
    """A shard that Ray restarted has no epoch for its groups (their secrets are never stored):
    the deployed head-end's engine notices at the next interval and names their members, so the
    interval loop sets up a new epoch instead of failing every interval from then on."""
    world = make_world(
        groups=2, per_group=3, intervals=1, household=paillier_small[1], min_survivors=3
    )
    head = start_cluster(
        dsn=pg.create_database("stale"),
        headend_key=world.write_headend_key(tmp_path),
        plans=[world.plan_toml],
        groups=world.group_configs(),
        shards=2,
        backend="local",
        interval_seconds=60,
        min_key_bits=512,
    )

    class Nobody:  # a link on which no meter answers
        async def exchange(self, outgoing: object, **kw: object) -> set[str]:
            return set()

    eng = ClusterEngine(ClusterCore(head, world.headend_key, lambda _m: None), Nobody())  # type: ignore[arg-type]
    groups = {g: tuple(ms) for g, ms in sorted(world.groups.items())}
    try:
        asyncio.run(eng.interval(groups, world.first, now=(world.first + 1) * 60))
        assert eng.take_stale() == {m for ms in groups.values() for m in ms}
        assert eng.take_stale() == set()
    finally:
        head.close()
