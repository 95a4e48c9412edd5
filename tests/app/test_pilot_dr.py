"""Demand management in a deployment: one head-end and four households as separate processes.

The head-end runs with ``demand.enabled = true`` (Cmax = 1000 W per household);
four households read CSV exports whose readings are 0 Wh until a known
interval ``HIGH_FROM`` and then a constant 0, 1, 3, 4 Wh per 3-second interval
(0, 1200, 3600, 4800 W) -- so the first total of the high readings (any three
of them already exceed Cmax = 4000 W) starts an event.  The plan allows one
comparison a day.  After the event one directed household is stopped and
restarted.

Checks: exactly one event; every household answered with one bit, and each
bit is the plaintext truth ``[x >= T]`` for the reading the meter compared
(its signed offer names the interval; ``T`` is the head-end's own private
threshold, kept in its state); the households directed are exactly those with
``x >= T`` (a non-trivial split); the head-end's event record holds bits,
intervals and its threshold, never a reading; each household's own record of
the directives it got (``state.db``) matches; the restarted household kept its
spent budget (its metrics after the restart; and, from its state directory, a
valid signed event for a fresh reading of the same day is refused with
``BudgetExceeded``, not answered); the metrics count the event, the
comparisons and the directives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.procs import free_port as _free_port
from tests.procs import get as _get
from tests.procs import headend_config, write_config
from tests.procs import metric as _metric
from tests.procs import query as _query
from tests.procs import run_cli as _run
from tests.procs import spawn as _spawn
from tests.procs import stop as _stop
from tests.procs import wait_for as _wait

from privmeter.grid.devices.csvsource import write_csv_readings
from privmeter.grid.devices.source import IntervalReading

pytestmark = pytest.mark.slow

PLAN = Path(__file__).with_name("plan-dr-3s.toml")
IV = 3
WH = [0, 1, 3, 4]  # per interval from HIGH_FROM on: 0, 1200, 3600, 4800 W
RESTART = 3  # a household that will be directed (4800 W)


def _events(db: Path) -> list[dict]:  # type: ignore[type-arg]
    return [
        dict(json.loads(info), event_id=e, group=g, interval=t)
        for e, g, t, info in _query(db, "SELECT event_id, grp, interval, info FROM he_events")
    ]


def test_demand_management_in_a_deployment(tmp_path, capsys):
    he_dir = tmp_path / "headend"
    port, he_http = _free_port(), _free_port()
    hh_http = [_free_port() for _ in WH]
    _run(["init", "headend", "--dir", str(he_dir)], capsys)
    headend_config(
        he_dir,
        listen={"port": port},
        billing={"plans": [str(PLAN)]},
        aggregation={"round_timeout_s": 1.5, "min_survivors": 3},
        demand={"enabled": True, "cmin_w_per_household": 0, "cmax_w_per_household": 1000},
        operations={"http_port": he_http},
    )
    he_log = he_dir / "headend.log"
    procs = {"he": _spawn(["headend", "--config", str(he_dir / "headend.toml")], he_log)}
    homes: list[Path] = []
    truth: dict[str, dict[int, int]] = {}
    try:
        _wait(lambda: b"listening" in he_log.read_bytes(), 30, "the head-end to listen")
        for i in range(len(WH)):
            mid = f"home-{i}"
            d = tmp_path / mid
            _run(
                ["init", "household", "--dir", str(d), "--meter-id", mid, "--key-bits", "2048"],
                capsys,
            )
            write_config(
                d,
                "household",
                source=f"csv:{d / 'readings.csv'}",
                plan="pilot-dr-3s",
                clock_skew_s=1,
                headend={"port": port},
                operations={"http_port": hh_http[i]},
            )
            ticket = _run(
                ["headend", "invite", "--config", str(he_dir / "headend.toml"), "--meter", mid],
                capsys,
            ).strip()
            _run(["enrol", "--config", str(d / "household.toml"), "--ticket", ticket], capsys)
            homes.append(d)
        # low readings (no event) until every household is surely connected, then high ones
        now = int(time.time())
        high_from = now // IV + 4
        for i, d in enumerate(homes):
            truth[f"home-{i}"] = {
                t: (WH[i] if t >= high_from else 0) for t in range(now // IV - 5, now // IV + 60)
            }
            write_csv_readings(
                d / "readings.csv",
                [IntervalReading(interval=t, energy_wh=wh) for t, wh in truth[f"home-{i}"].items()],
                IV,
            )
        for i, d in enumerate(homes):
            procs[f"home-{i}"] = _spawn(
                ["household", "--config", str(d / "household.toml")], d / "household.log"
            )
        db = he_dir / "headend.db"
        _wait(
            lambda: json.loads(_get(he_http, "/healthz")[1] or b"{}").get("connected") == len(WH),
            20,
            "four connected households",
        )
        assert time.time() < high_from * IV, "households connected too late for the test's readings"
        _wait(
            lambda: any("bits" in e for e in _events(db)),
            30,
            "a demand-management event with its bits",
        )
        # restart a directed household: its budget and its directive are in its state.db
        _stop(procs[f"home-{RESTART}"])
        assert procs[f"home-{RESTART}"].returncode == 0
        procs[f"home-{RESTART}"] = _spawn(
            ["household", "--config", str(homes[RESTART] / "household.toml")],
            homes[RESTART] / "household.log",
        )
        back = (
            int(time.time()) // IV
        )  # a total of an interval after this one includes the restarted meter
        _wait(
            lambda: bool(
                _query(db, f"SELECT 1 FROM he_totals WHERE survivors = 4 AND interval > {back}")
            ),
            30,
            "a total of all four households after the restart",
        )
        # operations: the event, comparisons and directives counted on both sides
        hm = _get(he_http, "/metrics")[1].decode()
        assert _metric(hm, "privmeter_demand_events_total") == 1
        assert _metric(hm, 'privmeter_comparisons_total{result="answered"}') == len(WH)
        assert _metric(hm, 'privmeter_directives_total{action="curtail"}') == 2
        m2 = _get(hh_http[2], "/metrics")[1].decode()
        assert _metric(m2, 'privmeter_directives_total{action="curtail"}') == 1
        assert _metric(m2, 'privmeter_comparisons_total{reason="",result="answered"}') == 1
        m3 = _get(hh_http[RESTART], "/metrics")[
            1
        ].decode()  # after the restart: the day's budget is spent
        assert _metric(m3, "privmeter_comparisons_used_today") == 1
    finally:
        for p in procs.values():
            _stop(p)
    assert procs["he"].returncode == 0
    # -- the event: bits = plaintext truth, directives to exactly the wrong side ----------------
    (ev,) = _events(he_dir / "headend.db")
    assert (
        ev["side"] == "above"
        and ev["action"] == "curtail"
        and ev["trigger_total_w"] > ev["cmax_w"] == 4000
    )
    members = sorted(truth)
    assert sorted(ev["bits"]) == members and sorted(ev["reading_intervals"]) == members
    t_w = ev["threshold_w"]
    for m in members:
        x_w = truth[m][ev["reading_intervals"][m]] * 3600 // IV
        assert ev["bits"][m] == (x_w >= t_w), (m, x_w, t_w)
    assert set(ev["directed"]) == {
        m for m in members if truth[m][ev["reading_intervals"][m]] * 3600 // IV >= t_w
    }
    assert set(ev["directed"]) == {"home-2", "home-3"}  # a non-trivial split (T = 2390 W)
    # the head-end keeps bits, intervals and its own threshold -- no reading
    assert set(ev) <= {
        "event_id",
        "group",
        "interval",
        "side",
        "action",
        "start_interval",
        "duration_minutes",
        "trigger_total_w",
        "cmin_w",
        "cmax_w",
        "echoes",
        "answers",
        "targets",
        "threshold_w",
        "bits",
        "reading_intervals",
        "directed",
    }
    assert all(isinstance(b, bool) for b in ev["bits"].values())
    assert (ev["echoes"], ev["answers"], ev["targets"]) == (4, 4, 2)
    # -- each household's own record of its directives (the restarted one's survived) ------------
    for i, d in enumerate(homes):
        rows = _query(d / "state.db", "SELECT event_id, action FROM directives")
        assert rows == ([(ev["event_id"], "curtail")] if f"home-{i}" in ev["directed"] else []), (
            i,
            rows,
        )
    # the restarted household kept sending the event window's demand-response records
    db3 = homes[RESTART] / "state.db"
    window = [
        t for (t,) in _query(db3, "SELECT interval FROM readings") if t >= ev["start_interval"]
    ]
    adj = set(
        _query(db3, f"SELECT kind, interval FROM adjustments WHERE event_id = '{ev['event_id']}'")
    )
    assert window and all({("dr_excess", t), ("dr_rebate", t)} <= adj for t in window)
    # -- no second budget after the restart: a valid event for a fresh reading is refused ---------
    _no_second_budget(homes[RESTART], he_dir, ev)


def _no_second_budget(home: Path, he_dir: Path, ev: dict) -> None:  # type: ignore[type-arg]
    """The restarted household, built from its state directory as ``privmeter household`` builds
    it, refuses a head-end-signed event on a fresh reading of the compared reading's day."""
    from privmeter.app.config import HouseholdConfig, load_config
    from privmeter.app.household import HouseholdService
    from privmeter.app.state import load_headend, load_household
    from privmeter.errors import BudgetExceeded
    from privmeter.protocol.demand import DemandManager

    cfg = load_config(home / "household.toml", "household")
    assert isinstance(cfg, HouseholdConfig)
    svc = HouseholdService(cfg, load_household(cfg.state_dir))
    try:
        meter = svc.meter
        assert meter.demand is not None and meter.budget is not None
        last = max(meter.local_readings)
        assert (
            last * IV // 86400 == ev["reading_intervals"]["home-3"] * IV // 86400
        )  # same day (UTC)
        dm = DemandManager(
            load_headend(he_dir).signing_key,
            ev["group"],
            meter.group_keys,
            cmin_w=0,
            cmax_w=4000,
            level_above_w=1000,
            level_below_w=0,
            interval_seconds=IV,
        )
        now = (last + 1) * IV
        probe = dm.open_event(100, side="above", action="curtail", start_interval=last + 1, now=now)
        with pytest.raises(BudgetExceeded):
            meter.handle(probe, now=now)
    finally:
        svc.close()
