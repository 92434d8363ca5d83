"""Attacks on ``git push``: content no clone can use must be refused, with a clear message.

Each test builds a hostile tree with Git's plumbing (``mktree``, ``hash-object``,
``commit-tree``), pushes it with the real git CLI to a real ``promptrev serve`` and checks
that the push is refused with a ``remote:`` line naming the problem (never a traceback),
that ``main`` did not move and that a fresh clone still works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from promptrev.model import fanout
from promptrev.model.artifacts import KINDS

from ..conftest import PROMPT, ROOT, at, label_at, variant
from ..live import LiveServer, start_server
from ..test_adapters import make_adapter
from ..test_git_http import Git, api, remote_main

MIB = 1024 * 1024


def folder_of(name: str) -> str:
    """An adapter's folder in the tree (its card, config and weights pointer sit in it)."""
    return at(name, "adapter").rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("push-content")
    live = start_server(tmp, workers=2)
    live.cli("user", "add", "erin", "--role", "editor")
    live.tokens = {"admin": live.token(), "editor": live.token("erin")}
    # Every kind of file the registry writes itself: adapters (card, config, LFS pointer),
    # labels and traffic splits next to the seeded prompts, datasets and README.
    live.cli("adapter", "push", make_adapter(tmp / "lora", seed=3), "--name", "tone")
    (tmp / "ab.prompty").write_text(variant(PROMPT, 2))
    live.cli("save", str(tmp / "ab.prompty"), "--name", "ab")
    (tmp / "ab.prompty").write_text(variant(PROMPT, 3))
    live.cli("save", str(tmp / "ab.prompty"), "--name", "ab", "--base", "1")
    live.cli("label", "set", "ab", "staging", "1")
    live.cli("label", "split", "ab", "canary", "1=90", "2=10")
    yield live
    live.stop()


@pytest.fixture
def git(server, tmp_path) -> Git:
    return Git(tmp_path / "editor", server, server.tokens["editor"])


@pytest.fixture
def admin(server, tmp_path) -> Git:
    return Git(tmp_path / "admin", server, server.tokens["admin"])


# ---- building hostile commits ----------------------------------------------------------------
def blob(git: Git, work: Path, data: bytes) -> str:
    out = subprocess.run(["git", "hash-object", "-w", "--stdin"], input=data, cwd=work,
                         env=git.env, capture_output=True, check=True)
    return out.stdout.decode().strip()


def _put(git: Git, work: Path, tree: str | None, parts: list[str], mode: str, oid: str) -> str:
    """A copy of ``tree`` with ``parts`` (a path) set to ``mode oid``: any name, any mode."""
    entries: dict[str, str] = {}
    if tree:
        listing = git("ls-tree", "-z", tree, cwd=work).stdout
        for line in filter(None, listing.split("\0")):
            entries[line.split("\t", 1)[1]] = line
    name = parts[0]
    if len(parts) == 1:
        kind = {"160000": "commit", "040000": "tree"}.get(mode, "blob")
        entries[name] = f"{mode} {kind} {oid}\t{name}"
    else:
        old = entries.get(name, "")
        sub = old.split()[2] if old.startswith("040000 tree") else None
        entries[name] = f"040000 tree {_put(git, work, sub, parts[1:], mode, oid)}\t{name}"
    out = subprocess.run(["git", "mktree", "-z"], input="".join(e + "\0" for e in
                         entries.values()), cwd=work, env=git.env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def commit_with(git: Git, work: Path, entries: list[tuple[str, str, str]],
                message: str = "hostile") -> str:
    """A commit on HEAD whose tree also holds ``(path, mode, object id)`` entries."""
    tree = git("rev-parse", "HEAD^{tree}", cwd=work).stdout.strip()
    for path, mode, oid in entries:
        tree = _put(git, work, tree, path.split("/"), mode, oid)
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    sha = git("commit-tree", tree, "-p", head, "-m", message, cwd=work).stdout.strip()
    git("update-ref", "HEAD", sha, cwd=work)
    return sha


def push_refused(git: Git, server: LiveServer, work: Path, *expected: str,
                 ref: str = "main") -> str:
    """Push HEAD to ``ref``; assert it is refused with every ``expected`` text, cleanly."""
    before = remote_main(server)
    out = git("push", "origin", f"HEAD:refs/heads/{ref}", cwd=work, check=False)
    assert out.returncode != 0, out.stderr
    assert "remote:" in out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    for text in expected:
        assert text in out.stderr, out.stderr
    assert remote_main(server) == before
    refs = git("ls-remote", "origin", cwd=work).stdout
    assert f"refs/heads/{ref}" not in refs or ref == "main"
    fresh = git.clone("fresh")  # every clone still works
    assert (fresh / at("summarize")).is_file()
    return out.stderr


# ---- what must keep working ------------------------------------------------------------------
def test_a_normal_push_is_accepted(server, git):
    work = git.clone()
    before = api(server, "/artifact", ref="summarize")["version"]
    path = work / at("summarize")
    path.write_text(path.read_text().replace("system:", "system:\nBe brief.", 1))
    extra = work / at("extra", "dataset")
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text('{"id": "1", "vars": {"text": "hi"}}\n')
    sha = git.commit(work, "an ordinary edit")
    out = git("push", "origin", "main", cwd=work)
    assert f"prompt summarize is now version {before + 1}" in out.stderr
    assert remote_main(server) == sha


def test_a_fresh_clone_pushed_back_unchanged_is_accepted(server, admin):
    """Every file of a clone (README, prompts, datasets, adapters, labels, splits) re-added."""
    work = admin.clone()
    tree = admin("rev-parse", "HEAD^{tree}", cwd=work).stdout.strip()
    files = admin("ls-tree", "-r", "--name-only", "HEAD", cwd=work).stdout.split()
    assert {"README.md", f"{folder_of('tone')}/adapter_model.safetensors",
            label_at("ab"), KINDS["prompt"].split_path("ab")} <= set(files)
    admin("rm", "-r", "-q", ".", cwd=work)
    admin("commit", "-q", "-m", "remove everything", cwd=work)
    admin("checkout", "HEAD~1", "--", ".", cwd=work)
    sha = admin.commit(work, "put everything back")
    assert admin("rev-parse", "HEAD^{tree}", cwd=work).stdout.strip() == tree
    out = admin("push", "origin", "main", cwd=work, check=False)
    assert out.returncode == 0, out.stderr
    assert remote_main(server) == sha


def test_a_prompt_pushed_outside_its_bucket_is_refused_and_in_it_makes_a_version(server, git):
    """Plain Git may write any path: a prompt at the path of the layout before buckets, or
    in another name's bucket, is refused naming where it belongs; in its bucket it is saved."""
    work = git.clone()
    right = at("x")
    mine = fanout.bucket("x")
    other = next(b for b in (fanout.bucket(f"y{i}") for i in range(100)) if b != mine)
    wrong = right.replace(f"/{mine}/", f"/{other}/", 1)
    assert wrong != right and wrong.endswith("/x.prompty")
    for path in ("prompts/x.prompty", wrong):
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(PROMPT)
        git.commit(work, f"x at {path}")
        err = push_refused(git, server, work, f"{path}: 'x' is stored at {right}: each name "
                           "has one place")
        assert "x" not in {a["name"] for a in api(server, "/artifacts")["artifacts"]}, err
        shutil.rmtree(git.home / "fresh")  # push_refused's own clone, made again next time
        git("reset", "-q", "--hard", "HEAD~1", cwd=work)
        assert not (work / path).exists()
    (work / right).parent.mkdir(parents=True, exist_ok=True)
    (work / right).write_text(PROMPT)
    sha = git.commit(work, "x in its bucket")
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode == 0, out.stderr
    assert "prompt x is now version 1" in out.stderr
    assert remote_main(server) == sha
    saved = api(server, "/artifact", ref="x")
    assert (saved["version"], saved["commit"], saved["text"]) == (1, sha, PROMPT)


# ---- one test per attack ---------------------------------------------------------------------
def test_a_dot_git_config_entry_is_refused(tmp_path):
    """On a server of its own: where it is accepted, no later clone of that server works."""
    (tmp_path / "own").mkdir()
    own = start_server(tmp_path / "own", workers=1)
    try:
        git = Git(tmp_path / "git", own, own.token())
        work = git.clone()
        config = blob(git, work, b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
        commit_with(git, work, [(".git/config", "100644", config)])
        push_refused(git, own, work, ".git")
    finally:
        own.stop()


def test_a_big_blob_outside_the_artifact_folders_is_refused(server, git):
    work = git.clone()
    big = blob(git, work, b"\0" * (20 * MIB))  # compresses to a small pack
    commit_with(git, work, [("big.bin", "100644", big)])
    err = push_refused(git, server, work, "big.bin", "20,971,520 bytes")
    assert "PROMPTREV_MAX_BYTES" in err
    missing = subprocess.run(["git", "--git-dir", str(server.registry), "cat-file", "-e", big],
                             capture_output=True)
    assert missing.returncode != 0  # refused objects do not stay in the registry


def test_a_big_blob_inside_the_artifact_folders_is_refused(server, git):
    work = git.clone()
    big = blob(git, work, PROMPT.encode() + b"x" * (20 * MIB))
    config = blob(git, work, b" " * (11 * MIB))
    commit_with(git, work, [(at("huge"), "100644", big),
                            (f"{folder_of('tone')}/adapter_config.json", "100644", config)])
    # Every blob has the limit, not only the artifact's own file (the config was refused
    # before only because its sha256 no longer matched the card, after being read).
    err = push_refused(git, server, work, f"{at('huge')}: is 20,971,",
                       f"{folder_of('tone')}/adapter_config.json: is 11,534,336 bytes",
                       "the limit is 10,485,760 bytes")
    assert "is stored at" not in err  # refused for the sizes, not for a place


@pytest.mark.parametrize("path,data", [
    (".gitattributes", b"*.prompty filter=evil\n"),
    (".gitmodules", b'[submodule "x"]\n\tpath = x\n\turl = https://example.org/x.git\n'),
    ("prompts/.gitattributes", b"* -text\n"),
])
def test_git_control_files_are_refused(server, git, path, data):
    work = git.clone()
    commit_with(git, work, [(path, "100644", blob(git, work, data))])
    push_refused(git, server, work, path, "Git control file")


def test_a_symlink_prompt_is_refused(server, git):
    work = git.clone()
    target = blob(git, work, b"/etc/passwd")
    commit_with(git, work, [(at("passwd"), "120000", target)])
    err = push_refused(git, server, work, f"{at('passwd')}: a symbolic link")
    assert "is stored at" not in err  # in its bucket: refused as a link, not for its place


def test_turning_an_existing_prompt_into_a_symlink_is_refused(server, git):
    """Same blob, new mode: a change of mode alone must be checked too."""
    work = git.clone()
    same = git("rev-parse", f"HEAD:{at('summarize')}", cwd=work).stdout.strip()
    commit_with(git, work, [(at("summarize"), "120000", same)])
    err = push_refused(git, server, work, f"{at('summarize')}: a symbolic link")
    assert "is stored at" not in err


def test_a_symlink_on_a_review_branch_is_refused_in_any_commit(server, git):
    work = git.clone()
    commit_with(git, work, [(at("passwd"), "120000", blob(git, work, b"/etc/passwd"))])
    base = git("rev-parse", "HEAD~1^{tree}", cwd=work).stdout.strip()
    gone = git("commit-tree", base, "-p", "HEAD", "-m", "gone again", cwd=work).stdout.strip()
    git("update-ref", "HEAD", gone, cwd=work)  # the proposal's net change is empty
    err = push_refused(git, server, work, f"{at('passwd')}: a symbolic link",
                       ref="review/sneaky")
    assert "is stored at" not in err


@pytest.mark.parametrize("path", ["prompts/sub", "prompts/sub.prompty", at("sub"), "vendor"])
def test_a_gitlink_is_refused_with_a_message_not_a_traceback(server, git, path):
    work = git.clone()
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    commit_with(git, work, [(path, "160000", head)])
    push_refused(git, server, work, path, "submodule")


def test_a_recursive_anchor_gives_a_remote_message_not_a_traceback(server, git):
    work = git.clone()
    loop = work / at("loop")
    loop.parent.mkdir(parents=True, exist_ok=True)
    loop.write_text("---\nname: loop\na: &x [*x]\n---\nuser:\nhi\n")
    git.commit(work, "recursive anchor")
    err = push_refused(git, server, work, "prompts/loop.prompty")
    assert "is stored at" not in err  # refused for its content, not its place


def test_an_lfs_pointer_with_the_wrong_size_is_refused(server, git):
    import yaml

    work = git.clone()
    tone = work / folder_of("tone")
    card = yaml.safe_load((tone / "adapter.yaml").read_text())
    pointer = (tone / "adapter_model.safetensors").read_text()
    size = card["files"]["adapter_model.safetensors"]["size"]
    card["files"]["adapter_model.safetensors"]["size"] = size - 1  # card and pointer agree
    liar = work / folder_of("liar")
    liar.mkdir(parents=True)
    (liar / "adapter.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (liar / "adapter_config.json").write_bytes(
        (tone / "adapter_config.json").read_bytes())
    (liar / "adapter_model.safetensors").write_text(
        pointer.replace(f"size {size}\n", f"size {size - 1}\n"))
    git.commit(work, "same weights, wrong size")
    err = push_refused(git, server, work, f"{folder_of('liar')}/adapter_model.safetensors",
                       f"{size - 1:,} bytes", f"{size:,} bytes")
    assert "is stored at" not in err
    # The shared object is untouched and still intact.
    assert server.cli("fsck").strip() == "ok"


# ---- fsck's advice, and import -----------------------------------------------------------------
def cli(registry: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry", str(registry),
                          *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PROMPTREV_AUTHOR": "T <t@example.org>"})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_fsck_blames_a_wrong_size_pointer_not_the_shared_object(tmp_path):
    """A registry that accepted such a pointer before: fsck must not advise deleting."""
    import yaml

    reg = tmp_path / "reg"
    cli(reg, "init")
    cli(reg, "adapter", "push", str(make_adapter(tmp_path / "lora", seed=4)), "--name", "a")
    git = ["git", "--git-dir", str(reg)]
    def run(*args, data=None):
        return subprocess.run([*git, *args], input=data, capture_output=True, text=True,
                              check=True).stdout.strip()
    card = yaml.safe_load(run("show", f"main:{folder_of('a')}/adapter.yaml"))
    pointer = run("show", f"main:{folder_of('a')}/adapter_model.safetensors") + "\n"
    size = card["files"]["adapter_model.safetensors"]["size"]
    card["files"]["adapter_model.safetensors"]["size"] = size + 5
    index = tmp_path / "index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run([*git, "read-tree", "main"], env=env, check=True)
    for name, text in (("adapter.yaml", yaml.safe_dump(card, sort_keys=False)),
                       ("adapter_model.safetensors",
                        pointer.replace(f"size {size}\n", f"size {size + 5}\n"))):
        oid = run("hash-object", "-w", "--stdin", data=text)
        subprocess.run([*git, "update-index", "--add", "--cacheinfo",
                        f"100644,{oid},{folder_of('b')}/{name}"], env=env, check=True)
    oid = run("rev-parse", f"main:{folder_of('a')}/adapter_config.json")
    subprocess.run([*git, "update-index", "--add", "--cacheinfo",
                    f"100644,{oid},{folder_of('b')}/adapter_config.json"], env=env, check=True)
    tree = subprocess.run([*git, "write-tree"], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    commit = run("commit-tree", tree, "-p", "main", "-m", "old bad pointer")
    run("update-ref", "refs/heads/main", commit)
    out = cli(reg, "fsck", check=False)
    report = out.stdout + out.stderr
    assert f"{folder_of('b')}/adapter_model.safetensors" in report, report
    assert "delete" not in report.lower(), report
    assert "intact" in report, report


def test_import_never_follows_a_symlink(server, git, tmp_path):
    secret = tmp_path / "outside" / "secret.prompty"
    secret.parent.mkdir()
    secret.write_text(PROMPT.replace("system:", "system:\nSECRET-MARKER-1234", 1))
    (tmp_path / "outside" / "more.prompty").write_text(PROMPT)
    work = git.clone()  # a clone of a registry that once accepted links
    (work / at("leak")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("leak")).symlink_to(secret)
    (work / "prompts/linked").symlink_to(secret.parent, target_is_directory=True)
    reg = tmp_path / "reg"
    cli(reg, "init")
    out = cli(reg, "import", str(work), check=False)
    assert out.returncode != 0
    assert at("leak") in out.stderr and "symbolic link" in out.stderr
    assert "prompts/linked" in out.stderr
    assert "Traceback" not in out.stderr
    shown = cli(reg, "list").stdout
    assert "leak" not in shown and "summarize" not in shown  # all or nothing
    dump = subprocess.run(["git", "--git-dir", str(reg), "log", "-p", "--all"],
                          capture_output=True, text=True).stdout
    assert "SECRET-MARKER-1234" not in dump
    # Without the links the same clone imports.
    os.unlink(work / at("leak"))
    os.unlink(work / "prompts/linked")
    cli(reg, "import", str(work))
    assert "summarize" in cli(reg, "list").stdout


def test_a_pull_refuses_a_symlink_prompt_and_leaves_the_teams_own_files_alone(tmp_path):
    """Content from a followed remote meets the same rules inside the layout's folders."""
    bare, work, reg = tmp_path / "team.git", tmp_path / "team", tmp_path / "reg"
    def team(*args):
        subprocess.run(["git", "-c", "user.name=Tea Mate", "-c", "user.email=t@example.org",
                        *args], cwd=work, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / at("greet")).parent.mkdir(parents=True)
    (work / at("greet")).write_text(PROMPT)
    (work / "src.py").write_text("print('the team keeps code here too')\n")
    (work / ".gitignore").write_text("*.pyc\n")
    (work / at("passwd")).parent.mkdir(parents=True, exist_ok=True)
    (work / at("passwd")).symlink_to("/etc/passwd")
    team("add", "-A")
    team("commit", "-q", "-m", "team prompts")
    team("push", "-q", str(bare), "HEAD:main")
    cli(reg, "init")
    cli(reg, "remote", "add", "origin", str(bare))
    out = cli(reg, "pull", check=False)
    assert out.returncode != 0
    assert f"{at('passwd')}: a symbolic link" in out.stderr, out.stderr
    assert "is stored at" not in out.stderr
    assert "greet" not in cli(reg, "list").stdout
    team("rm", "-q", at("passwd"))  # the link leaves the history itself
    team("commit", "-q", "--amend", "-m", "team prompts")
    team("push", "-q", "--force", str(bare), "HEAD:main")
    cli(reg, "pull")
    assert "greet" in cli(reg, "list").stdout
    tree = subprocess.run(["git", "--git-dir", str(reg), "ls-tree", "--name-only", "main"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert {"src.py", ".gitignore", "prompts"} <= set(tree)


@pytest.mark.parametrize("text", ['"": 1\n', '"we ird/../\\x1b[31m": 1\n', "latest: 1\n"])
def test_label_names_the_api_would_refuse_are_refused_in_a_push(server, admin, text):
    """Found by an attack on the first version: a pushed label file stored an empty name
    and an escape sequence, which every page then showed and no command could remove."""
    work = admin.clone(f"labels-{abs(hash(text))}")
    (work / label_at("summarize")).parent.mkdir(parents=True, exist_ok=True)
    (work / label_at("summarize")).write_text(text)
    before = remote_main(server)
    admin.commit(work, "odd label names")
    out = admin("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0, out.stderr
    assert label_at("summarize") in out.stderr and "label" in out.stderr
    assert "is stored at" not in out.stderr  # refused for the names, not for its place
    assert "Traceback" not in out.stderr
    assert remote_main(server) == before
