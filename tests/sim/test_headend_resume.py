"""``privmeter headend`` killed mid-run (SIGKILL) and restarted on the same store
resumes after the last stored total instead of starting over: no interval is
aggregated twice (two totals of one interval would allow differencing), the
totals before and after the restart are exact, and every household's bill
still covers the whole period."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from privmeter.parties.headend_store import HeadEndStore
from privmeter.sim.scenario import build, scenario_json

from ..conftest import tiny_scenario

N = 8


def _start(
    scen: Path, tmp: Path, tag: str, speed: str
) -> tuple[subprocess.Popen[str], subprocess.Popen[bytes], str]:
    py = [sys.executable, "-m", "privmeter.sim.parties"]
    he = subprocess.Popen(
        [
            *py,
            "headend",
            "--scenario",
            str(scen),
            "--port",
            "0",
            "--db",
            str(tmp / "he.db"),
            "--report",
            str(tmp / f"he-{tag}.json"),
            "--speed",
            speed,
            "--round-timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert he.stdout is not None
    line = he.stdout.readline()  # "head-end listening on HOST:PORT, key HEX"
    port, key = line.split()[3].rstrip(",").rsplit(":", 1)[1], line.split()[-1]
    fleet = subprocess.Popen(
        [*py, "meter", "--scenario", str(scen), "--port", port, "--headend-key", key],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return he, fleet, line


def _stop(he: subprocess.Popen[str], fleet: subprocess.Popen[bytes]) -> None:
    for p in (he, fleet):
        if p.poll() is None:
            p.kill()
        p.wait()
    assert he.stdout is not None
    he.stdout.close()


def _stored(db: Path) -> list[int]:
    store = HeadEndStore(db)
    try:
        return sorted(t.interval for t in store.totals())
    finally:
        store.close()


def test_headend_killed_mid_run_resumes_after_the_last_stored_total(
    sim_cache: Path, tmp_path: Path
) -> None:
    sc = tiny_scenario(sim_cache, demand=False, max_intervals=N)
    world = build(sc)
    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario_json(sc)))
    first = world.first_interval
    truth = {
        t: sum(h.load.energy_wh(t) or 0 for h in world.households) for t in range(first, first + N)
    }

    he, fleet, _ = _start(scen, tmp_path, "1", "900")  # one interval a second: time to kill it
    try:
        deadline = time.monotonic() + 120
        while len(_stored(tmp_path / "he.db")) < 2:
            assert he.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(he.pid, signal.SIGKILL)
        he.wait()
    finally:
        _stop(he, fleet)
    before = _stored(tmp_path / "he.db")
    assert 2 <= len(before) < N and before == list(range(first, first + len(before)))

    he, fleet, _ = _start(scen, tmp_path, "2", "0")
    try:
        assert he.stdout is not None
        rest = he.stdout.read()
        assert he.wait(timeout=240) == 0
        assert fleet.wait(timeout=60) == 0
    finally:
        _stop(he, fleet)
    assert f"resuming at interval {before[-1] + 1}" in rest
    summary = json.loads((tmp_path / "he-2.json").read_text())
    got = [(t, total) for _g, t, total, _s, _d in summary["totals"]]
    assert [t for t, _ in got] == list(range(first, first + N))  # each interval once
    assert all(total == truth[t] for t, total in got)
    kinds = {kind for _m, _p, kind, _bill in summary["settlements"]}
    assert kinds == {"paid"} and len(summary["settlements"]) == len(world.households)
