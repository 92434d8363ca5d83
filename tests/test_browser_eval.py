"""End to end in a real browser: start an A/B evaluation from the form, watch it finish,
read the charts and the verdict, filter to the cases where the variants disagree.

A real ``promptrev serve`` (gunicorn, two workers) runs on loopback with the tiny local
model configured; headless Chromium is driven as in ``test_browser.py``. Screenshots go
to ``test-artifacts/eval-*.png``. Skipped when Chromium, chromedriver or Selenium is
missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ADMIN_PASSWORD, LiveServer, start_server
from tests.screens import save_screens
from tests.test_browser import PNG_MAGIC, _shot, browser, selenium_parts  # noqa: F401

RUN_WAIT_S = 90
SPEC = """\
name: browser, zero-shot vs few-shot
dataset: sentiment@1
model: tiny
params: {max_tokens: 3}
limit: 8
variants:
  - {name: zero-shot, prompt: sentiment/zero-shot@1}
  - {name: few-shot, prompt: sentiment/few-shot@1}
scorers: [exact, latency]
baseline: zero-shot
prices: {tiny: {input_per_1k: 0.5, output_per_1k: 1.5}}
"""


@pytest.fixture
def server(browser, tmp_path: Path, tiny) -> Iterator[LiveServer]:  # noqa: F811
    # ``browser`` first: a missing Chromium/driver/Selenium skips before anything starts.
    models = tmp_path / "models.yaml"
    models.write_text(f"tiny:\n  backend: hf\n  path: {tiny.model}\n")
    live = start_server(tmp_path, env={"PROMPTREV_MODELS": str(models)})
    try:
        yield live
    finally:
        live.stop()


def test_start_an_evaluation_and_read_its_page(browser: Any,  # noqa: F811
                                               selenium_parts: dict[str, Any],  # noqa: F811
                                               server: LiveServer) -> None:
    by, ec = selenium_parts["By"], selenium_parts["ec"]
    from selenium.common.exceptions import StaleElementReferenceException

    wait = selenium_parts["WebDriverWait"](browser, 10)
    shots: list[Path] = []

    def css(selector: str) -> Any:
        return wait.until(ec.presence_of_element_located((by.CSS_SELECTOR, selector)))

    # The form asks for a login first and comes back to it.
    browser.get(f"{server.url}/eval/new")
    wait.until(ec.url_contains("/login"))
    css("#name").send_keys("admin")
    css("#password").send_keys(ADMIN_PASSWORD)
    css("#login").click()
    wait.until(ec.url_contains("/eval/new"))
    spec = css("#spec")
    assert "sentiment/few-shot" in spec.get_attribute("value")  # the prefilled example
    spec.clear()
    spec.send_keys(SPEC)
    shots.append(_shot(browser, "eval-new.png", spec))
    css("#start").click()

    # The run page reloads itself (no JavaScript) until the background run is done.
    wait.until(lambda driver: "/eval/new" not in driver.current_url
               or driver.find_elements(by.ID, "spec-error"))
    assert not browser.find_elements(by.ID, "spec-error"), css("#spec-error").text
    assert ec.url_matches(r"/eval/\d+$")(browser), browser.current_url
    run_url = browser.current_url
    assert "started evaluation run" in css("p.flash").text
    selenium_parts["WebDriverWait"](
        browser, RUN_WAIT_S, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda driver: driver.find_element(by.ID, "status").text in ("done", "failed"))
    assert css("#status").text == "done", css("#run-error").text

    verdict = [li.text for li in css("#verdict").find_elements(by.TAG_NAME, "li")]
    assert any("zero-shot and few-shot on exact" in line for line in verdict), verdict
    charts = browser.find_elements(by.CSS_SELECTOR, "svg.interval-chart")
    assert [c.get_attribute("data-metric") for c in charts] == ["exact", "latency"]
    for chart in charts:
        rows = chart.find_elements(by.CSS_SELECTOR, "g.row")
        assert [r.get_attribute("data-variant") for r in rows] == ["zero-shot", "few-shot"]
        assert len(chart.find_elements(by.CSS_SELECTOR, "circle.mean")) == 2
        assert chart.size["width"] > 300 and chart.size["height"] > 50
    assert "Holm" in css("#metric-exact .correction").text or "none" in css(
        "#metric-exact .correction").text
    per_1k = [td.text for td in css("#costs").find_elements(by.CSS_SELECTOR, "td.per-1k")]
    assert len(per_1k) == 2 and all(float(x) > 0 for x in per_1k), per_1k
    all_rows = css("#cases").find_elements(by.CSS_SELECTOR, "tbody tr[data-case]")
    assert len(all_rows) == 8
    save_screens(browser, "eval-run")
    # At phone width each case is a card: its input across the whole row, the variants'
    # outputs side by side below it, each named (the column headings are hidden there).
    browser.set_window_size(420, 900)
    card = all_rows[0]
    case = card.find_element(by.CSS_SELECTOR, "td.case")
    results = card.find_elements(by.CSS_SELECTOR, "td.result")
    assert case.size["width"] > 0.85 * card.size["width"], (case.size, card.size)
    assert all(r.location["y"] >= case.location["y"] + case.size["height"] - 1
               for r in results)
    assert results[0].location["y"] == results[1].location["y"]
    assert results[0].location["x"] < results[1].location["x"]
    named = browser.execute_script(
        "return getComputedStyle(arguments[0], '::before').content", results[0])
    assert named == '"zero-shot"', named
    browser.set_window_size(1400, 900)
    shots.append(_shot(browser, "eval-run.png", css("#verdict-section")))
    shots.append(_shot(browser, "eval-charts.png", css("#metric-latency")))

    # Only the cases where the two variants answered differently.
    css("#filter-disagree").click()
    wait.until(ec.url_contains("disagree=1"))
    assert css("#filter-all")
    rows = css("#cases").find_elements(by.CSS_SELECTOR, "tbody tr[data-case]")
    assert 0 < len(rows) <= 8
    for row in rows:
        outputs = [p.text.strip() for p in row.find_elements(by.CSS_SELECTOR, "pre.output")]
        assert len(outputs) == 2 and outputs[0] != outputs[1], outputs
        assert "disagree" in row.get_attribute("class").split()
    shots.append(_shot(browser, "eval-disagree.png", css("#cases")))

    # The list shows the finished run.
    browser.get(f"{server.url}/eval/")
    row = css("#runs tbody tr")
    assert "browser, zero-shot vs few-shot" in row.text and "done" in row.text
    assert row.find_element(by.CSS_SELECTOR, "a").get_attribute("href") == run_url
    shots.append(_shot(browser, "eval-list.png"))

    for path in shots:
        assert path.is_file() and path.stat().st_size > 1000, path
        assert path.read_bytes()[:8] == PNG_MAGIC, path
