"""The dashboard API against a paused 6-home deployment stepped by hand: exact results, attacks caught."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

with (
    warnings.catch_warnings()
):  # starlette nudges towards its httpx fork; plain httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from privmeter.protocol.settlement import expected_bill
from privmeter.web.app import create_app
from privmeter.web.engine import DemoEngine
from privmeter.web.faults import CHEAT_INFLATION


@pytest.fixture
def client(make_engine: Callable[..., DemoEngine]) -> Iterator[tuple[TestClient, DemoEngine]]:
    e = make_engine()
    e.paused = True
    e.start()
    with TestClient(create_app(e)) as c:
        yield c, e


def _steps(c: TestClient, n: int) -> None:
    for _ in range(n):
        assert c.post("/api/control/step").status_code == 200


def _truth(e: DemoEngine, meters: list[str], t: int) -> int:
    return sum(e.feeds[m].load.energy_wh(t) or 0 for m in meters)


def test_overview_and_page(client: tuple[TestClient, DemoEngine]) -> None:
    c, _e = client
    ov = c.get("/api/overview").json()
    assert ov["format"] == "privmeter.demo.overview/1"
    assert ov["households"] == 6 and [g["id"] for g in ov["groups"]] == ["feeder-001"]
    assert ov["crypto"]["household_key_bits"] == 2048 and ov["status"] == "paused"
    page = c.get("/")
    assert (
        page.status_code == 200 and "plotly.min.js" in page.text and "cdn" not in page.text.lower()
    )
    js = c.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert c.get("/static/app.js").status_code == 200


def test_errors_are_specific(client: tuple[TestClient, DemoEngine]) -> None:
    c, _ = client
    assert c.get("/api/households/nobody").status_code == 404
    assert c.get("/api/households/nobody/utility-view").status_code == 404
    assert c.get("/api/groups/nowhere/totals").status_code == 404
    assert c.post("/api/control/event", json={"group": "nowhere"}).status_code == 404
    assert c.post("/api/control/cheat", json={"meter": "x" * 65}).status_code == 422
    assert c.post("/api/control/speed", json={"speed": 0}).status_code == 422
    # a page on another origin cannot drive the demo through DNS rebinding
    assert c.get("/api/overview", headers={"host": "evil.example"}).status_code == 400


def test_totals_equal_truth_and_dropout_recovers(client: tuple[TestClient, DemoEngine]) -> None:
    c, e = client
    _steps(c, 3)
    rows = c.get("/api/groups/feeder-001/totals").json()["totals"]
    assert rows, "no final total after three intervals"
    members = e.groups["feeder-001"]
    for r in rows:
        assert r["total_w"] * 900 // 3600 == _truth(e, members, r["interval"])
    assert c.post("/api/control/offline", json={"meter": "m00002", "offline": True}).json()[
        "offline"
    ]
    since = rows[-1]["interval"]
    _steps(c, 3)
    new = c.get(f"/api/groups/feeder-001/totals?since={since}").json()["totals"]
    dropped = [r for r in new if "m00002" in r["dropped"]]
    assert dropped, "the offline meter is never reported as dropped"
    for r in dropped:  # the total of the survivors, exactly: the dropout was recovered
        survivors = [m for m in members if m not in r["dropped"]]
        assert r["total_w"] is not None and r["total_w"] * 900 // 3600 == _truth(
            e, survivors, r["interval"]
        )


def test_too_few_survivors_is_not_unmasked(client: tuple[TestClient, DemoEngine]) -> None:
    c, e = client
    _steps(c, 2)
    for m in ("m00001", "m00003"):
        c.post("/api/control/offline", json={"meter": m, "offline": True})
    _steps(c, 3)
    rows = c.get("/api/groups/feeder-001/totals").json()["totals"]
    small = [r for r in rows if r["survivors"] < 5]
    assert small and all(r["total_w"] is None for r in small)
    assert any(a["kind"] == "refused-total" for a in e.overview["alerts"])


def test_bills_verified_cheat_and_underreport_caught(client: tuple[TestClient, DemoEngine]) -> None:
    c, e = client
    c.post("/api/control/cheat", json={"meter": "m00001"})
    c.post("/api/control/underreport", json={"meter": "m00004"})
    _steps(c, 4)
    bills = {(b["meter_id"], b["period"]): b for b in c.get("/api/bills").json()["bills"]}
    assert len(bills) >= 6
    cheat = bills[("m00001", 0)]
    assert cheat["status"] == "dispute:rebuild" and cheat["cheat"]
    assert cheat["audit"].startswith("FAILED: AuditFailure")
    under = bills[("m00004", 0)]
    assert under["status"] == "invalid-proof" and "InvalidProof" in under["audit"]
    for (m, p), b in bills.items():
        if (m, p) in (("m00001", 0), ("m00004", 0)):
            continue
        assert b["status"] == "paid" and b["audit"].startswith("verified")
        meter = e.meters[m]
        readings = {t: e.feeds[m].load.energy_wh(t) or 0 for t in range(b["start"], b["end"])}
        adj = {k: v for k, v in meter.local_adjustments.items() if b["start"] <= k[2] < b["end"]}
        assert b["bill"] == expected_bill(meter.plan, None, readings, adj, b["start"], b["end"])
    # the household's own view: its bill, and the cheat (inflated by CHEAT_INFLATION) disputed
    hh = c.get("/api/households/m00001").json()
    assert any(x["status"] == "dispute:rebuild" for x in hh["bills"])
    assert CHEAT_INFLATION > 0
    kinds = [a["kind"] for a in e.overview["alerts"] if a["level"] == "caught"]
    assert "dispute" in kinds and "underreport" in kinds


def test_event_and_probe_beyond_budget(client: tuple[TestClient, DemoEngine]) -> None:
    c, e = client
    _steps(c, 2)
    c.post("/api/control/event", json={"group": "feeder-001"})
    _steps(c, 2)
    evs = c.get("/api/events").json()["events"]
    forced = [x for x in evs if x["forced"]]
    assert forced and len(forced[0]["answered"]) == 6 and forced[0]["echoes"] == 6
    # the utility's comparison bits agree with the plaintext truth (the meter compares its last reading)
    ev = forced[0]
    uv = c.get("/api/households/m00000/utility-view").json()
    assert any(b["event_id"] == ev["event_id"] for b in uv["comparison_bits"])
    probe = c.post("/api/control/probe", json={"meter": "m00003"}).json()
    plan = e.meters["m00003"].plan
    assert probe["bits_learned"] <= plan.privacy.comparisons_per_interval
    assert probe["refused"] is not None and probe["refused"].startswith("BudgetExceeded")
    _steps(c, 1)  # next interval: one more bit at most, then refused again
    probe2 = c.post("/api/control/probe", json={"meter": "m00003"}).json()
    assert probe2["bits_learned"] <= 1 and probe2["refused"].startswith("BudgetExceeded")
    hh = c.get("/api/households/m00003").json()
    assert hh["budget"]["used_today"] <= plan.privacy.comparisons_per_day


def test_utility_view_holds_nothing_readable(client: tuple[TestClient, DemoEngine]) -> None:
    c, e = client
    _steps(c, 3)
    uv: dict[str, Any] = c.get("/api/households/m00002/utility-view").json()
    assert uv["plaintext_readings_held"] == 0
    assert uv["reading_ciphertexts"] and all(r["bytes"] == 512 for r in uv["reading_ciphertexts"])
    truth = {t: v for t, v in e.meters["m00002"].local_readings.items()}
    for mi in uv["masked_inputs"]:
        if mi["masked"]:
            assert int(mi["masked"][0]) != truth.get(mi["interval"])
    # the household's own view shows its true load; the privacy view infers from it
    hh = c.get("/api/households/m00002").json()
    assert hh["load"]["minute_w"] and hh["readings_wh"][-1]["wh"] == truth[max(truth)]
    pv = c.get("/api/privacy/m00002").json()
    assert len(pv["conventional"]["active"]) == len(pv["conventional"]["minute_w"])
    assert pv["privmeter"]["feeder_members"] == 6


def test_stream_sends_overview(client: tuple[TestClient, DemoEngine]) -> None:
    c, _ = client
    with c.stream("GET", "/api/stream?limit=1") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = b"".join(r.iter_bytes()).decode()
    assert "event: overview" in body and '"format":"privmeter.demo.overview/1"' in body


def test_end_of_the_period_is_said_and_controls_refused(
    make_engine: Callable[..., DemoEngine],
) -> None:
    """After the last interval: the overview says so, and a control is refused (409), not left pending."""
    e = make_engine(max_intervals=3)
    e.paused = True
    e.start()
    with TestClient(create_app(e)) as c:
        _steps(c, 5)  # three intervals, the drain step that closes the last one, then the end
        ov = c.get("/api/overview").json()
        assert ov["status"] == "finished" and ov["end_time"] == (e.first + 3) * e.interval_seconds
        assert any(a["kind"] == "end" for a in ov["alerts"])
        for path, body in (
            ("event", {"group": "feeder-001"}),
            ("cheat", {"meter": "m00001"}),
            ("step", None),
            ("offline", {"meter": "m00001", "offline": True}),
            ("probe", {"meter": "m00001"}),
            ("resume", None),
        ):
            r = c.post(f"/api/control/{path}", json=body)
            assert r.status_code == 409 and "simulated period has ended" in r.json()["detail"], path
        assert c.get("/api/events").status_code == 200  # the final state stays readable


def test_privacy_score_is_the_one_measured(client: tuple[TestClient, DemoEngine]) -> None:
    """The Privacy view's number is recomputed here from the flags it shows and the simulator's truth."""
    from privmeter.web.inference import score_occupancy

    c, e = client
    _steps(c, 40)  # 10 hours: a morning with people up and about
    p = c.get("/api/privacy/m00002").json()["conventional"]
    occ = e.occupancy("m00002")
    assert occ is not None
    i0 = (p["start_time"] - e.feeds["m00002"].load.start_unix) // 60
    again = score_occupancy(p["active"], occ[i0 : i0 + len(p["active"])])
    assert again is not None and p["occupancy"] == again.to_json()
    o = p["occupancy"]
    assert o["minutes"] == len(p["minute_w"]) == 40 * 15 and o["guess_accuracy"] == 0.5
    if o["balanced_accuracy"] is not None:
        assert (
            o["balanced_accuracy"]
            == (o["active_found"] / o["active_minutes"] + o["quiet_right"] / o["quiet_minutes"]) / 2
        )
