"""Attacks on review and attribution, replayed against a real ``promptrev serve``.

With ``PROMPTREV_MERGE_ROLE=admin``: editor alice pushes onto editor bob's review branch
and approves it; alice deletes bob's review branch; viewer vic comments. And on a server
where editors push to ``main``: alice pushes a commit authored ``admin``, with a forged
``Promptrev-Account: admin`` trailer. Each must be refused, or recorded as alice.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from ..conftest import at
from ..live import LiveServer, start_server
from ..test_git_http import Git, logged_in

FORGED = "admin <admin@localhost>"


def _with_users(live: LiveServer) -> LiveServer:
    live.cli("user", "add", "alice", "--role", "editor")
    live.cli("user", "add", "bob", "--role", "editor")
    live.cli("user", "add", "vic", "--role", "viewer")
    live.tokens = {name: live.token(name) for name in ("admin", "alice", "bob", "vic")}
    return live


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("review-bypass"), workers=2,
                        env={"PROMPTREV_MERGE_ROLE": "admin"})
    yield _with_users(live)
    live.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """Editors may push to main here (the default merge role)."""
    live = start_server(tmp_path_factory.mktemp("pusher"), workers=1)
    yield _with_users(live)
    live.stop()


def git_for(live: LiveServer, tmp_path: Path, who: str) -> Git:
    return Git(tmp_path / who, live, live.tokens[who])


def call(live: LiveServer, who: str, method: str, path: str, headers: dict | None = None,
         **kwargs) -> httpx.Response:
    return httpx.request(method, live.url + "/api/v1" + path, timeout=60, headers={
        "Authorization": f"Bearer {live.tokens[who]}", **(headers or {})}, **kwargs)


def edit(work: Path, line: str) -> None:
    path = work / at("summarize")
    path.write_text(path.read_text().replace("system:", f"system:\n{line}", 1))


def push_review(live: LiveServer, tmp_path: Path, who: str, branch: str) -> int:
    """``who`` opens a change request by pushing ``branch``; return its number."""
    git = git_for(live, tmp_path, who)
    work = git.clone(f"work-{branch.replace('/', '-')}")
    git("switch", "-q", "-c", branch, cwd=work)
    edit(work, f"Proposed by {who} on {branch}.")
    git.commit(work, f"proposal {branch}")
    out = git("push", "origin", branch, cwd=work)
    return int(re.search(r"change request #(\d+)", out.stderr).group(1))


def test_approving_a_request_one_pushed_to_is_refused_and_never_counts(server, tmp_path):
    number = push_review(server, tmp_path, "bob", "review/tone")
    # alice approves bob's request as it stands: that approval counts...
    assert call(server, "alice", "POST", f"/reviews/{number}/approve").status_code == 200
    assert len(call(server, "admin", "GET", f"/reviews/{number}").json()["approvals"]) == 1
    # ...then she pushes her own line onto his branch, even authored as bob
    alice = git_for(server, tmp_path, "alice")
    work = alice.clone("alice-work")
    alice("fetch", "-q", "origin", "review/tone", cwd=work)
    alice("switch", "-q", "-c", "review/tone", "FETCH_HEAD", cwd=work)
    edit(work, "Alice's own line.")
    alice.commit(work, "small fix", author="bob <bob@localhost>")
    alice("push", "origin", "review/tone", cwd=work)

    refused = call(server, "alice", "POST", f"/reviews/{number}/approve")
    assert refused.status_code == 403, refused.text
    assert "cannot approve" in refused.json()["error"]["message"]
    shown = call(server, "admin", "GET", f"/reviews/{number}").json()
    assert shown["approvals"] == [] and not shown["approved"]
    assert "alice" in shown["contributors"]
    listed = call(server, "admin", "GET", "/reviews").json()
    assert [r["approvals"] for r in listed["reviews"] if r["number"] == number] == [[]]
    merge = call(server, "admin", "POST", f"/reviews/{number}/merge")
    assert merge.status_code == 409 and merge.json()["error"]["code"] == "not_approved"
    # a reviewer who made no commit of it can still approve, and then it merges
    assert call(server, "admin", "POST", f"/reviews/{number}/approve").status_code == 200
    assert call(server, "admin", "POST", f"/reviews/{number}/merge").status_code == 200


def test_approving_a_request_one_changed_through_the_api_is_refused(server, tmp_path):
    number = push_review(server, tmp_path, "bob", "review/api-edit")
    text = call(server, "admin", "GET", "/artifact", params={"ref": "summarize"}).json()["text"]
    changed = call(server, "admin", "POST", f"/reviews/{number}/edits", json={
        "message": "admin's wording", "edits": [
            {"name": "summarize", "text": text.replace("system:", "system:\nBy admin.", 1)}]})
    assert changed.status_code == 200, changed.text
    refused = call(server, "admin", "POST", f"/reviews/{number}/approve")
    assert refused.status_code == 403 and "cannot approve" in refused.text


def test_deleting_someone_elses_review_branch_is_refused(server, tmp_path):
    number = push_review(server, tmp_path, "bob", "review/keep-me")
    alice = git_for(server, tmp_path, "alice")
    work = alice.clone("alice-delete")
    out = alice("push", "origin", "--delete", "review/keep-me", cwd=work, check=False)
    assert out.returncode != 0
    assert "remote: error: deleting review/keep-me, which closes change request" \
        f" #{number} needs the admin role (or being its author, bob)" in out.stderr
    assert "Traceback" not in out.stderr
    assert call(server, "admin", "GET", f"/reviews/{number}").json()["status"] == "open"
    assert "review/keep-me" in alice("ls-remote", "origin", cwd=work).stdout
    # its author may still withdraw it that way
    bob = git_for(server, tmp_path, "bob")
    bob("push", "origin", "--delete", "review/keep-me", cwd=bob.clone("bob-delete"))
    assert call(server, "admin", "GET", f"/reviews/{number}").json()["status"] == "closed"


def test_rewriting_someone_elses_request_is_refused_and_merges_name_every_contributor(
        server, tmp_path):
    """Found by an attack on the first version: alice force-pushed her own text onto bob's
    request (authored as bob), or emptied it, and the merged version named only bob."""
    opened = call(server, "bob", "POST", "/reviews", json={"title": "bob's wording", "edits": [
        {"name": "summarize", "text": call(server, "bob", "GET", "/artifact", params={
            "ref": "summarize"}).json()["text"].replace("system:", "system:\nBob's line.", 1)}]})
    assert opened.status_code == 201, opened.text
    number, branch = opened.json()["number"], opened.json()["branch"]
    alice = git_for(server, tmp_path, "alice")
    work = alice.clone("alice-hijack")
    for target in ("origin/main", None):  # empty it; replace its commit with her own
        if target:
            out = alice("push", "origin", "--force", f"{target}:{branch}", cwd=work,
                        check=False)
            assert out.returncode != 0 and "rewriting " + branch in out.stderr, out.stderr
        else:
            alice("switch", "-q", "-c", "mine", cwd=work)
            edit(work, "EVE PAYLOAD")
            alice.commit(work, "bob's wording", author="bob <bob@localhost>")
            out = alice("push", "origin", "--force", f"HEAD:{branch}", cwd=work, check=False)
            assert out.returncode != 0 and "rewriting " + branch in out.stderr, out.stderr
            assert f"change request #{number} needs the admin role" in out.stderr
    shown = call(server, "admin", "GET", f"/reviews/{number}").json()
    assert shown["contributors"] == ["bob"] and "Bob's line." in str(shown["changes"])
    # adding a commit on top stays open to other editors, and the merge names them
    alice("fetch", "-q", "origin", branch, cwd=work)
    alice("switch", "-q", "-c", "on-top", "FETCH_HEAD", cwd=work)
    edit(work, "Alice's addition.")
    alice.commit(work, "addition", author="bob <bob@localhost>")
    alice("push", "origin", f"HEAD:{branch}", cwd=work)
    assert call(server, "admin", "POST", f"/reviews/{number}/approve").status_code == 200
    merged = call(server, "admin", "POST", f"/reviews/{number}/merge")
    assert merged.status_code == 200, merged.text
    version = call(server, "admin", "GET", "/versions", params={"name": "summarize"}
                   ).json()["versions"][0]
    assert "Contributed-by: alice, bob" in version["message"], version["message"]
    assert version["account"] == "admin"


def test_a_viewer_cannot_comment(server, tmp_path):
    number = push_review(server, tmp_path, "bob", "review/comments")
    r = call(server, "vic", "POST", f"/reviews/{number}/comments", json={"body": "lgtm"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["details"]["needs"] == "editor"
    assert call(server, "admin", "GET", f"/reviews/{number}").json()["comments"] == []
    ok = call(server, "alice", "POST", f"/reviews/{number}/comments", json={"body": "nice"})
    assert ok.status_code == 201, ok.text


def _attribution(live: LiveServer, sha: str) -> tuple[dict, dict]:
    version = call(live, "admin", "GET", "/versions", params={"name": "summarize"}
                   ).json()["versions"][0]
    [entry] = [e for e in call(live, "admin", "GET", "/audit").json()["entries"]
               if e["commit"] == sha]
    return version, entry


def test_the_pusher_is_recorded_next_to_the_git_author_and_survives_reindex(
        open_server, tmp_path):
    live = open_server
    alice = git_for(live, tmp_path, "alice")
    work = alice.clone()
    edit(work, "Pushed by alice as admin.")
    sha = alice.commit(work, "looks like admin\n\nPromptrev-Account: admin", author=FORGED)
    alice("push", "origin", "main", cwd=work)

    for when in ("after the push", "after reindex"):
        version, entry = _attribution(live, sha)
        assert version["commit"] == sha, when
        assert (version["author"], version["account"]) == ("admin", "alice"), when
        assert (entry["author"], entry["account"]) == ("admin", "alice"), when
        assert "Promptrev-Account" not in version["message"], when
        live.cli("reindex")

    page = logged_in(live).get("/a/summarize")
    assert page.status_code == 200 and "(account alice)" in page.text
    audit = logged_in(live).get("/audit")
    assert "(account alice)" in audit.text
    notes = subprocess.run(["git", "--git-dir", str(live.registry), "notes", "--ref",
                            "promptrev-accounts", "show", sha], capture_output=True, text=True)
    assert notes.stdout.strip() == "alice"


def test_an_api_save_records_the_user_whatever_its_message_claims(open_server, tmp_path):
    live = open_server
    current = call(live, "alice", "GET", "/artifact", params={"ref": "summarize"}).json()
    saved = call(live, "alice", "PUT", "/artifact", params={"name": "summarize"}, json={
        "text": current["text"].replace("system:", "system:\nSaved by alice.", 1),
        "message": "api save\n\nPromptrev-Account: admin"},
        headers={"If-Match": f'"{current["version"]}"'})
    assert saved.status_code == 200, saved.text
    assert saved.json()["account"] == "alice"
    live.cli("reindex")
    version, entry = _attribution(live, saved.json()["commit"])
    assert version["account"] == entry["account"] == "alice"
    assert version["message"] == "api save"


def test_pushes_to_the_notes_ref_are_refused(open_server, tmp_path):
    alice = git_for(open_server, tmp_path, "alice")
    work = alice.clone("notes")
    head = alice("rev-parse", "HEAD", cwd=work).stdout.strip()
    alice("notes", "--ref", "promptrev-accounts", "add", "-m", "admin", head, cwd=work)
    out = alice("push", "origin", "+refs/notes/promptrev-accounts", cwd=work, check=False)
    assert out.returncode != 0 and "accepts pushes to refs/heads/main" in out.stderr
    notes = subprocess.run(["git", "--git-dir", str(open_server.registry), "notes", "--ref",
                            "promptrev-accounts", "show", head], capture_output=True, text=True)
    assert "admin" not in notes.stdout
