"""The map page and the attack report form in headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright for Python), against a real server on 127.0.0.1.

The map for bank A shows exactly bank A's machines, logs no console error and makes no
request outside loopback; a click shows a machine's action; the report form files an attack
through POST /api/v1/incidents and prints the police-ready report. Screenshots go to
``test-artifacts/``.

Skipped with the reason when playwright or Chromium is missing, except under ``CI=true``,
where that fails (like the PostgreSQL tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atm_risk.alerts.models import Alert
from atm_risk.alerts.service import report_incident, score_and_alert
from atm_risk.api import web
from atm_risk.api.app import create_app
from atm_risk.atms.models import Atm
from atm_risk.clock import FrozenClock
from atm_risk.config import Settings
from atm_risk.incidents.models import Incident
from atm_risk.risk.models import RiskScore
from atm_risk.risk.service import latest_run
from atm_risk.tenancy.models import Operator
from tests import two_banks
from tests.api_server import serve
from tests.conftest import REPO, unavailable

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
ZONE = "Europe/Amsterdam"
ATMS = (
    "atm_id,operator,lat,lon,site_type,night_closure,country,address,city\n"
    "A-UTR-1,BankA,52.0907,5.1214,free_standing,false,NL,Oudegracht 1,Utrecht\n"
    "A-GRO-1,BankA,53.2194,6.5665,shop,false,NL,Grote Markt 2,Groningen\n"
    "A-ZWO-1,BankA,52.5168,6.0830,wall,true,NL,Melkmarkt 5,Zwolle\n"
    "B-UTR-1,BankB,52.0930,5.1100,shop,false,NL,Vredenburg 3,Utrecht\n"
    "B-UTR-2,BankB,52.1000,5.1300,wall,false,NL,Biltstraat 4,Utrecht\n"
    "B-AMS-1,BankB,52.3730,4.8930,shop,false,NL,Dam 1,Amsterdam\n"
)
ACTION_LABELS = {
    "temporary_shutdown": "Temporary shutdown",
    "night_closure": "Close at night",
    "harden": "Harden",
    "monitor": "Monitor",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, or a skip (a failure under CI=true) saying what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing is not None:
        unavailable(missing, "browser tests")
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@dataclass
class Site:
    base_url: str
    keys: dict[str, str]
    sessions: sessionmaker[Session]
    now: datetime


@pytest.fixture
def site(sessions: sessionmaker[Session], database_url: str, write: Any) -> Iterator[Site]:
    # the server's clock is about the browser's: the form's default time is "now"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = FrozenClock(now)
    settings = Settings(database_url=database_url, model_path=None)
    two_banks.load(sessions, clock, write, motorway=True, atms=ATMS)
    # an attack on bank B's machine (bank A must not see it) and one on no machine (public)
    for fields in (
        {"operator": "BankB", "atm_id": "B-UTR-1", "method": "explosive_solid"},
        {"lat": 52.155, "lon": 5.387, "method": "explosive_gas", "locality": "Amersfoort"},
    ):
        fields["occurred_at"] = (now - timedelta(hours=2)).isoformat()
        report_incident(sessions, settings, clock, fields, send=False)
    score_and_alert(sessions, settings, clock, send=False)
    keys = two_banks.keys(sessions, now, "bank_a", "operator", "police")
    app = create_app(settings, clock=clock)
    web.install(app)
    with serve(app) as client:
        yield Site(str(client.base_url), keys, sessions, now)


@dataclass
class Watched:
    """What a page did: console errors, page errors, every request's URL."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self, key: str, *, expected_statuses: tuple[int, ...] = ()) -> None:
        """No error but those Chromium logs for the answers a test provoked on purpose."""
        allowed = {
            f"console.error: Failed to load resource: the server responded with a status of {s} "
            for s in expected_statuses
        }
        assert [e for e in self.errors if not any(e.startswith(a) for a in allowed)] == []
        assert self.requests
        for url in self.requests:
            parts = urlsplit(url)
            assert parts.scheme in {"http", "data"}, url
            if parts.scheme == "http":
                assert parts.hostname == "127.0.0.1", url  # nothing leaves loopback
            assert key not in url, url  # the key travels in the Authorization header only


def watch(page: Any) -> Watched:
    seen = Watched()
    page.on(
        "console",
        lambda m: (
            seen.errors.append(f"console.{m.type}: {m.text}")
            if m.type in {"error", "assert"}
            else None
        ),
    )
    page.on("pageerror", lambda e: seen.errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: seen.errors.append(f"failed: {r.url} {r.failure}"))
    page.on("request", lambda r: seen.requests.append(r.url))
    return seen


def new_page(browser: Any) -> Any:
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id=ZONE, locale="en-GB"
    )
    return context.new_page()


def machines_of(sessions: sessionmaker[Session], code: str) -> dict[str, RiskScore]:
    with sessions() as s:
        run = latest_run(s)
        assert run is not None
        rows = s.execute(
            select(Operator.code, Atm.atm_id, RiskScore)
            .join(Operator, Atm.operator_id == Operator.id)
            .join(RiskScore, (RiskScore.atm_pk == Atm.id) & (RiskScore.run_id == run.id))
            .where(Operator.code == code)
        ).all()
    return {f"{c}/{a}": score for c, a, score in rows}


CLICK_POINT = """id => {
  const map = window.__atmMap.map;
  const p = map.latLngToContainerPoint(window.__atmMap.machines.get(id).getLatLng());
  const box = map.getContainer().getBoundingClientRect();
  return [box.left + p.x, box.top + p.y];
}"""


def click_machine(page: Any, machine_id: str) -> None:
    x, y = page.evaluate(CLICK_POINT, machine_id)
    page.mouse.click(x, y)


def test_map_for_bank_a_shows_exactly_its_machines(browser: Any, site: Site) -> None:
    key = site.keys["bank_a"]
    expected = machines_of(site.sessions, "banka")
    assert set(expected) == {"banka/A-UTR-1", "banka/A-GRO-1", "banka/A-ZWO-1"}
    page = new_page(browser)
    seen = watch(page)
    page.goto(f"{site.base_url}/map#key={key}")
    page.wait_for_selector("body[data-map-ready=true]", state="attached", timeout=60_000)

    counts = page.evaluate("window.__mapCounts")
    drawn = set(page.evaluate("Array.from(window.__atmMap.machines.keys())"))
    assert drawn == set(expected)
    assert counts["machines"] == len(expected)
    bands = {b: sum(s.risk_band == b for s in expected.values()) for b in ("high", "elevated")}
    assert (counts["high"], counts["elevated"]) == (bands["high"], bands["elevated"])
    assert counts["incidents"] == 1  # the public attack; not the one on bank B's machine
    assert counts["motorway"] > 500
    assert counts["boundaries"] == 12
    assert counts["patrol"] == 0  # banks get no patrol plan
    assert key not in page.url  # read from the fragment, then taken out of the address bar
    assert "bank · banka" in page.inner_text("#who")

    # a click shows the machine's score, band, reasons, action and why
    target = "banka/A-UTR-1"
    click_machine(page, target)
    popup = page.locator(f'.machine-popup[data-machine="{target}"]')
    popup.wait_for(state="visible", timeout=10_000)
    score = expected[target]
    assert score.action is not None
    assert popup.locator(".action-name").inner_text() == ACTION_LABELS[score.action]
    text = popup.inner_text()
    assert "Oudegracht 1, Utrecht" in text
    assert f"{score.score:.3f}" in text
    assert "Probability" in text
    assert (score.action_reasons or [{}])[0]["text"] in text
    assert "Expected loss" in text  # a bank sees its own money figures
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map-bank-a.png"))
    seen.assert_clean(key)
    page.context.close()


@pytest.mark.parametrize(
    ("who", "machines", "attacks", "target"),
    [("operator", 6, 2, "bankb/B-AMS-1"), ("police", 3, 2, "bankb/B-UTR-2")],
)
def test_patrol_positions_for_police_and_operators(
    browser: Any, site: Site, who: str, machines: int, attacks: int, target: str
) -> None:
    key = site.keys[who]
    page = new_page(browser)
    seen = watch(page)
    page.goto(f"{site.base_url}/map#key={key}")
    page.wait_for_selector("body[data-map-ready=true]", state="attached", timeout=60_000)
    counts = page.evaluate("window.__mapCounts")
    assert counts["machines"] == machines  # police: Utrecht's three, of both banks
    assert counts["incidents"] == attacks
    assert counts["patrol"] >= 1
    assert page.locator(".patrol-icon").count() == counts["patrol"]
    click_machine(page, target)
    popup = page.locator(f'.machine-popup[data-machine="{target}"]')
    popup.wait_for(state="visible", timeout=10_000)
    assert ("Expected loss" in popup.inner_text()) == (who == "operator")  # police: no money
    seen.assert_clean(key)
    page.context.close()


def test_attack_report_form_files_and_prints_the_report(browser: Any, site: Site) -> None:
    from playwright.sync_api import expect

    key = site.keys["bank_a"]
    page = new_page(browser)
    seen = watch(page)
    page.goto(f"{site.base_url}/report#key={key}")
    page.wait_for_selector("body[data-report-ready=true]", state="attached", timeout=60_000)
    local_now = datetime.now(ZoneInfo(ZONE))
    default = datetime.fromisoformat(page.input_value("#occurred_at")).replace(
        tzinfo=ZoneInfo(ZONE)
    )
    assert abs(default - local_now) < timedelta(minutes=2)  # "now", in local time

    # pick the machine on the map
    [x, y] = page.evaluate(
        """id => {
          const map = window.__pickMap;
          let found = null;
          map.eachLayer(l => { if (l.feature && l.feature.properties.id === id) found = l; });
          const p = map.latLngToContainerPoint(found.getLatLng());
          const box = map.getContainer().getBoundingClientRect();
          return [box.left + p.x, box.top + p.y];
        }""",
        "banka/A-ZWO-1",
    )
    page.mouse.click(x, y)
    expect(page.locator("#machine")).to_have_value("banka/A-ZWO-1")
    expect(page.locator("#machine-info")).to_contain_text("Melkmarkt 5, Zwolle")

    # a time in the future: the server's 422 shows next to the time field
    future = (local_now + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    page.fill("#occurred_at", future)
    page.click("#send")
    page.locator("#occurred_at-error").wait_for(state="visible")
    assert "future" in page.inner_text("#occurred_at-error")
    assert page.get_attribute("#occurred_at", "aria-invalid") == "true"
    # another bank's machine answers as if it did not exist
    page.fill("#machine", "bankb/B-UTR-2")
    page.fill("#occurred_at", (local_now - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#send")
    page.locator("#machine-error").wait_for(state="visible")
    assert "No such machine" in page.inner_text("#machine-error")

    when = (local_now - timedelta(minutes=25)).replace(second=0, microsecond=0)
    page.fill("#machine", "BANKA/a-utr-1")  # typed loosely: matched against the list
    page.fill("#occurred_at", when.strftime("%Y-%m-%dT%H:%M"))
    page.select_option("#method", "ram_raid")
    page.select_option("#outcome", "attempt_failed")
    page.fill("#vehicle", "dark grey Audi RS6, German plates")
    page.fill("#direction", "north towards the A2")
    page.fill("#notes", "three men in dark clothing; loud bang at the front")
    page.fill("#reporter", "J. de Vries, 030 123 4567")
    page.click("#send")
    page.locator("#printable").wait_for(state="visible", timeout=30_000)

    with site.sessions() as s:
        incident = s.scalars(
            select(Incident).where(Incident.feed == "reports").order_by(Incident.id.desc())
        ).first()
        assert incident is not None
        alert = s.scalars(select(Alert).order_by(Alert.id.desc())).first()
        atm = s.get(Atm, incident.atm_pk)
    label = f"{incident.feed}/{incident.incident_id}"
    assert atm is not None
    assert atm.atm_id == "A-UTR-1"
    assert incident.method == "ram_raid"
    assert incident.outcome == "attempt_failed"
    assert "Audi RS6" in (incident.escape or "")
    assert "J. de Vries" in (incident.notes or "")
    assert incident.occurred_from == when.astimezone(UTC)
    report = {
        name: page.inner_text(f"#r-{name}")
        for name in (
            "incident",
            "alert",
            "machine",
            "address",
            "time",
            "method",
            "outcome",
            "vehicle",
            "direction",
            "notes",
            "reporter",
        )
    }
    assert report["incident"] == label
    assert label in page.inner_text("#report-title")
    alert_id = page.evaluate("window.__lastReport.alert_id")
    if alert_id is None:
        assert report["alert"].startswith("no alert raised")
    else:
        assert alert is not None
        assert alert.id == alert_id
        assert report["alert"].startswith(f"#{alert_id} raised")
    assert report["machine"] == "banka / A-UTR-1"
    assert report["address"] == "Oudegracht 1, Utrecht"
    # in the machine's zone (not the server's), with the zone named, and UTC beside it
    assert report["time"].startswith(when.strftime("%Y-%m-%d %H:%M "))
    assert f"(local time, {ZONE}; " in report["time"]
    assert when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") in report["time"]
    assert report["method"] == "Ram raid"
    assert report["outcome"] == "Attempt failed"
    assert report["vehicle"] == "dark grey Audi RS6, German plates"
    assert report["direction"] == "north towards the A2"
    assert report["notes"] == "three men in dark clothing; loud bang at the front"
    assert re.match(r"J\. de Vries, 030 123 4567 — bank banka, API key \w+", report["reporter"])

    # printed: the facts only
    page.emulate_media(media="print")
    assert not page.locator("header.topbar").is_visible()
    assert not page.locator("#print").is_visible()
    assert page.locator(".police-report").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-bank-a.png"), full_page=True)
    # Chromium logs the 422 and the 404 provoked above; nothing else
    seen.assert_clean(key, expected_statuses=(422, 404))
    page.context.close()
