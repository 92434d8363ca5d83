"""End to end in a real browser: an editor proposes a change from the edit page, an admin
reads its diff, comments on a line, approves and merges it; the API serves the merge.
Line comments: a click on a line number opens the comment form under that line, comments
show under their line (also without JavaScript), and are marked outdated once the branch
moves.

A real ``promptrev serve`` runs on loopback; headless Chromium is driven as in
``test_browser.py``. Screenshots go to ``test-artifacts/review-*.png``. Skipped when
Chromium, chromedriver or Selenium is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import csrf_token, make_server_env
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


PATH = "prompts/summarize.prompty"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _comment_rows(page: str) -> dict[int, str]:
    """The comment rows under diff lines: line number → the row's HTML."""
    rows = re.findall(r'<tr class="line-comments" data-line="(\d+)">(.*?)</tr>', page, re.S)
    return {int(n): html for n, html in rows}


def test_line_comments_render_under_their_line_without_script(tmp_path: Path) -> None:
    env = make_server_env(tmp_path)
    text = env.api("GET", "/artifact?ref=summarize").get_json()["text"]
    number = env.api("POST", "/reviews", role="editor", json={
        "title": "Terse", "edits": [{"name": "summarize", "text": text.replace(OLD, NEW)}],
    }).get_json()["number"]
    changed, far = _line_of(text, OLD), 3  # line 3 sits in a folded run of unchanged lines
    admin = env.login("admin")
    page = admin.get(f"/reviews/{number}").get_data(as_text=True)
    assert f'<td class="no" data-line="{changed}">{changed}</td>' in page
    token = csrf_token(page)
    for line, body in ((changed, "Is terse too short?"), (far, "Keep this description"),
                       (999, "No such line"), ("", "About the whole file")):
        done = admin.post(f"/reviews/{number}/comment", data={
            "csrf_token": token, "path": PATH, "line": str(line), "body": body})
        assert done.status_code == 302, done.get_data(as_text=True)
    page = admin.get(f"/reviews/{number}").get_data(as_text=True)
    rows = _comment_rows(page)
    assert set(rows) == {changed, far}
    assert f"admin</strong> on line {changed}" in rows[changed]
    assert "Is terse too short?" in rows[changed] and "outdated" not in rows[changed]
    # Each comment row comes right after its own line's row.
    for line in (changed, far):
        before = page[:page.index(f'<tr class="line-comments" data-line="{line}">')]
        last_row = before[before.rindex("<tr"):]
        assert f'data-line="{line}">{line}</td>' in last_row
    # A folded run holding a commented line starts open, so the comment is seen.
    fold = page[:page.index(f'<tr class="line-comments" data-line="{far}">')]
    assert fold[fold.rindex("<details"):].startswith('<details class="fold" open>')
    # Comments whose line the diff does not show (or on the whole file) follow the diff.
    after = page[page.index('<div class="file-comments">'):]
    assert "No such line" in after[:after.index("</section>")]
    assert "About the whole file" in after[:after.index("</section>")]
    # The page asks for its script from the server itself; nothing inline.
    assert '<script src="/static/review.js" defer></script>' in page
    csp = admin.get(f"/reviews/{number}").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert admin.get("/static/review.js").status_code == 200

    # The branch moves: the comments stay where they were, marked outdated.
    moved = text.replace(OLD, NEW).replace("drop minor details", "drop the rest")
    assert env.api("POST", f"/reviews/{number}/edits", role="editor", json={
        "edits": [{"name": "summarize", "text": moved}]}).status_code == 200
    page = admin.get(f"/reviews/{number}").get_data(as_text=True)
    rows = _comment_rows(page)
    assert "Is terse too short?" in rows[changed]
    assert '<span class="tag outdated"' in rows[changed]
    assert 'class="comment line-comment outdated"' in rows[changed]


def test_click_a_line_to_comment_under_it(browser: Any, selenium_parts: dict[str, Any],  # noqa: F811
                                          server: LiveServer) -> None:
    by, ec = selenium_parts["By"], selenium_parts["ec"]
    wait = selenium_parts["WebDriverWait"](browser, 10)
    api = Api(server)
    text = api.resolve("summarize")["text"]
    status, body = api.call("POST", "/api/v1/reviews", {}, {
        "title": "Terse", "edits": [{"name": "summarize", "text": text.replace(OLD, NEW)}]})
    assert status == 201, body
    line = _line_of(text, OLD)

    def css(selector: str) -> Any:
        return wait.until(ec.presence_of_element_located((by.CSS_SELECTOR, selector)))

    browser.get(f"{server.url}/login")
    css("#name").send_keys("admin")
    css("#password").send_keys(ADMIN_PASSWORD)
    css("#login").click()
    wait.until(ec.text_to_be_present_in_element((by.ID, "account"), "admin"))
    browser.get(f"{server.url}/reviews/{body['number']}")
    cell = css(f'#change-1 td.no.commentable[data-line="{line}"]')  # set up by the script
    assert cell.get_attribute("title") == f"Comment on line {line}"
    cell.click()
    form = css("#change-1 tr.comment-form-row form.line-comment-form")
    row = browser.execute_script(
        "return arguments[0].closest('tr').previousElementSibling"
        ".querySelector('td.no[data-line]').dataset.line", form)
    assert row == str(line)  # the form opened right under the clicked line
    assert form.find_element(by.NAME, "line").get_attribute("value") == str(line)
    assert browser.switch_to.active_element == form.find_element(by.NAME, "body")
    # Cancel puts the form back below the file; a click on another line moves it there.
    form.find_element(by.CSS_SELECTOR, "button.line-cancel").click()
    assert browser.find_elements(by.CSS_SELECTOR, "tr.comment-form-row") == []
    assert form.find_element(by.NAME, "line").get_attribute("value") == ""
    css(f'#change-1 td.no.commentable[data-line="{line}"]').click()
    form = css("#change-1 tr.comment-form-row form.line-comment-form")
    form.find_element(by.NAME, "body").send_keys("Is terse too short?")
    save_screens(browser, "review-line-form")
    form.find_element(by.CSS_SELECTOR, "button[type=submit]").click()
    shown = css(f'#change-1 tr.line-comments[data-line="{line}"]')
    assert f"admin on line {line}" in shown.text and "Is terse too short?" in shown.text
    above = browser.execute_script(
        "return arguments[0].previousElementSibling.querySelector('td.no[data-line]')"
        ".dataset.line", shown)
    assert above == str(line)
    # A second comment on the same line opens its form below the first one.
    css(f'#change-1 td.no.commentable[data-line="{line}"]').click()
    form_row = css("#change-1 tr.comment-form-row")
    assert browser.execute_script("return arguments[0].previousElementSibling", form_row) \
        == shown
    save_screens(browser, "review-line-comments")
