"""The Git object store of a registry (libgit2 through pygit2).

Writes never touch a work tree or the index file: blobs and trees are built in memory,
a commit is created, and ``refs/heads/main`` moves by compare-and-swap on its old value
(libgit2's ``set_target`` fails if the ref changed since it was read). A crash at any
point leaves the previous state intact: objects are written atomically and only the
final ref move makes them reachable.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import git
import pygit2

from promptrev.model import diffing

from ..errors import Busy, Damaged, InvalidRequest, StorageError, StorageFull
from . import durability
from .heap import keep_heap

log = logging.getLogger("promptrev.storage")


def _line_diff(old: bytes, new: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Hunks of two texts by libgit2's xdiff (C, near linear, with Git's cost limits)."""
    for hunk in pygit2.Patch.create_from(old, new, context_lines=0).hunks:
        yield hunk.old_start, hunk.old_lines, hunk.new_start, hunk.new_lines


diffing.use_line_diff(_line_diff)  # large diffs in the model run on it

MAIN = "refs/heads/main"
MAIN_REFLOG = "logs/refs/heads/main"
REPAIR = "promptrev fsck --repair"
# A ref lock (``refs/heads/main.lock``) lives for microseconds while its writer is alive. One
# older than LOCK_GRACE_SECONDS that no process has open was left by a killed writer and is
# removed; where open files cannot be listed, only one older than STALE_LOCK_SECONDS is.
LOCK_GRACE_SECONDS = 0.3
STALE_LOCK_SECONDS = 10.0
# How long a ref move waits, backing off, while a live process (git gc, a push) holds the lock.
LOCK_WAIT_SECONDS = 10.0
OBJECT_WRITE_TRIES = 5
# Settings every registry carries: a reflog for ``main`` (bare repositories keep none by
# default), so a lost or corrupted ``main`` can be restored; and cruft packs, so objects
# that refused writes leave behind are packed by ``git gc`` rather than piling up loose
# until Git stops collecting (its "too many unreachable loose objects" gc.log).
REGISTRY_CONFIG = {"core.logAllRefUpdates": "always", "gc.cruftPacks": "true",
                   # Push content: Git checks every object it receives (a push, and a pull
                   # from a remote) and refuses malformed ones, a ``.git`` entry among them,
                   # before promptrev's own checks of the tree run.
                   "receive.fsckObjects": "true", "transfer.fsckObjects": "true"}
# From this many new blobs on, one `git fast-import` pack beats one loose file per blob
# (and keeps bulk imports from filling the repository with tens of thousands of files).
FAST_IMPORT_MIN_BLOBS = 64
# Where a commit git fast-import builds is named until read (then deleted); hidden from
# Git clients of the server, reported by fsck and removed by its repair if left behind.
FAST_IMPORT_REFS = "refs/promptrev/fast-import"
# glibc gives the compression state git fast-import allocates per object (a few hundred
# KB) back to the system at each free and takes it again for the next object: four brk
# calls and freshly zeroed pages per blob, 70 % of its time on small prompts. Padding the
# top of the heap keeps the memory: 1,000 blobs in ~25 ms instead of ~90 ms.
_FAST_IMPORT_ENV = {"MALLOC_TOP_PAD_": str(4 << 20)}
_TREE = pygit2.enums.FileMode.TREE
_BLOB = pygit2.enums.FileMode.BLOB
_GITLINK = pygit2.enums.FileMode.COMMIT

# Keep hot trees in libgit2's cache so path lookups stay in microseconds.
pygit2.settings.cache_object_limit(pygit2.enums.ObjectType.TREE, 64 * 1024)
pygit2.settings.cache_max_size(256 * 1024 * 1024)
# libgit2 re-reads every object a new tree or commit names, to check it exists (five file
# reads per save, ~5 % of its time). Writers here only name blobs written before the
# commit, subtrees just written and entries of existing trees; `fsck` checks connectivity.
pygit2.settings.enable_strict_object_creation(False)
# Object writes keep their compression memory instead of faulting it in afresh (heap.py).
keep_heap()


class RefMoved(Exception):
    """``main`` is no longer at the commit a write was built on."""


class _Locked(Exception):
    """A ref move failed on a lock file another process holds (or a killed one left)."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


@dataclass(frozen=True)
class Signature:
    """Who made a change."""

    name: str
    email: str

    @classmethod
    def parse(cls, text: str) -> Signature:
        """Parse ``Name <email>`` (or a bare name); refuse what Git cannot record.

        A commit header holds the line as it is, so a line break, a NUL or another control
        character, or an angle bracket inside the name or the address would make a
        malformed commit: each is refused with :class:`InvalidRequest` naming it.
        """
        text = text.strip()
        if text.endswith(">") and "<" in text:
            name, _, email = text[:-1].partition("<")
            name, email = name.strip(), email.strip()
            name = name or email
        else:
            name = text or "promptrev"
            email = f"{name.replace(' ', '.')}@promptrev"
        for part, what in ((name, "name"), (email, "email address")):
            bad = next((c for c in part if c in "<>" or ord(c) < 32 or ord(c) == 127), None)
            if bad is not None:
                raise InvalidRequest(
                    f"author {text!r} is not 'Name <email>': its {what} contains "
                    f"{bad!r}, which a Git commit cannot record")
        if not name or not email:
            raise InvalidRequest(f"author {text!r} is not 'Name <email>': it has no "
                                 f"{'name' if not name else 'email address'}")
        return cls(name, email)

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


def check_commit_message(message: str) -> None:
    """Refuse a message Git cannot store (a NUL ends a commit object's text)."""
    if "\x00" in message:
        raise InvalidRequest("a commit message cannot contain a NUL character (\\x00)")


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
class Entry:
    """A file entry of a commit's tree: its path, Git file mode, object and size.

    ``mode`` is Git's: 0o100644 or 0o100755 for a file, 0o120000 for a symbolic link,
    0o160000 for a gitlink (a commit of another repository, whose ``size`` is None).
    """

    path: str
    mode: int
    oid: str
    size: int | None


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


def _same_entry(tree: pygit2.Tree, entry: Entry) -> bool:
    try:
        found = tree[entry.path]
    except KeyError:
        return False
    return str(found.id) == entry.oid and int(found.filemode) == entry.mode


def _entry_id(entry) -> str | None:
    return str(entry.id) if entry is not None else None


class GitStore:
    """A bare Git repository holding the registry's artifacts."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self.repo = pygit2.Repository(self.path)
        except (pygit2.GitError, OSError) as exc:
            raise StorageError(f"{self.path} is not a promptrev registry: {exc}") from None
        self._empty_tree: pygit2.Oid | None = None
        self._writer_locks = 0  # writer_lock depth: ref flushes wait for its release
        self._flush_owed = False
        self._configure()

    @classmethod
    def init(cls, path: str | os.PathLike) -> GitStore:
        """Create a bare repository whose HEAD is ``main``."""
        pygit2.init_repository(os.fspath(path), bare=True, initial_head="main")
        return cls(path)

    def _configure(self) -> None:
        """Give a registry made by an older promptrev (or by ``git init``) our settings."""
        try:
            config = self.repo.config
            for key, value in REGISTRY_CONFIG.items():
                if key not in config:
                    config[key] = value
        except (pygit2.GitError, OSError) as exc:  # read-only or full: reads still work
            log.warning("could not configure %s: %s", self.path, exc)

    def config(self, key: str) -> str | None:
        """A value of the repository's Git config (None: unset or unreadable)."""
        try:
            return self.repo.config[key] if key in self.repo.config else None
        except (pygit2.GitError, OSError):
            return None

    def set_config(self, key: str, value: str) -> None:
        """Set a value in the repository's Git config."""
        try:
            self.repo.config[key] = value
        except (pygit2.GitError, OSError) as exc:
            raise self.write_error(exc, "recording the registry's layout") from None

    # ---- reading -------------------------------------------------------------------
    def head(self) -> str | None:
        """The commit ``main`` points at, or None for an empty repository.

        A ``main`` that cannot be read is :class:`Damaged`; whether a missing one is
        damage is for :meth:`missing_main_damage` to say (it costs a file read).
        """
        try:
            ref = self.repo.references.get(MAIN)
            return str(ref.target) if ref is not None else None
        except (pygit2.GitError, ValueError, OSError) as exc:
            raise Damaged(f"{MAIN} is corrupt ({exc}): the registry is damaged. Run "
                          f"'{REPAIR}' to restore it from its reflog or the index",
                          details={"repair": REPAIR}) from None

    def missing_main_damage(self) -> str | None:
        """Why a missing ``main`` is damage (its reflog says it existed), or None."""
        logged = self.main_reflog()
        if logged:
            return (f"{MAIN} is missing, but its reflog shows it pointed at "
                    f"{logged[0][:12]}: the registry is damaged, not empty. Run '{REPAIR}' "
                    "to restore it")
        return None

    def main_reflog(self) -> list[str]:
        """The commits ``main`` pointed at, newest first (from its reflog file).

        Read from the file, not through libgit2, so it works when ``main`` itself is gone.
        """
        try:
            with open(os.path.join(self.path, MAIN_REFLOG), "rb") as fh:
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        zero = "0" * 40
        chain: list[str] = []
        for line in lines:
            fields = line.split(" ", 2)
            if len(fields) < 2 or not all(re.fullmatch(r"[0-9a-f]{40}", f) for f in fields[:2]):
                continue
            old, new = fields[:2]
            # A line continues the chain when it moved main from where the previous trusted
            # line left it; one that did not (a Git update that failed after writing its
            # line, say) never took effect.
            if chain and old != chain[-1] and old != zero:
                continue
            if new != zero:
                chain.append(new)
        out: list[str] = []
        for sha in reversed(chain):
            if sha not in out:
                out.append(sha)
        return out

    def _obj(self, oid: str | pygit2.Oid, what: str):
        """The object ``oid``; a missing or unreadable one is :class:`Damaged`."""
        try:
            return self.repo[oid]
        except KeyError:
            problem = "is missing from the repository"
        except (pygit2.GitError, ValueError, OSError) as exc:
            problem = f"cannot be read ({exc})"
        raise Damaged(f"Git object {str(oid)[:12]} ({what}) {problem}: the registry is "
                      "damaged. Run 'promptrev fsck' for a report, and restore lost objects "
                      "from a clone or a backup ('promptrev restore')",
                      details={"object": str(oid)}) from None

    def has_commit(self, sha: str) -> bool:
        """Whether ``sha`` is a readable commit whose tree is readable."""
        try:
            commit = self.repo[sha]
            return commit.type == pygit2.enums.ObjectType.COMMIT and commit.tree is not None
        except (KeyError, ValueError, pygit2.GitError, OSError):
            return False

    def blob(self, oid: str) -> bytes:
        """The bytes of a blob."""
        return self._obj(oid, "a file's content").data

    def blob_at(self, commit: str, path: str) -> str | None:
        """The blob id at ``path`` in ``commit``'s tree, or None."""
        try:
            entry = self._obj(commit, "a commit").tree[path]
        except KeyError:
            return None
        except (pygit2.GitError, OSError) as exc:
            raise Damaged(f"the tree of commit {commit[:12]} cannot be read ({exc}): run "
                          "'promptrev fsck' for a report") from None
        return str(entry.id) if entry.filemode != _TREE else None

    def commit_info(self, sha: str) -> CommitInfo:
        """Author, message (stripped) and time (epoch seconds, UTC) of a commit."""
        commit = self._obj(sha, "a commit")
        author = commit.author
        return CommitInfo(str(commit.id), author.name, author.email, commit.message.strip(),
                          author.time, tuple(str(p) for p in commit.parent_ids))

    def first_parent_chain(self, head: str, stop: str | None) -> list[str] | None:
        """Commits from ``stop`` (exclusive) to ``head`` (inclusive), oldest first.

        Returns None when ``stop`` is not on ``head``'s first-parent chain (history was
        rewritten), so the caller can rebuild instead of guessing.
        """
        chain: list[str] = []
        current = self._obj(head, "a commit on main")
        while True:
            sha = str(current.id)
            if sha == stop:
                chain.reverse()
                return chain
            chain.append(sha)
            if not current.parent_ids:
                break
            current = self._obj(current.parent_ids[0], f"the parent of commit {sha[:12]}")
        if stop is None:
            chain.reverse()
            return chain
        return None

    def changes(self, sha: str) -> list[Change]:
        """Paths changed by a commit relative to its first parent.

        Descends only into subtrees whose ids differ, so a one-file commit in a registry of
        10,000 files reads a handful of small trees (libgit2's tree diff walked far more).
        """
        commit = self._obj(sha, "a commit")
        old = self._obj(commit.parent_ids[0], f"the parent of commit {sha[:12]}").tree \
            if commit.parent_ids else None
        out: list[Change] = []
        self._diff_trees(old, commit.tree, "", out)
        return out

    def diff(self, old: str | None, new: str) -> list[Change]:
        """Paths that differ between two commits' trees (``old`` None: the empty tree)."""
        out: list[Change] = []
        self._diff_trees(self._obj(old, "a commit").tree if old else None,
                         self._obj(new, "a commit").tree, "", out)
        return out

    def new_entries(self, sha: str) -> list[Entry]:
        """File entries a commit brings in: in its tree, in none of its parents' as they are.

        An entry counts when its object or its mode differs (a file turned into a link is
        new). A merge's entries that one of its parents already had are not its own.
        """
        commit = self._obj(sha, "a commit")
        parents = [self._obj(p, f"a parent of commit {sha[:12]}").tree
                   for p in commit.parent_ids]
        out: list[Entry] = []
        self._new_entries(parents[0] if parents else None, commit.tree, "", out)
        return [entry for entry in out
                if not any(_same_entry(tree, entry) for tree in parents[1:])]

    def files(self, sha: str) -> list[Entry]:
        """Every file entry of a commit's tree."""
        out: list[Entry] = []
        self._new_entries(None, self._obj(sha, "a commit").tree, "", out)
        return out

    def _new_entries(self, old: pygit2.Tree | None, new: pygit2.Tree, prefix: str,
                     out: list[Entry]) -> None:
        before = {e.name: e for e in old} if old is not None else {}
        for entry in new:
            was = before.get(entry.name)
            if was is not None and was.id == entry.id and was.filemode == entry.filemode:
                continue
            path = prefix + entry.name
            if entry.filemode == _TREE:
                was_tree = was is not None and was.filemode == _TREE
                self._new_entries(self._obj(was.id, f"folder {path}") if was_tree else None,
                                  self._obj(entry.id, f"folder {path}"), path + "/", out)
            else:
                out.append(Entry(path, int(entry.filemode), str(entry.id),
                                 self._size(entry)))

    def _size(self, entry) -> int | None:
        if entry.filemode == _GITLINK:
            return None
        try:
            return self.repo.odb.read_header(entry.id)[1]
        except (KeyError, ValueError, pygit2.GitError, OSError):
            self._obj(entry.id, f"file {entry.name}")  # raises Damaged naming it
            raise

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits, or None."""
        base = self.repo.merge_base(a, b)
        return str(base) if base is not None else None

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        """Whether ``ancestor`` is reachable from ``commit`` (or is it)."""
        return ancestor == commit or self.repo.descendant_of(commit, ancestor)

    def commits_only_in(self, head: str, other: str | None, *more: str | None) -> list[str]:
        """Commits reachable from ``head`` but not from ``other`` (nor ``more``), newest first."""
        walker = self.repo.walk(head, pygit2.enums.SortMode.TOPOLOGICAL
                                | pygit2.enums.SortMode.TIME)
        for hidden in (other, *more):
            if hidden is not None:
                walker.hide(hidden)
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
                self._diff_trees(self._obj(a.id, f"folder {prefix}{name}") if a_tree else None,
                                 self._obj(b.id, f"folder {prefix}{name}") if b_tree else None,
                                 f"{prefix}{name}/", out)
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
        return str(self._write_objects("storing a file", self.repo.create_blob, data))

    def _write_objects(self, what: str, write: Callable[..., Any], *args: Any) -> Any:
        """Run ``write`` (object writes only: they are idempotent), retrying what a
        concurrent ``git gc`` or a killed writer causes; other failures explained."""
        for attempt in range(1, OBJECT_WRITE_TRIES + 1):
            try:
                return write(*args)
            except (pygit2.GitError, OSError) as exc:
                text = str(exc)
                if attempt < OBJECT_WRITE_TRIES:
                    # git prune-packed removed the objects/xx folder between libgit2's
                    # mkdir and its rename (Git itself retries this too).
                    if "no such file or directory" in text.lower():
                        continue
                    # libgit2's temporary names repeat in processes forked from one parent
                    # (gunicorn workers): killed writers' leftovers can use them all up.
                    if "temporary file" in text and self.remove_orphan_temp_files():
                        continue
                raise self.write_error(exc, what) from None
        raise AssertionError("unreachable")

    def remove_orphan_temp_files(self, min_age: float = 60.0) -> int:
        """Delete temporary object files left by killed writers; return how many.

        A writer renames its temporary file into place within milliseconds of creating
        it, so one older than ``min_age`` seconds was abandoned.
        """
        removed = 0
        now = time.time()
        objects = os.path.join(self.path, "objects")
        folders = [objects] + [os.path.join(objects, d) for d in _listdir(objects)
                               if len(d) == 2]
        for folder in folders:
            for name in _listdir(folder):
                if not name.startswith("tmp_obj"):
                    continue
                full = os.path.join(folder, name)
                try:
                    if now - os.stat(full).st_mtime >= min_age:
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    continue
        if removed:
            log.warning("removed %d temporary object files left by killed writers in %s",
                        removed, self.path)
        return removed

    def write_error(self, exc: BaseException, what: str) -> StorageError:
        """The error that explains a failed write: a full disk, or what Git said."""
        text = str(exc).strip()
        if getattr(exc, "errno", None) == errno.ENOSPC or "no space" in text.lower() \
                or self._disk_full():
            return StorageFull(f"the disk holding the registry {self.path} is full: {what} "
                               "failed and nothing was changed. Free space and try again",
                               details={"path": self.path})
        return StorageError(f"{what} failed in {self.path}: {text or type(exc).__name__}")

    def _disk_full(self) -> bool:
        """Whether the file system holding the repository has (almost) no space left."""
        try:
            stat = os.statvfs(os.path.join(self.path, "objects"))
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize < 64 * 1024 or stat.f_favail == 0

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
                self.write_blob(data)  # idempotent
            return
        # No existence check per blob: fast-import skips objects already packed, and each
        # miss would make libgit2 rescan the pack folder (~25 µs a blob).
        stream = bytearray()
        for data in blobs.values():
            stream += b"blob\ndata %d\n" % len(data)
            stream += data
            stream += b"\n"
        stream += b"done\n"
        result = subprocess.run(["git", *durability.git_options(), "--git-dir", self.path,
                                 "fast-import", "--quiet", "--done"],
                                input=bytes(stream), capture_output=True,
                                env={**_FAST_IMPORT_ENV, **os.environ})
        if result.returncode != 0:
            raise self.write_error(OSError(result.stderr.decode(errors="replace")),
                                   f"storing {len(blobs)} files (git fast-import)")
        self.maintain()

    def maintain(self) -> None:
        """Let Git pack loose objects and merge packs when its thresholds are reached.

        ``git gc --auto`` returns at once below the thresholds (6,700 loose objects, 50
        packs) and otherwise works in the background, safely alongside writers, as Git
        does after its own commits. Without it, every bulk import adds a pack and every
        save six loose files, and lookups slow down as they pile up.
        """
        self.clear_gc_log()
        self.remove_orphan_temp_files()
        if self._too_many_loose():
            self.prune_unreachable()
        try:
            self.run_git("gc", "--auto", "--quiet")
        except (git.GitCommandError, OSError):
            pass  # maintenance is best effort; fsck reports real damage

    def _too_many_loose(self) -> bool:
        """Git's own estimate (one fan-out folder × 256) against its ``gc.auto`` limit."""
        try:
            limit = int(self.repo.config["gc.auto"]) if "gc.auto" in self.repo.config \
                else 6700
        except (ValueError, pygit2.GitError):
            limit = 6700
        sample = os.path.join(self.path, "objects", "17")
        found = sum(1 for name in _listdir(sample) if len(name) == 38)
        return limit > 0 and found * 256 > limit

    def prune_unreachable(self) -> None:
        """Delete unreachable objects older than an hour.

        Past ``gc.auto`` loose objects, ``git gc --auto`` only repacks what is reachable;
        the blobs refused writes stored before taking the lock stay loose, and once they
        alone exceed the limit Git writes ``gc.log`` and stops collecting for a day. None
        of them can be committed after an hour (a write gives up within a minute).
        """
        try:
            self.run_git("prune", "--expire=1.hour.ago")
        except (git.GitCommandError, OSError) as exc:
            log.warning("git prune in %s failed: %s", self.path, exc)

    def collecting(self) -> bool:
        """Whether a live ``git gc`` holds this repository's ``gc.pid`` lock.

        A collection packs loose objects and deletes them, and renames its temporary
        packs into place, so what another reader listed may vanish before it reads it.
        Git itself ignores a ``gc.pid`` older than twelve hours; so does this. One written
        on another host is taken as live (its process cannot be checked from here).
        """
        path = os.path.join(self.path, "gc.pid")
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                said = fh.read().split()
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return False
        if age > 12 * 3600 or not said:
            return False
        if len(said) > 1 and said[1] != socket.gethostname():
            return True
        try:
            os.kill(int(said[0]), 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def wait_for_collector(self, timeout: float = 120.0) -> bool:
        """Wait, up to ``timeout`` seconds, while :meth:`collecting`; False if it still is."""
        deadline = time.monotonic() + timeout
        while self.collecting():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def clear_gc_log(self) -> str | None:
        """Settle what stopped ``git gc --auto``, which then refuses to run for a day.

        Git writes ``gc.log`` when a collection leaves too many unreachable loose objects
        (refused writes leave the blobs they stored before taking the lock). Those older
        than an hour can never be committed any more (a write gives up after a minute), so
        they are pruned, and the log removed so that automatic collection resumes.
        Returns what the log said, or None when there was none.
        """
        path = os.path.join(self.path, "gc.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                said = fh.read().strip()
        except OSError:
            return None
        self.prune_unreachable()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        log.warning("git gc had stopped in %s (%s); pruned old unreachable objects", self.path,
                    said.splitlines()[-1] if said else "gc.log")
        return said

    def commit(self, base: str | None, changes: dict[str, str | None], message: str,
               author: Signature, *, tree: str | None = None,
               parents: list[str] | None = None, when: int | None = None) -> str | None:
        """Create a commit on ``base`` applying path → blob changes (None deletes).

        ``tree`` and ``parents`` override the starting tree and the parents (a merge);
        ``when`` the time (seconds since the epoch; default now). Returns None when the
        changes leave the tree as it was.
        """
        made = self.write_commit(base, changes, message, author, tree=tree, parents=parents,
                                 when=when)
        return made.sha if made is not None else None

    def write_commit(self, base: str | None, changes: dict[str, str | None], message: str,
                     author: Signature, *, tree: str | None = None,
                     parents: list[str] | None = None,
                     when: int | None = None) -> CommitInfo | None:
        """:meth:`commit`, returning what :meth:`commit_info` would read back (no re-read)."""
        check_commit_message(message)
        base_tree = self._obj(tree, "a tree") if tree else \
            self._obj(base, "the commit main points at").tree if base else None
        split = {tuple(path.split("/")): blob for path, blob in changes.items()}
        sig = pygit2.Signature(author.name, author.email,
                               int(time.time()) if when is None else when, 0)
        if parents is None:
            if len(changes) >= FAST_IMPORT_MIN_BLOBS and tree is None and \
                    _plain(author.name, author.email):
                return self._fast_import_commit(base, base_tree, changes, message, sig)
            parents = [base] if base else []

        def write() -> str | None:
            new_tree = self._write_tree(base_tree, split) or self._empty().id
            if base_tree is not None and new_tree == base_tree.id and len(parents) < 2:
                return None
            return str(self.repo.create_commit(None, sig, sig, message, new_tree, parents))

        sha = self._write_objects("writing the commit", write)
        if sha is None:
            return None
        return CommitInfo(sha, sig.name, sig.email, message.strip(), sig.time,
                          tuple(str(p) for p in parents))

    def _fast_import_commit(self, base: str | None, base_tree: pygit2.Tree | None,
                            changes: dict[str, str | None], message: str,
                            sig: pygit2.Signature) -> CommitInfo | None:
        """:meth:`write_commit` of many changes by ``git fast-import``: Git builds the
        trees in C and writes them with the commit into one pack, where one loose object
        per tree (a bulk import into folders of buckets touches thousands) cost ~90 µs
        each. The commit is the one libgit2 would make: same tree, parent, signatures
        and message. A temporary ref names it and is deleted at once."""
        ref = f"{FAST_IMPORT_REFS}/{os.getpid()}-{threading.get_ident()}"
        self._drop_fast_import_ref(ref)  # left by a killed process that had our pid
        who = f"{sig.name} <{sig.email}> {sig.time} +0000\n".encode()
        body = message.encode("utf-8")
        stream = bytearray(b"commit %s\nauthor %s" % (ref.encode(), who))
        stream += b"committer " + who + b"data %d\n" % len(body) + body + b"\n"
        stream += b"from %s\n" % base.encode() if base else b""
        for path, blob in sorted(changes.items()):
            stream += b"D %s\n" % path.encode() if blob is None else \
                b"M 100644 %s %s\n" % (blob.encode(), path.encode())
        stream += b"\ndone\n"
        result = subprocess.run(["git", *durability.git_options(), "--git-dir", self.path,
                                 "fast-import", "--quiet", "--done", "--force"],
                                input=bytes(stream), capture_output=True,
                                env={**_FAST_IMPORT_ENV, **os.environ})
        if result.returncode != 0:
            self._drop_fast_import_ref(ref)
            raise self.write_error(OSError(result.stderr.decode(errors="replace")),
                                   f"writing a commit of {len(changes)} files "
                                   "(git fast-import)")
        try:
            sha = str(self.repo.references[ref].target)
            self.repo.references.delete(ref)
        except (KeyError, pygit2.GitError, OSError) as exc:
            raise self.write_error(exc, "reading the commit git fast-import made") from None
        self.maintain()
        if base_tree is not None and self._obj(sha, "a commit").tree_id == base_tree.id:
            return None  # nothing changed: the commit stays unreachable (gc prunes it)
        return CommitInfo(sha, sig.name, sig.email, message.strip(), sig.time,
                          (base,) if base else ())

    def _drop_fast_import_ref(self, ref: str) -> None:
        lock = os.path.join(self.path, ref + ".lock")
        if os.path.exists(lock):
            self.clear_stale_lock(lock)
        try:
            if ref in self.repo.references:
                self.repo.references.delete(ref)
        except (KeyError, pygit2.GitError, OSError):
            pass

    def leftover_fast_import_refs(self) -> list[str]:
        """Temporary refs of bulk writes whose process is gone (killed mid-write)."""
        out = []
        for ref in self.refs(FAST_IMPORT_REFS + "/"):
            pid = ref.rsplit("/", 1)[-1].split("-", 1)[0]
            try:
                os.kill(int(pid), 0)
            except (ValueError, ProcessLookupError):
                out.append(ref)
            except PermissionError:  # alive, another user's
                pass
        return out

    def drop_leftover_fast_import_refs(self) -> list[str]:
        """Delete :meth:`leftover_fast_import_refs` (they keep unreachable work alive)."""
        dropped = self.leftover_fast_import_refs()
        for ref in dropped:
            self._drop_fast_import_ref(ref)
        return dropped

    def commit_tree(self, tree: str, parents: list[str], message: str, author: Signature,
                    committer: Signature | None = None) -> str:
        """Create a commit of an existing tree (a merge has two parents); moves no ref."""
        check_commit_message(message)
        now = int(time.time())
        sig = pygit2.Signature(author.name, author.email, now, 0)
        by = pygit2.Signature(committer.name, committer.email, now, 0) if committer else sig
        return str(self._write_objects(
            "writing the commit", self.repo.create_commit, None, sig, by, message,
            pygit2.Oid(hex=tree), [pygit2.Oid(hex=p) for p in parents]))

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
            subtree = self._obj(entry.id, f"folder {name}") \
                if entry is not None and entry.filemode == _TREE else None
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
        """Compare-and-swap a ref: ``expected`` None creates it, ``new`` None deletes it.

        While another live process holds the ref's lock (``git gc`` packing refs, a push)
        it retries with backoff; a lock left by a killed writer is removed at once.
        """
        durability.flush_git(self.path)  # the objects it names reach the disk first
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.001
        while True:
            try:
                self._move_ref_once(name, expected, new, reason)
                self._ref_moved()
                return
            except _Locked as locked:
                if self.clear_stale_lock(locked.path) and time.monotonic() <= deadline:
                    continue
                if time.monotonic() > deadline:
                    rel = os.path.relpath(locked.path, self.path)
                    raise Busy(f"{rel} in {self.path} stayed locked for "
                               f"{LOCK_WAIT_SECONDS:.0f}s by a running process (git gc or a "
                               "push?); try again") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _move_ref_once(self, name: str, expected: str | None, new: str | None,
                       reason: str) -> None:
        logs = [os.path.join(self.path, "logs", name), os.path.join(self.path, "logs", "HEAD")]
        sizes = [_size(log_file) for log_file in logs]
        try:
            self._set_ref(name, expected, new, reason)
        except StorageError:
            # libgit2 appends to the reflogs (holding the ref's lock) before it renames the
            # lock into place: a move that failed there must not leave a line saying it
            # happened (fsck --repair trusts them). Only our own last line is removed; a
            # move refused on the lock wrote nothing (the holder's lines are not ours).
            for log_file, size in zip(logs, sizes, strict=True):
                if size is not None and _ends_with_our_line(log_file, size, new, reason):
                    os.truncate(log_file, size)
            raise

    def _set_ref(self, name: str, expected: str | None, new: str | None,
                 reason: str) -> None:
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
        except pygit2.AlreadyExistsError:
            raise RefMoved() from None
        except (pygit2.GitError, ValueError, OSError) as exc:
            text = str(exc)
            if "lock" in text.lower():
                found = re.search(r"'([^']+\.lock)'", text)
                lock = found.group(1) if found else os.path.join(self.path, name + ".lock")
                if os.path.exists(lock) or "failed to lock file" in text:  # another's
                    raise _Locked(lock) from None
                # The lock could not be created at all: a read-only or full file system.
            if "does not match" in text or "exists" in text:
                raise RefMoved() from None
            raise self.write_error(exc, f"moving {name}") from None

    def ref(self, name: str) -> str | None:
        """The commit a ref points at, or None."""
        ref = self.repo.references.get(name)
        return str(ref.target) if ref is not None else None

    def refs(self, prefix: str) -> dict[str, str]:
        """Refs under ``prefix`` (``refs/heads/review/``) and their commits."""
        return {name: str(self.repo.references[name].target)
                for name in self.repo.references if name.startswith(prefix)}

    def clear_stale_lock(self, path: str) -> bool:
        """Remove a lock file left by a killed process; True when no lock is in the way.

        Only a lock older than :data:`LOCK_GRACE_SECONDS` that no process has open (or, where
        open files cannot be listed, one older than :data:`STALE_LOCK_SECONDS`) is stale.
        It is renamed aside and checked to be the file judged before it is deleted, so a
        lock a live process takes meanwhile is put back, never removed.
        """
        path = os.path.abspath(path)
        if not path.startswith(os.path.abspath(self.path) + os.sep) or \
                not path.endswith(".lock"):
            return False
        try:
            seen = os.stat(path)
        except FileNotFoundError:
            return True
        if not _stale(path, seen, self.path):
            return False
        aside = f"{path}.stale-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True
        if os.stat(aside).st_ino != seen.st_ino:  # a live writer's new lock: put it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        log.warning("removed %s, left by a killed writer", os.path.relpath(path, self.path))
        return True

    def stale_locks(self) -> list[str]:
        """Lock files of refs left by killed writers (relative paths)."""
        found = []
        candidates = [os.path.join(self.path, "packed-refs.lock")]
        for folder, _dirs, files in os.walk(os.path.join(self.path, "refs")):
            candidates += [os.path.join(folder, n) for n in files if n.endswith(".lock")]
        for full in candidates:
            try:
                if _stale(full, os.stat(full), self.path):
                    found.append(os.path.relpath(full, self.path))
            except FileNotFoundError:
                continue
        return found

    # ---- repair --------------------------------------------------------------------
    def drop_broken_reflog_entries(self) -> None:
        """Forget reflog entries naming commits that are gone (after a rewind), which
        ``git fsck`` would otherwise report for ever."""
        try:
            self.run_git("reflog", "expire", "--stale-fix", "--expire=never",
                         "--expire-unreachable=never", "--all")
        except (git.GitCommandError, OSError) as exc:
            log.warning("git reflog expire in %s failed: %s", self.path, exc)

    def restore_main(self, candidates: list[str], reason: str) -> str | None:
        """Point ``main`` at the first candidate commit that is intact; return it.

        A corrupt loose ``main`` file (or one naming a missing commit) is removed first.
        Returns None when no candidate is readable.
        """
        chosen = next((sha for sha in candidates if self.has_commit(sha)), None)
        if chosen is None:
            return None
        try:
            current = self.head()
        except Damaged:
            current = "corrupt"
        if current is not None and not self.has_commit(current):
            # Removed rather than overwritten, so the reflog records no unknown old value.
            try:
                os.unlink(os.path.join(self.path, MAIN))
            except FileNotFoundError:
                pass
        durability.flush_git(self.path)
        try:
            self.repo.create_reference_direct(MAIN, chosen, True, message=reason)
        except (pygit2.GitError, OSError) as exc:
            raise self.write_error(exc, f"restoring {MAIN}") from None
        self._ref_moved()
        return chosen

    # ---- durability (issue 16): objects flushed, ref moved, ref flushed, then answered --
    def run_git(self, *args: str) -> str:
        """Run ``git`` on this repository with the process's durability options."""
        return git.Git(self.path).execute(["git", *durability.git_options(), "--git-dir",
                                           self.path, *args])

    def _ref_moved(self) -> None:
        """Flush a ref move now, or when the writer lock is released (group commit).

        Inside :meth:`writer_lock` the flush waits for its release, so the next writer
        can move ``main`` meanwhile and one flush makes both moves durable; the writer is
        answered only after it (the lock's exit waits for it).
        """
        if self._writer_locks:
            self._flush_owed = True
        else:
            durability.flush_git(self.path)

    @contextmanager
    def writer_lock(self, timeout: float = 30.0) -> Iterator[None]:
        """Serialise promptrev writers across processes (the CAS still guards git push)."""
        with durability.writing(self.path):  # counted while waiting too (group commit)
            with self._writer_flock(timeout):
                self._writer_locks += 1
                try:
                    yield
                finally:
                    self._writer_locks -= 1
        if self._flush_owed and not self._writer_locks:
            self._flush_owed = False
            durability.flush_git(self.path, linger=True)  # after the release: shared

    @contextmanager
    def _writer_flock(self, timeout: float) -> Iterator[None]:
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


def _plain(*fields: str) -> bool:
    """Whether signature fields can be written in a fast-import stream as they are."""
    return not any(c in field for field in fields for c in "<>\n\0")


def _stale(path: str, seen: os.stat_result, repo: str) -> bool:
    """Whether the lock file ``path`` (stat ``seen``) of ``repo`` was left by a dead process.

    Young locks are never stale. Otherwise it is stale when no process has it open and no
    Git command is working in its repository (Git closes a lock file before it commits
    it, so an unopened lock of a running ``git update-ref`` or push is still live); where
    processes cannot be inspected, only when older than :data:`STALE_LOCK_SECONDS`.
    While a Git command works in the repository its locks are never taken.
    """
    age = time.time() - seen.st_mtime
    if age < LOCK_GRACE_SECONDS:
        return False
    state = _users(os.path.realpath(path), os.path.realpath(repo), seen.st_uid)
    if state in ("open", "git"):
        return False  # never taken from a live holder: a write waits, then says busy
    if state == "unknown":
        return age >= STALE_LOCK_SECONDS
    return True


def _users(lock: str, repo: str, owner: int) -> str:
    """``open`` if a process has ``lock`` open, ``git`` if a Git command works in ``repo``,
    ``unknown`` if processes of the lock's owner cannot be inspected, else ``none``.

    Reads ``/proc`` (Linux). Processes of other users are unreadable unless we are root;
    the lock's creator runs as its owner, so only theirs must be readable.
    """
    if not os.path.isdir("/proc/self/fd"):
        return "unknown"
    git_seen = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        base = f"/proc/{entry.name}"
        try:
            names = os.listdir(f"{base}/fd")
        except FileNotFoundError:
            continue  # exited meanwhile
        except PermissionError:
            try:
                if entry.stat().st_uid == owner:
                    return "unknown"
            except FileNotFoundError:
                pass
            continue
        for fd in names:
            try:
                if os.readlink(f"{base}/fd/{fd}") == lock:
                    return "open"
            except OSError:
                continue
        if not git_seen and _git_in(base, repo):
            git_seen = True
    return "git" if git_seen else "none"


def _git_in(proc: str, repo: str) -> bool:
    """Whether process ``proc`` (``/proc/<pid>``) is a Git command working in ``repo``."""
    try:
        with open(f"{proc}/comm", encoding="utf-8", errors="replace") as fh:
            if not fh.read().startswith("git"):
                return False
        cwd = os.readlink(f"{proc}/cwd")
        if _inside(cwd, repo):
            return True
        with open(f"{proc}/cmdline", "rb") as fh:
            args = fh.read().decode("utf-8", "replace").split("\0")
        with open(f"{proc}/environ", "rb") as fh:
            env = fh.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    named = [arg.split("=", 1)[-1] for arg in args if arg] + [
        var[8:] for var in env if var.startswith("GIT_DIR=")]
    return any(_inside(os.path.realpath(os.path.join(cwd, path)), repo) for path in named)


def _inside(path: str, repo: str) -> bool:
    return path == repo or path.startswith(repo + os.sep)


def _ends_with_our_line(path: str, size: int, new: str | None, reason: str) -> bool:
    """Whether what was appended to reflog ``path`` past ``size`` is our one line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(size)
            added = fh.read().decode("utf-8", "replace")
    except OSError:
        return False
    lines = added.splitlines()
    return len(lines) == 1 and new is not None and f" {new} " in lines[0] \
        and lines[0].endswith("\t" + reason)


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
