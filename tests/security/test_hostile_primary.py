"""Issue 20: a replica follows whatever ``PROMPTREV_PRIMARY`` says, so a hostile (or
compromised) primary must not get into the replica what a push could never bring: a
symbolic link, a Git control file or an oversized blob inside the layout. The replica's
follower checks the files each new commit brings in, as a pull does, and stops (saying
why) instead of moving ``main``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from promptrev import replication
from promptrev.errors import ValidationFailed
from promptrev.registry import Registry

from ..live import start_server
from ..test_adapters import make_adapter


@pytest.fixture(scope="module")
def primary(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-primary")
    live = start_server(root, workers=1, env={"PROMPTREV_DURABILITY": "off"})
    live.viewer = live.token()
    yield live
    live.stop()


def _git(repo, *args, env=None, data: bytes | None = None) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True,
                         check=True, env=env)
    return out.stdout.decode().strip()


def _plant(primary, tmp_path, path: str, mode: str, data: bytes) -> str:
    """What a hostile primary does: put a commit on main that no push would be let in."""
    repo = primary.registry
    old = _git(repo, "rev-parse", "refs/heads/main")
    blob = _git(repo, "hash-object", "-w", "--stdin", data=data)
    env = {"GIT_INDEX_FILE": str(tmp_path / "index"), "GIT_AUTHOR_NAME": "evil",
           "GIT_AUTHOR_EMAIL": "e@x", "GIT_COMMITTER_NAME": "evil",
           "GIT_COMMITTER_EMAIL": "e@x", "PATH": "/usr/bin:/bin"}
    _git(repo, "read-tree", old, env=env)
    _git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=env)
    tree = _git(repo, "write-tree", env=env)
    new = _git(repo, "commit-tree", tree, "-p", old, "-m", "planted", env=env)
    _git(repo, "update-ref", "refs/heads/main", new, old)
    return old


@pytest.mark.parametrize("path,mode,data,said", [
    ("prompts/support/evil/prompt.md", "120000", b"/etc/passwd", "symbolic link"),
    ("prompts/.gitattributes", "100644", b"* filter=lfs diff=lfs merge=lfs\n",
     "Git control file"),
    ("prompts/support/big/prompt.md", "100644", b"x" * (300 * 1024), "the limit is"),
], ids=["symlink", "gitattributes", "oversized"])
def test_a_hostile_primary_cannot_push_what_a_push_could_not(primary, tmp_path, path,
                                                             mode, data, said):
    replica = Registry.init(tmp_path / "replica", max_bytes=256 * 1024)
    try:
        before = replication.follow_once(replica, primary.url, primary.viewer)
        assert before == _git(primary.registry, "rev-parse", "refs/heads/main")
        old = _plant(primary, tmp_path, path, mode, data)
        try:
            with pytest.raises(ValidationFailed) as caught:
                replication.follow_once(replica, primary.url, primary.viewer)
            assert said in caught.value.message
            assert replica.sync() == before  # main did not move to the planted commit
        finally:
            _git(primary.registry, "update-ref", "refs/heads/main", old)
    finally:
        replica.close()


def test_a_replica_brings_the_adapter_weights_its_commits_name(primary, tmp_path):
    """Not an attack: the follower also copies the weights (through the primary's LFS
    API, asked with the replica's token), so a replica serves adapters, not 404s."""
    folder = make_adapter(tmp_path / "tone", seed=5)
    primary.cli("adapter", "push", str(folder), "--name", "support/replicated", "-m", "v1")
    weights = (folder / "adapter_model.safetensors").read_bytes()
    replica = Registry.init(tmp_path / "replica")
    try:
        replication.follow_once(replica, primary.url, primary.viewer)
        source = replica.adapter_source("support/replicated@1")
        assert (Path(source.path) / "adapter_model.safetensors").read_bytes() == weights
    finally:
        replica.close()
