"""Following a team's Git remote: a real bare repository, a teammate's real clone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from promptrev import Registry, remotes
from promptrev.errors import (
    Conflict,
    Diverged,
    InvalidName,
    InvalidRequest,
    MergeConflict,
    NotFound,
    RemoteFailed,
    ValidationFailed,
)
from promptrev.server.errors import http_status

from .conftest import PROMPT, at, label_at, variant

TEA = ("Tea Mate", "tea@example.org")
MERGER = ("Mer Ger", "merger@example.org")


def git(*args, cwd: Path | None = None, who: tuple[str, str] = TEA) -> str:
    """Run the git CLI as ``who``."""
    cmd = ["git", "-c", f"user.name={who[0]}", "-c", f"user.email={who[1]}",
           "-c", "init.defaultBranch=main", *map(str, args)]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def head_of(bare: Path, branch: str = "main") -> str | None:
    out = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "--quiet",
                          f"refs/heads/{branch}"], capture_output=True, text=True)
    return out.stdout.strip() or None


class Teammate:
    """A clone of the remote where a person edits files and pushes with plain Git."""

    def __init__(self, bare: Path, path: Path):
        self.path = path
        git("clone", "-q", bare, path)

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def commit(self, message: str, who: tuple[str, str] = TEA) -> str:
        git("add", "-A", cwd=self.path)
        git("commit", "-q", "-m", message, cwd=self.path, who=who)
        return git("rev-parse", "HEAD", cwd=self.path)

    def run(self, *args, who: tuple[str, str] = TEA) -> str:
        return git(*args, cwd=self.path, who=who)

    def push(self) -> None:
        git("push", "-q", "origin", "HEAD:main", cwd=self.path)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "team.git"
    git("init", "-q", "--bare", "--initial-branch=main", path)
    return path


@pytest.fixture
def origin(registry: Registry, bare: Path) -> Registry:
    """A registry with one prompt, following ``bare`` and pushed to it."""
    registry.save("greet", PROMPT, message="first greet", author="Ada <ada@example.org>")
    remotes.add(registry, "origin", str(bare))
    remotes.push(registry, "origin")
    return registry


@pytest.fixture
def teammate(bare: Path, tmp_path: Path, origin) -> Teammate:
    return Teammate(bare, tmp_path / "teammate")


# ---- push --------------------------------------------------------------------------------
def test_push_to_an_empty_bare_remote(registry, bare):
    registry.save("greet", PROMPT, message="first greet")
    added = remotes.add(registry, "origin", str(bare))
    assert (added.name, added.branch) == ("origin", "main")
    listed = subprocess.run(["git", "remote", "-v"], cwd=registry.path, capture_output=True,
                            text=True).stdout
    assert f"origin\t{bare}" in listed  # a normal Git remote of the registry
    result = remotes.push(registry, "origin")
    assert result.action == "created"
    assert [c["message"] for c in result.commits] == ["first greet", "initialize registry"]
    assert head_of(bare) == registry.store.head()
    assert remotes.push(registry, "origin").action == "up to date"
    registry.save("greet", variant(PROMPT, 2), message="second greet")
    again = remotes.push(registry, "origin")
    assert (again.action, [c["message"] for c in again.commits]) == ("pushed",
                                                                     ["second greet"])
    assert again.old == registry.history("greet")[1].commit
    assert head_of(bare) == registry.store.head()


# ---- pull: fast-forward ------------------------------------------------------------------
def test_teammate_change_arrives_as_a_version_with_its_author_and_label(origin, teammate):
    origin.set_label("greet", "production", 1)
    remotes.push(origin, "origin")
    teammate.run("pull", "-q")
    teammate.write(at("greet"), variant(PROMPT, 2))
    teammate.commit("friendlier greeting")
    teammate.write(label_at("greet"), "production: 2\n")
    teammate.commit("ship greet v2", who=MERGER)
    teammate.push()

    result = remotes.pull(origin, "origin")
    assert result.action == "fast-forward"
    assert [(v.ref, v.author, v.email) for v in result.versions] == [
        ("greet@2", "Tea Mate", "tea@example.org")]
    assert [m.describe() for m in result.label_moves] == ["greet: production 1 → 2"]
    history = origin.history("greet")
    assert [(v.number, v.author, v.message, v.labels) for v in history] == [
        (2, "Tea Mate", "friendlier greeting", ("production",)),
        (1, "Ada", "first greet", ())]
    assert origin.labels("greet") == {"production": 2}
    assert origin.label_history("greet")[0].author == "Mer Ger"
    assert origin.store.head() == head_of(teammate.path.parent / "team.git")
    assert remotes.pull(origin, "origin").action == "up to date"


def test_a_github_style_merge_commit_arrives_as_versions(origin, teammate):
    teammate.run("checkout", "-q", "-b", "feature")
    teammate.write(at("greet"), variant(PROMPT, 2))
    teammate.commit("try a variant")
    teammate.write(at("greet"), variant(PROMPT, 3))
    teammate.write(at("bye"), PROMPT.replace("hello", "goodbye"))
    teammate.commit("settle on variant 3, add bye")
    teammate.run("checkout", "-q", "main")
    teammate.run("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from feature",
                 "feature", who=MERGER)
    teammate.push()

    result = remotes.pull(origin, "origin")
    assert result.action == "fast-forward"
    # One first-parent commit (the merge) arrived: one version per artifact it changed.
    assert sorted((v.ref, v.author) for v in result.versions) == [
        ("bye@1", "Mer Ger"), ("greet@2", "Mer Ger")]
    assert origin.get("greet").text == variant(PROMPT, 3)
    assert origin.history("greet")[0].message == "Merge pull request #7 from feature"


def test_main_merged_into_a_branch_arrives_as_a_merge_commit(origin, teammate, bare):
    # The teammate branched off before greet existed, then merged main into the branch and
    # pushed it: main is only reachable through the second parent on the remote.
    root = teammate.run("rev-list", "--max-parents=0", "HEAD")
    before = origin.store.head()
    teammate.run("checkout", "-q", "-b", "work", root)
    teammate.write(at("bye"), PROMPT.replace("hello", "goodbye"))
    teammate.commit("add bye")
    teammate.run("merge", "-q", "--no-edit", "main")
    teammate.push()
    theirs = head_of(bare)

    result = remotes.pull(origin, "origin", author="Puller <pull@example.org>")
    assert result.action == "merge"
    merge = origin.store.commit_info(origin.store.head())
    assert merge.parents == (before, theirs)  # first parent: main, so numbers stay stable
    assert [(v.ref, v.author) for v in result.versions] == [("bye@1", "Tea Mate")]
    assert [v.number for v in origin.history("greet")] == [1]
    assert remotes.push(origin, "origin").action == "pushed"  # a fast-forward there
    assert head_of(bare) == origin.store.head()


# ---- divergence ---------------------------------------------------------------------------
def _diverge(origin: Registry, teammate: Teammate, theirs_text: str, ours_text: str,
             ours_name: str = "greet") -> None:
    teammate.write(at("greet"), theirs_text)
    teammate.commit("their greet")
    teammate.push()
    origin.save(ours_name, ours_text, message=f"our {ours_name}")


def test_divergent_histories_are_reported_not_overwritten(origin, teammate, bare):
    _diverge(origin, teammate, variant(PROMPT, 2), PROMPT.replace("hello", "bye"), "bye")
    ours, theirs = origin.store.head(), head_of(bare)
    with pytest.raises(Diverged) as caught:
        remotes.pull(origin, "origin")
    err = caught.value
    assert http_status(err) == 409 and isinstance(err, Conflict)
    assert "diverged" in err.message
    assert "'our bye'" in err.message and "'their greet' by Tea Mate" in err.message
    assert "--merge" in err.message
    assert (err.details["local"]["count"], err.details["remote"]["count"]) == (1, 1)
    assert err.details["remote"]["commits"][0]["sha"] == theirs
    assert (origin.store.head(), head_of(bare)) == (ours, theirs)
    assert [v.number for v in origin.history("greet")] == [1]

    with pytest.raises(Diverged) as refused:
        remotes.push(origin, "origin")
    assert "push to origin/main refused" in refused.value.message
    assert "pull first" in refused.value.message.lower()
    assert (origin.store.head(), head_of(bare)) == (ours, theirs)


def test_pull_merge_joins_edits_that_do_not_overlap(origin, teammate, bare):
    body = PROMPT.replace("Say hello", "Please say hello")
    _diverge(origin, teammate, variant(PROMPT, 2), body)  # different lines of greet
    ours, theirs = origin.store.head(), head_of(bare)
    result = remotes.pull(origin, "origin", merge=True, author="Puller <pull@example.org>")
    assert result.action == "merge"
    head = origin.store.commit_info(origin.store.head())
    assert head.parents == (ours, theirs)
    assert head.author == "Puller"
    assert "their greet (Tea Mate)" in head.message
    text = origin.get("greet").text
    assert "variant 2" in text and "Please say hello" in text
    assert [(v.number, v.message.splitlines()[0]) for v in origin.history("greet")] == [
        (3, "Merge origin/main into main"), (2, "our greet"), (1, "first greet")]
    pushed = remotes.push(origin, "origin")
    assert pushed.old == theirs and head_of(bare) == origin.store.head()


def test_pull_merge_with_overlapping_edits_changes_nothing(origin, teammate, bare):
    _diverge(origin, teammate, variant(PROMPT, 2), variant(PROMPT, 3))  # the same line
    ours, theirs = origin.store.head(), head_of(bare)
    dump = origin.index.dump()
    with pytest.raises(MergeConflict) as caught:
        remotes.pull(origin, "origin", merge=True)
    assert caught.value.details["paths"] == [at("greet")]
    assert at("greet") in caught.value.message
    assert (origin.store.head(), head_of(bare)) == (ours, theirs)
    assert origin.index.dump() == dump


def test_an_invalid_file_on_the_remote_is_refused_by_name(origin, teammate, bare):
    teammate.write(at("broken"), "---\nname: [unclosed\n---\nuser:\nhi\n")
    teammate.commit("add a broken prompt")
    teammate.push()
    before, dump = origin.store.head(), origin.index.dump()
    with pytest.raises(ValidationFailed) as caught:
        remotes.pull(origin, "origin")
    assert "prompts/broken.prompty" in caught.value.message
    assert "is stored at" not in caught.value.message  # refused for its content, not its place
    assert caught.value.problems[0]["commit"] == head_of(bare)
    assert origin.store.head() == before and origin.index.dump() == dump
    with pytest.raises(NotFound):
        origin.resolve("broken")


def test_a_fresh_registry_adopts_a_teams_existing_history(tmp_path, bare):
    work = tmp_path / "work"
    git("init", "-q", work)
    (work / at("greet")).parent.mkdir(parents=True)
    (work / at("greet")).write_text(PROMPT)
    (work / "src.py").write_text("print('the team keeps code here too')\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "team prompts", cwd=work)
    git("push", "-q", bare, "HEAD:main", cwd=work)

    with Registry.init(tmp_path / "fresh.git") as reg:
        remotes.add(reg, "origin", str(bare))
        result = remotes.pull(reg, "origin")
        assert result.action == "adopt"
        assert [(v.ref, v.author) for v in result.versions] == [("greet@1", "Tea Mate")]
        reg.save("greet", variant(PROMPT, 2), message="edit here")
        assert remotes.push(reg, "origin").action == "pushed"
        assert head_of(bare) == reg.store.head()


def test_reindex_after_pulls_equals_the_incremental_index(origin, teammate, bare):
    teammate.write(at("greet"), variant(PROMPT, 2))
    teammate.write(label_at("greet"), "staging: 2\n")
    teammate.commit("greet v2 on staging")
    teammate.push()
    remotes.pull(origin, "origin")
    _diverge(origin, teammate, variant(PROMPT, 2).replace("hello", "hi"),
             PROMPT.replace("hello", "bye"), "bye")
    remotes.sync(origin, "origin", merge=True)
    assert head_of(bare) == origin.store.head()
    incremental = origin.index.dump()
    origin.reindex()
    assert origin.index.dump() == incremental
    assert origin.fsck()["ok"]


def test_a_push_refused_by_the_remote_says_why(origin, bare):
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'prompts/greet.prompty: needs review first' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = head_of(bare)
    origin.save("greet", variant(PROMPT, 2))
    with pytest.raises(RemoteFailed) as caught:
        remotes.push(origin, "origin")
    assert "origin/main refused the push" in caught.value.message
    assert "prompts/greet.prompty: needs review first" in caught.value.message
    assert head_of(bare) == before


# ---- configuration and credentials ------------------------------------------------------
def test_remote_names_and_urls_are_checked(registry, bare):
    for name in ("", "-x", "a b", "a..b", "x.lock", "ä", "a/b"):
        with pytest.raises(InvalidName):
            remotes.add(registry, name, str(bare))
    for url in ("", "ext::sh -c touch% /tmp/pwned", "ftp://example.org/x.git", "-uhack",
                str(bare.parent / "missing.git"), "https://"):
        with pytest.raises(InvalidRequest):
            remotes.add(registry, "origin", url)
    with pytest.raises(InvalidName):
        remotes.add(registry, "origin", str(bare), branch="bad..branch")
    remotes.add(registry, "origin", str(bare), branch="prompts/main")
    remotes.add(registry, "github", "git@github.com:team/prompts.git")
    with pytest.raises(Conflict):
        remotes.add(registry, "origin", str(bare))
    assert [(r.name, r.branch) for r in remotes.list(registry)] == [
        ("github", "main"), ("origin", "prompts/main")]
    remotes.remove(registry, "github")
    with pytest.raises(NotFound) as caught:
        remotes.remove(registry, "github")
    assert "remotes: origin" in caught.value.message


def test_a_non_default_branch_is_followed(registry, bare):
    registry.save("greet", PROMPT)
    remotes.add(registry, "origin", str(bare), branch="prompts")
    remotes.push(registry, "origin")
    assert head_of(bare, "prompts") == registry.store.head()
    assert head_of(bare) is None
    assert remotes.fetch(registry, "origin") == registry.store.head()
    assert registry.store.ref("refs/remotes/origin/prompts") == registry.store.head()


def test_passwords_never_show(registry):
    url = "https://alice:s3cret@127.0.0.1:9/team/prompts.git"
    added = remotes.add(registry, "origin", url)
    assert added.display_url == "https://alice:***@127.0.0.1:9/team/prompts.git"
    token = remotes.add(registry, "tok", "https://ghp_abcdefghijklmnopqrstuvwxyz@h.example/x")
    assert token.display_url == "https://***@h.example/x"
    assert "s3cret" not in json.dumps([r.to_dict() for r in remotes.list(registry)])
    with pytest.raises(RemoteFailed) as caught:  # nothing listens on port 9
        remotes.pull(registry, "origin")
    assert "s3cret" not in caught.value.message
    assert "s3cret" not in json.dumps(caught.value.to_dict())


def test_an_empty_remote_pulls_as_up_to_date(registry, bare):
    remotes.add(registry, "origin", str(bare))
    assert remotes.fetch(registry, "origin") is None
    assert remotes.pull(registry, "origin").action == "up to date"


# ---- the command line --------------------------------------------------------------------
def test_cli_remote_pull_push_sync(run, tmp_path, bare):
    prompt = tmp_path / "greet.prompty"
    prompt.write_text(PROMPT)
    run("save", prompt, "-m", "first")
    assert "added remote origin" in run("remote", "add", "origin", bare).output
    run("remote", "add", "backup", "https://bob:hunter2@example.org/p.git")
    listing = run("remote", "list").output
    assert "bob:***@example.org" in listing and "hunter2" not in listing
    as_json = json.loads(run("remote", "list", "--json").output)
    assert as_json[0] == {"name": "backup", "url": "https://bob:***@example.org/p.git",
                          "branch": "main"}
    assert "removed remote backup" in run("remote", "remove", "backup").output
    assert "push origin/main: created" in run("push").output

    mate = Teammate(bare, tmp_path / "mate")
    mate.write(at("greet"), variant(PROMPT, 2))
    mate.commit("friendlier")
    mate.push()
    out = run("pull").output
    assert "fast-forward" in out
    assert "greet@2 by Tea Mate <tea@example.org>: friendlier" in out
    assert "up to date" in run("pull", "origin").output

    mate.run("pull", "-q")
    mate.write(at("greet"), variant(PROMPT, 3))
    mate.commit("theirs")
    mate.push()
    prompt.write_text(variant(PROMPT, 2).replace("Say hello", "Please say hello"))
    run("save", prompt, "-m", "ours", "--base", "2")
    refused = run("pull", ok=False)
    assert refused.exit_code == 4
    assert "diverged" in refused.output and "'theirs' by Tea Mate" in refused.output
    assert run("push", ok=False).exit_code == 4
    pulled = json.loads(run("pull", "--merge", "--json").output)
    assert pulled["action"] == "merge"
    assert [v["version"] for v in pulled["versions"]] == [4]
    assert "push origin/main: pushed" in run("push").output

    mate.run("pull", "-q")
    mate.write(at("bye"), PROMPT.replace("hello", "goodbye"))
    mate.commit("add bye")
    mate.push()
    out = run("sync", "--every", "0", "--times", "2").output
    assert "bye@1 by Tea Mate" in out
    assert out.count("push origin/main: up to date") == 2
    assert "no remote named 'nope'" in run("pull", "nope", ok=False).output
