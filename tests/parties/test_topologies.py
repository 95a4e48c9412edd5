"""Ring and tree topologies in memory; the concentrator relay's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from privmeter.errors import UnknownParty
from privmeter.parties.concentrator import Concentrator, Relayed, hierarchical_totals
from privmeter.parties.messages import Tick
from privmeter.protocol.codec import decode, encode
from privmeter.sim.runner import run_memory
from privmeter.sim.scenario import build

from ..conftest import tiny_scenario


def test_ring_exact_and_a_dropout_stalls_the_round(sim_cache: Path) -> None:
    res = run_memory(build(tiny_scenario(sim_cache, topology="ring")))
    assert res["aggregation"]["max_abs_error"] == 0
    assert res["aggregation"]["intervals"] == 8
    assert res["billing"]["verified"] == 6
    # the founding paper's ring cannot route around a missing meter: those rounds fail
    res = run_memory(build(tiny_scenario(sim_cache, topology="ring", dropout=0.1)))
    agg = res["aggregation"]
    assert agg["failed_intervals"] > 0
    assert agg["max_abs_error"] == 0  # the rounds that complete are exact
    assert res["billing"]["verified"] == 6  # billing does not depend on the ring


def test_tree_hierarchical_totals_exact(sim_cache: Path) -> None:
    sc = tiny_scenario(sim_cache, topology="tree", households=12, group_size=6, min_survivors=3)
    res = run_memory(build(sc))
    tree = res["aggregation"]["tree"]
    assert tree["concentrators"] == 2
    assert tree["root_intervals"] == 8
    assert tree["root_max_abs_error"] == 0
    assert res["billing"]["verified"] == 12


def test_concentrator_relays_only_its_meters() -> None:
    c = Concentrator("dc-1", ["m1", "m2"])
    env = c.up("m1", Tick(now=1, interval=1))
    back = decode(encode(env))
    assert isinstance(back, Relayed)
    assert c.down(back) == ("m1", Tick(now=1, interval=1))
    with pytest.raises(UnknownParty):
        c.up("m9", Tick(now=1, interval=1))
    with pytest.raises(UnknownParty):
        c.down(Relayed(meter_id="m9", payload=encode(Tick(now=1, interval=1))))


def test_concentrator_refuses_oversized_messages_both_ways() -> None:
    from privmeter.errors import MessageTooLarge
    from privmeter.parties.messages import FeedPublished

    c = Concentrator("dc-1", ["m1"], max_bytes=1024)
    small, big = FeedPublished(feed_json="x" * 900), FeedPublished(feed_json="x" * 1100)
    assert c.down(c.up("m1", small)) == ("m1", small)
    with pytest.raises(MessageTooLarge):
        c.up("m1", big)
    with pytest.raises(MessageTooLarge):
        c.down(Relayed(meter_id="m1", payload=encode(big)))
    assert c.bytes_up["m1"] == c.bytes_down["m1"] == len(encode(small))


def test_hierarchical_totals() -> None:
    feeders = {"f1": {1: 10, 2: 5}, "f2": {1: 7, 2: None}}
    out = hierarchical_totals(feeders, {"f1": "sub", "f2": "sub", "sub": "root"})
    assert out["sub"] == {1: 17, 2: None}
    assert out["root"] == {1: 17, 2: None}
    with pytest.raises(ValueError):
        hierarchical_totals({"a": {1: 1}}, {"a": "b", "b": "a"})
