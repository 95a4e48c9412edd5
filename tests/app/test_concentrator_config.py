"""Bad concentrator configurations, and the concentrator keys in head-end and household configs:
one line on stderr, a nonzero exit, never a traceback (the style of tests/test_cli_errors.py);
then the concentrator's own rules in process: the signed roster decides who may connect, and
nobody does while the head-end is unreachable.

Each row is a command line with ``{placeholders}`` for files made here and a phrase the one-line
message must contain.  The rows run in this process through ``privmeter.cli.main``; every one
fails while reading its config or state, before a socket is opened (except the busy port).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from tests.procs import write_config

from privmeter.app.concentrator import ConcentratorService
from privmeter.app.config import ConcentratorConfig, load_config, starter
from privmeter.cli import main
from privmeter.crypto.signing import SigningKey
from privmeter.errors import InvalidSignature, UnknownParty
from privmeter.net.transport import connect
from privmeter.parties.enrolment import RosterUpdate, sign_doc
from privmeter.parties.messages import Hello

KEY = "ab" * 32


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, busy_port: int) -> dict[str, str]:
    d = tmp_path_factory.mktemp("dc")
    dc = d / "dc"
    assert main(["init", "concentrator", "--dir", str(dc)]) == 0
    he = d / "he"
    assert main(["init", "headend", "--dir", str(he)]) == 0
    good = (dc / "concentrator.toml").read_text().replace('key = ""', f'key = "{KEY}"')
    household = starter("household")
    headend = (he / "headend.toml").read_text()
    f: dict[str, Path] = {"missing": d / "no-such.toml"}

    def put(name: str, text: str, where: Path = dc) -> None:
        f[name] = where / f"{name}.toml"
        f[name].write_text(text)

    put("no_key", (dc / "concentrator.toml").read_text())  # key = "" as written by init
    put("bad_key", good.replace(f'key = "{KEY}"', 'key = "not-a-key"'))
    put("short_key", good.replace(f'key = "{KEY}"', 'key = "abcd"'))
    put("no_key_line", good.replace(f'key = "{KEY}"', ""))
    put("too_big", good.replace("# max_message_bytes = 4128768", "max_message_bytes = 99999999"))
    put("too_small", good.replace("# max_message_bytes = 4128768", "max_message_bytes = 10"))
    put("misspelt", good.replace("[headend]", "[headend]\nkee = 1"))
    put("bad_group", good.replace('group = "feeder-1"', 'group = ""'))
    put("bad_port", good.replace("port = 7800", "port = 70000"))
    put("wrong_role", household)
    put(
        "busy",
        good.replace("port = 7800", f"port = {busy_port}")
        .replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
        .replace("http_port = 9102", "http_port = 0"),
    )
    empty = d / "empty-state"
    empty.mkdir()
    put("no_state", good.replace('state_dir = "."', f'state_dir = "{empty}"'))
    damaged = d / "damaged"
    assert main(["init", "concentrator", "--dir", str(damaged)]) == 0
    (damaged / "roster.json").write_text(
        '{"format": "privmeter.roster/1", "doc": "{}", "signature": "00"}'
    )
    put("damaged_roster", good, damaged)
    # the concentrators in the head-end's and the household's configs
    put("he_bad_key", headend.replace("[concentrators]", '[concentrators]\nfeeder-1 = "zz"'), he)
    put(
        "he_dup_key",
        headend.replace(
            "[concentrators]", f'[concentrators]\nfeeder-1 = "{KEY}"\nfeeder-2 = "{KEY}"'
        ),
        he,
    )
    put("he_not_str", headend.replace("[concentrators]", "[concentrators]\nfeeder-1 = 7"), he)
    put(
        "hh_no_host",
        household.replace("# [concentrator]", "[concentrator]").replace(
            "# port = 7800", "port = 7800"
        ),
    )
    put("hh_dc_id", household.replace('meter_id = "m-0001"', 'meter_id = "dc-feeder-1"'))
    put("he_good", headend, he)
    return {k: str(v) for k, v in f.items()}


MATRIX: list[tuple[str, str]] = [
    ("concentrator --config {missing}", "cannot read config"),
    ("concentrator --config {no_key}", "headend.key: expected an Ed25519 public key"),
    ("concentrator --config {bad_key}", "headend.key: expected an Ed25519 public key"),
    ("concentrator --config {short_key}", "headend.key: expected an Ed25519 public key"),
    ("concentrator --config {no_key_line}", "required key 'headend.key' is missing"),
    ("concentrator --config {too_big}", "max_message_bytes: expected 65536..4128768"),
    ("concentrator --config {too_small}", "max_message_bytes: expected 65536..4128768"),
    ("concentrator --config {misspelt}", "unknown key headend.kee"),
    ("concentrator --config {bad_group}", "group: group must be 1-64 printable characters"),
    ("concentrator --config {bad_port}", "listen.port: port must be within 0..65535"),
    (
        "concentrator --config {wrong_role}",
        "this is a 'household' config; expected role = 'concentrator'",
    ),
    ("concentrator --config {no_state}", "no concentrator key in"),
    (
        "concentrator --config {damaged_roster}",
        "roster.json is damaged or not signed by headend.key",
    ),
    ("concentrator --config {busy}", "address already in use"),
    ("concentrator", "the following arguments are required: --config"),
    ("headend --config {he_bad_key}", "concentrators.feeder-1: expected an Ed25519 public key"),
    ("headend --config {he_dup_key}", "one key is listed for two feeders"),
    ("headend --config {he_not_str}", "concentrators.feeder-1: expected str"),
    ("headend invite --config {he_good} --meter dc-feeder-1", "reserved for data concentrators"),
    ("household --config {hh_no_host}", "concentrator.host is missing"),
    ("household --config {hh_dc_id}", "are data concentrators'"),
]


@pytest.mark.parametrize(("line", "phrase"), MATRIX, ids=[m[0] for m in MATRIX])
def test_bad_concentrator_config_is_one_line_on_stderr(
    line: str, phrase: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = [w.format(**files) for w in line.split()]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exit after a one-line error
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0 and len(lines) == 1, (code, err)
    assert lines[0].startswith("privmeter") and ": error: " in lines[0], lines[0]
    assert phrase in lines[0], lines[0]


# -- the service's own rules, in process (no head-end) -----------------------------------------


def _service(tmp: Path, he_key: SigningKey, dead_port: int) -> ConcentratorService:
    d = tmp / "dc"
    assert main(["init", "concentrator", "--dir", str(d)]) == 0
    write_config(
        d,
        "concentrator",
        listen={"port": 0},
        headend={"port": dead_port, "key": he_key.verify_key.hex()},
        operations={"http_port": 0},
    )
    return ConcentratorService(
        cast(ConcentratorConfig, load_config(d / "concentrator.toml", "concentrator"))
    )


def _roster(
    key: SigningKey, version: int, members: dict[str, SigningKey], group: str = "feeder-1"
) -> RosterUpdate:
    text, sig = sign_doc(
        key,
        {
            "kind": "roster",
            "group": group,
            "version": version,
            "members": {m: k.verify_key.hex() for m, k in members.items()},
            "concentrator": None,
        },
    )
    return RosterUpdate(doc=text, signature=sig)


def test_the_roster_decides_who_may_connect_and_survives_a_restart(tmp_path: Path) -> None:
    he = SigningKey.generate()
    a, b, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    svc = _service(tmp_path, he, 1)
    svc.upstream = cast(Any, type("Up", (), {"closed": False})())  # as if connected to the head-end
    assert svc.trust(a.verify_key) is None  # no roster yet: nobody
    assert svc.apply_roster(_roster(he, 3, {"m-a": a, "m-b": b}))
    assert (svc.trust(a.verify_key), svc.trust(b.verify_key), svc.trust(stranger.verify_key)) == (
        "m-a",
        "m-b",
        None,
    )
    with pytest.raises(InvalidSignature):  # not signed by the pinned head-end key
        svc.apply_roster(_roster(stranger, 9, {"m-x": stranger}))
    with pytest.raises(UnknownParty):  # another feeder's roster
        svc.apply_roster(_roster(he, 9, {"m-x": stranger}, group="feeder-2"))
    assert not svc.apply_roster(_roster(he, 2, {"m-x": stranger}))  # older: ignored
    assert svc.trust(stranger.verify_key) is None
    with pytest.raises(UnknownParty):  # a meter outside the feeder, both directions
        svc.relay.up("m-x", Hello(meter_id="m-x", group="feeder-1", last_interval=-1))
    # a restart reloads the newest signed roster; a newer one replaces it (m-b left)
    again = ConcentratorService(svc.cfg)
    assert again.roster_version == 3 and again.relay.meters == {"m-a", "m-b"}
    again.upstream = svc.upstream
    assert again.apply_roster(_roster(he, 4, {"m-a": a}))
    assert again.trust(b.verify_key) is None
    assert ConcentratorService(svc.cfg).relay.meters == {"m-a"}
    svc.upstream = None  # the head-end is unreachable: no meter is admitted
    assert svc.trust(a.verify_key) is None


def test_unhealthy_and_closed_to_meters_while_the_head_end_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    he = SigningKey.generate()
    svc = _service(tmp_path, he, dead)
    (svc.cfg.state_dir / "roster.json").unlink(missing_ok=True)

    async def scenario() -> dict[str, Any]:
        svc.apply_roster(_roster(he, 1, {"m-a": he}))
        await svc.start()
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        await asyncio.sleep(0.5)
        h = svc.health()
        with pytest.raises(UnknownParty):  # a roster meter, refused at the handshake: no upstream
            await connect("127.0.0.1", svc.server.port, he, svc.identity.verify_key)  # type: ignore[union-attr]
        stop.set()
        await asyncio.wait_for(task, 5)
        await svc.close()
        return h

    h = asyncio.run(scenario())
    assert h == {
        "ok": False,
        "role": "concentrator",
        "group": "feeder-1",
        "upstream": False,
        "meters": 1,
        "connected": 0,
    }


def test_a_household_behind_a_concentrator_the_head_end_never_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[concentrator] set, but the signed enrolment names no concentrator: one line, what to do."""
    he = SigningKey.generate()
    d = tmp_path / "hh"
    assert (
        main(["init", "household", "--dir", str(d), "--meter-id", "m-1", "--key-bits", "2048"]) == 0
    )
    plan = (Path(__file__).with_name("plan-3s.toml")).read_text()
    from privmeter.grid.tariff.plan_toml import parse_plan

    doc = {
        "kind": "enrolled",
        "meter_id": "m-1",
        "group": "feeder-1",
        "plan_id": "pilot-3s",
        "plan_toml": plan,
        "plan_digest": parse_plan(plan).digest().hex(),
        "interval_seconds": 3,
        "period_start": 0,
        "period_intervals": 4,
        "min_survivors": 3,
        "headend_key": he.verify_key.hex(),
        "demand": False,
        "concentrator": None,
    }
    text, sig = sign_doc(he, doc)
    (d / "enrolment.json").write_text(
        json.dumps(
            {
                "format": "privmeter.enrolment/1",
                "doc": text,
                "signature": sig.hex(),
                "headend_key": he.verify_key.hex(),
                "roster": None,
            }
        )
    )
    from privmeter.grid.devices.csvsource import write_csv_readings
    from privmeter.grid.devices.source import IntervalReading

    write_csv_readings(
        d / "readings.csv", [IntervalReading(interval=t, energy_wh=1) for t in range(10, 20)], 3
    )
    cfg = (d / "household.toml").read_text()
    (d / "household.toml").write_text(
        cfg.replace('source = "p1:/dev/ttyUSB0"', f'source = "csv:{d / "readings.csv"}"')
        .replace("# [concentrator]", "[concentrator]")
        .replace('# host = "dc.example.org"', 'host = "127.0.0.1"')
        .replace("http_port = 9101", "http_port = 0")
    )
    capsys.readouterr()
    assert main(["household", "--config", str(d / "household.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names no concentrator for group 'feeder-1'" in err[0], err
