"""End to end in a real browser: log in, review a diff, roll ``production`` back, audit it.

A real ``promptrev serve`` (gunicorn) runs on loopback; headless Chromium is driven through
Debian's chromedriver with Selenium. Screenshots are kept in ``test-artifacts/``.
Skipped when Chromium, chromedriver or Selenium is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ADMIN_PASSWORD, ROOT, LiveServer, start_server

# Selenium Manager must never try the network: the driver and browser are given explicitly.
os.environ["SE_OFFLINE"] = "true"

ARTIFACTS = ROOT / "test-artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WAIT_S = 10

# The system line of prompts/summarize.prompty, and how v2 and v3 change it word by word.
TAIL = " summary of the text the user provides."
ORIGINAL_LINE = "You are a precise summarizer. Write a faithful" + TAIL
V2_LINE = "You are a careful summarizer. Write a faithful" + TAIL
V3_LINE = "You are a careful summarizer. Write a neutral" + TAIL


def _browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver, or skip the test."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        pytest.skip("browser test needs Chromium (apt-get install chromium); not on PATH")
    if driver is None:
        pytest.skip("browser test needs chromedriver (apt-get install chromium-driver); "
                    "not on PATH")
    return chromium, driver


def _selenium() -> dict[str, Any]:
    """Selenium's pieces, imported only after SE_OFFLINE is set; skip when not installed."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError as exc:
        pytest.skip(f"browser test needs selenium (pip install selenium): {exc}")
    return {"webdriver": webdriver, "Service": Service, "By": By, "ec": ec,
            "WebDriverWait": WebDriverWait}


@pytest.fixture
def selenium_parts() -> dict[str, Any]:
    return _selenium()


@pytest.fixture
def browser(selenium_parts: dict[str, Any]) -> Iterator[Any]:
    chromium, driver_path = _browser_paths()
    webdriver = selenium_parts["webdriver"]
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        options.add_argument(arg)
    service = selenium_parts["Service"](executable_path=driver_path)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path)
    try:
        yield live
    finally:
        live.stop()


class Api:
    """A tiny JSON client for the live server (stdlib only), with an admin token."""

    def __init__(self, server: LiveServer) -> None:
        self.url = server.url
        self.token = server.token()

    def call(self, method: str, path: str, params: dict[str, str], body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}?{urllib.parse.urlencode(params)}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def resolve(self, ref: str) -> dict[str, Any]:
        status, body = self.call("GET", "/api/v1/artifact", {"ref": ref})
        assert status == 200, body
        return body


def _prepare(server: LiveServer) -> Api:
    """Through the JSON API: v2 and v3 of ``summarize``, ``production`` on v3."""
    api = Api(server)
    v1 = api.resolve("summarize")
    assert v1["version"] == 1 and ORIGINAL_LINE in v1["text"]
    v2_text = v1["text"].replace(ORIGINAL_LINE, V2_LINE)
    v3_text = v2_text.replace(V2_LINE, V3_LINE)
    for base, text, message in ((1, v2_text, "careful, not precise"),
                                (2, v3_text, "neutral summaries")):
        status, body = api.call("PUT", "/api/v1/artifact", {"name": "summarize"},
                                {"text": text, "message": message},
                                headers={"If-Match": f'"{base}"'})
        assert status == 200, body
        assert body["version"] == base + 1
    status, body = api.call("PUT", "/api/v1/labels",
                            {"name": "summarize", "label": "production"}, {"version": 3})
    assert status == 200, body
    assert api.resolve("summarize@production")["version"] == 3
    return api


def _shot(driver: Any, name: str, focus: Any = None) -> Path:
    """Save a screenshot of the window into test-artifacts/, ``focus`` scrolled into view."""
    ARTIFACTS.mkdir(exist_ok=True)
    if focus is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", focus)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    return path


def test_review_diff_and_roll_back_production(browser: Any, selenium_parts: dict[str, Any],
                                              server: LiveServer) -> None:
    # ``browser`` comes first so a missing Chromium/driver/Selenium skips before the server.
    by, ec = selenium_parts["By"], selenium_parts["ec"]
    wait = selenium_parts["WebDriverWait"](browser, WAIT_S)
    api = _prepare(server)
    shots: list[Path] = []

    def css(selector: str) -> Any:
        return wait.until(ec.presence_of_element_located((by.CSS_SELECTOR, selector)))

    def production_chip() -> str:
        return css('#labels a[data-label="production"]').text

    # Log in through the form; the artifact page is where the login sends us back.
    browser.get(f"{server.url}/a/summarize")
    wait.until(ec.url_contains("/login"))
    css("#name").send_keys("admin")
    css("#password").send_keys(ADMIN_PASSWORD)
    css("#login").click()
    wait.until(ec.text_to_be_present_in_element((by.ID, "account"), "admin"))
    assert browser.current_url.rstrip("?").endswith("/a/summarize")
    assert "admin (admin)" in css("#account").text

    # History: three versions, newest first, production on v3.
    rows = css("#history").find_elements(by.CSS_SELECTOR, "tbody tr")
    assert [r.get_attribute("data-version") for r in rows] == ["3", "2", "1"]
    assert "version 3 of 3" in css("h1").text
    assert production_chip() == "production → v3"
    row_labels = {r.get_attribute("data-version"): r.find_elements(by.CSS_SELECTOR,
                                                                   "span.label")
                  for r in rows}
    assert [s.text for s in row_labels["3"]] == ["production"]
    assert row_labels["2"] == [] and row_labels["1"] == []
    shots.append(_shot(browser, "history.png", css("#history")))

    # Compare v1 (A) with v3 (B) using the radio buttons.
    css('tr[data-version="1"] input[name="a"]').click()
    css('tr[data-version="3"] input[name="b"]').click()
    assert css('tr[data-version="1"] input[name="a"]').is_selected()
    css("#compare-button").click()
    wait.until(ec.url_contains("/diff"))
    table = css("#side-by-side")
    assert css("h1").text == "summarize: v1 → v3"
    marks = {m.text for m in table.find_elements(by.CSS_SELECTOR, "mark")}
    assert {"precise", "faithful"} <= marks, marks
    assert {"careful", "neutral"} <= marks, marks
    changed = table.find_elements(by.CSS_SELECTOR, "tbody tr.replace")
    assert len(changed) == 1, [r.text for r in changed]
    assert ORIGINAL_LINE in changed[0].find_element(by.CSS_SELECTOR, "td.l").text
    assert V3_LINE in changed[0].find_element(by.CSS_SELECTOR, "td.r").text
    rendered = css("#rendered")
    cells = rendered.find_elements(by.CSS_SELECTOR, "tbody tr.replace td")
    assert len(cells) == 2, rendered.text
    assert ORIGINAL_LINE in cells[0].text and V3_LINE in cells[1].text
    assert "system" in cells[0].find_element(by.CSS_SELECTOR, ".role").text
    shots.append(_shot(browser, "diff.png", changed[0]))
    shots.append(_shot(browser, "diff-rendered.png", rendered))

    # Back to the artifact page; production → here on the v2 row.
    browser.back()
    wait.until(ec.presence_of_element_located(
        (by.CSS_SELECTOR, 'tr[data-version="2"] a[data-rollback="production"]'))).click()
    wait.until(ec.url_contains("/rollback"))
    what = css("#what-changes").text
    assert css("h1").text == "Roll back summarize@production to v2"
    assert "v3 → v2" in what, what
    assert "production" in what and "No content changes" in what
    confirm_marks = {m.text for m in css("#side-by-side").find_elements(
        by.CSS_SELECTOR, "mark")}
    assert {"neutral", "faithful"} <= confirm_marks, confirm_marks
    css('input[name="message"]').send_keys("v3 summaries got vague")
    shots.append(_shot(browser, "confirm.png", css("#what-changes")))
    css("#confirm").click()

    # The artifact page again: production on v2, and the flash says so.
    wait.until(ec.text_to_be_present_in_element((by.CSS_SELECTOR, "p.flash"),
                                                "rolled back summarize@production"))
    assert css("p.flash").text == "rolled back summarize@production to version 2"
    assert production_chip() == "production → v2"
    assert [s.text for s in css('tr[data-version="2"]').find_elements(
        by.CSS_SELECTOR, "span.label")] == ["production"]
    assert css('tr[data-version="3"]').find_elements(by.CSS_SELECTOR, "span.label") == []
    shots.append(_shot(browser, "after-rollback.png", css("#history")))

    # The API serves v2 for summarize@production now.
    served = api.resolve("summarize@production")
    assert served["version"] == 2 and V2_LINE in served["text"]

    # The audit page lists the rollback, by admin, with the move and the message.
    browser.get(f"{server.url}/audit")
    entry = css("#audit tbody tr")  # newest first
    assert "action-rollback" in entry.get_attribute("class").split()
    cells = entry.find_elements(by.CSS_SELECTOR, "td")
    assert cells[1].text == "admin"
    assert cells[2].text == "rollback"
    assert "summarize: production v3 → v2" in cells[3].text
    assert cells[4].text == "rollback summarize@production to 2: v3 summaries got vague"
    shots.append(_shot(browser, "audit.png"))

    for path in shots:
        assert path.is_file() and path.stat().st_size > 1000, path
        assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert [p.name for p in shots] == ["history.png", "diff.png", "diff-rendered.png",
                                       "confirm.png", "after-rollback.png", "audit.png"]
