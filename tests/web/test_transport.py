"""The demo's transports: loopback TCP through the real transport (with emulated loss), and in memory."""

from __future__ import annotations

from collections.abc import Callable

from privmeter.web.engine import DemoEngine


def _truth(e: DemoEngine, meters: list[str], t: int) -> int:
    return sum(e.feeds[m].load.energy_wh(t) or 0 for m in meters)


def _check_totals(e: DemoEngine) -> list[dict[str, object]]:
    rows = list(e.log.totals["feeder-001"])
    for r in rows:
        if r["total_w"] is None:
            continue
        survivors = [m for m in e.groups["feeder-001"] if m not in r["dropped"]]  # type: ignore[operator]
        assert r["total_w"] * 900 // 3600 == _truth(e, survivors, r["interval"])  # type: ignore[operator]
    return rows


def test_tcp_deployment_uses_sockets_and_reports_it(make_engine: Callable[..., DemoEngine]) -> None:
    e = make_engine()
    e.paused = True
    e.start()
    for _ in range(3):
        e.call(e.step_once).result(timeout=60)
    ov = e.overview
    assert ov["transport"] == ("loopback TCP, SIGMA-I + ChaCha20-Poly1305, emulated latency 2±1 ms")
    net = ov["network"]
    assert net["connections"] == 12 and net["emulated_drops"] == 0  # 6 meters + 6 households
    assert net["records_in"] > 0 and net["records_out"] > 0
    rows = _check_totals(e)
    assert rows and all(r["dropped"] == [] and r["total_w"] is not None for r in rows)


def test_lossy_link_totals_stay_exact(make_engine: Callable[..., DemoEngine]) -> None:
    e = make_engine(loss=0.15)
    e.paused = True
    e.start()
    for _ in range(4):
        e.call(e.step_once).result(timeout=120)
    assert e.overview["transport"].endswith("loss 15%")
    assert e.wire_stats()["emulated_drops"] > 0
    rows = _check_totals(e)  # whatever was lost, every unmasked total is the survivors' exact sum
    assert rows


def test_memory_transport_still_runs(make_engine: Callable[..., DemoEngine]) -> None:
    e = make_engine(transport="memory")
    e.paused = True
    e.start()
    for _ in range(3):
        e.call(e.step_once).result(timeout=60)
    assert e.overview["transport"].startswith("in memory") and e.overview["network"] == {}
    rows = _check_totals(e)
    assert rows and all(r["dropped"] == [] and r["total_w"] is not None for r in rows)
