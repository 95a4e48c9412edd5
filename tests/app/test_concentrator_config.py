"""Bad concentrator configurations, and the concentrator keys in head-end and household configs:
one line on stderr, a nonzero exit, never a traceback (the style of tests/test_cli_errors.py).

Each row is a command line with ``{placeholders}`` for files made here and a phrase the one-line
message must contain.  The rows run in this process through ``privmeter.cli.main``; every one
fails while reading its config or state, before a socket is opened (except the busy port).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from privmeter.app.config import starter
from privmeter.cli import main

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
    put("too_big", good.replace("# max_message_bytes = 1048576", "max_message_bytes = 99999999"))
    put("too_small", good.replace("# max_message_bytes = 1048576", "max_message_bytes = 10"))
    put("misspelt", good.replace("[headend]", "[headend]\nkee = 1"))
    put("bad_group", good.replace('group = "feeder-1"', 'group = ""'))
    put("bad_port", good.replace("port = 7800", "port = 70000"))
    put("wrong_role", household)
    put("busy", good.replace("port = 7800", f"port = {busy_port}").replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
        .replace("http_port = 9102", "http_port = 0"))
    empty = d / "empty-state"
    empty.mkdir()
    put("no_state", good.replace('state_dir = "."', f'state_dir = "{empty}"'))
    damaged = d / "damaged"
    assert main(["init", "concentrator", "--dir", str(damaged)]) == 0
    (damaged / "roster.json").write_text('{"format": "privmeter.roster/1", "doc": "{}", "signature": "00"}')
    put("damaged_roster", good, damaged)
    # the concentrators in the head-end's and the household's configs
    put("he_bad_key", headend.replace("[concentrators]", '[concentrators]\nfeeder-1 = "zz"'), he)
    put("he_dup_key", headend.replace("[concentrators]", f'[concentrators]\nfeeder-1 = "{KEY}"\nfeeder-2 = "{KEY}"'),
        he)
    put("he_not_str", headend.replace("[concentrators]", "[concentrators]\nfeeder-1 = 7"), he)
    put("hh_no_host", household.replace("# [concentrator]", "[concentrator]").replace("# port = 7800", "port = 7800"))
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
    ("concentrator --config {wrong_role}", "this is a 'household' config; expected role = 'concentrator'"),
    ("concentrator --config {no_state}", "no concentrator key in"),
    ("concentrator --config {damaged_roster}", "roster.json is damaged or not signed by headend.key"),
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
def test_bad_concentrator_config_is_one_line_on_stderr(line: str, phrase: str, files: dict[str, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
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
