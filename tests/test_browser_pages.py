"""Review pages worth living in (issue 19), in a real browser: folded context, one palette,
and screenshots of the main pages at desktop and phone widths in ``test-artifacts/``.

Skipped when Chromium, chromedriver or Selenium is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer, start_server
from tests.screens import save_screens
from tests.test_browser import Api, browser, selenium_parts  # noqa: F401
from tests.test_browser_flows import Page

RULES = "\n".join(f"Rule {i}: answer in the way described by rule number {i}."
                  for i in range(1, 81))
LONG = f"""---
name: long
description: A long system prompt.
inputs:
  question:
    type: string
sample:
  question: What is a prompt registry?
---
system:
You are a helpful assistant.
{RULES}

user:
{{{{ question }}}}
"""
ONE_WORD = LONG.replace("rule number 40.", "rule number forty.")
ADDED = ONE_WORD.replace("Rule 60:", "Never guess.\nRule 60:").replace(
    "  question:\n    type: string\n",
    "  question:\n    type: string\n  tone:\n    type: string\n    default: warm\n"
    "    description: How the answers should sound to the person reading them.\n")


@pytest.fixture
def server(browser, tmp_path: Path) -> Iterator[LiveServer]:  # noqa: F811
    live = start_server(tmp_path)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def page(browser: Any, selenium_parts: dict[str, Any], server: LiveServer) -> Page:  # noqa: F811
    browser.set_window_size(1400, 900)
    return Page(browser, selenium_parts, server)


def _prepare(server: LiveServer) -> Api:
    """``long`` v1 (production), v2 (one word changed), v3 (a line and an input added)."""
    api = Api(server)
    for base, text in ((None, LONG), (1, ONE_WORD), (2, ADDED)):
        headers = {"If-Match": f'"{base}"'} if base else {}
        status, body = api.call("PUT", "/api/v1/artifact", {"name": "long"},
                                {"text": text, "message": f"long after v{base}"},
                                headers=headers)
        assert status in (200, 201), body
    status, body = api.call("PUT", "/api/v1/labels", {"name": "long", "label": "production"},
                            {"version": 1})
    assert status == 200, body
    return api


def _rgb(page: Page, selector: str) -> tuple[int, int, int]:
    colour = page.browser.execute_script(
        "return getComputedStyle(arguments[0]).backgroundColor", page.css(selector))
    red, green, blue = (int(x) for x in re.findall(r"\d+", colour)[:3])
    return red, green, blue


def _greenish(rgb: tuple[int, int, int]) -> bool:
    red, green, blue = rgb
    return green > red + 8 and green > blue + 8


def _reddish(rgb: tuple[int, int, int]) -> bool:
    red, green, blue = rgb
    return red > green + 8 and red > blue + 8


def test_one_word_change_keeps_confirm_in_view_and_folds_the_rest(page: Page,
                                                                  server: LiveServer) -> None:
    _prepare(server)
    page.login()
    page.open("/label?name=long&label=production&to=2")
    confirm = page.css("#confirm")
    assert confirm.location["y"] < 900, confirm.location
    folds = page.all("#side-by-side details.fold")
    assert len(folds) == 2 and not any(f.get_attribute("open") for f in folds)
    assert re.fullmatch(r"⋯ \d+ unchanged lines \(\d+–\d+\)", folds[0].text), folds[0].text
    hidden = folds[1].find_element(page.by.CSS_SELECTOR, "tr.equal td.r")
    assert not hidden.is_displayed()
    folds[1].find_element(page.by.TAG_NAME, "summary").click()
    assert folds[1].get_attribute("open") is not None and hidden.is_displayed()
    assert "Rule" in hidden.text
    changed = page.all("#side-by-side tr.replace")
    assert len(changed) == 1 and changed[0].find_element(
        page.by.CSS_SELECTOR, "mark.add").text == "forty"
    save_screens(page.browser, "confirm-label")


def test_diff_uses_one_palette_and_readable_contract(page: Page, server: LiveServer) -> None:
    _prepare(server)
    page.login()
    page.open("/diff?name=long&a=1&b=3")
    # Whole added lines and added words: both green (the words darker); removed: both red.
    line, word = _rgb(page, "#side-by-side tr.insert td.r"), _rgb(page, "#side-by-side mark.add")
    assert _greenish(line) and _greenish(word) and sum(word) < sum(line), (line, word)
    replaced = _rgb(page, "#side-by-side tr.replace td.r")
    assert _greenish(replaced), replaced
    assert _reddish(_rgb(page, "#side-by-side tr.replace td.l"))
    assert _reddish(_rgb(page, "#side-by-side mark.del"))
    # The rendered comparison marks the changed word the same way.
    assert page.css("#rendered tr.replace mark.add").text == "forty"
    assert _greenish(_rgb(page, "#rendered tr.replace td.r"))
    # The contract change reads as a table, with its verdict.
    change = page.css('#contract-changes li[data-path="inputs.tone"]')
    assert "Not breaking" in change.text and "default" in change.text
    cells = {row.find_element(page.by.TAG_NAME, "th").text: row.text
             for row in change.find_elements(page.by.CSS_SELECTOR, "table.contract tbody tr")}
    assert cells["type"] == "type string" and '"warm"' in cells["default"]
    assert "How the answers should sound" in cells["description"]


def test_screenshots_of_the_pages(page: Page, server: LiveServer) -> None:
    _prepare(server)
    page.login()
    shots = []
    for name, path in (("list", "/"), ("artifact", "/a/long"),
                       ("diff", "/diff?name=long&a=1&b=3"), ("edit", "/edit?name=long"),
                       ("audit", "/audit"), ("eval-list", "/eval/"),
                       ("eval-new", "/eval/new")):
        page.open(path)
        page.css("main h1")
        shots += save_screens(page.browser, name)
    for path in shots:
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG", path
