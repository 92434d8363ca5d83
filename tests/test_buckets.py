"""Every artifact's files sit in a hashed bucket of its folder; registries made before are
moved in place, history kept (``promptrev.model.fanout``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pygit2
import pytest

from promptrev import Registry
from promptrev.model.artifacts import KINDS, placed
from promptrev.model.fanout import shown
from promptrev.storage.gitstore import GitStore, Signature

from .conftest import PROMPT, at, label_at, variant
from .test_adapters import make_adapter

SIG = Signature("Old Release", "old@example.org")


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def tree_paths(path, ref="main") -> list[str]:
    return git("ls-tree", "-r", "--name-only", ref, cwd=path).split()


def sha1_bucket(name: str) -> str:
    digits = hashlib.sha1(name.encode()).hexdigest()
    return f"@{digits[0]}/@{digits[1]}"


def test_names_sit_in_the_bucket_their_sha1_gives_and_nowhere_else_shows_it(registry):
    registry.save("act-as-a-linux-terminal", PROMPT)
    registry.save("support/reply", PROMPT)
    registry.save("cases", '{"id": "a", "vars": {"who": "Bo"}}\n', kind="dataset")
    registry.set_label("support/reply", "production", 1)
    registry.save("support/reply", variant(PROMPT, 2))
    registry.set_split("support/reply", "production", {1: 50, 2: 50})
    assert sorted(tree_paths(registry.path)) == sorted([
        "README.md",
        f"prompts/{sha1_bucket('act-as-a-linux-terminal')}/act-as-a-linux-terminal.prompty",
        f"prompts/support/{sha1_bucket('support/reply')}/reply.prompty",
        f"datasets/{sha1_bucket('cases')}/cases.jsonl",
        f"labels/prompts/support/{sha1_bucket('support/reply')}/reply.yaml",
        f"splits/prompts/support/{sha1_bucket('support/reply')}/reply.yaml"])
    assert at("support/reply") == "prompts/support/@2/@0/reply.prompty"  # the docs' example
    # names, listings, references and messages never show a bucket
    assert [a.name for a in registry.list()] == [
        "act-as-a-linux-terminal", "cases", "support/reply"]
    snap = registry.get("support/reply@production")
    assert not [v for k, v in snap.to_dict().items()
                if k not in ("text", "email") and "@" in json.dumps(v)]
    warned = registry.save("warned", PROMPT.replace("{{ who }}", "{{ who }} {{ extra }}"))
    [warning] = registry.get(warned.ref).to_dict()["warnings"]
    assert warning["file"] == "prompts/warned.prompty"


def test_a_flat_library_keeps_every_folder_small(tmp_path):
    reg = Registry.init(tmp_path / "reg")
    with reg.transaction(message="import") as tx:
        tx.save_many([(f"act-as-number-{i:04d}", variant(PROMPT, i)) for i in range(3000)])
    repo = pygit2.Repository(reg.path)
    prompts = repo[reg.store.head()].tree["prompts"]
    assert len(prompts) == 16 and all(len(repo[entry.id]) == 16 for entry in prompts)
    sizes = [len(repo[inner.id]) for entry in prompts for inner in repo[entry.id]]
    assert sum(sizes) == 3000 and max(sizes) < 30  # ~12 per bucket
    # a save rewrites one bucket and two 16-entry folders, not a 3,000-entry one
    before = set(git("rev-list", "--objects", "--all", cwd=reg.path).split())
    reg.save("act-as-number-0007", variant(PROMPT, 99_999))
    new = set(git("rev-list", "--objects", "--all", cwd=reg.path).split()) - before
    trees = [repo[oid] for oid in new if repo[oid].type == pygit2.enums.ObjectType.TREE]
    assert len(trees) == 4  # root, prompts/, prompts/@x/, prompts/@x/@y/
    assert max(len(t) for t in trees) < 30
    reg.close()


def test_promptrev_path_prints_where_a_name_sits(cli):
    out = cli("path", "support/reply").output.split("\n")
    assert out[:3] == ["file    prompts/support/@2/@0/reply.prompty",
                       "labels  labels/prompts/support/@2/@0/reply.yaml",
                       "splits  splits/prompts/support/@2/@0/reply.yaml"]
    data = json.loads(cli("path", "cases", "--kind", "dataset", "--json").output)
    assert data["file"] == f"datasets/{sha1_bucket('cases')}/cases.jsonl"
    bad = cli("path", "../etc", ok=False)
    assert bad.exit_code != 0 and "segment" in bad.output


# ---- a registry made before buckets -----------------------------------------------------
def legacy_registry(path, tmp_path):
    """A registry as releases before buckets left it: files at prompts/<name>.prompty,
    labels and splits beside, an adapter version made at adapters/<name>/, and a branch
    (an open change request) with its own edit; indexed by then."""
    reg = Registry.init(path)
    reg.push_adapter("tone", str(make_adapter(tmp_path / "lora")))  # v1, where today puts it
    store = reg.store
    reg.close()
    git("config", "--unset", "promptrev.layout", cwd=path)
    head = store.head()
    card = at("tone", "adapter").rsplit("/", 1)[0]
    files = {f"{card}/{f}": store.blob_at(head, f"{card}/{f}").encode()
             for f in ("adapter.yaml", "adapter_config.json", "adapter_model.safetensors")}

    def commit(changes, message):
        nonlocal head
        # text is written as a new blob; a blob id (bytes: its hex) is used as it is
        blobs = {p: (store.write_blob(t.encode()) if isinstance(t, str) else
                     t.decode() if t is not None else None) for p, t in changes.items()}
        new = store.commit(head, blobs, message, SIG)
        store.move_main(head, new, "old release")
        head = new
        return new

    # the adapter's files back where the old layout had them, then a new version there
    commit({**{p: None for p in files},
            **{p.replace(card, "adapters/tone"): b for p, b in files.items()}}, "old layout")
    commit({p.replace(card, "adapters/tone"): None for p in files}, "drop tone")
    commit({p.replace(card, "adapters/tone"): b for p, b in files.items()}, "tone again")
    commit({"prompts/greet.prompty": PROMPT, "prompts/team/a.prompty": variant(PROMPT, 1),
            "datasets/cases.jsonl": '{"id": "a", "vars": {"who": "Bo"}}\n'}, "first")
    commit({"prompts/greet.prompty": variant(PROMPT, 2),
            "labels/prompts/greet.yaml": "production: 1\n"}, "second")
    commit({"splits/prompts/greet.yaml": "canary:\n  1: 90\n  2: 10\n"}, "canary")
    branch = store.commit(head, {"prompts/greet.prompty": store.write_blob(
        variant(PROMPT, 3).encode()), "prompts/team/b.prompty": store.write_blob(
        variant(PROMPT, 4).encode())}, "a proposal", SIG)
    store.move_ref("refs/heads/review/friendlier", None, branch, "old release")
    old = Registry(str(path), GitStore(path), f"sqlite:///{path}/promptrev-index.sqlite")
    old.sync()  # indexed by then: the index holds rows of the old layout's commits
    seen = {"head": head, "branch": branch, "history": old.history("greet"),
            "labels": old.labels("greet"), "splits": old.splits("greet"),
            "list": [(a.name, a.latest) for a in old.list(include_deleted=True)],
            "tone": [(v.number, v.deleted) for v in old.history("tone", kind="adapter")]}
    old.close()
    assert not Registry(str(path), GitStore(path), "sqlite://").bucketed()
    return seen


def test_a_registry_made_before_buckets_moves_in_place_on_open_with_history(tmp_path):
    path = tmp_path / "reg"
    seen = legacy_registry(path, tmp_path)
    assert "prompts/greet.prompty" in tree_paths(path)
    reg = Registry.open(path)
    assert reg.bucketed()
    for ref in ("main", "review/friendlier"):  # every branch, each by one more commit
        paths = tree_paths(path, ref)
        assert all(placed(p) == p for p in paths) and at("greet") in paths, paths
        assert git("rev-parse", f"{ref}~1", cwd=path).strip() == \
            seen["head" if ref == "main" else "branch"]
    assert git("log", "-1", "--format=%s", "main", cwd=path).strip() == \
        "Move files into buckets"
    # the move made no version and moved no label: history reads as it did
    assert reg.history("greet") == seen["history"]
    assert (reg.labels("greet"), reg.splits("greet")) == (seen["labels"], seen["splits"])
    assert [(a.name, a.latest) for a in reg.list(include_deleted=True)] == seen["list"]
    assert [(v.number, v.deleted) for v in reg.history("tone", kind="adapter")] == \
        seen["tone"] == [(3, False), (2, True), (1, False)]
    assert reg.audit()[0].versions == () and reg.audit()[0].label_moves == ()
    assert reg.get("greet@1").text == PROMPT and reg.get("greet@production").text == PROMPT
    # versions made in the old layout still read their files where they were
    assert reg.adapter("tone@3").pointer == reg.adapter("tone@1").pointer
    # a rebuild from Git reads both layouts into the same rows
    rows = reg.index.dump()
    reg.reindex()
    assert reg.index.dump() == rows and reg.fsck()["ok"]
    # writes go into buckets, and the change request still shows its own edits
    assert reg.save("greet", variant(PROMPT, 7)).number == 3
    assert "prompts/greet.prompty" not in tree_paths(path)
    head = reg.store.head()
    reg.close()
    Registry.open(path).close()  # a second open moves nothing
    assert git("rev-parse", "main", cwd=path).strip() == head


def test_an_open_change_request_keeps_its_edits_approvals_and_comments(tmp_path):
    from promptrev.accounts import User
    from promptrev.reviews import Reviews

    path = tmp_path / "reg"
    seen = legacy_registry(path, tmp_path)
    old = Registry(str(path), GitStore(path), f"sqlite:///{path}/promptrev-index.sqlite")
    ann, bob = User(2, "ann", "ann@x.org", "editor"), User(3, "bob", "bob@x.org", "editor")
    reviews = Reviews(old)
    request = reviews.on_push("review/friendlier", None, seen["branch"], ann)
    reviews.approve(request.number, bob)
    reviews.comment(request.number, bob, "this line?", path="prompts/greet.prompty", line=2)
    old.close()

    reg = Registry.open(path)  # moves main and the request's branch into buckets
    reviews = Reviews(reg)
    moved = reviews.get(request.number)
    assert moved.head == reg.store.ref("refs/heads/review/friendlier") != seen["branch"]
    assert [a["user"] for a in moved.approvals] == ["bob"]  # the move changed no content
    assert [c["outdated"] for c in moved.comments] == [False]
    assert "promptrev" not in reviews.contributors(moved)
    changes = {(c.name, c.change, c.path) for c in reviews.changes(request.number)}
    assert changes == {("greet", "modified", "prompts/greet.prompty"),
                       ("team/b", "added", "prompts/team/b.prompty")}
    merged = reviews.merge(request.number, User(1, "root", "root@x.org", "admin"))
    assert sorted(merged.versions) == ["greet@3", "team/b@1"]
    assert reg.get("greet").text == variant(PROMPT, 3)
    assert all(placed(p) == p for p in tree_paths(path))
    reg.close()


def test_fsck_finds_files_put_back_outside_their_bucket_and_repair_moves_them(registry):
    registry.save("greet", PROMPT)
    store = registry.store
    head = store.head()
    blob = store.blob_at(head, at("greet"))
    moved = store.commit(head, {at("greet"): None, "prompts/greet.prompty": blob},
                         "behind promptrev's back", SIG)
    store.move_main(head, moved, "test")  # past every check, as a shell on the server could
    report = registry.fsck()
    assert not report["ok"]
    assert any(p.startswith(f"prompts/greet.prompty: 'greet' is stored at {at('greet')}")
               for p in report["problems"]), report["problems"]
    repaired = registry.fsck(repair=True)
    assert repaired["ok"], repaired["problems"]
    assert "moved the files of refs/heads/main into their buckets" in repaired["repaired"]
    assert git("log", "-1", "--format=%B", "main", cwd=registry.path).splitlines()[:3] == [
        "Move misplaced files into their buckets", "", f"prompts/greet.prompty -> {at('greet')}"]
    assert at("greet") in tree_paths(registry.path)
    assert [v.number for v in registry.history("greet")] == [1]


def test_importing_a_checkout_of_a_registry_keeps_the_names(registry, tmp_path, cli):
    registry.save("support/reply", PROMPT)
    registry.save("cases", '{"id": "a", "vars": {"who": "Bo"}}\n', kind="dataset")
    work = tmp_path / "checkout"
    git("clone", "-q", registry.path, str(work))
    cli("-r", tmp_path / "other", "init")
    cli("-r", tmp_path / "other", "import", work)
    with Registry.open(tmp_path / "other") as other:
        assert sorted(a.name for a in other.list()) == ["cases", "support/reply"]


def test_shown_paths_drop_buckets_only():
    assert shown("prompts/support/@2/@0/reply.prompty") == "prompts/support/reply.prompty"
    assert shown("labels/prompts/@e/@7/summarize.yaml") == "labels/prompts/summarize.yaml"
    assert shown("prompts/plain.prompty") == "prompts/plain.prompty"
    for kind in KINDS.values():
        for name in ("a", "team/area/b-1", "x.y_z"):
            assert kind.artifact_of(kind.path(name)) == name
            assert kind.artifact_of(kind.filename(name)) == name  # the old layout, read
            assert kind.labelled_artifact_of(kind.label_path(name)) == name
            assert kind.split_artifact_of(kind.split_path(name)) == name
            wrong = kind.path(name).replace(sha1_bucket(name), "@0/@0" if sha1_bucket(
                name) != "@0/@0" else "@1/@1")
            assert kind.artifact_of(wrong) is None  # a wrong bucket stores nothing


def test_a_checkout_laid_out_by_hand_is_moved_into_buckets_with_git_mv(tmp_path, cli):
    repo = tmp_path / "team-prompts"
    git("init", "-q", "-b", "main", str(repo))
    files = {"prompts/x.prompty": PROMPT, "prompts/team/y.prompty": variant(PROMPT, 1),
             "labels/prompts/x.yaml": "production: 1\n", "docs/notes.md": "ours\n",
             at("already"): variant(PROMPT, 2)}
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "by hand", cwd=repo)
    dry = cli("move-into-buckets", repo, "--dry-run").output
    assert "3 file(s) to move" in dry and git("status", "--porcelain", cwd=repo) == ""
    out = cli("move-into-buckets", repo).output
    assert f"prompts/x.prompty -> {at('x')}" in out and "3 file(s) moved" in out
    renamed = sorted(line for line in git("status", "--porcelain", cwd=repo).splitlines())
    assert renamed == sorted([f"R  labels/prompts/x.yaml -> {label_at('x')}",
                              f"R  prompts/team/y.prompty -> {at('team/y')}",
                              f"R  prompts/x.prompty -> {at('x')}"])
    assert (repo / "docs/notes.md").read_text() == "ours\n"  # outside the layout: left alone
    assert cli("move-into-buckets", repo).output.strip() == "0 file(s) moved"


# ---- what an independent attack on buckets found ----------------------------------------
def _review_on(reg, ann, commit):
    from promptrev.reviews import Reviews

    reviews = Reviews(reg)
    return reviews, reviews.on_push("review/tone", None, commit, ann)


def test_a_readme_only_commit_on_a_request_makes_its_author_a_contributor(registry):
    from promptrev.accounts import User

    registry.save("greet", PROMPT)
    store, head = registry.store, registry.store.head()
    ann = User(2, "ann", "ann@x.org", "editor")
    edit = store.commit(head, {at("greet"): store.write_blob(variant(PROMPT, 1).encode())},
                        "warmer", Signature("ann", "ann@x.org"))
    store.move_ref("refs/heads/review/tone", None, edit, "pushed")
    reviews, request = _review_on(registry, ann, edit)
    readme = store.commit(edit, {"README.md": store.write_blob(b"see http://evil.example\n")},
                          "docs", Signature("mallory", "m@x.org"))
    empty = store.commit_tree(str(store.repo[readme].tree_id), [readme], "Move files into "
                              "buckets", Signature("mallory", "m@x.org"))
    store.move_ref("refs/heads/review/tone", edit, empty, "pushed, hook not run yet")
    seen = reviews.get(request.number)
    assert seen.head == edit  # neither commit is a bucket move: nothing was carried over
    reviews.on_push("review/tone", edit, empty, User(4, "mallory", "m@x.org", "editor"))
    assert "mallory" in reviews.contributors(reviews.get(request.number))


def test_repair_keeps_the_file_in_its_bucket_when_a_stray_copy_appears(registry):
    registry.save("greet", PROMPT)
    registry.save("greet", variant(PROMPT, 2))
    store, head = registry.store, registry.store.head()
    stray = store.commit(head, {"prompts/greet.prompty": store.write_blob(PROMPT.encode())},
                         "behind promptrev's back", SIG)
    store.move_main(head, stray, "test")
    report = registry.fsck(repair=True)
    assert report["ok"], report["problems"]
    assert any("removed prompts/greet.prompty" in line for line in
               git("log", "-1", "--format=%B", "main", cwd=registry.path).splitlines())
    assert registry.get("greet").text == variant(PROMPT, 2)
    assert "prompts/greet.prompty" not in tree_paths(registry.path)


def test_fsck_finds_label_maps_and_wrong_buckets_and_repair_moves_them(registry):
    registry.save("greet", PROMPT)
    registry.set_label("greet", "production", 1)
    registry.save("typo", PROMPT)
    store, head = registry.store, registry.store.head()
    wrong = at("typo").replace(sha1_bucket("typo"), "@0/@0" if sha1_bucket("typo") !=
                               "@0/@0" else "@1/@1")
    moved = store.commit(head, {label_at("greet"): None,
                                "labels/prompts/greet.yaml": store.blob_at(head,
                                                                           label_at("greet")),
                                at("typo"): None, wrong: store.blob_at(head, at("typo"))},
                         "behind promptrev's back", SIG)
    store.move_main(head, moved, "test")
    problems = registry.fsck()["problems"]
    assert any(p.startswith(f"labels/prompts/greet.yaml: 'greet' is stored at "
                            f"{label_at('greet')}") for p in problems), problems
    assert any(p.startswith(f"{wrong}: 'typo' is stored at {at('typo')}") for p in problems)
    assert registry.fsck(repair=True)["ok"]
    assert {label_at("greet"), at("typo")} <= set(tree_paths(registry.path))
    assert registry.labels("greet") == {"production": 1} and registry.get("typo").text == PROMPT


def test_two_registries_that_followed_each_other_move_into_the_same_commit(tmp_path):
    import shutil

    seen = legacy_registry(tmp_path / "a", tmp_path)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    Registry.open(tmp_path / "a").close()
    Registry.open(tmp_path / "b").close()
    heads = {git("rev-parse", "main", cwd=tmp_path / r).strip() for r in "ab"}
    assert len(heads) == 1 and heads != {seen["head"]}


def test_a_team_history_from_before_buckets_is_adopted_once_moved(tmp_path, cli):
    team = tmp_path / "team.git"
    work = tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(team))
    git("clone", "-q", str(team), str(work))
    for n, text in enumerate([PROMPT, variant(PROMPT, 1)]):
        (work / "prompts").mkdir(exist_ok=True)
        (work / "prompts/greet.prompty").write_text(text)
        git("add", "-A", cwd=work)
        git("-c", "user.name=Ada", "-c", "user.email=ada@x", "commit", "-qm", f"v{n}", cwd=work)
    cli("move-into-buckets", work)
    git("-c", "user.name=Ada", "-c", "user.email=ada@x", "commit", "-qm", "buckets", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    reg = tmp_path / "reg"
    cli("-r", reg, "init")
    cli("-r", reg, "remote", "add", "origin", team)
    cli("-r", reg, "pull")
    with Registry.open(reg) as adopted:
        assert [v.number for v in adopted.history("greet")] == [2, 1]
        assert adopted.get("greet").text == variant(PROMPT, 1)


def test_a_branch_from_before_the_move_that_adds_the_bucket_file_is_told_to_rebase(tmp_path):
    from promptrev.incoming import check_changes

    path = tmp_path / "reg"
    seen = legacy_registry(path, tmp_path)
    reg = Registry.open(path)
    store = reg.store
    stale = store.commit(seen["head"], {at("greet"): store.write_blob(
        variant(PROMPT, 9).encode())}, "edit from an old clone", SIG)
    out = check_changes(reg, store.merge_base(store.head(), stale), stale)
    assert any("both hold prompt 'greet'" in p["message"] and "git pull --rebase" in
               p["message"] for p in out.problems), out.problems
    reg.close()


def test_move_into_buckets_never_overwrites_a_file(tmp_path, cli):
    folder = tmp_path / "plain"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts/x.prompty").write_text("old\n")
    (folder / at("x")).parent.mkdir(parents=True)
    (folder / at("x")).write_text("newer\n")
    out = cli("move-into-buckets", folder, ok=False)
    assert out.exit_code == 1 and f"{at('x')} exists already" in out.output
    assert (folder / at("x")).read_text() == "newer\n"
    assert (folder / "prompts/x.prompty").read_text() == "old\n"
    assert "0 file(s) moved" in out.output and "commit them" not in out.output


def test_a_large_commit_built_by_fast_import_is_the_commit_libgit2_would_make(registry,
                                                                               monkeypatch):
    from promptrev.storage import gitstore

    registry.save("seed", PROMPT)
    store, head = registry.store, registry.store.head()
    changes = {at(f"p{i:03d}"): store.write_blob(variant(PROMPT, i).encode())
               for i in range(gitstore.FAST_IMPORT_MIN_BLOBS + 6)}
    changes[at("seed")] = None
    by_git = store.write_commit(head, changes, "many\n\nbody", SIG, when=1_800_000_000)
    monkeypatch.setattr(gitstore, "FAST_IMPORT_MIN_BLOBS", 10**9)
    by_libgit2 = store.write_commit(head, changes, "many\n\nbody", SIG, when=1_800_000_000)
    assert by_git == by_libgit2 and by_git.sha == store.commit(head, changes, "many\n\nbody",
                                                               SIG, when=1_800_000_000)
    assert not store.refs("refs/promptrev/")  # the temporary ref is gone
    unchanged = {at(f"p{i:03d}"): None for i in range(70)}  # deletes nothing that exists
    monkeypatch.undo()
    assert store.write_commit(head, unchanged, "nothing", SIG) is None


def test_a_registry_from_before_buckets_on_a_read_only_disk_still_answers_reads(tmp_path):
    from .test_recovery_edges import _bind_read_only

    path = tmp_path / "reg"
    seen = legacy_registry(path, tmp_path)
    if not _bind_read_only(path):
        pytest.skip("cannot bind-mount read-only here (needs root)")
    try:
        reg = Registry.open(path, index_url="sqlite://")  # cannot move: warns, reads on
        assert not reg.bucketed()
        assert [(v.number, v.commit) for v in reg.history("greet")] == [
            (v.number, v.commit) for v in seen["history"]]
        assert reg.labels("greet") == seen["labels"] and reg.splits("greet") == seen["splits"]
        assert reg.get("greet@production").text == PROMPT
        reg.close()
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_bulk_write_killed_before_main_named_its_commit_leaves_nothing_fsck_misses(registry):
    from promptrev.storage.gitstore import FAST_IMPORT_REFS

    registry.save("greet", PROMPT)
    store = registry.store
    dead = 2**22 + 12345  # above any pid this machine hands out (pid_max is 2**22)
    store.move_ref(f"{FAST_IMPORT_REFS}/{dead}-1", None, store.head(), "killed mid-write")
    store.move_ref(f"{FAST_IMPORT_REFS}/{os.getpid()}-1", None, store.head(), "still writing")
    problems = registry.fsck()["problems"]
    assert [p for p in problems if FAST_IMPORT_REFS in p] == [
        f"{FAST_IMPORT_REFS}/{dead}-1 was left by a bulk write that was killed before main "
        "named its commit; 'promptrev fsck --repair' removes it"]
    report = registry.fsck(repair=True)
    assert f"removed {FAST_IMPORT_REFS}/{dead}-1" in report["repaired"] and report["ok"]
    assert list(store.refs(FAST_IMPORT_REFS + "/")) == [f"{FAST_IMPORT_REFS}/{os.getpid()}-1"]
