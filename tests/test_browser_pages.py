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

from tests.conftest import csrf_token, make_server_env
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
    # The long system message keeps its changed lines in view and folds the rest.
    folds = page.all("#rendered tr.replace td.r details.msg-fold")
    assert folds and not any(f.get_attribute("open") for f in folds)
    assert page.css("#rendered tr.replace td.r mark.add").is_displayed()
    hidden = folds[-1].find_element(page.by.CSS_SELECTOR, ".msg-lines")
    assert not hidden.is_displayed()
    folds[-1].find_element(page.by.TAG_NAME, "summary").click()
    assert hidden.is_displayed() and "Rule 80" in hidden.text
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


def test_editor_numbers_lines_checks_live_and_cancels(page: Page, server: LiveServer) -> None:
    _prepare(server)
    page.login()
    page.open("/edit?name=long")
    textarea = page.css("#edit-text")
    gutter = page.css("#edit-gutter")  # added by editor.js
    lines = textarea.get_property("value").split("\n")
    numbers = gutter.get_property("textContent").rstrip("\n").split("\n")
    assert numbers[:3] == ["1", "2", "3"] and numbers[-1] == str(len(lines))
    # The content is checked as it stands when the page opens.
    page.wait.until(lambda _d: "Valid" in page.css("#edit-check").text)
    assert page.css("#edit-check").get_attribute("class") == "check ok"
    # Break the template on one line: the check names the line and the gutter marks it.
    broken = LONG.replace("{{ question }}", "{{ question }")
    bad_line = next(i for i, line in enumerate(broken.split("\n"), 1) if "{{ question }" in line)
    page.set_text("#edit-text", broken)
    textarea.send_keys(" ")  # typing: the check runs once typing stops
    page.wait.until(lambda _d: "Not valid" in page.css("#edit-check").text)
    problem = page.css("#edit-check li.error")
    assert problem.get_attribute("data-line") == str(bad_line), problem.text
    marked = page.css(f'#edit-gutter span.error[data-line="{bad_line}"]')
    assert marked.get_property("textContent") == str(bad_line)
    # A long text: the gutter follows the textarea's scrolling line for line.
    page.set_text("#edit-text", LONG.replace("{{ question }}", "{{ question }}\n" * 200))
    textarea.send_keys(" ")
    page.wait.until(lambda _d: len(gutter.get_property("textContent").split("\n")) > 200)
    page.browser.execute_script("arguments[0].scrollTop = 900;"
                                "arguments[0].dispatchEvent(new Event('scroll'))", textarea)
    scrolled = page.browser.execute_script(
        "return [arguments[0].scrollTop, arguments[1].scrollTop]", textarea, gutter)
    assert scrolled[0] > 0 and scrolled[0] == scrolled[1], scrolled
    page.set_text("#edit-text", broken)
    textarea.send_keys(" ")
    page.wait.until(lambda _d: "Not valid" in page.css("#edit-check").text)
    page.browser.execute_script("arguments[0].scrollTop = 0", textarea)
    save_screens(page.browser, "edit-check")
    # Cancel goes back to the artifact, saving nothing.
    page.click_and_wait("#cancel", lambda: page.browser.current_url.endswith("/a/long?kind=prompt"))
    assert Api(server).resolve("long")["version"] == 3


def test_edit_check_runs_the_save_check_and_the_page_works_without_script(
        tmp_path: Path) -> None:
    env = make_server_env(tmp_path)
    editor = env.login("editor")
    page = editor.get("/edit?name=summarize").get_data(as_text=True)
    # Without script: a plain textarea in the form, and a Cancel link back to the artifact.
    assert re.search(r'<textarea name="text" id="edit-text"[^>]*>---\nname: summarize', page)
    assert '<a href="/a/summarize?kind=prompt" id="cancel"' in page
    assert '<script src="/static/editor.js" defer></script>' in page
    token = csrf_token(page)
    text = env.api("GET", "/artifact?ref=summarize").get_json()["text"]

    def check(body: str, name: str = "summarize") -> dict[str, Any]:
        answer = editor.post("/edit/check", data={"csrf_token": token, "kind": "prompt",
                                                  "name": name, "text": body})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return answer.get_json()

    ok = check(text)
    assert ok == {"valid": True, "file": "prompts/summarize.prompty", "problems": [],
                  "warnings": []}
    broken = text.replace("{{ max_words }} words.", "{{ max_words } words.", 1)
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if "max_words }" in t)
    bad = check(broken)
    assert not bad["valid"] and [p["line"] for p in bad["problems"]] == [line], bad
    # The save refuses the same text, for the same reason.
    saved = env.api("PUT", "/artifact?name=summarize", role="editor",
                    headers={"If-Match": '"1"'}, json={"text": broken})
    assert saved.status_code == 422
    assert bad["problems"][0]["message"] in saved.get_json()["error"]["message"]
    warned = check(text.replace("{{ max_words }} words.", "{{ max_words }} {{ tone }}.", 1))
    assert warned["valid"] and "tone" in warned["warnings"][0]["message"], warned
    named = check(text, name="../up")
    assert not named["valid"] and "name" in named["problems"][0]["message"], named
    # A form post without the CSRF token is refused; so is a visitor who is not logged in.
    assert editor.post("/edit/check", data={"text": text}).status_code == 400
    anonymous = env.app.test_client().post("/edit/check", data={"text": text})
    assert anonymous.status_code in (302, 400)


def test_long_rendered_messages_fold_around_their_changes(tmp_path: Path) -> None:
    env = make_server_env(tmp_path)
    for base, text in ((None, LONG), (1, ONE_WORD)):
        headers = {"If-Match": f'"{base}"'} if base else {}
        saved = env.api("PUT", "/artifact?name=long", headers=headers, json={"text": text})
        assert saved.status_code in (200, 201), saved.get_json()
    page = env.login("viewer").get("/diff?name=long&a=1&b=2").get_data(as_text=True)
    rendered = page[page.index('id="rendered"'):]
    system = rendered[rendered.index('<td class="r">'):]
    system = system[:system.index("</td>")]
    # The changed line of the 81-line system message is in view, with two lines each side;
    # the rest is folded into <details> (readable without script), nothing is lost.
    folds = re.findall(r'<details class="fold msg-fold"><summary>(.*?)</summary>'
                       r'<div class="msg-lines">(.*?)</div></details>', system, re.S)
    assert [summary for summary, _ in folds] == [
        "⋯ 38 unchanged lines (1–38)", "⋯ 38 unchanged lines (44–81)"]
    shown = re.sub(r"<details.*?</details>", "", system, flags=re.S)
    assert re.findall(r"Rule (\d+):", shown) == ["38", "39", "40", "41", "42"]
    assert '<mark class="add">forty</mark>' in shown
    hidden = "".join(body for _, body in folds)
    assert len(re.findall(r"Rule \d+:", hidden)) == 75 and "You are a helpful" in hidden
    # A short message (the user's question) is shown whole.
    user = rendered[rendered.index('<span class="role">user</span>'):]
    assert user[:user.index("</td>")].count("<details") == 0
