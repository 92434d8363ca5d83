"""The Git object store of a registry (libgit2 through pygit2).

Writes never touch a work tree or the index file: blobs and trees are built in memory,
a commit is created, and ``refs/heads/main`` moves by compare-and-swap on its old value
(libgit2's ``set_target`` fails if the ref changed since it was read). A crash at any
point leaves the previous state intact: objects are written atomically and only the
final ref move makes them reachable.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import git
import pygit2

from ..errors import Busy, StorageError

MAIN = "refs/heads/main"
STALE_LOCK_SECONDS = 10.0
# From this many new blobs on, one `git fast-import` pack beats one loose file per blob
# (and keeps bulk imports from filling the repository with tens of thousands of files).
FAST_IMPORT_MIN_BLOBS = 64
_TREE = pygit2.enums.FileMode.TREE
_BLOB = pygit2.enums.FileMode.BLOB

# Keep hot trees in libgit2's cache so path lookups stay in microseconds.
pygit2.settings.cache_object_limit(pygit2.enums.ObjectType.TREE, 64 * 1024)
pygit2.settings.cache_max_size(256 * 1024 * 1024)
# libgit2 re-reads every object a new tree or commit names, to check it exists (five file
# reads per save, ~5 % of its time). Writers here only name blobs written before the
# commit, subtrees just written and entries of existing trees; `fsck` checks connectivity.
pygit2.settings.enable_strict_object_creation(False)


class RefMoved(Exception):
    """``main`` is no longer at the commit a write was built on."""


@dataclass(frozen=True)
class Signature:
    """Who made a change."""

    name: str
    email: str

    @classmethod
    def parse(cls, text: str) -> Signature:
        """Parse ``Name <email>`` (or a bare name)."""
        text = text.strip()
        if text.endswith(">") and "<" in text:
            name, _, email = text[:-1].partition("<")
            return cls(name.strip() or email.strip(), email.strip())
        return cls(text or "promptrev", f"{(text or 'promptrev').replace(' ', '.')}@promptrev")

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


@dataclass(frozen=True)
class CommitInfo:
    """Metadata of one commit."""

    sha: str
    author: str
    email: str
    message: str
    timestamp: int
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One changed path between two trees; a None blob means absent on that side."""

    path: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Conflicted:
    """A path both sides of a merge changed incompatibly (blob ids; None: absent)."""

    path: str
    base: str | None
    ours: str | None
    theirs: str | None


def valid_ref_name(name: str) -> bool:
    """Whether ``name`` (``refs/heads/...``) is a reference name Git accepts."""
    return pygit2.reference_is_valid_name(name)


def _entry_id(entry) -> str | None:
    return str(entry.id) if entry is not None else None


class GitStore:
    """A bare Git repository holding the registry's artifacts."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self.repo = pygit2.Repository(self.path)
        except pygit2.GitError as exc:
            raise StorageError(f"{self.path} is not a promptrev registry: {exc}") from None
        self._empty_tree: pygit2.Oid | None = None

    @classmethod
    def init(cls, path: str | os.PathLike) -> GitStore:
        """Create a bare repository whose HEAD is ``main``."""
        pygit2.init_repository(os.fspath(path), bare=True, initial_head="main")
        return cls(path)

    # ---- reading -------------------------------------------------------------------
    def head(self) -> str | None:
        """The commit ``main`` points at, or None for an empty repository."""
        ref = self.repo.references.get(MAIN)
        return str(ref.target) if ref is not None else None

    def blob(self, oid: str) -> bytes:
        """The bytes of a blob."""
        return self.repo[oid].data

    def blob_at(self, commit: str, path: str) -> str | None:
        """The blob id at ``path`` in ``commit``'s tree, or None."""
        try:
            entry = self.repo[commit].tree[path]
        except KeyError:
            return None
        return str(entry.id) if entry.filemode != _TREE else None

    def commit_info(self, sha: str) -> CommitInfo:
        """Author, message (stripped) and time (epoch seconds, UTC) of a commit."""
        commit = self.repo[sha]
        author = commit.author
        return CommitInfo(str(commit.id), author.name, author.email, commit.message.strip(),
                          author.time, tuple(str(p) for p in commit.parent_ids))

    def first_parent_chain(self, head: str, stop: str | None) -> list[str] | None:
        """Commits from ``stop`` (exclusive) to ``head`` (inclusive), oldest first.

        Returns None when ``stop`` is not on ``head``'s first-parent chain (history was
        rewritten), so the caller can rebuild instead of guessing.
        """
        chain: list[str] = []
        current = self.repo[head]
        while True:
            sha = str(current.id)
            if sha == stop:
                chain.reverse()
                return chain
            chain.append(sha)
            if not current.parent_ids:
                break
            current = self.repo[current.parent_ids[0]]
        if stop is None:
            chain.reverse()
            return chain
        return None

    def changes(self, sha: str) -> list[Change]:
        """Paths changed by a commit relative to its first parent.

        Descends only into subtrees whose ids differ, so a one-file commit in a registry of
        10,000 files reads a handful of small trees (libgit2's tree diff walked far more).
        """
        commit = self.repo[sha]
        old = commit.parents[0].tree if commit.parent_ids else None
        out: list[Change] = []
        self._diff_trees(old, commit.tree, "", out)
        return out

    def diff(self, old: str | None, new: str) -> list[Change]:
        """Paths that differ between two commits' trees (``old`` None: the empty tree)."""
        out: list[Change] = []
        self._diff_trees(self.repo[old].tree if old else None, self.repo[new].tree, "", out)
        return out

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits, or None."""
        base = self.repo.merge_base(a, b)
        return str(base) if base is not None else None

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        """Whether ``ancestor`` is reachable from ``commit`` (or is it)."""
        return ancestor == commit or self.repo.descendant_of(commit, ancestor)

    def commits_only_in(self, head: str, other: str | None) -> list[str]:
        """Commits reachable from ``head`` but not from ``other``, newest first."""
        walker = self.repo.walk(head, pygit2.enums.SortMode.TOPOLOGICAL
                                | pygit2.enums.SortMode.TIME)
        if other is not None:
            walker.hide(other)
        return [str(commit.id) for commit in walker]

    def _diff_trees(self, old: pygit2.Tree | None, new: pygit2.Tree | None, prefix: str,
                    out: list[Change]) -> None:
        before = {e.name: e for e in old} if old is not None else {}
        after = {e.name: e for e in new} if new is not None else {}
        for name in sorted(before.keys() | after.keys()):
            a, b = before.get(name), after.get(name)
            if a is not None and b is not None and a.id == b.id and a.filemode == b.filemode:
                continue
            a_tree = a is not None and a.filemode == _TREE
            b_tree = b is not None and b.filemode == _TREE
            if a_tree or b_tree:
                self._diff_trees(self.repo[a.id] if a_tree else None,
                                 self.repo[b.id] if b_tree else None, f"{prefix}{name}/", out)
            a_blob = str(a.id) if a is not None and not a_tree else None
            b_blob = str(b.id) if b is not None and not b_tree else None
            if a_blob != b_blob:
                out.append(Change(prefix + name, a_blob, b_blob))

    def _empty(self) -> pygit2.Tree:
        if self._empty_tree is None:
            self._empty_tree = self.repo.TreeBuilder().write()
        return self.repo[self._empty_tree]

    # ---- writing -------------------------------------------------------------------
    def write_blob(self, data: bytes) -> str:
        """Store a blob (idempotent: identical content gives the same id)."""
        return str(self.repo.create_blob(data))

    @staticmethod
    def blob_id(data: bytes) -> str:
        """The id ``data`` will have as a blob, without writing it."""
        return str(pygit2.hash(data))

    def write_blobs(self, blobs: dict[str, bytes]) -> None:
        """Store many blobs (id → bytes); large batches go into one pack.

        Objects are unreachable until a commit names them, so a crash here leaves at most
        garbage that ``git gc`` prunes, never a half-visible change.
        """
        if len(blobs) < FAST_IMPORT_MIN_BLOBS:
            for data in blobs.values():
                self.repo.create_blob(data)  # idempotent
            return
        # No existence check per blob: fast-import skips objects already packed, and each
        # miss would make libgit2 rescan the pack folder (~25 µs a blob).
        stream = bytearray()
        for data in blobs.values():
            stream += b"blob\ndata %d\n" % len(data)
            stream += data
            stream += b"\n"
        stream += b"done\n"
        result = subprocess.run(["git", "--git-dir", self.path, "fast-import", "--quiet",
                                 "--done"], input=bytes(stream), capture_output=True)
        if result.returncode != 0:
            raise StorageError("git fast-import could not store "
                               f"{len(blobs)} blobs: {result.stderr.decode(errors='replace')}")
        self.maintain()

    def maintain(self) -> None:
        """Let Git pack loose objects and merge packs when its thresholds are reached.

        ``git gc --auto`` returns at once below the thresholds (6,700 loose objects, 50
        packs) and otherwise works in the background, safely alongside writers, as Git
        does after its own commits. Without it, every bulk import adds a pack and every
        save six loose files, and lookups slow down as they pile up.
        """
        try:
            git.Git(self.path).gc("--auto", "--quiet")
        except (git.GitCommandError, OSError):
            pass  # maintenance is best effort; fsck reports real damage

    def commit(self, base: str | None, changes: dict[str, str | None], message: str,
               author: Signature, *, tree: str | None = None,
               parents: list[str] | None = None) -> str | None:
        """Create a commit on ``base`` applying path → blob changes (None deletes).

        ``tree`` and ``parents`` override the starting tree and the parents (a merge).
        Returns None when the changes leave the tree as it was.
        """
        made = self.write_commit(base, changes, message, author, tree=tree, parents=parents)
        return made.sha if made is not None else None

    def write_commit(self, base: str | None, changes: dict[str, str | None], message: str,
                     author: Signature, *, tree: str | None = None,
                     parents: list[str] | None = None) -> CommitInfo | None:
        """:meth:`commit`, returning what :meth:`commit_info` would read back (no re-read)."""
        base_tree = self.repo[tree] if tree else self.repo[base].tree if base else None
        split = {tuple(path.split("/")): blob for path, blob in changes.items()}
        new_tree = self._write_tree(base_tree, split) or self._empty().id
        if base_tree is not None and new_tree == base_tree.id and not parents:
            return None
        sig = pygit2.Signature(author.name, author.email, int(time.time()), 0)
        if parents is None:
            parents = [base] if base else []
        sha = str(self.repo.create_commit(None, sig, sig, message, new_tree, parents))
        return CommitInfo(sha, sig.name, sig.email, message.strip(), sig.time,
                          tuple(str(p) for p in parents))

    def commit_tree(self, tree: str, parents: list[str], message: str, author: Signature,
                    committer: Signature | None = None) -> str:
        """Create a commit of an existing tree (a merge has two parents); moves no ref."""
        now = int(time.time())
        sig = pygit2.Signature(author.name, author.email, now, 0)
        by = pygit2.Signature(committer.name, committer.email, now, 0) if committer else sig
        return str(self.repo.create_commit(None, sig, by, message, pygit2.Oid(hex=tree),
                                           [pygit2.Oid(hex=p) for p in parents]))

    def merge(self, ours: str, theirs: str, *, favor_ours: bool = False
              ) -> tuple[str | None, list[Conflicted]]:
        """Three-way merge of two commits in memory (no work tree, no index file).

        Returns (tree id, []) when the edits combine cleanly, else (None, the conflicts);
        ``favor_ours`` settles conflicting hunks with ours (for a caller that then replaces
        those files with a resolution).
        """
        favor = pygit2.enums.MergeFavor.OURS if favor_ours else pygit2.enums.MergeFavor.NORMAL
        index = self.repo.merge_commits(ours, theirs, favor=favor)
        if index.conflicts is not None:
            found = []
            for ancestor, mine, other in index.conflicts:
                entry = ancestor or mine or other
                found.append(Conflicted(entry.path, _entry_id(ancestor), _entry_id(mine),
                                        _entry_id(other)))
            return None, sorted(found, key=lambda c: c.path)
        return str(index.write_tree(self.repo)), []

    def _write_tree(self, tree: pygit2.Tree | None,
                    changes: dict[tuple[str, ...], str | None]) -> pygit2.Oid | None:
        builder = self.repo.TreeBuilder(tree) if tree is not None else self.repo.TreeBuilder()
        groups: dict[str, dict[tuple[str, ...], str | None]] = defaultdict(dict)
        for parts, blob in changes.items():
            if len(parts) > 1:
                groups[parts[0]][parts[1:]] = blob
            elif blob is None:
                if builder.get(parts[0]) is not None:
                    builder.remove(parts[0])
            else:
                builder.insert(parts[0], pygit2.Oid(hex=blob), _BLOB)
        for name, sub in groups.items():
            entry = builder.get(name)
            subtree = self.repo[entry.id] if entry is not None and entry.filemode == _TREE \
                else None
            new = self._write_tree(subtree, sub)
            if new is None:
                if entry is not None:
                    builder.remove(name)
            else:
                builder.insert(name, new, _TREE)
        if len(builder) == 0:
            return None
        return builder.write()

    def move_main(self, expected: str | None, new: str, reason: str) -> None:
        """Point ``main`` at ``new`` if it still points at ``expected``; else RefMoved."""
        self.move_ref(MAIN, expected, new, reason)

    def move_ref(self, name: str, expected: str | None, new: str | None, reason: str) -> None:
        """Compare-and-swap a ref: ``expected`` None creates it, ``new`` None deletes it."""
        for _ in range(2):
            try:
                ref = self.repo.references.get(name)
                if expected is None:
                    if ref is not None:
                        raise RefMoved()
                    self.repo.create_reference_direct(name, new, False, message=reason)
                    return
                if ref is None or str(ref.target) != expected:
                    raise RefMoved()
                if new is None:
                    ref.delete()
                else:
                    ref.set_target(new, reason)
                return
            except (pygit2.GitError, pygit2.AlreadyExistsError, ValueError) as exc:
                text = str(exc).lower()
                if "lock" in text and self._remove_stale_ref_lock(name):
                    continue
                if "does not match" in text or "exists" in text or "lock" in text:
                    raise RefMoved() from None
                raise StorageError(f"could not move {name}: {exc}") from None
        raise RefMoved()

    def ref(self, name: str) -> str | None:
        """The commit a ref points at, or None."""
        ref = self.repo.references.get(name)
        return str(ref.target) if ref is not None else None

    def refs(self, prefix: str) -> dict[str, str]:
        """Refs under ``prefix`` (``refs/heads/review/``) and their commits."""
        return {name: str(self.repo.references[name].target)
                for name in self.repo.references if name.startswith(prefix)}

    def _remove_stale_ref_lock(self, ref: str = MAIN) -> bool:
        """Remove a ``<ref>.lock`` left by a killed writer (only when old)."""
        lock = os.path.join(self.path, ref + ".lock")
        try:
            age = time.time() - os.stat(lock).st_mtime
        except FileNotFoundError:
            return True
        if age < STALE_LOCK_SECONDS:
            return False
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        return True

    def stale_ref_locks(self) -> list[str]:
        """Ref lock files older than the stale threshold (left by killed writers)."""
        found = []
        refs = os.path.join(self.path, "refs")
        for folder, _dirs, files in os.walk(refs):
            for name in files:
                if name.endswith(".lock"):
                    full = os.path.join(folder, name)
                    if time.time() - os.stat(full).st_mtime >= STALE_LOCK_SECONDS:
                        found.append(os.path.relpath(full, self.path))
        return found

    @contextmanager
    def writer_lock(self, timeout: float = 30.0) -> Iterator[None]:
        """Serialise promptrev writers across processes (the CAS still guards git push)."""
        fd = os.open(os.path.join(self.path, "promptrev.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Busy(f"registry {self.path} stayed locked by another writer "
                                   f"for {timeout:.0f}s") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
            yield
        finally:
            os.close(fd)
