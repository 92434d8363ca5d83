"""Following a team's Git remote (GitHub, GitLab, a bare repository): pull, push, sync.

A pull never rewrites ``main``; it moves it forward by compare-and-swap under the writer
lock, in one of three ways, after checking every arriving file as a ``git push`` into the
registry would be checked (:mod:`promptrev.incoming`):

* **fast-forward**, when ``main`` is on the remote branch's first-parent chain: each
  arriving first-parent commit (a plain commit, or a GitHub-style merge whose first parent
  is ``main``) becomes versions, with its Git author;
* **merge commit**, when ``main`` is only reachable through a second parent on the remote
  (someone merged ``main`` into their branch), or with ``merge=True`` when both sides have
  new commits: one commit whose *first* parent is ``main``, so version numbers here never
  change, and whose second parent is the remote branch, so the next push is a
  fast-forward for the remote;
* **adopt**, when the registry is freshly made (only its first commit) and the remote has
  unrelated history: ``main`` takes the remote's history.

Histories that diverged raise :class:`Diverged` naming the commits on each side and
change nothing; a push is never forced.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptrev.model.artifacts import Version

from . import lfs_transfer
from .errors import (
    Busy,
    Conflict,
    Diverged,
    InvalidName,
    InvalidRequest,
    MergeConflict,
    NotFound,
    RemoteFailed,
)
from .evaluation import gate
from .incoming import Incoming, LabelMove, check_changes, check_history
from .storage import gitremote
from .storage.gitremote import RemoteConfig, redact
from .storage.gitstore import RefMoved, Signature

if TYPE_CHECKING:
    from .accounts import User
    from .policy import Policy
    from .registry import Registry

    Acting = tuple[Policy, User]

DEFAULT_REMOTE = "origin"
DEFAULT_BRANCH = "main"
ATTEMPTS = 5  # pulls retried when main moved between checking and moving it
SHOWN_COMMITS = 10  # commits listed per side in a divergence report
SHORT_HASH = 12  # digits of a commit hash in messages, as the CLI prints them everywhere
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCP = re.compile(r"^(?:[^@/:]+@)?[^@/:]+:(?!//)")
_SCHEMES = ("https", "http", "ssh", "git", "file")


@dataclass(frozen=True)
class Remote:
    """A remote the registry follows; ``url`` may hold credentials, so show ``display_url``."""

    name: str
    url: str
    branch: str

    @property
    def display_url(self) -> str:
        """The URL with any password or token replaced by ``***``."""
        return redact(self.url)

    @property
    def where(self) -> str:
        """``origin/main``."""
        return f"{self.name}/{self.branch}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the URL redacted)."""
        return {"name": self.name, "url": self.display_url, "branch": self.branch}


@dataclass
class PullResult:
    """What a pull did to ``main``."""

    remote: Remote
    action: str  # "up to date", "fast-forward", "merge", "adopt"
    old: str | None
    new: str | None
    commits: list[str] = field(default_factory=list)  # now on main's first-parent chain
    versions: list[Version] = field(default_factory=list)
    label_moves: list[LabelMove] = field(default_factory=list)
    objects: int = 0  # LFS objects (adapter weights) brought from the remote

    @property
    def changed(self) -> bool:
        """Whether ``main`` moved."""
        return self.old != self.new

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"remote": self.remote.to_dict(), "action": self.action, "old": self.old,
                "new": self.new, "commits": self.commits,
                "versions": [v.to_dict() for v in self.versions],
                "label_moves": [{"kind": m.kind, "name": m.name, "label": m.label,
                                 "from": m.old, "to": m.new, "split": m.split}
                                for m in self.label_moves],
                "objects": self.objects}


@dataclass
class PushResult:
    """What a push sent: the remote branch moved from ``old`` to ``new``."""

    remote: Remote
    action: str  # "up to date", "pushed", "created"
    old: str | None
    new: str | None
    commits: list[dict[str, str]] = field(default_factory=list)  # newest first
    objects: int = 0  # LFS objects (adapter weights) the remote did not have

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"remote": self.remote.to_dict(), "action": self.action, "old": self.old,
                "new": self.new, "commits": self.commits, "objects": self.objects}


@dataclass
class SyncResult:
    """A pull followed by a push."""

    pull: PullResult
    push: PushResult

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"pull": self.pull.to_dict(), "push": self.push.to_dict()}


# ---- configuration ---------------------------------------------------------------------
def add(registry: Registry, name: str, url: str, *, branch: str = DEFAULT_BRANCH) -> Remote:
    """Follow the remote at ``url`` as ``name`` (a normal Git remote of the registry)."""
    name, url, branch = check_name(name), check_url(url), check_branch(branch)
    for existing in list(registry):
        if existing.name == name:
            raise Conflict(f"remote '{name}' already exists ({existing.display_url}); "
                           f"remove it first with 'promptrev remote remove {name}'")
    gitremote.add_remote(registry.path, RemoteConfig(name, url, branch))
    return get(registry, name)


def remove(registry: Registry, name: str) -> None:
    """Stop following remote ``name`` (its remote-tracking refs go too)."""
    get(registry, name)
    gitremote.remove_remote(registry.path, name)


def list(registry: Registry) -> list[Remote]:
    """The remotes the registry follows, by name."""
    return [Remote(r.name, r.url, r.branch) for r in gitremote.remotes(registry.path)]


def get(registry: Registry, name: str) -> Remote:
    """The remote called ``name``; :class:`NotFound` lists the known ones."""
    found = {r.name: r for r in list(registry)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise NotFound(f"no remote named '{name}' (remotes: {known}); add one with "
                       f"'promptrev remote add {name} URL'")
    return found[name]


def check_name(name: str) -> str:
    """A remote name: letters, digits, ``.``, ``_`` and ``-`` (as Git allows in a ref)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name or \
            name.endswith((".", ".lock")) or \
            not gitremote.valid_ref_name(f"refs/remotes/{name}/main"):
        raise InvalidName(f"{name!r} is not a valid remote name: use letters, digits, '.', "
                          "'_' and '-' (e.g. 'origin')")
    return name


def check_branch(branch: str) -> str:
    """A branch name Git accepts (``main``, ``prompts/main``)."""
    if not isinstance(branch, str) or not branch or branch.startswith(("-", "/")) or \
            not gitremote.valid_ref_name(f"refs/heads/{branch}"):
        raise InvalidName(f"{branch!r} is not a valid branch name")
    return branch


def check_url(url: str) -> str:
    """A remote URL: http(s), ssh, git, file, ``user@host:path`` or a local repository."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("a remote URL is required")
    url = url.strip()
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidRequest(f"remote URL {redact(url)!r} contains spaces or control "
                             "characters")
    if url.startswith("-"):
        raise InvalidRequest(f"remote URL {redact(url)!r} must not start with '-'")
    scheme = _SCHEME.match(url)
    if scheme:
        if scheme.group(1).lower() not in _SCHEMES:
            raise InvalidRequest(f"remote URL {redact(url)!r}: unsupported scheme "
                                 f"'{scheme.group(1)}' (use {', '.join(_SCHEMES)})")
        if scheme.group(1).lower() != "file" and len(url) <= len(scheme.group(0)):
            raise InvalidRequest(f"remote URL {redact(url)!r} names no host")
        return url
    if _HELPER.match(url):
        raise InvalidRequest(f"remote URL {redact(url)!r}: Git transport helpers "
                             "('ext::', 'fd::'…) are not allowed")
    if _SCP.match(url) and not os.path.exists(url):
        return url  # git@github.com:team/prompts.git
    if not os.path.isdir(url):
        raise InvalidRequest(f"remote URL {url!r} is neither a URL (https://, ssh://, "
                             "user@host:path) nor an existing folder")
    return os.path.abspath(url)


# ---- pull ------------------------------------------------------------------------------
def fetch(registry: Registry, name: str = DEFAULT_REMOTE, *,
          interactive: bool = False) -> str | None:
    """Fetch the remote's branch into ``refs/remotes/<name>/<branch>``; return its commit.

    None when the remote has no such branch yet (an empty repository).
    """
    remote = get(registry, name)
    return gitremote.fetch(registry.path, _config(remote), interactive=interactive)


def pull(registry: Registry, name: str = DEFAULT_REMOTE, *, merge: bool = False,
         author: str = "promptrev <promptrev@localhost>",
         interactive: bool = False, acting: Acting | None = None) -> PullResult:
    """Fetch the remote branch and bring ``main`` up to it (see the module docs).

    ``author`` signs merge commits. Raises :class:`Diverged` when both sides have new
    commits (unless ``merge``), :class:`MergeConflict` when a merge's edits overlap and
    :class:`ValidationFailed` naming every bad file; in each case nothing changes.
    """
    remote = get(registry, name)
    theirs = gitremote.fetch(registry.path, _config(remote), interactive=interactive)
    objects = fetch_objects(registry, remote, theirs)
    result = integrate(registry, remote, theirs, merge=merge, author=author, acting=acting)
    result.objects = objects
    return result


def fetch_objects(registry: Registry, remote: Remote, theirs: str | None) -> int:
    """Bring the adapter weights that the fetched commits name and this registry lacks.

    Before the commits are checked, so an adapter version arrives with its weights (the
    check refuses a pointer whose object is missing). How: :mod:`.lfs_transfer`.
    """
    if theirs is None:
        return 0
    commits = registry.store.commits_only_in(theirs, registry.store.head())
    return lfs_transfer.fetch_objects(registry, remote.url,
                                      lfs_transfer.pointers_in(registry, commits))


def integrate(registry: Registry, remote: Remote, theirs: str | None, *, merge: bool = False,
              author: str = "promptrev <promptrev@localhost>",
              acting: Acting | None = None) -> PullResult:
    """Bring ``main`` up to the already fetched commit ``theirs`` of ``remote``.

    ``acting``: the policy and the account pulling, asked about the label moves and
    release-policy changes that arrive; without it only the release gates are checked.
    """
    for _ in range(ATTEMPTS):
        try:
            return _integrate(registry, remote, theirs, merge, Signature.parse(author),
                              acting)
        except RefMoved:
            continue  # another writer moved main while we checked: look again
    raise Busy(f"main kept moving while pulling from {remote.where}; try again")


def _integrate(registry: Registry, remote: Remote, theirs: str | None, merge: bool,
               author: Signature, acting: Acting | None) -> PullResult:
    store = registry.store
    ours = registry.sync()
    if theirs is None or theirs == ours or (ours and store.is_ancestor(theirs, ours)):
        return PullResult(remote, "up to date", ours, ours)
    if ours is None or (fresh_registry(registry, ours) and not store.is_ancestor(ours, theirs)):
        incoming = check_history(registry, None, theirs, foreign=True)
        incoming.raise_for_problems(f"the history of {remote.where}")
        return _move(registry, remote, ours, theirs, "adopt", incoming, acting)
    if store.is_ancestor(ours, theirs):
        if store.first_parent_chain(theirs, ours) is not None:
            incoming = check_history(registry, ours, theirs, foreign=True)
            incoming.raise_for_problems(f"the history of {remote.where}")
            return _move(registry, remote, ours, theirs, "fast-forward", incoming, acting)
        # main is on the remote only through a merge's second parent: a merge commit here
        # keeps version numbers; it takes the remote head's author (their work).
        info = store.commit_info(theirs)
        return _merge(registry, remote, ours, theirs, Signature(info.author, info.email),
                      author, acting)
    if not merge:
        raise diverged(registry, remote, ours, theirs,
                       f"main and {remote.where} have diverged",
                       f"Nothing was changed. Merge them with 'promptrev pull {remote.name} "
                       "--merge' (one merge commit; versions here keep their numbers)")
    if store.merge_base(ours, theirs) is None:
        raise diverged(registry, remote, ours, theirs,
                       f"main and {remote.where} have no history in common",
                       "Nothing was changed; they cannot be merged")
    return _merge(registry, remote, ours, theirs, author, author, acting)


def fresh_registry(registry: Registry, head: str) -> bool:
    """A registry as ``init`` left it: one commit, holding only the README."""
    store = registry.store
    return not store.commit_info(head).parents and \
        [c.path for c in store.diff(None, head)] == ["README.md"]


def _merge(registry: Registry, remote: Remote, ours: str, theirs: str, author: Signature,
           committer: Signature, acting: Acting | None) -> PullResult:
    store = registry.store
    tree, conflicted = store.merge(ours, theirs)
    conflicts = [c.path for c in conflicted]
    if tree is None:
        raise MergeConflict(
            f"main and {remote.where} both changed {', '.join(conflicts)}; nothing was "
            "changed. Make the same edit on one side (or revert one), then pull again",
            details={"paths": conflicts, "local": ours, "remote": theirs})
    arriving = store.commits_only_in(theirs, ours)
    lines = [_describe(store.commit_info(sha)) for sha in arriving[:20]]
    if len(arriving) > len(lines):
        lines.append(f"... and {len(arriving) - len(lines)} more")
    message = f"Merge {remote.where} into main\n\n" + "\n".join(lines)
    sha = store.commit_tree(tree, [ours, theirs], message, author, committer)
    incoming = check_changes(registry, ours, sha, foreign=True)
    incoming.raise_for_problems(f"merging {remote.where}")
    return _move(registry, remote, ours, sha, "merge", incoming, acting)


def _move(registry: Registry, remote: Remote, old: str | None, new: str, action: str,
          incoming: Incoming, acting: Acting | None) -> PullResult:
    """Move main from ``old`` to ``new`` (CAS under the writer lock) and index the change."""
    store = registry.store
    _require_release(registry, incoming, old, acting)
    with registry.writing():
        created = registry.advance_main(old, new, f"pull {remote.where} ({action})")
    versions = []
    for sha in incoming.commits:
        info = store.commit_info(sha)
        for row in created.get(sha, []):
            versions.append(Version(row["kind"], row["name"], row["number"], sha, row["blob"],
                                    row["blob"] is None, info.author, info.email,
                                    info.message, info.timestamp))
    return PullResult(remote, action, old, new, incoming.commits, versions,
                      incoming.label_moves)


def diverged(registry: Registry, remote: Remote, ours: str, theirs: str, headline: str,
             advice: str) -> Diverged:
    """A :class:`Diverged` naming the commits only here and only on the remote."""
    store = registry.store
    sides = {}
    for side, head, other in (("local", ours, theirs), ("remote", theirs, ours)):
        shas = store.commits_only_in(head, other)
        sides[side] = {"count": len(shas), "commits": [
            _commit_dict(store.commit_info(sha)) for sha in shas[:SHOWN_COMMITS]]}
    here = _side_text(sides["local"])
    there = _side_text(sides["remote"])
    message = (f"{headline}: {sides['local']['count']} commit(s) here that {remote.name} "
               f"lacks ({here}); {sides['remote']['count']} commit(s) on {remote.where} "
               f"that this registry lacks ({there}). {advice}")
    return Diverged(message, details={"remote": remote.where, "local_head": ours,
                                      "remote_head": theirs,
                                      "merge_base": store.merge_base(ours, theirs), **sides})


# ---- push ------------------------------------------------------------------------------
def push(registry: Registry, name: str = DEFAULT_REMOTE, *,
         interactive: bool = False) -> PushResult:
    """Push ``main`` to the remote's branch (never forced).

    A remote that has commits this registry lacks refuses the push: :class:`Diverged`,
    saying to pull first.
    """
    remote = get(registry, name)
    store = registry.store
    ours = store.head()
    if ours is None:
        raise NotFound("this registry has no commits to push")
    known = store.ref(_config(remote).tracking_ref)  # the remote's branch when last seen
    pointers = lfs_transfer.pointers_in(registry, store.commits_only_in(ours, known))
    objects = lfs_transfer.send_objects(registry, remote.url, pointers)  # before the pointers
    outcome = gitremote.push(registry.path, _config(remote), interactive=interactive)
    if outcome.behind:
        theirs = gitremote.fetch(registry.path, _config(remote), interactive=interactive)
        if theirs is not None and theirs != ours:
            raise diverged(registry, remote, ours, theirs,
                           f"push to {remote.where} refused: it has commits this registry "
                           "lacks", f"Nothing was pushed. Pull first ('promptrev pull "
                           f"{remote.name}', with --merge if both sides changed), then push")
    if outcome.rejected:
        said = [line[len("remote:"):].strip() for line in outcome.stderr.splitlines()
                if line.startswith("remote:") and line[len("remote:"):].strip()]
        raise RemoteFailed(f"{remote.where} refused the push: {outcome.summary}"
                           + ("".join(f"\n  {line}" for line in said[-10:])),
                           details={"remote": remote.where, "git": outcome.stderr})
    if outcome.flag == "=":
        return PushResult(remote, "up to date", ours, ours, objects=objects)
    shas = store.commits_only_in(ours, outcome.old)
    return PushResult(remote, "created" if outcome.flag == "*" else "pushed", outcome.old,
                      ours, [_commit_dict(store.commit_info(sha)) for sha in shas], objects)


def sync(registry: Registry, name: str = DEFAULT_REMOTE, *, merge: bool = False,
         author: str = "promptrev <promptrev@localhost>",
         interactive: bool = False, acting: Acting | None = None) -> SyncResult:
    """Pull, then push what the remote lacks (nothing when both are at the same commit)."""
    pulled = pull(registry, name, merge=merge, author=author, interactive=interactive,
                  acting=acting)
    remote = pulled.remote
    theirs = registry.store.ref(_config(remote).tracking_ref)
    head = registry.store.head()
    if head == theirs:
        return SyncResult(pulled, PushResult(remote, "up to date", head, head))
    return SyncResult(pulled, push(registry, name, interactive=interactive))


# ---- helpers ---------------------------------------------------------------------------
def _require_release(registry: Registry, incoming: Incoming, base: str | None,
                     acting: Acting | None) -> None:
    """Label moves that arrive pass the release policies ``main`` holds before the pull."""
    if acting is not None:
        policy, user = acting
        policy.require_incoming(user, incoming, "pulling", registry=registry, base=base)
        return
    for move in incoming.label_moves:
        gate.clear_arriving(registry, move, base)


def _config(remote: Remote) -> RemoteConfig:
    return RemoteConfig(remote.name, remote.url, remote.branch)


def _commit_dict(info) -> dict[str, str]:
    return {"sha": info.sha, "short": info.sha[:SHORT_HASH],
            "author": f"{info.author} <{info.email}>",
            "message": info.message.splitlines()[0] if info.message else ""}


def _describe(info) -> str:
    subject = info.message.splitlines()[0] if info.message else ""
    return f"{info.sha[:SHORT_HASH]} {subject} ({info.author})"


def _side_text(side: dict[str, Any]) -> str:
    shown = [f"{c['short']} '{c['message']}' by {c['author']}" for c in side["commits"][:3]]
    if side["count"] > len(shown):
        shown.append(f"{side['count'] - len(shown)} more")
    return "; ".join(shown) or "none"
