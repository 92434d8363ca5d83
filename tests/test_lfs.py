"""Adapter weights over Git LFS: the real ``git`` and ``git-lfs`` against ``promptrev serve``.

A clone brings weights pointers; ``git lfs pull`` brings the bytes through the server's
batch API; a ``git push`` of a new adapter version uploads its weights first (git-lfs's
pre-push) and is then checked as ``promptrev adapter push`` would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from promptrev import Registry, remotes
from promptrev.errors import RemoteFailed
from promptrev.model.adapter_cards import build_card, dump_card
from promptrev.model.lfs import MEDIA_TYPE, Pointer

from .conftest import at
from .live import ROOT, start_server
from .test_adapters import make_adapter
from .test_git_http import GIT_PATH, Git, remote_main

needs_git_lfs = pytest.mark.skipif(
    shutil.which("git-lfs") is None,
    reason="git-lfs is not installed (apt-get install git-lfs; .ci/run installs it): the "
           "Git LFS tests need the real client")
ATTRIBUTES = "adapters/**/adapter_model.safetensors filter=lfs diff=lfs merge=lfs -text\n"
LFS = GIT_PATH + "/info/lfs"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lfs")
    live = start_server(tmp, workers=2)
    live.cli("user", "add", "erin", "--role", "editor")
    live.cli("user", "add", "vic", "--role", "viewer")
    live.tokens = {"admin": live.token(), "editor": live.token("erin"),
                   "viewer": live.token("vic")}
    live.weights = {}
    folder = make_adapter(tmp / "tone-1", seed=1)
    live.cli("adapter", "push", str(folder), "--name", "support/tone", "-m", "tone v1")
    live.weights["support/tone"] = (Path(folder) / "adapter_model.safetensors").read_bytes()
    yield live
    live.stop()


@pytest.fixture
def git_as(server, tmp_path):
    """``git_as("editor")``: a git client with git-lfs set up, holding that role's token."""
    def make(role: str | None) -> Git:
        git = Git(tmp_path / (role or "nobody"), server, server.tokens.get(role))
        git("lfs", "install", "--skip-repo")
        return git
    return make


def clone_with_weights(git: Git, name: str = "work") -> Path:
    """Clone, say which files are LFS files (the clone's own attributes), pull the bytes."""
    work = git.clone(name)
    (work / ".git" / "info" / "attributes").write_text(ATTRIBUTES)
    git("lfs", "pull", cwd=work)
    return work


def weights_at(work: Path, name: str) -> Path:
    return work / at(name, "adapter").rsplit("/", 1)[0] / "adapter_model.safetensors"


def stored(server, oid: str) -> Path:
    return server.registry / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def new_version(server, work: Path, name: str, seed: int, tmp: Path) -> bytes:
    """Write a new adapter version into a clone: PEFT's files, and the card that
    'promptrev adapter card' writes for them."""
    source = make_adapter(tmp / f"src-{seed}", seed=seed, rank=8)
    folder = weights_at(work, name).parent
    folder.mkdir(parents=True, exist_ok=True)
    for filename in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(Path(source) / filename, folder / filename)
    assert "LORA" in server.cli("adapter", "card", str(folder), "--description", f"{seed}")
    return (folder / "adapter_model.safetensors").read_bytes()


def batch(server, operation: str, objects: list[dict], role: str | None):
    headers = {"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE}
    if role:
        headers["Authorization"] = f"Bearer {server.tokens[role]}"
    return httpx.post(server.url + LFS + "/objects/batch", headers=headers, timeout=30,
                      json={"operation": operation, "transfers": ["basic"],
                            "objects": objects})


# ---- reading ------------------------------------------------------------------------------
@needs_git_lfs
def test_clone_then_lfs_pull_brings_the_real_weights(server, git_as):
    git = git_as("viewer")
    work = git.clone()
    pointer = weights_at(work, "support/tone").read_text()
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    (work / ".git" / "info" / "attributes").write_text(ATTRIBUTES)
    git("lfs", "pull", cwd=work)
    assert weights_at(work, "support/tone").read_bytes() == server.weights["support/tone"]
    assert git("status", "--porcelain", cwd=work).stdout == ""  # the pointer, as Git sees it
    listed = git("lfs", "ls-files", "--long", cwd=work).stdout
    assert hashlib.sha256(server.weights["support/tone"]).hexdigest() in listed


@needs_git_lfs
def test_attributes_set_once_per_machine_make_the_clone_itself_bring_weights(server, git_as):
    """The registry refuses a pushed .gitattributes (issue 14): the client's own attributes
    file says which files are LFS files, for every clone, and checkout fetches them."""
    git = git_as("viewer")
    attributes = git.home / "attributes"
    attributes.write_text(ATTRIBUTES)
    git("config", "--global", "core.attributesFile", str(attributes))
    work = git.clone("direct")
    assert weights_at(work, "support/tone").read_bytes()[:8] != b"version "
    assert git("status", "--porcelain", cwd=work).stdout == ""


def test_download_needs_a_token_unless_reads_are_open(server):
    oid = hashlib.sha256(server.weights["support/tone"]).hexdigest()
    objects = [{"oid": oid, "size": len(server.weights["support/tone"])}]
    refused = batch(server, "download", objects, None)
    assert refused.status_code == 401
    assert refused.headers["LFS-Authenticate"].startswith("Basic")
    assert refused.headers["Content-Type"] == MEDIA_TYPE
    assert "API token" in refused.json()["message"]
    missing = batch(server, "download", [{"oid": "0" * 64, "size": 1}], "viewer").json()
    assert missing["objects"][0]["error"]["code"] == 404


# ---- writing ------------------------------------------------------------------------------
@needs_git_lfs
def test_git_push_of_a_new_adapter_version_uploads_its_weights(server, git_as, tmp_path):
    git = git_as("editor")
    work = clone_with_weights(git)
    weights = new_version(server, work, "support/tone", 7, tmp_path)
    oid = hashlib.sha256(weights).hexdigest()
    assert not stored(server, oid).exists()
    git.commit(work, "tone v2: rank 8")
    blob = git("cat-file", "-p", "HEAD:" + at("support/tone", "adapter").rsplit("/", 1)[0]
               + "/adapter_model.safetensors", cwd=work).stdout
    assert Pointer.parse(blob).oid == oid  # Git holds the pointer, not the bytes
    pushed = git("push", "origin", "main", cwd=work)
    assert "adapter support/tone is now version 2" in pushed.stderr
    assert stored(server, oid).read_bytes() == weights
    assert remote_main(server) == git("rev-parse", "HEAD", cwd=work).stdout.strip()
    shown = json.loads(server.cli("adapter", "show", "support/tone@2", "--json"))
    assert shown["weights"] == {"oid": oid, "size": len(weights)} and shown["card"]["rank"] == 8
    # ...and is served: another clone's git lfs pull brings the new bytes.
    again = clone_with_weights(git_as("viewer"), "again")
    assert weights_at(again, "support/tone").read_bytes() == weights


@needs_git_lfs
def test_a_push_is_checked_as_adapter_push_is(server, git_as, tmp_path):
    """Weights that are not safetensors are refused by name, as 'adapter push' refuses them."""
    git = git_as("editor")
    work = clone_with_weights(git, "bad")
    new_version(server, work, "support/bad", 3, tmp_path)
    folder = weights_at(work, "support/bad").parent
    junk = b"not a safetensors file at all" * 10
    (folder / "adapter_model.safetensors").write_bytes(junk)
    config_bytes = (folder / "adapter_config.json").read_bytes()
    (folder / "adapter.yaml").write_text(dump_card(build_card(
        json.loads(config_bytes), config_bytes,
        Pointer(hashlib.sha256(junk).hexdigest(), len(junk)))))
    git.commit(work, "junk weights")
    before = remote_main(server)
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0
    assert "adapter_model.safetensors" in out.stderr and "safetensors" in out.stderr
    assert remote_main(server) == before


def test_a_wrong_size_upload_is_refused_and_nothing_is_stored(server):
    data = b"\x00weights" * 1000
    oid = hashlib.sha256(data).hexdigest()
    answer = batch(server, "upload", [{"oid": oid, "size": len(data)}], "editor")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == MEDIA_TYPE
    upload = answer.json()["objects"][0]["actions"]["upload"]
    short = httpx.put(upload["href"], content=data[:-10], headers=upload["header"], timeout=30)
    assert short.status_code == 422 and short.headers["Content-Type"] == MEDIA_TYPE
    assert "announced as 8,000 bytes" in short.json()["message"]
    forged = bytearray(data)
    forged[0] = 1
    other = httpx.put(upload["href"], content=bytes(forged), headers=upload["header"],
                      timeout=30)
    assert other.status_code == 422 and "hashes to" in other.json()["message"]
    assert not stored(server, oid).exists()
    verify = answer.json()["objects"][0]["actions"]["verify"]
    unverified = httpx.post(verify["href"], json={"oid": oid, "size": len(data)},
                            headers=verify["header"], timeout=30)
    assert unverified.status_code == 404
    # The right bytes are taken; the object then answers a wrong size by name.
    assert httpx.put(upload["href"], content=data, headers=upload["header"],
                     timeout=30).status_code == 200
    assert stored(server, oid).read_bytes() == data
    wrong = batch(server, "upload", [{"oid": oid, "size": 5}], "editor").json()["objects"][0]
    assert wrong["error"]["code"] == 422 and "8,000 bytes" in wrong["error"]["message"]


@needs_git_lfs
def test_a_pushed_pointer_with_the_wrong_size_is_refused(server, git_as, tmp_path):
    git = git_as("editor")
    work = clone_with_weights(git, "size")
    new_version(server, work, "support/sized", 4, tmp_path)
    git.commit(work, "sized v1")
    git("push", "origin", "main", cwd=work)
    folder = weights_at(work, "support/sized").parent
    card = (folder / "adapter.yaml").read_text()
    pointer_path = folder.relative_to(work).as_posix() + "/adapter_model.safetensors"
    real = Pointer.parse(git("cat-file", "-p", f"HEAD:{pointer_path}", cwd=work).stdout)
    lie = Pointer(real.oid, real.size + 100)
    # A pointer (and card) written by hand, naming the stored object with another size.
    (tmp_path / "lie").write_text(lie.text())
    blob = git("hash-object", "-w", str(tmp_path / "lie"), cwd=work).stdout.strip()
    git("update-index", "--cacheinfo", f"100644,{blob},{pointer_path}", cwd=work)
    (folder / "adapter.yaml").write_text(card.replace(f"size: {real.size}",
                                                      f"size: {lie.size}"))
    git("add", str(folder / "adapter.yaml"), cwd=work)
    git("commit", "-q", "-m", "lie about the size", cwd=work)
    before = remote_main(server)
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0
    assert f"{lie.size:,}" in out.stderr and "bytes" in out.stderr, out.stderr
    assert remote_main(server) == before


@needs_git_lfs
def test_a_viewer_cannot_upload(server, git_as, tmp_path):
    data = b"viewer bytes" * 50
    oid = hashlib.sha256(data).hexdigest()
    refused = batch(server, "upload", [{"oid": oid, "size": len(data)}], "viewer")
    assert refused.status_code == 403 and "editor role" in refused.json()["message"]
    put = httpx.put(f"{server.url}{LFS}/objects/{oid}", content=data, timeout=30,
                    headers={"Authorization": f"Bearer {server.tokens['viewer']}"})
    assert put.status_code == 403 and not stored(server, oid).exists()
    # Through git: git-lfs's pre-push asks to upload and is refused; nothing moves.
    git = git_as("viewer")
    work = clone_with_weights(git, "viewer")
    weights = new_version(server, work, "support/viewer", 11, tmp_path)
    git.commit(work, "a viewer's adapter")
    before = remote_main(server)
    out = git("push", "origin", "main", cwd=work, check=False)
    assert out.returncode != 0 and "pushing needs the editor role" in out.stderr, out.stderr
    # git-lfs's own upload (what pre-push runs) is refused by the batch API, by name.
    lfs = git("lfs", "push", "origin", "main", cwd=work, check=False)
    assert lfs.returncode != 0
    assert "uploading Git LFS objects needs the editor role" in lfs.stderr, lfs.stderr
    assert not stored(server, hashlib.sha256(weights).hexdigest()).exists()
    assert remote_main(server) == before


# ---- promptrev pull/push with a remote --------------------------------------------------
def test_pull_and_push_with_a_promptrev_server_move_the_weights(server, tmp_path):
    """An http(s) remote: the weights go through the server's batch API."""
    url = server.url.replace("http://", f"http://git:{server.tokens['editor']}@") + GIT_PATH
    local = Registry.init(tmp_path / "local.git")
    try:
        remotes.add(local, "origin", url)
        pulled = remotes.pull(local, "origin")
        assert pulled.action == "adopt" and pulled.objects >= 1
        tone = local.adapter_source("support/tone@1")
        assert (Path(tone.path) / "adapter_model.safetensors").read_bytes() == \
            server.weights["support/tone"]
        folder = make_adapter(tmp_path / "mine", seed=21)
        weights = (Path(folder) / "adapter_model.safetensors").read_bytes()
        oid = hashlib.sha256(weights).hexdigest()
        local.push_adapter("support/from-local", str(folder), message="made here",
                           author="Ada <ada@example.org>")
        pushed = remotes.push(local, "origin")
        assert pushed.action == "pushed" and pushed.objects == 1
        assert stored(server, oid).read_bytes() == weights
        shown = json.loads(server.cli("adapter", "show", "support/from-local", "--json"))
        assert shown["weights"]["oid"] == oid
        assert remotes.push(local, "origin").objects == 0  # nothing new to send
    finally:
        local.close()


@needs_git_lfs
def test_pull_and_push_with_a_bare_remote_keep_weights_where_git_lfs_does(tmp_path):
    """A local remote: objects go to its ``lfs/objects`` folder, git-lfs's own layout."""
    bare = tmp_path / "team.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)],
                   check=True)
    first = Registry.init(tmp_path / "first.git")
    second = Registry.init(tmp_path / "second.git")
    try:
        folder = make_adapter(tmp_path / "a", seed=3)
        weights = (Path(folder) / "adapter_model.safetensors").read_bytes()
        oid = hashlib.sha256(weights).hexdigest()
        first.push_adapter("team/tone", str(folder), author="Ada <ada@example.org>")
        remotes.add(first, "origin", str(bare))
        assert remotes.push(first, "origin").objects == 1
        assert (bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == weights
        remotes.add(second, "origin", f"file://{bare}")
        assert remotes.pull(second, "origin").objects == 1
        assert second.objects.read(Pointer(oid, len(weights))) == weights
        # A teammate's git-lfs reads the same folder: clone, then git lfs pull.
        home = tmp_path / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": str(home / "gitconfig")}
        subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True,
                       capture_output=True)
        work = tmp_path / "mate"
        subprocess.run(["git", "clone", "-q", f"file://{bare}", str(work)], env=env,
                       check=True, capture_output=True)
        (work / ".git" / "info" / "attributes").write_text(ATTRIBUTES)
        subprocess.run(["git", "lfs", "pull"], cwd=work, env=env, check=True,
                       capture_output=True)
        assert weights_at(work, "team/tone").read_bytes() == weights
    finally:
        first.close()
        second.close()


def test_adapter_card_checks_the_folder_as_adapter_push_does(tmp_path):
    folder = make_adapter(tmp_path / "a", seed=2)

    def card(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "promptrev.cli", "--registry",
                               str(tmp_path / "reg"), "adapter", "card", str(folder), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    made = card("--lineage", '{"dataset": "tone@2"}', "--name", "support/tone")
    assert made.returncode == 0, made.stderr
    assert f"lives in {at('support/tone', 'adapter').rsplit('/', 1)[0]}/" in made.stdout
    written = (Path(folder) / "adapter.yaml").read_text()
    weights = (Path(folder) / "adapter_model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() in written and "tone@2" in written
    assert not (tmp_path / "reg").exists()  # nothing stored anywhere
    bad = card("--lineage", "{nope")
    assert bad.returncode == 2 and "--lineage" in bad.stderr and "Traceback" not in bad.stderr
    (Path(folder) / "adapter_model.safetensors").write_bytes(b"junk")
    junk = card()
    assert junk.returncode != 0 and "not a safetensors file" in junk.stderr


def test_an_http_remote_without_a_git_lfs_server_is_named_not_half_pulled(tmp_path):
    """A plain HTTP Git server (dumb protocol, no LFS API): the weights cannot come, and
    the pull says so before anything changes."""
    import functools
    import http.server
    import threading

    bare = tmp_path / "served" / "team.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)],
                   check=True)
    first = Registry.init(tmp_path / "first.git")
    second = Registry.init(tmp_path / "second.git")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "served"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        first.push_adapter("team/tone", str(make_adapter(tmp_path / "a", seed=5)),
                           author="Ada <ada@example.org>")
        remotes.add(first, "origin", str(bare))
        remotes.push(first, "origin")
        subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
        remotes.add(second, "origin", f"http://127.0.0.1:{httpd.server_port}/team.git")
        head = second.store.head()
        with pytest.raises(RemoteFailed, match="has no Git LFS server") as refused:
            remotes.pull(second, "origin")
        assert "/team.git/info/lfs" in refused.value.message
        assert second.store.head() == head
    finally:
        httpd.shutdown()
        first.close()
        second.close()
