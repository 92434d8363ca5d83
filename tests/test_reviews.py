"""Change requests: proposing, reviewing, three-way merges, the rules, the API and the pages.

Real Git repositories and SQLite in tmp folders; merges that race run in threads with a
registry each (as server workers do), against the same repository.
"""

from __future__ import annotations

import json
import threading

import pygit2
import pytest

from promptrev.accounts import User
from promptrev.errors import Conflict, Forbidden, NotFound, ValidationFailed
from promptrev.policy import Policy
from promptrev.registry import Registry
from promptrev.reviews import Edit, NotApproved, Reviews
from promptrev.storage.gitstore import Signature

from .conftest import at, csrf_token, label_at, make_server_env

ALICE = User(1, "alice", "alice@example.com", "editor")
BOB = User(2, "bob", "bob@example.com", "editor")
ADMIN = User(3, "root", "root@example.com", "admin")
VIEWER = User(4, "vic", "vic@example.com", "viewer")

GREET = """---
name: greet
inputs:
  who: {type: string, sample: Ann}
---
system:
Be kind.
Second line.
Third line.
Fourth line.

user:
Hello {{ who }}
"""


@pytest.fixture
def reg(registry: Registry) -> Registry:
    registry.save("greet", GREET, message="first greet", author="Setup <setup@example.com>")
    return registry


def _approve_merge(rv: Reviews, number: int, by: User = BOB):
    rv.approve(number, by)
    return rv.merge(number, by)


def test_open_approve_merge_makes_one_version_by_the_author(reg):
    rv = Reviews(reg)
    main_before = reg.store.head()
    cr = rv.open(ALICE, "Kinder greeting", [Edit("greet", GREET.replace("Be kind.",
                                                                         "Be very kind."))],
                 description="Users asked for warmth.")
    assert cr.status == "open" and cr.branch == f"review/{cr.number}"
    assert reg.store.head() == main_before  # proposing changes nothing on main
    assert reg.store.ref("refs/heads/" + cr.branch) == cr.head
    [change] = rv.changes(cr.number)
    assert (change.name, change.change, change.main_moved) == ("greet", "modified", False)
    assert "-Be kind.\n+Be very kind." in change.diff.text.unified
    assert change.diff.rendered.right[0]["content"].startswith("Be very kind.")

    with pytest.raises(NotApproved, match="0 of the 1 approval"):
        rv.merge(cr.number, BOB)
    with pytest.raises(Forbidden, match="cannot approve"):
        rv.approve(cr.number, ALICE)
    with pytest.raises(Forbidden, match="needs the editor role"):
        rv.approve(cr.number, VIEWER)
    merged = _approve_merge(rv, cr.number)
    assert merged.status == "merged" and merged.closed_by == "bob"
    assert merged.versions == ["greet@2"]
    v2 = reg.resolve("greet@2")
    assert (v2.author, v2.email) == ("alice", "alice@example.com")
    assert v2.commit == merged.merge_commit
    commit = reg.store.repo[merged.merge_commit]
    assert [str(p) for p in commit.parent_ids] == [main_before, cr.head]
    assert commit.committer.name == "bob" and "Approved-by: bob" in commit.message
    assert reg.get("greet").text.startswith(GREET.replace("Be kind.", "Be very kind.")[:40])
    with pytest.raises(Conflict, match="is merged"):
        rv.merge(cr.number, BOB)
    # the index of merges is the index a rebuild gives
    incremental = reg.index.dump()
    reg.reindex()
    assert reg.index.dump() == incremental
    assert reg.fsck()["ok"]


def test_three_way_merge_combines_edits_that_do_not_overlap(reg):
    rv = Reviews(reg)
    first = rv.open(ALICE, "line one", [Edit("greet", GREET.replace("Be kind.", "Be warm."))])
    second = rv.open(BOB, "line four", [Edit("greet", GREET.replace("Fourth line.",
                                                                     "Line 4."))])
    _approve_merge(rv, first.number)
    [change] = rv.changes(second.number)
    assert change.main_moved  # main changed greet since #2 started
    assert rv.conflicts(second.number) == []
    merged = _approve_merge(rv, second.number, ALICE)
    assert merged.versions == ["greet@3"]
    text = reg.get("greet").text
    assert "Be warm." in text and "Line 4." in text and "Be kind." not in text
    assert reg.resolve("greet@3").author == "bob"


def test_overlapping_edits_conflict_and_are_resolved_by_an_update(reg):
    rv = Reviews(reg)
    first = rv.open(ALICE, "warm", [Edit("greet", GREET.replace("Be kind.", "Be warm."))])
    second = rv.open(BOB, "terse", [Edit("greet", GREET.replace("Be kind.", "Be terse."))])
    _approve_merge(rv, first.number)
    rv.approve(second.number, ALICE)
    [conflict] = rv.conflicts(second.number)
    assert conflict["path"] == "prompts/greet.prompty"
    assert "Be warm." in conflict["main"] and "Be terse." in conflict["request"]
    head_before = reg.store.head()
    with pytest.raises(Conflict, match="conflicts with main in prompts/greet.prompty") as info:
        rv.merge(second.number, ALICE)
    assert info.value.details["conflicts"][0]["base"].startswith("---\nname: greet")
    assert reg.store.head() == head_before and rv.get(second.number).status == "open"
    # an update that does not resolve the conflicting file is refused
    with pytest.raises(Conflict, match="include the resolved text"):
        rv.update(second.number, BOB, [Edit("other", GREET.replace("greet", "other"))], "x")
    resolved = GREET.replace("Be kind.", "Be warm and terse.")
    updated = rv.update(second.number, BOB, [Edit("greet", resolved)], "resolve with main")
    assert updated.approvals == []  # approvals were for the old commit
    assert rv.conflicts(second.number) == []
    merged = _approve_merge(rv, second.number, ALICE)
    assert merged.versions == ["greet@3"] and reg.get("greet").text == resolved


def test_concurrent_merges_of_the_same_prompt_one_wins_nothing_lost(reg):
    rv = Reviews(reg)
    numbers = [rv.open(ALICE, f"variant {i}", [Edit("greet", GREET.replace(
        "Be kind.", f"Be kind, variant {i}."))]).number for i in range(2)]
    heads = {n: rv.get(n).head for n in numbers}
    for n in numbers:
        rv.approve(n, BOB)
    barrier = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def merge(number: int) -> None:
        with Registry.open(reg.path) as own:  # one registry per worker, as in the server
            barrier.wait()
            try:
                outcomes[number] = Reviews(own).merge(number, BOB)
            except Exception as exc:  # noqa: BLE001 - the test inspects what happened
                outcomes[number] = exc

    threads = [threading.Thread(target=merge, args=(n,)) for n in numbers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    merged = [n for n, o in outcomes.items() if not isinstance(o, Exception)]
    refused = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(merged) == 1 and len(refused) == 1, outcomes
    assert isinstance(refused[0], Conflict) and "prompts/greet.prompty" in str(refused[0])
    loser = next(n for n in numbers if n not in merged)
    reg.sync()
    assert [v.number for v in reg.history("greet")] == [2, 1]
    assert f"variant {numbers.index(merged[0])}." in reg.get("greet").text
    # the losing request is intact: still open, its branch and edit untouched
    assert rv.get(loser).status == "open"
    assert reg.store.ref(f"refs/heads/review/{loser}") == heads[loser]
    assert rv.get(merged[0]).status == "merged"
    assert reg.fsck()["ok"]


def test_concurrent_merges_of_different_prompts_both_land(reg):
    reg.save("other", GREET.replace("name: greet", "name: other"), message="other")
    rv = Reviews(reg)
    a = rv.open(ALICE, "greet", [Edit("greet", GREET.replace("Be kind.", "A."))]).number
    b = rv.open(ALICE, "other", [Edit("other", GREET.replace("name: greet", "name: other")
                                      .replace("Be kind.", "B."))]).number
    for n in (a, b):
        rv.approve(n, BOB)
    errors: list[Exception] = []

    def merge(number: int) -> None:
        with Registry.open(reg.path) as own:
            try:
                Reviews(own).merge(number, BOB)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=merge, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    reg.sync()
    assert "A." in reg.get("greet").text and "B." in reg.get("other").text
    assert {rv.get(a).status, rv.get(b).status} == {"merged"}


def test_rules_merge_role_approvals_and_protected_labels(reg):
    strict = Reviews(reg, Policy(merge_role="admin", required_approvals=2))
    cr = strict.open(ALICE, "strict", [Edit("greet", GREET.replace("Be kind.", "Hi."))])
    strict.approve(cr.number, BOB)
    with pytest.raises(Forbidden, match="needs the admin role"):
        strict.merge(cr.number, BOB)
    with pytest.raises(NotApproved, match="1 of the 2"):
        strict.merge(cr.number, ADMIN)
    strict.approve(cr.number, ADMIN)
    assert strict.merge(cr.number, ADMIN).status == "merged"

    # a request that moves the protected label: editors may approve, only admins merge
    rv = Reviews(reg)
    store = reg.store
    blob = store.write_blob(b"production: 1\n")
    commit = store.commit(store.head(), {label_at("greet"): blob}, "promote v1",
                          Signature("Alice", "alice@example.com"))
    store.move_ref("refs/heads/review/promote", None, commit, "test")
    pushed = rv.on_push("review/promote", "0" * 40, commit, ALICE)
    assert pushed.title == "promote v1" and pushed.author_line == "Alice <alice@example.com>"
    assert rv.label_moves(pushed.number) == ["greet: production - → 1"]
    rv.approve(pushed.number, BOB)
    with pytest.raises(Forbidden, match="protected label 'production'"):
        rv.merge(pushed.number, BOB)
    assert reg.labels("greet") == {}
    rv.merge(pushed.number, ADMIN)
    assert reg.labels("greet") == {"production": 1}


def test_invalid_content_on_a_pushed_branch_is_named_and_never_merged(reg):
    rv = Reviews(reg)
    store = reg.store
    bad = store.write_blob(b"---\nname: [unclosed\n---\nuser:\nhi\n")
    commit = store.commit(store.head(), {at("broken"): bad}, "add broken",
                          Signature("Alice", "alice@example.com"))
    store.move_ref("refs/heads/review/broken", None, commit, "test")
    cr = rv.on_push("review/broken", "0" * 40, commit, ALICE)
    [problem] = rv.problems(cr.number)
    assert problem["file"] == "prompts/broken.prompty"
    rv.approve(cr.number, BOB)
    head = store.head()
    with pytest.raises(ValidationFailed, match="prompts/broken.prompty"):
        rv.merge(cr.number, BOB)
    assert store.head() == head
    # pushing again updates the same request; deleting the branch closes it
    assert rv.on_push("review/broken", commit, commit, ALICE).number == cr.number
    assert rv.on_push("review/broken", commit, "0" * 40, ALICE).status == "closed"


def test_comments_rejections_and_bad_input(reg):
    rv = Reviews(reg)
    cr = rv.open(ALICE, "c", [Edit("greet", GREET.replace("Be kind.", "Be nice."))])
    rv.comment(cr.number, BOB, "Why nice?", path="prompts/greet.prompty", line=6)
    rv.comment(cr.number, ADMIN, "Looks fine to me")
    with pytest.raises(Forbidden, match="commenting on change request #1 needs the editor"):
        rv.comment(cr.number, VIEWER, "me too")  # commenting is for editors
    comments = rv.get(cr.number).comments
    assert [(c["author"], c["path"], c["line"]) for c in comments] == [
        ("bob", "prompts/greet.prompty", 6), ("root", None, None)]
    with pytest.raises(ValidationFailed, match="is not changed by"):
        rv.comment(cr.number, BOB, "x", path="prompts/nope.prompty")
    with pytest.raises(ValidationFailed, match="needs text"):
        rv.comment(cr.number, BOB, "   ")
    with pytest.raises(ValidationFailed, match="title"):
        rv.open(ALICE, " ", [Edit("greet", GREET)])
    with pytest.raises(ValidationFailed, match="change nothing"):
        rv.open(ALICE, "same", [Edit("greet", GREET)])
    with pytest.raises(ValidationFailed, match="prompts/bad.prompty"):
        rv.open(ALICE, "bad", [Edit("bad", "---\nname: [x\n---\nuser:\nhi\n")])
    with pytest.raises(NotFound):
        rv.open(ALICE, "rm", [Edit("missing", None)])
    with pytest.raises(NotFound, match="#999"):
        rv.get(999)
    with pytest.raises(Forbidden, match="rejecting"):
        rv.reject(cr.number, VIEWER)
    rejected = rv.reject(cr.number, BOB, "not needed")
    assert (rejected.status, rejected.reason) == ("rejected", "not needed")
    with pytest.raises(Conflict, match="is rejected"):
        rv.approve(cr.number, BOB)
    assert [r.number for r in rv.list("rejected")] == [cr.number]
    assert rv.list("open") == []


# ---- API and pages -------------------------------------------------------------------------
SUMMARY = "summarize"


def _text(env) -> str:
    return env.api("GET", f"/artifact?ref={SUMMARY}").get_json()["text"]


def test_api_open_review_comment_approve_merge(tmp_path):
    env = make_server_env(tmp_path)
    env.accounts.add_user("carol", "editor", password="carol-pw")
    carol = env.accounts.create_token("carol", "t")[0]
    new = _text(env).replace("Summarize", "Briefly summarize", 1)
    r = env.api("POST", "/reviews", role="editor", json={
        "title": "Briefer", "description": "why", "edits": [{"name": SUMMARY, "text": new}]})
    assert r.status_code == 201, r.get_json()
    number = r.get_json()["number"]
    assert r.headers["Location"] == f"/api/v1/reviews/{number}"
    detail = env.api("GET", f"/reviews/{number}", role="viewer").get_json()
    assert detail["status"] == "open" and detail["conflicts"] == [] and detail["problems"] == []
    [change] = detail["changes"]
    assert change["name"] == SUMMARY and "+" in change["diff"]["text"]["unified"]
    assert env.api("POST", f"/reviews/{number}/comments", role="viewer", json={
        "body": "nit", "path": "prompts/summarize.prompty", "line": 3}).status_code == 403
    assert env.api("POST", f"/reviews/{number}/comments", role="admin", json={
        "body": "nit", "path": "prompts/summarize.prompty", "line": 3}).status_code == 201
    assert env.api("POST", "/reviews", role="viewer", json={
        "title": "x", "edits": [{"name": SUMMARY, "text": new}]}).status_code == 403
    assert env.api("POST", f"/reviews/{number}/merge", role="editor").status_code == 409
    assert env.api("POST", f"/reviews/{number}/approve", role="editor").status_code == 403
    ok = env.client.post(f"/api/v1/reviews/{number}/approve",
                         headers={"Authorization": f"Bearer {carol}"})
    assert ok.get_json()["approved"] is True
    merged = env.api("POST", f"/reviews/{number}/merge", role="editor").get_json()
    assert merged["status"] == "merged" and merged["versions"] == [f"{SUMMARY}@2"]
    assert _text(env) == new
    versions = env.api("GET", f"/versions?name={SUMMARY}").get_json()["versions"]
    assert versions[0]["author"] == "editor"
    listing = env.api("GET", "/reviews?status=merged").get_json()["reviews"]
    assert [x["number"] for x in listing] == [number]
    assert env.api("GET", "/reviews/999").status_code == 404
    assert env.api("GET", "/reviews?status=bogus").status_code == 400
    bad = env.api("POST", "/reviews", json={"title": "t", "edits": [{"name": SUMMARY}]})
    assert bad.status_code == 400 and "text" in bad.get_json()["error"]["message"]


def test_merge_role_setting_stops_editors_writing_main(tmp_path):
    env = make_server_env(tmp_path, merge_role="admin")
    text = _text(env)
    saved = env.api("PUT", f"/artifact?name={SUMMARY}", role="editor",
                    headers={"If-Match": '"1"'}, json={"text": text + "\n"})
    assert saved.status_code == 403 and "change request" in saved.get_json()["error"]["message"]
    number = env.api("POST", "/reviews", role="editor", json={
        "title": "t", "edits": [{"name": SUMMARY, "text": text + "\n"}]}).get_json()["number"]
    assert env.api("POST", f"/reviews/{number}/approve").status_code == 200
    assert env.api("POST", f"/reviews/{number}/merge", role="editor").status_code == 403
    assert env.api("POST", f"/reviews/{number}/merge").get_json()["status"] == "merged"


def test_pages_list_request_comment_approve_merge(tmp_path):
    env = make_server_env(tmp_path)
    editor = env.login("editor")
    edit_page = editor.get(f"/edit?name={SUMMARY}").get_data(as_text=True)
    new = _text(env).replace("Summarize", "Sum up", 1)
    r = editor.post("/edit", data={"csrf_token": csrf_token(edit_page), "name": SUMMARY,
                                   "kind": "prompt", "base": "1", "text": new,
                                   "message": "Sum up instead", "propose": "1"})
    assert r.status_code == 302 and "/reviews/1" in r.headers["Location"]
    assert _text(env) != new  # proposed, not saved
    listing = editor.get("/reviews/").get_data(as_text=True)
    assert "Sum up instead" in listing and 'id="reviews"' in listing
    page = editor.get("/reviews/1").get_data(as_text=True)
    assert "Sum up" in page and 'id="approve"' not in page  # the author cannot approve
    token = csrf_token(page)
    editor.post("/reviews/1/comment", data={"csrf_token": token, "body": "see line 2",
                                            "path": "prompts/summarize.prompty", "line": "2"})
    admin = env.login("admin")
    page = admin.get("/reviews/1").get_data(as_text=True)
    assert "see line 2" in page and 'id="approve"' in page
    token = csrf_token(page)
    refused = admin.post("/reviews/1/merge", data={"csrf_token": token},
                         follow_redirects=True).get_data(as_text=True)
    assert "merge refused" in refused and "approval" in refused
    admin.post("/reviews/1/approve", data={"csrf_token": token})
    done = admin.post("/reviews/1/merge", data={"csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "merged #1 into main" in done and _text(env) == new
    assert admin.post("/reviews/1/merge", data={}).status_code == 400  # no CSRF token


def test_merge_commit_is_a_real_git_merge(reg):
    rv = Reviews(reg)
    cr = rv.open(ALICE, "m", [Edit("greet", GREET.replace("Be kind.", "Be bold."))])
    merged = _approve_merge(rv, cr.number)
    repo = pygit2.Repository(reg.path)
    assert repo.descendant_of(merged.merge_commit, cr.head)
    assert str(repo.references["refs/heads/main"].target) == merged.merge_commit


def test_cli_review_open_show_approve_merge(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from promptrev.cli.main import main

    monkeypatch.setenv("PROMPTREV_REGISTRY", str(tmp_path / "reg"))
    runner = CliRunner()

    def run(*args, author="Ann <ann@example.com>", code=0):
        result = runner.invoke(main, ["--author", author, *map(str, args)])
        assert result.exit_code == code, result.output
        return result.output

    run("init")
    path = tmp_path / "greet.prompty"
    path.write_text(GREET)
    run("save", path, "-m", "first")
    path.write_text(GREET.replace("Be kind.", "Be brief."))
    assert "opened change request #1 on review/1" in run(
        "review", "open", path, "--title", "Brief", "-d", "shorter")
    assert "#1    open     0/1 approvals  Ann" in run("review", "list")
    shown = run("review", "show", "1")
    assert "-Be kind.\n+Be brief." in shown and "shorter" in shown
    run("review", "comment", "1", "why brief?", "--path", "prompts/greet.prompty", "--line", "6",
        author="Bo <bo@example.com>")
    assert "Bo on prompts/greet.prompty:6: why brief?" in run("review", "show", "1")
    refused = run("review", "merge", "1", code=4)
    assert "0 of the 1 approval" in refused
    assert "cannot approve" in run("review", "approve", "1", code=5)
    assert "approved #1 (1/1)" in run("review", "approve", "1", author="Bo <bo@example.com>")
    merged = run("review", "merge", "1", author="Bo <bo@example.com>")
    assert "merged #1 into main" in merged and "greet@2" in merged
    assert run("show", "greet").startswith(GREET.replace("Be kind.", "Be brief.")[:30])
    assert json.loads(run("log", "greet", "--json"))[0]["author"] == "Ann"
    assert json.loads(run("review", "list", "--status", "merged", "--json"))[0]["number"] == 1
    assert "is merged" in run("review", "reject", "1", code=4)


def test_change_request_events_reach_webhooks(reg):
    from promptrev.webhooks import Webhooks

    hooks = Webhooks(reg.engine)
    hooks.add("http://127.0.0.1:9/hook", events=["change_request.*", "version.saved"])
    rv = Reviews(reg)
    cr = rv.open(ALICE, "hooked", [Edit("greet", GREET.replace("Be kind.", "Be loud."))])
    other = rv.open(BOB, "dropped", [Edit("greet", GREET.replace("Be kind.", "Be quiet."))])
    _approve_merge(rv, cr.number)
    rv.reject(other.number, BOB, "superseded")
    sent = [(d["event"], d["body"]["payload"]) for d in reversed(hooks.deliveries())]
    events = [e for e, _ in sent]
    assert events == ["change_request.opened", "change_request.opened", "version.saved",
                      "change_request.merged", "change_request.rejected"]
    merged = sent[3][1]
    assert (merged["number"], merged["status"], merged["closed_by"]) == (cr.number, "merged",
                                                                         "bob")
    assert merged["merge_commit"] == reg.resolve("greet@2").commit
    assert sent[2][1]["ref"] == "greet@2" and sent[2][1]["author"] == "alice"
    assert sent[4][1]["reason"] == "superseded"
