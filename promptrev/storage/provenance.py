"""Who made a commit: the authenticated account, kept in Git next to the Git author.

A commit's Git author is whatever its maker typed; the account is who the server
authenticated. Both must survive ``promptrev reindex`` (the index is rebuilt from Git), so
the account is recorded in Git itself, in one of two ways:

- a commit the server makes (a save through the API or the pages, a change request's
  edits, a merge) carries the trailer ``Promptrev-Account: <name>`` in its message;
- a commit that arrives by ``git push`` gets a note on :data:`NOTES_REF`, written by the
  pre-receive hook before any ref moves (so no reader of ``main`` ever sees the commit
  without it), naming the pusher. Pushes may only update ``main`` and review branches,
  so nobody but the server writes that ref.

A note wins over a trailer: every pushed commit gets a note, so a trailer a pusher typed
into their own message is never believed. Notes use Git's two-level fan-out
(``ab/cdef…``), which ``git notes`` and libgit2 read too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import pygit2

from ..errors import Busy
from .gitstore import GitStore, RefMoved

NOTES_REF = "refs/notes/promptrev-accounts"
TRAILER = "Promptrev-Account"
MAX_ACCOUNT = 64
_TRAILER_LINE = re.compile(rf"^{TRAILER}:[ \t]*(\S{{1,{MAX_ACCOUNT}}})[ \t]*$")
_ANY_TRAILER = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:\s")
_TREE = pygit2.enums.FileMode.TREE
_BLOB = pygit2.enums.FileMode.BLOB
_SERVER = pygit2.Signature("promptrev", "promptrev@localhost")


def with_account(message: str, account: str | None) -> str:
    """``message`` with the trailer naming ``account`` and no other such trailer.

    A trailer someone typed into the message (a save's message, a request's description)
    is removed whatever ``account`` is, so a server-made commit names only the account
    that the server authenticated, or none.
    """
    body = "\n".join(line for line in message.rstrip("\n").split("\n")
                     if not line.startswith(f"{TRAILER}:")).rstrip("\n")
    if not account:
        return body + "\n" if message.endswith("\n") else body
    last = body.rsplit("\n\n", 1)[-1]
    joined = "\n" if "\n\n" in body and all(
        _ANY_TRAILER.match(line) for line in last.splitlines()) else "\n\n"
    return f"{body}{joined}{TRAILER}: {account}\n"


def trailer_account(message: str) -> str | None:
    """The account a server-made commit's trailer names (the last one), or None."""
    found = None
    for line in message.rstrip("\n").rsplit("\n\n", 1)[-1].splitlines():
        match = _TRAILER_LINE.match(line)
        if match:
            found = match.group(1)
    return found


def without_account(message: str) -> str:
    """``message`` as people read it: without the account trailer (the index keeps the
    account in its own column)."""
    if f"{TRAILER}:" not in message:
        return message
    return with_account(message, None).rstrip()


class Notes:
    """The pushers' notes as they stand now: read once, looked up per commit."""

    def __init__(self, store: GitStore):
        self.store = store
        ref = store.repo.references.get(NOTES_REF)
        self.tip = str(ref.target) if ref is not None else None
        self.tree = store.repo[ref.target].tree if ref is not None else None

    def pusher(self, sha: str) -> str | None:
        """The account that pushed ``sha``, or None (not pushed, or pushed before notes)."""
        if self.tree is None:
            return None
        for path in (f"{sha[:2]}/{sha[2:]}", sha):
            try:
                entry = self.tree[path]
            except KeyError:
                continue
            text = self.store.repo[entry.id].data.decode("utf-8", "replace").strip()
            return text.splitlines()[0][:MAX_ACCOUNT] if text else None
        return None

    def account(self, sha: str, message: str) -> str | None:
        """Who made ``sha``: its pusher, else the trailer of a server-made commit."""
        return self.pusher(sha) or trailer_account(message)


def accounts_of(store: GitStore, shas: Iterable[str]) -> dict[str, str | None]:
    """The account of each commit (see :class:`Notes`)."""
    notes = Notes(store)
    return {sha: notes.account(sha, store.repo[sha].message) for sha in shas}


def new_commits(store: GitStore, tip: str) -> list[str]:
    """Commits reachable from ``tip`` but from no branch: what a push brings in."""
    walker = store.repo.walk(tip, pygit2.enums.SortMode.NONE)
    for name in store.repo.references:
        if name.startswith("refs/heads/"):
            try:
                walker.hide(store.repo.references[name].target)
            except (KeyError, pygit2.GitError, ValueError):
                continue
    return [str(commit.id) for commit in walker]


def record_pushed(store: GitStore, shas: Iterable[str], account: str,
                  attempts: int = 50) -> None:
    """Note ``account`` as the pusher of every commit in ``shas`` (one notes commit)."""
    shas = sorted(set(shas))
    if not shas:
        return
    for _ in range(attempts):
        notes = Notes(store)
        try:
            commit = _notes_commit(store.repo, notes, shas, account)
        except (pygit2.GitError, OSError) as exc:
            raise store.write_error(exc, "noting who pushed") from None
        try:
            store.move_ref(NOTES_REF, notes.tip, commit, f"promptrev: pushed by {account}")
            return
        except RefMoved:  # another push noted its commits meanwhile: add ours to theirs
            time.sleep(0.005)
    raise Busy(f"{NOTES_REF} kept moving while noting who pushed; push again")


def _notes_commit(repo: pygit2.Repository, notes: Notes, shas: list[str], account: str
                  ) -> str:
    blob = repo.create_blob(f"{account}\n".encode())
    tree = _with_notes(repo, notes.tree, shas, blob)
    parents = [pygit2.Oid(hex=notes.tip)] if notes.tip else []
    now = pygit2.Signature(_SERVER.name, _SERVER.email, int(time.time()), 0)
    return str(repo.create_commit(None, now, now, f"Pushed by {account}\n", tree, parents))


def _with_notes(repo: pygit2.Repository, root: pygit2.Tree | None, shas: list[str],
                blob: pygit2.Oid) -> pygit2.Oid:
    builder = repo.TreeBuilder(root) if root is not None else repo.TreeBuilder()
    groups: dict[str, list[str]] = {}
    for sha in shas:
        groups.setdefault(sha[:2], []).append(sha)
    for prefix, group in groups.items():
        for sha in group:  # a flat note (``git notes`` on few notes): replaced here
            if builder.get(sha) is not None:
                builder.remove(sha)
        entry = builder.get(prefix)
        sub = repo.TreeBuilder(repo[entry.id]) if entry is not None \
            and entry.filemode == _TREE else repo.TreeBuilder()
        for sha in group:
            sub.insert(sha[2:], blob, _BLOB)
        builder.insert(prefix, sub.write(), _TREE)
    return builder.write()
