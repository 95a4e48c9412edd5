"""Audit bundles: what ``privmeter simulate`` leaves for ``privmeter audit``.

After a run, ``DIR/audit/`` holds the public material a third party needs to
check every household's bill, in the formats of :mod:`privmeter.parties.auditor`
(``docs/billing.md``):

* ``log.jsonl`` -- the head-end's whole signed reading log (hash-chained from
  genesis; it holds every household's encrypted readings, none in the clear);
* ``feed-PLAN.json`` -- the published price feed of a real-time plan, if any;
* ``METER_ID/statement.json``, ``proof.json`` (the household's decryption
  proof, for settled bills) and ``keys.json`` (the head-end's and meter's
  verify keys and the household's public key with its well-formedness proof);
* ``METER_ID/audit.txt`` -- the exact ``privmeter audit`` command line.

Nothing secret is written: these are the files a household would hand to a
regulator.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from privmeter.parties.auditor import (
    keys_to_dict,
    proof_to_dict,
    statement_to_dict,
    write_log_jsonl,
)
from privmeter.parties.headend import HeadEndCore
from privmeter.parties.keys import HouseholdKeys
from privmeter.protocol.codec import decode
from privmeter.protocol.settlement import BillProof
from privmeter.sim.scenario import World

__all__ = ["audit_command", "write_audit_bundles"]


def audit_command(bundle: Path, log: Path, plan: str, feed: Path | None = None) -> list[str]:
    """The ``privmeter audit`` argument list for one household's bundle directory."""
    cmd = [
        "privmeter",
        "audit",
        "--statement",
        str(bundle / "statement.json"),
        "--log",
        str(log),
        "--plan",
        plan,
        "--proof",
        str(bundle / "proof.json"),
        "--keys",
        str(bundle / "keys.json"),
    ]
    return cmd + (["--feed", str(feed)] if feed is not None else [])


def write_audit_bundles(world: World, core: HeadEndCore, out: Path) -> Path:
    """Write ``out`` (see the module docstring); returns the directory."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.jsonl"
    write_log_jsonl(core.store.iter_log(), log)
    feeds: dict[str, Path] = {}
    for plan_id, feed in world.feeds.items():
        feeds[plan_id] = out / f"feed-{plan_id}.json"
        feeds[plan_id].write_text(feed.to_json(), encoding="utf-8")
    issued = core.statements()
    paid = {(m, p): ans for m, p, kind, ans, _bill in core.settlements() if kind == "paid"}
    for h in world.households:
        periods = sorted(p for m, p in issued if m == h.meter_id)
        if not periods:
            continue
        # the last settled period (statement and its proof), else the last statement issued
        period = max((p for p in periods if (h.meter_id, p) in paid), default=periods[-1])
        st = issued[(h.meter_id, period)]
        d = out / h.meter_id
        d.mkdir(exist_ok=True)
        (d / "statement.json").write_text(
            json.dumps(statement_to_dict(st), indent=1), encoding="utf-8"
        )
        keys = keys_to_dict(
            world.headend_key.verify_key,
            h.signing_key.verify_key,
            HouseholdKeys(h.secret_key).public_dict(),
        )
        (d / "keys.json").write_text(json.dumps(keys, indent=1), encoding="utf-8")
        if (h.meter_id, period) in paid:
            proof = decode(paid[(h.meter_id, period)], expect=BillProof)
            (d / "proof.json").write_text(
                json.dumps(proof_to_dict(proof), indent=1), encoding="utf-8"
            )
        plan = h.plan.plan_id
        sc = world.scenario
        plan_arg = sc.plan if sc.plan.endswith(".toml") and not sc.lcl else f"builtin:{plan}"
        cmd = audit_command(d, log, plan_arg, feeds.get(plan))
        (d / "audit.txt").write_text(shlex.join(cmd) + "\n", encoding="utf-8")
    return out
