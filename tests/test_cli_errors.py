"""Every command against a matrix of bad inputs: one line on stderr, a nonzero
exit, never a traceback (issue 15).

Each row is a command line with ``{placeholders}`` for files made here
(missing, empty, garbage, non-UTF-8, truncated, a real audit bundle with a
corrupted key...) and a phrase the one-line message must contain, in the
user's terms.  The rows run in this process through ``privmeter.cli.main``
(fast); a few checks that need a real process run as subprocesses.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from privmeter.cli import main

KEY = "ab" * 32  # a well-formed (hex, 32 bytes) head-end key: the file errors come first
SMALL = ["--insecure-small-keys", "--key-bits", "512", "--dgk-bits", "1024"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sim_cache: Path) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    f = {
        "missing": d / "no-such-file.json",
        "empty": d / "empty.json",
        "garbage": d / "garbage.json",
        "binary": d / "binary.json",
        "truncated": d / "truncated.json",
        "a_file": d / "a-file.txt",
        "dir": d / "a-dir",
    }
    f["empty"].write_bytes(b"")
    f["garbage"].write_text("this is not what you think it is\n")
    f["binary"].write_bytes(b"\xff\xfe\x00\x81 not UTF-8 \xc3\x28")
    f["truncated"].write_text('{"format": "privmeter.sim.scen')
    f["a_file"].write_text("x")
    f["dir"].mkdir()
    csv = {
        "empty_csv": b"",
        "garbage_csv": b"when,what\nyesterday,lots\n",
        "binary_csv": b"\xff\xfe# privmeter-readings v1\n",
    }
    for k, v in csv.items():
        f[k] = d / f"{k}.csv"
        f[k].write_bytes(v)
    # a real run's audit bundle (tiny, 512-bit test keys) and its scenario file
    run = d / "run"
    assert (
        main(
            [
                "simulate",
                "--in-memory",
                *SMALL,
                "--households",
                "5",
                "--group-size",
                "5",
                "--max-intervals",
                "4",
                "--cache-dir",
                str(sim_cache),
                "--out",
                str(run),
            ]
        )
        == 0
    )
    f["scenario"] = d / "scenario.json"
    from privmeter.sim.scenario import Scenario, scenario_json

    f["scenario"].write_text(
        json.dumps(scenario_json(Scenario(households=5, group_size=5, cache_dir=sim_cache)))
    )
    b = run / "audit" / "m00000"
    for k in ("statement", "proof", "keys"):
        f[k] = b / f"{k}.json"
    f["log"] = run / "audit" / "log.jsonl"
    for name, n in (
        ("keys_zero_n", "0"),
        ("keys_negative_n", "-5"),
        ("keys_even_n", "f" * 767 + "e"),
        ("keys_not_hex", "zz"),
    ):
        k = json.loads(f["keys"].read_text())
        k["household"]["paillier_public_key"]["n"] = n
        f[name] = d / f"{name}.json"
        f[name].write_text(json.dumps(k))
    f["keys_truncated"] = d / "keys_truncated.json"
    f["keys_truncated"].write_text(f["keys"].read_text()[:200])
    f["log_binary"] = d / "log.jsonl"
    f["log_binary"].write_bytes(b"\x00\xff\xfe")
    f["key_dir"] = d / "keys"
    f["cache"] = sim_cache
    # head-end configs with demand management (docs/deploy.md): each a bad [demand] key
    from privmeter.app.config import starter

    he = starter("headend", today="2026-03-01").replace("enabled = false", "enabled = true")
    for name, old, new in (
        ("dr_cmin_above_cmax", "cmin_w_per_household = 50", "cmin_w_per_household = 5000"),
        ("dr_negative_cmax", "cmax_w_per_household = 1200", "cmax_w_per_household = -1"),
        ("dr_event_minutes", "event_minutes = 30", "event_minutes = 0"),
        ("dr_long_event", "event_minutes = 30", "event_minutes = 1441"),
        ("dr_enabled_string", "enabled = true", 'enabled = "yes"'),
        ("dr_unknown_key", "event_minutes = 30", "threshold_w = 2000"),
    ):
        f[name] = d / f"{name}.toml"
        f[name].write_text(he.replace(old, new))
    assert main(["keygen", "meter", "--out", str(f["key_dir"])]) == 0
    return {k: str(v) for k, v in f.items()}


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def _audit(
    statement: str = "{statement}",
    log: str = "{log}",
    plan: str = "builtin:economy7",
    proof: str = "{proof}",
    keys: str = "{keys}",
) -> str:
    return (
        f"audit --statement {statement} --log {log} --plan {plan} --proof {proof} --keys {keys} "
        "--insecure-min-key-bits 512"
    )


# (command line, a phrase the message must contain)
MATRIX: list[tuple[str, str]] = [
    # simulate: numbers, dates, sizes, output directory
    ("simulate --loss 2", "argument --loss: expected a fraction between 0 and 1"),
    ("simulate --loss nan", "expected a finite number"),
    ("simulate --dropout -0.1", "argument --dropout"),
    ("simulate --prosumers 1.5", "argument --prosumers"),
    ("simulate --start yesterday", "expected a date as YYYY-MM-DD"),
    ("simulate --start 2013-02-30", "expected a date as YYYY-MM-DD"),
    ("simulate --days 0", "argument --days: must be at least 1"),
    (
        "simulate --households 3",
        "at least 5 households are needed: a feeder group has at least min_survivors = 5 meters",
    ),
    ("simulate --households -1", "argument --households"),
    ("simulate --households many", "expected a whole number, got 'many'"),
    ("simulate --group-size 0", "argument --group-size: must be at least 1"),
    ("simulate --group-size -4", "argument --group-size"),
    ("simulate --group-size 3", "a feeder group has at least min_survivors = 5 meters"),
    ("simulate --min-survivors 1", "argument --min-survivors"),
    ("simulate --fleets 0", "argument --fleets: must be at least 1"),
    ("simulate --speed -1", "argument --speed"),
    ("simulate --bandwidth 0", "argument --bandwidth: must be greater than 0"),
    ("simulate --max-intervals 0", "argument --max-intervals"),
    ("simulate --interval 7m", "must be whole minutes dividing a day"),
    ("simulate --interval soon", "expected e.g. 15m"),
    ("simulate --key-bits 1024", "insecure"),
    ("simulate --topology mesh", "invalid choice"),
    ("simulate --source m00003=telepathy:x", "telepathy"),
    # a real meter's readings CSV (csv:PATH): missing, non-UTF-8, garbage, empty
    (
        f"simulate --in-memory {' '.join(SMALL)} --households 5 --group-size 5 --max-intervals 2 --out {{dir}} --cache-dir {{cache}} "
        "--source m00000=csv:{missing}.csv",
        "readings file",
    ),
    (
        f"simulate --in-memory {' '.join(SMALL)} --households 5 --group-size 5 --max-intervals 2 --out {{dir}} --cache-dir {{cache}} "
        "--source m00000=csv:{binary_csv}",
        "is not UTF-8 text",
    ),
    (
        f"simulate --in-memory {' '.join(SMALL)} --households 5 --group-size 5 --max-intervals 2 --out {{dir}} --cache-dir {{cache}} "
        "--source m00000=csv:{garbage_csv}",
        "expected columns timestamp,energy_wh",
    ),
    (
        f"simulate --in-memory {' '.join(SMALL)} --households 5 --group-size 5 --max-intervals 2 --out {{dir}} --cache-dir {{cache}} "
        "--source m00000=csv:{empty_csv}",
        "empty_csv.csv",
    ),
    ("simulate --out {a_file}", "exists and is not a directory"),
    ("simulate --out {a_file}/sub", "is not a directory"),
    ("simulate --plan {missing} --out {dir}", "cannot read plan file (No such file or directory)"),
    ("simulate --plan {binary} --out {dir}", "UTF-8"),
    ("simulate --plan {garbage} --out {dir}", "not valid TOML"),
    ("simulate --plan nosuchplan --out {dir}", "nosuchplan"),
    # demo: ports and sizes, checked before anything is built or printed
    ("demo --port 99999", "argument --port: expected a TCP port 1..65535"),
    ("demo --port -1", "argument --port"),
    ("demo --port http", "expected a whole number"),
    ("demo --port {busy}", "another program is listening on that port"),
    ("demo --host no.such.host.invalid", "cannot serve on host"),
    ("demo --group-size 0", "argument --group-size"),
    ("demo --group-size -4", "argument --group-size"),
    ("demo --group-size 3", "min_survivors = 5"),
    ("demo --households 3", "at least 5 households are needed"),
    ("demo --speed 0", "argument --speed: must be greater than 0"),
    ("demo --loss 1.5", "argument --loss"),
    ("demo --key-bits 512", "invalid choice"),
    # keygen: sizes, and secret keys are never overwritten
    ("keygen household --bits 512 --out {dir}", "argument --bits: must be at least 2048"),
    ("keygen meter --out {key_dir}", "already exists (a secret key would be lost)"),
    ("keygen meter --out {a_file}", "exists and is not a directory"),
    ("keygen meter --name ../evil --out {dir}", "--name must be a plain file stem"),
    ("keygen wizard --out {dir}", "invalid choice"),
    # audit: every file missing, empty, garbage, non-UTF-8, truncated; corrupted keys
    (_audit(statement="{missing}"), "statement file"),
    (_audit(statement="{empty}"), "is empty"),
    (_audit(statement="{binary}"), "is not UTF-8 text"),
    (_audit(statement="{truncated}"), "is it truncated?"),
    (_audit(proof="{garbage}"), "not valid JSON"),
    (_audit(keys="{keys_truncated}"), "is it truncated?"),
    (_audit(keys="{keys_zero_n}"), "not a Paillier public key"),
    (_audit(keys="{keys_negative_n}"), "is not hex"),
    (_audit(keys="{keys_even_n}"), "Paillier modulus must be an odd composite"),
    (_audit(keys="{keys_not_hex}"), "is not hex"),
    (_audit(log="{missing}.jsonl"), "log file"),
    (_audit(log="{log_binary}"), "is not UTF-8 text"),
    (_audit(log="{garbage}"), "is not a database"),
    (_audit(log="{missing}"), "billing store"),
    (_audit(plan="builtin:nosuchplan"), "nosuchplan"),
    (_audit(plan="{binary}"), "UTF-8"),
    # services: config/scenario files, keys, ports
    # the deployed services: config files (docs/deploy.md) and state directories
    ("headend --config {missing}", "cannot read config"),
    ("headend --config {garbage}", "not valid TOML"),
    ("headend --config {binary}", "not valid TOML"),
    ("headend --config {empty}", "format must be"),
    ("headend invite --config {empty} --meter m-1", "format must be"),
    ("headend nosuchaction --config {empty}", "invalid choice"),
    ("headend --config {dr_cmin_above_cmax}", "demand.cmin_w_per_household (5000) must not exceed"),
    (
        "headend --config {dr_negative_cmax}",
        "demand.cmax_w_per_household: expected an integer >= 0, got -1",
    ),
    (
        "headend --config {dr_event_minutes}",
        "demand.event_minutes: expected 1..1440 minutes, got 0",
    ),
    (
        "headend --config {dr_long_event}",
        "demand.event_minutes: expected 1..1440 minutes, got 1441",
    ),
    ("headend --config {dr_enabled_string}", "demand.enabled: expected bool, got 'yes'"),
    (
        "headend --config {dr_unknown_key}",
        "unknown key demand.threshold_w; expected one of cmax_w_per_household",
    ),
    ("household --config {missing}", "cannot read config"),
    ("meter --config {truncated}", "not valid TOML"),
    ("enrol --config {missing} --ticket x", "cannot read config"),
    ("init headend --dir {a_file}", "File exists"),
    ("init nosuchrole --dir {dir}", "invalid choice"),
    # privacy and benchmarks
    ("privacy --households 2", "argument --households: must be at least 4"),
    ("privacy --group-sizes 5,x", "expected comma-separated group sizes"),
    ("privacy --group-sizes 0", "expected comma-separated group sizes"),
    ("privacy --out {a_file}", "exists and is not a directory"),
    ("bench paillier --bits 12", "invalid choice"),
    ("bench paillier --min-seconds -1", "argument --min-seconds"),
    ("bench aggregation --groups 0", "argument --groups"),
    ("bench comparison --samples 0", "argument --samples"),
    ("bench headend --meters -3", "argument --meters"),
    ("nosuchcommand", "invalid choice"),
]


def _run(
    line: str, files: dict[str, str], busy: int, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    argv = [w.format(busy=busy, **files) for w in line.split()]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exit after a one-line error
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("line", "phrase"), MATRIX, ids=[m[0] for m in MATRIX])
def test_bad_input_is_one_line_on_stderr(
    line: str,
    phrase: str,
    files: dict[str, str],
    busy_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _run(line, files, busy_port, capsys)
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0 and len(lines) == 1, (code, err)
    assert lines[0].startswith("privmeter") and ": error: " in lines[0], lines[0]
    assert phrase in lines[0], lines[0]


def test_keygen_overwrites_only_with_force(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(files["key_dir"]) / "meter.json"
    before = path.read_bytes()
    assert _run("keygen meter --out {key_dir}", files, 0, capsys)[0] == 2
    assert path.read_bytes() == before  # the secret key is intact
    assert main(["keygen", "meter", "--out", files["key_dir"], "--force"]) == 0
    assert path.read_bytes() != before


def test_the_written_bundle_audits(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit bundle ``simulate --out`` writes checks out with the command it prints."""
    code, _ = _run(_audit(), files, 0, capsys)
    assert code == 0
    cmd = (Path(files["statement"]).parent / "audit.txt").read_text().split()
    assert (
        cmd[:2] == ["privmeter", "audit"]
        and main([*cmd[1:], "--insecure-min-key-bits", "512"]) == 0
    )
    assert capsys.readouterr().out.startswith("VERIFIED meter m00000")


def _privmeter(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "privmeter", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_on_a_busy_port_fails_before_printing_a_url(busy_port: int) -> None:
    r = _privmeter("demo", "--port", str(busy_port), "--households", "5", "--group-size", "5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "http://" not in r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip().splitlines()[-1]], (
        r.stderr
    )  # one line, nothing before it


def test_missing_optional_dependency_names_the_extra() -> None:
    """The meter libraries are an extra: a command that needs them says which one to install."""
    from privmeter.cli import _describe

    msg = _describe(ModuleNotFoundError("No module named 'dsmr_parser'", name="dsmr_parser"))
    assert (
        msg
        == "this needs dsmr-parser, an optional dependency: pip install -e '.[meters]' in the privmeter checkout"
    )
    assert "reinstall privmeter" in _describe(ModuleNotFoundError("x", name="richardsonpy.model"))


def test_debug_shows_the_traceback(files: dict[str, str]) -> None:
    """``PRIVMETER_DEBUG=1`` is how a developer gets the traceback back."""
    env_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "privmeter",
            *_audit(statement=files["missing"]).format(**files).split(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "PRIVMETER_DEBUG": "1"},
    )
    assert env_run.returncode != 0 and "Traceback" in env_run.stderr


@pytest.fixture(autouse=True, scope="module")
def _cleanup(files: dict[str, str]) -> Iterator[None]:
    yield
    shutil.rmtree(Path(files["dir"]).parent, ignore_errors=True)
