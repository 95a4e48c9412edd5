"""``privmeter household`` on its own line: a real head-end process, a meter fleet
process and the household's own process, over loopback TCP.

The household reads its meter's local-port export (a ``privmeter-readings
v1`` CSV), connects with its own identity (``hh:<meter id>``), and the
head-end sends its statement there instead of down the meter's line.  The
household answers with a proof of exactly the bill its readings give, and
the head-end records it as paid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from privmeter.grid.devices.csvsource import write_csv_readings
from privmeter.grid.devices.source import IntervalReading
from privmeter.sim.scenario import build, scenario_json

from ..conftest import tiny_scenario

N = 4


def _bill(plan, readings: dict[int, int], lo: int, hi: int) -> int:  # type: ignore[no-untyped-def]
    energy = sum(
        wh * plan.tariff.price_at(t, plan.interval_seconds, None) for t, wh in readings.items()
    )
    return energy + int(plan.fixed_charge(range(lo, hi)))


@pytest.mark.parametrize("honest", [True, False])
def test_household_on_its_own_line_proves_its_bill(
    sim_cache: Path, tmp_path: Path, honest: bool
) -> None:
    """honest: its export matches what the meter reported -> proof, paid.
    Otherwise (one reading 1 Wh off in the household's copy) it disputes the
    statement instead of proving a bill it cannot reproduce."""
    sc = tiny_scenario(sim_cache, demand=False, max_intervals=N)
    world = build(sc)
    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario_json(sc)))
    home = world.households[2]
    first = world.first_interval
    readings = {t: home.load.energy_wh(t) for t in range(first, first + sc.intervals)}
    assert all(isinstance(v, int) for v in readings.values())
    mine = dict(readings)
    if not honest:
        mine[first + 1] += 1
    csv = tmp_path / "readings.csv"
    write_csv_readings(
        csv,
        [IntervalReading(interval=t, energy_wh=wh) for t, wh in mine.items()],
        sc.interval_seconds,
    )

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
            str(tmp_path / "he.db"),
            "--report",
            str(tmp_path / "he.json"),
            "--round-timeout",
            "20",
            "--wait-meters",
            "60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    procs = [he]
    try:
        assert he.stdout is not None
        line = he.stdout.readline()  # "head-end listening on HOST:PORT, key HEX"
        port = line.split()[3].rstrip(",").rsplit(":", 1)[1]
        key = line.split()[-1]
        ready_r, ready_w = os.pipe()
        hh = subprocess.Popen(
            [
                *py,
                "household",
                "--scenario",
                str(scen),
                "--meter",
                home.meter_id,
                "--readings",
                str(csv),
                "--port",
                port,
                "--headend-key",
                key,
                "--ready-fd",
                str(ready_w),
            ],
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(ready_w,),
        )
        procs.append(hh)
        os.close(ready_w)  # the household holds the only write end: end of file if it dies
        with os.fdopen(ready_r) as ready:  # on its line before the meters start the run
            assert ready.readline() == f"ready {home.meter_id}\n"
        fleet = subprocess.Popen(
            [*py, "meter", "--scenario", str(scen), "--port", port, "--headend-key", key],
            stdout=subprocess.DEVNULL,
        )
        procs.append(fleet)
        assert he.wait(timeout=240) == 0
        out, _ = hh.communicate(timeout=60)
        assert hh.returncode == 0, out
        assert fleet.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
    want = _bill(home.plan, readings, first, first + sc.intervals)
    summary = json.loads((tmp_path / "he.json").read_text())
    settled = {m: (kind, bill) for m, _period, kind, bill in summary["settlements"]}
    if honest:
        assert out.split() == ["BillProof", str(want)]
        assert settled[home.meter_id] == ("paid", want)
    else:
        assert out.split()[0] == "Dispute"
        assert settled[home.meter_id][0].startswith("dispute:")
    assert len(settled) == len(world.households)  # the others answered down their meters' lines
