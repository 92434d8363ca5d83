"""End to end in a real browser: an editor proposes a change from the edit page, an admin
reads its diff, comments on a line, approves and merges it; the API serves the merge.

A real ``promptrev serve`` runs on loopback; headless Chromium is driven as in
``test_browser.py``. Screenshots go to ``test-artifacts/review-*.png``. Skipped when
Chromium, chromedriver or Selenium is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ADMIN_PASSWORD, LiveServer, start_server
from tests.screens import save_screens
from tests.test_browser import PNG_MAGIC, Api, _shot, browser, selenium_parts  # noqa: F401

OLD = "You are a precise summarizer."
NEW = "You are a terse summarizer."


@pytest.fixture
def server(browser, tmp_path: Path) -> Iterator[LiveServer]:  # noqa: F811
    live = start_server(tmp_path)
    try:
        yield live
    finally:
        live.stop()


def test_propose_review_approve_and_merge(browser: Any, selenium_parts: dict[str, Any],  # noqa: F811
                                          server: LiveServer) -> None:
    by, ec = selenium_parts["By"], selenium_parts["ec"]
    wait = selenium_parts["WebDriverWait"](browser, 10)
    server.cli("user", "add", "ed", "--role", "editor", "--password", "ed-password")
    api = Api(server)
    original = api.resolve("summarize")["text"]
    assert OLD in original

    def css(selector: str) -> Any:
        return wait.until(ec.presence_of_element_located((by.CSS_SELECTOR, selector)))

    def login(name: str, password: str) -> None:
        browser.get(f"{server.url}/login")
        css("#name").send_keys(name)
        css("#password").send_keys(password)
        css("#login").click()
        wait.until(ec.text_to_be_present_in_element((by.ID, "account"), name))

    # The editor proposes an edit instead of saving it.
    login("ed", "ed-password")
    browser.get(f"{server.url}/edit?name=summarize")
    text = css("#edit-text")
    text.clear()
    text.send_keys(original.replace(OLD, NEW))
    css("#edit-message").send_keys("Terse summaries")
    css("#propose").click()
    wait.until(ec.url_contains("/reviews/1"))
    assert "opened change request #1" in css("p.flash").text
    assert css("#review-status").text == "open"
    assert api.resolve("summarize")["version"] == 1  # main is unchanged
    assert browser.find_elements(by.ID, "approve") == []  # authors do not approve
    marks = {m.text for m in css("#side-by-side").find_elements(by.CSS_SELECTOR, "mark")}
    assert {"precise", "terse"} <= marks, marks
    browser.find_element(by.CSS_SELECTOR, "header button.link").click()  # log out

    # The admin comments on a line, tries to merge too early, approves, merges.
    login("admin", ADMIN_PASSWORD)
    browser.get(f"{server.url}/reviews/")
    css('#reviews a[href$="/reviews/1"]').click()
    form = css("form.line-comment-form")
    form.find_element(by.NAME, "line").send_keys("3")
    form.find_element(by.NAME, "body").send_keys("Is terse too short?")
    form.find_element(by.CSS_SELECTOR, "button").click()
    comment = css(".line-comment")
    assert "admin on line 3" in comment.text and "Is terse too short?" in comment.text
    save_screens(browser, "review")
    shot = _shot(browser, "review-page.png", css("#side-by-side"))
    assert shot.read_bytes().startswith(PNG_MAGIC)
    assert not css("#merge").is_enabled()  # too early: it says what is missing
    assert css("#merge-blocked").text == "needs 1 more approval"
    css("#approve").click()
    wait.until(ec.text_to_be_present_in_element((by.ID, "review-state"), "admin"))
    assert css("#merge").is_enabled() and browser.find_elements(by.ID, "merge-blocked") == []
    css("#merge").click()
    wait.until(ec.text_to_be_present_in_element((by.CSS_SELECTOR, "p.flash"), "merged #1"))
    assert css("#review-status").text == "merged"
    _shot(browser, "review-merged.png")

    served = api.resolve("summarize")
    assert served["version"] == 2 and NEW in served["text"] and served["author"] == "ed"
