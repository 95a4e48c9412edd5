"""The deployment's pieces without sockets: production code free of seeded randomness and of the
simulator, config files strict, state directories private, enrolment checks before any change."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import re
import secrets
import stat
from pathlib import Path

import pytest

import privmeter
from privmeter.app.config import HeadendConfig, load_config, starter
from privmeter.app.state import generate, load_household
from privmeter.cli import COMMANDS, main
from privmeter.crypto.signing import SigningKey
from privmeter.errors import ConfigError, InvalidKey, InvalidSignature, UnknownParty
from privmeter.parties.enrolment import EnrolRequest, Ticket, enrol_mac, enrol_peer, peer_key
from privmeter.parties.registry import Registry

SRC = Path(privmeter.__file__).resolve().parent
PRODUCT = ("crypto", "protocol", "parties", "store", "app", "net", "grid", "cluster")
PRODUCTION_COMMANDS = ("init", "headend", "enrol", "household", "meter", "concentrator")


def _py_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (SRC / d).rglob("*.py"))


@pytest.mark.parametrize("path", _py_files(*PRODUCT), ids=lambda p: str(p.relative_to(SRC)))
def test_product_never_imports_the_simulator(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        for n in names:
            assert not n.startswith(("privmeter.sim", "privmeter.web", "privmeter.bench")), (
                path,
                n,
            )


@pytest.mark.parametrize(
    "path",
    _py_files("crypto", "protocol", "parties", "store", "app"),
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_product_has_no_seeded_generator(path: Path) -> None:
    assert "random.Random(" not in path.read_text()


@pytest.mark.parametrize("command", PRODUCTION_COMMANDS)
def test_no_option_of_a_production_command_selects_seeded_randomness(command: str) -> None:
    mod = importlib.import_module(COMMANDS[command][0])
    p = argparse.ArgumentParser()
    mod.add_arguments(p)
    opts = [s for a in p._actions for s in a.option_strings]
    for bad in ("seed", "scenario", "insecure", "rng", "deterministic", "cache"):
        assert not any(bad in o for o in opts), (command, opts)
    for a in p._actions:
        if a.dest == "key_bits":
            assert min(a.choices) >= 2048


def test_keys_come_from_the_os_and_files_are_private(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert (
            main(["init", "household", "--dir", str(d), "--meter-id", "m-1", "--key-bits", "2048"])
            == 0
        )
    ka, kb = load_household(a), load_household(b)
    assert ka.meter_key.seed() != kb.meter_key.seed()
    assert ka.secret_key.p not in (kb.secret_key.p, kb.secret_key.q)
    assert stat.S_IMODE(a.stat().st_mode) == 0o700
    for f in ("meter.key.json", "household.key.json"):
        assert stat.S_IMODE((a / f).stat().st_mode) == 0o600
    # never overwritten without --force; one line on stderr
    capsys.readouterr()
    assert main(["init", "household", "--dir", str(a)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("privmeter init: error:") and err.count("\n") == 1
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate("household", a, key_bits=2048)
    assert load_household(a).meter_key.seed() == ka.meter_key.seed()


def test_config_is_strict(tmp_path: Path) -> None:
    p = tmp_path / "household.toml"
    p.write_text(starter("household", meter_id="m-7"))
    cfg = load_config(p, "household")
    assert cfg.meter_id == "m-7" and cfg.state_dir == tmp_path
    bad = {
        "unknown key": starter("household").replace("clock_skew_s = 30", "clock_skew = 30"),
        "unknown table": starter("household") + "\n[extra]\nx = 1\n",
        "format must be": starter("household").replace("privmeter.config/1", "privmeter.config/2"),
        "expected role": starter("household").replace('role = "household"', 'role = "headend"'),
        "expected int": starter("household").replace("port = 7700", 'port = "7700"'),
        "port must be": starter("household").replace("port = 7700", "port = 70000"),
    }
    for what, text in bad.items():
        p.write_text(text)
        with pytest.raises(ConfigError, match=what):
            load_config(p, "household")
    p.write_text(
        starter("headend").replace("min_household_key_bits = 3072", "min_household_key_bits = 1024")
    )
    with pytest.raises(ConfigError, match="min_household_key_bits"):
        load_config(p, "headend")
    # demand management runs in a deployment: its keys are checked like any other
    dr = starter("headend", today="2026-03-01").replace("enabled = false", "enabled = true")
    p.write_text(dr.replace("event_minutes = 30", "event_minutes = 15"))
    he = load_config(p, "headend")
    assert isinstance(he, HeadendConfig)
    assert (he.demand, he.cmin_w_per_household, he.cmax_w_per_household, he.event_minutes) == (
        True,
        50,
        1200,
        15,
    )
    for old, new, what in (
        ("cmin_w_per_household = 50", "cmin_w_per_household = 1300", "must not exceed demand.cmax"),
        (
            "cmin_w_per_household = 50",
            "cmin_w_per_household = -5",
            "cmin_w_per_household: expected an integer >= 0",
        ),
        ("event_minutes = 30", "event_minutes = 0", "event_minutes: expected 1..1440"),
        ("event_minutes = 30", "event_minutes = 30.5", "event_minutes: expected int"),
        ("enabled = true", "enabled = 1", "demand.enabled: expected bool"),
        ("event_minutes = 30", "cmax = 3", "unknown key demand.cmax"),
    ):
        p.write_text(dr.replace(old, new))
        with pytest.raises(ConfigError, match=what):
            load_config(p, "headend")
    # billing periods: calendar months by default, starting on the 1st
    p.write_text(starter("headend", today="2026-03-01"))
    he = load_config(p, "headend")
    assert he.period_days is None and he.period_intervals is None
    p.write_text(starter("headend", today="2026-03-02"))
    with pytest.raises(ConfigError, match="start on the 1st"):
        load_config(p, "headend")
    p.write_text(
        starter("headend", today="2026-03-02").replace("# period_days = 7", "period_days = 7")
    )
    assert load_config(p, "headend").period_days == 7


def test_ticket_round_trip_and_damage() -> None:
    he = SigningKey.generate().verify_key
    t = Ticket.new("m-1", he)
    assert Ticket.parse(str(t)) == t
    for bad in ("x", str(t).replace("privmeter-enrol/1", "privmeter-enrol/2"), str(t)[:-3]):
        with pytest.raises(ConfigError):
            Ticket.parse(bad)
    key = SigningKey.generate().verify_key
    assert peer_key(enrol_peer(key)) == key


def _request(
    tmp_path: Path,
    ticket: Ticket,
    meter: SigningKey,
    *,
    plan: str = "economy7",
    mac_key: bytes | None = None,
) -> tuple[EnrolRequest, str]:
    d = tmp_path / f"hh-{secrets.token_hex(4)}"
    generate("household", d, key_bits=2048)
    pub = (d / "household.pub.json").read_text()
    mac = enrol_mac(
        mac_key or ticket.mac_key(),
        meter_id=ticket.meter_id,
        meter_key=meter.verify_key,
        headend_key=ticket.headend_key,
        household_key_json=pub,
        plan_id=plan,
    )
    return EnrolRequest(
        meter_id=ticket.meter_id, household_key_json=pub, plan_id=plan, mac=mac
    ), pub


def test_enrolment_checks_everything_before_any_change(tmp_path: Path) -> None:
    he = SigningKey.generate()
    reg = Registry(tmp_path / "registry.db")
    kw = {"plans": {"economy7"}, "min_bits": 2048, "group_size": 3}
    meter = SigningKey.generate()
    ticket = reg.invite("m-1", he.verify_key)
    req, pub = _request(tmp_path, ticket, meter)
    v0 = reg.version()
    # wrong code, wrong meter key (the transport identity), wrong head-end key, unknown plan, damaged proof
    bad, _ = _request(tmp_path, ticket, meter, mac_key=b"\0" * 32)
    with pytest.raises(InvalidSignature):
        reg.enrol(bad, meter.verify_key, he.verify_key, **kw)
    with pytest.raises(InvalidSignature):
        reg.enrol(req, SigningKey.generate().verify_key, he.verify_key, **kw)
    with pytest.raises(InvalidSignature):
        reg.enrol(req, meter.verify_key, SigningKey.generate().verify_key, **kw)
    with pytest.raises(ConfigError, match="not offered"):
        reg.enrol(req, meter.verify_key, he.verify_key, **{**kw, "plans": {"lcl-flat"}})
    doc = json.loads(pub)
    doc["wellformed_proof"] = [*doc["wellformed_proof"][:-1], "2"]
    forged = EnrolRequest(
        meter_id="m-1", household_key_json=json.dumps(doc), plan_id="economy7", mac=req.mac
    )
    with pytest.raises(InvalidKey):
        reg.enrol(forged, meter.verify_key, he.verify_key, **kw)
    assert (
        reg.version() == v0 and reg.member("m-1") is None and reg.meter_of(meter.verify_key) is None
    )
    # the honest request works, once
    m = reg.enrol(req, meter.verify_key, he.verify_key, **kw)
    assert (m.meter_id, m.group, m.status) == ("m-1", "feeder-1", "active")
    assert reg.meter_of(meter.verify_key) == "m-1"
    with pytest.raises(UnknownParty, match="no open enrolment ticket"):
        reg.enrol(req, meter.verify_key, he.verify_key, **kw)
    # replacement: a new ticket only with --replace; the old key is refused afterwards
    with pytest.raises(ConfigError, match="replace"):
        reg.invite("m-1", he.verify_key)
    t2 = reg.invite("m-1", he.verify_key, replace=True)
    new_meter = SigningKey.generate()
    req2, _ = _request(tmp_path, t2, new_meter)
    reg.enrol(req2, new_meter.verify_key, he.verify_key, **kw)
    assert reg.meter_of(meter.verify_key) is None and reg.meter_of(new_meter.verify_key) == "m-1"
    assert reg.trust(meter.verify_key) is None  # the replaced key: refused at the handshake
    assert reg.trust(new_meter.verify_key) == "m-1"
    stranger = SigningKey.generate().verify_key
    assert reg.trust(stranger) == enrol_peer(stranger)  # may only enrol
    # leaving / revocation: refused from then on
    reg.revoke("m-1")
    assert reg.meter_of(new_meter.verify_key) is None and reg.active() == []
    assert reg.trust(new_meter.verify_key) is None
    with pytest.raises(ConfigError):
        reg.revoke("m-1")
    # group assignment fills feeders of group_size
    for i in range(4):
        t = reg.invite(f"n-{i}", he.verify_key)
        k = SigningKey.generate()
        r, _ = _request(tmp_path, t, k)
        reg.enrol(r, k.verify_key, he.verify_key, **kw)
    assert [m.group for m in reg.active()] == ["feeder-1"] * 3 + ["feeder-2"]
    reg.close()


def test_the_concentrator_decodes_every_message_the_parties_exchange() -> None:
    """A relay process imports only its own modules: every codec tag of the meter, household and
    head-end must be registered there too (else it refuses what it should relay)."""
    import subprocess
    import sys

    code = (
        "import {mods}; from privmeter.protocol.codec import registered; "
        "print(' '.join(sorted(registered())))"
    )
    tags = [
        subprocess.run(
            [sys.executable, "-c", code.format(mods=m)], capture_output=True, text=True, check=True
        ).stdout.split()
        for m in ("privmeter.app.concentrator", "privmeter.app.household, privmeter.app.headend")
    ]
    assert set(tags[1]) <= set(tags[0]), sorted(set(tags[1]) - set(tags[0]))


def test_cluster_config_keys_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "headend.toml"
    base = starter("headend", today="2026-03-01")
    assert load_config(_write(p, base), "headend").cluster is None
    pg = '\n[store]\npostgres = "host=/run/postgresql dbname=privmeter"\n'
    cfg = load_config(
        _write(p, base + '\n[cluster]\naddress = "auto"\nshards = 3\n' + pg), "headend"
    )
    assert cfg.cluster is not None and (cfg.cluster.address, cfg.cluster.shards) == ("auto", 3)
    assert cfg.cluster.postgres == "host=/run/postgresql dbname=privmeter"
    over = load_config(p, "headend", cluster="10.0.0.5:6379", shards=8)  # --cluster, --shards
    assert over.cluster is not None and (over.cluster.address, over.cluster.shards) == (
        "10.0.0.5:6379",
        8,
    )
    # the starter's commented example, uncommented, is a valid cluster config (address "local")
    example = "\n".join(
        line[2:] if line.startswith(("# [", "# address", "# shards", "# postgres")) else line
        for line in base.splitlines()
    )
    cfg = load_config(_write(p, example), "headend")
    assert cfg.cluster is not None and (cfg.cluster.address, cfg.cluster.shards) == ("local", 2)
    # a config with only [store] runs sharded when --cluster/--shards ask for it
    assert (
        load_config(_write(p, base + pg), "headend", cluster="local", shards=2).cluster is not None
    )
    bad = {
        "store.postgres is the sharded head-end's store": base + pg,
        "cluster.shards is missing": base + '\n[cluster]\naddress = "auto"\n' + pg,
        "cluster.shards: expected 1..": base + "\n[cluster]\nshards = 0\n" + pg,
        "the cluster needs store.postgres": base + "\n[cluster]\nshards = 2\n",
        'expected "local", "auto" or HOST:PORT': base
        + '\n[cluster]\naddress = "head:x"\nshards = 2\n'
        + pg,
        "unknown key cluster.nodes": base + "\n[cluster]\nshards = 2\nnodes = 3\n" + pg,
        "unknown key store.sqlite": base + '\n[cluster]\nshards = 2\n[store]\nsqlite = "x"\n',
        "data concentrators cannot serve a sharded head-end yet": base.replace(
            '# feeder-1 = "<its Ed25519 key>"', 'feeder-1 = "' + "ab" * 32 + '"'
        )
        + "\n[cluster]\nshards = 2\n"
        + pg,
        "demand management does not run on a sharded head-end yet": base.replace(
            "enabled = false", "enabled = true"
        )
        + "\n[cluster]\nshards = 2\n"
        + pg,
        "no password in the config file": base + "\n[cluster]\nshards = 2\n[store]\n"
        'postgres = "postgresql://u:secret@db/privmeter"\n',
    }
    for what, text in bad.items():
        with pytest.raises(ConfigError, match=re.escape(what)):
            load_config(_write(p, text), "headend")
    with pytest.raises(ConfigError, match=r"needs store\.postgres"):
        load_config(_write(p, base), "headend", cluster="auto", shards=2)
    with pytest.raises(ConfigError, match=r"cluster\.shards is missing"):
        load_config(_write(p, base + pg), "headend", cluster="auto")


def test_cluster_settings_fail_in_one_line_before_anything_starts(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the cluster extra: one line naming it; PostgreSQL unreachable: one line, no traceback."""
    assert main(["init", "headend", "--dir", str(tmp_path)]) == 0
    cfg = tmp_path / "headend.toml"
    cfg.write_text(
        cfg.read_text().replace("http_port = 9100", "http_port = 0")
        + '\n[cluster]\nshards = 2\n[store]\npostgres = "host=127.0.0.1 port=1 dbname=x"\n'
    )
    capsys.readouterr()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real(n, *a)
    )
    assert main(["headend", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "privmeter[cluster]"' in err and "ray" in err, err
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if real("psycopg") is None:
        return
    assert main(["headend", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach PostgreSQL (store.postgres)" in err, err
    assert main(["headend", "--config", str(cfg), "--cluster", "nowhere"]) == 2
    assert 'expected "local", "auto" or HOST:PORT' in capsys.readouterr().err


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p
