"""``privmeter audit`` end to end: real files, a 2048-bit household key, no secret key used."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from privmeter.cli import main
from privmeter.crypto.paillier_proofs import prove_wellformed
from privmeter.crypto.signing import SigningKey
from privmeter.grid.tariff.plan_toml import builtin_plan
from privmeter.grid.tariff.pricefeed import PriceFeed, demo_feed_signing_key
from privmeter.parties.auditor import (
    keys_to_dict,
    proof_from_dict,
    proof_to_dict,
    statement_from_dict,
    statement_to_dict,
    write_log_jsonl,
)
from privmeter.parties.keys import HouseholdKeys
from privmeter.protocol.billing import BillingLedger
from privmeter.protocol.records import make_record, record_from_bytes
from privmeter.protocol.settlement import BillProof, settle
from privmeter.store.sqlite import SqliteBillingStore

MIDNIGHT = 1699920000  # 2023-11-14 00:00 UTC (= London)


@pytest.fixture(scope="module")
def bundle(paillier_2048, tmp_path_factory) -> dict[str, Path]:
    """A real-time bill for one day (96 quarter-hours) written out as the auditor's files."""
    tmp = tmp_path_factory.mktemp("audit")
    pk, sk = paillier_2048
    plan = builtin_plan("realtime-demo")
    day0 = MIDNIGHT // plan.interval_seconds
    n = 96
    feed = PriceFeed.publish(
        demo_feed_signing_key("realtime-demo"),
        "realtime-demo",
        900,
        {day0 + i: 8000 + (i * 389) % 30000 for i in range(n)},
    )
    meter, headend = SigningKey.from_seed(b"m" * 32), SigningKey.from_seed(b"h" * 32)
    other_meter = SigningKey.from_seed(b"o" * 32)
    store = SqliteBillingStore(tmp / "headend.sqlite")
    ledger = BillingLedger(headend, [plan], store=store)
    proof = prove_wellformed(sk)
    ledger.register(
        "m1",
        meter.verify_key,
        pk,
        plan,
        wellformed_proof=proof,
        period_start=day0,
        period_intervals=n,
    )
    ledger.register(
        "m2",
        other_meter.verify_key,
        pk,
        plan,
        wellformed_proof=proof,
        period_start=day0,
        period_intervals=n,
    )
    ledger.publish_feed(feed)
    r = random.Random(4)
    readings = {}
    for i in range(n):
        t = day0 + i
        readings[t] = r.randint(-600, 1800)
        ledger.receive(
            make_record(meter, "m1", t, pk, pk.encrypt(readings[t], rng=r)), current_interval=t
        )
        if i % 7 == 0:  # another household's records interleave in the log
            ledger.receive(
                make_record(other_meter, "m2", t, pk, pk.encrypt(5, rng=r)), current_interval=t
            )
    st = ledger.statement("m1", 0, now=MIDNIGHT + 86400)
    proof = settle(
        st,
        headend_key=headend.verify_key,
        meter_key=meter.verify_key,
        secret_key=sk,
        meter_id="m1",
        plan=plan,
        period=range(day0, day0 + n),
        readings=readings,
        records=[record_from_bytes(b) for b in store.records("m1", day0, day0 + n)],
        feed=feed,
    )
    assert isinstance(proof, BillProof)
    files = {
        "statement": tmp / "statement.json",
        "proof": tmp / "proof.json",
        "keys": tmp / "keys.json",
        "feed": tmp / "feed.json",
        "log": tmp / "log.jsonl",
        "sqlite": tmp / "headend.sqlite",
    }
    files["statement"].write_text(json.dumps(statement_to_dict(st)))
    files["proof"].write_text(json.dumps(proof_to_dict(proof)))
    files["keys"].write_text(
        json.dumps(
            keys_to_dict(headend.verify_key, meter.verify_key, HouseholdKeys(sk).public_dict())
        )
    )
    files["feed"].write_text(feed.to_json())
    write_log_jsonl(store.iter_log(), files["log"])
    store.close()
    assert statement_from_dict(json.loads(files["statement"].read_text())) == st
    assert proof_from_dict(json.loads(files["proof"].read_text())) == proof
    return files


def _audit(
    files: dict[str, Path], capsys, *, log: str = "log", extra: tuple[str, ...] = (), **override
):
    paths = {k: str(v) for k, v in files.items()}
    paths.update(override)
    argv = [
        "audit",
        "--statement",
        paths["statement"],
        "--log",
        paths.get(log, log),
        "--plan",
        paths.get("plan", "builtin:realtime-demo"),
        "--feed",
        paths["feed"],
        "--proof",
        paths["proof"],
        "--keys",
        paths["keys"],
        *extra,
    ]
    code = main(argv)
    return code, capsys.readouterr().out


def test_verified_from_jsonl_and_sqlite(bundle, capsys) -> None:
    code, out = _audit(bundle, capsys)
    assert code == 0 and out.startswith("VERIFIED meter m1") and "96 signed records" in out
    code, out = _audit(bundle, capsys, log="sqlite", extra=("--json",))
    report = json.loads(out)
    assert (
        code == 0
        and report["verified"]
        and report["record_count"] == 96
        and report["chain_from_genesis"]
    )


def test_under_reported_proof_fails(bundle, capsys, tmp_path: Path) -> None:
    d = json.loads(bundle["proof"].read_text())
    d["bill"] -= 1
    bad = tmp_path / "proof.json"
    bad.write_text(json.dumps(d))
    code, out = _audit(bundle, capsys, proof=str(bad))
    assert code == 1 and out.startswith("FAILED InvalidProof")


def test_tampered_log_fails(bundle, capsys, tmp_path: Path) -> None:
    lines = bundle["log"].read_text().splitlines()
    # drop one of m1's records and re-chain: a head-end rewriting its own log
    from privmeter.store.billing_store import GENESIS, chain_step

    entries = [json.loads(x) for x in lines[1:]]
    del entries[20]
    head = GENESIS
    for i, e in enumerate(entries, start=1):
        head = chain_step(head, bytes.fromhex(e["record"]))
        e["seq"], e["chain"] = i, head.hex()
    rechained = tmp_path / "rechained.jsonl"
    rechained.write_text("\n".join([lines[0], *map(json.dumps, entries)]) + "\n")
    code, out = _audit(bundle, capsys, log=str(rechained))
    assert code == 1 and out.startswith("FAILED AuditFailure") and "log holds 95" in out
    # or edit a line in place: the chain breaks
    e = json.loads(lines[5])
    e["record"] = e["record"][:-2] + ("00" if e["record"][-2:] != "00" else "01")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:5], json.dumps(e), *lines[6:]]) + "\n")
    code, out = _audit(bundle, capsys, log=str(broken))
    assert code == 1 and out.startswith("FAILED AuditFailure") and "chain" in out


def test_wrong_plan_feed_or_format_fails(bundle, capsys, tmp_path: Path) -> None:
    code, out = _audit(bundle, capsys, plan="builtin:lcl-flat")
    assert code == 1 and out.startswith("FAILED TariffRejected")
    other = PriceFeed.publish(
        demo_feed_signing_key("realtime-demo"),
        "realtime-demo",
        900,
        {t: p + 1 for t, p in PriceFeed.from_json(bundle["feed"].read_text()).prices.items()},
    )
    f = tmp_path / "feed.json"
    f.write_text(other.to_json())
    code, out = _audit(bundle, capsys, feed=str(f))
    assert code == 1 and out.startswith("FAILED TariffRejected")
    d = json.loads(bundle["statement"].read_text())
    d["format"] = "privmeter.bill.statement/9"
    s = tmp_path / "st.json"
    s.write_text(json.dumps(d))
    code, out = _audit(bundle, capsys, statement=str(s), extra=("--json",))
    assert code == 1 and json.loads(out)["error"] == "UnsupportedVersion"
