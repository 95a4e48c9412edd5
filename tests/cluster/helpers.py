"""Shared checks of the cluster tests: exact totals, and bills that prove and audit."""

from __future__ import annotations

from privmeter.bench.fleet import RunLog, World
from privmeter.cluster.headend import ClusterHeadEnd
from privmeter.grid.tariff.plan_toml import parse_plan
from privmeter.protocol.records import record_from_bytes
from privmeter.protocol.settlement import BillProof, audit, settle


def check_exact(world: World, log: RunLog, *, allow_failed: bool = False) -> int:
    """Every stored total equals the plaintext sum (or, if allowed, is reported failed);
    returns how many were reported failed."""
    failed = 0
    for t in log.totals:
        if t.total is None:
            assert allow_failed and t.error, t
            failed += 1
        else:
            assert t.total == world.true_total(t.group, t.interval), t
    return failed


def check_bills(world: World, head: ClusterHeadEnd, log: RunLog) -> None:
    """Each household proves its bill (equal to its own plaintext bill) and the proof audits."""
    plan = parse_plan(world.plan_toml)
    end = world.first + world.intervals
    for m in world.meters:
        st = log.statements[m]
        readings = {t: world.readings[(m, t)] for t in range(world.first, end)}
        recs = [record_from_bytes(r) for r in head.records(m, world.first, end)]
        proof = settle(
            st,
            headend_key=world.headend_key.verify_key,
            meter_key=world.meter_keys[m].verify_key,
            secret_key=world.household,
            meter_id=m,
            plan=plan,
            period=range(st.start, st.end),
            readings=readings,
            records=recs,
        )
        assert isinstance(proof, BillProof), proof
        assert proof.bill == sum(wh * 14228 for wh in readings.values())
        audit(
            st,
            recs,
            plan,
            None,
            proof,
            headend_key=world.headend_key.verify_key,
            meter_key=world.meter_keys[m].verify_key,
            household_pk=world.household.public_key,
            min_key_bits=world.household.public_key.bits,
        )
