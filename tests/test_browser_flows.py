"""Flows that used to lose work or mislead (issue 19), end to end in a real browser.

A real ``promptrev serve`` runs on loopback and headless Chromium is driven as in
``test_browser.py``; another user's concurrent change comes through the JSON API.
Skipped when Chromium, chromedriver or Selenium is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ADMIN_PASSWORD, LiveServer, start_server
from tests.screens import save_screens
from tests.test_browser import Api, browser, selenium_parts  # noqa: F401

PRECISE = "You are a precise summarizer."
FAR_LINE = "Summarize the following text"  # eight lines below PRECISE


@pytest.fixture
def server(browser, tmp_path: Path) -> Iterator[LiveServer]:  # noqa: F811
    live = start_server(tmp_path)
    try:
        yield live
    finally:
        live.stop()


class Page:
    """The browser, with the waits and lookups these tests repeat."""

    def __init__(self, browser: Any, parts: dict[str, Any], server: LiveServer) -> None:  # noqa: F811
        self.browser, self.url = browser, server.url
        self.by, self.ec = parts["By"], parts["ec"]
        self.wait = parts["WebDriverWait"](browser, 10)

    def css(self, selector: str) -> Any:
        return self.wait.until(self.ec.presence_of_element_located(
            (self.by.CSS_SELECTOR, selector)))

    def all(self, selector: str) -> list[Any]:
        return self.browser.find_elements(self.by.CSS_SELECTOR, selector)

    def open(self, path: str) -> None:
        self.browser.get(self.url + path)

    def login(self, name: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        self.open("/login")
        self.css("#name").send_keys(name)
        self.css("#password").send_keys(password)
        self.css("#login").click()
        self.wait.until(self.ec.text_to_be_present_in_element((self.by.ID, "account"), name))

    def click_and_wait(self, selector: str, until: Callable[[], bool]) -> None:
        """Click, then wait for the page that answers (the old one goes stale)."""
        # The old document is marked; the answer is a new document without the mark.
        # (Selenium's staleness_of asks Chrome about the old node, which can fail with
        # "Node ... does not belong to the document" while the page is swapped.)
        self.browser.execute_script("document.documentElement.dataset.leaving = '1';")
        self.css(selector).click()
        self.wait.until(self._new_document_loaded)
        self.wait.until(lambda _driver: until())

    @staticmethod
    def _new_document_loaded(driver: Any) -> bool:
        try:
            return bool(driver.execute_script(
                "return document.readyState === 'complete'"
                " && !document.documentElement.dataset.leaving;"))
        except Exception as exc:  # noqa: BLE001 - navigation in progress; ask again
            if "WebDriverException" not in {c.__name__ for c in type(exc).__mro__}:
                raise
            return False

    def set_text(self, selector: str, text: str) -> None:
        """Put ``text`` in a field as typing it would (exactly, however long)."""
        self.browser.execute_script("arguments[0].value = arguments[1];", self.css(selector),
                                    text)

    def field(self, selector: str) -> str:
        return self.css(selector).get_property("value")


@pytest.fixture
def page(browser: Any, selenium_parts: dict[str, Any], server: LiveServer) -> Page:  # noqa: F811
    return Page(browser, selenium_parts, server)


def _save(api: Api, text: str, base: int, message: str) -> None:
    status, body = api.call("PUT", "/api/v1/artifact", {"name": "summarize"},
                            {"text": text, "message": message},
                            headers={"If-Match": f'"{base}"'})
    assert status == 200 and body["version"] == base + 1, body


def _begin_edit(page: Page, server: LiveServer) -> tuple[Api, str]:
    """v2 on main, the admin's browser opens the editor on it; returns the API and v2."""
    api = Api(server)
    v1 = api.resolve("summarize")["text"]
    assert PRECISE in v1 and FAR_LINE in v1
    _save(api, v1.replace("faithful summary", "faithful, short summary"), 1, "shorter")
    page.login()
    page.open("/edit?name=summarize")
    assert page.field("input[name=base]") == "2"
    return api, page.field("#edit-text")


def test_edits_to_other_lines_merge_and_are_confirmed(page: Page, server: LiveServer) -> None:
    api, v2 = _begin_edit(page, server)
    # Meanwhile someone else saves v3; then the browser saves its edit of another line.
    _save(api, v2.replace("precise", "meticulous"), 2, "meticulous")
    page.set_text("#edit-text", v2.replace(FAR_LINE, "Condense the following text"))
    page.css("#edit-message").send_keys("condense")
    page.click_and_wait("#save", lambda: page.all("#merged"))

    # The merged result is shown, not saved: both edits, and what the save changes in v3.
    assert api.resolve("summarize")["version"] == 3
    merged = page.field("#edit-text")
    assert "meticulous" in merged and "Condense the following" in merged
    assert page.field("input[name=base]") == "3"
    assert page.css("#save").text == "Save merged version"
    assert page.all("#overwrite") == []
    changed = {m.text for m in page.css("#merged-diff").find_elements(page.by.CSS_SELECTOR,
                                                                      "mark")}
    assert changed == {"Summarize", "Condense"}, changed

    # Another save before the confirmation is caught again and merged again.
    _save(api, api.resolve("summarize")["text"].replace("minor details", "small details"),
          3, "small")
    page.click_and_wait("#save", lambda: page.all("#merged"))
    assert api.resolve("summarize")["version"] == 4
    assert page.field("input[name=base]") == "4"
    page.click_and_wait("#save", lambda: page.all("p.flash"))
    assert "saved summarize as version 5" in page.css("p.flash").text
    saved = api.resolve("summarize")
    assert saved["version"] == 5 and saved["message"] == "condense"
    for word in ("short summary", "meticulous", "Condense the following", "small details"):
        assert word in saved["text"], word


def test_edits_to_the_same_line_show_both_and_overwrite_only_when_asked(
        page: Page, server: LiveServer) -> None:
    api, v2 = _begin_edit(page, server)
    _save(api, v2.replace("precise", "meticulous"), 2, "meticulous")
    page.set_text("#edit-text", v2.replace("precise", "thorough").replace(
        FAR_LINE, "Condense the following text"))
    page.css("#edit-message").send_keys("thorough")
    page.click_and_wait("#save", lambda: page.all("#conflict"))

    # Both sides of the line are shown; nothing was saved.
    lines = page.css("#conflict-lines")
    marks = {m.text for m in lines.find_elements(page.by.CSS_SELECTOR, "mark")}
    assert {"meticulous", "thorough"} <= marks, marks
    changed = [row.text for row in lines.find_elements(page.by.CSS_SELECTOR, "tbody tr")
               if row.get_attribute("class") not in ("equal", "fold")]
    assert len(changed) == 1 and "summarizer" in changed[0], changed  # only that line
    assert "meticulous" in page.css("#their-change").text
    save_screens(page.browser, "conflict")
    assert api.resolve("summarize")["version"] == 3

    # Saving again, by the button or by Enter in a field, never discards their word.
    assert page.css("#save").text == "Save to main"
    page.click_and_wait("#save", lambda: page.all("#conflict"))
    page.css("#edit-message").send_keys("\n")
    page.wait.until(lambda _d: page.all("#conflict-lines"))
    served = api.resolve("summarize")
    assert served["version"] == 3 and "meticulous" in served["text"]

    # Only the named choice replaces it.
    assert page.css("#overwrite").text == "Overwrite v3 with my version"
    page.click_and_wait("#overwrite", lambda: page.all("p.flash"))
    served = api.resolve("summarize")
    assert served["version"] == 4 and "thorough" in served["text"]
    assert "meticulous" not in served["text"] and "Condense the following" in served["text"]


def test_new_token_shown_once_and_reload_makes_no_other(page: Page, server: LiveServer) -> None:
    page.login()
    page.open("/account")
    page.css("input[name=label]").send_keys("my app")
    page.click_and_wait("#create-token", lambda: page.all("#new-token"))
    token = page.css("#new-token pre").text
    assert token.startswith("prv_")
    assert page.browser.current_url == server.url + "/account"  # redirected: a GET page
    active = [r.text for r in page.all("#tokens tbody tr") if "active" in r.text]
    assert len(active) == 1 and "my app" in active[0]

    page.browser.refresh()
    page.css("#tokens")
    assert page.all("#new-token") == [] and token not in page.browser.page_source
    assert len([r for r in page.all("#tokens tbody tr") if "active" in r.text]) == 1
    assert token[:12] in page.css("#tokens").text  # the prefix stays, to recognise it


def test_error_pages_show_the_logged_in_menu(page: Page, server: LiveServer) -> None:
    page.login()
    for path, status in (("/a/nope", "404"), ("/a/summarize?v=abc", "400"),
                         ("/no/such/page", "404")):
        page.open(path)
        assert page.css("h1").text.startswith(status), path
        assert "admin (admin)" in page.css("#account").text, path
        assert page.css("header button.link").text == "Log out", path
        assert page.all('header a[href="/login"]') == [], path


def test_diff_page_takes_references_and_labels(page: Page, server: LiveServer) -> None:
    api = Api(server)
    v1 = api.resolve("summarize")["text"]
    _save(api, v1.replace("precise", "meticulous"), 1, "meticulous")
    status, body = api.call("PUT", "/api/v1/labels", {"name": "summarize",
                                                      "label": "production"}, {"version": 1})
    assert status == 200, body
    page.login()
    for query in ("a=summarize@1&b=summarize@2", "a=summarize@2&b=summarize@1",
                  "a=summarize@production&b=summarize", "name=summarize&a=production&b=2",
                  "name=summarize&a=1&b=2"):
        page.open("/diff?" + query)
        assert page.css("h1").text == "summarize: v1 → v2", query
        marks = {m.text for m in page.all("#side-by-side mark")}
        assert {"precise", "meticulous"} <= marks, query
    for query, status, says in (
            ("a=summarize@1&b=summarize@production", "400", "same version"),
            ("a=summarize@staging&b=summarize@1", "404", "staging"),
            ("a=summarize@@1&b=summarize@2", "400", "more than one '@'"),
            ("a=summarize@1", "400", "'b' is required")):
        page.open("/diff?" + query)
        assert page.css("h1").text.startswith(status), query
        assert says in page.css("#error-message").text, query


def test_save_warnings_in_the_api_answer_and_after_a_web_save(page: Page,
                                                              server: LiveServer) -> None:
    api = Api(server)
    text = api.resolve("summarize")["text"]
    undeclared = text.replace("{{ text }}", "{{ text }} in a {{ tone }} tone")
    status, body = api.call("PUT", "/api/v1/artifact", {"name": "summarize"},
                            {"text": undeclared, "message": "tone"},
                            headers={"If-Match": '"1"'})
    assert status == 200 and body["version"] == 2, body
    assert [w["message"] for w in body["warnings"]] == [
        "variable 'tone' is used but not declared in inputs"], body
    status, body = api.call("PUT", "/api/v1/artifact", {"name": "summarize"},
                            {"text": text, "message": "no tone"}, headers={"If-Match": '"2"'})
    assert status == 200 and body["warnings"] == [], body

    page.login()
    page.open("/edit?name=summarize")
    page.set_text("#edit-text", undeclared.replace(" tone", " voice"))
    page.css("#edit-message").send_keys("voice")
    page.click_and_wait("#save", lambda: page.all("p.flash"))
    flashes = [p.text for p in page.all("p.flash")]
    assert flashes[0] == "saved summarize as version 4", flashes
    assert flashes[1:] == ["warning: prompts/summarize.prompty, line 41: variable 'voice' "
                           "is used but not declared in inputs"], flashes
    assert page.all("p.flash.warning")


def test_merge_button_says_what_is_missing(browser: Any, selenium_parts: dict[str, Any],  # noqa: F811
                                           tmp_path: Path) -> None:
    live = start_server(tmp_path, env={"PROMPTREV_MERGE_ROLE": "admin"})
    try:
        page = Page(browser, selenium_parts, live)
        live.cli("user", "add", "ed", "--role", "editor", "--password", "ed-password")
        api = Api(live)
        text = api.resolve("summarize")["text"].replace("precise", "terse")
        status, body = api.call("POST", "/api/v1/reviews", {}, {
            "title": "terse", "edits": [{"name": "summarize", "text": text}]})
        assert status == 201, body

        # An editor who may not merge on this server: disabled, and why.
        page.login("ed", "ed-password")
        page.open("/reviews/1")
        assert not page.css("#merge").is_enabled()
        assert page.css("#merge-blocked").text == ("merging needs the admin role; "
                                                   "needs 1 more approval")
        page.click_and_wait("#approve", lambda: page.all("#merge-blocked"))
        assert page.css("#merge-blocked").text == "merging needs the admin role"
        assert not page.css("#merge").is_enabled()
        page.css("header button.link").click()

        # The admin (who opened it) may merge, and it has its approval now.
        page.login()
        page.open("/reviews/1")
        assert page.css("#merge").is_enabled() and page.all("#merge-blocked") == []
        page.click_and_wait("#merge", lambda: page.all("p.flash"))
        assert "merged #1" in page.css("p.flash").text
        assert api.resolve("summarize")["version"] == 2
    finally:
        live.stop()
