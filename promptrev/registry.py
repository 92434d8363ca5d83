"""The registry service: the Python API that the CLI, the server and users' scripts use.

Git holds the truth; the SQL index answers history and label queries; a per-process
cache keyed on ``main``'s commit serves warm reads (resolve + render) from memory and is
dropped the moment ``main`` moves (reading the ref costs microseconds).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from promptrev.model import fanout
from promptrev.model.artifacts import KINDS, AuditEntry, LabelEvent, Snapshot, Version, placed
from promptrev.model.diffing import Diff, dataset_diff, prompt_diff, text_diff
from promptrev.model.labels import assign, parse_splits
from promptrev.model.prompty import Message, Prompt, parse_prompt
from promptrev.model.references import Reference, parse_reference

from . import composition
from .config import DEFAULT_MAX_BYTES
from .errors import (
    AmbiguousReference,
    ArtifactDeleted,
    Busy,
    Damaged,
    InvalidReference,
    InvalidRequest,
    NotFound,
    PromptrevError,
    ReadOnlyReplica,
    StorageError,
    ValidationFailed,
)
from .storage import durability, maintenance
from .storage.gitstore import FAST_IMPORT_REFS as FAST_IMPORT_REFS  # for the Git endpoint
from .storage.gitstore import MAIN, GitStore, RefMoved, Signature
from .storage.index import ACCOUNT_FIELD, VERSION_FIELDS, IndexDatabase, IndexReader
from .storage.indexer import catch_up
from .storage.objects import ObjectStore
from .storage.sql import translated
from .transactions import Transaction

log = logging.getLogger("promptrev")
DEFAULT_AUTHOR = "promptrev <promptrev@localhost>"
MAINTAIN_EVERY_COMMITS = 500  # how often a writer asks Git whether to pack (git gc --auto)
# While the index database cannot be written (a full disk), reads are answered from a copy
# in memory caught up from Git; the real one is tried again this often.
RETRY_INDEX_SECONDS = 2.0
INDEX_FILE = "promptrev-index.sqlite"
_NOT_SYNCED = "not synced"  # never a commit id; None is a real head (an empty repository)
_REGISTRY_README = """\
# promptrev registry

This Git repository is a promptrev registry. Layout on `main`:

    prompts/<folders>/@x/@y/<leaf>.prompty     prompts (Prompty: front matter + template)
    datasets/<folders>/@x/@y/<leaf>.jsonl      evaluation datasets, one case per line
    labels/<kind>/<folders>/@x/@y/<leaf>.yaml  label -> version maps; each move a commit

The prompt `support/reply` is `prompts/support/@2/@0/reply.prompty`: `x` and `y` are the
first two hex digits of the SHA-1 of the whole name, so that no folder grows past a few
hundred entries (`printf %s support/reply | sha1sum | cut -c1-2`, or `promptrev path
NAME`).
Edit with promptrev or with plain Git; versions are numbered per artifact.
"""
# What 'promptrev init' wrote before buckets: a registry moved into them gets the above.
_README_BEFORE_BUCKETS = """\
# promptrev registry

This Git repository is a promptrev registry. Layout on `main`:

    prompts/<name>.prompty     prompts (Prompty: YAML front matter + chat template)
    datasets/<name>.jsonl      evaluation datasets, one case per line
    labels/<kind>/<name>.yaml  label -> version maps; every move is a commit

Edit with promptrev or with plain Git; versions are numbered per artifact.
"""
# Set in a registry's Git config once its branches hold every file in its bucket.
LAYOUT_KEY = "promptrev.layout"
# issue 20: the primary a read replica follows; set, only the follower moves main
PRIMARY_KEY = "promptrev.primary"
LAYOUT = "buckets"
_COMMIT_ID = re.compile(r"[0-9a-fA-F]{4,40}")  # a commit id or a prefix of one
_BUCKETS_MESSAGE = f"""\
{fanout.MOVE_TITLE}

Each artifact's files, label map and splits now sit in two folders named by the first two
hex digits of the SHA-1 of its name (prompts/support/@2/@0/reply.prompty), so no folder of
the tree grows past a few hundred entries. Names, versions and labels are unchanged.
"""


@dataclass(frozen=True)
class Browse:
    """A page of a folder (:meth:`Registry.browse`)."""

    folders: list[tuple[str, int]]  # subfolder, artifacts below it
    items: list[ArtifactSummary]  # this page's artifacts
    direct: int  # artifacts directly in the folder (or matching), over all pages
    total: int  # artifacts in the folder and below it
    page: int
    pages: int
    per_page: int


@dataclass(frozen=True)
class ArtifactSummary:
    """One line of a listing: an artifact, its latest version and labels."""

    kind: str
    name: str
    latest: int
    deleted: bool
    labels: dict[str, int]
    author: str
    time: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"kind": self.kind, "name": self.name, "latest": self.latest,
                "deleted": self.deleted, "labels": self.labels, "author": self.author,
                "time": self.time.isoformat(), "message": self.message}


@dataclass(frozen=True)
class EditMerge:
    """An edit begun at an older version, merged three-way with the latest version.

    ``text`` is the merged text, or None when both changed the same lines; ``theirs`` and
    ``mine`` are the merged text keeping, where both changed the same lines, the latest
    version's lines or the edit's (equal to ``text`` when the merge is clean).
    """

    latest: Version
    text: str | None
    theirs: str
    mine: str


class Registry:
    """A registry: one bare Git repository plus its SQL index."""

    def __init__(self, path: str, store: GitStore, index_url: str, *,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = path
        self.store = store
        self.database = IndexDatabase(index_url)
        self.index = IndexReader(self.database.engine)
        self._standin: Any = None  # the in-memory index used while the real one is unwritable
        self._derived: Any = None  # (engine, the same engine for the index's own writes)
        self._retry_at = 0.0
        self.objects = ObjectStore(os.path.join(path, "lfs", "objects"))
        self.max_bytes = max_bytes
        self._cache_head: str | None = _NOT_SYNCED
        self._resolved: dict[tuple[str | None, str], Version] = {}
        self._prompts: OrderedDict[str, Prompt] = OrderedDict()
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._head_parts = composition.Parts(self)  # includes resolve at main's head
        self.commits_since_maintenance = 0
        self._bucketed = False

    # ---- lifecycle -----------------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike, *, index_url: str | None = None,
             author: str = DEFAULT_AUTHOR, max_bytes: int = DEFAULT_MAX_BYTES) -> Registry:
        """Create a new registry (bare repository + index) at ``path``."""
        path = os.fspath(path)
        if os.path.exists(os.path.join(path, "HEAD")):
            raise StorageError(f"{path} already holds a Git repository")
        if os.path.isdir(path) and os.listdir(path):
            raise StorageError(f"{path} exists and is not empty")
        store = GitStore.init(path)
        readme = store.write_blob(_REGISTRY_README.encode())
        commit = store.commit(None, {"README.md": readme}, "initialize registry",
                              Signature.parse(author))
        store.move_main(None, commit, "promptrev: init")
        store.set_config(LAYOUT_KEY, LAYOUT)
        return cls(path, store, index_url or _default_index_url(path), max_bytes=max_bytes)

    @classmethod
    def open(cls, path: str | os.PathLike, *, index_url: str | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES) -> Registry:
        """Open an existing registry; the index catches up with Git on first use."""
        path = os.fspath(path)
        if not os.path.exists(os.path.join(path, "HEAD")):
            raise NotFound(f"no registry at {path} (create one with 'promptrev init')")
        registry = cls(path, GitStore(path), index_url or _default_index_url(path),
                       max_bytes=max_bytes)
        if not registry.bucketed():
            try:
                registry.move_into_buckets()
            except (PromptrevError, OSError) as exc:  # read-only, full: reads work in
                log.warning("could not move %s into the bucket layout: %s (writes will try "
                            "again)", path, getattr(exc, "message", exc))  # either layout
        return registry

    # ---- the bucket layout (model.fanout) ------------------------------------------
    def bucketed(self) -> bool:
        """Whether the registry's branches were moved into buckets (a flag in its Git
        config, set by :meth:`move_into_buckets`; checked files are never moved out)."""
        if not self._bucketed:  # once moved, a registry stays moved: read it once
            self._bucketed = self.store.config(LAYOUT_KEY) == LAYOUT
        return self._bucketed

    def move_into_buckets(self, *, repair: bool = False) -> dict[str, str]:
        """Move every file of every branch into its name's buckets (:mod:`.model.fanout`).

        One commit per branch that has files to move, made like any other write (``main``
        by compare-and-swap through :meth:`advance_main`), so history is kept and nothing
        is renumbered: a file that moves without changing makes no version. Returns the
        new commit of each branch that moved.

        Registries made before buckets are moved when first opened (or before their first
        write). That commit is the same wherever it is made (its time is its parent's, its
        author promptrev), so two registries that followed each other still agree after
        both moved. ``repair`` (``promptrev fsck --repair``) moves files put outside their
        buckets behind promptrev's back; where the name's own file exists too, that one is
        kept and the stray one removed.
        """
        moved: dict[str, str] = {}
        with self.store.writer_lock():
            for ref, head in sorted(self.store.refs("refs/heads/").items()):
                commit = self._bucket_commit(head, main=ref == MAIN, repair=repair)
                if commit is None:
                    continue
                try:
                    if ref == MAIN:
                        self.advance_main(head, commit, "move files into buckets")
                    else:
                        self.store.move_ref(ref, head, commit, "promptrev: move files into "
                                            "buckets")
                except RefMoved:
                    raise Busy(f"{ref} moved while its files were being moved into buckets; "
                               "try again") from None
                moved[ref] = commit
            self.store.set_config(LAYOUT_KEY, LAYOUT)
            self._bucketed = True
        return moved

    def _bucket_commit(self, head: str, *, main: bool, repair: bool) -> str | None:
        entries = self.store.files(head)
        present = {entry.path for entry in entries}
        changes: dict[str, str | None] = {}
        done = []
        for entry in entries:
            path = placed(entry.path)
            if path == entry.path:
                continue
            changes[entry.path] = None
            if path in present:  # its own file is there: the stray copy goes
                done.append(f"removed {entry.path} ({path} is kept)")
            else:
                changes[path] = entry.oid
                done.append(f"{entry.path} -> {path}")
        if not changes:
            return None
        readme = self.store.blob_at(head, "README.md")
        if main and readme == GitStore.blob_id(_README_BEFORE_BUCKETS.encode()):
            changes["README.md"] = self.store.write_blob(_REGISTRY_README.encode())
        message = _BUCKETS_MESSAGE if not repair else \
            "Move misplaced files into their buckets\n\n" + "".join(f"{d}\n" for d in done)
        when = self.store.commit_info(head).timestamp
        return self.store.commit(head, changes, message, Signature.parse(DEFAULT_AUTHOR),
                                 when=when)

    @property
    def engine(self):
        """The engine of the registry's database (features keep their rows there); a file
        replaced or deleted since is reopened first."""
        if self.database.replaced():
            self._reopen()
        return self.database.engine

    def _reopen(self) -> None:
        self.database.reopen()
        if self._standin is None:  # else reads stay on the stand-in until the real one works
            self.index = IndexReader(self.database.engine)
        self._cache_head = _NOT_SYNCED

    def close(self) -> None:
        """Release database connections."""
        self.database.dispose()
        self._drop_standin()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- index freshness -----------------------------------------------------------
    def sync(self) -> str | None:
        """Bring the index and caches up to ``main``; cheap when nothing moved."""
        head = self.store.head()
        replaced = self.database.replaced()
        if head != self._cache_head or self._standin is not None or replaced:
            self._index_to(head, replaced)
        return head

    def _index_to(self, head: str | None, replaced: bool = False) -> None:
        if replaced:
            self._reopen()
        if self.database.broken is not None:  # damaged when opened: repaired since?
            if self.database.written_since_opened():
                self.database.reopen(quiet=True)
                self.index = IndexReader(self.database.engine)
            if self.database.broken is not None:
                raise self.database.broken
        if self._standin is None or time.monotonic() >= self._retry_at:
            try:
                if self.database.unavailable is not None:  # could not even be opened
                    self.database.reopen(quiet=True)
                    if self.database.unavailable is not None:
                        raise self.database.unavailable
                    if self._standin is None:
                        self.index = IndexReader(self.database.engine)
                catch_up(self.store, self._index_writer())
            except (Damaged, Busy):
                raise
            except StorageError as exc:  # cannot be written (full disk): read from Git
                self._stand_in(exc)
            else:
                if self._standin is not None:
                    log.warning("the index database %s can be written again",
                                self.database.url)
                    self._drop_standin()
                self._caches_at(head)
                return
        catch_up(self.store, self._standin, quiet=True)
        self._caches_at(head)

    def _index_writer(self):
        """The engine the index catches up through: its commits need not be synced to disk.

        Git holds what they record and the next catch-up replays a tail lost to a power
        loss (docs/durability.md); what is not derived from Git commits durably.
        """
        engine = self.database.engine
        if self._derived is None or self._derived[0] is not engine:
            self._derived = (engine, engine.execution_options(derived=True))
        return self._derived[1]

    def _stand_in(self, exc: PromptrevError) -> None:
        """Answer reads from an in-memory copy of the index caught up from Git."""
        self._retry_at = time.monotonic() + RETRY_INDEX_SECONDS
        if self._standin is None:
            log.warning("the index database cannot be updated (%s); answering from Git "
                        "until it can", exc.message)
            self._standin = maintenance.standin_index(self.database)
        self.index = IndexReader(self._standin)

    def _drop_standin(self) -> None:
        if self._standin is not None:
            self._standin.dispose()
            self._standin = None
            self.index = IndexReader(self.database.engine)

    # ---- moving main: the one protocol ------------------------------------------------
    # ---- roles (issue 20): a read replica refuses every write but its follower's ------
    @property
    def replica_of(self) -> str | None:
        """The primary this registry is a read replica of (None: it takes writes)."""
        return self.store.config(PRIMARY_KEY) or None

    def set_replica_of(self, primary: str | None) -> None:
        """Make this registry a read replica of ``primary``, or (None) writable again."""
        if (self.replica_of or None) != (primary or None):
            self.store.set_config(PRIMARY_KEY, primary or "")

    @property
    def synced_head(self) -> str | None:
        """The commit of ``main`` the index and caches last caught up to (None: none yet)."""
        head = self._cache_head
        return None if head is _NOT_SYNCED else head

    def writing(self, timeout: float = 30.0, *, follower: bool = False):
        """Hold the registry's writer lock (a context manager) for :meth:`advance_main`.

        Every path that moves ``main`` (a transaction, a change-request merge, a pull from
        a remote) reads ``main``, builds its commit and calls :meth:`advance_main` inside
        this lock, so their compare-and-swaps never interleave. A read replica's registry
        refuses with :class:`ReadOnlyReplica`, except to its follower (``follower=True``).
        """
        primary = self.replica_of
        if primary and not follower:
            raise ReadOnlyReplica(
                f"this registry is a read replica of {primary}: send writes to the primary "
                "(it copies them here within a second)", details={"primary": primary})
        if not self.bucketed():  # never write beside files still outside their bucket
            self.move_into_buckets()
        return self.store.writer_lock(timeout=timeout)

    def advance_main(self, old: str | None, new: str, reason: str, *,
                     known: Any = None) -> dict[str, list[dict]]:
        """Move ``main`` from ``old`` to ``new`` and bring the index and caches along.

        Call it holding :meth:`writing`. The move is a compare-and-swap: if ``main`` is no
        longer ``old`` (a plain ``git push`` takes no lock) it raises
        :class:`~promptrev.storage.gitstore.RefMoved` and nothing changed. Returns the
        index rows of the versions each new commit created, by commit sha. ``known`` is
        what the writer of a single new commit already knows of it (the indexer then
        reads nothing back). Every few hundred moves Git is asked whether to pack.
        """
        self.store.move_main(old, new, f"promptrev: {reason}")
        self.commits_since_maintenance += 1
        if self.commits_since_maintenance >= MAINTAIN_EVERY_COMMITS:
            self.commits_since_maintenance = 0
            self.store.maintain()
        # From here on the write is committed: an index that cannot follow is caught up
        # later (reads meanwhile come from Git), never reported as a failed write.
        created: dict[str, list[dict]] = {}
        try:
            if self._standin is not None:
                self._index_to(new)
            else:
                catch_up(self.store, self._index_writer(), behind=True, created=created,
                         known=known)
        except PromptrevError as exc:  # full, damaged, locked: committed all the same
            log.warning("committed %s, but the index could not follow: %s", new[:12],
                        exc.message)
            try:
                self._stand_in(exc)
                catch_up(self.store, self._standin, quiet=True)
            except Exception as again:  # noqa: BLE001 - the write is committed regardless
                log.warning("no stand-in index either: %s", again)
                self._drop_standin()
                self._cache_head = _NOT_SYNCED
                return created
        self._caches_at(new)
        if known is not None:
            return created  # its writer derives its versions from the commit itself
        missing = [sha for sha in self.store.first_parent_chain(new, old) or []
                   if sha not in created]
        if missing:  # indexed by another process first: read back what they created
            try:
                created.update(self.index.made_in(missing))
            except StorageError as exc:
                log.warning("could not read back the versions of %s: %s", new[:12],
                            exc.message)
        return created

    def _caches_at(self, head: str | None) -> None:
        """The index now reflects ``head``: drop resolutions made at any other head."""
        self._resolved.clear()
        self._head_parts.clear()
        self._cache_head = head

    def reindex(self) -> dict[str, Any]:
        """Rebuild the index from Git beside the old one and swap it in; return row counts.

        The rows that do not come from Git (reviews, evaluations, webhooks) are copied
        over; ``lost`` names any table that a damaged old index no longer let us read.
        """
        self._drop_standin()
        lost = maintenance.rebuild(self.store, self.database)
        self.index = IndexReader(self.database.engine)
        self._cache_head = _NOT_SYNCED
        with translated("reading the rebuilt index"):
            counts: dict[str, Any] = {name: len(rows)
                                      for name, rows in self.index.dump().items()}
        if lost:
            counts["lost"] = lost
        return counts

    def fsck(self, *, repair: bool = False, rewind: bool = False) -> dict[str, Any]:
        """Check Git objects, ``main``, the index against a rebuild, every current artifact.

        ``repair`` restores a missing or corrupt ``main`` (from its reflog or the index),
        removes lock files left by killed writers and rebuilds a damaged index. When the
        commit ``main`` last pointed at is itself lost, it refuses (the commits are to be
        copied back from a clone or a backup) unless ``rewind`` accepts going back to the
        newest intact one, losing the versions made after it.
        """
        self._cache_head = _NOT_SYNCED
        self._drop_standin()
        report = maintenance.check(self.store, self.database, repair=repair, rewind=rewind)
        self.index = IndexReader(self.database.engine)
        if repair and any(" is stored at " in p for p in report["problems"]):
            self._bucketed = False  # someone put files back outside their bucket
            moved = self.move_into_buckets(repair=True)
            report = {**maintenance.check(self.store, self.database),
                      "repaired": report["repaired"] + [
                          f"moved the files of {ref} into their buckets" for ref in moved]}
            self.index = IndexReader(self.database.engine)
        return report

    # ---- reading -------------------------------------------------------------------
    def resolve(self, ref: str | Reference, kind: str | None = None) -> Version:
        """Resolve a reference (``name``, ``name@4``, ``name@production``, ``name@3f2a9c1``)."""
        self.sync()
        key = (kind, str(ref))
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        parsed = ref if isinstance(ref, Reference) else parse_reference(ref, kind)
        version = self._resolve(parsed)
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[key] = version
        return version

    def get(self, ref: str | Reference, kind: str | None = None) -> Snapshot:
        """A version and its text."""
        version = self.resolve(ref, kind)
        if version.deleted:
            raise _deleted(version)
        warnings: tuple = ()
        if version.kind == "prompt":
            warnings = tuple(self._prompt(version).warnings)
        return Snapshot(version, self._text(version.blob), warnings)

    def prompt(self, ref: str | Reference) -> Prompt:
        """The parsed prompt of a reference (cached by content)."""
        version = self.resolve(ref, "prompt")
        if version.deleted:
            raise _deleted(version)
        return self._prompt(version)

    def render(self, ref: str | Reference, variables: dict[str, Any] | None = None, *,
               at: str | None = None) -> list[Message]:
        """Render a prompt version to chat messages.

        Its ``{% include %}`` parts resolve at ``main``'s head, or at commit ``at``: a
        pinned part (``@3``) renders the same at any commit, a label or a bare name as
        it was then.
        """
        if at is not None and not _COMMIT_ID.fullmatch(at):
            raise InvalidReference(f"'{at}' is not a commit id (4 to 40 hexadecimal digits, "
                                   "as `promptrev log` shows them)")
        prompt = self.prompt(ref)
        if at is None:
            return prompt.render(variables)
        commits = self.index.commits_with_prefix(at.lower())
        if len(commits) != 1:
            raise (AmbiguousReference(f"commit prefix '{at}' matches several commits")
                   if commits else NotFound(f"no commit '{at}' on main"))
        return prompt.render(variables, includes=self.parts_at(commits[0].sha))

    def dependents(self, name: str) -> list[dict]:
        """The prompts whose latest version includes ``name`` (directly, or ``via`` another
        part), with the reference as written and the version of ``name`` each one uses."""
        self.resolve(name, "prompt")  # a clear NotFound for an unknown name
        return composition.dependents(self, name)

    def label_impact(self, name: str, label: str, to: int,
                     variables: dict[str, Any] | None = None) -> list[dict]:
        """What moving ``name@label`` to version ``to`` does to the prompts including
        ``name@label``: each rendered before and after, with a rendered diff if it changes."""
        labels = self.labels(name, "prompt")
        old = self.resolve(f"{name}@{labels[label]}", "prompt") if label in labels else None
        new = self.resolve(f"{name}@{to}", "prompt")
        return composition.impact(self, new.name, old.blob if old else None,
                                  None if new.deleted else new.blob,
                                  composition.following_label(label), variables)

    def content_impact(self, name: str, old_blob: str | None, new_blob: str | None,
                       variables: dict[str, Any] | None = None) -> list[dict]:
        """What new content of ``name`` (blob ``old_blob`` → ``new_blob``) does to the
        prompts that include it by name alone (the floating ones, which follow it)."""
        return composition.impact(self, name, old_blob, new_blob, composition.floating,
                                  variables)

    def parts_at(self, commit: str) -> Callable[[str], Prompt]:
        """A resolver of ``{% include %}`` parts as ``main`` (or a branch) had them at
        ``commit``: for rendering an old state, or a change request's head."""
        return composition.Parts(self, commit).prompt

    def parsed(self, blob: str, name: str) -> Prompt:
        """The parsed prompt of a stored blob (cached by content), its parts resolving at
        ``main``'s head."""
        prompt = self._prompts.get(blob)
        if prompt is None:
            prompt = parse_prompt(self._text(blob), KINDS["prompt"].filename(name))
            prompt.includes = self._head_parts.prompt
            self._prompts[blob] = prompt
            if len(self._prompts) > 512:
                self._prompts.popitem(last=False)
        return prompt

    def text_of(self, blob: str) -> str:
        """The text of a stored blob (cached)."""
        return self._text(blob)

    def list(self, prefix: str | None = None, *, kind: str | None = None,
             include_deleted: bool = False, query: str | None = None) -> list[ArtifactSummary]:
        """Artifacts whose name starts with ``prefix`` (and contains ``query``, any case)."""
        self.sync()
        rows = self.index.listing(prefix, kind, include_deleted, query)
        labels = self.index.label_map([r.id for r in rows])
        return [ArtifactSummary(r.kind, r.name, r.latest, r.deleted, labels.get(r.id, {}),
                                r.author, _utc(r.timestamp), r.message) for r in rows]

    def browse(self, prefix: str = "", *, kind: str | None = None, query: str | None = None,
               page: int = 1, per_page: int = 100) -> Browse:
        """One page of a folder: its subfolders (with counts) and the artifacts directly in
        it (with a query: every match below it), ``per_page`` at a time.

        Only names are read for the whole folder; the page's artifacts alone are read in
        full, so a folder of 10,000 costs little more than one of 100.
        """
        self.sync()
        prefix = prefix.strip("/")
        start = prefix + "/" if prefix else None
        folders: dict[str, int] = {}
        direct = []
        for row in self.index.names(start, kind, False, query):
            rest = row.name[len(start):] if start else row.name
            if "/" in rest and not query:
                folder = rest.split("/", 1)[0]
                folders[folder] = folders.get(folder, 0) + 1
            else:
                direct.append(row.id)
        pages = max(1, -(-len(direct) // per_page))
        page = min(max(1, page), pages)
        shown = direct[(page - 1) * per_page:page * per_page]
        rows = self.index.listing(start, kind, False, query, ids=shown) if shown else []
        labels = self.index.label_map([r.id for r in rows])
        items = [ArtifactSummary(r.kind, r.name, r.latest, r.deleted, labels.get(r.id, {}),
                                 r.author, _utc(r.timestamp), r.message) for r in rows]
        return Browse(sorted(folders.items()), items, len(direct),
                      len(direct) + sum(folders.values()), page, pages, per_page)

    def history(self, name: str, kind: str | None = None) -> list[Version]:
        """Every version of an artifact, newest first, with the labels on each."""
        self.sync()
        art = self._artifact(parse_reference(name, kind))
        by_version: dict[int, tuple[str, ...]] = {}
        for label, number in sorted(self.index.labels(art.id).items()):
            by_version[number] = by_version.get(number, ()) + (label,)
        kind, name, none = art.kind, art.name, ()
        return [Version(kind, name, n, sha, blob, bool(deleted), author, email, message, ts,
                        by_version.get(n, none), account)
                for n, sha, blob, deleted, author, email, message, ts, account in
                self.index.history(art.id)]

    def labels(self, name: str, kind: str | None = None) -> dict[str, int]:
        """label → version number for an artifact."""
        self.sync()
        return self.index.labels(self._artifact(parse_reference(name, kind)).id)

    def label_history(self, name: str | None = None, kind: str | None = None,
                      limit: int = 1000) -> list[LabelEvent]:
        """Label moves, newest first (all artifacts, or one)."""
        self.sync()
        art_id = self._artifact(parse_reference(name, kind)).id if name else None
        return [LabelEvent(r.kind, r.name, r.label, r.old, r.new, r.sha, r.author,
                           r.message, _utc(r.timestamp), r.account)
                for r in self.index.label_events(art_id, limit)]

    def audit(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Every write on ``main``, newest first: versions made and labels moved, by whom.

        ``before`` pages back: pass the ``seq`` of the oldest entry already shown.
        """
        self.sync()
        commits = self.index.commits(max(1, min(limit, 1000)), before)
        versions, events = self.index.changes_in([c.seq for c in commits])
        made: dict[int, list[dict]] = {}
        for seq, kind, name, number, deleted in versions:
            made.setdefault(seq, []).append(
                {"kind": kind, "name": name, "version": number, "deleted": bool(deleted)})
        moved: dict[int, list[dict]] = {}
        for seq, kind, name, label, old, new in events:
            moved.setdefault(seq, []).append(
                {"kind": kind, "name": name, "label": label, "from": old, "to": new})
        return [AuditEntry(c.seq, c.sha, c.author, c.email, c.message, _utc(c.timestamp),
                           tuple(made.get(c.seq, ())), tuple(moved.get(c.seq, ())),
                           c.account)
                for c in commits]

    def diff(self, ref_a: str, ref_b: str, variables: dict[str, Any] | None = None,
             kind: str | None = None) -> Diff:
        """Diff two versions (of one artifact or two): text, fields, rendered."""
        a, b = self.resolve(ref_a, kind), self.resolve(ref_b, kind)
        text_a = "" if a.deleted else self._text(a.blob)
        text_b = "" if b.deleted else self._text(b.blob)
        if a.kind == b.kind == "prompt":
            diff = prompt_diff(text_a, text_b, a.ref, b.ref, variables,
                               self._head_parts.prompt)
            if a.name == b.name and a.blob != b.blob:
                diff.impact = self.content_impact(a.name, None if a.deleted else a.blob,
                                                  None if b.deleted else b.blob)
            return diff
        if a.kind == b.kind == "dataset":
            return dataset_diff(text_a, text_b, a.ref, b.ref)
        if a.kind == b.kind == "adapter":
            from . import adapters

            return adapters.adapter_diff(self, a, b, text_a, text_b)
        return Diff(a.ref, b.ref, text_diff(text_a, text_b, a.ref, b.ref))

    # ---- adapters ------------------------------------------------------------------
    def push_adapter(self, name: str, folder: str, *, message: str | None = None,
                     author: str = DEFAULT_AUTHOR, base: int | None = None,
                     account: str | None = None, **card: Any) -> Version:
        """Version a PEFT adapter folder (card from its config; weights to the object store).

        ``card`` may carry ``lineage``, ``training``, ``metrics`` and ``description``.
        """
        from . import adapters

        files = adapters.read_folder(folder, self.objects, **card)
        with self.transaction(message=message or f"push adapter {name}", author=author,
                              account=account) as tx:
            tx.save_adapter(name, files, base=base)
        return tx.result_for("adapter", name)

    def adapter(self, ref: str | Reference):
        """An adapter version: its card, PEFT config and (verified-on-read) weights pointer."""
        from . import adapters

        return adapters.load_version(self, ref)

    def adapter_source(self, ref: str | Reference):
        """A local folder PEFT can load for an adapter version (cached, sha256-checked)."""
        from . import adapters

        return adapters.source(self, ref)

    # ---- writing -------------------------------------------------------------------
    @contextmanager
    def transaction(self, *, message: str, author: str = DEFAULT_AUTHOR,
                    account: str | None = None, guard: Callable[[str], None] | None = None
                    ) -> Iterator[Transaction]:
        """Group saves, deletions and label moves into one commit (all or nothing).

        ``account`` is the authenticated account making it (the server's user), recorded
        next to the Git ``author``; None for local writes. ``guard`` is asked with main's
        commit under the writer lock before committing (a release gate's
        ``Clearance.guard``: what it judged has not moved since).
        """
        tx = Transaction(self, message, author, account, guard)
        yield tx
        tx.commit()

    def save(self, name: str, text: str | bytes, *, message: str | None = None,
             author: str = DEFAULT_AUTHOR, base: int | None = None,
             kind: str = "prompt", account: str | None = None) -> Version:
        """Store ``text`` as the next version of ``name``.

        ``base`` is the version the edit started from: if the artifact has moved on since,
        :class:`Conflict` is raised with what changed. ``base=0`` means "create only".
        Saving the same content again returns the existing version without a commit.
        """
        with self.transaction(message=message or f"save {name}", author=author,
                              account=account) as tx:
            tx.save(name, text, base=base, kind=kind)
        return tx.result_for(kind, name)

    def merge_edit(self, name: str, text: str, base: int, kind: str = "prompt"
                   ) -> EditMerge | None:
        """Merge ``text``, an edit begun at version ``base``, with the latest version.

        The merge is the one change requests use (:meth:`GitStore.merge`, three-way on a
        commit of the edit on ``base``); nothing moves ``main``. None when there is nothing
        to merge with: the artifact is deleted, or ``base`` is not an older version of it.
        """
        latest = self.resolve(name, kind)
        if latest.deleted or not 0 < base < latest.number:
            return None
        started, path = self.resolve(f"{name}@{base}", kind), KINDS[kind].path(name)
        if started.deleted or self.store.blob_at(started.commit, path) != started.blob:
            return None  # begun before the file moved into buckets: no common path
        author = Signature.parse(DEFAULT_AUTHOR)
        mine = self.store.commit(started.commit, {path: self.store.write_blob(
            text.encode("utf-8"))}, f"edit {name} begun at version {base}", author)
        if mine is None:  # the edit changes nothing
            same = self._text(latest.blob)
            return EditMerge(latest, same, same, same)
        sides = []
        for ours, theirs in ((latest.commit, mine), (mine, latest.commit)):
            tree, _ = self.store.merge(ours, theirs, favor_ours=True)
            if tree is None:
                return None
            merged = self.store.commit_tree(tree, [ours, theirs], f"merge {name}", author)
            blob = self.store.blob_at(merged, path)
            sides.append("" if blob is None else self._text(blob))
        _tree, conflicts = self.store.merge(latest.commit, mine)
        return EditMerge(latest, None if conflicts else sides[0], sides[0], sides[1])

    def delete(self, name: str, *, message: str | None = None, author: str = DEFAULT_AUTHOR,
               base: int | None = None, kind: str | None = None,
               account: str | None = None) -> Version:
        """Delete an artifact; the deletion is a version, and history stays."""
        kind = kind or self._kind_of(name)
        with self.transaction(message=message or f"delete {name}", author=author,
                              account=account) as tx:
            tx.delete(name, base=base, kind=kind)
        return tx.result_for(kind, name)

    def set_label(self, name: str, label: str, version: int, *, message: str | None = None,
                  author: str = DEFAULT_AUTHOR, kind: str | None = None,
                  account: str | None = None, guard: Callable[[str], None] | None = None
                  ) -> LabelEvent | None:
        """Point ``label`` at ``version`` (a commit with author and message)."""
        kind = kind or self._kind_of(name)
        msg = message or f"label {name}@{label} -> {version}"
        with self.transaction(message=msg, author=author, account=account,
                              guard=guard) as tx:
            tx.set_label(name, label, version, kind=kind)
        return tx.label_event

    def remove_label(self, name: str, label: str, *, message: str | None = None,
                     author: str = DEFAULT_AUTHOR, kind: str | None = None,
                     account: str | None = None, guard: Callable[[str], None] | None = None
                     ) -> LabelEvent | None:
        """Remove a label from an artifact."""
        kind = kind or self._kind_of(name)
        with self.transaction(message=message or f"remove label {name}@{label}",
                              author=author, account=account, guard=guard) as tx:
            tx.remove_label(name, label, kind=kind)
        return tx.label_event

    def set_split(self, name: str, label: str, arms: dict[int, int], *,
                  message: str | None = None, author: str = DEFAULT_AUTHOR,
                  kind: str | None = None, account: str | None = None,
                  guard: Callable[[str], None] | None = None) -> str | None:
        """Split the traffic of ``label`` over versions by weight (``{}`` ends the split).

        Callers that pass a key to :meth:`resolve_for` get a version stable for that key;
        everyone else keeps getting the version the label points at.
        """
        kind = kind or self._kind_of(name)
        what = ", ".join(f"v{v}: {w}" for v, w in sorted(arms.items())) or "ended"
        with self.transaction(message=message or f"split {name}@{label} ({what})",
                              author=author, account=account, guard=guard) as tx:
            tx.set_split(name, label, arms, kind=kind)
        return tx.commit_sha

    def splits(self, name: str, kind: str | None = None) -> dict[str, dict[int, int]]:
        """label → {version: weight} of an artifact's traffic splits."""
        head = self.sync()
        art = self._artifact(parse_reference(name, kind))
        path = KINDS[art.kind].split_path(art.name)
        blob = self.store.blob_at(head, path) if head else None
        if blob is None and head and not self.bucketed():  # not moved yet (read-only)
            path = fanout.unbucketed(f"splits/{KINDS[art.kind].folder}", art.name, ".yaml")
            blob = self.store.blob_at(head, path)
        return parse_splits(self._text(blob), path) if blob else {}

    def resolve_for(self, ref: str | Reference, key: str, kind: str | None = None) -> Version:
        """Resolve ``ref`` for a caller: a split label gives the key's (sticky) version."""
        parsed = ref if isinstance(ref, Reference) else parse_reference(ref, kind)
        if parsed.selector is not None and parsed.may_be_label and key:
            arms = self.splits(parsed.name, parsed.kind or kind).get(parsed.selector)
            if arms:
                art = self._artifact(parsed)
                version = assign(art.kind, art.name, parsed.selector, key, arms)
                return self.resolve(f"{art.name}@{version}", art.kind)
        return self.resolve(parsed, kind)

    def rollback(self, name: str, to: int, *, label: str | None = None,
                 message: str | None = None, author: str = DEFAULT_AUTHOR,
                 kind: str | None = None, account: str | None = None,
                 guard: Callable[[str], None] | None = None
                 ) -> Version | LabelEvent | None:
        """Roll back: move ``label`` to version ``to``, or (no label) restore its content.

        Restoring writes version ``to``'s content as a new version, so nothing is lost and
        the rollback itself is in history.
        """
        kind = kind or self._kind_of(name)
        if label is not None:
            what = f"rollback {name}@{label} to {to}"
            return self.set_label(name, label, to, kind=kind, author=author, account=account,
                                  message=f"{what}: {message}" if message else what,
                                  guard=guard)
        old = self.resolve(f"{name}@{to}", kind)
        if old.deleted:
            raise ValidationFailed(f"{kind} '{name}' version {to} is a deletion; "
                                   "roll back to a version with content")
        text = self._text(old.blob)
        current = self.resolve(name, kind)
        what = f"rollback {name} to version {to}"
        if kind == "adapter":
            files = self.adapter(f"{name}@{to}").files
            with self.transaction(message=f"{what}: {message}" if message else what,
                                  author=author, account=account) as tx:
                tx.save_adapter(name, files, base=current.number)
            return tx.result_for(kind, name)
        return self.save(name, text, kind=kind, author=author, base=current.number,
                         account=account, message=f"{what}: {message}" if message else what)

    # ---- internals -----------------------------------------------------------------
    def _resolve(self, ref: Reference) -> Version:
        art = self._artifact(ref)
        labels = self.index.labels(art.id)
        if ref.selector is None:
            row = self.index.version(art.id, art.latest)
        elif ref.number is not None:
            row = self.index.version(art.id, ref.number) if ref.number >= 1 else None
            if row is None and ref.may_be_commit and self.index.commits_with_prefix(ref.selector):
                row = self._by_label_or_commit(art, ref, labels)
            if row is None:
                raise NotFound(f"{art.kind} '{art.name}' has no version {ref.number} "
                               f"(versions 1..{art.latest})")
        else:
            row = self._by_label_or_commit(art, ref, labels)
        return _version(row, tuple(sorted(k for k, v in labels.items() if v == row.number)))

    def _by_label_or_commit(self, art, ref: Reference, labels: dict[str, int]):
        if ref.selector in labels:
            row = self.index.version(art.id, labels[ref.selector])
            if row is None:
                raise NotFound(f"label '{ref.selector}' of {art.kind} '{art.name}' points at "
                               f"version {labels[ref.selector]}, which does not exist")
            return row
        if ref.may_be_commit:
            commits = self.index.commits_with_prefix(ref.selector)
            if len(commits) > 1:
                raise AmbiguousReference(f"commit prefix '{ref.selector}' matches several "
                                         "commits; give more characters")
            if commits:
                row = self.index.version_at(art.id, commits[0].seq)
                if row is None:
                    raise NotFound(f"{art.kind} '{art.name}' did not exist yet at commit "
                                   f"{commits[0].sha[:12]}")
                return row
        known = ", ".join(sorted(labels)) or "none"
        what = "label or commit" if ref.may_be_commit else "label"
        close = difflib.get_close_matches(ref.selector, [*labels, "latest"], n=1)
        hint = f"; did you mean '{art.name}@{close[0]}'?" if close else ""
        raise NotFound(f"{art.kind} '{art.name}' has no {what} '{ref.selector}' "
                       f"(labels: {known}){hint}")

    def commit_of(self, prefix: str) -> str:
        """The full hash of the commit of ``main``'s history that ``prefix`` names."""
        self.sync()
        text = prefix.strip().lower()
        if not 4 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
            raise InvalidRequest(f"{prefix!r} is not a commit hash (at least 4 hex digits)")
        commits = self.index.commits_with_prefix(text)
        if len(commits) > 1:
            raise AmbiguousReference(f"commit prefix '{text}' matches several commits; give "
                                     "more characters")
        if not commits:
            raise NotFound(f"no commit {text} in the history of main")
        return commits[0].sha

    def kind_of(self, name: str, kind: str | None = None) -> str:
        """The kind of the artifact called ``name`` (checked against ``kind`` if given)."""
        self.sync()
        return self._artifact(parse_reference(name, kind)).kind

    def _kind_of(self, name: str) -> str:
        self.sync()
        return self._artifact(parse_reference(name)).kind

    def _artifact(self, ref: Reference):
        if ref.kind is not None:
            row = self.index.artifact(ref.kind, ref.name)
            rows = [row] if row is not None else []
        else:
            rows = self.index.artifacts_named(ref.name)
        if not rows:
            close = difflib.get_close_matches(ref.name, self.index.similar_names(ref.name), n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            what = ref.kind or "artifact"
            raise NotFound(f"no {what} named '{ref.name}'{hint}")
        if len(rows) > 1:
            kinds = ", ".join(f"{r.kind}:{ref.name}" for r in rows)
            raise AmbiguousReference(f"'{ref.name}' names several artifacts; say which: {kinds}")
        return rows[0]

    def _text(self, blob: str) -> str:
        text = self._texts.get(blob)
        if text is None:
            text = self.store.blob(blob).decode("utf-8")
            self._texts[blob] = text
            if len(self._texts) > 512:
                self._texts.popitem(last=False)
        return text

    def _prompt(self, version: Version) -> Prompt:
        return self.parsed(version.blob, version.name)


def configure_durability(mode: str) -> None:
    """Set this process's durability (``PROMPTREV_DURABILITY``): ``full`` or ``off``.

    The edges call it with their settings; a library user who never does gets ``full``.
    """
    durability.configure(mode)


def git_durability_options() -> list[str]:
    """``-c`` options that make a ``git`` process (http-backend's receive-pack) durable."""
    return durability.git_options()


def _deleted(version: Version) -> ArtifactDeleted:
    return ArtifactDeleted(
        f"{version.kind} '{version.name}' version {version.number} is a deletion; restore it "
        f"with 'promptrev rollback {version.name} --to {version.number - 1}'")


def _default_index_url(path: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(path), INDEX_FILE)


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _version(row, labels: tuple[str, ...] = ()) -> Version:
    return Version(*row[:VERSION_FIELDS], labels, row[ACCOUNT_FIELD])

