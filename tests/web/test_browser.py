"""The dashboard in a real browser: Playwright driving Debian's chromium at 1280x800.

The app runs in-process (uvicorn in a thread, a free loopback port) on a
6-home deployment at 1800x speed.  Checked: the page loads with no console
errors, the feeder total updates live, an operator event flows through to
the events table, a cheating bill is flagged in red, an under-report and a
probe beyond budget are caught.  Screenshots go to ``test-artifacts/``
(``PRIVMETER_UPDATE_SCREENSHOT=1`` also refreshes ``docs/img/dashboard.png``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from privmeter.web.app import create_app
from privmeter.web.engine import DemoEngine

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(
            f"{CHROMIUM} is missing in CI (scripts/test.sh installs Debian's chromium)",
            pytrace=False,
        )
    pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def engine_kw() -> dict[str, Any]:
    """Options of the deployment under test (a test overrides this by parametrizing it)."""
    return {}


@pytest.fixture
def server(
    make_engine: Callable[..., DemoEngine], engine_kw: dict[str, Any]
) -> Iterator[tuple[str, DemoEngine]]:
    import uvicorn

    engine = make_engine(**engine_kw)
    engine.start()
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(engine),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", engine
    finally:
        srv.should_exit = True
        th.join(timeout=10)


@pytest.fixture
def page(server: tuple[str, DemoEngine]) -> Iterator[tuple[Any, list[str], str, DemoEngine]]:
    url, engine = server
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        pg = ctx.new_page()
        pg.on(
            "console",
            lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        pg.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        pg.set_default_timeout(20_000)
        try:
            yield pg, errors, url, engine
        finally:
            ctx.close()
            browser.close()


def _shot(pg: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    pg.screenshot(path=str(path))
    return path


def test_dashboard_live_in_chromium(page: tuple[Any, list[str], str, DemoEngine]) -> None:
    pg, errors, url, _engine = page
    pg.goto(url + "/")
    pg.wait_for_selector("body[data-ready='1']")
    total = pg.locator("#total-feeder-001")
    # the feeder total updates live (server-sent events)
    pg.wait_for_function(
        "() => Number(document.querySelector('#total-feeder-001').dataset.interval || 0) > 0"
    )
    first = int(total.get_attribute("data-interval"))
    pg.wait_for_function(
        f"() => Number(document.querySelector('#total-feeder-001').dataset.interval) >= {first + 2}"
    )
    assert "W" in total.inner_text()
    _shot(pg, "1-live")

    # an operator event flows through: compared, directives, in the events table and the log
    pg.click("#btn-event")
    pg.wait_for_selector("#events-table tbody tr[data-event]:has-text('(operator)')")
    row = pg.locator("#events-table tbody tr[data-event]:has-text('(operator)')").first
    assert "curtail" in row.inner_text()
    directed = row.locator("td").nth(5).inner_text()  # some meters, or why there are none
    assert directed.startswith("m0") or directed == "nobody: no home at or above T", directed
    pg.wait_for_selector("#alerts li.event")

    # the utility cheats on m00001's bill: disputed by the household, failed by the auditor, shown in red
    pg.select_option("#sel-meter", "m00001")
    pg.click("#btn-cheat")
    flagged = pg.locator("#bills-table tbody tr.flagged[data-meter='m00001']").first
    flagged.wait_for()
    assert "utility cheat caught" in flagged.inner_text() and "AuditFailure" in flagged.inner_text()
    pg.wait_for_selector("#alerts li.caught[data-kind='dispute']")

    # a household under-reports; the utility probes a meter beyond its budget
    pg.select_option("#sel-meter", "m00004")
    pg.click("#btn-underreport")
    pg.wait_for_selector(
        "#bills-table tbody tr.flagged[data-meter='m00004']:has-text('INVALID PROOF')"
    )
    pg.click("#btn-probe")
    pg.wait_for_selector("#alerts li.caught[data-kind='probe']:has-text('BudgetExceeded')")
    shot = _shot(pg, "2-caught")

    # what the utility holds about a household: ciphertexts and masked values, nothing readable
    assert "plaintext readings held: 0" in pg.locator("#utility-view").inner_text()

    pg.click("#tab-household")
    pg.wait_for_selector("#hh-load .main-svg")
    pg.wait_for_selector("#hh-budget")
    _shot(pg, "3-household")
    pg.click("#tab-privacy")
    pg.wait_for_selector("#pv-raw .main-svg")
    pg.wait_for_function(
        "() => document.querySelector('#pv-priv-text').textContent.includes('homes')"
    )
    _shot(pg, "4-privacy")

    assert not errors, errors
    if os.environ.get("PRIVMETER_UPDATE_SCREENSHOT"):
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "img" / "dashboard.png")


@pytest.mark.parametrize("engine_kw", [{"max_intervals": 48, "speed": 200_000.0}])
def test_end_of_period_and_privacy_tab(page: tuple[Any, list[str], str, DemoEngine]) -> None:
    """A run that ends (12 simulated hours): the page says so and switches its controls off; the
    Privacy tab shows exactly the occupancy score the API measured, with the 50 % of a guess."""
    pg, errors, url, engine = page
    pg.goto(url + "/")
    pg.wait_for_selector("body[data-ready='1']")
    pg.wait_for_selector("body.finished #ended", timeout=120_000)
    ended = pg.locator("#ended").inner_text()
    assert "The simulated period has ended" in ended and "restart privmeter demo" in ended
    assert "finished" in pg.locator("#status").inner_text().lower()
    for button in (
        "#btn-event",
        "#btn-cheat",
        "#btn-probe",
        "#btn-underreport",
        "#btn-offline",
        "#btn-step",
        "#btn-pause",
    ):
        assert pg.locator(button).is_disabled(), button
    assert not pg.locator("#sel-meter").is_disabled()  # the final state can still be browsed
    pg.wait_for_selector("#alerts li[data-kind='end']")
    for tr in pg.locator("#bills-table tbody tr[data-meter] td.audit").all()[
        :5
    ]:  # whole audit results
        text = tr.inner_text()
        assert text.startswith("verified: bill ") and text.endswith("signed records"), text

    # m00002 is away or asleep all morning: one kind of minute only, so no score is claimed
    pg.select_option("#sel-meter", "m00002")
    pg.click("#tab-privacy")
    pg.wait_for_selector("#pv-raw .main-svg")
    pg.wait_for_selector("#pv-score:has-text('not scored yet')")
    pg.select_option("#sel-meter", "m00003")
    pg.wait_for_selector("#pv-score:has-text('balanced accuracy')")
    measured = pg.evaluate("() => fetch('/api/privacy/m00003').then((r) => r.json())")[
        "conventional"
    ]["occupancy"]
    assert engine.finished and measured is not None and measured["balanced_accuracy"] is not None
    shown = pg.locator("#pv-score")
    assert float(shown.get_attribute("data-score")) == measured["balanced_accuracy"]
    text = shown.inner_text()
    assert f"a balanced accuracy of {round(100 * measured['balanced_accuracy'])}%" in text
    assert "any guess made without the curve scores 50%" in text
    assert f"of the {measured['active_minutes']} minutes someone was up and about" in text
    _shot(pg, "5-ended-privacy")
    assert not errors, errors
