"""Diffs worth reading (issue 19): folded context, readable contract changes, marked words."""

from __future__ import annotations

import json
import re

from promptrev.model.diffing import fold_rows, prompt_diff, text_diff

from .conftest import PROMPT

LONG = "\n".join(f"Rule {i}: be helpful in way number {i}." for i in range(1, 61))


def _with_input(spec: str) -> str:
    return PROMPT.replace("  who:\n    type: string\n", "  who:\n    type: string\n" + spec)


def test_unchanged_runs_fold_beyond_three_lines_of_context() -> None:
    blocks = text_diff(LONG, LONG.replace("way number 30.", "way number thirty.")).blocks()
    assert [(b.folded, len(b.rows)) for b in blocks] == [
        (True, 26), (False, 3), (False, 1), (False, 3), (True, 27)]
    assert blocks[0].rows[0].left_no == 1 and blocks[-1].rows[-1].left_no == 60
    # Nothing is folded when fewer than two lines would go, and an identical text folds whole.
    assert not any(b.folded for b in text_diff("a\nb\nc\nd\ne", "a\nb\nc\nd\nE").blocks())
    assert [(b.folded, len(b.rows)) for b in fold_rows(text_diff(LONG, LONG).rows)] == [
        (True, 60)]


def test_contract_changes_say_whether_they_break_callers() -> None:
    def change(old: str, new: str):
        diff = prompt_diff(old, new, "a", "b")
        (only,) = diff.contract_changes
        return only

    with_default = change(PROMPT, _with_input(
        "  tone:\n    type: string\n    default: warm\n    description: How to sound.\n"))
    assert with_default.path == "inputs.tone" and with_default.change == "added"
    assert with_default.breaking is False and "default" in with_default.why
    assert with_default.after == {"name": "tone", "type": "string", "default": "warm",
                                  "description": "How to sound."}
    assert with_default.before is None
    assert with_default.describe().startswith('inputs.tone: added (string, default "warm"); '
                                              "not breaking")
    required = change(PROMPT, _with_input("  tone:\n    type: string\n"))
    assert required.breaking is True and "must now pass 'tone'" in required.why
    removed = change(_with_input("  tone:\n    type: string\n"), PROMPT)
    assert removed.change == "removed" and removed.breaking is True
    retyped = change(PROMPT, PROMPT.replace("who:\n    type: string", "who:\n    type: number"))
    assert retyped.path == "inputs.who" and retyped.change == "changed"
    assert retyped.breaking is True and "from string to number" in retyped.why
    described = change(PROMPT, PROMPT.replace("who:\n    type: string",
                                              "who:\n    type: string\n    description: x"))
    assert described.breaking is False
    # The API's JSON carries the same structure.
    as_json = prompt_diff(PROMPT, _with_input("  tone:\n    type: string\n"), "a", "b"
                          ).to_dict()["contract_changes"][0]
    assert as_json["breaking"] is True and as_json["after"]["type"] == "string"


def test_rendered_messages_mark_changed_words() -> None:
    diff = prompt_diff(PROMPT, PROMPT.replace("You are friendly.", "You are very friendly."),
                       "a", "b")
    system, user = diff.rendered.pairs()
    assert system.op == "replace" and user.op == "equal"
    assert [s.text for s in system.right if s.changed] == ["very "]
    assert not any(s.changed for s in system.left)


def _save(env, text, base=None):
    headers = {"If-Match": str(base)} if base else {}
    r = env.api("PUT", "/artifact?name=greet", headers=headers,
                json={"text": text, "message": f"save greet from {base}"})
    assert r.status_code in (200, 201), r.get_data(as_text=True)


def test_diff_page_folds_context_and_shows_contract_tables(server_env) -> None:
    long_prompt = PROMPT.replace("You are friendly.\n", "You are friendly.\n" + LONG + "\n")
    _save(server_env, long_prompt)
    _save(server_env, _with_input("  tone:\n    type: string\n    default: warm\n").replace(
        "You are friendly.\n", "You are friendly.\n" + LONG.replace(
            "number 30.", "number thirty.") + "\n"), base=1)
    page = server_env.login("viewer").get("/diff?name=greet&a=1&b=2").get_data(as_text=True)
    sbs = page[page.index('id="side-by-side"'):page.index("</table>\n</div>")]
    folds = re.findall(r"<summary>⋯ (\d+) unchanged lines", sbs)
    assert len(folds) >= 2 and all(int(n) >= 2 for n in folds), folds
    assert '<mark class="add">thirty</mark>' in sbs and '<mark class="del">30</mark>' in sbs
    contract = page[page.index('id="contract-changes"'):page.index("<h2>Text</h2>")]
    assert "none breaking" in contract and "Not breaking" in contract
    assert "<th>type</th>" in contract and '<code>"warm"</code>' in contract
    rendered = page[page.index('id="rendered"'):]
    assert '<mark class="add">thirty</mark>' in rendered


def test_audit_and_history_link_each_version_to_its_diff(server_env) -> None:
    _save(server_env, PROMPT)
    _save(server_env, PROMPT.replace("friendly", "kind"), base=1)
    r = server_env.api("DELETE", "/artifact?name=greet", headers={"If-Match": "2"})
    assert r.status_code in (200, 204), r.get_data(as_text=True)
    client = server_env.login("viewer")
    audit = client.get("/audit").get_data(as_text=True)
    links = re.findall(r'class="diff-link" href="([^"]+)"', audit)
    assert "/diff?name=greet&amp;kind=prompt&amp;a=1&amp;b=2" in links, links
    assert "/diff?name=greet&amp;kind=prompt&amp;a=2&amp;b=3" in links, links
    history = client.get("/a/greet?v=2").get_data(as_text=True)
    history_links = re.findall(r'class="diff-link" href="([^"]+)"', history)
    assert history_links == ["/diff?name=greet&amp;kind=prompt&amp;a=2&amp;b=3",
                             "/diff?name=greet&amp;kind=prompt&amp;a=1&amp;b=2"]
    for link in history_links:
        page = client.get(link.replace("&amp;", "&"))
        assert page.status_code == 200, page.get_data(as_text=True)[:300]
    # No commit is an unnamed "other": the first commit and the seed import have names.
    actions = re.findall(r'<tr class="action-([\w-]+)">', audit)
    assert actions[:3] == ["delete", "save", "create"] and "other" not in actions, actions
    assert 'title="deleted an artifact' in audit


def test_every_commit_kind_has_a_name() -> None:
    from datetime import datetime, timezone

    from promptrev.model.artifacts import ACTIONS, AuditEntry
    from promptrev.model.fanout import MOVE_TITLE

    def action(message, versions=(), moves=()):
        entry = AuditEntry(1, "c" * 40, "a", "a@x", message, datetime.now(timezone.utc),
                           tuple(versions), tuple(moves))
        assert entry.action_meaning == ACTIONS[entry.action]
        return entry.action

    one = {"kind": "prompt", "name": "x", "version": 2, "deleted": False}
    assert action("Merge change request #3: terse", [one]) == "merge"
    assert action("Merge origin into main\n\nx") == "pull-merge"
    assert action(MOVE_TITLE + "\n\nEach artifact's files...") == "buckets"
    assert action("initialize registry") == "init"
    assert action("import starter library", [one, {**one, "name": "y"}]) == "import"
    assert action("edit README.md") == "files"
    assert action("save x", [one]) == "save"


def test_a_label_has_one_colour_on_every_page(server_env) -> None:
    _save(server_env, PROMPT)
    for label in ("production", "staging"):
        r = server_env.api("PUT", f"/labels?name=greet&label={label}", json={"version": 1})
        assert r.status_code == 200, r.get_data(as_text=True)
    client = server_env.login("viewer")
    for url in ("/", "/a/greet", "/audit"):
        page = client.get(url).get_data(as_text=True)
        production = set(re.findall(r'class="([^"]*)"[^>]*>production\b', page))
        staging = set(re.findall(r'class="([^"]*)"[^>]*>staging\b', page))
        assert production == {"label protected"}, (url, production)
        assert staging == {"label"}, (url, staging)


def test_cli_diff_says_whether_a_contract_change_breaks(run, tmp_path) -> None:
    f = tmp_path / "greet.prompty"
    f.write_text(PROMPT)
    run("save", f, "-m", "first")
    f.write_text(_with_input("  tone:\n    type: string\n    default: warm\n"))
    run("save", f, "-m", "tone", "--base", "1")
    out = run("diff", "greet@1", "greet@2").output
    assert ('inputs.tone: added (string, default "warm"); not breaking: callers that do not '
            "pass 'tone' get the default \"warm\"") in out, out
    as_json = json.loads(run("diff", "greet@1", "greet@2", "--json").output)
    (change,) = as_json["contract_changes"]
    assert change["breaking"] is False and change["after"]["default"] == "warm"
